"""Throughput and latency of the real worker on the embedded broker: ``stream-detector bench throughput``.

What one run does (everything on this machine, nothing mocked):

1. Starts the embedded broker and trains (or reuses, from ``--workdir``) one small model per
   transform on synthetic SMAP-shaped data (25 channels, ``W = 64``; the networks are the
   production ones, sized by ``nets.default_sizes``; a few training steps suffice because
   speed does not depend on the weights).
2. Pre-loads ``N`` points for ``M`` sources on an input topic, once as single-point messages
   and once as batch messages (``--batch-points`` points each), interleaved across sources
   the way a fleet sends them.
3. For every model and message kind, ``--runs`` times: starts the real worker
   (:class:`~stream_detector.runtime.worker.WorkerProcess`, a child process running Faust) in a
   fresh consumer group, and times it from the first point processed (``/metrics`` polled
   every 50 ms) to the publication of the last score (the score record's Kafka timestamp).
   On the same topic it times a pass-through Faust agent (same settings, same
   ``take_events`` batching, doing nothing; with the worker's consumer and with Faust's
   stock one) and a raw aiokafka ``getmany`` drain.  The detector's throughput is reported
   as a ratio of both, medians of the runs.
4. Latency: a live producer sends at half of the measured maximum (timestamps = the wall
   clock at production) to a running worker; latency is the score record's Kafka timestamp
   (its publication) minus the timestamp of the window's last point; p50/p95/p99.
5. ``--scaling``: points/s and the worker's resident memory for 10 to 10,000 sources, and for
   windows of 64, 128, 256 points (univariate sequence models); memory per idle source is
   the slope of RSS over sources minus the window buffer; a table and a PNG plot.
6. ``--many-models``: a repository of ``--many-models-count`` (54) copies of the bundled sequence
   model (SMAP shape), one route and one source per model, batch messages, against one model
   serving the same sources in the same run (points/s ratio, target >= 0.5; worker RSS of both:
   every model version has its own ONNX Runtime session).
7. ``--thresholds static,telemanom,likelihood``: the one-model sequence row with a route's
   threshold override against the card's static threshold (single-point and batch messages;
   points/s ratio to static, target >= 0.9).  Only decided windows are published, so the
   runner waits for every window to be scored and expects only the decided records.

Results go to ``docs/benchmarks/throughput.{json,md}`` (and ``scaling.{json,md,png}``),
with the load average before and after each measurement and whether another benchmark was
running, since the machine has two cores.  ``--quick`` is a smoke run with tiny N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from ..runtime.codec import score_windows
from . import profile

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
T0 = 1.7e9
CHANNELS_SMAP = 25

BUNDLED_SEQUENCE = Path(__file__).resolve().parents[2] / "models" / "smap-demo" / "1"
# name -> (transform, window, channels, plot_size); "sequence" is the bundled demo model
# (univariate, W = 64, trained on SMAP), the others are trained here at SMAP shape.
MODELS: dict[str, tuple[str, int, int, int]] = {
    "sequence": ("sequence", 64, 1, 32),
    "distance-plot": ("distance-plot", 64, CHANNELS_SMAP, 32),
    "distance-plot-mv": ("distance-plot-mv", 64, CHANNELS_SMAP, 32),
    "sequence-25": ("sequence", 64, CHANNELS_SMAP, 32),
}
DEFAULT_MODELS = ("sequence", "distance-plot", "distance-plot-mv")
# The only series a timed run polls (20 then 4 times a second): a full scrape made the worker collect and
# format every series, Faust's per-partition ones included, 20 times a second, which the
# profile showed as 13 % of its CPU with single-point messages; Prometheus scrapes every 15 s.
POLLED = ("stream_detector_points_total", "stream_detector_windows_scored_total")
REF_REPEAT = 2  # the batch-message references read this many times the detector's messages
SCALING_WINDOWS = (64, 128, 256)
SCALING_SOURCES = (10, 100, 1000, 10000)

PROFILE_NOTES = """\
## Where the time went (profiles)

Profiled with py-spy (sampling, 200 Hz) on this 2-core machine, a Faust agent that does
nothing but ``stream.take_events(1000, within=0.02)`` on single-point messages:

* **Before**: ~7,900 messages/s (the issue measured ~3,600/s with ``take``).  Half of the
  event loop's time was in ``Consumer._drain_messages``, which wraps *every* message in
  ``Service.wait_first(callback(message), suspend_flow.wait())``: four asyncio tasks (the
  callback, ``suspend_flow``, ``stopped`` and ``crashed``), ``asyncio.wait`` and three
  cancellations per message (``create_task``, ``asyncio.wait`` and ``isfuture`` led the
  self-time list).  The rest: the conductor's per-message lock and channel put, the stream
  iterator, the ``take_events`` buffer, the sensor's ``on_stream_event_in``.
* **Fix** (``stream_detector/app.py``, ``BatchDrainConsumer``): the same loop (generation and
  flow checks in ``getmany``, gap tracking, ``commit_every``, read offsets) with one
  ``wait_first`` guarding the delivery of a whole fetched batch, so a rebalance, stop or
  crash still interrupts delivery at the next await.  Consumer groups, offset commits,
  acks and tables are Faust's own.  Pass-through: ~18,000 messages/s (2.3x).
* **Remaining** per-message costs are Faust's channel/stream machinery (Event creation,
  FlowControlQueue put/get, the stream iterator and acks, the sensors), about 50 us a
  message: batch messages (one Kafka message carrying many points) amortise them, and the
  detector decodes a batch with one numpy call per channel and windows it with one gather.
"""


# ----------------------------------------------------------------------------- data and models
def fleet_series(n: int, channels: int, seed: int) -> np.ndarray:
    """Smooth periodic channels with noise, ``[n, channels]`` float32 (normal behaviour)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    periods = rng.uniform(6.0, 60.0, channels)[None, :]
    phase = rng.uniform(0, 2 * np.pi, channels)[None, :]
    return (np.sin(t / periods + phase) + rng.normal(0, 0.05, (n, channels))).astype(np.float32)


def channel_names(c: int) -> list[str]:
    return [f"ch{j:02d}" for j in range(c)]


def bench_model(root: Path, name: str) -> Path:
    """The model directory for one of :data:`MODELS` (bundled, or trained into ``root``)."""
    if name == "sequence" and (BUNDLED_SEQUENCE / "model.json").exists():
        return BUNDLED_SEQUENCE
    transform, window, channels, plot = MODELS[name]
    return ensure_model(root, name, transform, window, channels, plot)


def ensure_model(root: Path, name: str, transform: str, window: int, channels: int, plot_size: int = 32,
                 stride: int = 8, iterations: int = 5) -> Path:
    """A small real model (production network sizes, few training steps), cached in ``root/name``."""
    out = root / name
    if (out / "model.json").exists() and (out / "model.onnx").exists():
        return out
    from ..training.fit import fit_series_model
    from ..training.wgan import TrainConfig

    cfg = TrainConfig(iterations=iterations, encoder_iterations=iterations, seed=0)
    fit_series_model(fleet_series(max(20 * window, 2000), channels, seed=1), channel_names(channels), out,
                     window=window, stride=stride, transform=transform, cfg=cfg, plot_size=plot_size,
                     name=f"bench-{name}", version="1", progress=False, max_train_windows=512)
    return out


def preload_messages(sources: int, points: int, channels: list[str], batch: int, seed: int = 0,
                     dt: float = 0.01) -> list[tuple[bytes, bytes]]:
    """``points`` in total over ``sources`` sources, as single-point (``batch`` 1) or batch messages,
    round-robin across sources (each source's messages in time order)."""
    per_source = max(1, points // sources)
    data = fleet_series(per_source, len(channels), seed)
    msgs: list[tuple[bytes, bytes]] = []
    packb = msgpack.packb
    cols = [data[:, j].astype(np.float64) for j in range(len(channels))]
    keys = [f"src-{i:05d}".encode() for i in range(sources)]
    for start in range(0, per_source, batch):
        stop = min(start + batch, per_source)
        for s, key in enumerate(keys):
            ts0 = T0 + s * 1e-4  # sources slightly out of phase
            if batch == 1:
                payload = packb({"ts": ts0 + start * dt, "values": {c: float(col[start]) for c, col in zip(channels, cols)}})
            else:
                payload = packb({"ts": (ts0 + dt * np.arange(start, stop)).tolist(),
                                 "values": {c: col[start:stop].tolist() for c, col in zip(channels, cols)}})
            msgs.append((key, payload))
    return msgs


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
def _metric(text: str, name: str, labels: str = "") -> float:
    """One sample of ``name`` with exactly ``labels``; without labels, the sum over every label set
    (``stream_detector_windows_scored_total`` is per model)."""
    import re

    if labels:
        m = re.search(re.escape(name) + r"\{" + re.escape(labels) + r"\} ([0-9.eE+-]+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0
    return sum(float(v) for v in re.findall(re.escape(name) + r"(?:\{[^}]*\})? ([0-9.eE+-]+)$", text, re.MULTILINE))


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (robust to other load on the machine)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _background() -> dict[str, Any]:
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


def expected_windows(points_per_source: int, sources: int, window: int, stride: int) -> int:
    return sources * (0 if points_per_source < window else (points_per_source - window) // stride + 1)


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


def _config(broker, model: Path, name: str, **overrides):
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
    from ..runtime.worker import WorkerProcess

    published = n_windows if published is None else published

    cfg = _config(broker, model, tag, topic_input=input_topic, **overrides)
    before = _background()
    worker = WorkerProcess(cfg, workdir, name=tag)
    worker.start()
    spy = None
    if profile_to is not None:
        spy = profile.record(worker.proc.pid, profile_to)
        if spy is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy; `make install` brings it)")
    cpu0 = _cpu_seconds(worker.proc.pid)
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
            points = _metric(text, "stream_detector_points_total", 'status="ok"')
            windows = _metric(text, "stream_detector_windows_scored_total")
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
        rss = _rss_bytes(worker.proc.pid)
        cpu = _cpu_seconds(worker.proc.pid) - cpu0
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
    scored = _metric(text, "stream_detector_windows_scored_total")
    return {"points": total_points, "windows": len(scores), "expected_windows": published,
            "windows_scored": scored, "expected_windows_scored": n_windows,
            "models_scoring": len(re.findall(r'^stream_detector_windows_scored_total\{model="[^"]*"\} [1-9]', text,
                                             re.MULTILINE)),
            "seconds": seconds, "points_per_s": total_points / seconds, "windows_per_s": scored / seconds,
            "published_per_s": len(scores) / seconds,
            "inference_calls": _metric(text, "stream_detector_inference_batch_windows_count"),
            "worker_cpu_seconds": cpu, "worker_cpu_us_per_point": 1e6 * cpu / total_points,
            "rss_bytes": rss, "background_before": before, "background_after": _background()}


def run_passthrough(broker_url: str, topic: str, messages: int, tag: str, stock: bool, workdir: Path,
                    batch_max_messages: int, batch_max_latency_ms: float, timeout: float = 300.0) -> dict[str, Any]:
    """A Faust agent that does nothing, in a child process, on the same topic and settings."""
    out = workdir / f"{tag}.json"
    out.unlink(missing_ok=True)
    before = _background()
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
    res.update(background_before=before, background_after=_background())
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
    before = _background()
    res = asyncio.run(_drain_aiokafka(bootstrap, topic, messages))
    res.update(background_before=before, background_after=_background())
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
    from ..runtime.worker import WorkerProcess

    cfg = _config(broker, model, tag, **overrides)
    before = _background()
    worker = WorkerProcess(cfg, workdir, name=tag).start()
    try:
        time.sleep(1.0)  # the group is joined when Ready; let the first fetches settle
        sent, skipped = asyncio.run(_live(broker.bootstrap, cfg.topic_input, channels, sources, points_per_s, batch, seconds))
        # wait until the worker has caught up (its windows counter stops moving)
        last, stable_since, deadline = -1.0, time.monotonic(), time.monotonic() + 60
        while time.monotonic() < deadline:
            n = _metric(worker.scrape(POLLED), "stream_detector_windows_scored_total")
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
            "max": float(max(lat)) if lat else None, "background_before": before, "background_after": _background()}


# ----------------------------------------------------------------------------- the benchmark
def _median(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from ..broker import EmbeddedBroker
    from ..runtime.card import load_card

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    models_dir = workdir / "models"
    results: dict[str, Any] = {
        "benchmark": "throughput", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "settings": {"sources": args.sources, "single_points": args.single_points, "batch_points": args.batch_points_total,
                     "points_per_batch_message": args.batch_points, "runs": args.runs, "quick": args.quick,
                     "score_records": args.score_records},
        "background_start": _background(), "models": {}, "passthrough": {}, "aiokafka": {},
    }
    forms = args.score_records
    results["calibration"] = calibration(args.runs, "start")
    kinds = {"single": (1, args.single_points), "batch": (args.batch_points, args.batch_points_total)}
    with EmbeddedBroker() as broker:
        models = {m: bench_model(models_dir, m) for m in args.models}
        cards = {m: load_card(path) for m, path in models.items()}
        # one pre-loaded topic per channel set and message kind
        topics: dict[tuple[tuple[str, ...], str], tuple[str, int, int]] = {}
        for card in cards.values():
            channels = tuple(card.channels)
            for kind, (batch, points) in kinds.items():
                if (channels, kind) in topics:
                    continue
                topic = f"preload-{len(topics)}-{kind}"
                _config(broker, Path("."), topic, topic_input=topic)
                msgs = preload_messages(args.sources, points, list(channels), batch)
                t = time.time()
                produce(broker.bootstrap, topic, msgs)
                topics[channels, kind] = (topic, len(msgs), (points // args.sources) * args.sources)
                print(f"pre-loaded {len(msgs)} {kind} messages ({topics[channels, kind][2]} points, "
                      f"{len(channels)} channels) in {time.time() - t:.1f} s", flush=True)
        # The references on the same messages.  A pass-through drains the batch-message topic
        # several times faster than the detector (0.4-1.1 s for 600,000 points, three-fold
        # differences between runs), so its runs read a topic of REF_REPEAT times as many
        # messages of the same shape instead.
        refs = {}
        for (channels, kind), (topic, n_msgs, n_points) in topics.items():
            if kind == "batch" and not args.quick:
                ref_topic = f"{topic}-ref"
                _config(broker, Path("."), ref_topic, topic_input=ref_topic)
                msgs = preload_messages(args.sources, n_points * REF_REPEAT, list(channels), kinds[kind][0])
                produce(broker.bootstrap, ref_topic, msgs)
                refs[channels, kind] = (ref_topic, len(msgs), n_points * REF_REPEAT)
            else:
                refs[channels, kind] = (topic, n_msgs, n_points)
        for (channels, kind), (topic, n_msgs, n_points) in refs.items():
            ref: dict[str, list] = {"aiokafka": [], "faust_stock": [], "faust_worker_consumer": []}
            for r in range(args.runs):
                ref["aiokafka"].append(run_aiokafka(broker.bootstrap, topic, n_msgs))
                for name, stock in (("faust_stock", True), ("faust_worker_consumer", False)):
                    ref[name].append(run_passthrough(broker.url, topic, n_msgs, f"pt-{topic}-{name}-{r}", stock, workdir,
                                                     args.batch_max_messages, args.batch_max_latency_ms))
            pts_per_msg = n_points / n_msgs
            tkey = f"{kind}/{len(channels)}ch"
            for name, runs in ref.items():
                mps = _median(runs, "messages_per_s")
                entry = {"messages_per_s": mps, "points_per_s": mps * pts_per_msg, "runs": runs}
                if all("cpu_us_per_message" in r for r in runs):
                    entry["cpu_us_per_point"] = _median(runs, "cpu_us_per_message") / pts_per_msg
                (results["aiokafka"] if name == "aiokafka" else results["passthrough"]).setdefault(tkey, {})[name] = entry
                print(f"{tkey} {name}: {mps:,.0f} messages/s", flush=True)
        # the detector, per model
        for mname, model in models.items():
            card = cards[mname]
            transform, window, c, stride = card.transform, card.window, len(card.channels), card.stride
            mres: dict[str, Any] = {"model_dir": str(model), "transform": transform, "window": window, "channels": c,
                                    "stride": stride, "plot_size": card.plot_size,
                                    "width": card.training["config"].get("width"),
                                    "flops_per_window": card.graph["flops_per_window"], "kinds": {}}
            for kind in kinds:
                topic, n_msgs, n_points = topics[tuple(card.channels), kind]
                tkey = f"{kind}/{c}ch"
                n_windows = expected_windows(n_points // args.sources, args.sources, window, stride)
                pt = results["passthrough"][tkey]["faust_worker_consumer"]["points_per_s"]
                stock = results["passthrough"][tkey]["faust_stock"]["points_per_s"]
                raw = results["aiokafka"][tkey]["aiokafka"]["points_per_s"]
                by_form = {}
                for form in forms:  # the first form is the table's; the others are compared with it
                    runs = [run_detector(broker, model, topic, f"det-{mname}-{kind}-{form}-{r}", n_points, n_windows,
                                         workdir, batch_max_messages=args.batch_max_messages,
                                         batch_max_latency_ms=args.batch_max_latency_ms, score_records=form)
                            for r in range(args.runs)]
                    e = _detector_entry(runs, pt, results["calibration"], mres["flops_per_window"])
                    pps = e["points_per_s"]
                    e.update(score_records=form, ratio_to_stock_faust_passthrough=pps / stock, ratio_to_aiokafka=pps / raw)
                    print(f"{mname} {kind} ({form} records): {pps:,.0f} points/s ({pps / pt:.0%} of pass-through, "
                          f"{pps / raw:.1%} of aiokafka), {e['worker_cpu_us_per_point']:.1f} us CPU/point", flush=True)
                    by_form[form] = e
                entry = by_form[forms[0]]
                pps = entry["points_per_s"]
                entry["score_record_forms"] = {f: {k: v for k, v in e.items() if k != "score_record_forms"}
                                               for f, e in by_form.items() if f != forms[0]}
                if not args.no_latency:
                    # the message shape the maximum was measured with: half of it is then half load
                    live_batch = 1 if kind == "single" else (args.live_batch or args.batch_points)
                    entry["latency"] = run_latency(broker, model, f"lat-{mname}-{kind}", list(card.channels),
                                                   args.sources, pps / 2, live_batch, args.latency_seconds, workdir,
                                                   score_records=forms[0])
                    lat = entry["latency"]
                    if lat["p50"] is not None:
                        print(f"  latency at {pps / 2:,.0f} points/s: p50 {lat['p50']:.3f} s p95 {lat['p95']:.3f} s "
                              f"p99 {lat['p99']:.3f} s ({lat['windows']} windows)", flush=True)
                mres["kinds"][kind] = entry
                if args.profile and mname == args.models[0]:
                    raw = workdir / f"profile-{mname}-{kind}.txt"
                    run_detector(broker, model, topic, f"prof-{mname}-{kind}", n_points, n_windows, workdir,
                                 profile_to=raw, batch_max_messages=args.batch_max_messages,
                                 batch_max_latency_ms=args.batch_max_latency_ms, score_records=forms[0])
                    prof = profile.breakdown(profile.read_stacks(raw), entry["worker_cpu_us_per_point"])
                    results.setdefault("profile", {"model": mname, "kinds": {}})["kinds"][kind] = prof
                    print(f"profile {mname} {kind}: " + ", ".join(
                        f"{st['stage']} {st['us_per_point']:.1f}" for st in prof["stages"][:6]) + " us/point", flush=True)
            results["models"][mname] = mres
        if args.stride_sweep and models:
            results["stride_sweep"] = stride_sweep(broker, models, cards, topics, results, args, workdir)
        if args.many_models:
            results["many_models"] = many_models(broker, args, workdir)
        if args.thresholds:
            results["thresholds"] = threshold_rows(broker, args, workdir)
    results["calibration_end"] = calibration(1, "end")
    results["background_end"] = _background()
    results["targets"] = targets(results)
    return results


def calibration(rounds: int, when: str) -> dict[str, Any]:
    """The machine's own speed, taken in this run (``bench inference``'s calibration: float32
    GEMM on all cores and one, a fixed pure-Python loop), medians of ``rounds``: detector
    figures are also reported as ratios to it, which move far less between machines than
    points/s (the same command gave 3x different figures on two 2-core machines)."""
    from .inference import calibrate

    got = [calibrate(os.cpu_count() or 1, 0.3) for _ in range(max(rounds, 1))]
    med = {k: float(statistics.median(g[k] for g in got)) for k in got[0]}
    print(f"calibration ({when}): GEMM peak {med['gemm_peak_gflops']:.0f} GFLOP/s, one core "
          f"{med['gemm_peak_1thread_gflops']:.0f}, Python loop {med['python_loop_ns_per_iteration']:.1f} ns/iteration",
          flush=True)
    return {**med, "rounds": got}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the sequence model that this run measured, with the figure and whether
    it was met (medians of ``--runs``, all in this run, on this machine)."""
    seq = res["models"].get("sequence")
    if not seq:
        return []
    out = []

    def add(name: str, value: float | None, bound: float, higher: bool = True, unit: str = "ratio") -> None:
        if value is not None:
            out.append({"target": name, "value": value, "bound": bound, "unit": unit,
                        "met": value >= bound if higher else value <= bound})

    kinds = seq["kinds"]
    if "single" in kinds:
        add("single-point messages: points/s vs pass-through", kinds["single"]["ratio_to_passthrough"], 0.8)
    if "batch" in kinds:
        add(f"batch messages at stride {seq['stride']}: points/s vs pass-through",
            kinds["batch"]["ratio_to_passthrough"], 0.3)
    for row in res.get("stride_sweep", []):
        if row["model"] == "sequence" and row["stride"] == 32:
            add("batch messages at stride 32: points/s vs pass-through", row["ratio_to_passthrough"], 0.8)
    for kind, e in kinds.items():
        lat = e.get("latency") or {}
        if lat.get("p99") is not None:
            add(f"{kind} messages: p99 latency at half load", lat["p99"] * 1e3, 250, higher=False, unit="ms")
    return out


def stride_sweep(broker, models: dict, cards: dict, topics: dict, results: dict, args: argparse.Namespace,
                 workdir: Path) -> list[dict[str, Any]]:
    """The first model with batch messages at larger strides: the stride trades latency (a
    window is scored every ``stride`` points) for compute (windows/s = points/s / stride)."""
    mname = next(iter(models))
    card = cards[mname]
    topic, _, n_points = topics[tuple(card.channels), "batch"]
    pt = results["passthrough"][f"batch/{len(card.channels)}ch"]["faust_worker_consumer"]["points_per_s"]
    rows = []
    for stride in args.stride_sweep:
        n_windows = expected_windows(n_points // args.sources, args.sources, card.window, stride)
        runs = [run_detector(broker, models[mname], topic, f"stride-{mname}-{stride}-{r}", n_points, n_windows, workdir,
                             stride=stride, batch_max_messages=args.batch_max_messages,
                             batch_max_latency_ms=args.batch_max_latency_ms, score_records=args.score_records[0])
                for r in range(args.runs)]
        rows.append({"model": mname, "stride": stride, **_detector_entry(runs, pt)})
        print(f"{mname} batch, stride {stride}: {rows[-1]['points_per_s']:,.0f} points/s "
              f"({rows[-1]['ratio_to_passthrough']:.0%} of pass-through)", flush=True)
    return rows


def make_repository(root: Path, names: list[str], model: Path) -> Path:
    """A model repository ``root/<name>/1`` with every name a copy of ``model`` (symlinks where
    the file system has them): each name is its own model version, so the worker loads one
    ONNX Runtime session per name."""
    if root.exists():
        shutil.rmtree(root)
    for name in names:
        (root / name).mkdir(parents=True)
        target = root / name / "1"
        try:
            target.symlink_to(model.resolve(), target_is_directory=True)
        except OSError:
            target.mkdir()
            for f in ("model.onnx", "model.json"):
                shutil.copy2(model / f, target / f)
    return root


def _preload(broker, topic: str, sources: int, points: int, channels: list[str], batch: int, seed: int) -> tuple[int, int]:
    """Pre-load a topic; returns (messages, points)."""
    _config(broker, Path("."), topic, topic_input=topic)
    msgs = preload_messages(sources, points, channels, batch, seed=seed)
    t = time.time()
    produce(broker.bootstrap, topic, msgs)
    n_points = (points // sources) * sources
    print(f"pre-loaded {len(msgs)} messages on {topic} ({n_points} points, {sources} sources, "
          f"{len(channels)} channels) in {time.time() - t:.1f} s", flush=True)
    return len(msgs), n_points


def _row_entry(runs: list[dict]) -> dict[str, Any]:
    return {"points_per_s": _median(runs, "points_per_s"), "windows_per_s": _median(runs, "windows_per_s"),
            "published_per_s": _median(runs, "published_per_s"),
            "worker_cpu_us_per_point": _median(runs, "worker_cpu_us_per_point"),
            "rss_bytes": _median(runs, "rss_bytes"), "runs": runs}


# a telemanom that decides within a smoke run's few windows (parameters in points)
QUICK_TELEMANOM = {"batch_size": 24, "window_size": 5, "error_buffer": 3, "l_s": 5}
MANY_MODELS_TARGET = 0.5  # points/s of the many-models row over the one-model row, at least
THRESHOLDS_TARGET = 0.9  # points/s of an adaptive threshold over the static one, at least


def many_models(broker, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``--many-models``: ``N`` copies of the sequence model (SMAP shape: W = 64, one channel) in a
    repository, one route and one source per model, batch messages; against the same topic with
    one model serving every source (a one-model repository, one catch-all route), same run,
    same points, same stride (the card's).  Each model version has its own ONNX Runtime session
    in the worker: the worker's RSS shows the memory cost."""
    from ..runtime.card import load_card
    from ..runtime.repository import parse_routes

    n = args.many_models_count
    model = bench_model(workdir / "models", "sequence")
    card = load_card(model)
    window, stride = card.window, card.stride
    topic = "many-models-batch"
    n_msgs, n_points = _preload(broker, topic, n, args.many_models_points, list(card.channels), args.batch_points, 5)
    n_windows = expected_windows(n_points // n, n, window, stride)
    names = [f"m{i:02d}" for i in range(n)]
    sources = [f"src-{i:05d}" for i in range(n)]  # the keys preload_messages writes
    plans = {
        "one": (make_repository(workdir / "repo-one", names[:1], model), [{"sources": "*", "model": names[0]}]),
        "many": (make_repository(workdir / "repo-many", names, model),
                 [{"sources": src, "model": name} for src, name in zip(sources, names)]),
    }
    runs: dict[str, list] = {"one": [], "many": []}
    for r in range(args.runs):  # alternate the rows, so that drift in the machine's load hits both
        for key, (repo, routes) in plans.items():
            runs[key].append(run_detector(broker, model, topic, f"mm-{key}-{r}", n_points, n_windows, workdir,
                                          model_dir=None, model_repository=str(repo), routes=parse_routes(routes),
                                          batch_max_messages=args.batch_max_messages,
                                          batch_max_latency_ms=args.batch_max_latency_ms, score_records=args.score_records[0]))
    rows = {key: {"models": 1 if key == "one" else n, "sources": n, "points": n_points, "messages": n_msgs,
                  "stride": stride, "window": window, **_row_entry(v)} for key, v in runs.items()}
    ratio = rows["many"]["points_per_s"] / rows["one"]["points_per_s"]
    res = {"model_dir": str(model), "models": n, "sources": n, "messages": "batch",
           "points_per_message": args.batch_points, "points": n_points, "stride": stride,
           "one_model": rows["one"], "many_models": rows["many"], "ratio": ratio,
           "target": MANY_MODELS_TARGET, "target_met": ratio >= MANY_MODELS_TARGET,
           "rss_increase_bytes": rows["many"]["rss_bytes"] - rows["one"]["rss_bytes"]}
    print(f"many models: {n} models {rows['many']['points_per_s']:,.0f} points/s "
          f"(RSS {rows['many']['rss_bytes'] / 2**20:.0f} MiB) vs one model {rows['one']['points_per_s']:,.0f} points/s "
          f"(RSS {rows['one']['rss_bytes'] / 2**20:.0f} MiB): {ratio:.0%} (target >= {MANY_MODELS_TARGET:.0%} "
          f"{'met' if res['target_met'] else 'missed'})", flush=True)
    return res


def threshold_spec(method: str, params: dict[str, dict]) -> dict | None:
    """The route's threshold override for ``method`` (None: the card's static threshold)."""
    if method == "static":
        return None
    return {"method": method, **params.get(method, {})}


def threshold_rows(broker, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``--thresholds``: the one-model sequence row (``--sources`` sources, single-point and batch
    messages) with a route's threshold override against the card's static threshold, same run,
    same topics; ``--threshold-windows`` windows per source at the card's stride so that the
    adaptive procedures decide (telemanom's first decision comes after ``window_size`` batches).
    The runner waits for every window to be *scored*; it expects only the *decided* ones on
    the score topic, and every row ends when the last window was scored (or the last record
    published, if later)."""
    from ..runtime.thresholds import make_threshold
    from ..runtime.card import load_card
    from ..runtime.repository import parse_routes

    model = bench_model(workdir / "models", "sequence")
    card = load_card(model)
    window, stride, channels = card.window, card.stride, list(card.channels)
    name = "sequence"
    repo = make_repository(workdir / "repo-thresholds", [name], model)
    per_source = window + (args.threshold_windows - 1) * stride
    windows_per_source = expected_windows(per_source, 1, window, stride)
    specs = {m: threshold_spec(m, args.threshold_params) for m in args.thresholds}
    published_per_source = {}
    for m, spec in specs.items():
        k = windows_per_source if spec is None else len(make_threshold(spec, stride).update(np.zeros(windows_per_source))[0])
        if k == 0:
            raise ValueError(f"--thresholds {m}: no window of {windows_per_source} per source is decided at stride "
                             f"{stride}; raise --threshold-windows")
        published_per_source[m] = k
    res: dict[str, Any] = {"model_dir": str(model), "sources": args.sources, "stride": stride, "window": window,
                           "windows_per_source": windows_per_source, "points_per_source": per_source,
                           "specs": {m: spec or {"method": card.threshold_method, **card.threshold} for m, spec in specs.items()},
                           "target": THRESHOLDS_TARGET, "kinds": {}}
    for kind, batch in (("single", 1), ("batch", args.batch_points)):
        topic = f"thresholds-{kind}"
        n_msgs, n_points = _preload(broker, topic, args.sources, per_source * args.sources, channels, batch, 6)
        n_windows = windows_per_source * args.sources
        runs: dict[str, list] = {m: [] for m in specs}
        for r in range(args.runs):  # alternate the methods, so that drift in the machine's load hits all
            for m, spec in specs.items():
                route = {"sources": "*", "model": name, **({"threshold": spec} if spec else {})}
                runs[m].append(run_detector(broker, model, topic, f"thr-{kind}-{m}-{r}", n_points, n_windows, workdir,
                                            published=published_per_source[m] * args.sources, end_at_settle=True,
                                            model_dir=None, model_repository=str(repo), routes=parse_routes([route]),
                                            batch_max_messages=args.batch_max_messages,
                                            batch_max_latency_ms=args.batch_max_latency_ms, score_records=args.score_records[0]))
        rows = {}
        for m in specs:
            rows[m] = {"points": n_points, "messages": n_msgs, "windows_scored": n_windows,
                       "windows_published": published_per_source[m] * args.sources, **_row_entry(runs[m])}
        base = rows.get("static")
        for m, row in rows.items():
            if base is not None:
                row["ratio_to_static"] = row["points_per_s"] / base["points_per_s"]
                row["target_met"] = m == "static" or row["ratio_to_static"] >= THRESHOLDS_TARGET
            print(f"threshold {m}, {kind} messages: {row['points_per_s']:,.0f} points/s"
                  + (f" ({row['ratio_to_static']:.0%} of static)" if base is not None else ""), flush=True)
        res["kinds"][kind] = {"points_per_message": batch, "rows": rows}
    return res


def _detector_entry(runs: list[dict], passthrough_points_per_s: float, cal: dict[str, Any] | None = None,
                    flops_per_window: float | None = None) -> dict[str, Any]:
    """Medians of a detector's runs, its ratio to the pass-through agent on the same topic and,
    given the run's calibration, to the machine: the share of its GEMM peak that the windows
    scored per second amount to, and the worker's CPU per point in iterations of the fixed
    Python loop (both move less between machines than points/s do)."""
    pps = _median(runs, "points_per_s")
    e = {"points_per_s": pps, "windows_per_s": _median(runs, "windows_per_s"),
         "worker_cpu_us_per_point": _median(runs, "worker_cpu_us_per_point"),
         "ratio_to_passthrough": pps / passthrough_points_per_s, "runs": runs}
    if cal is not None:
        e["cpu_per_point_in_python_loop_iterations"] = e["worker_cpu_us_per_point"] * 1e3 / cal["python_loop_ns_per_iteration"]
        if flops_per_window:
            e["ratio_to_gemm_peak"] = e["windows_per_s"] * flops_per_window / (cal["gemm_peak_gflops"] * 1e9)
    return e


def throughput_markdown(res: dict[str, Any]) -> str:
    s = res["settings"]
    lines = [
        "# Throughput and latency of the worker",
        "",
        f"CPU: {res['machine'].get('cpu_model', 'unknown')}, {res['machine']['cpus']} cores.",
        "",
        f"`stream-detector bench throughput` on {res['machine']['cpus']} CPU cores ({res['machine']['platform']}), "
        f"{res['created']}. Embedded broker (Tansu, memory storage) on the same machine; one worker process; "
        f"{s['sources']} sources; {s['single_points']:,} points as single-point messages and "
        f"{s['batch_points']:,} points as batch messages of {s['points_per_batch_message']} points; "
        f"median of {s['runs']} runs. Models: `sequence` is the bundled `models/smap-demo/1` (univariate, "
        "W = 64); the others are the production networks (sized by `nets.default_sizes`) at SMAP shape "
        "(W = 64, C = 25, 32 x 32 plots), trained for a few steps (speed does not depend on the weights); "
        "default stride of the card (8). Load average at start: "
        f"{res['background_start']['loadavg']}; other benchmarks running: "
        f"{', '.join(res['background_start']['other_benchmarks']) or 'none'}.",
        "",
    ]
    cal = res.get("calibration")
    if cal:
        end = res.get("calibration_end", {})
        lines += ["## The machine, measured in this run", "",
                  "| calibration | start (median) | end |", "|---|---:|---:|"]
        for key, label in (("gemm_peak_gflops", "float32 GEMM peak, all cores (GFLOP/s)"),
                           ("gemm_peak_1thread_gflops", "float32 GEMM, one thread (GFLOP/s)"),
                           ("python_loop_ns_per_iteration", "fixed pure-Python loop (ns/iteration)")):
            lines.append(f"| {label} | {cal[key]:,.1f} | {end.get(key, float('nan')):,.1f} |")
        lines += ["", "Every detector row is also given as a ratio to these and to the pass-through agent and raw "
                  "aiokafka drain measured on the same topic in this run (section *References*): *GEMM share* = "
                  "windows/s x FLOP/window / the GEMM peak; *CPU/point in loop iterations* = the worker's CPU per "
                  "point / one iteration of the Python loop. Compare machines by these, not by points/s.", ""]
    if res.get("targets"):
        lines += ["## Targets (sequence model; medians of the runs, this machine, this run)", "",
                  "| target | measured | bound | status |", "|---|---:|---:|---|"]
        for t in res["targets"]:
            fmt = (lambda v: f"{v:.2f}") if t["unit"] == "ratio" else (lambda v: f"{v:.0f} ms")
            lines.append(f"| {t['target']} | {fmt(t['value'])} | {'>=' if t['unit'] == 'ratio' else '<='} "
                         f"{fmt(t['bound'])} | {_met(t['met'])} |")
        lines.append("")
    lines += [
        "## The detector",
        "",
        f"Score records in the `{s['score_records'][0]}` form (`score_records: {s['score_records'][0]}`).",
        "",
        "| model | C | FLOP/window | stride | messages | points/s | windows/s | worker CPU us/point | vs pass-through | vs stock-Faust pass-through | vs aiokafka | GEMM share | CPU/point in loop iterations | p50 / p95 / p99 latency at half load (ms) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, m in res["models"].items():
        for kind, e in m["kinds"].items():
            lat = e.get("latency")
            lat_s = (f"{lat['p50'] * 1e3:.0f} / {lat['p95'] * 1e3:.0f} / {lat['p99'] * 1e3:.0f}"
                     if lat and lat["p50"] is not None else "-")
            lines.append(f"| {name} | {m['channels']} | {m['flops_per_window'] / 1e6:.1f} M | {m['stride']} | {kind} | "
                         f"{e['points_per_s']:,.0f} | {e['windows_per_s']:,.0f} | {e['worker_cpu_us_per_point']:.1f} | "
                         f"{e['ratio_to_passthrough']:.0%} | "
                         f"{e['ratio_to_stock_faust_passthrough']:.0%} | {e['ratio_to_aiokafka']:.1%} | "
                         f"{_ratio(e.get('ratio_to_gemm_peak'), '.3f')} | "
                         f"{_ratio(e.get('cpu_per_point_in_python_loop_iterations'), ',.0f')} | {lat_s} |")
    forms = [(name, kind, f, fe) for name, m in res["models"].items() for kind, e in m["kinds"].items()
             for f, fe in e.get("score_record_forms", {}).items()]
    if forms:
        lines += ["", "## Score records: one per window or one per source and step", "",
                  "The same rows with `score_records: batch` (one columnar record per source and agent step, "
                  "carrying all of that step's windows) against the table's form, same topics, same run.", "",
                  "| model | messages | score records | points/s | worker CPU us/point | vs pass-through | vs the table's form |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for name, kind, f, fe in forms:
            base = res["models"][name]["kinds"][kind]
            lines.append(f"| {name} | {kind} | {f} | {fe['points_per_s']:,.0f} | {fe['worker_cpu_us_per_point']:.1f} | "
                         f"{fe['ratio_to_passthrough']:.0%} | {fe['points_per_s'] / base['points_per_s']:.2f}x |")
    if res.get("stride_sweep"):
        lines += ["", "## Stride: latency traded for compute (batch messages)", "",
                  "| model | stride | points/s | windows/s | worker CPU us/point | vs pass-through |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in res["stride_sweep"]:
            lines.append(f"| {r['model']} | {r['stride']} | {r['points_per_s']:,.0f} | {r['windows_per_s']:,.0f} | "
                         f"{r['worker_cpu_us_per_point']:.1f} | {r['ratio_to_passthrough']:.0%} |")
    if res.get("many_models"):
        lines += many_models_markdown(res["many_models"])
    if res.get("thresholds"):
        lines += thresholds_markdown(res["thresholds"])
    if res.get("profile"):
        lines += [""] + profile.markdown(res["profile"]["kinds"], (res.get("profile_before") or {}).get("kinds"))
        if res.get("profile_before"):
            lines += ["", f"*Before*: {res['profile_before']['source']}."]
    lines += ["", "## References on the same topics", "",
              "| messages | consumer | messages/s | points/s | CPU us/point |", "|---|---|---:|---:|---:|"]
    for kind in res["aiokafka"]:
        for name, e in [("aiokafka getmany", res["aiokafka"][kind]["aiokafka"]),
                        ("Faust pass-through, stock consumer", res["passthrough"][kind]["faust_stock"]),
                        ("Faust pass-through, worker's BatchDrainConsumer", res["passthrough"][kind]["faust_worker_consumer"])]:
            lines.append(f"| {kind} | {name} | {e['messages_per_s']:,.0f} | {e['points_per_s']:,.0f} | "
                         f"{_ratio(e.get('cpu_us_per_point'), '.1f')} |")
    lines += ["", f"The batch-message references read a topic of {REF_REPEAT} times as many messages of the same shape: "
              "a pass-through drains the detector's topic several times faster than the detector, and a run of under "
              "a second (as with 600,000 points) is too short to time.",
              "", "Latency: a live producer sends at half of the measured maximum points/s, each point stamped with "
              "the wall clock; latency = the score record's Kafka timestamp (its publication) minus the timestamp of "
              "the window's last point. With batch messages it includes the producer's own batching (a message "
              "carries the last few points of each source).", "", PROFILE_NOTES]
    return "\n".join(lines) + "\n"


def _ratio(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def many_models_markdown(mm: dict[str, Any]) -> list[str]:
    lines = ["", "## Many models", "",
             (f"{mm['models']} copies of `{Path(mm['model_dir']).parent.name}/{Path(mm['model_dir']).name}` (W = 64, one "
             f"channel, the SMAP shape) in a model repository, one route and one source per model, so the worker "
             f"holds {mm['models']} ONNX Runtime sessions; against one model serving the same {mm['sources']} sources "
             f"(a one-model repository, one catch-all route). Same run, same topic: {mm['points']:,} points as batch "
             f"messages of {mm['points_per_message']} points, stride {mm['stride']}. Worker RSS after the run."), "",
             "| models | sources | points/s | windows/s | worker CPU us/point | worker RSS (MiB) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in (mm["one_model"], mm["many_models"]):
        lines.append(f"| {row['models']} | {row['sources']} | {row['points_per_s']:,.0f} | {row['windows_per_s']:,.0f} | "
                     f"{row['worker_cpu_us_per_point']:.1f} | {row['rss_bytes'] / 2**20:.0f} |")
    lines += ["", (f"{mm['models']} models reach {mm['ratio']:.0%} of the one-model points/s (target: at least "
              f"{mm['target']:.0%}: {_met(mm['target_met'])}); the extra sessions cost "
              f"{mm['rss_increase_bytes'] / 2**20:,.0f} MiB of worker RSS "
              f"({mm['rss_increase_bytes'] / max(mm['models'] - 1, 1) / 2**20:.1f} MiB a model).")]
    return lines


def thresholds_markdown(th: dict[str, Any]) -> list[str]:
    lines = ["", "## Adaptive thresholds", "",
             (f"The one-model sequence row (`{Path(th['model_dir']).parent.name}/{Path(th['model_dir']).name}`, "
             f"{th['sources']} sources, {th['windows_per_source']:,} windows of {th['window']} points per source at "
             f"stride {th['stride']}) with a route's threshold override against the card's static threshold, same "
             "run, same topics. An adaptive procedure publishes a window's record only once it decides it "
             "(telemanom in batches, after a first `window_size` batches), so fewer records are published; every "
             "row is timed until the worker has *scored* every window (or published the last record, if later)."), "",
             ("| messages | threshold | points/s | windows scored | records published | worker CPU us/point | "
              f"vs static | target (>= {th['target']:.0%}) |"),
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for kind, k in th["kinds"].items():
        for m, row in k["rows"].items():
            ratio = row.get("ratio_to_static")
            lines.append(f"| {kind} | {m} | {row['points_per_s']:,.0f} | {row['windows_scored']:,} | "
                         f"{row['windows_published']:,} | {row['worker_cpu_us_per_point']:.1f} | "
                         f"{'-' if ratio is None else f'{ratio:.0%}'} | "
                         f"{'-' if m == 'static' or ratio is None else _met(row['target_met'])} |")
    specs = "; ".join(f"{m}: `{json.dumps(spec, sort_keys=True)}`" for m, spec in th["specs"].items())
    lines += ["", f"Threshold specifications (parameters in points, divided by the stride): {specs}."]
    return lines


# ----------------------------------------------------------------------------- scaling
def scaling(args: argparse.Namespace) -> dict[str, Any]:
    from ..broker import EmbeddedBroker
    from ..runtime.card import load_card

    workdir = Path(args.workdir)
    models_dir = workdir / "models"
    res: dict[str, Any] = {"benchmark": "scaling", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "machine": machine(),
                           "background_start": _background(), "sources": [], "windows": []}
    plan = [(m, SCALING_WINDOWS[0]) for m in args.scaling_sources] + [(args.scaling_window_sources, w)
                                                                      for w in SCALING_WINDOWS[1:]]
    with EmbeddedBroker() as broker:
        for i, (sources, window) in enumerate(plan):
            model = ensure_model(models_dir, f"seq-w{window}", "sequence", window, 1, stride=8)
            card = load_card(model)
            per_source = max(-(-args.scaling_points // sources), 2 * window)
            batch = min(args.batch_points, per_source)
            topic = f"scale-{i}"
            _config(broker, model, f"scale-{i}-topics", topic_input=topic)
            msgs = preload_messages(sources, per_source * sources, ["ch00"], batch, seed=i)
            produce(broker.bootstrap, topic, msgs)
            n_points = per_source * sources
            n_windows = expected_windows(per_source, sources, window, card.stride)
            run = run_detector(broker, model, topic, f"scale-{i}", n_points, n_windows, workdir,
                               batch_max_messages=args.batch_max_messages, batch_max_latency_ms=args.batch_max_latency_ms, score_records=args.score_records[0])
            row = {"sources": sources, "window": window, "points_per_source": per_source, **{
                k: run[k] for k in ("points", "points_per_s", "windows_per_s", "rss_bytes", "seconds")},
                "window_buffer_bytes": window * (8 + 4 * 1), "background": run["background_after"]}
            (res["sources"] if i < len(args.scaling_sources) else res["windows"]).append(row)
            if window == SCALING_WINDOWS[0] and sources == args.scaling_window_sources:
                res["windows"].insert(0, row)
            print(f"scaling: {sources} sources W={window}: {row['points_per_s']:,.0f} points/s, "
                  f"RSS {row['rss_bytes'] / 2**20:.1f} MiB", flush=True)
    rows = res["sources"]
    if len(rows) >= 2:
        x = np.array([r["sources"] for r in rows], float)
        y = np.array([r["rss_bytes"] for r in rows], float)
        slope = float(np.polyfit(x, y, 1)[0])
        res["bytes_per_source"] = slope
        res["bytes_per_idle_source_beyond_window_buffer"] = slope - rows[0]["window_buffer_bytes"]
    res["background_end"] = _background()
    return res


def scaling_markdown(res: dict[str, Any], png: str | None) -> str:
    lines = ["# Scaling with sources and window length", "",
             f"`stream-detector bench throughput --scaling`, {res['machine']['cpus']} CPU cores, {res['created']}. "
             "Univariate sequence models (production network sizes), batch messages, one worker; RSS of the "
             "worker process after the run (all sources idle, their state in memory and in the Faust table).", "",
             "| sources | window | points/source | points/s | windows/s | worker RSS (MiB) |",
             "|---:|---:|---:|---:|---:|---:|"]
    seen = set()
    for r in res["sources"] + res["windows"]:
        if (r["sources"], r["window"]) in seen:
            continue
        seen.add((r["sources"], r["window"]))
        lines.append(f"| {r['sources']:,} | {r['window']} | {r['points_per_source']:,} | {r['points_per_s']:,.0f} | "
                     f"{r['windows_per_s']:,.0f} | {r['rss_bytes'] / 2**20:.1f} |")
    if "bytes_per_source" in res:
        lines += ["", f"Memory per source (slope of RSS over sources, W = 64): {res['bytes_per_source']:,.0f} bytes; "
                  f"beyond its window buffer ({res['sources'][0]['window_buffer_bytes']} bytes): "
                  f"{res['bytes_per_idle_source_beyond_window_buffer']:,.0f} bytes. This includes the Faust table's "
                  "copy of the persisted state (the last W - 1 points), the episode tracker and dict entries."]
    if png:
        lines += ["", f"![scaling]({png})"]
    return "\n".join(lines) + "\n"


def scaling_plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    rows = res["sources"]
    x = [r["sources"] for r in rows]
    axes[0].plot(x, [r["points_per_s"] for r in rows], "o-")
    axes[0].set(xscale="log", xlabel="sources", ylabel="points/s", title="throughput vs sources (W=64)")
    axes[1].plot(x, [r["rss_bytes"] / 2**20 for r in rows], "o-", color="C1")
    axes[1].set(xscale="log", xlabel="sources", ylabel="worker RSS (MiB)", title="memory vs sources (W=64)")
    w = res["windows"]
    axes[2].plot([r["window"] for r in w], [r["points_per_s"] for r in w], "o-", color="C2")
    axes[2].set(xlabel="window length", ylabel="points/s", title=f"throughput vs window ({w[0]['sources'] if w else ''} sources)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-detector bench throughput", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the JSON and Markdown (default docs/benchmarks)")
    p.add_argument("--workdir", default=None, help="models cache and worker logs (default: a temporary folder)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--sources", type=int, default=100)
    p.add_argument("--single-points", type=int, default=150_000, help="points sent as single-point messages")
    p.add_argument("--batch-points-total", type=int, default=3_000_000,
                   help="points sent as batch messages (at 200,000 points/s a run takes 15 s)")
    p.add_argument("--batch-points", type=int, default=100, help="points per batch message")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch-max-messages", type=int, default=1000)
    p.add_argument("--batch-max-latency-ms", type=float, default=20.0)
    p.add_argument("--score-records", default="window,batch",
                   help="the worker's score_records forms to measure, comma-separated: one record per window "
                        "(window), one per source and step (batch); the first is the main tables' form")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--live-batch", type=int, default=None,
                   help="points per message in the batch-message latency run (default --batch-points, the shape "
                        "the maximum was measured with)")
    p.add_argument("--stride-sweep", default="16,32,64",
                   help="strides at which the first model is run again with batch messages ('' to skip)")
    p.add_argument("--scaling", action="store_true", help="run the scaling sweep instead (scaling.json/.md/.png)")
    p.add_argument("--scaling-sources", default=",".join(map(str, SCALING_SOURCES)))
    p.add_argument("--scaling-window-sources", type=int, default=100)
    p.add_argument("--scaling-points", type=int, default=300_000)
    p.add_argument("--many-models", action="store_true",
                   help="add the many-models row: copies of the sequence model, one route and source each, batch messages")
    p.add_argument("--many-models-count", type=int, default=None, help="models (and sources) in that row (default 54)")
    p.add_argument("--many-models-points", type=int, default=None,
                   help="points in that row and its one-model row (default --batch-points-total)")
    p.add_argument("--thresholds", default="",
                   help="comma-separated threshold rows, e.g. static,telemanom,likelihood ('static': the card's)")
    p.add_argument("--threshold-windows", type=int, default=None,
                   help="windows per source at the card's stride in the threshold rows (default 2200)")
    p.add_argument("--threshold-params", default=None,
                   help='JSON: parameters per method, e.g. \'{"telemanom": {"batch_size": 10}}\' (default: none)')
    p.add_argument("--profile", action="store_true",
                   help="one extra, untimed run per message kind of the first model under py-spy: the CPU per point by stage")
    p.add_argument("--profile-before", default=None,
                   help="a throughput.json with an earlier profile, shown beside this run's (before / after a change)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny N, one run, short latency phase")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_passthrough"]:
        return _passthrough_main(argv[1:])
    args = build_parser().parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    args.scaling_sources = [int(x) for x in args.scaling_sources.split(",") if x]
    args.stride_sweep = [int(x) for x in args.stride_sweep.split(",") if x]
    args.score_records = [f.strip() for f in args.score_records.split(",") if f.strip()]
    if not args.score_records or any(f not in ("window", "batch") for f in args.score_records):
        print("error: --score-records: a comma-separated list of window and batch", file=sys.stderr)
        return 2
    from ..runtime.thresholds import METHODS

    args.thresholds = [m.strip() for m in args.thresholds.split(",") if m.strip()]
    bad = [m for m in args.thresholds if m != "static" and m not in METHODS]
    if bad:
        print(f"error: unknown threshold {bad[0]!r}; choose from static, {', '.join(METHODS)}", file=sys.stderr)
        return 2
    try:
        params = json.loads(args.threshold_params) if args.threshold_params else {}
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise ValueError("a mapping of method -> mapping of parameters")
    except ValueError as e:
        print(f"error: --threshold-params: {e}", file=sys.stderr)
        return 2
    args.threshold_params = params
    if args.quick:
        args.stride_sweep = args.stride_sweep[:1]
        if args.models == list(DEFAULT_MODELS):
            args.models = ["sequence"]  # the bundled model: nothing to train
        args.sources, args.single_points, args.batch_points_total, args.batch_points = 4, 400, 800, 50
        args.runs, args.latency_seconds = 1, 1.5
        args.scaling_sources, args.scaling_window_sources, args.scaling_points = [2, 4], 2, 600
        if args.many_models_count is None:
            args.many_models_count = 3
        if args.threshold_windows is None:
            args.threshold_windows = 40
        if "telemanom" not in args.threshold_params:
            args.threshold_params["telemanom"] = dict(QUICK_TELEMANOM)
    if args.many_models_count is None:
        args.many_models_count = 54
    if args.many_models_points is None:
        args.many_models_points = args.batch_points_total
    if args.threshold_windows is None:
        args.threshold_windows = 2200
    if args.many_models_count < 1 or args.threshold_windows < 1:
        print("error: --many-models-count and --threshold-windows must be positive", file=sys.stderr)
        return 2
    if args.thresholds:  # a bad spec fails here, not after the main rows
        for m in args.thresholds:
            spec = threshold_spec(m, args.threshold_params)
            if spec is not None:
                try:
                    from ..runtime.thresholds import make_threshold

                    make_threshold({"value": 1.0, **spec})
                except ValueError as e:
                    print(f"error: --thresholds {m}: {e}", file=sys.stderr)
                    return 2
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sd-bench-")
        args.workdir = tmp.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.scaling:
            res = scaling(args)
            png = out / "scaling.png"
            scaling_plot(res, png)
            (out / "scaling.json").write_text(json.dumps(res, indent=1) + "\n")
            (out / "scaling.md").write_text(scaling_markdown(res, png.name))
            print(f"wrote {out / 'scaling.json'}, {out / 'scaling.md'}, {png}")
        else:
            before = None
            if args.profile_before:
                try:
                    doc = json.loads(Path(args.profile_before).read_text())
                    before = {**doc["profile"], "source": f"`{args.profile_before}` ({doc['created']})"}
                except (OSError, ValueError, KeyError) as e:
                    print(f"error: --profile-before {args.profile_before}: no profile there ({e})", file=sys.stderr)
                    return 2
            res = benchmark(args)
            if before is not None:
                res["profile_before"] = before
            (out / "throughput.json").write_text(json.dumps(res, indent=1) + "\n")
            (out / "throughput.md").write_text(throughput_markdown(res))
            print(f"wrote {out / 'throughput.json'} and {out / 'throughput.md'}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
