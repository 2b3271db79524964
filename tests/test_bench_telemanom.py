"""The telemanom-layout benchmark end to end on a tiny synthetic spacecraft (two channels)."""

import csv
import json

import numpy as np
import pytest

from conftest import synthetic_series

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def _spacecraft(root):
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for i, chan in enumerate(["X-1", "X-2"]):
        train = synthetic_series(900, seed=i)
        test = synthetic_series(700, seed=10 + i)
        test[400:440, 0] += 3.0  # a burst the model never saw
        np.save(root / "train" / f"{chan}.npy", train)
        np.save(root / "test" / f"{chan}.npy", test)
        rows.append({"chan_id": chan, "spacecraft": "TOY", "anomaly_sequences": "[[400, 439]]",
                     "class": "[point]", "num_values": 700})
    with open(root / "labeled_anomalies.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _labels(n: int, start: int, end: int) -> np.ndarray:
    labels = np.zeros(n, bool)
    labels[start:end + 1] = True
    return labels


def test_telemanom_bench_writes_tables(tmp_path):
    from sklearn.metrics import average_precision_score, roc_auc_score

    from stream_detector.bench.telemanom import METHODS, main

    _spacecraft(tmp_path / "toy")
    # fanogan: the hand-checked episode below is that score's (the default, combined, flickers
    # once on entering the burst on this 20-iteration toy model: two episodes, both inside it)
    rc = main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--window", "16", "--iterations", "20",
               "--detectors", "wgan", "--seeds", "0", "--out", str(tmp_path / "out"), "--name", "toy", "--models",
               str(tmp_path / "models"), "--score", "fanogan"])
    assert rc == 0
    result = json.loads((tmp_path / "out" / "toy.json").read_text())
    assert [r["channel"] for r in result["channels"]] == ["X-1", "X-2"]
    for r in result["channels"]:
        assert r["label_ranges"] == [[400, 439]] and r["points"] == 700
        # The burst (+3 on a channel that stays within +-1 in training, 40 points long) must be
        # found by every method, and the static thresholds must raise it within one window.
        for m in METHODS:
            e = r["methods"][m]
            assert (e["tp"], e["fn"]) == (1, 0), f"{r['channel']} {m}: the burst was missed: {e}"
        hit = [seg for seg in r["methods"]["quantile"]["predicted"] if seg[0] <= 439 and seg[1] >= 400]
        assert len(hit) == 1 and 400 <= hit[0][0] < 400 + 16, hit
        # AUPRC / ROC-AUC are those of the saved per-point scores against the labels (NaN-free part)
        with np.load(tmp_path / "models" / "wgan" / "seed0" / r["channel"] / "scores.npz") as z:
            scores = z["test_scores"]
        ok, labels = np.isfinite(scores), _labels(700, 400, 439)
        assert ok.sum() == 700 - 15  # one window (16) before the first score
        assert r["auprc"] == pytest.approx(average_precision_score(labels[ok], scores[ok]), abs=1e-12)
        assert r["roc_auc"] == pytest.approx(roc_auc_score(labels[ok], scores[ok]), abs=1e-12)
        assert r["auprc"] > 0.8 and r["roc_auc"] > 0.95  # against a base rate of 40 / 685
    total = result["summary"]["methods"]["quantile"]
    assert (total["tp"], total["fn"], total["recall"]) == (2, 0, 1.0)
    assert result["summary"]["mean_auprc"] == pytest.approx(np.mean([r["auprc"] for r in result["channels"]]))
    md = (tmp_path / "out" / "toy.md").read_text()
    assert "event F1" in md and "X-2" in md
    assert len(result["plots"]) == 2
    assert set(METHODS) == {"quantile", "pot", "dynamic", "telemanom"}

    # --rescore: the same thresholds on the saved raw scores, nothing trained, the same counts
    # (--synthetic: each saved model checked on faults injected into its held-out train points)
    rc = main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--rescore", str(tmp_path / "models"),
               "--out", str(tmp_path / "out"), "--name", "toy_rescored", "--synthetic"])
    assert rc == 0
    again = json.loads((tmp_path / "out" / "toy_rescored.json").read_text())
    for r in again["channels"]:
        syn = r["synthetic"]
        assert 0.0 < syn["mean_auprc"] <= 1.0 and 0.0 <= syn["mean_detected"] <= 1.0
        assert syn["level_shift_auprc"] > 0.3, syn  # 3 standard deviations for 8 points: plainly visible
    assert again["summary"]["synthetic_mean_auprc"] == pytest.approx(
        np.mean([r["synthetic"]["mean_auprc"] for r in again["channels"]]))
    assert "Synthetic faults" in (tmp_path / "out" / "toy_rescored.md").read_text()
    assert again["rescored_from"] == str(tmp_path / "models")
    assert again["config"]["window"] == 16  # the run's own configuration, read back from config.json
    for r0, r1 in zip(result["channels"], again["channels"]):
        assert r0["methods"] == r1["methods"] and r0["train_seconds"] == r1["train_seconds"]
    assert "--rescore" in (tmp_path / "out" / "toy_rescored.md").read_text()


def _save_scores(models, chan: str, test_scores: np.ndarray, rng) -> None:
    """A channel's raw scores as a run saves them, with held-out calibration scores in [0.08, 0.12],
    a quantile threshold of 0.2 and a release level of 0.15."""
    (models / chan).mkdir(parents=True)
    np.savez(models / chan / "scores.npz", test_scores=test_scores, calibration_scores=rng.uniform(0.08, 0.12, 2000),
             quantile_threshold=0.2, release=0.15, train_points=900, train_seconds=1.0, score_seconds=0.1,
             stopped_early_by_budget=False)


def test_rescore_on_scores_built_to_be_detected_and_to_be_missed(tmp_path):
    """Scores made by hand, so every figure is known: on X-1 the labelled segment (400..439)
    scores 5.0 against a background in [0.09, 0.11] (every threshold lies between), so every
    method must find it and nothing else, with AUPRC 1; on X-2 the same burst sits off the
    labels (600..639) and the labelled points hold the lowest score, so every method must miss
    them and raise one false alarm, and AUPRC is the base rate: with the 40 positives tied
    below all 645 negatives the one threshold that recalls them flags all 685 scored points,
    precision 40 / 685 at recall 1."""
    from stream_detector.bench.telemanom import DEFAULT_CONFIG, METHODS, main

    _spacecraft(tmp_path / "toy")  # the labels ([400, 439] on both channels) and test series for the plots
    models = tmp_path / "models"
    models.mkdir()
    (models / "config.json").write_text(json.dumps({**DEFAULT_CONFIG, "window": 16}))
    rng = np.random.default_rng(0)
    n = 700
    found = np.full(n, np.nan)  # no score before the first complete window
    found[15:] = rng.uniform(0.09, 0.11, n - 15)
    found[400:440] = 5.0
    missed = np.full(n, np.nan)
    missed[15:] = rng.uniform(0.09, 0.11, n - 15)
    missed[600:640] = 5.0
    missed[400:440] = 0.085
    _save_scores(models, "X-1", found, rng)
    _save_scores(models, "X-2", missed, rng)
    assert main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--rescore", str(models),
                 "--out", str(tmp_path / "out"), "--name", "hand"]) == 0
    result = json.loads((tmp_path / "out" / "hand.json").read_text())
    x1, x2 = result["channels"]
    assert x1["auprc"] == 1.0 and x1["roc_auc"] == 1.0
    assert x2["auprc"] == pytest.approx(40 / 685, abs=1e-12) and x2["roc_auc"] == 0.0
    for m in METHODS:
        assert (x1["methods"][m]["tp"], x1["methods"][m]["fp"], x1["methods"][m]["fn"]) == (1, 0, 0), m
        assert (x2["methods"][m]["tp"], x2["methods"][m]["fp"], x2["methods"][m]["fn"]) == (0, 1, 1), m
        assert result["summary"]["methods"][m]["f1"] == pytest.approx(0.5)
    for m in ("quantile", "pot"):  # episodes open at the threshold and close below the release level
        assert x1["methods"][m]["predicted"] == [[400, 439]] and x2["methods"][m]["predicted"] == [[600, 639]]
    assert x1["thresholds"]["quantile"] == 0.2 and 0.11 < x1["thresholds"]["pot"] < 5.0
    assert result["summary"]["mean_auprc"] == pytest.approx((1.0 + 40 / 685) / 2)


def test_telemanom_bench_rejects_a_wrong_folder(tmp_path):
    from stream_detector.bench.telemanom import main
    from stream_detector.errors import UserError

    with pytest.raises(UserError, match="telemanom layout"):
        main(["--data", str(tmp_path)])


def test_only_names_channels_the_folder_has(tmp_path):
    """A typo in --only is refused before anything runs, naming the channel (it used to end in
    'no channel could be run: ... FileNotFoundError')."""
    from stream_detector.bench.telemanom import main
    from stream_detector.errors import UserError

    _spacecraft(tmp_path / "toy")
    with pytest.raises(UserError, match="--only: no labelled channel X-9 with data in .*it has 2, e.g. X-1, X-2"):
        main(["--data", str(tmp_path / "toy"), "--only", "X-1,X-9", "--detectors", "zscore", "--seeds", "0",
              "--out", str(tmp_path / "out")])


def test_synthetic_needs_rescore(tmp_path):
    from stream_detector.bench.telemanom import main
    from stream_detector.errors import UserError

    _spacecraft(tmp_path / "toy")
    with pytest.raises(UserError, match="--synthetic checks the models of an earlier run"):
        main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--synthetic"])


def test_telemanom_rescore_needs_saved_scores(tmp_path):
    from stream_detector.bench.telemanom import main
    from stream_detector.errors import UserError

    _spacecraft(tmp_path / "toy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="scores.npz"):
        main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--rescore", str(tmp_path / "empty")])


def test_seed_ensemble_averages_scores_in_units_of_each_seeds_threshold(tmp_path):
    """Two seeds of one detector: the ensemble divides each seed's scores by its own quantile
    threshold before averaging, so a seed trained to a 10x scale does not outweigh the other;
    ``--rescore --ensemble`` reports it beside the seeds."""
    from stream_detector.bench.telemanom import ensemble_saved, main

    a = {"test_scores": np.array([np.nan, 0.1, 0.4]), "calibration_scores": np.array([0.1, 0.2]),
         "quantile_threshold": 0.2, "release": 0.15, "train_points": 900, "train_seconds": 1.0, "score_seconds": 0.5,
         "stopped_early_by_budget": False}
    b = {**a, "test_scores": np.array([np.nan, 3.0, 1.0]), "calibration_scores": np.array([2.0, 1.0]),
         "quantile_threshold": 2.0}
    e = ensemble_saved([a, b])
    np.testing.assert_allclose(e["test_scores"], [np.nan, (0.5 + 1.5) / 2, (2.0 + 0.5) / 2])
    np.testing.assert_allclose(e["calibration_scores"], [(0.5 + 1.0) / 2, (1.0 + 0.5) / 2])
    assert e["quantile_threshold"] == pytest.approx(0.75) and e["train_seconds"] == 2.0

    _spacecraft(tmp_path / "toy")
    rng = np.random.default_rng(0)
    for seed, burst in ((0, 5.0), (1, 0.3)):  # seed 1 barely sees the burst
        folder = tmp_path / "models" / "wgan" / f"seed{seed}"
        folder.mkdir(parents=True)
        for chan in ("X-1", "X-2"):
            s = np.full(700, np.nan)
            s[15:] = rng.uniform(0.09, 0.11, 685)
            s[400:440] = burst
            _save_scores(folder, chan, s, rng)
    assert main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--rescore", str(tmp_path / "models"),
                 "--ensemble", "wgan", "--out", str(tmp_path / "out"), "--name", "ens"]) == 0
    result = json.loads((tmp_path / "out" / "ens.json").read_text())
    assert result["seeds_run"] == {"wgan": [0, 1], "wgan-ensemble": [0, 1]}
    assert [(r["detector"], r["seed"]) for r in result["runs"]] == [("wgan", 0), ("wgan", 1), ("wgan-ensemble", 0)]
    ens = result["runs"][2]["summary"]["methods"]["quantile"]
    assert (ens["tp"], ens["fn"]) == (2, 0)  # the average of 25x and 1.5x the threshold is above it
    assert "ensemble of 0,1" in (tmp_path / "out" / "ens.md").read_text()

    # --seeds picks saved runs when rescoring
    assert main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--rescore", str(tmp_path / "models"),
                 "--seeds", "1", "--out", str(tmp_path / "out"), "--name", "one"]) == 0
    one = json.loads((tmp_path / "out" / "one.json").read_text())
    assert [(r["detector"], r["seed"]) for r in one["runs"]] == [("wgan", 1)]


def test_a_run_saved_before_the_score_key_reads_as_fanogan(tmp_path):
    """SMAP's kind is now ``combined`` (the runner's default); a run saved before its
    configuration named the kind was a ``fanogan`` run, and a rescore must report it so."""
    from stream_detector.bench.telemanom import DEFAULT_CONFIG, with_saved_config

    assert DEFAULT_CONFIG["score"] == "combined"
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"window": 64, "seed": 2}))
    cfg = with_saved_config(dict(DEFAULT_CONFIG), saved)
    assert cfg["score"] == "fanogan" and cfg["seed"] == 2 and cfg["telemanom_p"] == DEFAULT_CONFIG["telemanom_p"]
    saved.write_text(json.dumps({"score": "hybrid"}))
    assert with_saved_config(dict(DEFAULT_CONFIG), saved)["score"] == "hybrid"
    assert with_saved_config(dict(DEFAULT_CONFIG), tmp_path / "absent.json")["score"] == "combined"
