"""``/healthz`` over a real HTTP server: starting, ok, not connected (with the error), stalled."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from stream_detector.runtime import metrics


def get(server, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def served():
    health = metrics.Health(probe_seconds=1.0)
    server = metrics.serve("127.0.0.1", 0, health)
    yield health, server
    server.shutdown()


def test_health_states_and_metrics_beside(served):
    health, server = served
    code, body = get(server, "/healthz")
    assert (code, json.loads(body)["status"]) == (503, "starting")
    health.record(True, "", assigned_partitions=3)
    code, body = get(server, "/healthz")
    assert code == 200 and json.loads(body) == {**json.loads(body), "status": "ok", "broker_connected": True,
                                                 "assigned_partitions": 3}
    health.record(False, "KafkaConnectionError: Connection at 127.0.0.1:9092 closed", 3)
    code, body = get(server, "/healthz")
    view = json.loads(body)
    assert code == 503 and view["status"] == "not connected" and "Connection at" in view["error"]
    health.last_probe -= 60  # no probe for a minute: the event loop is blocked
    code, body = get(server, "/healthz")
    assert (code, json.loads(body)["status"]) == (503, "stalled")
    code, text = get(server, "/metrics")
    assert code == 200 and b"stream_detector_broker_connected 0.0" in text
