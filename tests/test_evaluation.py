"""Metrics against hand-counted cases and scikit-learn; plots are written as real PNGs."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from stream_detector.training import evaluation as m
from stream_detector.training import plots


def test_ranges_round_trip():
    mask = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1], bool)
    ranges = m.ranges_from_mask(mask)
    assert ranges == [(1, 2), (5, 5), (7, 9)]
    assert (m.mask_from_ranges(ranges, len(mask)) == mask).all()
    assert m.mask_from_ranges([(-3, 1), (8, 20)], 10).nonzero()[0].tolist() == [0, 1, 8, 9]


def test_merge_ranges_with_gap():
    assert m.merge_ranges([(10, 12), (0, 3), (5, 6)]) == [(0, 3), (5, 6), (10, 12)]
    assert m.merge_ranges([(10, 12), (0, 3), (5, 6)], gap=1) == [(0, 6), (10, 12)]
    assert m.merge_ranges([(0, 5), (2, 3)]) == [(0, 5)]


def test_event_counts_orion_style():
    truth = [(10, 20), (50, 60), (90, 95)]
    predicted = [(15, 16), (18, 30), (70, 72), (94, 99)]
    c = m.event_f1(truth, predicted)
    # two labelled segments hit, one missed; one predicted segment touches nothing
    assert (c["tp"], c["fp"], c["fn"]) == (2, 1, 1)
    assert c["precision"] == pytest.approx(2 / 3) and c["recall"] == pytest.approx(2 / 3)
    total = m.sum_event_counts([c, {"tp": 1, "fp": 0, "fn": 0}])
    assert (total["tp"], total["fp"], total["fn"]) == (3, 1, 1)
    assert total["f1"] == pytest.approx(0.75)


def test_point_adjusted_counts_whole_segment():
    labels = np.zeros(20, bool)
    labels[5:10] = True
    flagged = np.zeros(20, bool)
    flagged[[7, 15]] = True
    pa = m.point_adjusted_f1(labels, flagged)
    assert (pa["tp"], pa["fp"], pa["fn"]) == (5, 1, 0)


def test_auprc_is_average_precision_counted_by_hand():
    # ranked 1 0 1 0 0 1: recall steps of 1/3 at precisions 1/1, 2/3 and 3/6
    assert m.auprc(np.array([1, 0, 1, 0, 0, 1]), np.array([.9, .8, .7, .6, .5, .4])) == pytest.approx(13 / 18)
    # the one anomaly ranked last: found only when all four are flagged, precision 1/4
    assert m.auprc(np.array([0, 0, 0, 1]), np.array([4.0, 3.0, 2.0, 1.0])) == pytest.approx(0.25)
    # two anomalies tied with the lowest of eight scores: precision 2/8 at recall 1
    assert m.auprc(np.array([0] * 6 + [1, 1]), np.array([9, 8, 7, 6, 5, 4, 1, 1.0])) == pytest.approx(0.25)
    assert m.auprc(np.array([1, 1, 0, 0]), np.array([4.0, 3.0, 2.0, 1.0])) == 1.0


def test_threshold_free_metrics_match_sklearn_and_ignore_nan():
    rng = np.random.default_rng(0)
    labels = np.zeros(500, bool)
    labels[300:340] = True
    scores = rng.normal(size=500) + 2.0 * labels
    scores[:31] = np.nan  # before the first full window
    r = m.evaluate_scores(labels, scores, threshold=2.0)
    ok = np.isfinite(scores)
    assert r["roc_auc"] == pytest.approx(roc_auc_score(labels[ok], scores[ok]))
    assert r["auprc"] == pytest.approx(average_precision_score(labels[ok], scores[ok]))
    assert 0.9 < r["roc_auc"] <= 1.0 and r["scored_points"] == 469
    assert r["event"]["tp"] == 1 and r["best_f1"]["f1"] > 0.5
    perfect = m.log_auc(labels[ok], labels[ok].astype(float))
    random_like = m.log_auc(labels[ok], rng.normal(size=ok.sum()))
    assert perfect == pytest.approx(1.0, abs=1e-3) and random_like < 0.4


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.zeros(200, bool)
    labels[120:140] = True
    scores = rng.random(200) + labels
    paths = [
        plots.plot_training_curves({"wasserstein": list(rng.random(80)), "gradient_penalty": [], "generator": [1, 2],
                                    "encoder": list(rng.random(60) + 0.1)}, tmp_path / "curves.png"),
        plots.plot_pr_curve(labels, scores, tmp_path / "pr.png"),
        plots.plot_score_timeline(scores, 1.0, [(120, 139)], tmp_path / "timeline.png", values=rng.random(200)),
        plots.plot_reconstruction(rng.random((16, 16)), rng.random((16, 16)), rng.random((16, 16)), tmp_path / "img.png"),
        plots.plot_reconstruction(rng.random((32, 3)), rng.random((32, 3)), rng.random((32, 3)), tmp_path / "seq.png",
                                  channel_names=["a", "b", "c"]),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000


def test_log_auc_is_research_document_003s():
    """A threshold with no false positive counts as 0.5 / N_neg: a perfect ranking scores 1, a
    ranking whose top sample is a negative scores less, and the figure depends on the ranking
    only."""
    labels = np.array([0] * 1000 + [1] * 10, bool)
    perfect = np.r_[np.zeros(1000), np.ones(10)]
    assert m.log_auc(labels, perfect) == pytest.approx(1.0)
    one_negative_on_top = perfect.copy()
    one_negative_on_top[0] = 2.0
    # the first positive now comes at fpr 1/1000 instead of 0.5/1000: one step of log10(2) lost
    expected = 1 - math.log10(2) / math.log10(2000)
    assert m.log_auc(labels, one_negative_on_top) == pytest.approx(expected, rel=1e-6)
    assert m.log_auc(labels, np.exp(perfect)) == m.log_auc(labels, perfect)
    rng = np.random.default_rng(0)
    random = np.mean([m.log_auc(labels, rng.normal(size=1010)) for _ in range(20)])
    assert random == pytest.approx(1 / (math.log(10) * math.log10(2000)), abs=0.05)
