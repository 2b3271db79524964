"""``stream-detector refine``: a second look at alert episodes by AnoGAN latent search.

The worker scores every window with the encoder's one pass (fast, ONNX Runtime).  This
consumer runs beside it, on the PyTorch side (the ``train`` extra), and re-scores only the
windows of episodes the worker opened, with the slow and more precise latent search
(:mod:`stream_detector.training.latent_search`): a window whose code the search finds is one
the generator can produce, so its refined score drops, and an alert whose windows all drop
below the threshold was probably the encoder's miss rather than the data's anomaly.

It reads two topics with one plain aiokafka consumer (group ``<app_id>-refine``):

* the worker's input topic (``topic_input``), decoded with the worker's own
  :class:`~stream_detector.runtime.codec.PointDecoder` against the routed model's channels, to
  keep each source's last ``buffer_points`` points;
* the alerts topic (``topic_alerts``): for each ``opened`` event (and ``closed`` with
  ``--events opened,closed``) it waits until the source's buffer has reached the episode's end
  (at most ``wait_seconds``), rebuilds the episode's windows from the buffer at the model's
  stride, ending at the episode's end, runs latent search on them and publishes one record per
  window to the ``refined`` topic (:func:`refined_record`).

The model of a source is found as the worker finds it (``model_repository``/``model_dir`` and
``routes`` of the same config), and its PyTorch networks are rebuilt from the card and the
weights inside ``model.onnx`` (:func:`~stream_detector.training.export.scorer_from_model_dir`):
no separate checkpoint is needed.

Limits, stated plainly:

* Only points still in the buffer can be re-scored.  Windows that begin before the oldest
  buffered point (an episode older than ``buffer_points`` points, or a refine consumer started
  after the points went by with ``auto_offset_reset=latest``) are skipped and logged, never
  made up; a restarted consumer resumes from its committed offsets with an empty buffer.
* The windows are rebuilt from the points, not copied from the worker: a point the worker
  rejected but this decoder accepts (or the reverse: an allow-list, a gap reset, imputation
  without the previous point) can make them differ.  The record carries the encoder's score as
  PyTorch recomputes it, so a difference shows.
* A ``closed`` episode can span many windows; at most ``max_windows`` (spread over the span,
  first and last included) are refined per event, and the search blocks this consumer's
  loop for ``windows x restarts x steps`` generator passes (milliseconds per window for the
  small sequence models, see docs/benchmarks/latent_search.md).
* The threshold in a record is the one the alert event carries (the level in force when the
  episode opened); the refined score is never above the encoder's (same formula, a better
  code), so ``is_anomaly`` false means "the second look clears this window".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .errors import UserError
from .runtime.codec import InvalidMessage, PointDecoder
from .runtime.config import WorkerConfig
from .runtime.publishing import decode_record, encode_record

log = logging.getLogger(__name__)

EVENTS = ("opened", "closed")


class RefinedRecord(TypedDict):
    """One window of an episode, re-scored by latent search (the ``refined`` topic)."""

    source: str
    episode_id: str
    event: str  # the alert event that asked for it: opened / closed
    start: float  # timestamp of the window's first point
    end: float  # timestamp of its last point
    encoder_score: float  # the worker's score (E(x) in one pass), recomputed by PyTorch
    score: float  # the refined score: the same formula at the best code found
    threshold: float | None  # the level in force in the alert event
    is_anomaly: bool  # score >= threshold: still anomalous after the second look
    method: str  # "latent-search"
    restarts: int
    steps: int
    model: str
    model_version: str


def refined_record(source: str, event: Mapping[str, Any], start: float, end: float, encoder_score: float,
                   score: float, restarts: int, steps: int, model: str, version: str) -> RefinedRecord:
    threshold = event.get("threshold")
    threshold = float(threshold) if threshold is not None and np.isfinite(threshold) else None
    return {"source": source, "episode_id": str(event.get("episode_id", "")), "event": str(event.get("event")),
            "start": float(start), "end": float(end), "encoder_score": float(encoder_score), "score": float(score),
            "threshold": threshold, "is_anomaly": bool(threshold is not None and score >= threshold),
            "method": "latent-search", "restarts": int(restarts), "steps": int(steps), "model": model,
            "model_version": str(version)}


@dataclass
class RefineSettings:
    restarts: int = 4
    steps: int = 50
    topic_refined: str = "refined"
    events: tuple[str, ...] = ("opened",)
    buffer_points: int = 4096  # per source
    wait_seconds: float = 10.0  # for the episode's points to arrive after its alert
    max_windows: int = 200  # per event
    seed: int = 0


@dataclass
class _Buffer:
    """A source's recent points (chunks appended, compacted to the last ``cap`` when read)."""

    cap: int
    chunks_ts: list[np.ndarray] = field(default_factory=list)
    chunks_values: list[np.ndarray] = field(default_factory=list)
    n: int = 0
    last_ts: float = -np.inf

    def add(self, ts: np.ndarray, values: np.ndarray) -> None:
        keep = ts > self.last_ts  # the worker rejects a non-increasing timestamp; so does this buffer
        if not keep.all():
            ts, values = ts[keep], values[keep]
        if not len(ts):
            return
        self.chunks_ts.append(ts)
        self.chunks_values.append(values)
        self.n += len(ts)
        self.last_ts = float(ts[-1])
        if self.n > 2 * self.cap:
            self.arrays()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.chunks_ts) != 1 or self.n > self.cap:
            ts = np.concatenate(self.chunks_ts)[-self.cap:]
            values = np.concatenate(self.chunks_values)[-self.cap:]
            self.chunks_ts, self.chunks_values, self.n = [ts], [values], len(ts)
        return self.chunks_ts[0], self.chunks_values[0]


#: seconds: timestamps are epoch seconds in float64 (a few ulps at today's dates), carried exactly by
#: msgpack and JSON; a relative tolerance would be milliseconds wide there
TS_TOLERANCE = 1e-6


def _index(ts: np.ndarray, t: float) -> int | None:
    """Index of the buffered point with timestamp ``t`` (to float rounding), else None."""
    i = int(np.searchsorted(ts, t, side="left"))
    for j in (i - 1, i):
        if 0 <= j < len(ts) and abs(ts[j] - t) <= TS_TOLERANCE:
            return j
    return None


class Refiner:
    """The consumer's state and work, without Kafka: points in, alert events in, records out.

    :func:`run_refine` feeds it from the topics; tests can feed it directly."""

    def __init__(self, cfg: WorkerConfig, settings: RefineSettings | None = None):
        from .runtime.detector import repository_from_config
        from .runtime.repository import Routes

        self.cfg, self.settings = cfg, settings or RefineSettings()
        self.repository = repository_from_config(cfg)
        self.repository.check()
        self.routes = Routes(cfg.routes)
        self.served = self.repository.scan()
        self.buffers: dict[str, _Buffer] = {}
        self.pending: list[tuple[float, dict]] = []  # (deadline, alert event)
        self._decoders: dict[Path, PointDecoder] = {}
        self._networks: dict[Path, Any] = {}
        self.rejected = 0

    def _model(self, source: str):
        route = self.routes.route(source, self.served)
        return self.served.get(route.model) if route is not None else None

    def _stride(self, source: str, card) -> int:
        route = self.routes.route(source, self.served)
        return (route.stride if route is not None and route.stride else None) or self.cfg.stride or card.stride

    def add_points(self, key: bytes | None, raw: bytes) -> int:
        """Decode one input message and buffer its points; returns how many (0: not taken)."""
        try:
            source = key.decode() if isinstance(key, (bytes, bytearray)) else str(key)
        except UnicodeDecodeError:
            self.rejected += 1
            return 0
        mv = self._model(source)
        if mv is None:
            return 0
        decoder = self._decoders.get(mv.path)
        if decoder is None:
            card = mv.card
            decoder = self._decoders[mv.path] = PointDecoder(
                card.channels, allow_imputation=card.allow_imputation, max_bytes=self.cfg.max_message_bytes,
                allowed_sources=self.cfg.allowed_sources)
        buf = self.buffers.get(source)
        last = buf.arrays()[1][-1] if buf is not None and buf.n else None
        try:
            points = decoder.decode(key, raw, last)
        except InvalidMessage:
            self.rejected += 1  # the worker dead-letters it; nothing to keep here
            return 0
        if buf is None:
            buf = self.buffers[source] = _Buffer(max(self.settings.buffer_points, 2 * mv.card.window))
        buf.add(points.ts, points.values)
        return len(points)

    def add_alert(self, raw: bytes, now: float | None = None) -> bool:
        """Take one alert event; True when it is one to refine (queued until its points arrive)."""
        try:
            event = decode_record(raw)
        except Exception:
            self.rejected += 1
            return False
        if not isinstance(event, dict) or event.get("event") not in self.settings.events or "source" not in event:
            return False
        now = time.monotonic() if now is None else now
        self.pending.append((now + self.settings.wait_seconds, event))
        return True

    def ready(self, now: float | None = None) -> list[dict]:
        """The queued events whose source's buffer has reached the episode's end, or whose wait is over."""
        now = time.monotonic() if now is None else now
        out, keep = [], []
        for deadline, event in self.pending:
            buf = self.buffers.get(event["source"])
            if (buf is not None and buf.last_ts >= float(event["end"])) or now >= deadline:
                out.append(event)
            else:
                keep.append((deadline, event))
        self.pending = keep
        return out

    def windows_of(self, event: Mapping[str, Any]) -> tuple[Any, np.ndarray, np.ndarray]:
        """(model version, windows ``[n, W, C]``, their ``[start, end]`` timestamps ``[n, 2]``) of an
        episode: every window at the model's stride ending at the episode's end and starting at
        or after its start, as far back as the buffer holds (at most ``max_windows``)."""
        source = str(event["source"])
        mv = self._model(source)
        buf = self.buffers.get(source)
        if mv is None or buf is None or not buf.n:
            log.warning("episode %s: no buffered points of source %s; not refined", event.get("episode_id"), source)
            return mv, np.zeros((0, 0, 0), np.float32), np.zeros((0, 2))
        window, stride = mv.card.window, self._stride(source, mv.card)
        ts, values = buf.arrays()
        last = _index(ts, float(event["end"]))
        if last is None:
            log.warning("episode %s: its end %.6f is not among the buffered points of %s (%d points, %.6f..%.6f); "
                        "not refined", event.get("episode_id"), float(event["end"]), source, len(ts), ts[0], ts[-1])
            return mv, np.zeros((0, window, values.shape[1]), np.float32), np.zeros((0, 2))
        start = float(event["start"])
        tolerance = TS_TOLERANCE
        ends = np.arange(last, window - 2, -stride)[::-1]  # window ends, stepping back from the episode's end
        ends = ends[ts[ends - window + 1] >= start - tolerance]
        if ts[0] > start + tolerance:
            log.warning("episode %s of %s starts at %.6f, before the oldest buffered point (%.6f): its windows "
                        "before that are not refined (%d are)", event.get("episode_id"), source, start, ts[0],
                        len(ends))
        if len(ends) > self.settings.max_windows:
            ends = ends[np.unique(np.linspace(0, len(ends) - 1, self.settings.max_windows).round().astype(int))]
        starts = ends - window + 1
        windows = np.stack([values[s:e + 1] for s, e in zip(starts, ends)]) if len(ends) else \
            np.zeros((0, window, values.shape[1]), np.float32)
        return mv, windows, np.stack([ts[starts], ts[ends]], axis=1)

    def refine(self, event: Mapping[str, Any]) -> list[RefinedRecord]:
        """Latent search on an episode's windows; one :class:`RefinedRecord` per window."""
        from .training.export import scorer_from_model_dir
        from .training.latent_search import latent_search

        self.served = self.repository.scan()  # cheap when nothing changed; a new version is used from now on
        mv, windows, spans = self.windows_of(event)
        if mv is None or not len(windows):
            return []
        net = self._networks.get(mv.path)
        if net is None:
            net = self._networks[mv.path] = scorer_from_model_dir(mv.path)
        s = self.settings
        found = latent_search(net, windows, restarts=s.restarts, steps=s.steps, seed=s.seed)
        log.info("episode %s: %d windows refined in %.2f s", event.get("episode_id"), len(windows), found["seconds"])
        return [refined_record(str(event["source"]), event, a, b, e, r, s.restarts, s.steps, mv.name, str(mv.version))
                for (a, b), e, r in zip(spans, found["encoder_score"], found["score"])]


async def ensure_topic(cfg: WorkerConfig, name: str) -> None:
    """Create the refined topic (``cfg.partitions`` partitions) when the broker lacks it; an
    existing one is left as it is."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap_servers, **cfg.aiokafka_security_kwargs())
    try:
        await admin.start()
        if name not in set(await admin.list_topics()):
            await admin.create_topics([NewTopic(name, cfg.partitions, 1)])
    except Exception as e:  # the broker address or its security settings: the operator's to fix
        raise UserError(f"refine cannot reach Kafka at {','.join(cfg.bootstrap_servers)}: {e}") from None
    finally:
        await admin.close()


async def run_refine(cfg: WorkerConfig, settings: RefineSettings | None = None, *, from_beginning: bool = False,
                     max_records: int | None = None, stop: asyncio.Event | None = None) -> int:
    """Consume the input and alerts topics and publish refined records until ``stop`` is set
    (or ``max_records`` are published: tests).  Returns the number of records published.

    ``from_beginning``: a new consumer group starts at the topics' earliest offsets (a replay,
    a test) instead of their ends."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    settings = settings or RefineSettings()
    refiner = Refiner(cfg, settings)
    await ensure_topic(cfg, settings.topic_refined)
    security = cfg.aiokafka_security_kwargs()
    consumer = AIOKafkaConsumer(cfg.topic_input, cfg.topic_alerts, bootstrap_servers=cfg.bootstrap_servers,
                                group_id=f"{cfg.app_id}-refine",
                                auto_offset_reset="earliest" if from_beginning else "latest", **security)
    producer = AIOKafkaProducer(bootstrap_servers=cfg.bootstrap_servers, **security)
    try:
        await consumer.start()
        await producer.start()
    except Exception as e:  # the broker address or its security settings: the operator's to fix
        await consumer.stop()
        await producer.stop()
        raise UserError(f"refine cannot reach Kafka at {','.join(cfg.bootstrap_servers)}: {e}") from None
    published = 0
    try:
        while not (stop is not None and stop.is_set()):
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in batches.items():
                for m in messages:
                    if tp.topic == cfg.topic_alerts:
                        refiner.add_alert(m.value)
                    else:
                        refiner.add_points(m.key, m.value)
            for event in refiner.ready():
                records = await asyncio.to_thread(refiner.refine, event)  # the search must not stall heartbeats
                for rec in records:
                    await producer.send_and_wait(settings.topic_refined, encode_record(rec, cfg.message_format),
                                                 key=rec["source"].encode())
                published += len(records)
            if max_records is not None and published >= max_records:
                break
    finally:
        await consumer.stop()
        await producer.stop()
    return published
