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


def test_telemanom_bench_writes_tables(tmp_path):
    from stream_detector.bench.telemanom import METHODS, main

    _spacecraft(tmp_path / "toy")
    rc = main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--window", "16", "--iterations", "20",
               "--max-seconds", "10", "--out", str(tmp_path / "out"), "--name", "toy", "--models",
               str(tmp_path / "models")])
    assert rc == 0
    result = json.loads((tmp_path / "out" / "toy.json").read_text())
    assert [r["channel"] for r in result["channels"]] == ["X-1", "X-2"]
    for r in result["channels"]:
        assert r["label_ranges"] == [[400, 439]] and r["points"] == 700
        assert 0.0 <= r["auprc"] <= 1.0
        for m in METHODS:
            e = r["methods"][m]
            assert e["tp"] + e["fn"] == 1  # one labelled segment per channel
    total = result["summary"]["methods"]["quantile"]
    assert total["tp"] + total["fn"] == 2
    md = (tmp_path / "out" / "toy.md").read_text()
    assert "event F1" in md and "X-2" in md
    assert len(result["plots"]) == 2
    assert set(METHODS) == {"quantile", "pot", "dynamic", "telemanom"}

    # --rescore: the same thresholds on the saved raw scores, nothing trained, the same counts
    rc = main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--rescore", str(tmp_path / "models"),
               "--out", str(tmp_path / "out"), "--name", "toy_rescored"])
    assert rc == 0
    again = json.loads((tmp_path / "out" / "toy_rescored.json").read_text())
    assert again["rescored_from"] == str(tmp_path / "models")
    assert again["config"]["window"] == 16  # the run's own configuration, read back from config.json
    for r0, r1 in zip(result["channels"], again["channels"]):
        assert r0["methods"] == r1["methods"] and r0["train_seconds"] == r1["train_seconds"]
    assert "--rescore" in (tmp_path / "out" / "toy_rescored.md").read_text()


def test_telemanom_bench_rejects_a_wrong_folder(tmp_path):
    from stream_detector.bench.telemanom import main
    from stream_detector.errors import UserError

    with pytest.raises(UserError, match="telemanom layout"):
        main(["--data", str(tmp_path)])


def test_telemanom_rescore_needs_saved_scores(tmp_path):
    from stream_detector.bench.telemanom import main
    from stream_detector.errors import UserError

    _spacecraft(tmp_path / "toy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="scores.npz"):
        main(["--data", str(tmp_path / "toy"), "--spacecraft", "TOY", "--rescore", str(tmp_path / "empty")])
