"""Model compute: ``stream-detector bench inference``.

For each scorer shape (the production networks of ``nets.py``, sized by
``nets.default_sizes`` unless a width is given), windows/s at batch sizes 1 to 256, ONNX
Runtime against PyTorch eager on the same module with the same thread count, the FLOPs per
window (``nets.count_flops``: convolutions and linear layers, 2 per multiply-add), and the
GFLOP/s achieved beside this machine's own measured float32 matrix-multiply peak.

Speed does not depend on the weights, so the networks are randomly initialised (no
training); the ONNX graph is exported with the project's exporter, exactly as a trained
model would be.  CPU always; ONNX Runtime's CUDA provider as well when an NVIDIA GPU is
visible (the JSON records which).  Each figure is the median of repeated calls over at
least ``--seconds`` per batch size; batch sizes stop growing once one call takes longer than
``--max-call-seconds`` (the 1-GFLOP scorer at batch 256 would take several seconds a call).

Results: ``docs/benchmarks/inference.json`` and ``inference.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

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
    """The torch ``AnomalyScorer`` (random weights, eval mode) with its (width, latent)."""
    import torch

    from ..export import AnomalyScorer
    from ..nets import Critic, Encoder, Generator, default_sizes
    from ..transforms import WindowTransform

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lo = rng.uniform(-1, 0, channels)
    stats = {"min": lo.tolist(), "max": (lo + rng.uniform(0.5, 2, channels)).tolist()}
    wt = WindowTransform(transform, stats, window, plot_size)
    shape = wt.output_shape()
    w_default, latent = default_sizes(shape, "conv")
    width = width or w_default
    scorer = AnomalyScorer(wt, Encoder("conv", shape, width, latent), Generator("conv", shape, width, latent),
                           Critic("conv", shape, width), 1.0)
    return scorer.eval(), width, latent, shape


def _time_calls(fn, seconds: float, min_calls: int = 3) -> float:
    """Median seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return statistics.median(times)


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


def bench_spec(name: str, threads: int, batch_sizes: list[int], seconds: float, max_call_seconds: float,
               workdir: Path, cuda: bool) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from ..export import export_onnx
    from ..nets import count_flops

    transform, window, channels, plot, width, note = SPECS[name]
    scorer, width, latent, shape = build_scorer(transform, window, channels, plot, width)
    flops = count_flops(scorer, torch.zeros(1, window, channels))
    path = workdir / f"{name}.onnx"
    export_onnx(scorer, window, channels, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sessions = {"onnxruntime_cpu": ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])}
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
              f"({row['onnxruntime_cpu_gflops']:.1f} GFLOP/s), torch {row['torch_eager_windows_per_s']:,.0f}", flush=True)
        if max(bs / row["onnxruntime_cpu_windows_per_s"], t_torch) > max_call_seconds:
            break
    best = max(rows, key=lambda r: r["onnxruntime_cpu_windows_per_s"])
    return {"transform": transform, "window": window, "channels": channels, "plot_size": plot if transform != "sequence"
            else None, "width": width, "latent_dim": latent, "network_input": list(shape), "note": note,
            "flops_per_window": flops, "rows": rows, "best_batch": best["batch"],
            "best_windows_per_s": best["onnxruntime_cpu_windows_per_s"], "best_gflops": best["onnxruntime_cpu_gflops"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    gpu = _gpu_status()
    load_before = os.getloadavg()
    peak = matmul_peak(args.threads, seconds=args.seconds)
    res: dict[str, Any] = {
        "benchmark": "inference", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "libraries": {"onnxruntime": ort.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "threads": args.threads, "gpu": gpu, "matmul_peak": peak,
        "peak_gflops": max(peak["torch_gflops"], peak["numpy_gflops"], peak["onnxruntime_gflops"]), "models": {},
        "loadavg_before": [round(x, 2) for x in load_before],
    }
    with tempfile.TemporaryDirectory(prefix="sd-inference-") as tmp:
        for name in args.specs:
            r = bench_spec(name, args.threads, args.batch_sizes, args.seconds, args.max_call_seconds, Path(tmp),
                           gpu["cuda_measured"])
            r["best_fraction_of_peak"] = r["best_gflops"] / res["peak_gflops"]
            res["models"][name] = r
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return res


def markdown(res: dict[str, Any]) -> str:
    peak = res["matmul_peak"]
    gpu = res["gpu"]
    lines = [
        "# Inference: windows/s by batch size",
        "",
        f"`stream-detector bench inference`, {res['created']}, {res['machine']['cpus']} CPU cores "
        f"({res['machine']['platform']}), {res['threads']} threads for ONNX Runtime and PyTorch alike; "
        f"ONNX Runtime {res['libraries']['onnxruntime']}, PyTorch {res['libraries']['torch']}. "
        f"Load average before/after: {res['loadavg_before']} / {res['loadavg_after']}.",
        "",
        f"Measured float32 matmul peak ({peak['n']}x{peak['n']}): PyTorch {peak['torch_gflops']:.1f} GFLOP/s, "
        f"ONNX Runtime {peak['onnxruntime_gflops']:.1f} GFLOP/s, NumPy {peak['numpy_gflops']:.1f} GFLOP/s (its own "
        f"BLAS threads); the peak used below is the best of them, {res['peak_gflops']:.1f} GFLOP/s.",
        "",
        ("CUDA: " + ("measured with ONNX Runtime's CUDA provider." if gpu["cuda_measured"] else
                     f"not measured: no NVIDIA GPU on this machine (GPU visible: {gpu['nvidia_gpu_visible']}, "
                     f"ORT CUDA provider built: {gpu['ort_cuda_provider_built']}).")),
        "",
        "## Best batch size per model",
        "",
        "| model | network input | width | FLOP/window | best batch | ORT windows/s | GFLOP/s | share of matmul peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in res["models"].items():
        lines.append(f"| {name} ({m['note']}) | {'x'.join(map(str, m['network_input']))} | {m['width']} | "
                     f"{m['flops_per_window'] / 1e6:.1f} M | {m['best_batch']} | {m['best_windows_per_s']:,.0f} | "
                     f"{m['best_gflops']:.1f} | {m['best_fraction_of_peak']:.0%} |")
    for name, m in res["models"].items():
        cuda = any("onnxruntime_cuda_windows_per_s" in r for r in m["rows"])
        lines += ["", f"### {name}", "",
                  "| batch | ORT CPU windows/s | ORT GFLOP/s | PyTorch eager windows/s | ORT / PyTorch |"
                  + (" ORT CUDA windows/s |" if cuda else ""),
                  "|---:|---:|---:|---:|---:|" + ("---:|" if cuda else "")]
        for r in m["rows"]:
            lines.append(f"| {r['batch']} | {r['onnxruntime_cpu_windows_per_s']:,.0f} | {r['onnxruntime_cpu_gflops']:.1f} | "
                         f"{r['torch_eager_windows_per_s']:,.0f} | {r['ort_over_torch']:.2f} |"
                         + (f" {r['onnxruntime_cuda_windows_per_s']:,.0f} |" if cuda else ""))
    lines += ["", "FLOPs count convolutions and linear layers (2 per multiply-add) of one scorer call: encoder, "
              "generator and the critic's feature trunk twice (input and reconstruction); the transform "
              "(normalisation, distance plot) and the element-wise work are not counted, which is why small "
              "models sit far below the matmul peak: their time is per-call overhead and memory traffic, "
              "not multiply-adds."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-detector bench inference", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--models", default=",".join(SPECS), help=f"comma-separated, of {', '.join(SPECS)}")
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    p.add_argument("--max-call-seconds", type=float, default=1.5)
    p.add_argument("--quick", action="store_true", help="smoke run: two small models, batch 1 and 4, short timings")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    args.specs = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.specs if m not in SPECS]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; choose from {', '.join(SPECS)}", file=sys.stderr)
        return 2
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    if args.quick:
        args.specs, args.batch_sizes, args.seconds = list(QUICK_SPECS), [1, 4], 0.05
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "inference.md").write_text(markdown(res))
    print(f"wrote {out / 'inference.json'} and {out / 'inference.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
