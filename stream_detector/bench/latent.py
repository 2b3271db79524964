"""``stream-detector bench latent``: AnoGAN latent search against the encoder's one-pass score.

The question: how much detection does the slow, precise score
(:mod:`stream_detector.training.latent_search`) buy over the encoder's score, and at what cost
per window?  Both scores use the same networks and the same formula (``A_R + kappa * A_D``,
``lam = kappa / (1 + kappa)``); only the latent code differs (``E(x)`` against the best code of
``restarts x steps`` Adam steps from ``E(x)`` and random draws).  Measured on:

* **MNIST**, the one-class protocol of :mod:`.paper` on the ``x_test`` pool (normal = the other
  nine digits, 80 % of them train; test = the other 20 % plus every image of the digit), the
  paper's network configuration (:data:`.paper.MNIST_CONFIG`) with a short training budget in
  iterations (not the paper's wall-clock budget: a seed gives the same networks again), a few
  digits chosen before the run and several seeds.  Latent search at 4 x 50 runs on a random
  subsample of the test set, 16 x 100 on a smaller one; the encoder is scored on the same
  subsamples (and on the whole test set, for reference).
* **SMAP**, the committed per-channel models ``models/<chan>/1`` (the ``bench telemanom``
  configuration, the ones the demo serves) on their channels' test splits: windows every
  ``--smap-stride`` points (a window is labelled by its last point, as the causal point score
  maps it), 16 x 100 on every fourth of them.  One training per channel (the committed model)
  and one search seed: the SMAP figures are single runs.

AUPRC and ROC-AUC (anomaly = positive), seconds per window of each score on one torch
thread (the encoder's through ONNX Runtime for SMAP, as the worker runs it, and through
PyTorch for MNIST), and the optimiser's learning rate checked label-free: the mean objective
reached on normal *training* inputs for a few rates (lower is a better search; no label read).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .framework import Benchmark, Report, error
from .machine import describe

DEFAULT_DIGITS = (0, 7)  # chosen before any run: the paper's best digit and one of its weakest
DEFAULT_CHANNELS = ("G-6", "E-11", "P-2")  # three of the demo's channels, smallest labelled fractions
LR_CHOICES = (0.01, 0.05, 0.1, 0.2)


def _metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    from ..training.evaluation import auprc, roc_auc

    return {"auprc": float(auprc(labels, scores)), "roc_auc": float(roc_auc(labels, scores))}


def _search(nets, x, restarts: int, steps: int, seed: int, lr: float | None = None) -> dict:
    """Refined scores of transformed inputs ``x`` with encoder/generator/critic (MNIST)."""
    from ..training import latent_search as ls

    enc, gen, critic, kappa = nets
    lam = ls.default_lambda(kappa)
    started = time.perf_counter()
    found = ls.search_codes(enc, gen, critic, x, restarts=restarts, steps=steps, lam=lam, seed=seed,
                            lr=ls.DEFAULT_LR if lr is None else lr)
    seconds = time.perf_counter() - started
    return {"score": found["objective"] / (1 - lam), "objective": found["objective"],
            "encoder_score": found["encoder_a_r"] + kappa * found["encoder_a_d"], "seconds_per_window": seconds / len(x),
            "restart": found["restart"]}


def _lr_check(fn, lrs=LR_CHOICES) -> dict:
    """Mean objective reached (4 x 50) for each learning rate on normal training inputs: label-free."""
    return {str(lr): float(np.mean(fn(lr))) for lr in lrs}


def _cell(row: dict, key: str) -> dict:
    return {k: row[key][k] for k in ("auprc", "roc_auc")}


# ------------------------------------------------------------------ MNIST
def run_mnist_one(digit: int, seed: int, a: argparse.Namespace, x_all: np.ndarray, y_all: np.ndarray) -> dict:
    import torch

    from ..training.export import anomaly_scores
    from ..training.wgan import TrainConfig, train
    from .paper import MNIST_CONFIG, protocol_split

    train_idx, test_idx, labels, _ = protocol_split(y_all, digit, 0.8, seed, stratify=False, validation=False)
    cfg = TrainConfig(**{**MNIST_CONFIG, "iterations": a.iterations, "encoder_iterations": a.encoder_iterations,
                         "max_seconds": None, "seed": seed, "log_every": 1000})
    started = time.perf_counter()
    nets = train(torch.from_numpy(x_all[train_idx]), cfg, progress=False)
    train_seconds = time.perf_counter() - started
    x_test = torch.from_numpy(x_all[test_idx])
    with torch.no_grad():
        t = time.perf_counter()
        enc_all = torch.cat([anomaly_scores(x_test[i:i + 1024], nets.encoder, nets.generator, nets.critic, cfg.kappa)[0]
                             for i in range(0, len(x_test), 1024)]).numpy()
        enc_seconds = (time.perf_counter() - t) / len(x_test)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(test_idx))
    sub, thorough = order[:a.mnist_sample], order[:a.mnist_thorough_sample]
    nets4 = (nets.encoder, nets.generator, nets.critic, cfg.kappa)
    fast = _search(nets4, x_test[sub], 4, 50, seed)
    assert np.allclose(fast["encoder_score"], enc_all[sub], rtol=1e-4, atol=1e-5)
    row = {"digit": digit, "seed": seed, "n_train": int(len(train_idx)), "n_test": int(len(test_idx)),
           "anomalous_fraction": float(labels.mean()), "train_seconds": round(train_seconds, 1),
           "gan_iterations": len(nets.history["wasserstein"]), "encoder_iterations": len(nets.history["encoder"]),
           "encoder_all": _metrics(labels, enc_all), "encoder_seconds_per_window": enc_seconds,
           "n_search": int(len(sub)), "encoder": _metrics(labels[sub], enc_all[sub]),
           "search_4x50": {**_metrics(labels[sub], fast["score"]), "seconds_per_window": fast["seconds_per_window"],
                           "won_by_encoder_start": float(np.mean(fast["restart"] == 0))}}
    if a.mnist_thorough_sample:
        slow = _search(nets4, x_test[thorough], 16, 100, seed)
        row.update({"n_thorough": int(len(thorough)), "encoder_thorough": _metrics(labels[thorough], enc_all[thorough]),
                    "search_4x50_thorough": _metrics(labels[thorough], fast["score"][:len(thorough)]),
                    "search_16x100": {**_metrics(labels[thorough], slow["score"]),
                                      "seconds_per_window": slow["seconds_per_window"],
                                      "won_by_encoder_start": float(np.mean(slow["restart"] == 0))}})
    if a.lr_check and seed == a.seeds[0]:
        x_normal = torch.from_numpy(x_all[train_idx[rng.permutation(len(train_idx))[:a.lr_check]]])
        row["lr_check"] = _lr_check(lambda lr: _search(nets4, x_normal, 4, 50, seed, lr)["objective"])
    return row


def run_mnist(a: argparse.Namespace) -> dict:
    from .paper import MNIST_CONFIG, load_mnist

    x, y = load_mnist("test", a.data)
    rows = []
    for digit in a.digits:
        for seed in a.seeds:
            row = run_mnist_one(digit, seed, a, x, y)
            rows.append(row)
            if not a.quiet:
                print(f"mnist digit {digit} seed {seed}: encoder AUPRC {row['encoder']['auprc']:.3f}, "
                      f"4x50 {row['search_4x50']['auprc']:.3f}"
                      + (f", 16x100 {row['search_16x100']['auprc']:.3f} (encoder "
                         f"{row['encoder_thorough']['auprc']:.3f} on the same {row['n_thorough']})"
                         if "search_16x100" in row else "") + f"; trained in {row['train_seconds']:.0f} s", flush=True)
    return {"protocol": "one-class on the x_test pool (paper.protocol_split, 80/20 of the normal digits)",
            "config": {**MNIST_CONFIG, "iterations": a.iterations, "encoder_iterations": a.encoder_iterations,
                       "max_seconds": None},
            "digits": list(a.digits), "seeds": list(a.seeds), "rows": rows, "summary": _summary(rows, "digit")}


def _summary(rows: list[dict], key: str) -> dict:
    """Mean and standard deviation over seeds, per digit/channel, of each score's AUPRC and ROC-AUC."""
    out: dict = {}
    for k in sorted({r[key] for r in rows}, key=str):
        rs = [r for r in rows if r[key] == k]
        cells = {}
        for name in ("encoder", "search_4x50", "encoder_thorough", "search_4x50_thorough", "search_16x100"):
            if name in rs[0]:
                cells[name] = {m: [float(np.mean([r[name][m] for r in rs])), float(np.std([r[name][m] for r in rs]))]
                               for m in ("auprc", "roc_auc")}
        out[str(k)] = {"runs": len(rs), **cells}
    return out


# ------------------------------------------------------------------ SMAP
def run_smap_channel(chan: str, a: argparse.Namespace) -> dict:
    from ..data import load_ranges
    from ..runtime.scoring import Scorer, sliding_windows
    from ..training.evaluation import mask_from_ranges
    from ..training.export import scorer_from_model_dir
    from ..training.latent_search import latent_search
    from .datasets import data_root

    root = Path(a.data) if a.data else data_root()
    model = Path(a.models) / chan / "1"
    onnx = Scorer(model, threads=a.threads)
    net = scorer_from_model_dir(model)
    cols = [int(c[1:]) for c in onnx.channels]  # the bench's channel names: c<column>
    test = np.load(root / "smap" / "test" / f"{chan}.npy").astype(np.float32)[:, cols]
    train = np.load(root / "smap" / "train" / f"{chan}.npy").astype(np.float32)[:, cols]
    labels_pt = mask_from_ranges(load_ranges(str(root / "smap" / "labeled_anomalies.csv"), len(test), chan), len(test))
    windows = np.ascontiguousarray(sliding_windows(test, onnx.window, a.smap_stride))
    ends = np.arange(len(windows)) * a.smap_stride + onnx.window - 1
    labels = labels_pt[ends].astype(np.int64)
    t = time.perf_counter()
    enc_onnx = onnx.score_batches(windows, 256)[0]
    onnx_seconds = (time.perf_counter() - t) / len(windows)
    fast = latent_search(net, windows, restarts=4, steps=50, seed=0)
    row = {"channel": chan, "model": str(model), "windows": int(len(windows)), "stride": a.smap_stride,
           "anomalous_fraction": float(labels.mean()),
           "torch_vs_onnx_encoder_max_abs_diff": float(np.max(np.abs(fast["encoder_score"] - enc_onnx))),
           "encoder": {**_metrics(labels, enc_onnx), "seconds_per_window": onnx_seconds},
           "search_4x50": {**_metrics(labels, fast["score"]), "seconds_per_window": fast["seconds_per_window"],
                           "won_by_encoder_start": float(np.mean(fast["restart"] == 0))}}
    if a.smap_thorough_every:
        sel = np.arange(0, len(windows), a.smap_thorough_every)
        slow = latent_search(net, windows[sel], restarts=16, steps=100, seed=0)
        row.update({"n_thorough": int(len(sel)), "encoder_thorough": _metrics(labels[sel], enc_onnx[sel]),
                    "search_4x50_thorough": _metrics(labels[sel], fast["score"][sel]),
                    "search_16x100": {**_metrics(labels[sel], slow["score"]),
                                      "seconds_per_window": slow["seconds_per_window"],
                                      "won_by_encoder_start": float(np.mean(slow["restart"] == 0))}})
    if a.lr_check:
        spacing = max(1, (len(train) - onnx.window) // a.lr_check)
        normal = np.ascontiguousarray(sliding_windows(train, onnx.window, spacing))[:a.lr_check]
        row["lr_check"] = _lr_check(lambda lr: latent_search(net, normal, 4, 50, lr=lr)["objective"])
    return row


def run_smap(a: argparse.Namespace) -> dict:
    rows = []
    for chan in a.channels:
        row = run_smap_channel(chan, a)
        rows.append(row)
        if not a.quiet:
            print(f"smap {chan}: encoder AUPRC {row['encoder']['auprc']:.3f}, 4x50 {row['search_4x50']['auprc']:.3f}"
                  + (f", 16x100 {row['search_16x100']['auprc']:.3f} (encoder {row['encoder_thorough']['auprc']:.3f} "
                     f"on the same {row['n_thorough']})" if "search_16x100" in row else ""), flush=True)
    return {"models": a.models, "channels": list(a.channels), "rows": rows}


# ------------------------------------------------------------------ report
def _ms(v: float) -> str:
    return f"{v * 1e3:.2f}"


def _pm(cell: list[float]) -> str:
    return f"{cell[0]:.3f} ± {cell[1]:.3f}"


def _summary_lines(m: dict | None, s: dict | None) -> list[str]:
    """AUPRC of the search minus the encoder's on the same inputs, per run, and the cost ratio."""
    out = []
    for name, data, key in (("MNIST", m, "digit"), ("SMAP", s, "channel")):
        if not data:
            continue
        rows = data["rows"]
        d4 = [x["search_4x50"]["auprc"] - x["encoder"]["auprc"] for x in rows]
        text = (f"- {name} ({len(rows)} runs): AUPRC of 4 x 50 minus the encoder's, mean {np.mean(d4):+.3f} "
                f"(from {min(d4):+.3f} to {max(d4):+.3f}; better in {sum(v > 0.005 for v in d4)}, worse in "
                f"{sum(v < -0.005 for v in d4)})")
        if all("search_16x100" in x for x in rows):
            d16 = [x["search_16x100"]["auprc"] - x["encoder_thorough"]["auprc"] for x in rows]
            text += (f"; 16 x 100 minus the encoder on its subset, mean {np.mean(d16):+.3f} (from {min(d16):+.3f} "
                     f"to {max(d16):+.3f})")
        won = np.mean([x["search_4x50"]["won_by_encoder_start"] for x in rows])
        out.append(text + f"; the code found from E(x) won over the random starts for {won:.0%} of the inputs at "
                   "4 x 50.")
    return out


def markdown(r: dict) -> str:
    host = r.get("host") or describe()
    lines = ["# AnoGAN latent search against the encoder score", "",
             "Same networks and formula (`A_R + kappa * A_D`, lambda = kappa / (1 + kappa)); only the latent code "
             "differs: the encoder's `E(x)` against the best code of restarts x steps Adam steps (lr "
             f"{r['settings']['lr']}) started from `E(x)` and random draws from the prior "
             "(`stream_detector/training/latent_search.py`). AUPRC / ROC-AUC with the anomaly as the positive class.",
             "", f"Machine: {host['cpu_model']}, {host['cores']} cores; {r['settings']['threads']} torch / ONNX Runtime "
             "thread(s) per measurement, on a machine shared with another session (speeds are indicative).", ""]
    m, s = r.get("mnist"), r.get("smap")
    lines += ["## Summary", ""] + _summary_lines(m, s) + [""]
    if m:
        c = m["config"]
        lines += ["## MNIST (one-class, x_test pool)", "",
                  f"Training: {c['arch']} width {c['width']}, latent {c['latent_dim']}, {c['iterations']} GAN + "
                  f"{c['encoder_iterations']} encoder iterations (a short budget; the paper's figures use far longer), "
                  f"seeds {', '.join(map(str, m['seeds']))} (mean ± std over seeds). Encoder and 4 x 50 on the same "
                  f"random {m['rows'][0]['n_search']} test images; 16 x 100 and the encoder again on the first "
                  f"{m['rows'][0].get('n_thorough', 0)} of them.", "",
                  "| digit | encoder AUPRC | 4x50 AUPRC | encoder ROC-AUC | 4x50 ROC-AUC | encoder AUPRC (16x100 subset) "
                  "| 16x100 AUPRC | 4x50 AUPRC (same subset) |", "|---|---|---|---|---|---|---|---|"]
        for d, cell in m["summary"].items():
            lines.append(f"| {d} | {_pm(cell['encoder']['auprc'])} | {_pm(cell['search_4x50']['auprc'])} | "
                         f"{_pm(cell['encoder']['roc_auc'])} | {_pm(cell['search_4x50']['roc_auc'])} | "
                         + (f"{_pm(cell['encoder_thorough']['auprc'])} | {_pm(cell['search_16x100']['auprc'])} | "
                            f"{_pm(cell['search_4x50_thorough']['auprc'])} |" if "search_16x100" in cell else "- | - | - |"))
        enc = np.median([x["encoder_seconds_per_window"] for x in m["rows"]])
        f4 = np.median([x["search_4x50"]["seconds_per_window"] for x in m["rows"]])
        lines += ["", f"Milliseconds per image (median over runs): encoder (PyTorch, batch 1024) {_ms(enc)}, "
                  f"4 x 50 {_ms(f4)} ({f4 / enc:.0f}x)"
                  + (f", 16 x 100 {_ms(np.median([x['search_16x100']['seconds_per_window'] for x in m['rows']]))}"
                     if "search_16x100" in m["rows"][0] else "") + ". Whole-test-set encoder AUPRC per run: "
                  + ", ".join(f"{x['digit']}/s{x['seed']} {x['encoder_all']['auprc']:.3f}" for x in m["rows"]) + "."]
    if s:
        lines += ["", "## SMAP (committed per-channel models, test splits)", "",
                  f"Windows every {s['rows'][0]['stride']} points, labelled by their last point; one model per channel "
                  "(`models/<chan>/1`) and one search seed: single runs, no spread.", "",
                  "| channel | windows | anomalous | encoder AUPRC | 4x50 AUPRC | encoder ROC-AUC | 4x50 ROC-AUC | "
                  "16x100 subset | encoder AUPRC (subset) | 4x50 AUPRC (subset) | 16x100 AUPRC | ms/window encoder "
                  "(ONNX) | 4x50 | 16x100 |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in s["rows"]:
            t = "search_16x100" in x
            lines.append(f"| {x['channel']} | {x['windows']} | {x['anomalous_fraction']:.1%} | "
                         f"{x['encoder']['auprc']:.3f} | {x['search_4x50']['auprc']:.3f} | {x['encoder']['roc_auc']:.3f} | "
                         f"{x['search_4x50']['roc_auc']:.3f} | {x.get('n_thorough', '-')} | "
                         + (f"{x['encoder_thorough']['auprc']:.3f} | {x['search_4x50_thorough']['auprc']:.3f} | "
                            f"{x['search_16x100']['auprc']:.3f} | " if t else "- | - | - | ")
                         + f"{_ms(x['encoder']['seconds_per_window'])} | {_ms(x['search_4x50']['seconds_per_window'])} | "
                         + (f"{_ms(x['search_16x100']['seconds_per_window'])} |" if t else "- |"))
    checks = [(f"MNIST digit {x['digit']}", x["lr_check"]) for x in (m or {}).get("rows", []) if "lr_check" in x]
    checks += [(f"SMAP {x['channel']}", x["lr_check"]) for x in (s or {}).get("rows", []) if "lr_check" in x]
    if checks:
        lrs = list(checks[0][1])
        lines += ["", "## The learning rate, checked without labels", "",
                  "Mean objective reached at 4 x 50 on normal *training* inputs (lower: the search fits better; "
                  "no label read).", "", "| inputs | " + " | ".join(f"lr {lr}" for lr in lrs) + " |",
                  "|---|" + "---|" * len(lrs)]
        lines += [f"| {name} | " + " | ".join(f"{c[lr]:.4g}" for lr in lrs) + " |" for name, c in checks]
    lines += ["", f"Reproduce: `{r['settings']['command']}`", ""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--digits", default=",".join(map(str, DEFAULT_DIGITS)), help="MNIST anomalous digits ('' skips MNIST)")
    p.add_argument("--seeds", default="0,1,2", help="MNIST seeds (training and search)")
    p.add_argument("--iterations", type=int, default=800, help="MNIST GAN iterations (generator steps)")
    p.add_argument("--encoder-iterations", type=int, default=800)
    p.add_argument("--mnist-sample", type=int, default=500, help="MNIST test images searched at 4 x 50")
    p.add_argument("--mnist-thorough-sample", type=int, default=150, help="of those, searched at 16 x 100 (0: none)")
    p.add_argument("--channels", default=",".join(DEFAULT_CHANNELS), help="SMAP channels ('' skips SMAP)")
    p.add_argument("--models", default="models", help="folder of the per-channel models <chan>/1")
    p.add_argument("--smap-stride", type=int, default=8, help="points between SMAP windows")
    p.add_argument("--smap-thorough-every", type=int, default=4, help="every k-th SMAP window at 16 x 100 (0: none)")
    p.add_argument("--lr-check", type=int, default=200, help="normal training inputs for the label-free lr check (0: none)")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    p.add_argument("--data", help="shared data folder (default $STREAM_DETECTOR_DATA or ../shared/data)")
    p.add_argument("--quiet", action="store_true")


def run(a: argparse.Namespace) -> Report | int:
    import shlex
    import sys

    import torch

    from ..training.latent_search import DEFAULT_LR

    try:
        a.digits = [int(d) for d in a.digits.split(",") if d.strip()]
        a.seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        return error(f"--digits/--seeds: expected comma-separated integers, got {a.digits!r} / {a.seeds!r}")
    a.channels = [c for c in a.channels.split(",") if c.strip()]
    if a.digits and not a.seeds:
        return error("--seeds: at least one seed")
    torch.set_num_threads(a.threads)
    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("stream-detector") else []
    result: dict = {"settings": {"lr": DEFAULT_LR, "threads": a.threads, "lam": "kappa / (1 + kappa)",
                                 "command": "stream-detector " + " ".join(map(shlex.quote, argv)) if argv else
                                 "stream-detector bench latent --out docs/benchmarks"}}
    started = time.perf_counter()
    if a.digits:
        result["mnist"] = run_mnist(a)
    if a.channels:
        result["smap"] = run_smap(a)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return Report("latent_search", result, markdown)


BENCHMARK = Benchmark("latent", "AnoGAN latent search vs the encoder score on MNIST and SMAP: AUPRC, ROC-AUC, "
                      "seconds per window", add_arguments, run)
build_parser, main = BENCHMARK.build_parser, BENCHMARK.main
