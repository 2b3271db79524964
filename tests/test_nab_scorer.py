"""The NAB scorer: hand-made cases of NAB's rules, and the published scoreboard reproduced.

The corpus checks use the shared NAB folder (``<data root>/nab``): the published results of
the ``numenta`` (HTM) and ``null`` detectors scored with their tuned thresholds from
``config/thresholds.json`` must give ``results/final_results.json`` within 0.1.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from stream_detector.bench import nab_scorer as ns
from stream_detector.bench.datasets import data_root

COST = {"standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}},
        "reward_low_FN_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0}}}

# A toy corpus: 200 points a minute apart; probation = floor(0.15 * 200) = 30 points; one
# window over rows 100..119 (width 20).
N, START, END = 200, 100, 119
TS = np.datetime64("2020-01-01T00:00:00") + 60 * np.arange(N).astype("timedelta64[s]")
HALF = {"standard": 0.5, "reward_low_FN_rate": 0.5}
LABELS = {"toy/a.csv": [[str(TS[START]).replace("T", " ") + ".000000", str(TS[END]).replace("T", " ")]]}


def toy(*rows: int, score: float = 1.0) -> dict:
    s = np.zeros(N)
    s[list(rows)] = score
    return {"toy/a.csv": (TS.astype(str), s)}


def raw(*rows: int, profile: str = "standard") -> float:
    return ns.score_arrays(toy(*rows), LABELS, COST, thresholds=HALF)[profile]["raw"]


# --------------------------------------------------------------------------------------------
# NAB's rules on hand-made cases


def test_scaled_sigmoid_reference_points():
    assert ns.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)  # window's left edge
    assert ns.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert ns.scaled_sigmoid(0.0) == pytest.approx(0.0, abs=1e-12)  # right edge
    assert ns.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert ns.scaled_sigmoid(3.0) == -1.0 and ns.scaled_sigmoid(50.0) == -1.0
    y = np.linspace(-1, 2.9, 50)
    assert np.all(np.diff(ns.scaled_sigmoid(y)) < 0)  # earlier is always better


def test_probationary_length_is_15_percent_capped_at_750():
    assert ns.probationary_length(200) == 30
    assert ns.probationary_length(4032) == 604
    assert ns.probationary_length(15833) == 750


def test_detection_at_window_start_earns_the_tp_weight():
    assert raw(START) == pytest.approx(1.0, abs=1e-12)
    # at the right edge almost nothing: S(-1/20) / S(-1)
    assert raw(END) == pytest.approx(ns.scaled_sigmoid(-1 / 20) / ns.scaled_sigmoid(-1.0), abs=1e-12)
    assert 0 < raw(END) < raw(START + 10) < raw(START)


def test_only_the_earliest_detection_in_a_window_counts():
    r = ns.score_arrays(toy(START + 5, START + 6, END), LABELS, COST, thresholds=HALF)
    assert r["standard"]["raw"] == pytest.approx(raw(START + 5), abs=1e-12)
    assert (r["standard"]["tp"], r["standard"]["windows_detected"], r["standard"]["fp"]) == (3, 1, 0)


def test_false_positive_far_from_windows_costs_the_fp_weight():
    missed = -1.0  # -fnWeight for the window
    assert raw(60) == pytest.approx(missed - 0.11, abs=1e-12)  # before any window: S(3) = -1
    assert raw(199) == pytest.approx(missed - 0.11, abs=1e-12)  # 80 rows past a 20-row window
    assert raw(60, profile="reward_low_FN_rate") == pytest.approx(-2.0 - 0.11, abs=1e-12)
    # Just after the window it is probably the same event, late: a smaller cost.
    just_after = raw(END + 2) - missed
    assert just_after == pytest.approx(0.11 * ns.scaled_sigmoid(2 / 19), abs=1e-12)
    assert -0.11 < just_after < 0


def test_probationary_period_is_not_scored():
    assert raw(5, 29) == pytest.approx(-1.0, abs=1e-12)  # as if nothing was detected
    assert raw(30) == pytest.approx(-1.11, abs=1e-12)  # first scored row


def test_null_and_perfect_detectors_normalise_to_0_and_100():
    for p, r in ns.score_arrays(toy(), LABELS, COST, thresholds=HALF).items():
        assert r["score"] == pytest.approx(0.0, abs=1e-9), p
    for p, r in ns.score_arrays(toy(START), LABELS, COST, thresholds=HALF).items():
        assert r["score"] == pytest.approx(100.0, abs=1e-9), p


def test_optimiser_picks_the_best_corpus_threshold():
    s = np.zeros(N)
    s[START + 2] = 0.9  # the hit
    s[[50, 190, 180]] = [0.7, 0.95, 0.6]  # false alarms (far from the window), one louder than the hit
    r = ns.score_arrays({"toy/a.csv": (TS, s)}, LABELS, COST)["standard"]
    # 0.9 catches the window at the cost of one false positive (0.95); 0.7 or lower adds more
    assert r["threshold"] == 0.9
    assert r["raw"] == pytest.approx(ns.scaled_sigmoid(-18 / 20) / ns.scaled_sigmoid(-1.0) - 0.11, abs=1e-12)
    assert (r["tp"], r["fp"]) == (1, 1)


def test_sweep_matches_scoring_at_every_threshold():
    rng = np.random.default_rng(3)
    labels, scores = {}, {}
    for k in range(4):
        n = 300 + 50 * k
        ts = np.arange(n) * 60.0  # epoch seconds
        w = [[0.0 + 60 * a, 60.0 * (a + 15 + k)] for a in (120 + 10 * k, 220 + 10 * k)]
        labels[f"c/f{k}.csv"] = [[str(np.datetime64(int(a), "s")), str(np.datetime64(int(b), "s"))] for a, b in w]
        scores[f"c/f{k}.csv"] = (ts, np.round(rng.random(n) ** 4, 2))  # many ties
    prep = ns.prepare(scores, ns.load_windows(labels))
    for cost in ns.load_profiles(COST).values():
        thresholds, raws = ns.sweep(prep, cost)
        assert thresholds[0] == ns.NOTHING_THRESHOLD and np.all(np.diff(thresholds) < 0)
        direct = [ns.raw_at_threshold(prep, cost, t)[0] for t in thresholds]
        np.testing.assert_allclose(raws, direct, atol=1e-9)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="NaN"):
        ns.score_arrays({"toy/a.csv": (TS, np.full(N, np.nan))}, LABELS, COST)
    with pytest.raises(ValueError, match="timestamps"):
        ns.score_arrays({"toy/a.csv": (TS[:10], np.zeros(N))}, LABELS, COST)
    with pytest.raises(KeyError, match="label windows"):
        ns.score_arrays({"toy/b.csv": (TS, np.zeros(N))}, LABELS, COST)


# --------------------------------------------------------------------------------------------
# The published NAB scoreboard


@pytest.fixture(scope="module")
def nab() -> Path:
    root = data_root() / "nab"
    needed = ["labels/combined_windows.json", "config/profiles.json", "config/thresholds.json",
              "results/final_results.json", "results/numenta", "results/null", "data"]
    missing = [p for p in needed if not (root / p).exists()]
    if missing:
        pytest.skip(f"NAB corpus not found at {root} (missing {', '.join(missing)}; set STREAM_DETECTOR_DATA)")
    return root


@pytest.fixture(scope="module")
def published(nab) -> dict:
    return json.loads((nab / "results" / "final_results.json").read_text())


@pytest.fixture(scope="module")
def numenta_results(nab) -> dict:
    return ns.load_results(nab / "results" / "numenta", data_dir=nab / "data")


def _score(nab, results, detector=None, thresholds=None, **kw):
    th = ns.load_thresholds(nab / "config" / "thresholds.json", detector) if detector else thresholds
    return ns.score_arrays(results, nab / "labels" / "combined_windows.json", nab / "config" / "profiles.json",
                           thresholds=th, **kw)


def _nab_totals(path: Path) -> dict:
    with open(path, newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["Detector"] == "Totals")
    return {"raw": float(row["Score"]), "tp": int(row["TP"]), "fp": int(row["FP"]), "fn": int(row["FN"]),
            "tn": int(row["TN"])}


def test_numenta_reproduces_final_results(nab, published, numenta_results):
    ours = _score(nab, numenta_results, "numenta")
    assert set(ours) == set(ns.PROFILES)
    for profile in ns.PROFILES:
        assert ours[profile]["score"] == pytest.approx(published["numenta"][profile], abs=0.1), profile
        # and NAB's own per-profile totals (raw score and point counts), where shipped
        totals = nab / "results" / "numenta" / f"numenta_{profile}_scores.csv"
        if totals.exists():
            t = _nab_totals(totals)
            assert ours[profile]["raw"] == pytest.approx(t.pop("raw"), abs=1e-6), profile
            assert {k: ours[profile][k] for k in t} == t, profile
    assert ours["standard"]["windows"] == 116


def test_score_corpus_reads_a_results_folder(nab, published):
    th = ns.load_thresholds(nab / "config" / "thresholds.json", "numenta")
    r = ns.score_corpus(nab / "results" / "numenta", nab / "labels" / "combined_windows.json",
                        nab / "config" / "profiles.json", data_dir=nab / "data", thresholds=th)
    assert r["standard"]["score"] == pytest.approx(published["numenta"]["standard"], abs=0.1)


def test_optimised_thresholds_score_at_least_the_published_ones(nab, numenta_results):
    fixed = _score(nab, numenta_results, "numenta")
    opt = _score(nab, numenta_results)
    for profile in ns.PROFILES:
        assert opt[profile]["score"] >= fixed[profile]["score"] - 0.1, profile
        assert 0.0 <= opt[profile]["threshold"] <= ns.NOTHING_THRESHOLD


def test_null_detector_reproduces_final_results(nab, published):
    null = ns.load_results(nab / "results" / "null", data_dir=nab / "data")
    for scores in (_score(nab, null, "null"), _score(nab, null)):
        for profile in ns.PROFILES:
            assert scores[profile]["score"] == pytest.approx(published["null"][profile], abs=0.1), profile


def test_corpus_null_and_perfect_detectors(nab, numenta_results):
    """Scores from arrays: all zeros scores 0; a detection on each window's first row scores 100."""
    windows = ns.load_windows(nab / "labels" / "combined_windows.json")
    zero, perfect = {}, {}
    for rel, (ts, s) in numenta_results.items():
        zero[rel] = (ts, np.zeros(len(s)))
        hit = np.zeros(len(s))
        hit[np.searchsorted(ts, windows[rel][:, 0])] = 1.0
        perfect[rel] = (ts, hit)
    th = {p: 0.5 for p in ns.PROFILES}
    for profile, r in _score(nab, zero, thresholds=th).items():
        assert r["score"] == pytest.approx(0.0, abs=1e-9), profile
    for profile, r in _score(nab, perfect, thresholds=th).items():
        assert r["score"] == pytest.approx(100.0, abs=1e-9), profile
        assert r["windows_detected"] == r["windows"] == 116 and r["fp"] == 0
    assert math.isfinite(_score(nab, perfect)["standard"]["score"])
