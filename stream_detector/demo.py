"""``stream-detector demo``: the whole product on one machine, in about two minutes.

Starts the embedded broker, runs the real worker (a separate process, as in production)
on the bundled model repository (``models/``: one model per demo channel, each flagging with
telemanom's adaptive threshold, plus the pooled ``smap-demo`` model as the default route),
replays the test split of several NASA SMAP channels at once (one source each, paced so the
replay fits the time budget, timestamps in step with the wall clock), shows scores and alert
episodes live from the output topics, serves ``/metrics``, and ends with the detected
episodes set against the labelled anomaly ranges.

The adaptive threshold decides windows in batches (telemanom: 70 windows at a time, after
2,100 windows of history), so score records arrive in bursts and the last partial batch of
each finite series is never decided; the summary counts the windows that get a decision.

Nothing leaves loopback.  The point timestamps are ``t0 + i / rate``, so an episode's
timestamps map back to indices of the series and can be compared with the labels.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

DEMO_DATA = Path(__file__).resolve().parent / "demo_data" / "smap_demo.npz"
MODEL_REPOSITORY = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODEL = "smap-demo"


def load_demo_data(path: Path = DEMO_DATA) -> dict[str, tuple[np.ndarray, list[tuple[int, int]]]]:
    """``{source: (values [T, 1], labelled ranges)}`` of the bundled SMAP test splits."""
    if not path.exists():
        raise UserError(f"demo data {path} is missing; rebuild it with scripts/build_demo.py")
    with np.load(path, allow_pickle=False) as z:
        ranges = json.loads(str(z["ranges"]))
        return {str(s): (z[f"series_{s}"].reshape(-1, 1).astype(np.float32), [tuple(r) for r in ranges[str(s)]])
                for s in z["sources"]}


@dataclass
class SourceView:
    points: int
    labels: list[tuple[int, int]]
    windows: int = 0
    anomalous: int = 0
    last_score: float = float("nan")
    open_since: int | None = None
    threshold: float = float("nan")
    episodes: list[tuple[int, int | None, float]] = field(default_factory=list)  # start, end, peak


def published_windows(points: int, window: int, stride: int, spec: dict) -> int:
    """How many windows of a finite series of ``points`` get a decision (and a score record)."""
    from .runtime.thresholds import make_threshold

    n = max(0, (points - window) // stride + 1)
    return len(make_threshold(spec, stride).update(np.zeros(n))[0])


class Demo:
    def __init__(self, data, rate: float, t0: float, plan: dict[str, dict]):
        """``plan``: per source, the model it is routed to (``model``, ``window``, ``stride``, ``spec``)."""
        self.rate, self.t0, self.plan = rate, t0, plan
        self.view = {s: SourceView(len(v), r) for s, (v, r) in data.items()}
        self.expected = {s: published_windows(len(v), plan[s]["window"], plan[s]["stride"], plan[s]["spec"])
                         for s, (v, _) in data.items()}
        self.latencies: list[float] = []

    def index(self, ts: float) -> int:
        return int(round((ts - self.t0) * self.rate))

    def on_score(self, rec: dict, received: float) -> None:
        v = self.view[rec["source"]]
        v.windows += 1
        v.last_score = rec["score"]
        v.threshold = rec["threshold"]
        v.anomalous += bool(rec["is_anomaly"])
        self.latencies.append(received - rec["end"])

    def on_alert(self, rec: dict) -> None:
        v = self.view[rec["source"]]
        if rec["event"] == "opened":
            v.open_since = self.index(rec["start"])
            v.episodes.append((v.open_since, None, rec["peak_score"]))
        elif v.episodes and v.episodes[-1][1] is None:
            v.episodes[-1] = (v.episodes[-1][0], self.index(rec["end"]), rec["peak_score"])
            v.open_since = None

    def done(self) -> bool:
        return all(self.view[s].windows >= n for s, n in self.expected.items())

    def table(self, elapsed: float) -> str:
        lines = [f"stream-detector demo  {elapsed:5.0f} s",
                 f"{'source':8} {'model':10} {'windows':>13} {'anomalous':>9} {'last score':>11} {'threshold':>10}  "
                 f"{'state':12} episodes"]
        for s, v in self.view.items():
            state = f"ALERT @{v.open_since}" if v.open_since is not None else "normal"
            ok = np.isfinite(v.last_score) and np.isfinite(v.threshold) and v.threshold > 0
            bar = "#" * min(20, int(10 * v.last_score / v.threshold)) if ok else ""
            lines.append(f"{s:8} {self.plan[s]['model']:10} {v.windows:6}/{self.expected[s]:<6} {v.anomalous:9} "
                         f"{v.last_score:11.4g} {v.threshold:10.4g}  {state:12} {len(v.episodes):3}  {bar}")
        return "\n".join(lines)

    def summary(self) -> tuple[str, dict]:
        from .training.evaluation import event_f1, sum_event_counts

        lines, counts = ["", "Detected episodes against the labelled anomaly ranges (indices of each test split):"], []
        for s, v in self.view.items():
            predicted = [(a, b if b is not None else v.points - 1) for a, b, _ in v.episodes]
            c = event_f1(v.labels, predicted)
            counts.append(c)
            lines.append(f"  {s}: labelled {v.labels}; detected "
                         f"{[(a, b if b is not None else 'open') for a, b, _ in v.episodes] or 'none'}"
                         f"  -> tp {c['tp']} fp {c['fp']} fn {c['fn']}")
        total = sum_event_counts(counts)
        lat = np.percentile(self.latencies, [50, 95, 99]) if self.latencies else [float("nan")] * 3
        lines.append(f"  total: event-level precision {total['precision']:.2f}, recall {total['recall']:.2f}, "
                     f"F1 {total['f1']:.2f} (tp {total['tp']}, fp {total['fp']}, fn {total['fn']})")
        lines.append(f"  windows scored {sum(v.windows for v in self.view.values())} of {sum(self.expected.values())}; "
                     f"point-to-consumer latency p50 {lat[0] * 1000:.0f} ms, p95 {lat[1] * 1000:.0f} ms, "
                     f"p99 {lat[2] * 1000:.0f} ms")
        return "\n".join(lines), total


async def _consume(bootstrap: str, topics: list[str], demo: Demo, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    from .runtime.publishing import decode_record

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for tp, msgs in batches.items():
                for m in msgs:
                    rec = decode_record(m.value)
                    (demo.on_score(rec, now) if tp.topic == topics[0] else demo.on_alert(rec))
    finally:
        await consumer.stop()


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


async def _run(demo: Demo, data, bootstrap: str, cfg, live: bool, budget: float) -> None:
    from .data import Series
    from .replay import ReplaySource, replay

    # Point i is stamped t0 + i / rate and the replay sends it at (its start) + i / rate, so
    # t0 is taken just before the replay starts: the latency then includes the producer's
    # start-up (tens of ms) but is never negative, as a t0 ahead of the sends made it.
    demo.t0 = time.time()
    # each source is sent with the channel name its model's card uses
    sources = [ReplaySource(s, Series(v, demo.plan[s]["channels"], timestamps=demo.t0 + np.arange(len(v)) / demo.rate),
                            demo.plan[s]["channels"]) for s, (v, _) in data.items()]
    stop = asyncio.Event()
    consumer = asyncio.create_task(_consume(bootstrap, [cfg.topic_scores, cfg.topic_alerts], demo, stop))
    sender = asyncio.create_task(replay(sources, bootstrap, cfg.topic_input, rate=demo.rate, batch=1))
    started = time.monotonic()
    tty = live and sys.stdout.isatty()
    last_print = 0.0
    try:
        while time.monotonic() - started < budget:
            await asyncio.sleep(0.5)
            if sender.done() and sender.exception():
                raise sender.exception()
            elapsed = time.monotonic() - started
            if tty:
                sys.stdout.write("\x1b[H\x1b[J" + demo.table(elapsed) + "\n")
                sys.stdout.flush()
            elif live and elapsed - last_print >= 10:
                print(demo.table(elapsed), flush=True)
                last_print = elapsed
            if sender.done() and demo.done():
                break
        else:
            print(f"time budget of {budget:.0f} s reached before every window was scored", flush=True)
    finally:
        stop.set()
        await consumer
        if not sender.done():
            sender.cancel()
    if live:
        print(demo.table(time.monotonic() - started), flush=True)


def demo_plan(repository: Path, sources: list[str]) -> tuple[list, dict[str, dict]]:
    """Routes (each source to the model of its own name, else the default) and, per source,
    what it will be served with."""
    from .runtime.repository import ModelRepository, parse_routes

    served = ModelRepository(repository).scan()
    if DEFAULT_MODEL not in served:
        raise UserError(f"{repository}: the default demo model {DEFAULT_MODEL!r} is missing")
    routes = parse_routes([{"sources": s, "model": s} for s in sources if s in served]
                          + [{"sources": "*", "model": DEFAULT_MODEL}])
    plan = {}
    for s in sources:
        card = served[s if s in served else DEFAULT_MODEL].card
        if len(card.channels) != 1:
            raise UserError(f"demo model {card.name!r} must be univariate (the demo data is), it has "
                            f"{len(card.channels)} channels")
        plan[s] = {"model": card.name, "window": card.window, "stride": card.stride,
                   "spec": {"method": card.threshold_method, **card.threshold}, "channels": list(card.channels)}
    return routes, plan


def run_demo(seconds: float = 100.0, rate: float | None = None, metrics_port: int = 9108, live: bool = True,
             repository: Path = MODEL_REPOSITORY) -> int:
    from .broker import EmbeddedBroker
    from .runtime.config import WorkerConfig
    from .worker_process import WorkerProcess
    from .runtime.worker import topic_plan

    data = load_demo_data()
    routes, plan = demo_plan(repository, list(data))
    longest = max(len(v) for v, _ in data.values())
    rate = rate or longest / seconds
    if not _port_free(metrics_port):
        from .broker import free_port

        print(f"port {metrics_port} is busy; serving metrics on another port", flush=True)
        metrics_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="stream-detector-demo-"))
    with EmbeddedBroker(topics=topic_plan(WorkerConfig(partitions=4))) as broker:
        cfg = WorkerConfig(broker=broker.url, model_repository=str(repository), routes=routes,
                           metrics_port=metrics_port, partitions=4,
                           broker_session_timeout_seconds=6, broker_heartbeat_interval_seconds=1,
                           broker_rebalance_timeout_seconds=3)
        worker = WorkerProcess(cfg, workdir)
        print(f"broker {broker.bootstrap}; starting the worker on the model repository {repository} "
              f"(log {worker.log_path}); routes: "
              + ", ".join(f"{s} -> {p['model']} ({p['spec'].get('method', 'quantile')} threshold)"
                          for s, p in plan.items()), flush=True)
        with worker:
            print(f"worker ready; metrics at {worker.metrics_url}; replaying {len(data)} SMAP channels "
                  f"({', '.join(data)}) at {rate:.0f} points/s each", flush=True)
            demo = Demo(data, rate, time.time(), plan)
            asyncio.run(_run(demo, data, broker.bootstrap, cfg, live, budget=seconds + 45))
            text, _ = demo.summary()
            print(text)
            wanted = ("stream_detector_messages_total", "stream_detector_windows_scored_total",
                      "stream_detector_alert_episodes_opened_total", "stream_detector_dead_letters_total")
            print("  worker metrics: " + "; ".join(line for line in worker.scrape().splitlines()
                                                   if line.startswith(wanted)))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0
