"""Run per-source test series through the real worker and collect what it publishes.

The offline benchmarks score a series with ``score_series`` and threshold it with a function;
this runner sends the same series through the deployed path instead: an embedded Kafka
broker, the worker process (``stream-detector worker``) serving a model repository with one
route per source, and the threshold procedure the route names applied causally per source.
What comes back is what an operator would see on the scores and alerts topics.

Usage (it starts a broker and a worker: tests/test_via_worker.py runs it)::

    run = run_via_worker({"A-1": "models/A-1"}, {"A-1": test_values},
                         threshold={"method": "telemanom"}, stride=1)
    run.sources["A-1"].point_flags()

Layout: ``<workdir>/repo/<source>/1 -> <model_dir>`` (symlinks; the folder names the model, so
several sources may share one card name), the worker's config and log in ``<workdir>``.
Each source's series goes out as batch messages of ``batch_points`` points with timestamps
``t0 + i * dt`` (``i`` the point index), sources interleaved, as fast as the broker takes
them; the scores and alerts topics are read meanwhile until every source has published the
number of records it will publish (an adaptive threshold leaves its last undecided windows
unpublished at the end of a finite stream: the count is asked of the threshold procedure
itself), or until ``timeout`` / ``stall`` seconds: missing records are reported, not waited
for forever.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.card import ModelCard

__all__ = ["SourceResult", "WorkerRun", "expected_published", "run_via_worker", "window_flags_to_points"]

T0 = 1.7e9
DT = 1.0
STATIC_METHODS = ("quantile", "pot")


def window_flags_to_points(n_points: int, end_idx: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Per-point flags from per-window flags, as ``scoring.point_scores`` maps window scores:
    point ``t`` takes the flag of the latest window ending at or before ``t`` (``end_idx``
    sorted ascending); points before the first window are not flagged."""
    out = np.zeros(n_points, dtype=bool)
    end_idx = np.asarray(end_idx, dtype=np.int64)
    if len(end_idx) == 0:
        return out
    idx = np.searchsorted(end_idx, np.arange(n_points), side="right") - 1
    ok = idx >= 0
    out[ok] = np.asarray(flags, dtype=bool)[idx[ok]]
    return out


def route_spec(card: ModelCard, threshold: Mapping) -> dict:
    """The threshold specification the worker will use for a route overriding the card's."""
    card_thr = card.threshold
    return {"value": card_thr["value"], "release": card_thr["release"], **dict(threshold)}


def expected_published(spec: Mapping, stride: int, n_windows: int) -> int:
    """How many of ``n_windows`` windows the worker publishes with threshold ``spec``: all of
    them for a static threshold; for an adaptive one, those its procedure decides on a finite
    stream (asked of the procedure itself, fed ``n_windows`` zeros)."""
    if spec["method"] in STATIC_METHODS or n_windows == 0:
        return n_windows
    from ..runtime.thresholds import make_threshold

    # the spatial rule changes decisions, never how many are made (it needs the windows, not just counts)
    flags, _ = make_threshold({k: v for k, v in spec.items() if k != "spatial_tolerance"}, stride).update(
        np.zeros(n_windows))
    return len(flags)


@dataclass
class SourceResult:
    """What the worker published for one source (windows in stream order, deduplicated)."""

    source: str
    model_dir: str
    n_points: int
    window: int
    stride: int
    expected_windows: int  # complete windows in the series
    expected_published: int  # of which the threshold procedure decides (and the worker publishes)
    end_idx: np.ndarray  # point index of each published window's last point
    start_idx: np.ndarray
    flags: np.ndarray  # is_anomaly per published window
    thresholds: np.ndarray
    scores: np.ndarray
    model_version: list[str]
    episodes: list[dict]  # alert episodes: opened events merged with their closing events
    duplicates: int = 0  # records published twice for one window (at-least-once redelivery)
    unexpected: int = 0  # records for windows the series does not have
    # further numeric fields of the score records, per published window (NaN where a record lacks
    # it), e.g. ``likelihood`` (the ``likelihood`` threshold's anomaly likelihood of the window)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def published(self) -> int:
        return int(len(self.end_idx))

    @property
    def missing(self) -> int:
        return max(0, self.expected_published - self.published)

    def all_window_ends(self) -> np.ndarray:
        """Point index of the last point of every complete window of the series."""
        from ..runtime.scoring import window_starts

        return window_starts(self.n_points, self.window, self.stride) + self.window - 1

    def window_flags(self) -> tuple[np.ndarray, np.ndarray]:
        """``(flags, decided)`` for every complete window; undecided (unpublished) ones are False."""
        ends = self.all_window_ends()
        flags = np.zeros(len(ends), dtype=bool)
        decided = np.zeros(len(ends), dtype=bool)
        pos = np.searchsorted(ends, self.end_idx)
        ok = (pos < len(ends)) & (ends[np.minimum(pos, len(ends) - 1)] == self.end_idx)
        flags[pos[ok]] = self.flags[ok]
        decided[pos[ok]] = True
        return flags, decided

    def point_flags(self) -> np.ndarray:
        """Per-point flags: the latest window ending at or before each point decides it
        (a window the worker never published counts as not flagged)."""
        flags, _ = self.window_flags()
        return window_flags_to_points(self.n_points, self.all_window_ends(), flags)

    def episode_point_flags(self) -> np.ndarray:
        """Per-point flags from the alert episodes instead of ``is_anomaly``: the windows from an
        episode's first to its last window are flagged (for a static threshold the episodes carry
        the hysteresis, open at the threshold and held down to the release level, which the
        per-window ``is_anomaly`` does not), mapped to points as :meth:`point_flags`."""
        ends = self.all_window_ends()
        flags = np.zeros(len(ends), dtype=bool)
        last = int(self.end_idx[-1]) if len(self.end_idx) else -1
        for ep in self.episodes:
            first = ep["start_index"] + self.window - 1
            # an episode still open when the stream ended held through its last published window
            # (its events only carry the span up to when it opened)
            end = ep["end_index"] if ep["closed"] else last
            flags |= (ends >= first) & (ends <= end)
        return window_flags_to_points(self.n_points, ends, flags)

    def undecided_points(self) -> np.ndarray:
        """Points whose deciding window (see :meth:`point_flags`) the worker did not publish (the
        last partial batch of an adaptive threshold); points before the first window are not
        counted: no window covers them, offline either."""
        _, decided = self.window_flags()
        return window_flags_to_points(self.n_points, self.all_window_ends(), ~decided)

    def summary(self) -> dict:
        return {"source": self.source, "points": self.n_points, "window": self.window, "stride": self.stride,
                "windows": self.expected_windows, "expected_published": self.expected_published,
                "published": self.published, "missing": self.missing, "duplicates": self.duplicates,
                "unexpected": self.unexpected, "flagged_windows": int(np.sum(self.flags)),
                "episodes": len(self.episodes)}


@dataclass
class WorkerRun:
    """The outcome of one :func:`run_via_worker` call."""

    sources: dict[str, SourceResult]
    threshold: dict  # the specification (or {source: specification} when they differ)
    stride: int
    wall_seconds: float  # first message sent to last expected record received (or the timeout)
    send_seconds: float
    points: int
    messages: int
    timed_out: bool
    worker_log_tail: str = ""
    settings: dict = field(default_factory=dict)

    @property
    def windows(self) -> int:
        return sum(r.published for r in self.sources.values())

    @property
    def windows_per_second(self) -> float | None:
        return round(self.windows / self.wall_seconds, 1) if self.wall_seconds > 0 else None

    @property
    def missing(self) -> dict[str, int]:
        return {s: r.missing for s, r in self.sources.items() if r.missing}

    def summary(self) -> dict:
        return {"threshold": self.threshold, "stride": self.stride, "wall_seconds": round(self.wall_seconds, 2),
                "send_seconds": round(self.send_seconds, 2), "points": self.points, "messages": self.messages,
                "windows": self.windows, "windows_per_second": self.windows_per_second,
                "timed_out": self.timed_out, "missing": self.missing,
                "duplicates": sum(r.duplicates for r in self.sources.values()), "settings": self.settings}


def _layout_repository(root: Path, models: Mapping[str, str | Path]) -> Path:
    repo = root / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    for source, model_dir in models.items():
        if "/" in source or source.startswith(".") or not source.strip():
            raise ValueError(f"source {source!r} cannot name a model folder")
        (repo / source).mkdir(exist_ok=True)
        link = repo / source / "1"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(model_dir).resolve(), target_is_directory=True)
    return repo


def _messages(series: Mapping[str, np.ndarray], channels: Mapping[str, list[str]], batch_points: int, t0: float,
              dt: float) -> list[tuple[bytes, bytes]]:
    """Batch messages of every source, interleaved batch by batch."""
    from ..runtime.codec import encode_points

    out = []
    longest = max((len(v) for v in series.values()), default=0)
    for lo in range(0, longest, batch_points):
        for source, values in series.items():
            if lo >= len(values):
                continue
            chunk = np.asarray(values[lo:lo + batch_points], dtype=np.float64)
            ts = t0 + dt * np.arange(lo, lo + len(chunk))
            payload = encode_points(ts, {c: chunk[:, j] for j, c in enumerate(channels[source])})
            out.append((source.encode(), payload))
    return out


async def _exchange(bootstrap: str, topic_in: str, topic_scores: str, topic_alerts: str,
                    messages: list[tuple[bytes, bytes]], expected: dict[str, int], timeout: float, stall: float,
                    settle: float, progress: Callable[[str], None] | None) -> tuple[list, list, float, float, bool]:
    """Send ``messages`` while reading scores and alerts; returns records, events, wall and send
    seconds, and whether it gave up before every expected record came."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from ..runtime.publishing import decode_record

    consumer = AIOKafkaConsumer(topic_scores, topic_alerts, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                                max_request_size=16 << 20)
    await producer.start()
    records: list[dict] = []
    events: list[dict] = []
    seen: dict[str, set] = {s: set() for s in expected}
    send_seconds = 0.0

    async def send_all() -> None:
        nonlocal send_seconds
        t = time.monotonic()
        for key, value in messages:
            await producer.send(topic_in, value, key=key)
        await producer.flush()
        send_seconds = time.monotonic() - t

    started = time.monotonic()
    sender = asyncio.create_task(send_all())
    last_progress = last_report = time.monotonic()
    done_at = None
    timed_out = False
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for tp, msgs in batch.items():
                for m in msgs:
                    rec = decode_record(m.value)
                    if tp.topic == topic_scores:
                        records.append(rec)
                        s = rec.get("source")
                        if s in seen:
                            seen[s].add(rec.get("end"))
                    else:
                        events.append(rec)
                    last_progress = now
            if sender.done() and sender.exception() is not None:
                raise sender.exception()
            if done_at is None and all(len(seen[s]) >= n for s, n in expected.items()):
                done_at = now
            if done_at is not None:
                if now - done_at >= settle and sender.done():
                    break
                continue
            if now - started > timeout or (sender.done() and now - last_progress > stall):
                timed_out = True
                done_at = now
                break
            if progress and now - last_report > 10:
                last_report = now
                got, want = sum(len(v) for v in seen.values()), sum(expected.values())
                progress(f"via worker: {got}/{want} windows published after {now - started:.0f} s")
    finally:
        if not sender.done():
            sender.cancel()
        await producer.stop()
        await consumer.stop()
    return records, events, (done_at or time.monotonic()) - started, send_seconds, timed_out


def _num(v) -> float:
    """A record's number; NaN (no threshold chosen yet) arrives as None."""
    return math.nan if v is None else float(v)


_RECORD_KEYS = {"source", "start", "end", "score", "threshold", "is_anomaly", "channel_scores", "model",
                "model_version"}


def _extra_fields(recs: list[dict]) -> dict[str, np.ndarray]:
    """The records' numeric fields beyond the standard ones, one array per field."""
    names = sorted({k for r in recs for k, v in r.items() if k not in _RECORD_KEYS
                    and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))})
    return {k: np.array([_num(r.get(k)) for r in recs], dtype=np.float64) for k in names}


def _episodes(events: list[dict], t0: float, dt: float) -> dict[str, list[dict]]:
    out: dict[str, dict[str, dict]] = {}
    for e in events:
        src, eid = e.get("source"), e.get("episode_id")
        ep = out.setdefault(src, {}).setdefault(eid, {"episode_id": eid, "closed": False})
        ep.update(start=e["start"], end=e["end"], peak_score=e.get("peak_score"), windows=e.get("windows"),
                  top_channels=e.get("top_channels"))
        if e.get("event") == "closed":
            ep["closed"] = True
        ep["start_index"] = int(round((e["start"] - t0) / dt))
        ep["end_index"] = int(round((e["end"] - t0) / dt))
    return {s: sorted(eps.values(), key=lambda x: x["start"]) for s, eps in out.items()}


def run_via_worker(models: Mapping[str, str | Path], series: Mapping[str, np.ndarray], threshold: Mapping,
                   stride: int = 1, *, batch_points: int = 500, timeout: float = 1800.0, stall: float = 120.0,
                   settle: float = 1.0, workdir: str | Path | None = None, broker=None, partitions: int = 4,
                   t0: float = T0, dt: float = DT, worker_settings: Mapping | None = None,
                   progress: Callable[[str], None] | None = None) -> WorkerRun:
    """Send each source's ``series[source]`` (``[T, C]``, channels in the order of its model
    card) through the worker serving ``models[source]`` with the ``threshold`` specification
    (``{"method": ..., params}``, overriding the card's; or ``{source: spec}``, one per source)
    at ``stride``; see the module docstring.

    ``broker``: a running :class:`~stream_detector.broker.EmbeddedBroker` to use (default: one
    started and stopped here).  ``worker_settings``: extra :class:`WorkerConfig` keys.
    """
    from ..broker import EmbeddedBroker, free_port
    from ..runtime.card import load_card
    from ..runtime.config import WorkerConfig
    from ..runtime.repository import parse_routes
    from ..runtime.scoring import window_starts
    from ..runtime.worker import ensure_topics
    from ..worker_process import WorkerProcess

    if set(models) != set(series):
        raise ValueError(f"models and series name different sources: {sorted(set(models) ^ set(series))}")
    if isinstance(threshold, Mapping) and "method" in threshold:
        specs = {s: dict(threshold) for s in series}
    else:  # one specification per source
        specs = {s: dict(threshold.get(s) or {}) for s in series}
    for s, spec in specs.items():
        if not isinstance(spec.get("method"), str):
            raise ValueError(f"threshold of {s}: a mapping with a 'method'")
    cards = {s: load_card(m) for s, m in models.items()}
    series = {s: np.asarray(v, dtype=np.float32) for s, v in series.items()}
    for s, v in series.items():
        v2 = v if v.ndim == 2 else v[:, None]
        if v2.shape[1] != len(cards[s].channels):
            raise ValueError(f"{s}: {v2.shape[1]} columns but the model has channels {list(cards[s].channels)}")
        series[s] = v2
    channels = {s: list(c.channels) for s, c in cards.items()}
    n_windows = {s: len(window_starts(len(series[s]), cards[s].window, stride)) for s in series}
    expected = {s: expected_published(route_spec(cards[s], specs[s]), stride, n_windows[s]) for s in series}

    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="sd-via-worker-")
        workdir = own_tmp.name
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    repo = _layout_repository(workdir, models)
    tag = f"via-{uuid.uuid4().hex[:8]}"
    own_broker = broker is None
    if own_broker:
        broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
    worker = None
    try:
        settings = dict(broker=broker.url, model_repository=str(repo), app_id=f"sd-{tag}", topic_input=f"{tag}-in",
                        topic_scores=f"{tag}-scores", topic_alerts=f"{tag}-alerts",
                        topic_dead_letters=f"{tag}-dead", partitions=partitions, metrics_port=free_port(),
                        broker_session_timeout_seconds=6, broker_heartbeat_interval_seconds=1,
                        broker_rebalance_timeout_seconds=3, model_poll_seconds=3600.0)
        settings.update(worker_settings or {})
        routes = [{"sources": "re:" + re.escape(s), "model": s, "threshold": specs[s], "stride": stride}
                  for s in series]
        cfg = WorkerConfig(**settings, routes=parse_routes(routes))
        asyncio.run(ensure_topics(cfg))
        messages = _messages(series, channels, batch_points, t0, dt)
        worker = WorkerProcess(cfg, workdir, name="worker").start()
        if progress:
            progress(f"via worker: {len(series)} sources, {sum(n_windows.values())} windows "
                     f"({sum(expected.values())} to be published), {len(messages)} messages")
        records, events, wall, send_seconds, timed_out = asyncio.run(_exchange(
            broker.bootstrap, cfg.topic_input, cfg.topic_scores, cfg.topic_alerts, messages, expected, timeout,
            stall, settle, progress))
        log_tail = worker.tail(40)
    finally:
        if worker is not None:
            worker.stop()
        if own_broker:
            broker.stop()
        if own_tmp is not None:
            own_tmp.cleanup()

    by_source: dict[str, dict[float, dict]] = {s: {} for s in series}
    duplicates = dict.fromkeys(series, 0)
    for r in records:  # the last record of a window wins (a redelivery repeats the same decision)
        s = r.get("source")
        if s not in by_source:
            continue
        if r["end"] in by_source[s]:
            duplicates[s] += 1
        by_source[s][r["end"]] = r
    episodes = _episodes(events, t0, dt)
    results = {}
    for s in series:
        recs = sorted(by_source[s].values(), key=lambda r: r["end"])
        end_idx = np.array([int(round((r["end"] - t0) / dt)) for r in recs], dtype=np.int64)
        start_idx = np.array([int(round((r["start"] - t0) / dt)) for r in recs], dtype=np.int64)
        w = cards[s].window
        valid = window_starts(len(series[s]), w, stride) + w - 1
        unexpected = int(np.sum(~np.isin(end_idx, valid)))
        results[s] = SourceResult(
            source=s, model_dir=str(models[s]), n_points=len(series[s]), window=w, stride=stride,
            expected_windows=n_windows[s], expected_published=expected[s], end_idx=end_idx, start_idx=start_idx,
            flags=np.array([bool(r["is_anomaly"]) for r in recs], dtype=bool),
            thresholds=np.array([_num(r.get("threshold")) for r in recs], dtype=np.float64),
            scores=np.array([_num(r.get("score")) for r in recs], dtype=np.float64),
            model_version=[str(r.get("model_version")) for r in recs], episodes=episodes.get(s, []),
            duplicates=duplicates[s], unexpected=unexpected, extra=_extra_fields(recs))
    shared = all(v == specs[next(iter(specs))] for v in specs.values())
    return WorkerRun(sources=results, threshold=specs[next(iter(specs))] if shared else specs, stride=stride,
                     wall_seconds=wall, send_seconds=send_seconds, points=sum(len(v) for v in series.values()),
                     messages=len(messages),
                     timed_out=timed_out, worker_log_tail=log_tail,
                     settings={"batch_points": batch_points, "partitions": partitions,
                               "batch_max_windows": cfg.batch_max_windows, "cpus": os.cpu_count()})
