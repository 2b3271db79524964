"""The worker's processing of one batch of input messages, independent of Faust.

The Faust agent (``app.py``) hands a batch of raw Kafka messages to :class:`Detector` in
three steps, so that the model call can run in an executor without blocking the event loop:

1. :meth:`Detector.ingest` (event loop, cheap): decode and validate every message, drop
   redelivered ones, push points into each source's window buffer, collect the complete
   windows of all sources into one array.  Bad messages become dead letters here.
2. :meth:`Detector.score` (executor): one ONNX Runtime call per ``batch_max_windows``.
3. :meth:`Detector.finish` (event loop): score records, alert episodes, metrics and the
   per-source state to persist.

Redelivery: each source's persisted state carries the offset of the last message folded
into it.  After a crash Kafka redelivers from the last committed offset; messages at or
below the saved offset were already windowed (and their scores published before the state
was saved), so they are skipped and counted as ``redelivered`` instead of being rejected
for going back in time or scored twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import msgpack
import numpy as np

from . import metrics
from .alerting import EpisodeTracker
from .codec import InvalidMessage, PointDecoder, dead_letter_record, encode_record
from .config import WorkerConfig
from .scoring import Scorer
from .windowing import WindowRouter


@dataclass
class InMessage:
    """What the detector needs of a Kafka message."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int


@dataclass
class Prepared:
    """Windows gathered from one batch, waiting for scores."""

    sources: list[str] = field(default_factory=list)  # one per window
    start_ts: list[np.ndarray] = field(default_factory=list)
    end_ts: list[np.ndarray] = field(default_factory=list)
    windows: list[np.ndarray] = field(default_factory=list)
    touched: dict[str, int] = field(default_factory=dict)  # source -> input partition
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)

    def stacked(self) -> np.ndarray:
        return np.concatenate(self.windows) if self.windows else np.zeros((0, 0, 0), np.float32)


@dataclass
class Outgoing:
    """Everything one batch produces: records to publish and state to persist."""

    scores: list[tuple[bytes, bytes]] = field(default_factory=list)
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    states: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # source -> (partition, state)


def encode_state(state: dict) -> bytes:
    return msgpack.packb(state, use_bin_type=True)


def decode_state(raw: bytes | None) -> dict | None:
    if not raw:
        return None
    try:
        state = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:  # a corrupt entry must not stop the worker; the source starts afresh
        return None
    return state if isinstance(state, dict) else None


class Detector:
    """Windows, scores and alerts for all sources of one worker."""

    def __init__(self, scorer: Scorer, cfg: WorkerConfig,
                 load_state: Callable[[str], bytes | None] | None = None):
        self.scorer, self.cfg = scorer, cfg
        self.fmt = cfg.message_format
        self.decoder = PointDecoder(scorer.channels, allow_imputation=scorer.allow_imputation,
                                    max_bytes=cfg.max_message_bytes, allowed_sources=cfg.allowed_sources)
        self._load_state = load_state or (lambda source: None)
        self._saved: dict[str, dict] = {}
        self.router = WindowRouter(scorer.window, cfg.stride or scorer.stride, scorer.channels, cfg.max_gap_seconds,
                                   loader=self._windows_state)
        if cfg.alert_release_threshold is not None:
            self.release = cfg.alert_release_threshold
        elif cfg.alert_release_ratio is not None:
            self.release = cfg.alert_release_ratio * scorer.threshold
        else:
            self.release = scorer.release_threshold
        self.trackers: dict[str, EpisodeTracker] = {}
        self.source_gauges = metrics.SourceGauges(cfg.source_metrics_limit)
        metrics.MODEL.info({"name": scorer.name, "version": scorer.version, "provider": scorer.provider,
                            "window": str(scorer.window), "stride": str(self.router.stride),
                            "transform": str(scorer.card.get("transform"))})

    # -- state -----------------------------------------------------------------------------
    def _saved_state(self, source: str) -> dict:
        if source not in self._saved:
            self._saved[source] = decode_state(self._load_state(source)) or {}
        return self._saved[source]

    def _windows_state(self, source: str) -> dict | None:
        return self._saved_state(source).get("windows")

    def _tracker(self, source: str) -> EpisodeTracker:
        t = self.trackers.get(source)
        if t is None:
            t = EpisodeTracker(self.scorer.threshold, self.release, self.scorer.channels, self.cfg.alert_quiet_seconds,
                               self.cfg.alert_top_channels, state=self._saved_state(source).get("episode") or {})
            self.trackers[source] = t
        return t

    def forget(self, sources: Sequence[str] | None = None) -> None:
        """Drop in-memory state (partitions revoked): it is reloaded from the table on next use."""
        for s in list(self.trackers) if sources is None else sources:
            self.router.forget(s)
            self.trackers.pop(s, None)
            self._saved.pop(s, None)
        metrics.SOURCES.set(len(self.router))

    # -- step 1 ----------------------------------------------------------------------------
    def _dead(self, prepared: Prepared, msg: InMessage, exc: InvalidMessage) -> None:
        record = dead_letter_record(msg.value, exc.reason, exc.detail, msg.topic, msg.partition, msg.offset, msg.key)
        prepared.dead_letters.append((msg.key, encode_record(record, self.fmt)))
        metrics.DEAD_LETTERS.labels(exc.reason).inc()
        metrics.MESSAGES.labels("dead_letter").inc()

    def ingest(self, messages: Sequence[InMessage]) -> Prepared:
        """All windows of ``messages`` in one :class:`Prepared` (one part, no window cap)."""
        (prepared,) = self.ingest_parts(messages, max_windows=math.inf)
        return prepared

    def ingest_parts(self, messages: Sequence[InMessage], max_windows: float | None = None) -> Iterator[Prepared]:
        """Decode and window ``messages`` in order, yielding a :class:`Prepared` as soon as it
        holds ``max_windows`` windows (default ``batch_max_windows``; ``math.inf``: no cap), and
        the remainder at the end (always at least one part).

        Why parts: the agent hands each part to the model's executor thread as soon as it is
        yielded and goes on decoding the next messages on the event loop meanwhile (ONNX
        Runtime releases the GIL), so decoding, scoring and publishing overlap instead of
        taking turns (py-spy: ONNX Runtime held half of a batch-message step).  Measured on
        2 CPU cores the overlap gains little (+4 % for the distance-plot model with batch
        messages, within noise for the sequence model) because ORT's own threads already
        use both cores; it is there for when the model runs elsewhere (the CUDA provider)
        and the CPU would otherwise wait for it.
        """
        cap = self.cfg.batch_max_windows if max_windows is None else max_windows
        prepared = Prepared()
        n_windows = 0
        # Counted here and added to the metrics once per part: the two labelled-counter calls
        # per message were a fifth of the detector's CPU for a single-point message
        # (measured 14.3 -> 11.4 us a message, sequence model).
        ok = points_ok = redelivered = 0

        def flush_counts() -> None:
            nonlocal ok, points_ok, redelivered
            metrics.MESSAGES_OK.inc(ok)
            metrics.POINTS_OK.inc(points_ok)
            if redelivered:
                metrics.MESSAGES_REDELIVERED.inc(redelivered)
            ok = points_ok = redelivered = 0
            metrics.SOURCES.set(len(self.router))

        for msg in messages:
            try:
                source = self.decoder.source_of(msg.key)
                sw = self.router.get(source)
                if sw.last_offset is not None and msg.offset <= sw.last_offset:
                    redelivered += 1
                    continue
                last = sw.last_values() if self.decoder.allow_imputation else None
                points = self.decoder.decode(source, msg.value, last_values=last)
                batch = self.router.push(source, points.ts, points.values, offset=msg.offset)
            except InvalidMessage as exc:
                self._dead(prepared, msg, exc)
                continue
            ok += 1
            points_ok += len(points)
            prepared.touched[source] = msg.partition
            if len(batch):
                prepared.sources += [source] * len(batch)
                prepared.start_ts.append(batch.start_ts)
                prepared.end_ts.append(batch.end_ts)
                prepared.windows.append(batch.values)
                n_windows += len(batch)
                if n_windows >= cap:
                    flush_counts()
                    yield prepared
                    prepared, n_windows = Prepared(), 0
        flush_counts()
        yield prepared

    # -- step 2 ----------------------------------------------------------------------------
    def score(self, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """Scores of all prepared windows, ``batch_max_windows`` per ONNX Runtime call."""
        windows = prepared.stacked()
        n, step = len(prepared.sources), self.cfg.batch_max_windows
        scores = np.empty(n, np.float32)
        channel_scores = np.empty((n, len(self.scorer.channels)), np.float32)
        for i in range(0, n, step):
            started = time.perf_counter()
            scores[i:i + step], channel_scores[i:i + step] = self.scorer.score(windows[i:i + step])
            metrics.INFERENCE.observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.observe(min(step, n - i))
        return scores, channel_scores

    # -- step 3 ----------------------------------------------------------------------------
    def finish(self, prepared: Prepared, scores: np.ndarray, channel_scores: np.ndarray) -> Outgoing:
        """Score records, alert events and dead letters of one part (no state: see :meth:`states`)."""
        out = Outgoing(dead_letters=prepared.dead_letters)
        starts = np.concatenate(prepared.start_ts) if prepared.start_ts else np.zeros(0)
        ends = np.concatenate(prepared.end_ts) if prepared.end_ts else np.zeros(0)
        thr, model = self.scorer.threshold, self.scorer
        now = time.time()
        last_window: dict[str, int] = {}  # source -> index of its latest window in this part
        for i, source in enumerate(prepared.sources):
            score = float(scores[i])
            anomalous = score >= thr
            record = {"source": source, "start": float(starts[i]), "end": float(ends[i]), "score": score,
                      "threshold": thr, "is_anomaly": bool(anomalous),
                      "channel_scores": dict(zip(model.channels, map(float, channel_scores[i]))),
                      "model": model.name, "model_version": model.version}
            key = source.encode()
            out.scores.append((key, encode_record(record, self.fmt)))
            metrics.SCORE.observe(score)
            metrics.LATENCY.observe(max(0.0, now - float(ends[i])))
            if anomalous:
                metrics.ANOMALIES.inc()
            for event in self._tracker(source).update(source, starts[i], ends[i], score, channel_scores[i]):
                out.alerts.append((key, encode_record(event, self.fmt)))
                if event["event"] == "opened":
                    metrics.EPISODES_OPENED.inc()
            last_window[source] = i
        for source, i in last_window.items():  # gauges show the latest window: set them once
            self.source_gauges.update(source, float(scores[i]), thr, float(ends[i]))
        metrics.WINDOWS.inc(len(prepared.sources))
        metrics.EPISODES_OPEN.set(sum(t.is_open for t in self.trackers.values()))
        return out

    def states(self, touched: dict[str, int]) -> dict[str, tuple[int, bytes]]:
        """The state to persist for each touched source: ``source -> (partition, bytes)``.

        Call it only once every part of the step is finished and published: it reads the
        window buffers as they are now, i.e. after the last message of the step, and a state
        must never cover a message whose windows are not yet published.
        """
        out = {}
        for source, partition in touched.items():
            state = {"windows": self.router.state(source, binary=True), "episode": self._tracker(source).state}
            self._saved.pop(source, None)  # router and tracker now hold it; keep idle sources small
            out[source] = (partition, encode_state(state))
        return out

    def process(self, messages: Sequence[InMessage]) -> Outgoing:
        """All three steps in one call (tests, offline use)."""
        prepared = self.ingest(messages)
        out = self.finish(prepared, *self.score(prepared))
        out.states = self.states(prepared.touched)
        return out
