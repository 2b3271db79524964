"""Publishing: the records the worker writes, each shape defined once, and how they reach Kafka.

Three output topics, three record shapes (:class:`ScoreRecord` or, with ``score_records:
batch``, :class:`BatchScoreRecord` on ``scores``; :class:`AlertEvent` on ``alerts``;
:class:`DeadLetter` on ``dead-letters``).  The builders below are the only places these dicts
are made; consumers read them back with :func:`decode_record` and :func:`score_windows`.
:class:`Publisher` sends a step's records and then the states that say they were sent: the
order that makes the worker's at-least-once guarantee (``docs/reliability.md``).

>>> rec = score_record("pump-1", 0.0, 63.0, 0.9, 0.5, True, ("a", "b"), [0.4, 0.5], "pumps", 3)
>>> decode_record(encode_record(rec))["is_anomaly"], rec["model_version"]
(True, '3')
>>> score_windows(batch_score_record("pump-1", "pumps", [3, 3], [0.0, 1.0], [63.0, 64.0], [0.9, 0.1],
...                                  [0.5, 0.5], None, ("a",), [[0.9], [0.1]]))[1]["score"]
0.1
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import msgpack
import numpy as np

from .codec import check_format, detect_format


# -- the record shapes -----------------------------------------------------------------------
class ScoreRecord(TypedDict, total=False):
    """One window's score (``score_records: window``); adaptive procedures may add per-window
    figures such as ``likelihood``."""

    source: str
    start: float  # timestamp of the window's first point
    end: float  # timestamp of its last point
    score: float
    threshold: float | None  # None while an adaptive procedure is still learning
    is_anomaly: bool
    channel_scores: dict[str, float]
    model: str
    model_version: str
    peak_ts: float  # timestamp of the window's point the model found least normal
    peak_channel: str  # and its channel (both absent for a graph without cell_scores)


class BatchScoreRecord(TypedDict, total=False):
    """All windows of one source decided in one step, columnar (``score_records: batch``):
    every :class:`ScoreRecord` field but ``source`` and ``model`` as a list of ``windows``
    values, ``channel_scores`` as one list per channel."""

    source: str
    model: str
    windows: int
    start: list[float]
    end: list[float]
    score: list[float]
    threshold: list[float | None]
    is_anomaly: list[bool]
    channel_scores: dict[str, list[float]]
    model_version: list[str]
    peak_ts: list[float]
    peak_channel: list[str]


class TopChannel(TypedDict):
    channel: str
    share: float  # of the summed channel scores over the episode


class TopCell(TypedDict):
    """One (channel, time) cell of an episode: a window's peak cell, the highest first."""

    channel: str
    ts: float
    score: float  # the cell's value in cell_scores


class AlertEvent(TypedDict, total=False):
    """An alert episode ``opened`` or ``closed`` (``reason`` when closed by something other
    than its scores: ``source_silent``, ``model_changed``; ``silent_seconds`` with the first)."""

    event: str
    source: str
    episode_id: str  # source@first window's end: the same after a replay
    start: float
    end: float
    peak_score: float
    threshold: float
    windows: int
    top_channels: list[TopChannel]
    top_cells: list[TopCell]  # where and when (absent for a graph without cell_scores)
    reason: str
    silent_seconds: float


class DeadLetter(TypedDict):
    """A message the worker could not take, kept with its original bytes for replay."""

    reason: str  # one of codec.REASONS
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None


# -- builders ----------------------------------------------------------------------------------
def score_record(source: str, start: float, end: float, score: float, threshold: float, is_anomaly: bool,
                 channels: Sequence[str], channel_scores: Sequence[float], model: str, version: int,
                 extra: Mapping[str, float] | None = None, peak: Sequence[float] | None = None) -> ScoreRecord:
    """``peak``: the window's peak cell as (timestamp, channel index, value), NaN when unknown."""
    record: ScoreRecord = {"source": source, "start": float(start), "end": float(end), "score": float(score),
                           "threshold": threshold if math.isfinite(threshold) else None,
                           "is_anomaly": bool(is_anomaly),
                           "channel_scores": dict(zip(channels, map(float, channel_scores))),
                           "model": model, "model_version": str(int(version))}
    if peak is not None and math.isfinite(peak[0]):
        record.update(peak_ts=float(peak[0]), peak_channel=channels[int(peak[1])])
    if extra:
        record.update(extra)  # type: ignore[typeddict-item]
    return record


def batch_score_record(source: str, model: str, versions, start, end, scores, thresholds, flags,
                       channels: Sequence[str], channel_scores, extra: Mapping[str, Any] | None = None,
                       peaks: np.ndarray | None = None) -> BatchScoreRecord:
    """``flags`` None: a window is anomalous when its score reaches its threshold (the static
    rule); else the adaptive procedure's decisions.  :func:`score_windows` gives back exactly
    the :func:`score_record` of each window."""
    scores = np.asarray(scores, np.float64)
    thresholds = np.asarray(thresholds, np.float64)
    anomalous = scores >= thresholds if flags is None else np.asarray(flags, bool)
    channel_scores = np.asarray(channel_scores)
    record: BatchScoreRecord = {
        "source": source, "model": model, "windows": len(scores),
        "start": np.asarray(start, np.float64).tolist(), "end": np.asarray(end, np.float64).tolist(),
        "score": scores.tolist(), "threshold": [t if math.isfinite(t) else None for t in thresholds.tolist()],
        "is_anomaly": anomalous.tolist(),
        "channel_scores": {c: channel_scores[:, j].astype(np.float64).tolist() for j, c in enumerate(channels)},
        "model_version": [str(v) for v in np.asarray(versions, np.int64).tolist()]}
    if peaks is not None and len(peaks) and np.isfinite(peaks[:, 0]).all():
        record["peak_ts"] = peaks[:, 0].tolist()
        record["peak_channel"] = [channels[int(c)] for c in peaks[:, 1]]
    for name, values in (extra or {}).items():
        record[name] = np.asarray(values, np.float64).tolist()  # type: ignore[literal-required]
    return record


def alert_event(kind: str, source: str, episode: Mapping[str, Any], threshold: float,
                top_channels: list[TopChannel], top_cells: list[TopCell] | None = None) -> AlertEvent:
    """``episode``: the tracker's state of the open episode (id, start, end, peak, windows)."""
    event: AlertEvent = {"event": kind, "source": source, "episode_id": episode["id"], "start": episode["start"],
                         "end": episode["end"], "peak_score": episode["peak"], "threshold": threshold,
                         "windows": episode["windows"], "top_channels": top_channels}
    if top_cells:
        event["top_cells"] = top_cells
    return event


def dead_letter(raw: bytes | None, reason: str, detail: str, topic: str, partition: int, offset: int,
                key: bytes | None = None) -> DeadLetter:
    """The dead-letter record for a rejected message: the original bytes are kept as bytes."""
    return {"reason": reason, "detail": detail, "topic": topic, "partition": int(partition),
            "offset": int(offset), "key": bytes(key) if key is not None else None,
            "raw": bytes(raw) if raw is not None else None}


# -- encoding ------------------------------------------------------------------------------------
def _plain(obj: Any) -> Any:
    """msgpack/JSON fallback for numpy scalars and arrays."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    return _plain(obj)


def encode_record(record: Mapping[str, Any], fmt: str = "msgpack") -> bytes:
    """Encode a score/alert/dead-letter record; numpy values become plain numbers/lists.

    In JSON, ``bytes`` (the dead letter's original payload) are written as base64 text.
    """
    check_format(fmt)
    if fmt == "json":
        return json.dumps(record, default=_json_default, separators=(",", ":"), allow_nan=False).encode()
    return msgpack.packb(record, default=_plain, use_bin_type=True)


def decode_record(raw: bytes) -> dict:
    """Decode a record written by :func:`encode_record` (msgpack or JSON, auto-detected)."""
    if detect_format(raw) == "json":
        return json.loads(raw)
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def score_windows(record: Mapping[str, Any]) -> list[dict]:
    """The per-window score records in a record from the ``scores`` topic: the record itself
    (``score_records: window``), or each window of a batched record (``score_records: batch``),
    which carries ``"windows": N`` and lists of N values (``channel_scores`` as one list per
    channel; extra per-window figures such as ``likelihood`` likewise)."""
    n = record.get("windows")
    if not isinstance(record.get("score"), list) or not isinstance(n, int):
        return [dict(record)]
    columns = {k: v for k, v in record.items() if isinstance(v, list) and len(v) == n}
    constant = {k: v for k, v in record.items() if k not in columns and k not in ("windows", "channel_scores")}
    per_channel = record.get("channel_scores") or {}
    return [{**constant, **{k: v[i] for k, v in columns.items()},
             "channel_scores": {c: vals[i] for c, vals in per_channel.items()}} for i in range(n)]


# -- what a step publishes, and sending it ------------------------------------------------------
@dataclass
class Outgoing:
    """Everything one part of a step produces: encoded records to publish and, from a sweep or
    :meth:`Detector.process`, the states to persist after them."""

    scores: list[tuple[bytes, bytes]] = field(default_factory=list)
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    states: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # source -> (partition, state)
    evicted: dict[str, int] = field(default_factory=dict)  # source -> partition: delete from the table
    records: list[dict] = field(default_factory=list)  # score records as dicts (process_points only)
    events: list[dict] = field(default_factory=list)  # alert events as dicts (process_points only)


class KeyPartitions:
    """The partition the producer's default partitioner gives a keyed record (murmur2 of the
    key, as Kafka's Java client chooses), worked out once per topic and key.

    aiokafka runs murmur2 in pure Python for every keyed send, once per score record here,
    while the worker sends the same few thousand source keys over and over.  The cache entry is
    keyed by the topic's partition count, so a topic that gains partitions is recomputed.
    ``None`` while the producer has no metadata for the topic: aiokafka then chooses itself.
    """

    def __init__(self, producer) -> None:
        self.producer = producer  # an aiokafka AIOKafkaProducer
        self._cache: dict[tuple[str, bytes], tuple[int, int]] = {}

    def __call__(self, topic: str, key: bytes | None) -> int | None:
        meta = self.producer._metadata
        parts = meta.partitions_for_topic(topic)
        if not parts or key is None:  # no key: the partitioner's random choice, not a cached one
            return None
        hit = self._cache.get((topic, key))
        if hit is not None and hit[0] == len(parts):
            return hit[1]
        partition = self.producer._partitioner(key, list(parts), list(meta.available_partitions_for_topic(topic)))
        self._cache[topic, key] = (len(parts), partition)
        return partition


class Publisher:
    """Sends records to the output topics and states to the state table's changelog, through
    the Faust app's producer.

    Records go straight to the producer (aiokafka batches them per partition) rather than by
    Faust's ``topic.send``, whose bookkeeping costs more than the record itself at one record
    per window.  States go the same way rather than by ``table.send_changelog``, which queues
    each record in Faust's ProducerBuffer and makes the consumer wait whenever more than 100 are
    queued.  Faust flushes the producer before it commits input offsets, so a state is still
    durable before the offsets it covers (``docs/benchmarks/history.md`` has the measurements).
    """

    def __init__(self, app, table, scores_topic: str, alerts_topic: str, dead_topic: str) -> None:
        self.app, self.table = app, table
        self.topics = ((scores_topic, "scores"), (alerts_topic, "alerts"), (dead_topic, "dead_letters"))
        self.dead_topic = dead_topic
        self._partitions: KeyPartitions | None = None  # for the producer of the moment

    def _partition_of(self) -> KeyPartitions:
        aio = self.app.producer._ensure_producer()
        if self._partitions is None or self._partitions.producer is not aio:  # a restart makes a new producer
            self._partitions = KeyPartitions(aio)
        return self._partitions

    async def send_records(self, out: Outgoing, pending: list) -> None:
        """Hand ``out``'s records to the producer; their delivery futures go into ``pending``."""
        send, partition_of = self.app.producer.send, self._partition_of()
        for topic, attr in self.topics:
            for key, value in getattr(out, attr):
                pending.append(await send(topic, key, value, partition_of(topic, key), None, None))

    async def send_states(self, states: Mapping[str, tuple[int, bytes]],
                          evicted: Mapping[str, int] | None = None) -> None:
        """Write states (and tombstones for evicted sources) to the table and its changelog.
        Call only after the records they cover are acknowledged."""
        send, changelog = self.app.producer.send, self.table.changelog_topic.get_topic_name()
        for source, (partition, state) in states.items():
            key = source.encode()
            self.table.data[key] = state
            await send(changelog, key, state, partition, None, None)
        for source, partition in (evicted or {}).items():  # a tombstone: the source starts afresh if it returns
            self.table.data.pop(source.encode(), None)
            await send(changelog, source.encode(), None, partition, None, None)

    async def publish(self, out: Outgoing) -> None:
        """Records first, acknowledged, then the states (and deletions) that say so."""
        pending: list = []
        await self.send_records(out, pending)
        if pending:
            await asyncio.gather(*pending)
        await self.send_states(out.states, out.evicted)
