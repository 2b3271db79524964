"""``bench folder`` (labelled CSV files, SKAB's layout) end to end on a tiny synthetic test bed,
its refusals of bad input, its FAR / MAR against a hand count, and the CSV loader it uses
(``;``-separated files with a ``datetime`` column)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from stream_detector.errors import UserError

pytest.importorskip("torch")

ROWS = 600
SHIFT = (420, 479)   # a level shift on channel 0 (labelled)
BURST = (520, 529)   # a burst of spikes on channel 2 (labelled)


def _series(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(ROWS)
    x = np.stack([np.sin(t / 8.0), np.cos(t / 5.0), 0.5 * np.sin(t / 13.0) + 0.2], axis=1)
    return x + rng.normal(0, 0.02, x.shape)


def _write(path, values, labels, extra=True, sep=";", label_name="anomaly"):
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = datetime(2020, 3, 9, 10, 14, 33)
    head = ["datetime", "Accel", "Current", "Pressure"] + ([label_name, "changepoint"] if extra else [])
    lines = [sep.join(head)]
    for i, row in enumerate(values):
        cells = [(t0 + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")] + [f"{v:.6f}" for v in row]
        if extra:
            cells += [f"{float(labels[i]):.1f}", "1.0" if i in (SHIFT[0], BURST[0]) else "0.0"]
        lines.append(sep.join(cells))
    path.write_text("\n".join(lines) + "\n")


def _testbed(root, files=2):
    """``files`` runs with a level shift and a spike burst after row 400, and one anomaly-free run."""
    for k in range(files):
        x = _series(k)
        labels = np.zeros(ROWS, int)
        x[SHIFT[0]:SHIFT[1] + 1, 0] += 2.5
        x[BURST[0]:BURST[1] + 1:2, 2] += 4.0
        labels[SHIFT[0]:SHIFT[1] + 1] = 1
        labels[BURST[0]:BURST[1] + 1] = 1
        _write(root / "valve" / f"{k}.csv", x, labels)
    _write(root / "anomaly-free" / "free.csv", _series(99), np.zeros(ROWS, int), extra=False)


def _args(root, out, *extra):
    return ["--data", str(root), "--label-column", "anomaly", "--ignore-columns", "changepoint",
            "--window", "16", "--iterations", "20", "--out", str(out), *extra]


@pytest.mark.slow
def test_folder_bench_train_rows(tmp_path):
    from stream_detector.bench.folder import METHODS, main
    from stream_detector.runtime.episodes import hysteresis_flags

    _testbed(tmp_path / "bed")
    rc = main(_args(tmp_path / "bed", tmp_path / "out", "--train-rows", "400", "--exclude", "anomaly-free/*",
                    "--detectors", "wgan,zscore,iforest", "--seeds", "0,1", "--name", "bed",
                    "--models", str(tmp_path / "models")))
    assert rc == 0
    result = json.loads((tmp_path / "out" / "bed.json").read_text())
    md = (tmp_path / "out" / "bed.md").read_text()
    assert "## Threshold `telemanom`" in md and "FAR %" in md and "valve/1.csv" in md
    assert result["channels"] == ["Accel", "Current", "Pressure"]  # datetime, anomaly, changepoint left out
    p = result["protocol"]
    assert p["scored_files"] == 2 and p["evaluate_on"] == "rest" and p["labelled_training_points"] == {}
    assert p["evaluated_points"] == 2 * (ROWS - 400) and p["label_events"] == 4
    share = 140 / 400  # 70 labelled points of 200 evaluated per file
    assert p["flag_everything"]["f1"] == pytest.approx(2 * share / (1 + share)) and "Baseline: flagging every" in md
    assert set(result["comparison"]) == {"wgan", "zscore", "iforest"}

    runs = {(r["detector"], r["seed"]): r for r in result["runs"]}
    # zscore: the level shift (+2.5 on a channel within +-1) and the spikes (+4) are found in every file
    for seed in (0, 1):
        for row in runs["zscore", seed]["files"]:
            ev = row["methods"]["quantile"]["events"]
            assert (ev["tp"], ev["fn"]) == (2, 0), (row["file"], ev)
        assert runs["zscore", seed]["summary"]["methods"]["quantile"]["event_tp"] == 4
        # a pointwise detector: the level shift's range is flagged from its first point to its last
        assert all(r["methods"]["quantile"]["flagged_ranges"][0] == list(SHIFT) for r in runs["zscore", seed]["files"])
    # the aggregated mean is the mean of the per-seed figures
    for det in ("wgan", "zscore", "iforest"):
        for key in ("quantile.f1", "telemanom.far", "pot.event_f1"):
            m, k = key.split(".")
            per_seed = [runs[det, s]["summary"]["methods"][m][k] for s in (0, 1)]
            agg = result["comparison"][det][key]
            assert agg["mean"] == pytest.approx(np.mean(per_seed)) and agg["n"] == 2
            assert agg["std"] == pytest.approx(np.std(per_seed, ddof=1))
        au = [runs[det, s]["summary"]["mean_auprc"] for s in (0, 1)]
        assert result["comparison"][det]["auprc"]["mean"] == pytest.approx(np.mean(au))

    # FAR / MAR by hand from the saved raw scores: the quantile threshold's episodes on rows 400..599
    tp = fp = tn = fn = 0
    for k in range(2):
        with np.load(tmp_path / "models" / "iforest" / "seed0" / "valve" / str(k) / "scores.npz") as z:
            flags = hysteresis_flags(z["test_scores"], float(z["quantile_threshold"]), float(z["release"]))[400:]
        y = np.zeros(ROWS, bool)
        y[SHIFT[0]:SHIFT[1] + 1] = y[BURST[0]:BURST[1] + 1] = True
        y = y[400:]
        tp, fp = tp + int((flags & y).sum()), fp + int((flags & ~y).sum())
        tn, fn = tn + int((~flags & ~y).sum()), fn + int((~flags & y).sum())
    q = runs["iforest", 0]["summary"]["methods"]["quantile"]
    assert (q["tp"], q["fp"], q["tn"], q["fn"]) == (tp, fp, tn, fn)
    assert q["far"] == pytest.approx(fp / (fp + tn)) and q["mar"] == pytest.approx(fn / (fn + tp))
    assert set(runs["wgan", 0]["summary"]["methods"]) == set(METHODS)
    assert runs["wgan", 0]["files"][0]["vus_pr"] is not None


def test_point_rates_hand_count():
    from stream_detector.bench.folder import point_counts, point_rates

    labels = np.array([0, 0, 1, 1, 1, 0, 0, 0, 1, 0])
    flags = np.array([0, 1, 1, 0, 0, 0, 1, 0, 1, 0], bool)
    c = point_counts(labels, flags)
    assert c == {"tp": 2, "fp": 2, "tn": 4, "fn": 2}
    r = point_rates(c)
    assert r["far"] == pytest.approx(2 / 6) and r["mar"] == pytest.approx(2 / 4)
    assert r["precision"] == r["recall"] == r["f1"] == pytest.approx(0.5)


@pytest.mark.slow
def test_folder_bench_train_files(tmp_path):
    from stream_detector.bench.folder import main

    _testbed(tmp_path / "bed")
    rc = main(_args(tmp_path / "bed", tmp_path / "out", "--train-files", "anomaly-free/*.csv",
                    "--detectors", "zscore,wgan", "--seeds", "0", "--name", "tf", "--models", str(tmp_path / "m"),
                    "--score", "combined"))
    assert rc == 0
    result = json.loads((tmp_path / "out" / "tf.json").read_text())
    # --score reaches the model: its card and the report name the kind
    assert result["config"]["score"] == "combined"
    card = json.loads((tmp_path / "m" / "wgan" / "seed0" / "model" / "model.json").read_text())
    assert card["score"]["kind"] == "combined"
    p = result["protocol"]
    assert p["training_files"] == ["anomaly-free/free.csv"] and p["scored_files"] == 2
    assert p["evaluate_on"] == "all" and p["evaluated_points"] == 2 * ROWS
    z = next(r for r in result["runs"] if r["detector"] == "zscore")
    assert z["summary"]["methods"]["quantile"]["event_tp"] == 4
    # one model per detector and seed, scoring both files
    assert (tmp_path / "m" / "wgan" / "seed0" / "model" / "model.onnx").exists()
    wg = next(r for r in result["runs"] if r["detector"] == "wgan")
    assert [f["file"] for f in wg["files"]] == ["valve/0.csv", "valve/1.csv"]
    assert wg["files"][0]["unscored_points"] == 15  # window 16: the first 15 points have no score, not flagged
    assert p["unscored_points"] == {"zscore": 0, "wgan": 30}


@pytest.mark.parametrize("case, message", [
    ("empty", "no CSV files"),
    ("no_label", "no label column 'anomaly'"),
    ("bad_label", "labels must be 0 or 1"),
    ("too_many_rows", "--train-rows 700 is not less than the rows"),
    ("both", "exactly one of --train-rows"),
    ("neither", "exactly one of --train-rows"),
    ("no_match", "no CSV file under"),
])
def test_folder_bench_refuses_bad_input(tmp_path, case, message):
    from stream_detector.bench.folder import BENCHMARK

    root = tmp_path / "bed"
    root.mkdir()
    x, labels = _series(0)[:ROWS], np.zeros(ROWS, int)
    if case != "empty":
        _write(root / "a.csv", x, labels)
        _write(root / "b.csv", x, labels, label_name="label" if case == "no_label" else "anomaly")
    if case == "bad_label":
        text = (root / "a.csv").read_text().splitlines()
        text[10] = text[10].rsplit(";", 2)[0] + ";2.0;0.0"
        (root / "a.csv").write_text("\n".join(text) + "\n")
    extra = {"too_many_rows": ["--train-rows", "700"], "both": ["--train-rows", "400", "--train-files", "a.csv"],
             "neither": [], "no_match": ["--train-files", "free/*.csv"]}.get(case, ["--train-rows", "400"])
    args = BENCHMARK.parse(_args(root, tmp_path / "out", "--detectors", "zscore", "--seeds", "0", *extra))
    with pytest.raises(UserError, match=message) as e:
        BENCHMARK.run(args)
    if case == "no_label":  # the file and the columns it has are named
        assert "b.csv" in str(e.value) and "Accel" in str(e.value) and "label" in str(e.value)
    if case == "bad_label":
        assert "a.csv" in str(e.value) and "line 11" in str(e.value)


def test_load_series_reads_semicolon_csv_with_datetime(tmp_path):
    from stream_detector.data import load_series

    x, labels = _series(3)[:50], np.zeros(50, int)
    labels[20:25] = 1
    _write(tmp_path / "skab.csv", x, labels)
    s = load_series(tmp_path / "skab.csv", "anomaly", ignore_columns=["changepoint"])
    assert s.channels == ["Accel", "Current", "Pressure"]
    np.testing.assert_allclose(s.values, x, atol=1e-6)
    assert s.labels.tolist() == labels.astype(bool).tolist()
    assert s.timestamps[0] == datetime(2020, 3, 9, 10, 14, 33, tzinfo=timezone.utc).timestamp()  # naive: UTC
    assert np.all(np.diff(s.timestamps) == 1.0)
    # without a label column or ignore list, every non-timestamp column is a channel (what `train` reads)
    assert load_series(tmp_path / "skab.csv").channels == ["Accel", "Current", "Pressure", "anomaly", "changepoint"]
    # the separator can be given; a comma file is still read as before
    assert load_series(tmp_path / "skab.csv", sep=";").values.shape == (50, 5)
    _write(tmp_path / "comma.csv", x, labels, sep=",")
    assert load_series(tmp_path / "comma.csv", "anomaly", ignore_columns=["changepoint"]).channels == \
        ["Accel", "Current", "Pressure"]


def test_folder_bench_error_is_one_line_on_the_command_line(tmp_path, capsys):
    from stream_detector.cli import main

    (tmp_path / "empty").mkdir()
    rc = main(["bench", "folder", "--data", str(tmp_path / "empty"), "--label-column", "anomaly", "--train-rows", "400",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "no CSV files" in err and len(err.strip().splitlines()) == 1
