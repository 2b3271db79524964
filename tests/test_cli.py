"""The CLI end to end (train, score, evaluate) and its one-line errors for user mistakes."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import synthetic_series

CLI = [sys.executable, "-m", "stream_detector.cli"]


def run(*args, ok=True):
    proc = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def write_csv(path, values, names=("a", "b", "c"), labels=None, t0=1_700_000_000.0):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", *names] + (["label"] if labels is not None else []))
        for i, row in enumerate(values):
            w.writerow([t0 + i, *[f"{v:.6f}" for v in row]] + ([int(labels[i])] if labels is not None else []))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("cli")
    write_csv(d / "train.csv", synthetic_series(1200))
    run("train", "--data", d / "train.csv", "--window", 16, "--stride", 4, "--out", d / "model", "--iterations", 20,
        "--encoder-iterations", 40, "--width", 8, "--latent", 4, "--quiet")
    return d


def test_train_writes_model_card_and_plots(trained):
    card = json.loads((trained / "model" / "model.json").read_text())
    assert card["channels"] == ["a", "b", "c"] and card["window"] == 16
    assert (trained / "model" / "model.onnx").stat().st_size > 0
    assert (trained / "model" / "training_curves.png").exists()


def test_train_level_weight_goes_into_the_card_and_a_negative_one_is_refused(trained, tmp_path):
    assert json.loads((trained / "model" / "model.json").read_text())["score"]["level_weight"] == 0.0  # sequence
    run("train", "--data", trained / "train.csv", "--window", 16, "--stride", 4, "--out", tmp_path / "m",
        "--transform", "distance-plot", "--plot-size", 8, "--level-weight", 0.5, "--iterations", 5,
        "--encoder-iterations", 5, "--width", 8, "--latent", 4, "--quiet")
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["score"]["level_weight"] == 0.5 and "level_weight" in card["score"]["formula"]
    # the default score kind: combined for a sequence model, fanogan for a distance plot
    assert card["score"]["kind"] == "fanogan" and "-D(x)" not in card["score"]["formula"]
    score = json.loads((trained / "model" / "model.json").read_text())["score"]
    assert score["kind"] == "combined" and score["critic_scale"] > 0 and "-D(x)" in score["formula"]
    run("train", "--data", trained / "train.csv", "--window", 16, "--stride", 4, "--out", tmp_path / "c",
        "--score", "fanogan", "--iterations", 5, "--encoder-iterations", 5, "--width", 8, "--latent", 4, "--quiet")
    score = json.loads((tmp_path / "c" / "model.json").read_text())["score"]
    assert score["kind"] == "fanogan" and "-D(x)" not in score["formula"]
    proc = run("train", "--data", trained / "train.csv", "--out", tmp_path / "bad", "--score-channels", "a,zz", ok=False)
    assert_one_line_error(proc, "score channels zz are not among the data's channels")
    proc = run("train", "--data", trained / "train.csv", "--out", tmp_path / "bad", "--score", "median", ok=False)
    assert proc.returncode != 0 and "invalid choice: 'median'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("train", "--data", trained / "train.csv", "--out", tmp_path / "bad", "--level-weight", -1, ok=False)
    assert proc.returncode != 0 and "--level-weight must be 0 or more" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_score_and_evaluate(trained):
    test = synthetic_series(600, seed=9)
    labels = np.zeros(600, bool)
    test[300:340, 0] += 3.0
    labels[300:340] = True
    write_csv(trained / "test.csv", test, labels=labels)
    run("score", "--model", trained / "model", "--data", trained / "test.csv", "--out", trained / "scores.csv",
        "--windows-out", trained / "windows.csv")
    rows = list(csv.DictReader(open(trained / "scores.csv")))
    assert len(rows) == 600 and rows[0]["score"] == "" and rows[15]["score"] != ""  # first window ends at 15
    windows = list(csv.DictReader(open(trained / "windows.csv")))
    assert len(windows) == (600 - 16) // 4 + 1
    inside = [w for w in windows if 300 <= int(w["start"]) and int(w["end"]) <= 339]
    assert inside and all(w["peak_channel"] == "a" and 300 <= int(w["peak_index"]) <= 339 for w in inside)
    proc = run("evaluate", "--model", trained / "model", "--data", trained / "test.csv", "--label-column", "label",
               "--out", trained / "report")
    report = json.loads((trained / "report" / "report.json").read_text())
    for key in ("roc_auc", "auprc", "best_f1", "event", "point_adjusted", "log_auc"):
        assert key in report
    assert report["roc_auc"] > 0.8  # a +3 level shift on a smooth channel is easy
    assert "ROC-AUC" in proc.stdout
    for png in ("pr_curve.png", "timeline.png", "window.png"):
        assert (trained / "report" / png).read_bytes()[:4] == b"\x89PNG"
    assert "| ROC-AUC |" in (trained / "report" / "report.md").read_text()
    # the same labels given as index ranges give the same numbers
    run("evaluate", "--model", trained / "model", "--data", trained / "test.csv", "--labels", "[[300, 339]]",
        "--out", trained / "report2")
    assert json.loads((trained / "report2" / "report.json").read_text())["auprc"] == report["auprc"]


def assert_one_line_error(proc, fragment):
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_path(tmp_path):
    assert_one_line_error(run("train", "--data", tmp_path / "nope.npy", "--out", tmp_path / "m", ok=False),
                          "data file not found")


def test_file_with_nans(tmp_path):
    values = synthetic_series(200)
    values[17, 1] = np.nan
    np.save(tmp_path / "nan.npy", values)
    assert_one_line_error(run("train", "--data", tmp_path / "nan.npy", "--out", tmp_path / "m", ok=False),
                          "1 NaN/inf values (first at row 17, channel 'c1')")


def test_too_few_rows(tmp_path):
    np.save(tmp_path / "short.npy", synthetic_series(40))
    assert_one_line_error(run("train", "--data", tmp_path / "short.npy", "--window", 64, "--out", tmp_path / "m",
                              ok=False), "40 rows, fewer than one window of 64")


def test_mismatched_channels(trained, tmp_path):
    write_csv(tmp_path / "other.csv", synthetic_series(100), names=("a", "x", "c"))
    assert_one_line_error(run("score", "--model", trained / "model", "--data", tmp_path / "other.csv",
                              "--out", tmp_path / "s.csv", ok=False), "missing ['b']")


def test_tampered_model_on_the_cli(trained, tmp_path):
    import shutil

    shutil.copytree(trained / "model", tmp_path / "m")
    with open(tmp_path / "m" / "model.onnx", "ab") as f:
        f.write(b"\0")
    np.save(tmp_path / "d.npy", synthetic_series(100))
    assert_one_line_error(run("score", "--model", tmp_path / "m", "--data", tmp_path / "d.npy", "--out",
                              tmp_path / "s.csv", ok=False), "does not match its card")
    # the worker refuses it at start, before touching Kafka
    assert_one_line_error(run("worker", "--model", tmp_path / "m", ok=False), "does not match its card")


def test_worker_config_errors_name_the_key(sequence_model, tmp_path):
    (tmp_path / "w.yaml").write_text(f"model_dir: {sequence_model}\nbatch_max_windows: lots\n")
    assert_one_line_error(run("worker", "--config", tmp_path / "w.yaml", ok=False), "batch_max_windows")
    (tmp_path / "w.yaml").write_text(f"model_dir: {sequence_model}\nbatch_windows: 3\n")
    assert_one_line_error(run("worker", "--config", tmp_path / "w.yaml", ok=False), "batch_windows")
    assert_one_line_error(run("worker", "--config", tmp_path / "missing.yaml", ok=False), "missing.yaml")
    assert_one_line_error(run("worker", ok=False), "model_dir")


def test_bad_csv_value(tmp_path):
    (tmp_path / "bad.csv").write_text("timestamp,a\n1,0.5\n2,abc\n")
    assert_one_line_error(run("train", "--data", tmp_path / "bad.csv", "--out", tmp_path / "m", ok=False),
                          "line 3: not a number")
