"""Prometheus metrics of the worker, defined once at module level (prometheus-client style).

Names follow Prometheus conventions: ``stream_detector_`` prefix, base units, ``_total``
for counters, ``_seconds`` for durations.  Labels are bounded: ``status`` and ``reason``
come from fixed sets; the per-source gauges exist only for the first
``per_source_limit`` sources (a configuration setting) so a fleet of 100,000 tail numbers
cannot blow up the time-series database.  Faust's own sensor is attached to the same
registry by the app (``stream_detector_faust_*``).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from wsgiref.simple_server import make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

log = logging.getLogger(__name__)

MESSAGES = Counter("stream_detector_messages", "Input messages by outcome (ok, dead_letter, redelivered, duplicate).", ["status"])
# Only status="ok" is emitted: a rejected or redelivered message's points are never decoded, so
# they are counted by message in stream_detector_messages.  The label stays for the dashboards.
POINTS = Counter("stream_detector_points", "Telemetry points taken into windows (status: ok; rejected and "
                 "redelivered messages are counted in stream_detector_messages).", ["status"])
DEAD_LETTERS = Counter("stream_detector_dead_letters", "Messages sent to the dead-letter topic, by reason.", ["reason"])
WINDOWS = Counter("stream_detector_windows_scored", "Windows scored, by model name.", ["model"])
ANOMALIES = Counter("stream_detector_anomalous_windows", "Scored windows at or above the threshold.")
EPISODES_OPENED = Counter("stream_detector_alert_episodes_opened", "Alert episodes opened.")
EPISODES_OPEN = Gauge("stream_detector_alert_episodes_open", "Alert episodes currently open (this worker).")
SCORE = Histogram("stream_detector_window_score", "Anomaly score of each window (model units).",
                  buckets=(1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100))
BATCH_SIZE = Histogram("stream_detector_inference_batch_windows", "Windows per ONNX Runtime call.",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
INFERENCE = Histogram("stream_detector_inference_duration_seconds", "Duration of one ONNX Runtime call, by model name.",
                      ["model"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
LATENCY = Histogram("stream_detector_end_to_end_latency_seconds",
                    "From the timestamp of a window's last point to the publication of its score.",
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
SOURCES = Gauge("stream_detector_sources", "Sources with window state on this worker.")
SOURCES_SILENT = Gauge("stream_detector_sources_silent",
                       "Sources on this worker that have sent nothing for their silence time (source_silence_seconds).")
SOURCES_EVICTED = Counter("stream_detector_sources_evicted",
                          "Sources whose state was dropped after source_evict_seconds of silence.")
BROKER_CONNECTED = Gauge("stream_detector_broker_connected",
                         "1 while the worker's last broker probe (a metadata request, every second) was answered.")
BROKER_LAST_CONTACT = Gauge("stream_detector_broker_last_contact_timestamp_seconds",
                            "Unix time of the last answered broker probe.")
AGENT_ERRORS = Counter("stream_detector_agent_errors",
                       "Agent steps that failed and were retried or dead-lettered, by kind.", ["kind"])
# Model names come from the repository the operator lays out, so the ``model`` label is bounded.
MODEL = Info("stream_detector_model", "Each model served: version, ONNX Runtime provider, window, threshold method.",
             ["model"])
MODEL_VERSION = Gauge("stream_detector_model_version", "The version of each model being served.", ["model"])
MODEL_VERSIONS_REFUSED = Counter("stream_detector_model_versions_refused",
                                 "Model version directories refused (incomplete, corrupt or tampered); the previous "
                                 "version keeps serving.", ["model"])
# The children the worker touches for every message, looked up once.
MESSAGES_OK = MESSAGES.labels("ok")
MESSAGES_REDELIVERED = MESSAGES.labels("redelivered")
MESSAGES_DUPLICATE = MESSAGES.labels("duplicate")
POINTS_OK = POINTS.labels("ok")
SOURCE_SCORE = Gauge("stream_detector_source_score", "Latest window score per source (first N sources only).",
                     ["source"])
SOURCE_THRESHOLD = Gauge("stream_detector_source_threshold", "Alert threshold per source (first N sources only).",
                         ["source"])
SOURCE_LAST_SEEN = Gauge("stream_detector_source_last_point_timestamp_seconds",
                         "Timestamp of the latest point per source (first N sources only).", ["source"])


class SourceGauges:
    """Per-source gauges for at most ``limit`` sources (0 disables them); the rest are not labelled."""

    def __init__(self, limit: int):
        self.limit = limit
        self.known: set[str] = set()

    def _allowed(self, source: str) -> bool:
        if source in self.known:
            return True
        if len(self.known) < self.limit:
            self.known.add(source)
            return True
        return False

    def update(self, source: str, score: float, threshold: float, last_ts: float) -> None:
        if self._allowed(source):
            SOURCE_SCORE.labels(source).set(score)
            SOURCE_THRESHOLD.labels(source).set(threshold)
            SOURCE_LAST_SEEN.labels(source).set(last_ts)


class Health:
    """What ``/healthz`` says, fed by the worker's broker probe (on the event loop) and read by
    the HTTP thread.  A probe that stops coming (a blocked event loop) also reads as unhealthy."""

    def __init__(self, probe_seconds: float = 1.0) -> None:
        self.probe_seconds = probe_seconds
        self._lock = threading.Lock()
        self.connected: bool | None = None  # None until the first probe
        self.since = time.time()  # when ``connected`` last changed
        self.last_probe = 0.0
        self.error = ""
        self.assigned_partitions = 0

    def record(self, connected: bool, error: str = "", assigned_partitions: int = 0) -> None:
        now = time.time()
        with self._lock:
            if connected != self.connected:
                self.since = now
            self.connected, self.error, self.last_probe = connected, error, now
            self.assigned_partitions = assigned_partitions
        BROKER_CONNECTED.set(1 if connected else 0)
        if connected:
            BROKER_LAST_CONTACT.set(now)

    def view(self) -> tuple[int, dict]:
        """``(HTTP status, body)``: 200 when connected and probing, 503 otherwise."""
        now = time.time()
        with self._lock:
            stalled = self.last_probe and now - self.last_probe > max(5.0, 5 * self.probe_seconds)
            if self.connected is None:
                status = "starting"
            elif stalled:
                status = "stalled"  # the event loop has not probed for a while
            else:
                status = "ok" if self.connected else "not connected"
            body = {"status": status, "broker_connected": bool(self.connected),
                    "for_seconds": round(now - self.since, 3),
                    "last_probe_age_seconds": round(now - self.last_probe, 3) if self.last_probe else None,
                    "assigned_partitions": self.assigned_partitions}
            if self.error and status != "ok":
                body["error"] = self.error
        return (200 if status == "ok" else 503), body


HEALTH = Health()


def _app(health: Health):
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") == "/healthz":
            code, body = health.view()
            data = json.dumps(body).encode()
            start_response(f"{code} {'OK' if code == 200 else 'Service Unavailable'}",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return [data]
        return metrics_app(environ, start_response)

    return app


def serve(host: str, port: int, health: Health = HEALTH):
    """Serve ``/metrics`` and ``/healthz`` over HTTP (loopback unless configured otherwise) in
    a daemon thread; returns the server."""
    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, _app(health), Server, handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /healthz", host, server.server_port)
    return server
