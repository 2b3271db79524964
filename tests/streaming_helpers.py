"""Helpers for the tests that run the real worker against the embedded broker."""

from __future__ import annotations

import asyncio
import csv
import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stream_detector.broker import free_port
from stream_detector.runtime.codec import encode_points
from stream_detector.runtime.publishing import decode_record
from stream_detector.runtime.config import WorkerConfig
from stream_detector.runtime.worker import ensure_topics

T0 = 1.7e9
DT = 0.1


def worker_config(broker, model: Path, name: str, **overrides) -> WorkerConfig:
    """A config with topics and consumer group of its own, and fast group membership timing."""
    settings = dict(broker=broker.url, model_dir=str(model), app_id=f"sd-{name}", topic_input=f"{name}-in",
                    topic_scores=f"{name}-scores", topic_alerts=f"{name}-alerts", topic_dead_letters=f"{name}-dead",
                    partitions=4, metrics_port=free_port(), broker_session_timeout_seconds=6,
                    broker_heartbeat_interval_seconds=1, broker_rebalance_timeout_seconds=3,
                    batch_max_latency_ms=20)
    settings.update(overrides)
    cfg = WorkerConfig(**settings)
    asyncio.run(ensure_topics(cfg))
    return cfg


def write_csv(path: Path, values: np.ndarray, channels=("a", "b", "c"), t0: float = T0) -> np.ndarray:
    ts = t0 + DT * np.arange(len(values))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", *channels])
        for t, row in zip(ts, values):
            w.writerow([repr(float(t)), *(repr(float(v)) for v in row)])
    return ts


def point_messages(source: str, values: np.ndarray, start: int = 0, batch: int = 1,
                   channels=("a", "b", "c")) -> list[tuple[bytes, bytes]]:
    """Messages for points ``start..`` of ``values`` with timestamps ``T0 + DT * index``."""
    out = []
    for i in range(0, len(values), batch):
        idx = np.arange(start + i, start + min(i + batch, len(values)))
        ts = T0 + DT * idx
        chunk = values[i:i + batch]
        if batch == 1:
            payload = encode_points(float(ts[0]), dict(zip(channels, map(float, chunk[0]))))
        else:
            payload = encode_points(ts, {c: chunk[:, j] for j, c in enumerate(channels)})
        out.append((source.encode(), payload))
    return out


async def _send(bootstrap: str, topic: str, messages, pace: float = 0.0) -> list[int]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    offsets = []
    try:
        for key, value in messages:
            meta = await producer.send_and_wait(topic, value, key=key)
            offsets.append(meta.offset)
            if pace:
                await asyncio.sleep(pace)
    finally:
        await producer.stop()
    return offsets


def send(bootstrap: str, topic: str, messages, pace: float = 0.0) -> list[int]:
    """Produce ``(key, value)`` messages in order; returns their offsets."""
    return asyncio.run(_send(bootstrap, topic, messages, pace))


async def _read(bootstrap: str, topic: str, expected: int, timeout: float, settle: float,
                decode=lambda m: decode_record(m.value)) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[dict] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                records += [decode(m) for m in msgs]
            if len(records) >= expected:
                settle_until = settle_until or time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
    finally:
        await consumer.stop()
    return records


def read_records(bootstrap: str, topic: str, expected: int, timeout: float = 60.0, settle: float = 2.0) -> list[dict]:
    """Every record on ``topic``: waits for ``expected`` of them, then ``settle`` s more for extras."""
    return asyncio.run(_read(bootstrap, topic, expected, timeout, settle))


def expected_starts(n_points: int, window: int, stride: int, offset: int = 0) -> list[float]:
    return [T0 + DT * (offset + s) for s in range(0, n_points - window + 1, stride)]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate()`` until it returns something truthy, and return that; fail with ``what``
    (and the last value seen) once ``timeout`` seconds have passed, rather than let the test go
    on with a system that is not in the state it needs."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent); without labels, the
    sum over every label set of ``name``."""
    if not labels:
        return sum(float(v) for v in re.findall(re.escape(name) + r"(?:\{[^}]*\})? ([0-9.eE+-]+)$", text, re.M))
    lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(re.escape(name) + r"\{" + re.escape(lab) + r"\} ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def read_raw(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of every message on ``topic`` (for input topics, which hold no records)."""
    return asyncio.run(_read(bootstrap, topic, expected, timeout, 1.0, decode=lambda m: (m.key, m.value)))


@contextmanager
def killed_mid_stream(broker, cfg: WorkerConfig, workdir: Path, messages, windows_before_kill: int,
                      pace: float = 0.01):
    """The real worker, SIGKILLed while a paced sender is still producing ``messages`` (once it
    has scored ``windows_before_kill`` windows: no shutdown, no final commit), and a fresh
    worker started in its place; yields the restarted worker after the sender has finished."""
    import threading

    from stream_detector.worker_process import WorkerProcess

    done = threading.Event()

    def paced() -> None:
        try:
            send(broker.bootstrap, cfg.topic_input, messages, pace=pace)
        finally:
            done.set()

    worker = WorkerProcess(cfg, workdir).start()
    sender = threading.Thread(target=paced)
    sender.start()
    try:
        deadline = time.monotonic() + 30
        while metric(worker.scrape(), "stream_detector_windows_scored_total") < windows_before_kill \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not done.is_set(), "the stream ended before the kill; slow the sender down"
        worker.kill()
        worker = WorkerProcess(cfg, workdir, name="restarted").start()
        sender.join()
        yield worker
    finally:
        sender.join()
        worker.stop()
