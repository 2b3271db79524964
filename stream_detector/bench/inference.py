"""Model compute: ``stream-detector bench inference``.

Two parts, in one run, on one machine (named: CPU model and core count), each figure beside
calibration figures taken in the same run (medians of ``--runs`` rounds, at least 3):

* **The production model** (``models/smap-demo/1``, the sequence model the worker serves) in
  its two forms: *plain* (PyTorch's export of its weights, what every sequence model was
  before) and *fast* (:mod:`stream_detector.training.onnx_graph`, the committed file), at the batch
  sizes the worker uses (``batch_max_windows`` is 64; a busy worker calls with 8 to 64), with
  one intra-op thread and as the worker builds its scorer (ONNX Runtime's default thread count,
  spinning off).  Windows/s, µs per window, GFLOP/s of the model's own FLOPs, and the ratio to
  the machine's float32 GEMM peak measured in the same round; a per-node profile (ONNX
  Runtime's own profiler) of both forms says where the time goes; a few session options are
  measured beside them.
* **Scorer shapes** (the production networks of ``nets.py``, sized by ``nets.default_sizes``
  unless a width is given, random weights: speed does not depend on them), windows/s at
  batch sizes 1 to 256, ONNX Runtime against PyTorch eager with the same thread count, the
  FLOPs per window (``nets.count_flops``: convolutions and linear layers, 2 per multiply-add)
  and the GFLOP/s against the matmul peak.  Sequence shapes are measured in both forms.

Calibration, every round: NumPy's sgemm (``[2048, 2048]`` float32, all cores and one thread),
ONNX Runtime's own GEMM (MLAS) likewise, PyTorch's, and a fixed pure-Python loop.  The GEMM
peak a model is compared with is the best of them, so that a ratio never flatters.

CPU always; ONNX Runtime's CUDA provider as well when an NVIDIA GPU is visible (the JSON
records which).  Each figure is the median of repeated calls over at least ``--seconds``;
batch sizes stop growing once one call takes longer than ``--max-call-seconds``.

Results: ``<--out>/inference.json`` and ``inference.md`` (the committed ones in ``docs/benchmarks/``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .framework import Benchmark, Report, error

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PRODUCTION_MODEL = Path(__file__).resolve().parents[2] / "models" / "smap-demo" / "1"
#: 28: windows per call the issue measured on a busy worker; 64: the worker's batch_max_windows
PRODUCTION_BATCHES = (1, 8, 28, 64)
WORKER_BATCHES = (8, 28, 64)  # the target (0.3 of the GEMM peak) is judged at these
TARGET_RATIO = 0.3
PROFILE_BATCH = 28
PYTHON_LOOP_N = 1_000_000

# name -> (transform, window, channels, plot_size, width or None for default_sizes, note)
SPECS: dict[str, tuple[str, int, int, int, int | None, str]] = {
    "sequence-1ch": ("sequence", 64, 1, 32, None, "the demo model's shape (smap-demo)"),
    "sequence-25ch": ("sequence", 64, 25, 32, None, "SMAP shape, default sizes"),
    "distance-plot-25ch-p32": ("distance-plot", 64, 25, 32, None, "SMAP shape, 32x32 plots, default sizes (width 32)"),
    "distance-plot-25ch-p32-w16": ("distance-plot", 64, 25, 32, 16, "leaner: width 16"),
    "distance-plot-25ch-p16-w16": ("distance-plot", 64, 25, 16, 16, "leaner: 16x16 plots, width 16"),
    "distance-plot-mv-25ch-p32": ("distance-plot-mv", 64, 25, 32, None, "multivariate plot, default sizes"),
    "distance-plot-25ch-p64-w64": ("distance-plot", 64, 25, 64, 64, "the issue's representative: 64x64 plots, wide"),
}
QUICK_SPECS = ("sequence-1ch", "distance-plot-25ch-p32")


def build_scorer(transform: str, window: int, channels: int, plot_size: int, width: int | None):
    """The torch ``ScoringNetwork`` (random weights, eval mode) with its (width, latent)."""
    import torch

    from ..training.export import ScoringNetwork
    from ..training.nets import Critic, Encoder, Generator, default_sizes
    from ..training.transforms import WindowTransform

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lo = rng.uniform(-1, 0, channels)
    stats = {"min": lo.tolist(), "max": (lo + rng.uniform(0.5, 2, channels)).tolist()}
    wt = WindowTransform(transform, stats, window, plot_size)
    shape = wt.output_shape()
    w_default, latent = default_sizes(shape, "conv")
    width = width or w_default
    scorer = ScoringNetwork(wt, Encoder("conv", shape, width, latent), Generator("conv", shape, width, latent),
                           Critic("conv", shape, width), 1.0)
    return scorer.eval(), width, latent, shape


def _time_calls(fn, seconds: float, min_calls: int = 3, cpu: bool = False):
    """Median seconds per call of ``fn`` (after one warm-up call); with ``cpu``, also the mean
    CPU seconds this process spent per call (all its threads): unlike the wall clock, that does
    not grow when other programs take the cores, so it measures how well the code uses a core
    on a busy machine."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    cpu_start = time.process_time()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    # over the whole loop, not per call: the kernel updates the CPU time of the process's other
    # running threads (ONNX Runtime's pool) only every scheduler tick, a few ms
    cpu_per_call = (time.process_time() - cpu_start) / len(times)
    return (statistics.median(times), cpu_per_call) if cpu else statistics.median(times)


def _ort_matmul_session(n: int, threads: int):
    """An ONNX Runtime session of one ``[n, n] x [n, n]`` MatMul, on ``threads`` intra-op threads."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def matmul_peak(threads: int, n: int = 2048, seconds: float = 1.0) -> dict[str, float]:
    """float32 GFLOP/s of a square matrix multiply in PyTorch and ONNX Runtime (``threads`` each)
    and NumPy (its BLAS, own thread count).

    The three libraries use different GEMM kernels (MKL or oneDNN, MLAS, OpenBLAS), and on
    an AMD CPU MKL does not take its fastest path: the convolutions ORT runs through MLAS
    can beat PyTorch's matmul.  The peak a model is compared with is the best of the three,
    so that "share of peak" never flatters.
    """
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    t_torch = _time_calls(lambda: torch.mm(a, b), seconds)
    x = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    t_np = _time_calls(lambda: x @ x, seconds)
    sess = _ort_matmul_session(n, threads)
    t_ort = _time_calls(lambda: sess.run(["c"], {"a": x, "b": x}), seconds)
    flop = 2.0 * n**3
    return {"torch_gflops": flop / t_torch / 1e9, "numpy_gflops": flop / t_np / 1e9,
            "onnxruntime_gflops": flop / t_ort / 1e9, "n": n, "threads": threads}


def _gpu_status() -> dict[str, Any]:
    import onnxruntime as ort

    visible = os.path.exists("/proc/driver/nvidia") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    return {"nvidia_gpu_visible": visible, "ort_cuda_provider_built": cuda, "cuda_measured": visible and cuda}


def python_loop_seconds(n: int = PYTHON_LOOP_N, seconds: float = 0.3) -> float:
    """Seconds per iteration of a fixed pure-Python loop (``s += i * i``, ``n`` times): how fast
    this machine runs the interpreter, the other half of what the worker does."""

    def loop() -> int:
        s = 0
        for i in range(n):
            s += i * i
        return s

    return _time_calls(loop, seconds) / n


def calibrate(threads: int, seconds: float, n: int = 2048) -> dict[str, float]:
    """float32 GEMM GFLOP/s of NumPy's BLAS and ONNX Runtime's MLAS on all ``threads`` and on one,
    and the pure-Python loop; ``gemm_peak_gflops`` is the best GEMM figure of all."""
    x = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n**3
    out: dict[str, float] = {"n": n, "threads": threads}
    out["numpy_sgemm_gflops"] = flop / _time_calls(lambda: x @ x, seconds) / 1e9
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            wall, cpu = _time_calls(lambda: x @ x, seconds, cpu=True)
        out["numpy_sgemm_1thread_gflops"] = flop / wall / 1e9
        out["numpy_sgemm_1thread_cpu_gflops"] = flop / cpu / 1e9
    except ImportError:  # scikit-learn brings it; without it the one-thread figure is ORT's alone
        pass
    out["onnxruntime_gemm_gflops"] = flop / _time_calls(
        lambda s=_ort_matmul_session(n, threads): s.run(["c"], {"a": x, "b": x}), seconds) / 1e9
    wall, cpu = _time_calls(lambda s=_ort_matmul_session(n, 1): s.run(["c"], {"a": x, "b": x}), seconds, cpu=True)
    out["onnxruntime_gemm_1thread_gflops"] = flop / wall / 1e9
    out["onnxruntime_gemm_1thread_cpu_gflops"] = flop / cpu / 1e9
    out["gemm_peak_gflops"] = max(v for k, v in out.items() if k.endswith("gflops") and "_cpu_" not in k)
    out["gemm_peak_1thread_gflops"] = max(v for k, v in out.items() if k.endswith("1thread_gflops"))
    # GFLOP per CPU-second of one thread: a core's GEMM speed whatever else ran beside it
    out["gemm_core_cpu_gflops"] = max(v for k, v in out.items() if k.endswith("1thread_cpu_gflops"))
    out["python_loop_ns_per_iteration"] = python_loop_seconds() * 1e9
    return out


# -- the production model ----------------------------------------------------------------------
def _production_dirs(model_dir: Path, workdir: Path) -> dict[str, Path]:
    """Model directories of the production model in its plain and fast forms (a copy each; the
    plain one exported by PyTorch from the same weights, its card stamped with its hash)."""
    import json

    from ..runtime.card import load_card, sha256_file
    from ..training.export import export_onnx, scorer_from_model_dir
    from ..training.onnx_graph import optimise_model_dir

    card = load_card(model_dir)
    dirs = {"plain": workdir / "plain", "fast": workdir / "fast"}
    for d in dirs.values():
        shutil.copytree(model_dir, d)
    if card.graph.get("form", "plain") == "plain":
        optimise_model_dir(dirs["fast"])
    else:
        export_onnx(scorer_from_model_dir(model_dir), card.window, len(card.channels), dirs["plain"] / "model.onnx",
                    optimise=False)
        raw = json.loads((dirs["plain"] / "model.json").read_text())
        raw["onnx_sha256"] = sha256_file(dirs["plain"] / "model.onnx")
        raw["graph"]["form"] = "plain"
        (dirs["plain"] / "model.json").write_text(json.dumps(raw, indent=2) + "\n")
    return dirs


def _option_sessions(dirs: dict[str, Path], threads: int) -> dict[str, Any]:
    """Bare ONNX Runtime sessions for the options table: what each setting does at one batch size."""
    import onnxruntime as ort

    def session(form: str, threads: int = 1, level=None, **config: str):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        if level is not None:
            opts.graph_optimization_level = level
        for k, v in config.items():
            opts.add_session_config_entry(k, v)
        return ort.InferenceSession(str(dirs[form] / "model.onnx"), sess_options=opts,
                                    providers=["CPUExecutionProvider"])

    ext = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    out = {
        "fast, level ALL (default)": session("fast"),
        "fast, level EXTENDED (no NCHWc layout)": session("fast", level=ext),
        "plain, level ALL (default)": session("plain"),
        "plain, level EXTENDED": session("plain", level=ext),
        "fast, denormals as zero": session("fast", **{"session.set_denormal_as_zero": "1"}),
        "fast, I/O binding, preallocated outputs": session("fast"),
    }
    if threads > 1:
        out[f"fast, {threads} threads, spinning"] = session("fast", threads=threads)
        out[f"fast, {threads} threads, no spinning"] = session(
            "fast", threads=threads, **{"session.intra_op.allow_spinning": "0"})
        out[f"fast, batch split over {threads} one-thread calls in parallel"] = session("fast")
    return out


def _option_call(name: str, sess, x: np.ndarray, pool=None):
    if "batch split" in name and pool is not None:  # ONNX Runtime releases the GIL while it runs
        parts = np.array_split(x, pool._max_workers + 1)
        outs = ["score", "channel_scores"]
        return lambda: [f.result() for f in [pool.submit(sess.run, outs, {"window": p}) for p in parts[1:]]] \
            + [sess.run(outs, {"window": parts[0]})]
    if "I/O binding" not in name:
        return lambda: sess.run(["score", "channel_scores"], {"window": x})
    io = sess.io_binding()
    io.bind_cpu_input("window", x)
    score = np.empty(len(x), np.float32)
    channels = np.empty((len(x), x.shape[2]), np.float32)
    io.bind_output("score", "cpu", 0, np.float32, list(score.shape), score.ctypes.data)
    io.bind_output("channel_scores", "cpu", 0, np.float32, list(channels.shape), channels.ctypes.data)
    return lambda: sess.run_with_iobinding(io)


def profile_graph(model_path: Path, batch: int, runs: int, workdir: Path) -> dict[str, Any]:
    """ONNX Runtime's own profiler on one intra-op thread: kernel time per op type and the
    largest nodes, per call of ``batch`` windows (after ONNX Runtime's own fusions, so node
    names are its).  Profiling adds a few µs a node: compare shares, not totals, with the
    timed figures."""
    import json

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(workdir / f"profile-{model_path.parent.name}")
    sess = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).normal(0, 0.5, (batch, *sess.get_inputs()[0].shape[1:])).astype(np.float32)
    for _ in range(runs):
        sess.run(["score", "channel_scores"], {"window": x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = {}
    calls: list[float] = []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node.setdefault((e["args"]["op_name"], e["name"][:-len("_kernel_time")]), []).append(e["dur"])
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            calls.append(e["dur"])
    skip = max(1, runs // 10)  # warm-up calls
    node_us = {k: statistics.mean(v[skip:]) for k, v in per_node.items() if len(v) > skip}
    kernels = sum(node_us.values())
    by_op: dict[str, float] = {}
    for (op, _), us in node_us.items():
        by_op[op] = by_op.get(op, 0.0) + us
    top = sorted(node_us.items(), key=lambda kv: -kv[1])[:8]
    return {"batch": batch, "calls": runs - skip, "nodes": len(node_us),
            "call_us_median": statistics.median(calls[skip:]) if len(calls) > skip else None,
            "kernel_us_per_call": kernels,
            "by_op_type": [{"op": op, "us": us, "share": us / kernels}
                           for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])],
            "top_nodes": [{"op": op, "node": node, "us": us, "share": us / kernels} for (op, node), us in top]}


def bench_production(model_dir: Path, threads: int, batches: list[int], runs: int, seconds: float,
                     workdir: Path, cuda: bool, profile_runs: int) -> dict[str, Any]:
    """Before (plain) and after (fast) on the production model, ``runs`` rounds, each with its
    own calibration; every figure is kept per round and summarised by its median."""
    from ..runtime.card import load_card
    from ..runtime.scoring import Scorer

    dirs = _production_dirs(model_dir, workdir)
    card = load_card(model_dir)
    flops = int(card.graph["flops_per_window"])
    # "worker": the scorer as the worker builds it with inference_threads 0 (ORT's default threads,
    # no spinning); its default (1) is the "1 thread" row.
    configs = {"1 thread": {"threads": 1}, "worker": {"spinning": False}}
    scorers = {(form, cfg): Scorer(d, providers=["CPUExecutionProvider"], **kw)
               for form, d in dirs.items() for cfg, kw in configs.items()}
    if cuda:
        scorers.update({(form, "cuda"): Scorer(d, providers=["CUDAExecutionProvider"]) for form, d in dirs.items()})
    options = _option_sessions(dirs, threads)
    rng = np.random.default_rng(1)
    xs = {bs: rng.normal(0, 0.5, (bs, card.window, len(card.channels))).astype(np.float32)
          for bs in sorted(set(batches) | {PROFILE_BATCH})}
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max(1, threads - 1))
    rounds: list[dict[str, Any]] = []
    for r in range(runs):
        before = calibrate(threads, seconds)
        times = [(form, cfg, bs, *_time_calls(lambda s=scorer, x=xs[bs]: s.score(x), seconds, cpu=True))
                 for bs in batches for (form, cfg), scorer in scorers.items()]
        opt_times = [(name, *_time_calls(_option_call(name, sess, xs[PROFILE_BATCH], pool), seconds, cpu=True))
                     for name, sess in options.items()]
        after = calibrate(threads, seconds)
        # the calibration before and after the round's figures, the better of the two: a ratio
        # to it never flatters, whichever moment other load on the machine chose
        cal = {k: (min(v, after[k]) if k.startswith("python_loop") else max(v, after[k])) for k, v in before.items()}
        cores = os.cpu_count() or 1
        rows = [_row(form, cfg, bs, t, c, flops, cal, 1 if cfg == "1 thread" else cores)
                for form, cfg, bs, t, c in times]
        opts = [{"option": name, **_row("", "", PROFILE_BATCH, t, c, flops, cal,
                                        cores if ("threads" in name or "split" in name) else 1)}
                for name, t, c in opt_times]
        rounds.append({"calibration": cal, "calibration_before": before, "calibration_after": after,
                       "rows": rows, "options": opts})
        fast_1t = [x for x in rows if x["form"] == "fast" and x["config"] == "1 thread"]
        print(f"production round {r + 1}/{runs}: GEMM peak {cal['gemm_peak_gflops']:.0f} GFLOP/s; fast, 1 thread: "
              + ", ".join(f"batch {x['batch']} {x['windows_per_s']:,.0f} w/s ({x['ratio_to_gemm_peak']:.2f})"
                          for x in fast_1t), flush=True)
    pool.shutdown()
    summary = _summarise(rounds)
    verdict = {}
    for bs in [b for b in batches if b in WORKER_BATCHES]:
        fast = {x["config"]: x for x in summary["rows"] if x["form"] == "fast" and x["batch"] == bs}
        wall = max((x for x in fast.values() if x["config"] != "cuda"), key=lambda x: x["ratio_to_gemm_peak"])
        one = fast["1 thread"]
        verdict[str(bs)] = {"machine_share_estimate": one["machine_share_estimate"],
                            "core_efficiency": one["core_efficiency"],
                            "wall_ratio_to_gemm_peak": wall["ratio_to_gemm_peak"], "wall_config": wall["config"],
                            "met": one["machine_share_estimate"] >= TARGET_RATIO}
    root = Path(__file__).resolve().parents[2]
    model_dir = model_dir.resolve()
    return {"model": str(model_dir.relative_to(root)) if model_dir.is_relative_to(root) else str(model_dir),
            "window": card.window, "channels": len(card.channels), "flops_per_window": flops,
            "configs": {"1 thread": "intra_op_num_threads 1 (the worker's default, inference_threads: 1)",
                        "worker": "Scorer(spinning=False): ONNX Runtime's default intra-op threads (one per core), no "
                        "spinning, as the worker built its scorer before inference_threads (and does with 0)"},
            "runs": runs, "rounds": rounds, **summary, "target_ratio": TARGET_RATIO, "target": verdict,
            "target_met": bool(verdict) and all(v["met"] for v in verdict.values()),
            "profile": {form: profile_graph(d / "model.onnx", PROFILE_BATCH, profile_runs, workdir)
                        for form, d in dirs.items()}}


def _row(form: str, cfg: str, bs: int, t: float, cpu: float, flops: int, cal: dict[str, float],
         threads: int = 1) -> dict[str, Any]:
    """One measurement as figures and as ratios to its round's calibration.  ``cpu_*``: per
    CPU-second of this process; ``core_efficiency`` is that against one core's GEMM per
    CPU-second, and ``machine_share_estimate`` = core_efficiency x cores used / cores: the share
    of the whole machine's GEMM peak the same code reaches on an idle machine (for one thread,
    at most 1 / cores), which other load cannot inflate or deflate."""
    gflops = flops * bs / t / 1e9
    cpu_gflops = flops * bs / max(cpu, 1e-9) / 1e9
    cores = os.cpu_count() or 1
    return {"form": form, "config": cfg, "batch": bs, "windows_per_s": bs / t, "us_per_window": t / bs * 1e6,
            "gflops": gflops, "ratio_to_gemm_peak": gflops / cal["gemm_peak_gflops"],
            "ratio_to_gemm_peak_1thread": gflops / cal["gemm_peak_1thread_gflops"],
            "python_loop_iterations_per_window": t / bs * 1e9 / cal["python_loop_ns_per_iteration"],
            "cpu_us_per_window": cpu / bs * 1e6, "cpu_gflops": cpu_gflops,
            "core_efficiency": cpu_gflops / cal["gemm_core_cpu_gflops"],
            "machine_share_estimate": cpu_gflops / cal["gemm_core_cpu_gflops"] / cores if threads == 1 else None}


def _summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of the calibration, of every row and of every option."""
    med = statistics.median
    cal = {k: med(r["calibration"][k] for r in rounds) for k in rounds[0]["calibration"]}
    figures = ("windows_per_s", "us_per_window", "gflops", "ratio_to_gemm_peak", "ratio_to_gemm_peak_1thread",
               "python_loop_iterations_per_window", "cpu_us_per_window", "cpu_gflops", "core_efficiency",
               "machine_share_estimate")

    def summarise(groups: list[list[dict]]) -> list[dict]:
        out = []
        for same in zip(*groups):
            row = {k: v for k, v in same[0].items() if k not in figures}
            row.update({f: med(x[f] for x in same) if same[0][f] is not None else None for f in figures})
            row["windows_per_s_range"] = [min(x["windows_per_s"] for x in same), max(x["windows_per_s"] for x in same)]
            out.append(row)
        return out

    rows = summarise([r["rows"] for r in rounds])
    plain = {(x["config"], x["batch"]): x["windows_per_s"] for x in rows if x["form"] == "plain"}
    for x in rows:
        if x["form"] == "fast" and (x["config"], x["batch"]) in plain:
            x["speedup_over_plain"] = x["windows_per_s"] / plain[(x["config"], x["batch"])]
    return {"calibration": cal, "rows": rows, "options": summarise([r["options"] for r in rounds])}


# -- scorer shapes -----------------------------------------------------------------------------
def bench_spec(name: str, threads: int, batch_sizes: list[int], seconds: float, max_call_seconds: float,
               workdir: Path, cuda: bool) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from ..training.export import export_onnx
    from ..training.nets import count_flops

    transform, window, channels, plot, width, note = SPECS[name]
    scorer, width, latent, shape = build_scorer(transform, window, channels, plot, width)
    flops = count_flops(scorer, torch.zeros(1, window, channels))
    path = workdir / f"{name}.onnx"
    form = export_onnx(scorer, window, channels, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    sessions = {"onnxruntime_cpu": ort.InferenceSession(str(path), sess_options=opts, providers=cpu)}
    if form != "plain":  # the same networks as PyTorch exports them: before/after
        export_onnx(scorer, window, channels, workdir / f"{name}-plain.onnx", optimise=False)
        sessions["onnxruntime_cpu_plain"] = ort.InferenceSession(str(workdir / f"{name}-plain.onnx"), sess_options=opts,
                                                                 providers=cpu)
    if cuda:
        sessions["onnxruntime_cuda"] = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    rows = []
    for bs in batch_sizes:
        x = rng.normal(0, 1, (bs, window, channels)).astype(np.float32)
        xt = torch.from_numpy(x)
        row: dict[str, Any] = {"batch": bs}
        for key, sess in sessions.items():
            t = _time_calls(lambda s=sess: s.run(["score", "channel_scores"], {"window": x}), seconds)
            row[f"{key}_windows_per_s"] = bs / t
            row[f"{key}_gflops"] = flops * bs / t / 1e9
        with torch.inference_mode():
            t_torch = _time_calls(lambda: scorer(xt), seconds)
        row["torch_eager_windows_per_s"] = bs / t_torch
        row["torch_eager_gflops"] = flops * bs / t_torch / 1e9
        row["ort_over_torch"] = row["onnxruntime_cpu_windows_per_s"] / row["torch_eager_windows_per_s"]
        rows.append(row)
        print(f"{name} batch {bs}: ORT {row['onnxruntime_cpu_windows_per_s']:,.0f} windows/s "
              f"({row['onnxruntime_cpu_gflops']:.1f} GFLOP/s)"
              + (f", plain {row['onnxruntime_cpu_plain_windows_per_s']:,.0f}" if form != "plain" else "")
              + f", torch {row['torch_eager_windows_per_s']:,.0f}", flush=True)
        if max(bs / row["onnxruntime_cpu_windows_per_s"], t_torch) > max_call_seconds:
            break
    best = max(rows, key=lambda r: r["onnxruntime_cpu_windows_per_s"])
    return {"transform": transform, "window": window, "channels": channels, "plot_size": plot if transform != "sequence"
            else None, "width": width, "latent_dim": latent, "network_input": list(shape), "note": note,
            "graph_form": form, "flops_per_window": flops, "rows": rows, "best_batch": best["batch"],
            "best_windows_per_s": best["onnxruntime_cpu_windows_per_s"], "best_gflops": best["onnxruntime_cpu_gflops"]}


def _machine() -> dict[str, Any]:
    from .machine import cpu_model

    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor(), "python": platform.python_version()}


def spec_peak(res: dict[str, Any]) -> float:
    """The peak the scorer shapes are compared with: the best of the three matmuls measured for
    them and, when the production part ran with as many threads, of every GEMM figure its rounds
    took: one measurement squeezed by other load must not make a share look larger."""
    peak = res["matmul_peak"]
    best = max(peak["torch_gflops"], peak["numpy_gflops"], peak["onnxruntime_gflops"])
    prod = res.get("production")
    if prod and res["threads"] >= (res["machine"]["cores"] or 1):
        for r in prod["rounds"]:
            best = max(best, *(r[k]["gemm_peak_gflops"] for k in ("calibration_before", "calibration_after")))
    elif prod and res["threads"] == 1:
        for r in prod["rounds"]:
            best = max(best, *(r[k]["gemm_peak_1thread_gflops"] for k in ("calibration_before", "calibration_after")))
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    gpu = _gpu_status()
    load_before = os.getloadavg()
    res: dict[str, Any] = {
        "benchmark": "inference", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(),
        "libraries": {"onnxruntime": ort.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "threads": args.threads, "gpu": gpu, "loadavg_before": [round(x, 2) for x in load_before],
    }
    with tempfile.TemporaryDirectory(prefix="sd-inference-") as tmp:
        if args.production:
            res["production"] = bench_production(Path(args.production_model), os.cpu_count() or 1,
                                                 args.production_batch_sizes, args.runs, args.seconds,
                                                 Path(tmp), gpu["cuda_measured"], args.profile_runs)
        peak = matmul_peak(args.threads, seconds=args.seconds)
        res["matmul_peak"] = peak
        res["peak_gflops"] = spec_peak(res)
        res["models"] = {}
        for name in args.specs:
            r = bench_spec(name, args.threads, args.batch_sizes, args.seconds, args.max_call_seconds, Path(tmp),
                           gpu["cuda_measured"])
            r["best_fraction_of_peak"] = r["best_gflops"] / res["peak_gflops"]
            res["models"][name] = r
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return res


# -- report ------------------------------------------------------------------------------------
def _production_markdown(p: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    cal = p["calibration"]
    cores = machine["cores"]
    lines = [
        "## The production model: before and after",
        "",
        f"`{p['model']}` (sequence transform, window {p['window']}, {p['channels']} channel): "
        f"{p['flops_per_window'] / 1e6:.2f} MFLOP per window (its convolutions and linear layers, 2 per "
        "multiply-add: encoder, generator, and the critic's trunk on the input and on the reconstruction), the "
        "same in both forms. *plain*: PyTorch's export of the same weights (every sequence model before); "
        "*fast*: the committed graph (`stream_detector/onnx_graph.py`). Configurations: "
        + "; ".join(f"*{k}*: {v}" for k, v in p["configs"].items()) + ".",
        "",
        f"Calibration, medians of {p['runs']} rounds (each round measures it before and after its figures and "
        "keeps the better of the two; each ratio is taken against its own round): NumPy sgemm "
        f"{cal['numpy_sgemm_gflops']:.1f} GFLOP/s on {cal['threads']} cores"
        + (f", {cal['numpy_sgemm_1thread_gflops']:.1f} on one thread" if "numpy_sgemm_1thread_gflops" in cal else "")
        + f"; ONNX Runtime's GEMM {cal['onnxruntime_gemm_gflops']:.1f} / {cal['onnxruntime_gemm_1thread_gflops']:.1f}; "
        f"**GEMM peak {cal['gemm_peak_gflops']:.1f} GFLOP/s** (the best of them; one thread: "
        f"{cal['gemm_peak_1thread_gflops']:.1f}); one core's GEMM per CPU-second **{cal['gemm_core_cpu_gflops']:.1f} "
        f"GFLOP** (so about {cores * cal['gemm_core_cpu_gflops']:.0f} GFLOP/s for the whole machine when it is idle); "
        f"pure-Python loop {cal['python_loop_ns_per_iteration']:.1f} ns per iteration.",
        "",
        "Wall-clock figures (windows/s, µs, GFLOP/s and their ratios to the same-run GEMM peak) move with whatever "
        "else runs on the machine, and not by the same factor as the calibration; CPU figures (per CPU-second of "
        "the process) do not: *core eff.* is GFLOP per CPU-second against one core's GEMM per CPU-second, and "
        f"*machine share* = core eff. / {cores} cores, the share of the whole machine's GEMM peak that one "
        "scoring thread reaches when nothing else runs (one thread can reach at most "
        f"1/{cores}).",
        "",
        "| form | threads | batch | windows/s (range) | µs/window | GFLOP/s | / GEMM peak | / 1-thread peak "
        "| CPU µs/window | core eff. | machine share | Python-loop iterations per window | fast / plain |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in sorted(p["rows"], key=lambda x: (x["config"], x["batch"], x["form"] != "plain")):
        lo, hi = x["windows_per_s_range"]
        share = f"{x['machine_share_estimate']:.2f}" if x.get("machine_share_estimate") is not None else "-"
        lines.append(f"| {x['form']} | {x['config']} | {x['batch']} | {x['windows_per_s']:,.0f} "
                     f"({lo:,.0f}-{hi:,.0f}) | "
                     f"{x['us_per_window']:.1f} | {x['gflops']:.1f} | {x['ratio_to_gemm_peak']:.2f} | "
                     f"{x['ratio_to_gemm_peak_1thread']:.2f} | {x['cpu_us_per_window']:.1f} | "
                     f"{x['core_efficiency']:.2f} | "
                     f"{share} | {x['python_loop_iterations_per_window']:,.0f} | "
                     + (f"{x['speedup_over_plain']:.2f}x |" if "speedup_over_plain" in x else "|"))
    lines += ["", f"**Target: {TARGET_RATIO} of the machine's GEMM peak at the worker's batch sizes, fast form: "
              + ("met" if p["target_met"] else "missed") + "** (judged on the machine share, which other load cannot "
              "move) — " + "; ".join(
                  f"batch {bs}: machine share {v['machine_share_estimate']:.2f} (core efficiency "
                  f"{v['core_efficiency']:.2f}), wall-clock {v['wall_ratio_to_gemm_peak']:.2f} of the same-run peak "
                  f"({v['wall_config']})" for bs, v in p["target"].items())
              + f". Machine: {machine['cpu_model']}, {cores} cores."]
    opts = {o["option"]: o for o in p["options"]}
    spin = next((o for name, o in opts.items() if "threads, spinning" in name), None)
    nospin = next((o for name, o in opts.items() if "threads, no spinning" in name), None)
    lines += ["", "What the figures say. The plain graph spent its time in per-window GEMMs: ONNX Runtime runs a "
              "1-D `Conv`/`ConvTranspose` as one im2col GEMM per window with 4 to 32 output columns, so batching "
              "did not help (the profile below: convolutions are nearly all of its kernel time). The fast form runs "
              "the same multiply-adds in ONNX Runtime's NCHWc convolution kernels over the whole batch. Tried and "
              "not kept: I/O binding with preallocated outputs and denormals-as-zero (within the noise, table "
              "below), ONNX Runtime's parallel execution mode (slower), a `1x3` phase convolution with zero taps "
              "(1.5x the generator's work, 5-7 % slower), the last trunk layer as an im2col GEMM (twice as slow: "
              "`Gather` copies one float at a time), channel-last GEMM formulations of the whole network (no faster "
              "than the NCHWc convolutions). Why one thread stays below "
              f"{TARGET_RATIO} of the machine's peak: a thread can reach at most 1/{cores} of it, and the "
              "convolutions, with 4 to 32 output positions, run at about half to two thirds of a core's GEMM "
              "speed, plus a fixed cost per call (about 60 nodes) that dominates at batch 1. The rest needs the "
              "other core"
              + (f": two intra-op threads with spinning reached {spin['ratio_to_gemm_peak']:.2f} of the same-run peak "
                 f"at batch {PROFILE_BATCH}" if spin else "")
              + (f", without spinning (as the worker runs: spinning threads took the core its event loop needs) "
                 f"{nospin['ratio_to_gemm_peak']:.2f}" if nospin else "")
              + "; whether to give the worker's scorer one thread, two spinning ones or a batch split is the "
              "worker's trade-off against its event loop, measured here and not changed."]
    lines += ["", f"### Session options at batch {PROFILE_BATCH}, one thread unless said", "",
              "| option | windows/s | µs/window | GFLOP/s | / GEMM peak | CPU µs/window | core eff. |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for o in p["options"]:
        lines.append(f"| {o['option']} | {o['windows_per_s']:,.0f} | {o['us_per_window']:.1f} | {o['gflops']:.1f} | "
                     f"{o['ratio_to_gemm_peak']:.2f} | {o['cpu_us_per_window']:.1f} | {o['core_efficiency']:.2f} |")
    lines += ["", f"### Where the time goes: ONNX Runtime's profiler, batch {PROFILE_BATCH}, one thread", "",
              "Kernel time per call by op type (after ONNX Runtime's own fusions: `FusedConv` is a convolution with "
              "its activation, `Conv` in the fast form runs in the NCHWc layout); the profiler adds a few µs a "
              "node, so the shares matter more than the totals.", ""]
    for form, prof in p["profile"].items():
        ops = ", ".join(f"{o['op']} {o['share']:.0%}" for o in prof["by_op_type"] if o["share"] >= 0.01)
        top = ", ".join(f"{t['node']} ({t['op']}) {t['us']:.0f} µs" for t in prof["top_nodes"][:5])
        lines.append(f"- **{form}**: {prof['nodes']} nodes, {prof['kernel_us_per_call']:,.0f} µs of kernels per "
                     f"call ({prof['kernel_us_per_call'] / PROFILE_BATCH:.1f} µs per window); by op type: {ops}. "
                     f"Largest nodes: {top}.")
    return lines


def markdown(res: dict[str, Any]) -> str:
    peak = res["matmul_peak"]
    gpu = res["gpu"]
    m = res["machine"]
    lines = [
        "# Inference: windows/s by batch size",
        "",
        f"`stream-detector bench inference`, {res['created']}, **{m['cpu_model']}, {m['cores']} cores** "
        f"({m['platform']}); ONNX Runtime {res['libraries']['onnxruntime']}, PyTorch {res['libraries']['torch']}, "
        f"NumPy {res['libraries']['numpy']}. Load average before/after: {res['loadavg_before']} / "
        f"{res['loadavg_after']} (a load above the core count means other work shared the cores: compare the "
        "ratios to the same-run calibration, not the absolute figures, across runs and machines).",
        "",
        ("CUDA: " + ("measured with ONNX Runtime's CUDA provider." if gpu["cuda_measured"] else
                     f"not measured: no NVIDIA GPU on this machine (GPU visible: {gpu['nvidia_gpu_visible']}, "
                     f"ORT CUDA provider built: {gpu['ort_cuda_provider_built']}).")),
        "",
    ]
    if "production" in res:
        lines += _production_markdown(res["production"], m) + [""]
    lines += [
        "## Scorer shapes (random weights)",
        "",
        f"{res['threads']} threads for ONNX Runtime and PyTorch alike. Measured float32 matmul peak "
        f"({peak['n']}x{peak['n']}, {peak['threads']} threads): PyTorch {peak['torch_gflops']:.1f} GFLOP/s, "
        f"ONNX Runtime {peak['onnxruntime_gflops']:.1f} GFLOP/s, NumPy {peak['numpy_gflops']:.1f} GFLOP/s (its own "
        f"BLAS threads); the peak used below is the best of them and of the production part's calibration figures "
        f"for as many threads, {res['peak_gflops']:.1f} GFLOP/s. Sequence shapes "
        "are written in the fast form (`ORT`) and measured in the plain one too (`ORT plain`).",
        "",
        "| model | network input | width | FLOP/window | best batch | ORT windows/s | GFLOP/s | share of matmul peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, mm in res["models"].items():
        lines.append(f"| {name} ({mm['note']}) | {'x'.join(map(str, mm['network_input']))} | {mm['width']} | "
                     f"{mm['flops_per_window'] / 1e6:.1f} M | {mm['best_batch']} | {mm['best_windows_per_s']:,.0f} | "
                     f"{mm['best_gflops']:.1f} | {mm['best_fraction_of_peak']:.0%} |")
    for name, mm in res["models"].items():
        cuda = any("onnxruntime_cuda_windows_per_s" in r for r in mm["rows"])
        plain = any("onnxruntime_cpu_plain_windows_per_s" in r for r in mm["rows"])
        lines += ["", f"### {name} ({mm.get('graph_form', 'plain')})", "",
                  "| batch | ORT CPU windows/s | ORT GFLOP/s |" + (" ORT plain windows/s |" if plain else "")
                  + " PyTorch eager windows/s | ORT / PyTorch |" + (" ORT CUDA windows/s |" if cuda else ""),
                  "|---:|---:|---:|" + ("---:|" if plain else "") + "---:|---:|" + ("---:|" if cuda else "")]
        for r in mm["rows"]:
            lines.append(f"| {r['batch']} | {r['onnxruntime_cpu_windows_per_s']:,.0f} | "
                         f"{r['onnxruntime_cpu_gflops']:.1f} |"
                         + (f" {r['onnxruntime_cpu_plain_windows_per_s']:,.0f} |" if plain else "")
                         + f" {r['torch_eager_windows_per_s']:,.0f} | {r['ort_over_torch']:.2f} |"
                         + (f" {r['onnxruntime_cuda_windows_per_s']:,.0f} |" if cuda else ""))
    lines += ["", "FLOPs count convolutions and linear layers (2 per multiply-add) of one scorer call: encoder, "
              "generator and the critic's feature trunk twice (input and reconstruction); the transform "
              "(normalisation, distance plot) and the element-wise work are not counted."]
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=",".join(SPECS), help=f"comma-separated, of {', '.join(SPECS)}")
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the scorer-shape tables")
    p.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    p.add_argument("--max-call-seconds", type=float, default=1.5)
    p.add_argument("--runs", type=int, default=3,
                   help="rounds of the production part (medians); at least 3 for a report")
    p.add_argument("--production-model", default=str(PRODUCTION_MODEL))
    p.add_argument("--production-batch-sizes", default=",".join(map(str, PRODUCTION_BATCHES)))
    p.add_argument("--profile-runs", type=int, default=200, help="calls profiled per form")
    p.add_argument("--no-production", dest="production", action="store_false", help="the scorer shapes only")
    p.add_argument("--quick", action="store_true", help="smoke run: one short round, two small shapes, batch 1 and 4")


def run_from_args(args: argparse.Namespace) -> Report | int:
    """Check the arguments (an ``error:`` line and status 2 for a bad one), measure, report."""
    args.specs = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.specs if m not in SPECS]
    if unknown:
        return error(f"unknown model {unknown[0]!r}; choose from {', '.join(SPECS)}")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    args.production_batch_sizes = [int(b) for b in args.production_batch_sizes.split(",") if b]
    if args.quick:
        args.specs, args.batch_sizes, args.seconds = list(QUICK_SPECS), [1, 4], 0.05
        args.runs, args.production_batch_sizes, args.profile_runs = 1, [1, 8], 20
    if args.production and not (Path(args.production_model) / "model.json").is_file():
        return error(f"no model directory at {args.production_model}")
    return Report("inference", run(args), markdown)


BENCHMARK = Benchmark("inference", __doc__.splitlines()[0], add_arguments, run_from_args)
build_parser, main = BENCHMARK.build_parser, BENCHMARK.main


if __name__ == "__main__":
    sys.exit(main())
