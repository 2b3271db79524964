"""The Faust application: topics, the per-source state table and the detection agent.

``create_app(cfg)`` builds everything from a :class:`~stream_detector.config.WorkerConfig`
in one place.  Run it with ``stream-detector worker --config FILE`` or the Faust way,
``faust -A stream_detector.faust_app worker`` (configuration from ``STREAM_DETECTOR_CONFIG``
and ``STREAM_DETECTOR_*`` variables).

Delivery: the agent takes up to ``batch_max_messages`` messages or waits
``batch_max_latency_ms``, scores all their windows (from every source) in
``batch_max_windows``-sized ONNX Runtime calls on an executor thread, publishes scores,
alerts and dead letters and waits until Kafka has them, and only then writes each touched
source's state (window buffer, open episode, last input offset) to the table.  Faust
flushes the producer before committing input offsets, so after a crash the state is never
behind the committed offsets, and anything at or below a source's saved offset is known to
be published: windows are neither lost nor (beyond at-least-once) published twice.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import faust

from . import metrics
from .config import WorkerConfig
from .detector import Detector, InMessage
from .scoring import Scorer

log = logging.getLogger(__name__)

STATE_TABLE = "source-state"
_FAUST_SENSOR = None


def _faust_prometheus_monitor():
    """Faust's own Prometheus sensor on the default registry (created once per process)."""
    global _FAUST_SENSOR
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
    from prometheus_client import REGISTRY

    if _FAUST_SENSOR is None:
        _FAUST_SENSOR = FaustMetrics.create(REGISTRY, "stream_detector_faust")
    return PrometheusMonitor(metrics=_FAUST_SENSOR)


def faust_settings(cfg: WorkerConfig) -> dict:
    settings = dict(
        broker=cfg.broker_urls, broker_credentials=cfg.faust_credentials(), key_serializer="raw",
        value_serializer="raw", topic_partitions=cfg.partitions, store="memory://", web_enabled=False,
        consumer_auto_offset_reset="earliest", producer_acks=-1, topic_disable_leader=True,
        table_cleanup_interval=60.0,
    )
    for key, faust_key in (("broker_session_timeout_seconds", "broker_session_timeout"),
                           ("broker_heartbeat_interval_seconds", "broker_heartbeat_interval"),
                           ("broker_rebalance_timeout_seconds", "broker_rebalance_timeout")):
        if getattr(cfg, key) is not None:
            settings[faust_key] = getattr(cfg, key)
    return settings


def create_app(cfg: WorkerConfig, scorer: Scorer | None = None) -> faust.App:
    """The Faust app for ``cfg``; loads the model now so a bad model directory fails at start."""
    if scorer is None:
        if not cfg.model_dir:
            from .config import ConfigError

            raise ConfigError("config key 'model_dir': a model directory is required")
        scorer = Scorer(cfg.model_dir)
    app = faust.App(cfg.app_id, **faust_settings(cfg))
    app.monitor = _faust_prometheus_monitor()
    raw = dict(key_serializer="raw", value_serializer="raw", partitions=cfg.partitions)
    input_topic = app.topic(cfg.topic_input, **raw)
    scores_topic = app.topic(cfg.topic_scores, **raw)
    alerts_topic = app.topic(cfg.topic_alerts, **raw)
    dead_topic = app.topic(cfg.topic_dead_letters, **raw)
    table = app.Table(STATE_TABLE, default=None, partitions=cfg.partitions, key_type=bytes, value_type=bytes)
    detector = Detector(scorer, cfg, load_state=lambda source: table.data.get(source.encode()))
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
    app.detector = detector  # for tests and the CLI

    @app.agent(input_topic, name="detect")
    async def detect(stream):
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(cfg.batch_max_messages, within=cfg.batch_max_latency_ms / 1000.0):
            messages = [InMessage(e.message.key, e.message.value, e.message.topic, e.message.partition,
                                  e.message.offset) for e in events]
            prepared = detector.ingest(messages)
            if prepared.sources:
                scores, channel_scores = await loop.run_in_executor(executor, detector.score, prepared)
            else:
                scores, channel_scores = detector.score(prepared)  # empty: no model call
            out = detector.finish(prepared, scores, channel_scores)
            pending = []
            for topic, records in ((scores_topic, out.scores), (alerts_topic, out.alerts),
                                   (dead_topic, out.dead_letters)):
                for key, value in records:
                    pending.append(await topic.send(key=key, value=value))
            if pending:
                await asyncio.gather(*pending)  # published before the state that says so
            for source, (partition, state) in out.states.items():
                key = source.encode()
                table.data[key] = state
                table.send_changelog(partition, key, state)

    @app.on_partitions_revoked.connect
    async def on_revoked(app_, revoked, **kwargs) -> None:
        detector.forget()  # reloaded from the table (restored by Faust) when next seen

    @app.task
    async def start_metrics() -> None:
        if cfg.metrics_port:
            app.metrics_server = metrics.serve(cfg.metrics_host, cfg.metrics_port)
        log.info("stream-detector: model %s:%s (%s), window %d stride %d, input topic %r",
                 scorer.name, scorer.version, scorer.provider, scorer.window, detector.router.stride, cfg.topic_input)

    return app
