"""``bench throughput``'s runs against Kafka: topics and worker configs, pre-loading a topic,
timing the real worker (:class:`~stream_detector.bench.worker_process.WorkerProcess`), the
pass-through Faust agent and a raw aiokafka drain, the live latency phase, and the worker's
process figures (``/metrics``, RSS, CPU seconds, background load).

Everything here starts or reads a process or a broker; ``bench soak`` drives its worker with
the same functions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from ..runtime.publishing import score_windows
from . import profile
from .throughput_workload import preload_messages


# The only series a timed run polls (20 then 4 times a second): a full scrape costs the worker
# CPU the measurement would count (docs/benchmarks/history.md).
POLLED = ("stream_detector_points_total", "stream_detector_windows_scored_total")
REF_REPEAT = 2  # the batch-message references read this many times the detector's messages


async def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                                max_request_size=8 << 20)
    await producer.start()
    try:
        pending = []
        for key, value in messages:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    asyncio.run(_produce(bootstrap, topic, messages))


# ----------------------------------------------------------------------------- helpers
def metric_value(text: str, name: str, labels: str = "") -> float:
    """One sample of ``name`` with exactly ``labels``; without labels, the sum over every label set
    (``stream_detector_windows_scored_total`` is per model)."""
    import re

    if labels:
        m = re.search(re.escape(name) + r"\{" + re.escape(labels) + r"\} ([0-9.eE+-]+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0
    return sum(float(v) for v in re.findall(re.escape(name) + r"(?:\{[^}]*\})? ([0-9.eE+-]+)$", text, re.MULTILINE))


def process_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (robust to other load on the machine)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def background_load() -> dict[str, Any]:
    """Load average and the other benchmarks running beside this one (the machine has two cores)."""
    mine = {os.getpid(), os.getppid()}
    found = subprocess.run(["pgrep", "-af", r"stream.detector.* bench |stream_detector\.bench\.(paper|nab|telemanom)"],
                           check=False, capture_output=True, text=True).stdout.splitlines()
    others = sorted({" ".join(line.split()[1:])[:120] for line in found if int(line.split()[0]) not in mine
                     and "throughput" not in line})
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "other_benchmarks": others}


def machine() -> dict[str, Any]:
    from .machine import cpu_model

    return {"cpus": os.cpu_count(), "cores": os.cpu_count(), "cpu_model": cpu_model(),
            "platform": platform.platform(), "python": platform.python_version()}


def percentiles(values: list[float] | np.ndarray, qs=(50, 95, 99)) -> dict[str, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


async def _read_scores(bootstrap: str, topic: str, expected: int, timeout: float) -> list[tuple[float, dict]]:
    """``(publication time s, window record)`` of every scored window on ``topic`` (waits for
    ``expected``), from per-window or batched score records alike."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    out: list[tuple[float, dict]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=50000)
            for msgs in batch.values():
                out += [(m.timestamp / 1000.0, w) for m in msgs
                        for w in score_windows(msgpack.unpackb(m.value, raw=False))]
    finally:
        await consumer.stop()
    return out


def read_scores(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[tuple[float, dict]]:
    return asyncio.run(_read_scores(bootstrap, topic, expected, timeout))


def worker_config_for(broker, model: Path, name: str, **overrides):
    from ..broker import free_port
    from ..runtime.config import WorkerConfig
    from ..runtime.worker import ensure_topics

    settings = dict(broker=broker.url, model_dir=str(model), app_id=f"bench-{name}", topic_input=f"{name}-in",
                    topic_scores=f"{name}-scores", topic_alerts=f"{name}-alerts", topic_dead_letters=f"{name}-dead",
                    partitions=4, metrics_port=free_port(), broker_session_timeout_seconds=6,
                    broker_heartbeat_interval_seconds=1, broker_rebalance_timeout_seconds=3)
    settings.update(overrides)
    cfg = WorkerConfig(**settings)
    asyncio.run(ensure_topics(cfg))
    return cfg


# ----------------------------------------------------------------------------- measurements
def run_detector(broker, model: Path, input_topic: str, tag: str, total_points: int, n_windows: int,
                 workdir: Path, timeout: float = 600.0, published: int | None = None, end_at_settle: bool = False,
                 profile_to: Path | None = None, **overrides) -> dict[str, Any]:
    """The real worker drains a pre-loaded topic; points/s from first point processed to last score.

    ``n_windows`` is what the worker *scores* (``stream_detector_windows_scored_total``, the
    settle signal); ``published`` the score records it publishes (default ``n_windows``; fewer
    with an adaptive threshold, whose last undecided windows stay unpublished).  With
    ``end_at_settle`` the run ends at the later of the last publication and the poll that saw
    every window scored (midpoint of the polls around it), so that rows whose last windows are
    never published are timed to the same end as the static row."""
    from ..worker_process import WorkerProcess

    published = n_windows if published is None else published

    cfg = worker_config_for(broker, model, tag, topic_input=input_topic, **overrides)
    before = background_load()
    worker = WorkerProcess(cfg, workdir, name=tag)
    worker.start()
    spy = None
    if profile_to is not None:
        spy = profile.record(worker.proc.pid, profile_to)
        if spy is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy; `make install` brings it)")
    cpu0 = cpu_seconds(worker.proc.pid)
    t_zero = None
    t_first = None
    last_poll = time.time()
    done = False
    deadline = time.monotonic() + timeout
    rss = 0
    t_settled = None
    try:
        while time.monotonic() < deadline:
            now = time.time()
            text = worker.scrape(POLLED)
            points = metric_value(text, "stream_detector_points_total", 'status="ok"')
            windows = metric_value(text, "stream_detector_windows_scored_total")
            if points == 0:
                t_zero = now
            elif t_first is None:
                t_first = now
            if points >= total_points and windows >= n_windows:
                done = True
                t_settled = (last_poll + now) / 2
                break
            last_poll = now
            # 20 polls a second until the first point (the start is the midpoint of the polls
            # around it), then 4: the end is the last record's Kafka timestamp, and each poll
            # costs the worker an HTTP request
            time.sleep(0.05 if t_first is None else 0.25)
        rss = process_rss_bytes(worker.proc.pid)
        cpu = cpu_seconds(worker.proc.pid) - cpu0
        text = worker.scrape()
    finally:
        worker.kill()  # a fresh consumer group per run: no clean shutdown needed
        if spy is not None:
            profile.finish(spy)
    if not done:
        raise RuntimeError(f"{tag}: the worker did not finish within {timeout:.0f} s:\n{worker.tail()}")
    scores = read_scores(broker.bootstrap, cfg.topic_scores, published)
    pub = [t for t, _ in scores]
    start = (t_zero + t_first) / 2 if t_zero is not None and t_first is not None else (t_first or last_poll)
    end = max(pub) if pub else time.time()
    if end_at_settle and t_settled is not None:
        end = max(end, t_settled)
    seconds = max(end - start, 0.05)  # never finer than the 50 ms polling that found the start
    scored = metric_value(text, "stream_detector_windows_scored_total")
    return {"points": total_points, "windows": len(scores), "expected_windows": published,
            "windows_scored": scored, "expected_windows_scored": n_windows,
            "models_scoring": len(re.findall(r'^stream_detector_windows_scored_total\{model="[^"]*"\} [1-9]', text,
                                             re.MULTILINE)),
            "seconds": seconds, "points_per_s": total_points / seconds, "windows_per_s": scored / seconds,
            "published_per_s": len(scores) / seconds,
            "inference_calls": metric_value(text, "stream_detector_inference_batch_windows_count"),
            "worker_cpu_seconds": cpu, "worker_cpu_us_per_point": 1e6 * cpu / total_points,
            "rss_bytes": rss, "background_before": before, "background_after": background_load()}


def run_passthrough(broker_url: str, topic: str, messages: int, tag: str, stock: bool, workdir: Path,
                    batch_max_messages: int, batch_max_latency_ms: float, timeout: float = 300.0) -> dict[str, Any]:
    """A Faust agent that does nothing, in a child process, on the same topic and settings."""
    out = workdir / f"{tag}.json"
    out.unlink(missing_ok=True)
    before = background_load()
    with open(workdir / f"{tag}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stream_detector.bench.throughput", "_passthrough",
                                 "--broker", broker_url, "--topic", topic, "--messages", str(messages), "--app-id",
                                 f"bench-{tag}", "--out", str(out), "--batch-max-messages", str(batch_max_messages),
                                 "--batch-max-latency-ms", str(batch_max_latency_ms)] + (["--stock"] if stock else []),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not out.exists():
        raise RuntimeError(f"pass-through agent {tag} gave no result (see {workdir / (tag + '.log')})")
    res = json.loads(out.read_text())
    res.update(background_before=before, background_after=background_load())
    return res


def _passthrough_main(argv: list[str]) -> int:
    """Child process: a pass-through Faust agent; writes messages/s to ``--out`` and exits."""
    p = argparse.ArgumentParser(prog="throughput _passthrough")
    p.add_argument("--broker", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--app-id", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stock", action="store_true", help="Faust's own consumer instead of the worker's")
    p.add_argument("--batch-max-messages", type=int, default=1000)
    p.add_argument("--batch-max-latency-ms", type=float, default=20.0)
    a = p.parse_args(argv)
    import faust

    from ..runtime.app import DetectorApp, faust_settings
    from ..runtime.config import WorkerConfig

    cfg = WorkerConfig(broker=a.broker, app_id=a.app_id, topic_input=a.topic, broker_session_timeout_seconds=6,
                       broker_heartbeat_interval_seconds=1, broker_rebalance_timeout_seconds=3)
    app = (faust.App if a.stock else DetectorApp)(a.app_id, **faust_settings(cfg))
    topic = app.topic(a.topic, key_serializer="raw", value_serializer="raw", partitions=cfg.partitions)
    state = {"n": 0, "t0": None}

    @app.agent(topic, name="passthrough")
    async def passthrough(stream):
        async for events in stream.take_events(a.batch_max_messages, within=a.batch_max_latency_ms / 1000.0):
            now = time.time()
            if state["t0"] is None:
                state["t0"], state["cpu0"] = now, time.process_time()  # the process's CPU, every thread
            state["n"] += len(events)
            if state["n"] >= a.messages:
                seconds = max(now - state["t0"], 1e-6)
                cpu = time.process_time() - state["cpu0"]
                Path(a.out).write_text(json.dumps({"messages": state["n"], "seconds": seconds,
                                                   "messages_per_s": state["n"] / seconds,
                                                   "cpu_us_per_message": 1e6 * cpu / state["n"],
                                                   "consumer": "faust stock" if a.stock else "BatchDrainConsumer"}))
                os._exit(0)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
    return 0


async def _drain_aiokafka(bootstrap: str, topic: str, messages: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    got, t0 = 0, None
    try:
        while got < messages:
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            n = sum(len(v) for v in batch.values())
            if n and t0 is None:
                t0 = time.time()
            got += n
        seconds = max(time.time() - t0, 1e-6)
    finally:
        await consumer.stop()
    return {"messages": got, "seconds": seconds, "messages_per_s": got / seconds}


def run_aiokafka(bootstrap: str, topic: str, messages: int) -> dict[str, Any]:
    before = background_load()
    res = asyncio.run(_drain_aiokafka(bootstrap, topic, messages))
    res.update(background_before=before, background_after=background_load())
    return res


# ----------------------------------------------------------------------------- latency
async def _live(bootstrap: str, topic: str, channels: list[str], sources: int, points_per_s: float,
                batch: int, seconds: float) -> tuple[int, int]:
    """Send ``points_per_s`` in total, spread over ``sources``, stamped with the wall clock;
    returns the points sent and the points skipped because the producer fell behind."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, max_batch_size=1 << 20)
    await producer.start()
    rng = np.random.default_rng(7)
    per_source = points_per_s / sources  # Hz
    dt = 1.0 / per_source
    keys = [f"live-{i:05d}".encode() for i in range(sources)]
    sent_points, skipped = 0, 0
    max_burst = max(batch, int(np.ceil(0.1 * per_source / batch)) * batch)
    packb = msgpack.packb
    try:
        start = time.time()
        due_sent = np.zeros(sources, dtype=np.int64)
        phase = rng.uniform(0, dt, sources)
        pending = []
        while True:
            now = time.time()
            if now - start >= seconds:
                break
            due = np.floor((now - start - phase) / dt).astype(np.int64) + 1
            # A producer that falls behind the offered rate (one Python process on a shared
            # 2-core machine) skips what is more than 0.1 s overdue instead of queueing without
            # bound: the achieved rate is reported, and timestamps stay those of production.
            late = due - due_sent - max_burst
            if (late > 0).any():
                skipped += int(late[late > 0].sum())
                due_sent = np.maximum(due_sent, due - max_burst)
            ready = np.flatnonzero(due - due_sent >= batch)
            for s in ready:
                n = int(due[s] - due_sent[s]) // batch * batch
                ts = start + phase[s] + dt * np.arange(due_sent[s], due_sent[s] + n)
                ts = np.minimum(ts, now)
                for i in range(0, n, batch):
                    chunk = ts[i:i + batch]
                    vals = rng.normal(0, 0.3, (len(chunk), len(channels)))
                    if batch == 1:
                        payload = packb({"ts": float(chunk[0]), "values": dict(zip(channels, vals[0].tolist()))})
                    else:
                        payload = packb({"ts": chunk.tolist(), "values": dict(zip(channels, vals.T.tolist()))})
                    pending.append(await producer.send(topic, payload, key=keys[s]))
                due_sent[s] += n
                sent_points += n
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending = []
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent_points, skipped


def run_latency(broker, model: Path, tag: str, channels: list[str], sources: int, points_per_s: float, batch: int,
                seconds: float, workdir: Path, **overrides) -> dict[str, Any]:
    """The worker at a given load (live producer); end-to-end latency percentiles in seconds."""
    from ..worker_process import WorkerProcess

    cfg = worker_config_for(broker, model, tag, **overrides)
    before = background_load()
    worker = WorkerProcess(cfg, workdir, name=tag).start()
    try:
        time.sleep(1.0)  # the group is joined when Ready; let the first fetches settle
        sent, skipped = asyncio.run(_live(broker.bootstrap, cfg.topic_input, channels, sources, points_per_s, batch, seconds))
        # wait until the worker has caught up (its windows counter stops moving)
        last, stable_since, deadline = -1.0, time.monotonic(), time.monotonic() + 60
        while time.monotonic() < deadline:
            n = metric_value(worker.scrape(POLLED), "stream_detector_windows_scored_total")
            if n != last:
                last, stable_since = n, time.monotonic()
            elif time.monotonic() - stable_since > 0.5:
                break
            time.sleep(0.1)
    finally:
        worker.kill()  # a fresh consumer group per run: no clean shutdown needed
    scores = read_scores(broker.bootstrap, cfg.topic_scores, int(last), timeout=30.0)
    lat = [pub - rec["end"] for pub, rec in scores]
    return {"points_per_s_offered": points_per_s, "points_sent": sent, "points_skipped_by_producer": skipped,
            "points_per_s_sent": sent / seconds, "sources": sources, "batch_points": batch,
            "seconds": seconds, "windows": len(scores), **{k: v for k, v in percentiles(lat).items()},
            "max": float(max(lat)) if lat else None, "background_before": before, "background_after": background_load()}


# ----------------------------------------------------------------------------- the benchmark
def median_of(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def preload_input(broker, topic: str, sources: int, points: int, channels: list[str], batch: int, seed: int) -> tuple[int, int]:
    """Pre-load a topic; returns (messages, points)."""
    worker_config_for(broker, Path("."), topic, topic_input=topic)
    msgs = preload_messages(sources, points, channels, batch, seed=seed)
    t = time.time()
    produce(broker.bootstrap, topic, msgs)
    n_points = (points // sources) * sources
    print(f"pre-loaded {len(msgs)} messages on {topic} ({n_points} points, {sources} sources, "
          f"{len(channels)} channels) in {time.time() - t:.1f} s", flush=True)
    return len(msgs), n_points
