"""Where the worker's CPU goes per point: py-spy samples of the real worker, grouped by stage.

``bench throughput --profile`` attaches py-spy (a sampling profiler that reads the worker
process from outside, so the worker runs unmodified) to one extra, untimed worker run per
message kind and writes the raw stacks next to the worker logs.  :func:`breakdown` folds the
samples into the stages of the worker's path (consume, Faust's stream machinery, decode and
window, inference, records, publish, state) so that the report can say how many of the
worker's microseconds per point each stage takes (share of samples x the timed runs' CPU per
point) and which functions lead the self-time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

RATE_HZ = 250

# Leaf frames where a thread waits (py-spy's idle detection misses some of them when it reads a
# running process without pausing it): counted apart, not as CPU.
IDLE_LEAVES = ("select (", "wait (", "_worker (", "sleep (", "accept (", "readinto (")
IDLE = "waiting (epoll, locks, idle threads; not CPU)"
SCRAPE = "the benchmark's /metrics polls (prometheus_client, HTTP server)"

# (stage, predicate on one frame "function (path:line)"): a sample belongs to the first stage
# any of whose frames matches.  Ordered from the most specific owner to the most general: the
# detector's own methods run inside the agent, which runs inside Faust, inside asyncio.
OWNER_STAGES: list[tuple[str, Any]] = [
    ("inference (ONNX Runtime)", lambda f: "onnxruntime" in f or "scoring.py" in f),
    ("decode + window (Detector.ingest_parts)", lambda f: _is(f, "ingest_parts", "detector.py")),
    ("records + alerts (Detector.finish)", lambda f: _is(f, "finish", "detector.py")),
    ("state records (Detector.states)", lambda f: _is(f, "states", "detector.py")),
    (SCRAPE, lambda f: "exposition.py" in f or "socketserver.py" in f or "wsgiref" in f),
    ("metrics (prometheus_client)", lambda f: "prometheus_client" in f),
    ("publish (aiokafka producer)", lambda f: "aiokafka/producer" in f or "aiokafka/record" in f),
    ("consume (aiokafka fetch, Faust consumer thread)",
     lambda f: "aiokafka/consumer" in f or "aiokafka/conn" in f or "faust/transport/drivers/aiokafka" in f
     or "faust/transport/consumer" in f or _is(f, "_deliver", "stream_detector/app.py")),
    ("agent step (app.py)", lambda f: _is(f, "step", "stream_detector/app.py") or _is(f, "guarded_step", "stream_detector/app.py")),
]
def _is(frame: str, func: str, path: str) -> bool:
    """Whether ``frame`` (py-spy's ``Class.method (path:line)``, qualified name) is ``func`` in ``path``."""
    name, _, where = frame.partition(" (")
    return name.rsplit(".", 1)[-1] == func and path in where


# otherwise by the leaf-most frame's package
LEAF_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("Faust stream / channel / agent machinery", ("faust/", "mode/")),
    ("asyncio event loop", ("asyncio/", "selectors.py", "uvloop")),
    ("stream_detector (other)", ("stream_detector/",)),
]


def executable() -> str | None:
    """py-spy beside this interpreter (the venv's) or on PATH; None if neither."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def record(pid: int, out: Path, rate: int = RATE_HZ) -> subprocess.Popen | None:
    """Start py-spy on ``pid`` (raw collapsed stacks to ``out``); None where py-spy is missing.
    ``--nonblocking``: the worker is not paused to be read, so it runs at its own speed."""
    exe = executable()
    if exe is None:
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
                             "--rate", str(rate), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait for py-spy to write its file (it stops when the worker exits)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def read_stacks(path: Path) -> Counter:
    """``frames (root first) -> samples`` from py-spy's raw format (``f1;f2;...;fn COUNT``)."""
    stacks: Counter = Counter()
    if not path.exists():  # py-spy writes nothing when it took no sample (a run of a few ms)
        return stacks
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def stage_of(frames: tuple[str, ...]) -> str:
    leaf = frames[-1].split(" (", 1)[0].rsplit(".", 1)[-1] + " ("
    if leaf in IDLE_LEAVES:
        return IDLE
    for stage, match in OWNER_STAGES:
        if any(match(f) for f in frames):
            return stage
    for f in reversed(frames):
        for stage, prefixes in LEAF_STAGES:
            if any(p in f for p in prefixes):
                return stage
    return "other"


def _short(frame: str) -> str:
    """``func (…/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``; the project's own files
    from ``stream_detector/`` on."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if "stream_detector/" in path:
        path = path[path.rindex("stream_detector/"):]
    else:
        path = re.sub(r"^.*(?:site-packages|lib/python3\.\d+)/", "", path)
    return f"{func} ({path})"


def breakdown(stacks: Counter, cpu_us_per_point: float, top: int = 15) -> dict[str, Any]:
    """Stages by share of the CPU samples (waiting ones set apart) and in CPU µs per point
    (share x ``cpu_us_per_point``, the timed runs' median), and the ``top`` functions by
    self-time (the leaf frame)."""
    stages: Counter = Counter()
    leaves: Counter = Counter()
    idle = 0
    for frames, n in stacks.items():
        stage = stage_of(frames)
        if stage == IDLE:
            idle += n
            continue
        stages[stage] += n
        leaves[_short(frames[-1])] += n
    total = sum(stages.values())
    if not total:
        return {"samples": 0, "idle_samples": idle, "stages": [], "self_time": []}
    return {"samples": total, "idle_samples": idle, "cpu_us_per_point": cpu_us_per_point,
            "stages": [{"stage": s, "share": n / total, "us_per_point": cpu_us_per_point * n / total}
                       for s, n in stages.most_common()],
            "self_time": [{"function": f, "share": n / total} for f, n in leaves.most_common(top)]}


def markdown(profiles: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The breakdown per message kind, with a ``before`` profile (an earlier run's) beside it."""
    lines = ["## Where the CPU goes (py-spy, this run)", "",
             f"py-spy sampled the worker at {RATE_HZ} Hz during one extra, untimed run per message kind (the "
             "sequence model, the same topic); each stage's share of the samples times the timed runs' median "
             "worker CPU per point gives its microseconds per point. Samples are of Python threads; ONNX "
             "Runtime's own work shows under the calling thread's `run`."]
    for kind, prof in profiles.items():
        if not prof.get("samples"):
            continue
        old = {s["stage"]: s for s in (before or {}).get(kind, {}).get("stages", [])}
        head = "| stage | share | us/point |" + (" before: share | before: us/point |" if old else "")
        lines += ["", f"### {kind} messages ({prof['samples']:,} CPU samples and {prof.get('idle_samples', 0):,} "
                  f"waiting, {prof['cpu_us_per_point']:.1f} us CPU/point"
                  + (f"; before: {before[kind]['cpu_us_per_point']:.1f}" if old else "") + ")", "",
                  head, "|---|---:|---:|" + ("---:|---:|" if old else "")]
        names = [s["stage"] for s in prof["stages"]] + [n for n in old if n not in {s["stage"] for s in prof["stages"]}]
        now = {s["stage"]: s for s in prof["stages"]}
        for name in names:
            s = now.get(name, {"share": 0.0, "us_per_point": 0.0})
            row = f"| {name} | {s['share']:.0%} | {s['us_per_point']:.1f} |"
            if old:
                o = old.get(name, {"share": 0.0, "us_per_point": 0.0})
                row += f" {o['share']:.0%} | {o['us_per_point']:.1f} |"
            lines.append(row)
        lines += ["", "Leading functions by self-time: " + "; ".join(
            f"`{t['function']}` {t['share']:.0%}" for t in prof["self_time"][:10]) + "."]
    return lines
