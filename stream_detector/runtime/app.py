"""The Faust application: topics, the per-source state table and the detection agent.

``create_app(cfg)`` builds everything from a :class:`~stream_detector.runtime.config.WorkerConfig`
in one place.  Run it with ``stream-detector worker --config FILE`` or the Faust way,
``faust -A stream_detector.runtime.faust_app worker`` (configuration from ``STREAM_DETECTOR_CONFIG``
and ``STREAM_DETECTOR_*`` variables).

The models come from a model repository (``model_repository``, or ``model_dir`` for one),
routed per source; :class:`~stream_detector.runtime.detector.Detector` is the Faust-free core that
hosts them, and a timer re-scans the repository every ``model_poll_seconds``.

Delivery: the agent takes up to ``batch_max_messages`` messages or waits
``batch_max_latency_ms``, scores all their windows (from every source, per model) in
``batch_max_windows``-sized ONNX Runtime calls on an executor thread, publishes scores,
alerts and dead letters and waits until Kafka has them, and only then writes each touched
source's state (model version, window buffer, threshold state and undecided windows, open
episode, last input offset) to the table.  Faust
flushes the producer before committing input offsets, so after a crash the state is never
behind the committed offsets, and anything at or below a source's saved offset is known to
be published: windows are neither lost nor (beyond at-least-once) published twice.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import faust
from aiokafka.errors import KafkaError

from . import metrics
from .config import WorkerConfig
from .detector import Detector, InMessage, decode_state
from .publishing import Outgoing, Publisher, dead_letter, encode_record

log = logging.getLogger(__name__)

STATE_TABLE = "source-state"
SWEEP_SECONDS = 2.0  # how often silent sources are looked for
FETCH_MAX_WAIT_MS = 50
STOP_GRACE_SECONDS = 10.0  # how long a stopping worker waits for the step in progress
STEP_ATTEMPTS = 3  # tries of an agent step failing on something other than the broker
BROKER_PROBE_TIMEOUT = 3.0  # seconds a probe may take before the broker counts as unreachable
_FAUST_SENSOR = None


# -- the consumer's inner loop, one guarded step per fetched batch ----------------------------
# Faust's Consumer._drain_messages guards *every* message with ``Service.wait_first``, four
# asyncio tasks per message.  ``BatchDrainConsumer`` keeps every step of that loop (generation
# and flow checks in getmany, gap tracking, commit_every, read offsets) but guards the delivery
# of a whole fetched batch with one wait_first, so a rebalance (suspend_flow), a stop or a crash
# still interrupts delivery at the next await.  Why, in figures: docs/benchmarks/history.md.
def _batch_drain_consumer_class():
    from faust.transport.consumer import CONSUMER_FETCHING
    from faust.transport.drivers import aiokafka as faust_aiokafka

    class LowWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):
            consumer = super()._create_worker_consumer(transport)
            # Faust hard-codes fetch_max_wait_ms=1500.  Kafka answers a fetch as soon as
            # fetch_min_bytes (1) are there, but the embedded broker (Tansu) holds a fetch
            # over several partitions for the whole wait, which delayed every delivery.
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
            return consumer

        async def _highwaters(self, partitions):
            # Faust restores the state table by reading each changelog partition up to its
            # end offset.  The embedded broker (Tansu 0.6) reports the base offset of the last
            # record batch as the end, so the last batch of states, e.g. the final states a
            # worker wrote before a clean stop, was not restored: windows spanning the restart
            # were lost (tests/test_agent_faults.py).  Reading on from the reported end finds
            # the true one; on a broker that reports it right, that read returns nothing.
            reported = dict(await super()._highwaters(partitions))
            if not reported:
                return reported
            return await _true_ends(self._create_client_consumer(self.transport), reported)

    class BatchDrainConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self):
            return LowWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def _deliver(self, ait) -> None:
            callback = self.callback
            get_read_offset = self._read_offset.__getitem__
            set_read_offset = self._read_offset.__setitem__
            commit_every = self._commit_every
            acks_enabled_for = self.app.topics.acks_enabled_for
            sleep = asyncio.sleep
            num_since_yield = 0
            release = self._release
            async for tp, message in ait:
                if not release.is_set():
                    await release.wait()
                num_since_yield += 1
                if num_since_yield > 100:
                    await sleep(0)
                    num_since_yield = 0
                offset = message.offset
                r_offset = get_read_offset(tp)
                if r_offset is None or offset >= r_offset:
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await callback(message)
                    set_read_offset(tp, offset)

        async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - exercised by the worker
            consumer_should_stop = self._stopped.is_set
            fetcher_should_stop = fetcher._stopped.is_set
            set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
            try:
                while not (consumer_should_stop() or fetcher_should_stop()):
                    set_flag(CONSUMER_FETCHING)
                    ait = self.getmany(timeout=1.0)
                    await self.sleep(0)
                    if not self.should_stop:
                        await self.wait_first(self._deliver(ait), self.suspend_flow.wait())
                    unset_flag(CONSUMER_FETCHING)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    self.log.info("Broker stopped consumer, shutting down...")
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    self.log.info("Consumer shutting down for user cancel.")
                    return
                raise
            except Exception:
                self.log.exception("Drain messages raised")
                raise
            finally:
                unset_flag(CONSUMER_FETCHING)

        async def perform_seek(self) -> None:
            """Seek every assigned partition to where processing must resume, and hold
            deliveries until the flow is resumed.  Faust's recovery resumes the stream
            partitions, seeks, and only then clears the stream queues
            (``flow_control.resume()``) and resumes the flow; on a worker's first assignment
            the flow was never stopped, so messages fetched after the seek were delivered,
            then cleared, and never fetched again: a restarted worker under CPU load lost
            hundreds of windows (tests/test_agent_faults.py slows the seek down to show it).
            And aiokafka leaves a partition without a committed offset wherever its fetcher
            got to, so such input partitions are sent back to the beginning
            (``consumer_auto_offset_reset`` is ``earliest``), where the saved offsets in the
            state table recognise what was already scored."""
            self._release.clear()
            committed = await self.seek_to_committed()
            changelogs = self.app.tables.changelog_topics
            fresh = [tp for tp, offset in committed.items() if offset is None and tp.topic not in changelogs]
            if fresh:
                await self._thread.seek_to_beginning(*fresh)
            self._read_offset.update({tp: offset if offset is not None and offset >= 0 else None
                                      for tp, offset in committed.items()})
            self._committed_offset.update({tp: offset for tp, offset in committed.items() if offset})

        def resume_flow(self) -> None:
            super().resume_flow()
            self._release.set()  # after the queues were cleared: deliveries go on

        @property
        def _release(self) -> asyncio.Event:
            try:
                return self.__release
            except AttributeError:
                self.__release = asyncio.Event()
                self.__release.set()
                return self.__release

    class BatchDrainTransport(faust_aiokafka.Transport):
        Consumer = BatchDrainConsumer

    return BatchDrainTransport


async def _true_ends(consumer, reported: dict) -> dict:
    """``reported`` end offsets, raised to one past the last record actually readable."""
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    await consumer.start()
    try:
        tps = [tp for tp, offset in reported.items() if offset is not None and offset >= 0]
        ends = dict(reported)
        if not tps:
            return ends
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, reported[tp])
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                break
            for tp, records in batch.items():
                ends[tp] = max(ends[tp], records[-1].offset + 1)
        return ends
    finally:
        await consumer.stop()


class DetectorApp(faust.App):
    """``faust.App`` whose consumer guards delivery once per fetched batch (see above)."""

    def _new_transport(self):
        return _batch_drain_consumer_class()(self.conf.broker_consumer, self)


def _faust_prometheus_monitor():
    """Faust's own Prometheus sensor on the default registry (created once per process).

    Without the per-stream-event hooks, which rebuild and normalise the stream's label for
    every event (a large share of the event loop with single-point messages; figures in
    docs/benchmarks/history.md).  The consumer-side metrics the rules and dashboard use
    (messages received, lag, end and committed offsets) come from the other hooks and stay.
    The hook keeps one thing: the time a partition's stream last took an event, which Faust's
    consumer reads to tell a stalled stream (without it, every long run logged "Stream has not
    started processing" errors every few seconds from the fifth minute on).
    """
    global _FAUST_SENSOR
    from faust.sensors.monitor import Monitor
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
    from prometheus_client import REGISTRY

    class LeanPrometheusMonitor(PrometheusMonitor):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._received: dict = {}  # not _children: mode.Service keeps its child services there

        def on_message_in(self, tp, offset, message) -> None:
            # PrometheusMonitor.on_message_in, with the two labelled children looked up once
            # per partition instead of per message.
            Monitor.on_message_in(self, tp, offset, message)
            children = self._received.get(tp)
            if children is None:
                m = self._metrics
                children = self._received[tp] = (
                    m.messages_received_per_topics.labels(topic=tp.topic),
                    m.messages_received_per_topics_partition.labels(topic=tp.topic, partition=tp.partition))
            self._metrics.messages_received.inc()
            self._metrics.active_messages.inc()
            children[0].inc()
            children[1].set(offset)

        def on_stream_event_in(self, tp, offset, stream, event):
            self.stream_inbound_time[tp] = time.monotonic()
            return None

        def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
            return None

    if _FAUST_SENSOR is None:
        _FAUST_SENSOR = FaustMetrics.create(REGISTRY, "stream_detector_faust")
    return LeanPrometheusMonitor(metrics=_FAUST_SENSOR)


def faust_settings(cfg: WorkerConfig) -> dict:
    settings = dict(
        broker=cfg.broker_urls, broker_credentials=cfg.faust_credentials(), key_serializer="raw",
        value_serializer="raw", topic_partitions=cfg.partitions, store="memory://", web_enabled=False,
        consumer_auto_offset_reset="earliest", producer_acks=-1, topic_disable_leader=True,
        table_cleanup_interval=60.0,
        # One state record is the last W - 1 points of a source (6.9 kB at W = 64, C = 25);
        # with aiokafka's default 16 kB batches a send waits for the previous batch of its
        # partition to be drained after every two records.
        producer_max_batch_size=1 << 20, producer_max_request_size=4 << 20,
    )
    for key, faust_key in (("broker_session_timeout_seconds", "broker_session_timeout"),
                           ("broker_heartbeat_interval_seconds", "broker_heartbeat_interval"),
                           ("broker_rebalance_timeout_seconds", "broker_rebalance_timeout")):
        if getattr(cfg, key) is not None:
            settings[faust_key] = getattr(cfg, key)
    return settings


def create_app(cfg: WorkerConfig, detector: Detector | None = None) -> faust.App:
    """The Faust app for ``cfg``; loads the models now so a bad repository fails at start."""
    table_ref: list = []
    if detector is None:
        detector = Detector(cfg, load_state=lambda source: table_ref[0].data.get(source.encode()))
    else:
        detector._load_state = lambda source: table_ref[0].data.get(source.encode())
    app = DetectorApp(cfg.app_id, **faust_settings(cfg))
    app.monitor = _faust_prometheus_monitor()
    raw = dict(key_serializer="raw", value_serializer="raw", partitions=cfg.partitions)
    input_topic = app.topic(cfg.topic_input, **raw)
    scores_topic, alerts_topic, dead_topic = cfg.topic_scores, cfg.topic_alerts, cfg.topic_dead_letters
    table = app.Table(STATE_TABLE, default=None, partitions=cfg.partitions, key_type=bytes, value_type=bytes)
    table_ref.append(table)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
    publisher = Publisher(app, table, scores_topic, alerts_topic, dead_topic)

    @app.agent(input_topic, name="detect")
    async def detect(stream):
        async for events in stream.take_events(cfg.batch_max_messages, within=cfg.batch_max_latency_ms / 1000.0):
            messages = [e.message for e in events]  # Faust's Message has every field of an InMessage
            # Faust acknowledges these events once this body returns, or if it raises, and then
            # commits them: a step must therefore not raise, only succeed, retry or dead-letter
            # (guarded_step), and must not be cut short by a stop (below).
            running = asyncio.ensure_future(guarded_step(messages))
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                # The worker is stopping: finish the step if it can be done soon; otherwise
                # leave its messages out of the commit (Faust skips an ack of a message marked
                # acked), so the next owner reads them again and none of their windows is lost.
                try:
                    await asyncio.wait_for(running, STOP_GRACE_SECONDS)
                except BaseException:
                    running.cancel()
                    for e in events:
                        e.message.acked = True
                raise

    async def guarded_step(messages: list[InMessage]) -> None:
        """Run :func:`step` until it succeeds.  A failure sends every source back to its last
        durable state (the table, written only after a step's records were acknowledged) and
        the step runs again, so its windows are published at least once.  Broker errors (an
        outage outlasting the producer's own retries) are retried without end, with backoff;
        any other error (a bug on some input) is retried ``STEP_ATTEMPTS`` times, then each
        message is run alone the same way, and one that still fails goes to the dead-letter
        topic with reason ``internal_error``: kept, with the error, for replay, instead of
        stopping the partition for ever or being dropped (or taking its batch-mates along)."""
        delay = 0.5
        for attempt in itertools.count(1):
            try:
                await step(messages)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every error must end in a retry or a dead letter
                transient = isinstance(exc, (KafkaError, OSError, asyncio.TimeoutError))
                metrics.AGENT_ERRORS.labels("broker" if transient else "internal").inc()
                detector.forget()
                if not transient and attempt >= STEP_ATTEMPTS:
                    if len(messages) > 1:  # find the culprits: the others must not go with them
                        log.error("agent step failed %d times (%r); retrying its %d messages one by one",
                                  attempt, exc, len(messages))
                        for m in messages:
                            await guarded_step([m])
                        return
                    log.error("agent step failed %d times on one message; it goes to the dead-letter topic %r",
                              attempt, dead_topic, exc_info=exc)
                    await dead_letter_step(messages, exc)
                    return
                log.warning("agent step failed (attempt %d, retry in %.1f s): %r", attempt, delay, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 10.0)

    async def dead_letter_step(messages: list[InMessage], exc: Exception) -> None:
        detail = f"{type(exc).__name__}: {exc}"[:500]
        out = Outgoing()
        for m in messages:
            record = dead_letter(m.value, "internal_error", detail, m.topic, m.partition, m.offset, m.key)
            out.dead_letters.append((m.key, encode_record(record, detector.fmt)))
            metrics.MESSAGES.labels("dead_letter").inc()
            metrics.DEAD_LETTERS.labels("internal_error").inc()
        await publisher.publish(out)

    async def step(messages: list[InMessage]) -> None:
        """Decode, window, score and publish one batch of messages, then write the touched
        sources' states (after their records are acknowledged)."""
        loop = asyncio.get_running_loop()
        # Pipelined: each part goes to the model's thread as soon as it is windowed, and
        # the event loop decodes the next messages, then publishes finished parts, while
        # ONNX Runtime scores (one executor thread keeps the parts in order).
        parts, touched = [], {}
        for prepared in detector.ingest_parts(messages):
            touched.update(prepared.touched)
            scored = loop.run_in_executor(executor, detector.score, prepared) if prepared.groups else None
            parts.append((prepared, scored))
        pending: list = []
        for prepared, scored in parts:
            out = detector.finish(prepared, await scored if scored else detector.score(prepared))
            await publisher.send_records(out, pending)
        if pending:
            await asyncio.gather(*pending)  # published before the state that says so
        await publisher.send_states(detector.states(touched))

    @app.on_partitions_revoked.connect
    async def on_revoked(app_, revoked, **kwargs) -> None:
        detector.forget()  # reloaded from the table (restored by Faust) when next seen

    @table.on_recover
    async def adopt_sources() -> None:
        # After a restart or rebalance, sources are otherwise loaded when they next send; one
        # that stays silent with an open episode (or undecided windows) must be loaded now so
        # that the sweep can close it.  Only this worker's input partitions count: the memory
        # store may still hold entries this worker wrote for partitions it no longer owns.
        mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == cfg.topic_input}
        adopted = 0
        for key, raw in list(table.data.items()):
            state = raw if isinstance(raw, (bytes, bytearray)) else None
            if state is None:
                continue
            partition = (decode_state(state) or {}).get("partition")
            if partition is not None and partition not in mine:
                continue
            adopted += detector.adopt(key.decode(errors="replace"), state)
        if adopted:
            log.info("loaded %d sources with open episodes or undecided windows from the state table", adopted)

    @app.timer(SWEEP_SECONDS)
    async def sweep_sources() -> None:
        out = detector.sweep(time.time())
        if out.scores or out.alerts or out.states or out.evicted:
            await publisher.publish(out)

    @app.task
    async def probe_broker() -> None:
        # A metadata request on the producer's connections, every probe_seconds: it fails or
        # times out while the broker is down, frozen or cut off, whatever the consumer is doing
        # (which may be nothing, e.g. waiting on an empty topic), and answers again when the
        # link is back.  A loop rather than a timer: a probe may outlast the interval.
        while not app.should_stop:
            producer = getattr(app.producer, "_producer", None)
            assigned = sum(1 for tp in app.consumer.assignment() if tp.topic == cfg.topic_input)
            if producer is None:
                metrics.HEALTH.record(False, "producer not started", assigned)
            else:
                try:
                    await asyncio.wait_for(producer.client.fetch_all_metadata(), BROKER_PROBE_TIMEOUT)
                except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                    metrics.HEALTH.record(False, f"{type(exc).__name__}: {exc}".rstrip(": "), assigned)
                else:
                    metrics.HEALTH.record(True, "", assigned)
            await asyncio.sleep(metrics.HEALTH.probe_seconds)

    @app.task
    async def start_metrics() -> None:
        if cfg.metrics_port:
            metrics.serve(cfg.metrics_host, cfg.metrics_port)  # a daemon thread serves it until exit
        log.info("stream-detector: serving %s; input topic %r",
                 ", ".join(f"{s.name}:{s.version} ({s.scorer.provider})" for s in detector.served.values()),
                 cfg.topic_input)

    @app.timer(cfg.model_poll_seconds)
    async def poll_repository() -> None:
        # Scanning and loading sessions block, so they run off the event loop.  The swap runs on
        # the loop and sources move to a new version only when the agent next ingests their
        # points, so a step already ingested is scored and published by the versions it was
        # windowed for, even if the swap lands while that step awaits ONNX Runtime or Kafka.
        new = await asyncio.get_running_loop().run_in_executor(None, detector.prepare_refresh)
        if new:
            detector.install(new)

    return app
