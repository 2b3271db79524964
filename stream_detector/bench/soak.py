"""Long runs and overload of the real worker: ``stream-detector bench soak`` and ``bench overload``.

Both runners put the real worker (:class:`~stream_detector.bench.worker_process.WorkerProcess`, a child
process running Faust) on the embedded broker under a live fleet of sources, and write
JSON, Markdown and a PNG to ``--out`` (``soak.*``, ``overload.*``; the committed ones are in
``docs/benchmarks/``).

1. **The maximum**, measured at the start of the same run unless ``--max-points-per-s`` gives
   it: a topic pre-loaded with ``--max-points-per-source`` points of every source, in the
   message shape of the live phase, drained by a fresh worker (the throughput benchmark's
   :func:`~stream_detector.bench.throughput.run_detector`: first point processed to last
   score published).
2. **The live phase**: ``--sources`` sources send at ``--factor`` times that maximum (soak 0.5,
   overload 2; or ``--rate`` points/s) for ``--duration`` seconds, each on a fixed schedule
   (points stamped with their due time on the wall clock), in batch messages of
   ``--batch-points`` points (default one window's worth, the model's ``W``: the worker's cost
   per message is high, about 1 ms on a loaded 2-core machine, so 8-point messages would cap
   it at a few thousand points/s).  The producer encodes a tick's messages with numpy and hands
   them to aiokafka in per-partition batches, so one Python process can offer a few 10,000
   messages/s.  The live worker runs with the production consumer-group timings (the
   config's defaults: it takes about 30 s to join its group), not the short ones of tests;
   ``--set KEY=VALUE`` changes any worker setting.
3. **Then nothing**: the runner waits until the worker has caught up (every message sent
   processed and committed, every expected window scored), measures how long that took, and
   stops the worker cleanly.
4. **Sampling** every ``--sample-seconds`` during 2 and 3: the worker's and the broker's
   resident memory (``VmRSS`` in ``/proc``), the worker's CPU time, its counters (messages,
   points, windows) and consumer lag, twice: messages acknowledged by the broker minus the
   offsets the worker committed (Faust's ``topic_partition_offset_commited`` series, what the
   Prometheus recording rule uses), and messages sent minus messages the worker processed.
5. **Every window accounted for**: after the run every score record is read back from the
   scores topic and matched to the windows the sent points make (source, window start on the
   stride grid): expected, scored, duplicates (at-least-once redelivery), missing, unexpected.
   Latency = the record's publication (its Kafka timestamp) minus the time the message that
   carried the window's last point was due (by the schedule), p50/p99 per ``--slice-seconds``
   slice of publication time; also, overall, minus the timestamp of the window's last point,
   which adds the time the producer held that point back to fill its message.

Verdicts: soak, RSS growth after the warm-up (the first ``--warmup`` fraction of the live
phase, and at least two message periods, so that every source has sent twice): median RSS over the last tenth of the live phase against the median over the tenth
that follows the warm-up, target under 5 %.  Overload: memory bounded when the RSS that the
backlog accounts for (slope of RSS over the unprocessed backlog after the warm-up, times the
largest backlog) is under 5 % of the median RSS, i.e. the backlog stays in Kafka; every window
scored.  The broker's speed at the head of the input topic is sampled beside the worker
(``broker_tail_fetch_ms``): Tansu's memory storage slows down as a partition's record batches
accumulate, and a long run shows when the broker, not the worker, sets the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from . import throughput_runs as runs
from . import throughput_workload as workload

from .framework import Benchmark, Report, error
from .throughput_report import target_mark

DEFAULT_SOURCES = 10_000
RSS_GROWTH_TARGET = 0.05  # soak: RSS growth after the warm-up, at most
BOUNDED_TARGET = 0.05  # overload: RSS growth over the second half of the overload and the drain, at most
MODES = {
    "soak": {"duration": 1200.0, "factor": 0.5,
             "title": "Soak: a long run at half the measured maximum"},
    "overload": {"duration": 120.0, "factor": 2.0,
                 "title": "Overload: twice the measured maximum, then nothing"},
}
PRODUCTION_TIMINGS = dict(broker_session_timeout_seconds=None, broker_heartbeat_interval_seconds=None,
                          broker_rebalance_timeout_seconds=None)


# ----------------------------------------------------------------------------- the live fleet
class BatchEncoder:
    """Batch messages ``{"ts": [...], "values": {channel: [...]}}`` for many messages at once,
    byte for byte what :func:`stream_detector.runtime.codec.encode_points` writes (msgpack float64
    everywhere), built with numpy instead of one ``packb`` call per message."""

    def __init__(self, channels: list[str], batch: int):
        pk = msgpack.Packer(use_bin_type=True)
        array = pk.pack_array_header(batch)
        parts: list[bytes | int] = [pk.pack_map_header(2) + pk.pack("ts") + array, -1,
                                    pk.pack("values") + pk.pack_map_header(len(channels))]
        for j, c in enumerate(channels):
            parts += [pk.pack(c) + array, j]
        self.batch, self.layout, offset = batch, [], 0
        for part in parts:  # (offset, fixed bytes or the column: -1 for ts, j for channel j)
            self.layout.append((offset, part))
            offset += len(part) if isinstance(part, bytes) else 9 * batch
        self.length = offset

    def encode(self, ts: np.ndarray, values: np.ndarray) -> list[bytes]:
        """``ts`` ``[M, batch]``, ``values`` ``[M, batch, C]`` -> M messages."""
        m, b = ts.shape
        out = np.empty((m, self.length), np.uint8)
        block = np.empty((m, b, 9), np.uint8)
        block[:, :, 0] = 0xCB  # msgpack float 64, big-endian
        for offset, part in self.layout:
            if isinstance(part, bytes):
                out[:, offset:offset + len(part)] = np.frombuffer(part, np.uint8)
            else:
                col = ts if part < 0 else values[:, :, part]
                block[:, :, 1:] = np.ascontiguousarray(col, dtype=">f8").view(np.uint8).reshape(m, b, 8)
                out[:, offset:offset + 9 * b] = block.reshape(m, 9 * b)
        data, n = out.tobytes(), self.length
        return [data[i * n:(i + 1) * n] for i in range(m)]


def source_key(i: int) -> bytes:
    return f"src-{i:05d}".encode()  # the keys throughput.preload_messages writes


class Fleet:
    """``sources`` sources, each sending ``points_per_s / sources`` points a second on a fixed
    schedule (point ``k`` of source ``s`` is due at ``t0 + phase[s] + (k - batch + 1) * dt``,
    and that is its timestamp), in messages of ``batch`` points sent once their last point is
    due: every source sends its first message within one message period of ``t0``, so the full
    load is offered from the start, not after a ramp of a period."""

    def __init__(self, sources: int, channels: list[str], points_per_s: float, batch: int, t0: float,
                 partitions: int, seed: int = 0):
        from aiokafka.partitioner import DefaultPartitioner

        rng = np.random.default_rng(seed)
        self.n, self.batch, self.t0, self.channels = sources, batch, t0, channels
        self.dt = sources / points_per_s
        self.phase = rng.uniform(0.0, batch * self.dt, sources)  # spreads the sources' messages over time
        self.period = rng.uniform(40.0, 400.0, (sources, 1, len(channels)))  # points per cycle of each channel
        self.offset = rng.uniform(0, 2 * np.pi, (sources, 1, len(channels)))
        self.sent = np.zeros(sources, np.int64)  # points handed to the producer, per source
        self.keys = [source_key(i) for i in range(sources)]
        part = DefaultPartitioner()
        every = list(range(partitions))
        self.partition = np.array([part(k, every, every) for k in self.keys], np.int64)
        self.encoder = BatchEncoder(channels, batch)
        self.rng = rng

    def ts(self, s: np.ndarray, k: np.ndarray) -> np.ndarray:
        return self.t0 + self.phase[s] + self.dt * (k - self.batch + 1)

    def point(self, s: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The point number whose timestamp is nearest ``ts`` (the inverse of :meth:`ts`)."""
        return np.rint((ts - self.t0 - self.phase[s]) / self.dt).astype(np.int64) + self.batch - 1

    def due(self, now: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Messages whose last point is due at ``now``, oldest first: (source, first point)."""
        points = np.floor((now - self.t0 - self.phase) / self.dt).astype(np.int64) + self.batch
        n = np.maximum(points - self.sent, 0) // self.batch
        if not n.any():
            return np.empty(0, np.int64), np.empty(0, np.int64)
        s = np.repeat(np.arange(self.n), n)
        j = np.arange(len(s)) - np.repeat(np.cumsum(n) - n, n)  # message number within its source
        first = self.sent[s] + self.batch * j
        if len(s) > limit:  # a producer that fell behind sends the oldest first
            keep = np.argsort(self.ts(s, first), kind="stable")[:limit]
            s, first = s[keep], first[keep]
        return s, first

    def messages(self, s: np.ndarray, first: np.ndarray) -> list[bytes]:
        k = first[:, None] + np.arange(self.batch)[None, :]
        ts = self.ts(s[:, None], k)
        vals = 0.8 * np.sin(2 * np.pi * k[:, :, None] / self.period[s] + self.offset[s])
        vals += self.rng.normal(0.0, 0.05, vals.shape)
        np.add.at(self.sent, s, self.batch)
        return self.encoder.encode(ts, vals)

    def expected_windows(self, window: int, stride: int) -> int:
        n = self.sent
        return int(np.where(n >= window, (n - window) // stride + 1, 0).sum())


class ProducerStats:
    def __init__(self, partitions: int):
        self.acked = np.zeros(partitions, np.int64)  # messages acknowledged, per partition
        self.messages = 0  # handed to the producer
        self.points = 0
        self.behind_s = 0.0  # how late the producer sent, worst since the last sample
        self.behind_max_s = 0.0
        self.done = False


async def _produce_live(bootstrap: str, topic: str, fleet: Fleet, until: float, stats: ProducerStats,
                        tick: float = 0.01, limit: int = 20_000) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                                max_request_size=8 << 20)
    await producer.start()
    inflight: list = []

    def acked(partition: int, count: int):
        def done(fut):
            if not fut.cancelled() and fut.exception() is None:
                stats.acked[partition] += count
        return done

    async def flush(builder, partition: int, count: int) -> None:
        fut = await producer.send_batch(builder, topic, partition=partition)
        fut.add_done_callback(acked(partition, count))
        inflight.append(fut)

    try:
        while True:
            now = time.time()
            if now >= until:
                break
            s, first = fleet.due(now, limit)
            if len(s):
                late = float(now - fleet.ts(s[:1], first[:1] + fleet.batch - 1)[0])
                stats.behind_s, stats.behind_max_s = max(stats.behind_s, late), max(stats.behind_max_s, late)
                payloads = fleet.messages(s, first)
                parts = fleet.partition[s]
                for p in np.unique(parts):
                    builder, count = producer.create_batch(), 0
                    for i in np.flatnonzero(parts == p):
                        if builder.append(key=fleet.keys[s[i]], value=payloads[i], timestamp=None) is None:
                            await flush(builder, int(p), count)
                            builder, count = producer.create_batch(), 0
                            builder.append(key=fleet.keys[s[i]], value=payloads[i], timestamp=None)
                        count += 1
                    await flush(builder, int(p), count)
                stats.messages += len(s)
                stats.points += len(s) * fleet.batch
                for f in inflight:
                    if f.done() and not f.cancelled() and f.exception() is not None:
                        raise f.exception()
                inflight = [f for f in inflight if not f.done()]
            await asyncio.sleep(max(0.0, tick - (time.time() - now)))
        if inflight:
            await asyncio.gather(*inflight)
    finally:
        await producer.stop()
        stats.done = True


# ----------------------------------------------------------------------------- sampling
def _committed_lag(text: str, topic: str, acked: np.ndarray) -> int:
    """Messages acknowledged by the broker minus the worker's committed offsets (per partition,
    never below 0): the consumer group's lag as the Prometheus recording rule computes it."""
    lag = 0
    for p, n in enumerate(acked):
        committed = runs.metric_value(text, "stream_detector_faust_topic_partition_offset_commited",
                               f'partition="{p}",topic="{topic}"')
        lag += max(int(n) - int(committed), 0)
    return lag


class _TailProbe:
    """Times a fetch of the last record of the input topic's partition 0: how long the broker
    takes to serve a consumer at the head of a partition, which the worker does all the time.
    Tansu 0.6's memory storage serves it in time linear in the record batches the partition
    holds (it keeps no index and applies no retention), so a long run at a high message rate
    ends up measuring the broker; this column shows when."""

    def __init__(self, consumer, tp_):
        self.consumer, self.tp = consumer, tp_

    async def fetch(self) -> float | None:
        end = (await self.consumer.end_offsets([self.tp]))[self.tp]
        if end < 1:
            return None
        self.consumer.seek(self.tp, end - 1)
        t = time.perf_counter()
        got = await self.consumer.getmany(self.tp, timeout_ms=30_000, max_records=1)
        return round((time.perf_counter() - t) * 1e3, 2) if got else None


async def _tail_probe(bootstrap: str, topic: str) -> _TailProbe:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    tp_ = TopicPartition(topic, 0)
    consumer.assign([tp_])
    return _TailProbe(consumer, tp_)


class Sampler(threading.Thread):
    """Samples the worker every ``interval`` seconds in a thread (the producer owns the main one)."""

    def __init__(self, worker, broker_pid: int | None, topic: str, stats: ProducerStats, t0: float, interval: float,
                 bootstrap: str | None = None):
        super().__init__(daemon=True)
        self.worker, self.broker_pid, self.topic, self.stats, self.t0 = worker, broker_pid, topic, stats, t0
        self.interval, self.samples, self.halt = interval, [], threading.Event()
        self.cpu0 = runs.cpu_seconds(worker.proc.pid)
        self.bootstrap = bootstrap

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        probe = None
        try:
            if self.bootstrap:
                probe = loop.run_until_complete(_tail_probe(self.bootstrap, self.topic))
            while not self.halt.wait(self.interval):
                row = self.sample()
                if probe is not None:
                    row["broker_tail_fetch_ms"] = loop.run_until_complete(probe.fetch())
                self.samples.append(row)
        finally:
            if probe is not None:
                loop.run_until_complete(probe.consumer.stop())
            loop.close()


    def sample(self) -> dict[str, Any]:
        t = time.time()
        pid = self.worker.proc.pid
        row: dict[str, Any] = {"t": round(t - self.t0, 3), "worker_rss_bytes": runs.process_rss_bytes(pid),
                               "worker_cpu_seconds": round(runs.cpu_seconds(pid) - self.cpu0, 3),
                               "broker_rss_bytes": runs.process_rss_bytes(self.broker_pid) if self.broker_pid else None,
                               "messages_sent": int(self.stats.messages), "points_sent": int(self.stats.points),
                               "messages_acked": int(self.stats.acked.sum()),
                               "producer_behind_s": round(self.stats.behind_s, 3),
                               "loadavg_1m": round(os.getloadavg()[0], 2)}
        self.stats.behind_s = 0.0
        try:
            text = self.worker.scrape()
        except OSError as e:  # a worker too busy to answer within 5 s is itself a finding
            row["scrape_error"] = str(e)
            return row
        processed = (runs.metric_value(text, "stream_detector_messages_total", 'status="ok"')
                     + runs.metric_value(text, "stream_detector_messages_total", 'status="dead_letter"'))
        row.update(messages_processed=int(processed),
                   messages_redelivered=int(runs.metric_value(text, "stream_detector_messages_total", 'status="redelivered"')),
                   points_ok=int(runs.metric_value(text, "stream_detector_points_total", 'status="ok"')),
                   windows_scored=int(runs.metric_value(text, "stream_detector_windows_scored_total")),
                   lag_committed=_committed_lag(text, self.topic, self.stats.acked),
                   lag_processed=max(row["messages_acked"] - int(processed), 0))
        return row


def wait_drained(sampler: Sampler, expected_windows: int, timeout: float, poll: float = 0.5) -> float | None:
    """Seconds from now until the worker has processed and committed every message and scored
    every expected window (None if not within ``timeout``)."""
    t = time.time()
    while time.time() - t < timeout:
        row = sampler.sample()
        if (row.get("lag_committed") == 0 and row.get("lag_processed") == 0
                and row.get("windows_scored", -1) >= expected_windows):
            sampler.samples.append(row)
            return time.time() - t
        time.sleep(poll)
    return None


# ----------------------------------------------------------------------------- windows read back
async def _read_windows(bootstrap: str, topic: str, index: dict[bytes, int], expected: int, timeout: float,
                        settle: float) -> tuple[np.ndarray, ...]:
    """Every score record on ``topic``: (source index, -1 for an unknown key; window start; window
    end; publication time, the record's Kafka timestamp), waiting for ``expected`` records and
    then ``settle`` seconds more for duplicates."""
    from aiokafka import AIOKafkaConsumer

    from ..runtime.publishing import decode_record

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    chunks: list[tuple[np.ndarray, ...]] = []
    n = 0
    try:
        deadline, settle_until = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=50_000)
            for msgs in batch.values():
                recs = [decode_record(m.value) for m in msgs]
                chunks.append((np.fromiter((index.get(m.key, -1) for m in msgs), np.int64, len(msgs)),
                               np.fromiter((r["start"] for r in recs), np.float64, len(msgs)),
                               np.fromiter((r["end"] for r in recs), np.float64, len(msgs)),
                               np.fromiter((m.timestamp / 1000.0 for m in msgs), np.float64, len(msgs))))
                n += len(msgs)
            if n >= expected:  # then a little longer, for duplicates
                settle_until = settle_until or time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
    finally:
        await consumer.stop()
    if not chunks:
        return np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0)
    return tuple(np.concatenate(c) for c in zip(*chunks))


def account_windows(fleet: Fleet, window: int, stride: int, s: np.ndarray,
                    start: np.ndarray) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Match score records (source index ``s``, window ``start``) to the windows the sent points
    make: a window of source ``s`` starts at point ``k`` on the stride grid, ``k + window <=`` the
    points sent; a record that matches none is unexpected, a second record of one a duplicate.
    Returns the counts, which records matched, and their ``k``."""
    known = s >= 0
    k = np.full(len(s), -1, np.int64)
    k[known] = fleet.point(s[known], start[known])
    valid = known & (k >= 0) & (k % stride == 0)
    valid[valid] &= np.abs(start[valid] - fleet.ts(s[valid], k[valid])) < 0.25 * fleet.dt
    valid[valid] &= k[valid] + window <= fleet.sent[s[valid]]
    unique = np.unique(s[valid] * (int(fleet.sent.max()) + 1) + k[valid])
    expected = fleet.expected_windows(window, stride)
    counts, n_sources = np.unique(fleet.sent, return_counts=True)
    return ({"expected": expected, "records": int(len(s)), "scored_unique": int(len(unique)),
             "duplicates": int(valid.sum() - len(unique)), "unexpected": int((~valid).sum()),
             "missing": int(expected - len(unique)),
             "every_window_scored": bool(len(unique) == expected and valid.all()),
             "points_per_source": {str(int(c)): int(n) for c, n in zip(counts, n_sources)}}, valid, k)


def latency_slices(t0: float, pub: np.ndarray, lat: np.ndarray, width: float) -> list[dict[str, Any]]:
    """p50/p99/max of latencies ``lat`` of the windows published in each ``width``-second slice
    after ``t0``."""
    if len(pub) == 0:
        return []
    rel = pub - t0
    out = []
    for i in range(int(np.floor(rel.max() / width)) + 1):
        sel = lat[(rel >= i * width) & (rel < (i + 1) * width)]
        pcts = runs.percentiles(sel, (50, 99))
        out.append({"t0": i * width, "t1": (i + 1) * width, "windows": int(len(sel)),
                    **{k: None if v is None else round(v, 4) for k, v in pcts.items()},
                    "max": round(float(sel.max()), 4) if len(sel) else None})
    return out


# ----------------------------------------------------------------------------- verdicts
def _median_rss(samples: list[dict], lo: float, hi: float) -> float | None:
    vals = [r["worker_rss_bytes"] for r in samples if lo <= r["t"] <= hi and r.get("worker_rss_bytes")]
    return float(np.median(vals)) if vals else None


def warmup_seconds(fraction: float, duration: float, message_period: float) -> float:
    """The soak's warm-up: ``fraction`` of the live phase, and at least two message periods (every
    source has then sent twice: its state exists), but never more than half of the live phase."""
    return min(max(fraction * duration, 2 * message_period), 0.5 * duration)


def rss_growth(samples: list[dict], duration: float, w: float) -> dict[str, Any]:
    """Soak: median RSS over the last tenth of the live phase against the tenth after the warm-up
    (the first ``w`` seconds)."""
    tenth = (duration - w) / 10
    first, last = _median_rss(samples, w, w + tenth), _median_rss(samples, duration - tenth, duration)
    after = [r for r in samples if w <= r["t"] <= duration and r.get("worker_rss_bytes")]
    res: dict[str, Any] = {"warmup_seconds": w, "rss_after_warmup_bytes": first, "rss_at_end_bytes": last,
                           "target": RSS_GROWTH_TARGET}
    if first and last:
        res["growth"] = last / first - 1
        res["target_met"] = bool(res["growth"] < RSS_GROWTH_TARGET)
    if len(after) >= 3:
        x = np.array([r["t"] for r in after])
        y = np.array([r["worker_rss_bytes"] for r in after], float)
        slope = float(np.polyfit(x, y, 1)[0])
        res["slope_bytes_per_hour"] = slope * 3600
        res["peak_after_warmup_bytes"] = float(y.max())
    return res


def rss_bounded(samples: list[dict], duration: float, w: float = 0.0) -> dict[str, Any]:
    """Overload: does the worker's memory grow with the backlog?  Bounded when the RSS that the
    backlog accounts for (the slope of RSS over the unprocessed backlog, fitted from the end of
    the warm-up ``w`` to the end of the drain, times the largest backlog) is under 5 % of the
    median RSS: the backlog must stay in Kafka, not in the worker.  Also reported: the peak RSS
    from the middle of the overload to the end of the drain against the median over the fifth
    before the middle, which still includes the worker's own ramp-up when the warm-up is long."""
    mid = duration / 2
    before = _median_rss(samples, 0.3 * duration, mid)
    later = [r["worker_rss_bytes"] for r in samples if r["t"] >= mid and r.get("worker_rss_bytes")]
    all_rss = [r["worker_rss_bytes"] for r in samples if r.get("worker_rss_bytes")]
    res: dict[str, Any] = {"rss_before_middle_bytes": before, "peak_rss_after_middle_bytes": max(later) if later else None,
                           "peak_rss_bytes": max(all_rss) if all_rss else None,
                           "rss_after_drain_bytes": all_rss[-1] if all_rss else None, "target": BOUNDED_TARGET,
                           "warmup_seconds": w}
    if before and later:
        res["growth"] = max(later) / before - 1
    fit = [r for r in samples if r["t"] >= w and r.get("worker_rss_bytes") and "lag_processed" in r]
    if len(fit) >= 3 and max(r["lag_processed"] for r in fit) > 0:
        x = np.array([r["lag_processed"] for r in fit], float)
        y = np.array([r["worker_rss_bytes"] for r in fit], float)
        slope = float(np.polyfit(x, y, 1)[0])
        res["bytes_per_backlog_message"] = slope
        res["max_backlog_messages"] = int(x.max())
        res["rss_for_max_backlog_bytes"] = slope * x.max()
        res["rss_median_bytes"] = float(np.median(y))
        res["backlog_share"] = res["rss_for_max_backlog_bytes"] / res["rss_median_bytes"]
        res["bounded"] = bool(res["backlog_share"] < BOUNDED_TARGET)
    return res


# ----------------------------------------------------------------------------- the run
def measure_max(broker, model: Path, card, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The worker's maximum on a pre-loaded topic in the live phase's message shape."""
    topic = "max-in"
    per_source = args.max_points_per_source
    n_msgs, n_points = runs.preload_input(broker, topic, args.sources, per_source * args.sources, list(card.channels),
                                   args.batch_points, 3)
    n_windows = workload.expected_windows(n_points // args.sources, args.sources, card.window, card.stride)
    run = runs.run_detector(broker, model, topic, "max", n_points, n_windows, workdir, timeout=args.max_timeout,
                          **args.worker_settings)
    print(f"maximum: {run['points_per_s']:,.0f} points/s ({n_msgs:,} messages of {args.batch_points} points, "
          f"{args.sources:,} sources, {run['seconds']:.1f} s)", flush=True)
    return {"measured": True, "points_per_s": run["points_per_s"], "points_per_source": per_source,
            "messages": n_msgs, "run": run}


def run(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    from ..broker import EmbeddedBroker
    from ..runtime.card import load_card
    from ..worker_process import WorkerProcess

    workdir = Path(args.workdir)
    model = Path(args.model)
    card = load_card(model)
    res: dict[str, Any] = {
        "benchmark": mode, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": runs.machine(),
        "command": args.command,
        "settings": {"sources": args.sources, "duration_s": args.duration, "factor": args.factor,
                     "producer_tick_s": args.producer_tick,
                     "batch_points": args.batch_points, "model_dir": str(model), "model": f"{card.name}:{card.version}",
                     "window": card.window, "stride": card.stride, "channels": len(card.channels),
                     "sample_seconds": args.sample_seconds, "slice_seconds": args.slice_seconds,
                     "warmup_fraction": args.warmup, "worker_settings": args.worker_settings},
        "background_start": runs.background_load(),
    }
    with EmbeddedBroker() as broker:
        if args.max_points_per_s:
            res["max"] = {"measured": False, "points_per_s": args.max_points_per_s}
        else:
            res["max"] = measure_max(broker, model, card, args, workdir)
        rate = args.rate or args.factor * res["max"]["points_per_s"]
        cfg = runs.worker_config_for(broker, model, mode, **{**PRODUCTION_TIMINGS, **args.worker_settings})
        worker = WorkerProcess(cfg, workdir, name=mode).start()
        try:
            time.sleep(1.0)  # the group is joined at Ready; let the first fetches settle
            t0 = time.time() + 0.5
            fleet = Fleet(args.sources, list(card.channels), rate, args.batch_points, t0, cfg.partitions)
            res["offered"] = {"points_per_s": rate, "points_per_s_per_source": 1 / fleet.dt,
                              "messages_per_s": rate / args.batch_points,
                              "ratio_to_max": rate / res["max"]["points_per_s"]}
            print(f"{mode}: {args.sources:,} sources at {rate:,.0f} points/s ({1 / fleet.dt:,.2f} points/s each, "
                  f"{rate / args.batch_points:,.0f} messages/s) for {args.duration:g} s", flush=True)
            stats = ProducerStats(cfg.partitions)
            sampler = Sampler(worker, broker.pid, cfg.topic_input, stats, t0, args.sample_seconds, broker.bootstrap)
            sampler.start()
            asyncio.run(_produce_live(broker.bootstrap, cfg.topic_input, fleet, t0 + args.duration, stats,
                                      tick=args.producer_tick))
            t_end = time.time()
            expected = fleet.expected_windows(card.window, card.stride)
            print(f"{mode}: sent {stats.points:,} points in {stats.messages:,} messages "
                  f"({stats.points / (t_end - t0):,.0f} points/s); waiting for {expected:,} windows", flush=True)
            drain = wait_drained(sampler, expected, args.drain_timeout)
            sampler.halt.set()
            sampler.join()
            final = sampler.samples[-1] if sampler.samples else {}
        finally:
            worker.stop()
            res["worker_log"] = log_levels(worker.log_text())
        index = {k: i for i, k in enumerate(fleet.keys)}
        src, start, end, pub = asyncio.run(_read_windows(broker.bootstrap, cfg.topic_scores, index, expected,
                                                         timeout=max(120.0, args.drain_timeout), settle=2.0))
    samples = sorted(sampler.samples, key=lambda r: r["t"])
    for r in samples:
        r["phase"] = "live" if r["t"] <= args.duration else "drain"
    res["producer"] = {"seconds": t_end - t0, "messages": stats.messages, "points": stats.points,
                       "points_per_s": stats.points / (t_end - t0), "behind_max_s": stats.behind_max_s}
    res["messages"] = {"sent": stats.messages, "processed": final.get("messages_processed"),
                       "redelivered": final.get("messages_redelivered")}
    res["points"] = {"sent": stats.points, "ok": final.get("points_ok")}
    res["windows"], valid, k = account_windows(fleet, card.window, card.stride, src, start)
    # the message carrying a window's last point was due (and sent, unless the producer fell behind)
    # when its own last point was due: latency from then, and from the window's last point
    last = (k[valid] + card.window - 1) // args.batch_points * args.batch_points + args.batch_points - 1
    from_send, from_point = pub[valid] - fleet.ts(src[valid], last), pub[valid] - end[valid]
    res["drain"] = {"caught_up": drain is not None,
                    "seconds_after_live_phase": None if drain is None else round(drain, 2)}
    live_lag = [r["lag_committed"] for r in samples if r["phase"] == "live" and "lag_committed" in r]
    res["lag"] = {"max_committed": max(live_lag, default=None),
                  "final_committed": final.get("lag_committed"), "final_processed": final.get("lag_processed"),
                  "returned_to_zero": final.get("lag_committed") == 0 and final.get("lag_processed") == 0}
    res["latency"] = {name: {q: None if v is None else round(v, 4) for q, v in runs.percentiles(lat, (50, 99)).items()}
                      for name, lat in (("from_send", from_send), ("from_point", from_point))}
    res["latency"]["slices"] = latency_slices(t0, pub[valid], from_send, args.slice_seconds)
    res["samples"] = samples
    if mode == "soak":
        res["rss"] = rss_growth(samples, args.duration,
                                warmup_seconds(args.warmup, args.duration, args.batch_points * fleet.dt))
    else:
        res["rss"] = rss_bounded(samples, args.duration,
                                 warmup_seconds(args.warmup, args.duration, args.batch_points * fleet.dt))
    res["background_end"] = runs.background_load()
    return res


def log_levels(text: str, examples: int = 3) -> dict[str, Any]:
    """Lines per level in the worker's log (Faust's ``[date] [pid] [LEVEL] message`` lines) and
    the first distinct WARNING/ERROR messages: a long run that logs errors is not a clean run,
    whatever its figures."""
    counts: dict[str, int] = {}
    seen: list[str] = []
    for m in re.finditer(r"^\[[^\]]*\] \[\d+\] \[([A-Z]+)\] (.*)$", text, re.MULTILINE):
        level, msg = m.groups()
        counts[level] = counts.get(level, 0) + 1
        if level in ("WARNING", "ERROR", "CRITICAL"):
            head = re.sub(r"\d+(\.\d+)?", "N", msg)[:160]
            if head not in seen and len(seen) < examples:
                seen.append(head)
    return {"lines_by_level": counts, "first_warnings_and_errors": seen}


# ----------------------------------------------------------------------------- reports
def _mib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.1f}"


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:,.0f}"


def markdown(res: dict[str, Any], png: str | None) -> str:
    mode, s, m = res["benchmark"], res["settings"], res["machine"]
    off, prod, win, rss, lag = res["offered"], res["producer"], res["windows"], res["rss"], res["lag"]
    mx = res["max"]
    how = (f"measured at the start of this run: a fresh worker drained {mx['messages']:,} pre-loaded messages "
           f"({mx['points_per_source']} points of each source)" if mx["measured"] else "given with --max-points-per-s")
    lines = [f"# {MODES[mode]['title']}", "",
             f"CPU: {m['cpu_model']}, {m['cpus']} cores ({m['platform']}), {res['created']}.", "",
             "Produced by:", "", "```", res["command"], "```", "",
             *([f"Verdicts recomputed from the recorded samples on {', '.join(res['verdicts_recomputed'])} "
                f"(`--again`), with the definitions of this version of the runner.", ""]
               if res.get("verdicts_recomputed") else []),
             (f"The real worker (one process) on the embedded broker (Tansu, memory storage), same machine; model "
              f"`{s['model']}` (W = {s['window']}, stride {s['stride']}, {s['channels']} channel(s)); {s['sources']:,} "
              f"sources sending batch messages of {s['batch_points']} points on a fixed schedule, points stamped with "
              f"the wall clock. Maximum: {mx['points_per_s']:,.0f} points/s ({how}). Offered: {off['points_per_s']:,.0f} "
              f"points/s ({off['ratio_to_max']:.2f} x the maximum; {off['points_per_s_per_source']:,.2f} points/s a "
              f"source, {off['messages_per_s']:,.0f} messages/s) for {s['duration_s']:g} s, then nothing, sent every "
              f"{s.get('producer_tick_s', 0.01):g} s as one record batch per partition. The producer "
              f"sent {prod['points']:,} points ({prod['points_per_s']:,.0f} points/s achieved; at worst "
              f"{prod['behind_max_s']:.2f} s behind its schedule). Load average at start "
              f"{res['background_start']['loadavg']}, at end {res['background_end']['loadavg']}; other benchmarks "
              f"running: {', '.join(res['background_start']['other_benchmarks']) or 'none'}."), "",
             "## Verdict", ""]
    if mode == "soak":
        if "growth" in rss:
            lines.append(f"- Worker RSS growth after the warm-up (first {rss['warmup_seconds']:.0f} s): "
                         f"{rss['growth']:+.1%} ({_mib(rss['rss_after_warmup_bytes'])} -> {_mib(rss['rss_at_end_bytes'])} "
                         f"MiB, medians of the tenth after the warm-up and the last tenth); target under "
                         f"{rss['target']:.0%}: {target_mark(rss['target_met'])}. Linear fit after the warm-up: "
                         f"{rss.get('slope_bytes_per_hour', 0) / 2**20:+,.1f} MiB/hour; peak "
                         f"{_mib(rss.get('peak_after_warmup_bytes'))} MiB.")
        else:
            lines.append("- Worker RSS growth: not enough samples after the warm-up.")
    else:
        if "bounded" in rss:
            lines.append(f"- Memory bounded: {'yes' if rss['bounded'] else '**no**'}: the backlog accounts for "
                         f"{rss['bytes_per_backlog_message']:,.0f} bytes of worker RSS a message (slope of RSS over the "
                         f"unprocessed backlog after the first {rss['warmup_seconds']:.0f} s), "
                         f"{_mib(rss['rss_for_max_backlog_bytes'])} MiB at the largest backlog "
                         f"({rss['max_backlog_messages']:,} messages), {rss['backlog_share']:.1%} of the median RSS "
                         f"{_mib(rss['rss_median_bytes'])} MiB (bound {rss['target']:.0%}). Peak RSS "
                         f"{_mib(rss['peak_rss_bytes'])} MiB; from the middle of the overload to the end of the drain "
                         f"{_mib(rss['peak_rss_after_middle_bytes'])} MiB against {_mib(rss['rss_before_middle_bytes'])} "
                         f"MiB over the fifth before the middle ({rss.get('growth', float('nan')):+.1%}, which "
                         f"includes the worker's ramp-up).")
        dr = res["drain"]
        lines.append(f"- Drained: {'yes' if dr['caught_up'] else '**no**'}"
                     + (f", {dr['seconds_after_live_phase']:.1f} s after the producer stopped." if dr["caught_up"] else "."))
    lines += [f"- Every window scored: {'yes' if win['every_window_scored'] else '**no**'}: {win['expected']:,} "
              f"expected from the points sent, {win['scored_unique']:,} scored, {win['missing']:,} missing, "
              f"{win['duplicates']:,} duplicates (at-least-once redelivery), {win['unexpected']:,} unexpected records. "
              f"Points accepted by the worker: {res['points']['ok']:,} of {res['points']['sent']:,} sent; messages "
              f"redelivered: {res['messages']['redelivered']}.",
              f"- Consumer lag (messages acknowledged minus offsets committed): at most {lag['max_committed']:,} during "
              f"the live phase; at the end {lag['final_committed']} (and {lag['final_processed']} sent but not "
              f"processed): {'back to 0' if lag['returned_to_zero'] else '**not back to 0**'}.",
              f"- Latency over the whole run, from the message that completed the window (the time it was due) to "
              f"the publication of the score (its Kafka timestamp): p50 {_ms(res['latency']['from_send']['p50'])} ms, "
              f"p99 {_ms(res['latency']['from_send']['p99'])} ms; from the window's last point, which adds the time the "
              f"producer held the point to fill its message: p50 {_ms(res['latency']['from_point']['p50'])} ms, p99 "
              f"{_ms(res['latency']['from_point']['p99'])} ms."]
    if "worker_log" in res:
        lv = res["worker_log"]["lines_by_level"]
        bad = lv.get("WARNING", 0) + lv.get("ERROR", 0) + lv.get("CRITICAL", 0)
        lines.append(f"- Worker log: {bad:,} warning or error lines ({', '.join(f'{k} {v:,}' for k, v in sorted(lv.items())) or 'none'})"
                     + (": " + "; ".join(f"`{e}`" for e in res["worker_log"]["first_warnings_and_errors"]) if bad else "")
                     + ".")
    lines.append("")
    if png:
        lines += [f"![{mode}]({png})", ""]
    lines += ["## Over time", "", "Latency from the completing message by slice of publication time:", "",
              "| slice (s) | windows | p50 (ms) | p99 (ms) | max (ms) |", "|---|---:|---:|---:|---:|"]
    for sl in res["latency"]["slices"]:
        lines.append(f"| {sl['t0']:g}-{sl['t1']:g} | {sl['windows']:,} | {_ms(sl['p50'])} | {_ms(sl['p99'])} | "
                     f"{_ms(sl['max'])} |")
    samples = res["samples"]
    step = max(1, len(samples) // 30)
    shown = samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else [])
    lines += ["", f"Samples (every {step} of {len(samples)}; all in the JSON):", "",
              "| t (s) | phase | worker RSS (MiB) | broker RSS (MiB) | worker CPU (s) | messages sent | lag committed | "
              "lag processed | windows scored | broker tail fetch (ms) | load 1m |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in shown:
        lines.append(f"| {r['t']:,.0f} | {r['phase']} | {_mib(r.get('worker_rss_bytes'))} | "
                     f"{_mib(r.get('broker_rss_bytes'))} | {r['worker_cpu_seconds']:,.0f} | {r['messages_sent']:,} | "
                     f"{r.get('lag_committed', '-')} | {r.get('lag_processed', '-')} | {r.get('windows_scored', '-')} | "
                     f"{r.get('broker_tail_fetch_ms', '-')} | {r['loadavg_1m']} |")
    lines += ["", "The broker keeps every message in memory (Tansu's memory storage, no retention), so its RSS grows "
              "with everything sent, scored and persisted; the worker's must not."]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [r for r in res["samples"] if "lag_committed" in r]
    t = [r["t"] for r in samples]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(t, [r["worker_rss_bytes"] / 2**20 for r in samples], ".-", ms=3)
    axes[0].set(xlabel="s", ylabel="worker RSS (MiB)", title="worker memory")
    sl = [x for x in res["latency"]["slices"] if x["p99"] is not None]
    mid = [(x["t0"] + x["t1"]) / 2 for x in sl]
    axes[1].plot(mid, [x["p50"] * 1e3 for x in sl], ".-", label="p50")
    axes[1].plot(mid, [x["p99"] * 1e3 for x in sl], ".-", label="p99")
    probe = [(r["t"], r["broker_tail_fetch_ms"]) for r in res["samples"] if r.get("broker_tail_fetch_ms")]
    if probe:
        axes[1].plot(*zip(*probe), ".-", ms=3, color="grey", label="broker: one tail fetch")
    axes[1].set(xlabel="s (publication)", ylabel="ms", title="end-to-end latency", yscale="log")
    axes[1].legend()
    axes[2].plot(t, [r["lag_committed"] for r in samples], ".-", ms=3, label="acked - committed")
    axes[2].plot(t, [r["lag_processed"] for r in samples], ".-", ms=3, label="acked - processed")
    axes[2].set(xlabel="s", ylabel="messages", title="consumer lag")
    axes[2].legend()
    for ax in axes:
        ax.axvline(res["settings"]["duration_s"], color="grey", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    fig.suptitle(f"bench {res['benchmark']}: {res['settings']['sources']:,} sources, "
                 f"{res['offered']['points_per_s']:,.0f} points/s offered ({res['machine']['cpu_model']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
def _worker_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for the worker config, validated as the ``STREAM_DETECTOR_KEY`` variable would be."""
    from ..runtime.config import env_name, load_config

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    try:
        return key, getattr(load_config(env={env_name(key): value}), key)
    except Exception as e:  # ConfigError names the key and what it expects
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(p: argparse.ArgumentParser, mode: str) -> None:
    d = MODES[mode]
    p.add_argument("--sources", type=int, default=DEFAULT_SOURCES)
    p.add_argument("--duration", type=float, default=d["duration"], help=f"seconds of the live phase (default {d['duration']:g})")
    p.add_argument("--factor", type=float, default=d["factor"], help=f"offered load / maximum (default {d['factor']:g})")
    p.add_argument("--rate", type=float, default=None, help="offered points/s (instead of --factor x the maximum)")
    p.add_argument("--max-points-per-s", type=float, default=None,
                   help="the maximum, if known (skips the measurement; recorded as given)")
    p.add_argument("--max-points-per-source", type=int, default=384,
                   help="points of each source pre-loaded for the measurement of the maximum (default 384)")
    p.add_argument("--max-timeout", type=float, default=900.0)
    p.add_argument("--batch-points", type=int, default=None, help="points per message (default the model's window)")
    p.add_argument("--model", default=str(workload.BUNDLED_SEQUENCE), help="model directory (default the bundled sequence model)")
    p.add_argument("--again", default=None, metavar="JSON",
                   help="recompute the verdicts of an earlier run from the samples in its JSON and rewrite its "
                        "reports (no new run)")
    p.add_argument("--producer-tick", type=float, default=0.01,
                   help="seconds between the producer's sends: each send is one record batch per partition with "
                        "every message due (default 0.01: small batches, as from many senders; a gateway that "
                        "forwards a fleet's messages every 0.2 s writes 20x fewer, larger batches)")
    p.add_argument("--sample-seconds", type=float, default=None, help="default: duration / 120, at least 1")
    p.add_argument("--slice-seconds", type=float, default=None, help="latency slices (default: duration / 40, at least 5)")
    p.add_argument("--warmup", type=float, default=0.15, help="soak: fraction of the live phase that is warm-up (at least 2 message periods; default 0.15)")
    p.add_argument("--drain-timeout", type=float, default=None,
                   help="seconds to wait for the worker to catch up after the live phase (default 300, overload 10 x duration)")
    p.add_argument("--set", dest="worker_settings", action="append", type=_worker_setting, default=[],
                   metavar="KEY=VALUE", help="worker config for every worker of the run (repeatable)")
    p.add_argument("--tag", default="", help=f"suffix of the file names ({mode}TAG.json, .md, .png)")
    p.add_argument("--workdir", default=None, help="worker configs and logs (default: a temporary folder)")


def verdicts_again(path: str, mode: str) -> dict[str, Any]:
    """A run's JSON with its verdicts computed again from the samples it holds (after a change to
    a verdict's definition: the run itself is not repeated, and the JSON says so)."""
    res = json.loads(Path(path).read_text())
    if res.get("benchmark") != mode:
        raise ValueError(f"a {res.get('benchmark')!r} run, not {mode!r}")
    s = res["settings"]
    w = warmup_seconds(s["warmup_fraction"], s["duration_s"], s["batch_points"] / res["offered"]["points_per_s_per_source"])
    res["rss"] = (rss_growth if mode == "soak" else rss_bounded)(res["samples"], s["duration_s"], w)
    res.setdefault("verdicts_recomputed", []).append(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return res


def run_from_args(args: argparse.Namespace, mode: str) -> Report | int:
    """Check the arguments (an ``error:`` line and status 2 for a bad one), run (or recompute
    ``--again``), plot into ``--out``, report."""
    args.worker_settings = dict(args.worker_settings)
    from ..runtime.card import load_card
    from ..errors import UserError

    try:
        card = load_card(Path(args.model))
    except (UserError, OSError, ValueError) as e:
        return error(f"--model {args.model}: {e}")
    if args.batch_points is None:
        args.batch_points = card.window
    if args.sources < 1 or args.duration <= 0 or args.batch_points < 1 or not 0 <= args.warmup < 0.9:
        return error("--sources, --duration and --batch-points must be positive, --warmup in [0, 0.9)")
    if args.sample_seconds is None:
        args.sample_seconds = max(1.0, args.duration / 120)
    if args.slice_seconds is None:
        args.slice_seconds = max(5.0, args.duration / 40)
    if args.drain_timeout is None:
        args.drain_timeout = max(300.0, 10 * args.duration) if mode == "overload" else 300.0
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"sd-{mode}-")
        args.workdir = tmp.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        res = verdicts_again(args.again, mode) if args.again else run(args, mode)
    except (OSError, ValueError, KeyError) as e:  # a bad --again file
        return error(f"--again {args.again}: {e!r}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    name = f"{mode}{args.tag}"
    png = out / f"{name}.png"
    plot(res, png)
    w, r = res["windows"], res["rss"]
    verdict = (f"RSS growth after warm-up {r['growth']:+.1%} (target < {r['target']:.0%}: "
               f"{'met' if r['target_met'] else 'missed'})" if mode == "soak" and "growth" in r else
               f"RSS bounded: {r.get('bounded')} (peak {_mib(r.get('peak_rss_bytes'))} MiB), "
               f"drained in {res['drain']['seconds_after_live_phase']} s" if mode == "overload" else "")
    return Report(name, res, lambda r: markdown(r, png.name),
                  f"{mode}: {w['scored_unique']:,} of {w['expected']:,} windows scored ({w['missing']:,} missing, "
                  f"{w['duplicates']:,} duplicates); {verdict}; plot {png}")


class SoakBenchmark(Benchmark):
    """``soak`` and ``overload``: one runner, two modes (defaults in :data:`MODES`)."""

    description = __doc__.splitlines()[0]

    def __init__(self, mode: str):
        self.name = mode
        self.mode = mode

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser, self.mode)

    def parse(self, argv=None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = super().parse(argv)
        args.command = shlex.join(["stream-detector", "bench", self.mode, *argv])  # the report's Reproduce line
        return args

    def run(self, args: argparse.Namespace) -> Report | int:
        return run_from_args(args, self.mode)


def build_parser(mode: str = "soak") -> argparse.ArgumentParser:
    return SoakBenchmark(mode).build_parser()


def main(argv: list[str] | None = None, mode: str = "soak") -> int:
    return SoakBenchmark(mode).main(argv)


if __name__ == "__main__":
    sys.exit(main())
