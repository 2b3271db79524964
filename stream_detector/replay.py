"""Replay producer: send recorded telemetry to the input topic as a live fleet would.

Several files can be replayed at once, one source each, interleaved point by point (or
batch by batch), keyed by source id.  ``rate`` is points per second per source; ``None``
sends as fast as the broker takes them.  Files without timestamps (``.npy``), or with
``retime``, get wall-clock timestamps at send time (strictly increasing), so the worker's
end-to-end latency metric means what it says.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from .runtime.codec import encode_points
from .data import Series


@dataclass
class ReplaySource:
    source: str
    series: Series
    channels: list[str]  # names to send (the series' own by default)


def _stamp(last: float, n: int) -> np.ndarray:
    """``n`` strictly increasing wall-clock timestamps after ``last``, 1 microsecond apart."""
    base = max(time.time(), last + 1e-6 * n)
    return base - 1e-6 * np.arange(n - 1, -1, -1)


async def replay(sources: list[ReplaySource], bootstrap: str | list[str], topic: str, rate: float | None = None,
                 batch: int = 1, fmt: str = "msgpack", retime: bool = False, limit: int | None = None,
                 security: dict | None = None) -> dict:
    """Send every point of every source; returns counts and the achieved rate."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                                **(security or {}))
    await producer.start()
    sent_points = sent_messages = 0
    started = time.monotonic()
    last_ts = {s.source: 0.0 for s in sources}
    lengths = {s.source: len(s.series.values) if limit is None else min(limit, len(s.series.values)) for s in sources}
    try:
        pos = 0
        while any(pos < n for n in lengths.values()):
            for s in sources:
                n = lengths[s.source]
                if pos >= n:
                    continue
                end = min(pos + batch, n)
                vals = s.series.values[pos:end]
                if s.series.timestamps is not None and not retime:
                    ts = s.series.timestamps[pos:end]
                else:
                    ts = _stamp(last_ts[s.source], end - pos)
                last_ts[s.source] = float(ts[-1])
                if batch == 1:
                    payload = encode_points(float(ts[0]), dict(zip(s.channels, map(float, vals[0]))), fmt)
                else:
                    payload = encode_points(ts, {c: vals[:, i] for i, c in enumerate(s.channels)}, fmt)
                await producer.send(topic, payload, key=s.source.encode())  # buffered; flushed below
                sent_points += end - pos
                sent_messages += 1
            pos += batch
            if rate:
                ahead = pos / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    elapsed = time.monotonic() - started
    return {"points": sent_points, "messages": sent_messages, "seconds": round(elapsed, 3),
            "points_per_second": round(sent_points / elapsed, 1) if elapsed > 0 else None}
