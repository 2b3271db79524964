"""stream_detector.training.range_metrics: VUS from TSB-AD checked against the vus package, and
ESA-ADB's event-wise and affiliation scores from telemeval checked against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_detector.training.range_metrics import affiliation_f1, esa_event_f05, vus_pr


def _case(n=400, ranges=((100, 120), (300, 310)), seed=1):
    """A few hundred points, two labelled ranges, a noisy score that rises inside them."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=np.int64)
    for a, b in ranges:
        labels[a:b] = 1
    return labels, rng.normal(0.0, 1.0, n) + 1.5 * labels


@pytest.mark.parametrize("ranges", [((100, 120), (300, 310)), ((0, 15), (380, 400))])
@pytest.mark.parametrize("window", [0, 20, 37])
def test_vus_matches_the_vus_package(ranges, window):
    """TSB-AD 1.5 (the implementation called) against vus 0.0.6 (the VLDB 2022 paper's package,
    the reference).  Both run the same ``RangeAUC_volume_opt`` algorithm, TSB-AD with its own
    range finder, so agreement is exact up to float rounding: 1e-9 is asserted (1e-6 would do)."""
    from vus.utils.metrics import metricor

    labels, scores = _case(ranges=ranges)
    got = vus_pr(labels, scores, window)
    *_, ref_roc, ref_pr = metricor().RangeAUC_volume_opt(labels_original=labels, score=scores, windowSize=window)
    assert got["vus_pr"] == pytest.approx(ref_pr, abs=1e-9)
    assert got["vus_roc"] == pytest.approx(ref_roc, abs=1e-9)
    # The figures measure something: the same scores shuffled lose.
    shuffled = vus_pr(labels, np.random.default_rng(0).permutation(scores), window)
    assert got["vus_pr"] > shuffled["vus_pr"] + 0.15 and got["vus_roc"] > shuffled["vus_roc"] + 0.15


def test_vus_nan_prefix_is_the_minimum_score_and_bool_labels_work():
    """NaN scores (no full window yet) count as the smallest finite score; bool labels give the
    int labels' result (TSB-AD alone would let every bool range run to the end of the series)."""
    labels, scores = _case()
    with_nan = scores.copy()
    with_nan[:30] = np.nan
    filled = scores.copy()
    filled[:30] = scores[30:].min()
    got = vus_pr(labels.astype(bool), with_nan, 20)
    assert got == vus_pr(labels, filled, 20)
    assert all(math.isfinite(v) for v in got.values())


def test_vus_rejects_what_it_cannot_score():
    labels, scores = _case()
    with pytest.raises(ValueError, match="no anomaly"):
        vus_pr(np.zeros_like(labels), scores, 20)
    with pytest.raises(ValueError, match="NaN"):
        vus_pr(labels, np.full(len(labels), np.nan), 20)
    with pytest.raises(ValueError):
        vus_pr(labels[:-1], scores, 20)


def _one_event_and_a_false_flag():
    labels = np.zeros(20, dtype=np.int64)
    labels[5:8] = 1          # one labelled event: points 5, 6, 7
    flags = labels.copy()    # fully detected ...
    flags[15] = 1            # ... plus one false detection at point 15
    return labels, flags


def test_esa_event_f05_by_hand():
    """20 points, event at 5-7 flagged exactly, one false flag at 15.

    Recall = detected events / events = 1/1 = 1.
    Precision = TP_e / (TP_e + FP_e) x TNR = 1/(1 + 1) x (1 - 1/17) = 1/2 x 16/17 = 8/17
    (17 points outside the event, 1 of them flagged).
    F0.5 = 1.25 P R / (0.25 P + R) = 1.25 (8/17) / (2/17 + 1) = (10/17) / (19/17) = 10/19.
    """
    r = esa_event_f05(*_one_event_and_a_false_flag())
    assert r["recall"] == 1.0
    assert r["tnr"] == pytest.approx(16 / 17, abs=1e-12)
    assert r["precision"] == pytest.approx(8 / 17, abs=1e-12)
    assert r["f05"] == pytest.approx(10 / 19, abs=1e-12)
    assert (r["detected_events"], r["events"], r["false_alarms"]) == (1, 1, 1)


def test_esa_event_precision_counts_events_not_runs():
    """Two flagged runs inside one event (points 5 and 7) and one false flag at 15: ESA-ADB counts
    the event once, TP_e = 1, FP_e = 1, so P = 1/2 x 16/17 = 8/17 (telemeval's own run-based
    precision would be 2/3 before any correction).  A second event at 11-12 left undetected:
    recall 1/2, nominal points 20 - 5 = 15, TNR = 14/15, P = 1/2 x 14/15 = 7/15,
    F0.5 = 1.25 (7/15)(1/2) / (0.25 (7/15) + 1/2) = (7/24) / (37/60) = 35/74."""
    labels, flags = _one_event_and_a_false_flag()
    flags[6] = 0
    assert esa_event_f05(labels, flags)["precision"] == pytest.approx(8 / 17, abs=1e-12)
    labels[11:13] = 1
    r = esa_event_f05(labels, flags)
    assert r["recall"] == 0.5
    assert r["precision"] == pytest.approx(7 / 15, abs=1e-12)
    assert r["f05"] == pytest.approx(35 / 74, abs=1e-12)


def test_affiliation_f1_by_hand():
    """Same case.  One event, so its affiliation zone is the whole series [0, 20); a flag at i is
    the interval [i, i+1), the event [5, 8).

    Recall: every point of the event is flagged, distance 0: recall 1.
    Precision: the 3 flagged units inside the event score 1.  For the false flag, x in [15, 16)
    lies d = x - 8 in [7, 8) from the event; a uniform point of the zone lies at least d away
    only right of the event, on [8 + d, 20), with probability (12 - d)/20; its mean over d in
    [7, 8) is (12 - 7.5)/20 = 0.225.  Precision = (3 x 1 + 1 x 0.225)/4 = 0.80625 = 129/160.
    F1 = 2 P R / (P + R) = (258/160) / (289/160) = 258/289.
    """
    r = affiliation_f1(*_one_event_and_a_false_flag())
    assert r["recall"] == pytest.approx(1.0, abs=1e-12)
    assert r["precision"] == pytest.approx(129 / 160, abs=1e-12)
    assert r["f1"] == pytest.approx(258 / 289, abs=1e-12)


def test_nothing_flagged():
    labels, _ = _one_event_and_a_false_flag()
    none = np.zeros_like(labels)
    assert esa_event_f05(labels, none)["f05"] == 0.0
    r = affiliation_f1(labels, none)
    assert math.isnan(r["precision"]) and r["f1"] == 0.0
