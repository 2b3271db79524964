"""Per-channel detection on a folder in the telemanom layout (NASA SMAP, MSL, ...).

``stream-detector bench telemanom --data DIR``: ``DIR/train/<chan>.npy``, ``DIR/test/<chan>.npy``
and ``DIR/labeled_anomalies.csv``.  One configuration for every channel (window, transform,
network, training budget, thresholds: all fixed before looking at any test label).  For
each channel: train on its train split (the telemetry value, column 0, by default), score its
test split causally with stride 1 (a point's score is the window that ends at it), and turn
scores into detections with three label-free thresholds:

* ``quantile``: the model card's threshold, the 99.5 % quantile of held-out training windows;
* ``pot``: extreme-value (POT) threshold fitted on the same held-out training scores;

both forming episodes as the worker does (open at the threshold, close below the card's
release level, the 95 % quantile), and
* ``dynamic``: a causal simplification of telemanom's dynamic error threshold with pruning, on
  the test stream's own past (window 2000, step 100, smoothing span 30);
* ``telemanom``: the procedure as telemanom's reference implementation runs it (windows of 30
  batches of 70 points, smoothing span 105, error buffer 100, at most 5 sequences per epsilon,
  pruning with p = 0.13 against the largest unflagged error, inverted errors too), see
  ``stream_detector.training.calibration.telemanom_flags``.

Per channel the raw scores are kept (``<models>/<chan>/scores.npz``: test scores, held-out
calibration scores, the card's threshold and release level, timings), and ``--rescore DIR``
re-applies the thresholds to them without training anything.

Reported per channel and in total: event-level F1 (overlapping segments, Orion's counting:
tp/fp/fn summed over channels), precision, recall, point-adjusted F1, AUPRC, ROC-AUC, VUS-PR
(TSB-AD), ESA-ADB's corrected event-wise F0.5 and the affiliation F1 (telemeval) of the
``telemanom`` detections, and the training and scoring seconds.  Labels are read only by the
evaluation.

**Detectors and seeds.**  ``--detectors wgan,zscore,iforest,hst,lstm`` (default: all) runs the
WGAN model and the peers of :mod:`stream_detector.bench.peers` on the same channels, thresholded
by the same procedures; ``--seeds 0,1,2`` (default) repeats every detector per seed, and the
report gives each figure as mean ± standard deviation over the seeds.  Training is budgeted in
iterations (``max_seconds`` is off by default), so a seed on a machine gives the same scores
again.  Raw scores go to ``<models>/<detector>/seed<k>/<chan>/scores.npz``; ``--rescore DIR``
re-reads them all.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..training.fit import ConfigKeyError, SeriesModelConfig, default_score_kind
from . import machine
from .comparison import DETECTORS, ENSEMBLE, aggregate, cell, parse_detectors, parse_seeds, report_order
from .framework import Benchmark, Report

PUBLISHED_SMAP_F1 = {"AER (Wong et al. 2022)": 0.764, "LSTM dynamic threshold (Hundman et al. 2018)": 0.732,
                     "TadGAN (Geiger et al. 2020)": 0.573}
METHODS = ("quantile", "pot", "dynamic", "telemanom")
# Training budgeted in iterations (200 generator steps of 5 critic steps, 200 encoder steps: about
# 40 s a channel on one busy core of a 2-core machine, so 54 channels x 3 seeds fit in about an
# hour on 2 cores), never in seconds: a seed gives the same scores.
DEFAULT_CONFIG = dict(window=64, transform="sequence", arch="conv", width=None, latent_dim=None, iterations=200,
                      encoder_iterations=200, encoder_mode="izi_f", kappa=1.0, max_seconds=None, channels="0",
                      pot_risk=1e-4, dynamic_history=2000, dynamic_step=100, telemanom_batch=70,
                      telemanom_windows=30, telemanom_smoothing=0.05, telemanom_buffer=100, telemanom_p=0.13,
                      telemanom_l_s=250, telemanom_inverse=True, merge_gap=0, vus_window=100, seed=0,
                      score_columns=None)
# train's default kind for the transform (combined for sequence: the leave-one-dataset-out rule,
# quality.md); a run saved before the key was in this configuration ran:
DEFAULT_CONFIG["score"] = default_score_kind(DEFAULT_CONFIG["transform"])
SCORE_BEFORE_THE_KEY = "fanogan"
# keys of the flat configuration that are the runner's own (channels read, thresholds, evaluation)
RUNNER_KEYS = tuple(k for k in DEFAULT_CONFIG if k.startswith(("telemanom_", "dynamic_"))) + (
    "channels", "pot_risk", "merge_gap", "vus_window", "score_columns")


@dataclass(frozen=True)
class TelemanomConfig:
    """The one configuration for every channel, typed: the model (:class:`SeriesModelConfig`,
    its training a :class:`~stream_detector.training.wgan.TrainConfig`) and the runner's own
    settings, kept flat (``runner``) as :func:`method_flags` reads them.  Reports keep the flat
    mapping; :meth:`from_dict` reads it and names a key that belongs to neither."""

    model: SeriesModelConfig
    runner: dict

    @classmethod
    def from_dict(cls, d: dict) -> TelemanomConfig:
        model, runner = SeriesModelConfig.from_flat(d, RUNNER_KEYS)
        return cls(model, {**{k: DEFAULT_CONFIG[k] for k in RUNNER_KEYS}, **runner})


def channel_ids(data_dir: Path, spacecraft: str | None) -> list[str]:
    labels = data_dir / "labeled_anomalies.csv"
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    ids = []
    for r in rows:
        if spacecraft and r.get("spacecraft") and r["spacecraft"] != spacecraft:
            continue
        if r["chan_id"] not in ids and (data_dir / "test" / f"{r['chan_id']}.npy").exists():
            ids.append(r["chan_id"])
    return ids


def _columns(spec: str, n: int) -> list[int]:
    return list(range(n)) if spec == "all" else [int(c) for c in spec.split(",")]


def _event_report(labels: np.ndarray, flagged: np.ndarray, merge_gap: int) -> dict:
    from ..training.evaluation import event_counts, merge_ranges, point_adjusted_f1, ranges_from_mask

    predicted = merge_ranges(ranges_from_mask(flagged), merge_gap)
    counts = event_counts(ranges_from_mask(labels), predicted)
    pa = point_adjusted_f1(labels, flagged)
    return {**counts, "point_adjusted_f1": pa["f1"], "predicted": [list(map(int, r)) for r in predicted]}


def run_channel(task: dict) -> dict:
    """Fit, score and evaluate one channel with the task's detector (runs in a worker process):
    the WGAN model (``wgan``) or a peer of :mod:`stream_detector.bench.peers`."""
    c, d, chan = task["config"], Path(task["data"]), task["channel"]
    detector = task.get("detector", "wgan")
    train_all = np.load(d / "train" / f"{chan}.npy").astype(np.float32)
    test_all = np.load(d / "test" / f"{chan}.npy").astype(np.float32)
    cols = _columns(c["channels"], train_all.shape[1])
    model_dir = Path(task["models"]) / chan
    if detector == "wgan":
        saved = _wgan_scores(task, train_all[:, cols], test_all[:, cols], cols, model_dir)
    else:
        from .peers import fit_and_score_peer, make_peer

        peer = make_peer(detector, cols, int(c["seed"]), **({"threads": task["threads"]} if detector == "lstm" else {}))
        saved = fit_and_score_peer(peer, train_all, test_all)  # the LSTM reads every column, as telemanom's
    if task.get("keep_scores"):
        model_dir.mkdir(parents=True, exist_ok=True)
        np.savez(model_dir / "scores.npz", **saved)
    return evaluate_channel(chan, d, c, saved)


def held_out_points(train_points: int, window: int) -> int:
    """How many of a channel's last train points the WGAN model holds out (calibrates on, never
    trains on): 20 %, at least a window and 50 points more."""
    return max(int(0.2 * train_points), window + 50)


def _wgan_scores(task: dict, train: np.ndarray, test: np.ndarray, cols: list[int], model_dir: Path) -> dict:
    """Train the WGAN model on ``train`` (its last 20 % held out), score ``test`` and the held-out part."""
    import torch

    from ..training.fit import fit_and_score, score_with_model

    torch.set_num_threads(task["threads"])
    config = TelemanomConfig.from_dict(task["config"])
    model = config.model
    if config.runner.get("score_columns") is not None:  # conditioned on the other columns read
        model = replace(model, score_channels=tuple(f"c{i}" for i in _columns(str(config.runner["score_columns"]),
                                                                           len(cols))))
    calib_points = held_out_points(len(train), model.window)
    fraction = 1.0 - calib_points / len(train)
    fit = fit_and_score(train, test, [f"c{i}" for i in cols], model_dir, model, train_fraction=fraction,
                        name=task["channel"], source=f"{Path(task['data']).name}/train/{task['channel']}.npy",
                        threads=task["threads"])
    card, scores = fit.card, fit.points
    calib = score_with_model(fit.scores.scorer, train[len(train) - calib_points:], stride=1).windows["scores"]
    if task.get("keep_scores"):
        np.save(model_dir / "test_scores.npy", scores)
    return {"test_scores": scores, "calibration_scores": np.asarray(calib, dtype=np.float64),
            "quantile_threshold": card.threshold["value"], "release": card.threshold["release"],
            "train_points": len(train), "train_seconds": fit.train_seconds, "score_seconds": fit.scores.seconds,
            "stopped_early_by_budget": bool(card.training["stopped_early_by_budget"])}


def evaluate_channel(chan: str, data: Path, c: dict, saved: dict) -> dict:
    """Thresholds and event counts for one channel from its saved raw scores (no training):
    shared by a full run and by ``--rescore``."""
    from ..training.evaluation import auprc, roc_auc

    scores = np.asarray(saved["test_scores"], dtype=np.float64)
    ranges, labels = _labels(data, chan, len(scores))
    thresholds, flags = method_flags(saved, c)
    finite = np.isfinite(scores)
    y, s = labels[finite], scores[finite]
    both = y.any() and not y.all()
    return {"channel": chan, "points": int(len(scores)), "train_points": int(saved["train_points"]),
            "label_ranges": ranges, "auprc": auprc(y, s) if both else None, "roc_auc": roc_auc(y, s) if both else None,
            "range_metrics": range_metrics(labels, scores, flags["telemanom"], int({**DEFAULT_CONFIG, **c}["vus_window"]))
            if both and finite.any() else None,
            "train_seconds": round(float(saved["train_seconds"]), 1),
            "score_seconds": round(float(saved["score_seconds"]), 2),
            "stopped_early_by_budget": bool(saved["stopped_early_by_budget"]), "thresholds": thresholds,
            "methods": {m: _event_report(labels, flags[m], c["merge_gap"]) for m in METHODS}}


def range_metrics(labels: np.ndarray, scores: np.ndarray, flags: np.ndarray, vus_window: int) -> dict:
    """VUS-PR / VUS-ROC of the scores, ESA-ADB's corrected event-wise F0.5 and the affiliation F1
    of the ``telemanom`` detections (the spacecraft benchmarks' metrics, from their packages)."""
    from ..training.range_metrics import affiliation_f1, esa_event_f05, vus_pr

    return {**vus_pr(labels, scores, vus_window), "esa_f05": esa_event_f05(labels, flags)["f05"],
            "affiliation_f1": affiliation_f1(labels, flags)["f1"]}


def _labels(data: Path, chan: str, n: int) -> tuple[list, np.ndarray]:
    from ..data import load_ranges
    from ..training.evaluation import mask_from_ranges

    ranges = load_ranges(str(Path(data) / "labeled_anomalies.csv"), n, chan)
    return ranges, mask_from_ranges(ranges, n)


def method_flags(saved: dict, c: dict, methods: tuple[str, ...] = METHODS) -> tuple[dict, dict]:
    """``(static thresholds, per-point flags per method)`` from a channel's saved raw scores."""
    from ..runtime.episodes import hysteresis_flags
    from ..runtime.thresholds import dynamic_threshold_flags, telemanom_flags
    from ..training.calibration import pot_threshold

    scores = np.asarray(saved["test_scores"], dtype=np.float64)
    calib = np.asarray(saved["calibration_scores"], dtype=np.float64)
    thresholds = {"quantile": float(saved["quantile_threshold"]),
                  "pot": pot_threshold(calib, risk=c["pot_risk"])["value"]}
    release = float(saved["release"])  # episodes close below it, as in the worker
    flags = {m: hysteresis_flags(scores, t, release) for m, t in thresholds.items() if m in methods}
    if "dynamic" in methods:
        flags["dynamic"] = dynamic_threshold_flags(scores, **_dynamic_kwargs(c))
    if "telemanom" in methods:
        flags["telemanom"] = telemanom_flags(scores, **_telemanom_kwargs(c))
    return thresholds, flags


def _dynamic_kwargs(c: dict) -> dict:
    return {"history": c["dynamic_history"], "step": c["dynamic_step"]}


def _telemanom_kwargs(c: dict) -> dict:
    d = {**DEFAULT_CONFIG, **c}  # configurations saved before these keys existed get the defaults
    return {"batch_size": d["telemanom_batch"], "window_size": d["telemanom_windows"],
            "smoothing_perc": d["telemanom_smoothing"], "error_buffer": d["telemanom_buffer"], "p": d["telemanom_p"],
            "l_s": d["telemanom_l_s"], "inverse": d["telemanom_inverse"]}


def rescore_channel(task: dict) -> dict:
    """Thresholds and evaluation of one channel from the raw scores a previous run saved (and,
    with ``synthetic``, the model's synthetic-fault check on the held-out train points)."""
    with np.load(Path(task["models"]) / task["channel"] / "scores.npz") as z:
        saved = {k: z[k] for k in z.files}
    row = evaluate_channel(task["channel"], Path(task["data"]), task["config"], saved)
    if task.get("synthetic") and (Path(task["models"]) / task["channel"] / "model.onnx").exists():
        row["synthetic"] = synthetic_channel(task)
    return row


def synthetic_channel(task: dict) -> dict:
    """:func:`~stream_detector.training.synthetic.synthetic_check` of one channel's saved model on
    the train split's held-out last points (the ones it calibrated on, never trained on): how well
    it singles out injected faults, with no label read (seed 0, 20 faults of each kind)."""
    from ..runtime.scoring import Scorer
    from ..training.synthetic import synthetic_check

    scorer = Scorer(Path(task["models"]) / task["channel"], threads=task.get("threads", 1))
    train = np.load(Path(task["data"]) / "train" / f"{task['channel']}.npy")
    train = train[:, [int(c[1:]) for c in scorer.channels]]  # the runner names column i "c<i>"
    calib_points = held_out_points(len(train), scorer.window)
    r = synthetic_check(scorer, train[len(train) - calib_points:])
    return {"mean_auprc": r["mean_auprc"], "mean_detected": r["mean_detected"],
            **{f"{k}_auprc": v["auprc"] for k, v in r["kinds"].items()}}


def ensemble_saved(saved: list[dict]) -> dict:
    """Several seeds' raw scores of one channel as one detector: each seed's test and
    calibration scores divided by its own quantile threshold (seeds trained to different
    scales weigh the same), then averaged; the quantile threshold and release level are
    recomputed from the averaged calibration scores (the same held-out points for every seed)."""
    from ..training.calibration import quantile_threshold

    scale = [float(s["quantile_threshold"]) or 1.0 for s in saved]
    test = np.mean([np.asarray(s["test_scores"], dtype=np.float64) / q for s, q in zip(saved, scale)], axis=0)
    n = min(len(s["calibration_scores"]) for s in saved)  # equal unless a seed lost points to NaN
    calib = np.mean([np.asarray(s["calibration_scores"], dtype=np.float64)[-n:] / q for s, q in zip(saved, scale)],
                    axis=0)
    q = quantile_threshold(calib)
    return {"test_scores": test, "calibration_scores": calib, "quantile_threshold": q["value"], "release": q["release"],
            "train_points": int(saved[0]["train_points"]),
            "train_seconds": float(sum(float(s["train_seconds"]) for s in saved)),
            "score_seconds": float(sum(float(s["score_seconds"]) for s in saved)),
            "stopped_early_by_budget": bool(any(bool(s["stopped_early_by_budget"]) for s in saved))}


def ensemble_channel(task: dict) -> dict:
    """Evaluation of one channel's seed ensemble (:func:`ensemble_saved`) from saved raw scores."""
    saved = []
    for folder in task["folders"]:
        with np.load(Path(folder) / task["channel"] / "scores.npz") as z:
            saved.append({k: z[k] for k in z.files})
    return evaluate_channel(task["channel"], Path(task["data"]), task["config"], ensemble_saved(saved))


def summarise(rows: list[dict]) -> dict:
    from ..training.evaluation import f1_from_counts

    total = {}
    for m in METHODS:
        counts = {k: sum(r["methods"][m][k] for r in rows) for k in ("tp", "fp", "fn")}
        total[m] = {**f1_from_counts(counts),
                    "mean_point_adjusted_f1": float(np.mean([r["methods"][m]["point_adjusted_f1"] for r in rows]))}
    au = [r["auprc"] for r in rows if r["auprc"] is not None]
    ra = [r["roc_auc"] for r in rows if r["roc_auc"] is not None]
    rm = [r["range_metrics"] for r in rows if r.get("range_metrics")]
    syn = [r["synthetic"] for r in rows if r.get("synthetic")]
    synthetic = {f"synthetic_{k}": float(np.mean([x[k] for x in syn])) for k in syn[0]} if syn else {}
    return {"methods": total, "mean_auprc": float(np.mean(au)) if au else None, **synthetic,
            "mean_roc_auc": float(np.mean(ra)) if ra else None,
            **{f"mean_{k}": float(np.mean([m[k] for m in rm])) if rm else None
               for k in ("vus_pr", "vus_roc", "esa_f05", "affiliation_f1")},
            "train_seconds": round(sum(r["train_seconds"] for r in rows), 1),
            "score_seconds": round(sum(r["score_seconds"] for r in rows), 1), "channels": len(rows)}


def markdown(result: dict) -> str:
    s, cfg = result["summary"], result["config"]
    best = max(METHODS, key=lambda m: s["methods"][m]["f1"])
    lines = [f"# {result['dataset']}: per-channel detection ({s['channels']} channels)", "",
             f"Machine: {result['machine']}; {result['jobs']} parallel job(s) x {result['threads']} thread(s); "
             f"training {s['train_seconds']:.0f} s and scoring {s['score_seconds']:.0f} s in total "
             + (f"(thresholds re-applied with `--rescore` to the raw scores saved in `{result['rescored_from']}`, "
                f"{result['wall_seconds']:.0f} s; nothing retrained)." if result.get("rescored_from")
                else f"(wall clock {result['wall_seconds']:.0f} s)."), "",
             "One configuration for every channel, fixed before any test label was read: "
             + ", ".join(f"`{k}={v}`" for k, v in cfg.items()) + ".", ""]
    if result.get("comparison"):
        lines += comparison_markdown(result)
    p = result.get("primary", {"detector": "wgan", "seed": cfg.get("seed", 0)})
    lines += [f"## Totals of `{p['detector']}`, seed {p['seed']} (event-level: tp/fp/fn summed over channels, "
              "overlapping segments)", "",
             "| threshold | precision | recall | event F1 | tp | fp | fn | mean point-adjusted F1 |", "|---|---|---|---|---|---|---|---|"]
    for m in METHODS:
        t = s["methods"][m]
        lines.append(f"| {m} | {t['precision']:.3f} | {t['recall']:.3f} | **{t['f1']:.3f}** | {t['tp']} | {t['fp']} | "
                     f"{t['fn']} | {t['mean_point_adjusted_f1']:.3f} |")
    lines += ["", f"Threshold-free: mean AUPRC {s['mean_auprc']:.3f}, mean ROC-AUC {s['mean_roc_auc']:.3f}.", "",
              "Published event-level F1 on SMAP (Orion benchmark counting): "
              + "; ".join(f"{k} {v:.3f}" for k, v in PUBLISHED_SMAP_F1.items()) + ".", "",
              f"## Per channel (event counts for the `{best}` threshold, the best total here)", "",
              "| channel | points | labelled | tp | fp | fn | F1 | AUPRC | ROC-AUC | train s | score s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    from ..training.evaluation import f1_from_counts

    for r in result["channels"]:
        e = r["methods"][best]
        f1 = f1_from_counts(e)["f1"]
        au = "—" if r["auprc"] is None else f"{r['auprc']:.3f}"
        ra = "—" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
        lines.append(f"| {r['channel']} | {r['points']} | {len(r['label_ranges'])} | {e['tp']} | {e['fp']} | {e['fn']} | "
                     f"{f1:.2f} | {au} | {ra} | {r['train_seconds']:.0f} | {r['score_seconds']:.1f} |")
    failed = result.get("failed") or []
    if failed:
        lines += ["", "Channels that could not be run: " + "; ".join(f"{f['channel']} ({f['error']})" for f in failed)]
    return "\n".join(lines) + "\n"


HEADLINE = (("telemanom.f1", "event F1"), ("telemanom.precision", "precision"), ("telemanom.recall", "recall"),
            ("mean_roc_auc", "ROC-AUC"), ("mean_auprc", "AUPRC"), ("mean_vus_pr", "VUS-PR"),
            ("mean_esa_f05", "ESA event F0.5"), ("mean_affiliation_f1", "affiliation F1"))


def comparison_markdown(result: dict) -> list[str]:
    """The detectors side by side: mean ± std over their seeds, then each seed's event F1."""
    cmp, seeds = result["comparison"], result["seeds_run"]
    libs = result.get("libraries", {})
    lines = ["## Detectors side by side (mean ± standard deviation over seeds)", "",
             "Every detector trained on the same train splits and thresholded by the same label-free procedures; "
             "`wgan` is this project's model, the others are the peers of `stream_detector.bench.peers` ("
             + ", ".join(f"{k} {v}" for k, v in libs.items() if v) + "). Event F1, precision and recall use "
             "telemanom's threshold procedure (tp/fp/fn summed over channels, Orion's counting); ROC-AUC, AUPRC and "
             "VUS-PR are means over channels of the raw scores; ESA event F0.5 (corrected, ESA-ADB) and affiliation "
             "F1 are means over channels of the telemanom detections.", "",
             "| detector | seeds | " + " | ".join(h for _, h in HEADLINE) + " | train s |",
             "|---|---|" + "---|" * (len(HEADLINE) + 1)]
    ens = result.get("ensembles", {})

    def c(det: str, figs: dict, key: str, digits: int = 3) -> str:
        return cell(figs.get(key), digits, det in ens)

    for det, figs in cmp.items():
        lines.append(f"| {det} | {('ensemble of ' if det in ens else '') + ','.join(map(str, seeds[det]))} | "
                     + " | ".join(c(det, figs, k) for k, _ in HEADLINE) + f" | {c(det, figs, 'train_seconds', 0)} |")
    if ens:
        lines += ["", "`<detector>-ensemble`: the seeds' raw scores, each divided by its own quantile threshold, "
                  "averaged per point (offline only: the worker serves one model per route)."]
    from ..training.synthetic import KINDS

    present = {k for figs in cmp.values() for k in figs}
    syn = [k for k in ["synthetic_mean_auprc", "synthetic_mean_detected"] + [f"synthetic_{x}_auprc" for x in KINDS]
           if k in present]
    if syn:
        lines += ["", "Synthetic faults (`--synthetic`, no label read): each model's AUPRC at singling out faults "
                  "injected into the train split's held-out last points (the ones it calibrated on), mean over "
                  "channels, then mean ± std over seeds; `detected`: the share of faults with a window over the "
                  "clean points' 99th percentile (`stream_detector.training.synthetic`).", "",
                  "| detector | " + " | ".join(k.removeprefix("synthetic_").replace("_", " ") for k in syn) + " |",
                  "|---|" + "---|" * len(syn)]
        for det, figs in cmp.items():
            if any(figs.get(k) for k in syn):
                lines.append(f"| {det} | " + " | ".join(c(det, figs, k) for k in syn) + " |")
    lines += ["", "Event F1 under each threshold procedure (mean ± std over seeds):", "",
              "| detector | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for det, figs in cmp.items():
        lines.append(f"| {det} | " + " | ".join(c(det, figs, f"{m}.f1") for m in METHODS) + " |")
    lines += ["", "Each seed (telemanom threshold):", "", "| detector | seed | event F1 | tp | fp | fn | ROC-AUC |",
              "|---|---|---|---|---|---|---|"]
    for r in result.get("runs", []):
        t, sm = r["summary"]["methods"]["telemanom"], r["summary"]
        roc = "—" if sm["mean_roc_auc"] is None else f"{sm['mean_roc_auc']:.3f}"
        lines.append(f"| {r['detector']} | {r['seed']} | {t['f1']:.3f} | {t['tp']} | {t['fp']} | {t['fn']} | {roc} |")
    failed = result.get("failed") or []
    if failed:
        lines += ["", f"{len(failed)} (detector, seed, channel) runs failed: "
                  + "; ".join(f"{f.get('detector', 'wgan')}/{f.get('seed', '')}/{f['channel']} ({f['error']})"
                              for f in failed[:10])]
    return lines + [""]


def _plots(result: dict, data: Path, models: Path, out: Path) -> list[str]:
    from ..training.plots import plot_score_timeline

    rows = [r for r in result["channels"] if r["auprc"] is not None]
    if not rows:
        return []
    ranked = sorted(rows, key=lambda r: r["auprc"])
    written = []
    for tag, r in (("worst", ranked[0]), ("best", ranked[-1])):
        path = models / r["channel"] / "test_scores.npy"
        if not path.exists():
            continue
        scores = np.load(path)
        values = np.load(data / "test" / f"{r['channel']}.npy")[:, 0]
        png = out / f"{result['dataset'].lower()}_{tag}_{r['channel']}.png"
        plot_score_timeline(scores, r["thresholds"]["quantile"], r["label_ranges"], png, values=values,
                            title=f"{r['channel']} ({tag} AUPRC {r['auprc']:.3f})")
        written.append(str(png))
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder with train/, test/ and labeled_anomalies.csv")
    p.add_argument("--spacecraft", default="SMAP", help="rows of labeled_anomalies.csv to use ('' for all)")
    p.add_argument("--limit", type=int, help="only the first N channels (smoke runs)")
    p.add_argument("--only", help="comma-separated channel ids")
    p.add_argument("--detectors",
                   help=f"comma-separated, from {', '.join(DETECTORS)}, or 'all' (default): the WGAN model and its "
                        "peers, each on the same channels with the same thresholds")
    p.add_argument("--seeds", help="training seeds, comma-separated (default 0,1,2); figures are "
                                   "reported as mean ± std over them")
    p.add_argument("--ensemble", metavar="DETECTORS",
                   help="also evaluate these detectors' seeds averaged into one score (an ensemble over seeds), "
                        "e.g. 'wgan' or 'all'")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads per job")
    p.add_argument("--max-seconds", type=float, help="wall-clock cap on the WGAN's training per channel (default: "
                                                      "none; budgets are iterations, so a seed gives the same scores)")
    p.add_argument("--iterations", type=int, help=f"WGAN generator and encoder steps (default "
                                                   f"{DEFAULT_CONFIG['iterations']})")
    p.add_argument("--window", type=int)
    p.add_argument("--transform", choices=["sequence", "distance-plot"])
    p.add_argument("--channels", help="columns of each channel's .npy the WGAN model reads: comma-separated indices "
                   "or 'all' (default 0, the telemetry value; SMAP's other 24 are command flags)")
    p.add_argument("--score-columns", help="of those, the columns the score is about (default: all read); e.g. "
                   "--channels all --score-columns 0 conditions the model on the command flags")
    from ..cli import SCORE_KINDS

    p.add_argument("--score", choices=SCORE_KINDS,
                   help="the WGAN model's score kind, as train --score (default: train's for the transform, "
                        "combined for sequence)")
    p.add_argument("--name", help="output file stem (default: the folder name, e.g. smap)")
    p.add_argument("--models", help="where per-channel models go (default: a temporary folder)")
    p.add_argument("--rescore", metavar="DIR",
                   help="re-apply the thresholds to the raw scores saved by earlier runs in DIR (their --models "
                        "folder: <detector>/seed<k>/<chan>/scores.npz and config.json); nothing is trained; "
                        "--detectors / --seeds, when given, pick which saved runs")
    p.add_argument("--synthetic", action="store_true",
                   help="with --rescore: also check each saved WGAN model on synthetic faults injected into its train "
                        "split's held-out points (no label read; a label-free way to compare configurations)")
    v = p.add_argument_group("via the worker", "--via-worker --models DIR: send the test splits through the real "
                             "worker (embedded broker, model repository, one route per channel) and compare its "
                             "detections with the offline ones on the same models; writes <name>_via_worker.json/.md")
    v.add_argument("--via-worker", action="store_true",
                   help="run the test splits through the worker with the models of an earlier run (--models DIR)")
    v.add_argument("--via-worker-method", choices=VIA_WORKER_METHODS, default="telemanom",
                   help="threshold the worker applies (default telemanom)")
    v.add_argument("--stride", type=int, default=1, help="points between windows in the worker (default 1)")
    v.add_argument("--max-points", type=int, help="only the first N test points of each channel (smoke runs)")
    v.add_argument("--batch-points", type=int, default=500, help="points per input message (default 500)")
    v.add_argument("--worker-timeout", type=float, default=1800.0,
                   help="seconds to wait for the worker's records before reporting what is missing")


def flat_summary(summary: dict) -> dict:
    """One run's totals as flat figures (``telemanom.f1``, ``mean_roc_auc``, ...) for :func:`aggregate`."""
    out = {k: summary.get(k) for k in ("mean_auprc", "mean_roc_auc", "mean_vus_pr", "mean_vus_roc", "mean_esa_f05",
                                       "mean_affiliation_f1", "train_seconds", "score_seconds")}
    out.update({k: v for k, v in summary.items() if k.startswith("synthetic_")})
    for m, t in summary["methods"].items():
        out.update({f"{m}.{k}": t[k] for k in ("f1", "precision", "recall", "tp", "fp", "fn")})
    return out


def with_saved_config(cfg: dict, path: Path) -> dict:
    """``cfg`` overridden by a run's saved ``config.json`` at ``path`` (when there is one): the
    report shows the run's own configuration; keys newer than the run keep this run's values,
    except the score kind, which a run saved before it was a key ran as ``fanogan``."""
    if not path.exists():
        return cfg
    return {**cfg, "score": SCORE_BEFORE_THE_KEY, **json.loads(path.read_text())}


def saved_runs(models: Path) -> list[tuple[str, int, Path]]:
    """``(detector, seed, folder)`` of every run saved under ``models``: ``<detector>/seed<k>/``,
    or a run from before detectors and seeds (``<chan>/scores.npz`` directly: the WGAN model)."""
    runs = [(det.name, int(sd.name[4:]), sd) for det in sorted(models.iterdir()) if det.name in DETECTORS
            for sd in sorted(det.iterdir()) if sd.name.startswith("seed") and sd.name[4:].isdigit()]
    if not runs and any(models.glob("*/scores.npz")):
        cfg = json.loads((models / "config.json").read_text()) if (models / "config.json").exists() else {}
        runs = [("wgan", int(cfg.get("seed", 0)), models)]
    return runs


def run(a: argparse.Namespace) -> Report:
    """Fit, score and threshold every channel with every detector and seed (or ``--rescore`` a
    run), plot the best and worst channel of the first WGAN run into ``--out``; ``--via-worker``
    runs :func:`via_worker_main` instead."""
    from ..errors import UserError

    data = Path(a.data)
    for need in ("train", "test", "labeled_anomalies.csv"):
        if not (data / need).exists():
            raise UserError(f"{data} is not in the telemanom layout: {need} is missing")
    cfg = dict(DEFAULT_CONFIG)
    for key in ("max_seconds", "iterations", "window", "transform", "score", "channels", "score_columns"):
        if getattr(a, key) is not None:
            cfg[key] = getattr(a, key)
    if a.iterations:
        cfg["encoder_iterations"] = a.iterations
    if a.score is None:  # train's default for the transform run, as bench nab and bench folder take it
        cfg["score"] = default_score_kind(cfg["transform"])
    try:
        TelemanomConfig.from_dict(cfg)  # a configuration the runner cannot fit fails here, by key
        detectors, seeds = parse_detectors(a.detectors or "all"), parse_seeds(a.seeds or "0,1,2")
    except (ConfigKeyError, ValueError) as e:
        raise UserError(str(e)) from None
    if a.only:  # any labelled channel with data, whatever --spacecraft says
        chans, known = a.only.split(","), channel_ids(data, None)
        unknown = [c for c in chans if c not in known]
        if unknown:
            raise UserError(f"--only: no labelled channel {', '.join(unknown)} with data in {data}; it has "
                            f"{len(known)}, e.g. {', '.join(known[:5])}")
    else:
        chans = channel_ids(data, a.spacecraft or None)
    chans = chans[: a.limit] if a.limit else chans
    if a.via_worker:
        return via_worker_main(a, data, cfg, chans)
    if a.synthetic and not a.rescore:
        raise UserError("--synthetic checks the models of an earlier run: add --rescore DIR")
    if a.rescore:
        models = Path(a.rescore)
        if not models.is_dir():
            raise UserError(f"--rescore {models}: no such folder")
        runs = [r for r in saved_runs(models)  # what the options name, when they are given
                if (a.detectors is None or r[0] in detectors) and (a.seeds is None or r[1] in seeds)]
        if not any((folder / ch / "scores.npz").exists() for _, _, folder in runs for ch in chans):
            raise UserError(f"--rescore {models}: no <detector>/seed<k>/<channel>/scores.npz (or <channel>/scores.npz) "
                            "there")
        cfg = with_saved_config(cfg, runs[0][2] / "config.json")
    else:
        models = Path(a.models) if a.models else Path(tempfile.mkdtemp(prefix="sd-telemanom-"))
        runs = [(det, seed, models / det / f"seed{seed}") for det in detectors for seed in seeds]
        for det, seed, folder in runs:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(json.dumps({**cfg, "seed": seed}, indent=1) + "\n")
    tasks = []
    cost = {d: i for i, d in enumerate(("zscore", "iforest", "wgan", "hst", "lstm"))}  # cheap ones report first
    for det, seed, folder in sorted(runs, key=lambda r: (cost.get(r[0], 9), r[1])):
        run_cfg = {**cfg, "seed": seed}
        if a.rescore:
            run_cfg = with_saved_config(run_cfg, folder / "config.json")
        tasks += [{"channel": ch, "data": str(data), "models": str(folder), "config": run_cfg, "threads": a.threads,
                   "keep_scores": True, "detector": det, "seed": seed, "synthetic": a.synthetic}
                  for ch in chans if not a.rescore or (folder / ch / "scores.npz").exists()]
    work = rescore_channel if a.rescore else run_channel
    started = time.monotonic()
    groups: dict[tuple[str, int], list[dict]] = {}
    ensembles: dict[str, list[int]] = {}
    failed = []
    import multiprocessing as mp

    with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as pool:
        for task, fut in [(t, pool.submit(work, t)) for t in tasks]:
            tag = f"{task['detector']} seed {task['seed']} {task['channel']}"
            try:
                r = fut.result()
                groups.setdefault((task["detector"], task["seed"]), []).append(r)
                m = r["methods"]
                print(f"{tag}: AUPRC {r['auprc'] if r['auprc'] is None else round(r['auprc'], 3)} "
                      + " ".join(f"{k} tp/fp/fn {v['tp']}/{v['fp']}/{v['fn']}" for k, v in m.items())
                      + f" ({r['train_seconds']:.0f} s)", flush=True)
            except Exception as e:  # one failing channel is reported, not fatal for the corpus
                failed.append({"detector": task["detector"], "seed": task["seed"], "channel": task["channel"],
                               "error": f"{type(e).__name__}: {e}"})
                print(f"{tag}: failed: {e}", flush=True)
    if not groups:
        raise UserError("no channel could be run: " + "; ".join(f"{f['channel']}: {f['error']}" for f in failed))
    if a.ensemble:  # the named detectors' seeds averaged, on the channels every seed has
        try:
            wanted = parse_detectors(a.ensemble)
        except ValueError as e:
            raise UserError(str(e).replace("--detectors", "--ensemble")) from None
        by_det: dict[str, list[tuple[int, Path]]] = {}
        for det, seed, folder in runs:
            if det in wanted:
                by_det.setdefault(det, []).append((seed, folder))
        for det, members in by_det.items():
            if len(members) < 2:
                continue
            folders = [str(f) for _, f in sorted(members)]
            ens = [{"channel": ch, "data": str(data), "config": {**cfg, "seed": min(sd for sd, _ in members)},
                    "folders": folders} for ch in chans if all((Path(f) / ch / "scores.npz").exists() for f in folders)]
            with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as pool:
                groups[det + ENSEMBLE, 0] = list(pool.map(ensemble_channel, ens))
            ensembles[det + ENSEMBLE] = sorted(sd for sd, _ in members)
            print(f"{det}: ensemble of seeds {ensembles[det + ENSEMBLE]} on {len(ens)} channels", flush=True)
    import torch

    from .peers import versions

    order = sorted(groups, key=report_order)
    results = [{"detector": det, "seed": seed, "summary": summarise(groups[det, seed]), "channels": groups[det, seed]}
               for det, seed in order]
    per_seed: dict[str, dict[int, dict]] = {}
    for r in results:
        per_seed.setdefault(r["detector"], {})[r["seed"]] = flat_summary(r["summary"])
    primary = next((r for r in results if r["detector"] == "wgan"), results[0])
    name = a.name or data.name.lower()
    result = {"dataset": name.upper(), "data": str(data), "config": cfg, "jobs": a.jobs, "threads": a.threads,
              "machine": f"{machine.cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}",
              "libraries": versions(), "load_average": [round(v, 2) for v in os.getloadavg()],
              "wall_seconds": round(time.monotonic() - started, 1),
              "comparison": aggregate(per_seed), "ensembles": ensembles,
              "seeds_run": {d: ensembles.get(d) or sorted(v) for d, v in per_seed.items()},
              "primary": {"detector": primary["detector"], "seed": primary["seed"]},
              "summary": primary["summary"], "channels": primary["channels"], "runs": results, "failed": failed}
    if a.rescore:
        result["rescored_from"] = str(models)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = next(f for d, sd, f in runs if (d, sd) == (primary["detector"], primary["seed"]))
    result["plots"] = _plots(result, data, folder, out)
    cmp = result["comparison"]
    return Report(name, result, markdown, "telemanom threshold, event F1: " + "; ".join(
        f"{d} {cell(cmp[d]['telemanom.f1'], 3, d in ensembles)}"
        for d in per_seed))


BENCHMARK = Benchmark("telemanom", __doc__.splitlines()[0], add_arguments, run)
build_parser, main = BENCHMARK.build_parser, BENCHMARK.main


# -- the same models through the worker ------------------------------------------------------------
VIA_WORKER_METHODS = ("telemanom", "dynamic", "quantile", "pot")


def worker_threshold(method: str, c: dict, thresholds: dict) -> dict:
    """The route threshold that makes the worker apply ``method`` as the offline run does."""
    if method == "telemanom":
        return {"method": "telemanom", **_telemanom_kwargs(c)}
    if method == "dynamic":
        return {"method": "dynamic", **_dynamic_kwargs(c)}
    if method in ("quantile", "pot"):  # the card's release level closes episodes, as offline
        return {"method": method, "value": float(thresholds[method])}
    raise ValueError(f"no worker threshold for {method!r}")


def _span(flags: np.ndarray) -> list[int] | None:
    idx = np.flatnonzero(flags)
    return [int(idx[0]), int(idx[-1])] if len(idx) else None


def compare_channel(chan: str, offline: np.ndarray, worker: np.ndarray, undecided: np.ndarray, labels: np.ndarray,
                    merge_gap: int) -> dict:
    """Offline and worker per-point flags of one channel side by side."""
    off, wk = _event_report(labels, offline, merge_gap), _event_report(labels, worker, merge_gap)
    differ = offline != worker
    return {"channel": chan, "points": int(len(offline)), "undecided_points": int(undecided.sum()),
            "offline": off, "worker": wk, "same_detections": off["predicted"] == wk["predicted"],
            "points_differing": int(differ.sum()),
            "points_differing_where_decided": int((differ & ~undecided).sum()),
            "offline_span": _span(offline), "worker_span": _span(worker),
            "offline_flagged": int(offline.sum()), "worker_flagged": int(worker.sum())}


def _totals(reports: list[dict]) -> dict:
    from ..training.evaluation import f1_from_counts

    counts = {k: sum(r[k] for r in reports) for k in ("tp", "fp", "fn")}
    return {**f1_from_counts(counts),
            "mean_point_adjusted_f1": float(np.mean([r["point_adjusted_f1"] for r in reports])) if reports else 0.0}


def via_worker_main(a: argparse.Namespace, data: Path, cfg: dict, chans: list[str]) -> Report:
    """``--via-worker``: the test splits through the real worker vs the offline thresholds."""
    from ..runtime.card import load_card
    from ..errors import UserError
    from .via_worker import run_via_worker

    if not a.models:
        raise UserError("--via-worker needs --models DIR: the per-channel models of an earlier run "
                        "(DIR/<chan>/model.onnx, model.json and scores.npz, and DIR/config.json)")
    if a.stride < 1:
        raise UserError(f"--stride must be a positive integer, got {a.stride}")
    models = Path(a.models)
    if not models.is_dir():
        raise UserError(f"--models {models}: no such folder")
    cfg = with_saved_config(cfg, models / "config.json")
    chans = [ch for ch in chans if all((models / ch / f).exists() for f in ("model.onnx", "model.json", "scores.npz"))]
    if not chans:
        raise UserError(f"--models {models}: no <channel>/model.onnx + model.json + scores.npz there "
                        "(the --models folder of an earlier 'bench telemanom' run)")
    method = a.via_worker_method
    started = time.monotonic()
    series, saved, offline, thresholds, specs = {}, {}, {}, {}, {}
    for ch in chans:
        with np.load(models / ch / "scores.npz") as z:
            sv = {k: z[k] for k in z.files}
        test = np.load(data / "test" / f"{ch}.npy").astype(np.float32)
        channels = list(load_card(models / ch).channels)
        cols = [int(name[1:]) for name in channels] if all(n[:1] == "c" and n[1:].isdigit() for n in channels) \
            else _columns(cfg["channels"], test.shape[1])
        test = test[:, cols]
        if a.max_points:
            test = test[: a.max_points]
            sv["test_scores"] = np.asarray(sv["test_scores"])[: a.max_points]
        if len(sv["test_scores"]) != len(test):
            raise UserError(f"{ch}: {models / ch / 'scores.npz'} holds {len(sv['test_scores'])} test scores but the "
                            f"test split has {len(test)} points: not the models of this data")
        series[ch], saved[ch] = test, sv
        thresholds[ch], flags = method_flags(sv, cfg, (method,))
        offline[ch] = flags[method]
        specs[ch] = worker_threshold(method, cfg, thresholds[ch])
    offline_rows = [evaluate_channel(ch, data, cfg, saved[ch]) for ch in chans]
    offline_seconds = time.monotonic() - started
    print(f"offline: {len(chans)} channels thresholded in {offline_seconds:.1f} s; sending them through the worker "
          f"({method}, stride {a.stride})", flush=True)
    run = run_via_worker({ch: models / ch for ch in chans}, series, specs, stride=a.stride,
                         batch_points=a.batch_points, timeout=a.worker_timeout,
                         progress=lambda m: print(m, flush=True))
    per_channel = []
    for ch in chans:
        r = run.sources[ch]
        worker_flags = r.episode_point_flags() if method in ("quantile", "pot") else r.point_flags()
        _, labels = _labels(data, ch, len(series[ch]))
        row = compare_channel(ch, offline[ch], worker_flags, r.undecided_points(), labels, cfg["merge_gap"])
        row["worker_run"] = r.summary()
        if a.stride == 1 and r.published:  # the worker's scores against the saved offline ones
            row["max_score_difference"] = float(np.nanmax(np.abs(r.scores - np.asarray(
                saved[ch]["test_scores"], dtype=np.float64)[r.end_idx])))
            off_w = offline[ch][r.end_idx]
            row["window_flag_mismatches"] = int((off_w != r.flags).sum()) if method not in ("quantile", "pot") \
                else None
        per_channel.append(row)
    name = a.name or data.name.lower()
    offline_totals = summarise(offline_rows)["methods"][method]
    result = {
        "dataset": name.upper(), "data": str(data), "models": str(models), "method": method, "stride": a.stride,
        "threshold": run.threshold, "config": cfg, "max_points": a.max_points,
        "machine": {"cpu": machine.cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": round(time.monotonic() - started, 1),
        "worker": run.summary(),
        "totals": {"offline": offline_totals, "worker": _totals([r["worker"] for r in per_channel])},
        "channels_with_different_detections": [r["channel"] for r in per_channel if not r["same_detections"]],
        "channels": per_channel,
        "offline_all_methods": summarise(offline_rows),
    }
    if run.missing or run.timed_out:  # what the worker was doing when the wait gave up
        result["worker_log_tail"] = run.worker_log_tail
    t = result["totals"]
    if run.missing:
        print(f"worker records missing after {a.worker_timeout:.0f} s: {run.missing}", flush=True)
    return Report(f"{name}_via_worker", result, via_worker_markdown,
                  f"{method}: event F1 offline {t['offline']['f1']:.3f}, via the worker {t['worker']['f1']:.3f}; "
                  f"{len(result['channels_with_different_detections'])} of {len(chans)} channels detect "
                  "differently")


def via_worker_markdown(result: dict) -> str:
    t, w, m = result["totals"], result["worker"], result["machine"]
    method = result["method"]
    rows = result["channels"]
    lines = [f"# {result['dataset']}: offline vs via the worker ({method} threshold, stride {result['stride']})", "",
             f"The same per-channel models (`{result['models']}`) and test splits"
             + (f" (first {result['max_points']} points)" if result.get("max_points") else "")
             + ": offline, thresholded with the saved raw scores (`scores.npz`, stride 1); via the worker, "
             f"sent as batch messages of {w['settings']['batch_points']} points through the embedded broker "
             f"to the worker serving a model repository with one route per channel "
             f"(`threshold: {json.dumps(result['threshold']) if len(json.dumps(result['threshold'])) < 300 else '...'}`"
             f", stride {result['stride']}), its per-window decisions mapped to points as the offline run maps "
             "window scores (a point takes the latest window ending at or before it; windows the worker "
             "never decided, the last partial batch of a finite stream, count as not flagged).", "",
             f"Machine: {m['cpu']}, {m['cores']} cores. Worker: {w['windows']} windows published in "
             f"{w['wall_seconds']:.1f} s ({w['windows_per_second']} windows/s, first message sent to last record "
             f"read, all channels at once); whole comparison {result['wall_seconds']:.0f} s."
             + (f" **Missing records** (timed out): {w['missing']}." if w["missing"] else ""), "",
             "## Totals (event-level: tp/fp/fn summed over channels)", "",
             "| run | precision | recall | event F1 | tp | fp | fn | mean point-adjusted F1 |",
             "|---|---|---|---|---|---|---|---|"]
    for run in ("offline", "worker"):
        x = t[run]
        lines.append(f"| {run} | {x['precision']:.3f} | {x['recall']:.3f} | **{x['f1']:.3f}** | {x['tp']} | "
                     f"{x['fp']} | {x['fn']} | {x['mean_point_adjusted_f1']:.3f} |")
    diff = [r for r in rows if not r["same_detections"]]
    lines += ["", f"## Channels whose detected ranges differ ({len(diff)} of {len(rows)})", ""]
    if diff:
        lines += ["| channel | offline tp/fp/fn | worker tp/fp/fn | offline first–last flagged | "
                  "worker first–last flagged | points differing (where decided) | undecided tail points |",
                  "|---|---|---|---|---|---|---|"]
        span = lambda s: "—" if s is None else f"{s[0]}–{s[1]}"  # noqa: E731
        for r in diff:
            o, k = r["offline"], r["worker"]
            lines.append(f"| {r['channel']} | {o['tp']}/{o['fp']}/{o['fn']} | {k['tp']}/{k['fp']}/{k['fn']} | "
                         f"{span(r['offline_span'])} | {span(r['worker_span'])} | {r['points_differing']} "
                         f"({r['points_differing_where_decided']}) | {r['undecided_points']} |")
    else:
        lines.append("None: every channel's detected ranges are the same offline and via the worker.")
    if method == "dynamic":
        lines += ["", "Note: `dynamic` steps by positions, missing scores included; offline it is fed the point "
                      "scores, whose first window-1 points have no window (NaN), while the worker feeds it windows "
                      "only, so the two step grids are shifted by window-1 points and decisions near step "
                      "boundaries may differ."]
    scored = [r for r in rows if "max_score_difference" in r]
    if scored:
        lines += ["", f"Largest difference between a worker score and the offline score of the same window: "
                      f"{max(r['max_score_difference'] for r in scored):.3g}."]
        mism = [r["window_flag_mismatches"] for r in scored if r.get("window_flag_mismatches") is not None]
        if mism:
            lines.append(f"Published windows whose flag differs from the offline flag of their end point: "
                         f"{sum(mism)} (of {w['windows']}).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
