"""Labelled CSV files in a folder (industrial test beds such as SKAB): per-file detection.

``stream-detector bench folder --data DIR --label-column NAME (--train-rows N | --train-files GLOB)``.
``DIR`` holds CSV files (``**/*.csv``), each with a header, a timestamp column (``timestamp``,
``ts``, ``time`` or ``datetime``: epoch seconds or ISO 8601), one numeric column per channel
and a 0/1 label column; separated by ``,``, ``;`` or tabs (sniffed, or ``--sep``).  Other
columns are left out with ``--ignore-columns a,b`` (SKAB's ``changepoint``), files with
``--exclude GLOB``.  Every scored file must have the same channels.

Two protocols, both label-free until the evaluation:

* ``--train-rows N``: each file trains its own detector on its first ``N`` rows (SKAB's
  protocol, ``N = 400``) and the whole file is scored causally (stride 1, a point's score is
  the latest window ending at it).  The rows after the training part are evaluated
  (``--evaluate-on rest``, SKAB's proposed leaderboard) or every row (``--evaluate-on all``).
  Labelled anomalies inside the training rows are trained on all the same (the labels are
  not read before the evaluation) and counted in the report.
* ``--train-files GLOB``: the files matching ``GLOB`` (relative to ``DIR``, anomaly-free
  runs) train one detector per detector and seed, which scores every other file whole.

Detectors: ``wgan`` (this project's model: all channels in, ``--transform sequence`` by
default, trained with :func:`~stream_detector.training.fit.fit_and_score`, budgeted in
iterations) and the peers of :mod:`stream_detector.bench.peers` (``zscore``, ``iforest``,
``hst``, ``lstm``) on all channels; ``--seeds`` repeats each, figures are mean ± std over seeds.
Thresholds, the label-free procedures of ``bench telemanom``
(:func:`stream_detector.bench.telemanom.method_flags`): ``quantile`` (the 99.5 % quantile of
held-out training scores, episodes closing below the 95 % quantile), ``pot`` (extreme-value
threshold on the same scores) and ``telemanom`` (telemanom's dynamic threshold on the scored
file's own past), with its windows scaled to ~1,000-row files (see ``DEFAULT_CONFIG``).

Metrics over all files together: pointwise precision, recall, F1, the false-alarm rate
FAR = FP / (FP + TN) and missed-alarm rate MAR = FN / (FN + TP) (SKAB's binary metrics: point
counts pooled over files), event F1 (a labelled run of 1s is found when a flagged run overlaps
it; a flagged run overlapping none is a false positive; counts summed over files), and the
threshold-free AUPRC and VUS-PR (window = the model window), means over files.  Points with no
score yet (the first window - 1 of a scored file) count as not flagged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import machine
from .comparison import DETECTORS, aggregate, cell, parse_detectors, parse_seeds
from .framework import Benchmark, Report

METHODS = ("quantile", "pot", "telemanom")
# One configuration for every file, fixed before any label is read.  The WGAN budget is in
# iterations (200 + 200), never seconds.  telemanom's threshold is scaled to files of ~1,000
# rows: its reference windows (30 batches of 70 points = 2,100, smoothing span 105, error
# buffer 100, nothing flagged in the first 2 x 250 points) are longer than a SKAB file.  Here a
# decision window is 25 batches of 20 points (500: the file's first 500 scored points, mostly
# training rows, set the first threshold, then every 20 points are decided), smoothing span
# 5 % of it (25 points), the error buffer 25 (100 scaled by the ~4x shorter window) and
# l_s 50 (the first 100 scored points, inside the training rows, are never flagged).
DEFAULT_CONFIG = dict(window=32, transform="sequence", arch="conv", width=None, latent_dim=None, iterations=200,
                      encoder_iterations=200, encoder_mode="izi_f", kappa=1.0, max_seconds=None, pot_risk=1e-4,
                      telemanom_batch=20, telemanom_windows=25, telemanom_smoothing=0.05, telemanom_buffer=25,
                      telemanom_p=0.13, telemanom_l_s=50, telemanom_inverse=True, seed=0)
RUNNER_KEYS = tuple(k for k in DEFAULT_CONFIG if k.startswith("telemanom_")) + ("pot_risk",)
TRANSFORMS = ("sequence", "distance-plot", "distance-plot-mv")


@dataclass
class CsvFile:
    """One loaded file: its id (path relative to ``DIR``), values ``[T, C]`` in the folder's
    channel order, and labels (None for a training file without the label column)."""

    id: str
    values: np.ndarray
    labels: np.ndarray | None
    channels: list[str]


def _natural(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def find_files(data: Path, exclude: list[str]) -> list[str]:
    """The CSV files under ``data`` (recursively), relative, in natural order, less ``exclude``."""
    excluded = {p.relative_to(data).as_posix() for g in exclude for p in data.glob(g)}
    found = {p.relative_to(data).as_posix() for p in data.glob("**/*.csv") if p.is_file()}
    return sorted(found - excluded, key=_natural)


def load_folder(a: argparse.Namespace, data: Path) -> tuple[list[str], list[CsvFile], list[CsvFile]]:
    """``(channels, training files, scored files)``, every input problem a :class:`UserError`.

    Scored files must hold the label column; training files (``--train-files``) may lack it."""
    from ..data import load_series, read_header

    if not data.is_dir():
        raise UserError(f"--data {data}: no such folder")
    if (a.train_rows is None) == (a.train_files is None):
        raise UserError("give exactly one of --train-rows N (train on each file's first N rows) and "
                        "--train-files GLOB (anomaly-free files that train one model for every other file)")
    exclude = [g for g in (a.exclude or [])]
    names = find_files(data, exclude)
    if not names:
        raise UserError(f"--data {data}: no CSV files there (searched **/*.csv"
                        + (f", excluding {', '.join(exclude)}" if exclude else "") + ")")
    ignore = [c.strip() for c in (a.ignore_columns or "").split(",") if c.strip()]
    headers = {n: read_header(data / n, a.sep)[0] for n in names}
    for c in ignore:
        if not any(c in h for h in headers.values()):
            raise UserError(f"--ignore-columns: no file has a column {c!r}")
    train_names: list[str] = []
    if a.train_files is not None:
        train_names = sorted({p.relative_to(data).as_posix() for p in data.glob(a.train_files)} & set(names),
                             key=_natural)
        if not train_names:
            raise UserError(f"--train-files {a.train_files!r}: no CSV file under {data} matches it "
                            "(the pattern is relative to --data, e.g. 'anomaly-free/*.csv')")
    scored_names = [n for n in names if n not in train_names]
    if not scored_names:
        raise UserError(f"--train-files {a.train_files!r} matches every CSV file under {data}: none is left to score")

    def load(name: str, scored: bool) -> CsvFile:
        if scored and a.label_column not in headers[name]:
            raise UserError(f"{data / name}: no label column {a.label_column!r} (columns: {', '.join(headers[name])}); "
                            "leave files without labels out with --exclude GLOB")
        s = load_series(data / name, a.label_column if a.label_column in headers[name] else None, sep=a.sep,
                        ignore_columns=ignore)
        return CsvFile(name, s.values, s.labels, s.channels)

    scored = [load(n, True) for n in scored_names]
    train = [load(n, False) for n in train_names]
    channels = scored[0].channels
    for f in scored[1:] + train:
        if sorted(f.channels) != sorted(channels):
            raise UserError(f"{data / f.id}: channels {f.channels} differ from {scored[0].id}'s {channels} "
                            "(every file needs the same channels; leave others out with --ignore-columns)")
        f.values = f.values[:, [f.channels.index(c) for c in channels]]  # one channel order for all
        f.channels = list(channels)
    return channels, train, scored


def check_protocol(a: argparse.Namespace, cfg: dict, train: list[CsvFile], scored: list[CsvFile]) -> None:
    """Enough rows to train on and, with ``--train-rows``, something left to evaluate."""
    w = int(cfg["window"])
    need = 2 * w + 50  # the WGAN holds out max(20 %, window + 50) rows and trains on at least a window
    if a.train_rows is not None:
        if a.train_rows < need:
            raise UserError(f"--train-rows {a.train_rows}: too few to train on with a window of {w}; "
                            f"need at least {need}")
        short = [f for f in scored if len(f.values) <= a.train_rows]
        if short:
            raise UserError(f"--train-rows {a.train_rows} is not less than the rows of "
                            + ", ".join(f"{f.id} ({len(f.values)} rows)" for f in short[:5])
                            + ": nothing would be left to evaluate")
    short = [f for f in scored if len(f.values) < w]
    if short:
        raise UserError(f"{', '.join(f'{f.id} ({len(f.values)} rows)' for f in short[:5])}: fewer rows than one "
                        f"window of {w}")
    if a.train_rows is None:
        need = need if len(train) == 1 else max(need, 5 * w)  # several files: each holds out 20 %, a window at least
        small = [f for f in train if len(f.values) < need]
        if small:
            raise UserError(f"--train-files: {', '.join(f'{f.id} ({len(f.values)} rows)' for f in small)} "
                            f"too short to train on with a window of {w}; need at least {need} rows each")


# -- fitting and scoring (in worker processes; labels never reach them) -------------------------
def run_task(task: dict) -> dict:
    """Fit one detector (seed) on the task's training rows and score its files: ``{"records":
    {file: raw-score record}, "train_seconds", "score_seconds"}``.  A record has the keys of
    ``bench telemanom``'s ``scores.npz`` (test and calibration scores, quantile threshold,
    release level), which :func:`~stream_detector.bench.telemanom.method_flags` thresholds."""
    det = task["detector"]
    train = [np.asarray(t, dtype=np.float32) for t in task["train"]]
    files = task["files"]  # [(id, values)]
    folder = Path(task["models"])
    if det == "wgan":
        out = _wgan(task, train, files, folder)
    else:
        out = _peer(task, train, files)
    if task.get("keep_scores", True):
        for fid, rec in out["records"].items():
            d = folder / _stem(fid)
            d.mkdir(parents=True, exist_ok=True)
            np.savez(d / "scores.npz", **rec)
    return out


def _stem(fid: str) -> str:
    return fid[:-4] if fid.lower().endswith(".csv") else fid


def _wgan(task: dict, train: list[np.ndarray], files: list, folder: Path) -> dict:
    """The WGAN model on all channels: one training file (a file's first rows) holds out its last
    max(20 %, window + 50) rows to calibrate, as ``bench telemanom``; several training files each
    hold out their last 20 % (no window spans two files)."""
    import torch

    from ..training.fit import SeriesModelConfig, fit_and_score, score_with_model

    threads = int(task["threads"])
    torch.set_num_threads(threads)
    model, _ = SeriesModelConfig.from_flat({**task["config"], "seed": int(task["seed"])}, RUNNER_KEYS)
    if len(train) == 1:
        calib_points = max(int(0.2 * len(train[0])), model.window + 50)
        fraction = 1.0 - calib_points / len(train[0])
    else:
        fraction = 0.8
    channels = [f"c{i}" for i in range(train[0].shape[1])]
    model_dir = folder / (_stem(files[0][0]) if task["per_file"] else "model")
    fit = fit_and_score(train if len(train) > 1 else train[0], files[0][1], channels, model_dir, model,
                        train_fraction=fraction, name=task["name"], source=task["source"], threads=threads)
    card = fit.card
    calib = np.concatenate([score_with_model(fit.scores.scorer, t[int(len(t) * fraction):], stride=1).windows["scores"]
                            for t in train])
    common = {"calibration_scores": np.asarray(calib, dtype=np.float64),
              "quantile_threshold": card.threshold["value"], "release": card.threshold["release"],
              "train_points": sum(len(t) for t in train),
              "stopped_early_by_budget": bool(card.training["stopped_early_by_budget"])}
    records = {files[0][0]: {"test_scores": fit.points, **common}}
    score_seconds = fit.scores.seconds
    for fid, values in files[1:]:
        s = score_with_model(fit.scores.scorer, values, stride=1)
        records[fid] = {"test_scores": s.points, **common}
        score_seconds += s.seconds
    return {"records": records, "train_seconds": fit.train_seconds, "score_seconds": score_seconds}


def _peer(task: dict, train: list[np.ndarray], files: list) -> dict:
    """A peer on all channels, fitted on the training rows (several training files: concatenated
    in name order) less their last max(20 %, 50) rows, which calibrate."""
    from .peers import fit_and_score_peer, make_peer

    det = task["detector"]
    cols = list(range(train[0].shape[1]))
    peer = make_peer(det, cols, int(task["seed"]), **({"threads": task["threads"]} if det == "lstm" else {}))
    rec = fit_and_score_peer(peer, np.concatenate(train), files[0][1])
    records = {files[0][0]: rec}
    score_seconds = rec["score_seconds"]
    for fid, values in files[1:]:
        started = time.monotonic()
        scores = np.asarray(peer.score(values), dtype=np.float64)
        score_seconds += time.monotonic() - started
        records[fid] = {**rec, "test_scores": scores}
    return {"records": records, "train_seconds": rec["train_seconds"], "score_seconds": score_seconds}


# -- evaluation (the only place labels are read) ---------------------------------------------------
def point_counts(labels: np.ndarray, flags: np.ndarray) -> dict:
    """Pointwise ``tp``, ``fp``, ``tn``, ``fn`` of boolean ``flags`` against 0/1 ``labels``."""
    y, f = np.asarray(labels, bool), np.asarray(flags, bool)
    return {"tp": int(np.sum(y & f)), "fp": int(np.sum(~y & f)), "tn": int(np.sum(~y & ~f)), "fn": int(np.sum(y & ~f))}


def point_rates(c: dict) -> dict:
    """Precision, recall, F1, FAR = FP/(FP+TN) and MAR = FN/(FN+TP) of pooled point counts
    (SKAB's binary metrics; 0 where a denominator is 0)."""
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "far": fp / (fp + tn) if fp + tn else 0.0,
            "mar": fn / (fn + tp) if fn + tp else 0.0}


def evaluate_file(fid: str, saved: dict, labels: np.ndarray, start: int, cfg: dict) -> dict:
    """One file's figures for one detector and seed: thresholds over the whole scored file
    (causal, so the training rows give the adaptive threshold its history), counted on the
    evaluated rows ``[start:]``; NaN scores are never flagged."""
    from ..training.evaluation import auprc, event_counts, ranges_from_mask
    from ..training.range_metrics import vus_pr
    from .telemanom import method_flags

    scores = np.asarray(saved["test_scores"], dtype=np.float64)
    thresholds, flags = method_flags(saved, cfg, METHODS)
    y, s = np.asarray(labels[start:], bool), scores[start:]
    truth = ranges_from_mask(y)
    methods = {}
    for m in METHODS:
        f = flags[m][start:]
        c = point_counts(y, f)
        ev = event_counts(truth, ranges_from_mask(f))
        methods[m] = {**c, **point_rates(c), "events": ev, "flagged_ranges": [[int(a) + start, int(b) + start]
                                                                              for a, b in ranges_from_mask(f)]}
    finite = np.isfinite(s)
    both = bool(y[finite].any() and not y[finite].all())
    return {"file": fid, "evaluated_points": int(len(y)), "first_evaluated_row": int(start),
            "anomalous_points": int(y.sum()), "label_ranges": [[int(a) + start, int(b) + start] for a, b in truth],
            "unscored_points": int((~finite).sum()), "thresholds": thresholds,
            "auprc": auprc(y[finite], s[finite]) if both else None,
            "vus_pr": vus_pr(y.astype(int), s, int(cfg["window"]))["vus_pr"] if y.any() and finite.any() else None,
            "methods": methods}


def summarise(rows: list[dict]) -> dict:
    """Totals of one detector and seed over its files: point counts pooled (precision, recall,
    F1, FAR, MAR), event counts summed (event F1), means of AUPRC and VUS-PR over files."""
    from ..training.evaluation import f1_from_counts

    out = {}
    for m in METHODS:
        c = {k: sum(r["methods"][m][k] for r in rows) for k in ("tp", "fp", "tn", "fn")}
        ev = f1_from_counts({k: sum(r["methods"][m]["events"][k] for r in rows) for k in ("tp", "fp", "fn")})
        out[m] = {**c, **point_rates(c), "event_tp": ev["tp"], "event_fp": ev["fp"], "event_fn": ev["fn"],
                  "event_precision": ev["precision"], "event_recall": ev["recall"], "event_f1": ev["f1"]}
    au = [r["auprc"] for r in rows if r["auprc"] is not None]
    vus = [r["vus_pr"] for r in rows if r["vus_pr"] is not None]
    return {"methods": out, "mean_auprc": float(np.mean(au)) if au else None,
            "mean_vus_pr": float(np.mean(vus)) if vus else None, "files": len(rows)}


def flag_everything(anomalous: int, evaluated: int) -> dict:
    """The trivial detector that flags every evaluated point: what a pointwise F1 must beat when
    anomalies cover much of the data (SKAB: about half the rows after the training part)."""
    return point_rates({"tp": anomalous, "fp": evaluated - anomalous, "tn": 0, "fn": 0})


FIGURES = ("f1", "precision", "recall", "far", "mar", "event_f1", "event_tp", "event_fp", "event_fn")


def flat_summary(summary: dict, train_seconds: float, score_seconds: float) -> dict:
    """One run's totals as flat figures (``quantile.f1``, ``auprc``, ...) for :func:`aggregate`."""
    out = {"auprc": summary["mean_auprc"], "vus_pr": summary["mean_vus_pr"],
           "train_seconds": train_seconds, "score_seconds": score_seconds}
    for m, t in summary["methods"].items():
        out.update({f"{m}.{k}": t[k] for k in FIGURES})
    return out


def flat_file(row: dict) -> dict:
    out = {"auprc": row["auprc"], "vus_pr": row["vus_pr"]}
    for m, t in row["methods"].items():
        out.update({f"{m}.{k}": t[k] for k in ("f1", "far", "mar")})
        out.update({f"{m}.event_{k}": t["events"][k] for k in ("tp", "fp", "fn")})
    return out


# -- the report ------------------------------------------------------------------------------------
def _pct(ms: dict | None) -> str:
    if not ms or ms["mean"] is None:
        return "—"
    return cell({**ms, "mean": 100 * ms["mean"], "std": 100 * ms["std"]}, 1)


def markdown(result: dict) -> str:
    cmp, seeds, p, cfg = result["comparison"], result["seeds_run"], result["protocol"], result["config"]
    lines = [f"# {result['dataset']}: labelled-folder benchmark ({p['scored_files']} scored files)", "",
             f"Machine: {result['machine']}; {result['jobs']} parallel job(s) x {result['threads']} thread(s); "
             f"wall clock {result['wall_seconds']:.0f} s (load average at the end "
             f"{', '.join(map(str, result['load_average']))}).", "",
             f"Data: `{result['data']}`, label column `{p['label_column']}`"
             + (f", columns left out: {', '.join(f'`{c}`' for c in p['ignore_columns'])}"
                if p["ignore_columns"] else "")
             + (f", files excluded: {', '.join(f'`{g}`' for g in p['exclude'])}" if p["exclude"] else "")
             + f"; {len(result['channels'])} channels ({', '.join(result['channels'])}).", ""]
    if p["train_rows"] is not None:
        lines.append(f"Protocol: each file trains each detector on its first {p['train_rows']} rows and is scored "
                     "whole (causally, stride 1); "
                     + ("the rows after the training part are evaluated (SKAB's proposed leaderboard)."
                        if p["evaluate_on"] == "rest" else "every row is evaluated, the training rows included."))
    else:
        lines.append(f"Protocol: the files matching `{p['train_files']}` ({', '.join(p['training_files'])}) train one "
                     "detector per detector and seed, which scores every other file whole; every row of a scored file "
                     "is evaluated.")
    lab = p["labelled_training_points"]
    if lab:
        lines += ["", "Labelled anomalies inside the training rows (trained on all the same; the labels are read only "
                      "by the evaluation): " + "; ".join(f"`{k}` {v} points" for k, v in lab.items()) + "."]
    unscored = ", ".join(f"{d} {n}" for d, n in p["unscored_points"].items())
    lines += ["", f"Points with no score yet (the first points of a scored file, before the detector's first full "
                  f"window) count as not flagged; evaluated points without a score: {unscored}.", "",
              "One configuration for every file, fixed before any label was read: "
              + ", ".join(f"`{k}={v}`" for k, v in cfg.items()) + ".", "",
              "Metrics over all files together: precision, recall, F1, FAR = FP/(FP+TN) and MAR = FN/(FN+TP) from "
              "point counts pooled over files (SKAB's binary metrics); event F1 from event counts summed over files (a "
              "labelled run is found when a flagged run overlaps it; a flagged run overlapping none is a false "
              "positive); AUPRC and VUS-PR (TSB-AD, window = the model window) of the raw scores are means over the "
              "files with labelled anomalies. Each cell is the mean ± standard deviation over seeds "
              "(" + ", ".join(f"{d}: " + ",".join(map(str, s)) for d, s in seeds.items()) + ").", ""]
    if p.get("flag_everything"):
        b = p["flag_everything"]
        lines += [f"Baseline: flagging every evaluated point gives F1 {b['f1']:.3f} (precision {b['precision']:.3f}, "
                  f"recall 1, FAR 100 %, MAR 0 %); a random score's AUPRC is about {b['precision']:.3f}, the share of "
                  "anomalous points.", ""]
    for m in METHODS:
        lines += [f"## Threshold `{m}`", "",
                  "| detector | F1 | precision | recall | FAR % | MAR % | event F1 | event tp | event fp | event fn |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for det, f in cmp.items():
            lines.append(f"| {det} | {cell(f.get(f'{m}.f1'))} | {cell(f.get(f'{m}.precision'))} | "
                         f"{cell(f.get(f'{m}.recall'))} | {_pct(f.get(f'{m}.far'))} | {_pct(f.get(f'{m}.mar'))} | "
                         f"{cell(f.get(f'{m}.event_f1'))} | {cell(f.get(f'{m}.event_tp'), 1)} | "
                         f"{cell(f.get(f'{m}.event_fp'), 1)} | {cell(f.get(f'{m}.event_fn'), 1)} |")
        lines.append("")
    lines += ["## Threshold-free", "", "| detector | AUPRC | VUS-PR | train s | score s |", "|---|---|---|---|---|"]
    for det, f in cmp.items():
        lines.append(f"| {det} | {cell(f.get('auprc'))} | {cell(f.get('vus_pr'))} | "
                     f"{cell(f.get('train_seconds'), 1)} | {cell(f.get('score_seconds'), 1)} |")
    lines += ["", f"Labelled events in the evaluated rows: {p['label_events']} ({p['anomalous_points']} of "
                  f"{p['evaluated_points']} points).", "",
              "## Per file (mean over seeds)", "",
              "| file | detector | evaluated | anomalous | F1 quantile | F1 pot | F1 telemanom | FAR % telemanom | "
              "MAR % telemanom | events tp/fp/fn telemanom | AUPRC | VUS-PR |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    num = lambda ms, d=3: "—" if not ms or ms["mean"] is None else f"{ms['mean']:.{d}f}"  # noqa: E731
    for fr in result["per_file"]:
        for det, f in fr["detectors"].items():
            lines.append(f"| {fr['file']} | {det} | {fr['evaluated_points']} | {fr['anomalous_points']} | "
                         + " | ".join(num(f.get(f"{m}.f1")) for m in METHODS)
                         + f" | {_pct_num(f.get('telemanom.far'))} | {_pct_num(f.get('telemanom.mar'))} | "
                         + "/".join(num(f.get(f"telemanom.event_{k}"), 1) for k in ("tp", "fp", "fn"))
                         + f" | {num(f.get('auprc'))} | {num(f.get('vus_pr'))} |")
    failed = result.get("failed") or []
    if failed:
        lines += ["", f"{len(failed)} runs failed: " + "; ".join(
            f"{f['detector']}/{f['seed']}/{f['files']} ({f['error']})" for f in failed[:10])]
    return "\n".join(lines) + "\n"


def _pct_num(ms: dict | None) -> str:
    return "—" if not ms or ms["mean"] is None else f"{100 * ms['mean']:.1f}"


# -- the command line ------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder of CSV files (searched recursively, **/*.csv)")
    p.add_argument("--label-column", required=True, help="the 0/1 label column of every scored file (e.g. anomaly)")
    p.add_argument("--train-rows", type=int, help="train on each file's first N rows and score the file "
                                                  "(SKAB: 400)")
    p.add_argument("--train-files", metavar="GLOB", help="anomaly-free files (relative to --data, e.g. 'anomaly-free/"
                                                         "*.csv') that train one model for every other file")
    p.add_argument("--evaluate-on", choices=("rest", "all"), default="rest",
                   help="with --train-rows: evaluate the rows after the training part (rest, default: SKAB's "
                        "proposed leaderboard) or every row (all)")
    p.add_argument("--sep", help="the CSV separator (default: sniffed from each header line: , ; or tab)")
    p.add_argument("--ignore-columns", help="comma-separated columns that are neither channels nor the label "
                                            "(e.g. changepoint)")
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave out files matching GLOB (relative to --data; repeatable), e.g. 'anomaly-free/*'")
    p.add_argument("--detectors", default="wgan,zscore,iforest,hst",
                   help=f"comma-separated, from {', '.join(DETECTORS)}, or 'all' (default wgan,zscore,iforest,hst)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default 0,1,2); figures are "
                                                     "mean ± std over them")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1: in this process)")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads per job")
    p.add_argument("--window", type=int, help=f"the WGAN model's window, also VUS-PR's (default "
                                              f"{DEFAULT_CONFIG['window']})")
    p.add_argument("--iterations", type=int, help=f"WGAN generator and encoder steps (default "
                                                  f"{DEFAULT_CONFIG['iterations']})")
    p.add_argument("--transform", choices=TRANSFORMS, help="the WGAN model's input (default sequence; "
                                                           "distance-plot-mv: one multivariate distance plot)")
    from ..cli import SCORE_KINDS

    p.add_argument("--score", choices=SCORE_KINDS, help="the WGAN model's score kind, as train --score (default: "
                                                        "train's for the transform, combined for sequence)")
    t = p.add_argument_group("telemanom threshold",
                             "scaled to files of ~1,000 rows (telemanom's own: 70, 30, 100, 250)")
    t.add_argument("--telemanom-batch", type=int,
                   help=f"points per batch (default {DEFAULT_CONFIG['telemanom_batch']})")
    t.add_argument("--telemanom-windows", type=int,
                   help=f"batches per decision window (default {DEFAULT_CONFIG['telemanom_windows']})")
    t.add_argument("--telemanom-buffer", type=int, help=f"error buffer (default {DEFAULT_CONFIG['telemanom_buffer']})")
    t.add_argument("--telemanom-l-s", type=int, help=f"l_s: the first 2 l_s scored points are never flagged "
                                                     f"(default {DEFAULT_CONFIG['telemanom_l_s']})")
    p.add_argument("--name", help="output file stem (default: the folder name)")
    p.add_argument("--models", help="where models and raw scores go (<models>/<detector>/seed<k>/<file>/scores.npz; "
                                    "default: a temporary folder)")


def _config(a: argparse.Namespace) -> dict:
    cfg = dict(DEFAULT_CONFIG)
    for key in ("window", "iterations", "transform", "score", "telemanom_batch", "telemanom_windows",
                "telemanom_buffer", "telemanom_l_s"):
        if getattr(a, key, None) is not None:
            cfg[key] = getattr(a, key)
    if a.iterations is not None:
        cfg["encoder_iterations"] = a.iterations
    if cfg.get("score") is None:  # train's default for the transform, named in the report
        from ..training.fit import default_score_kind

        cfg["score"] = default_score_kind(cfg["transform"])
    for key in ("window", "iterations", "telemanom_batch", "telemanom_windows", "telemanom_buffer"):
        if int(cfg[key]) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be a positive integer, got {cfg[key]}")
    if cfg["transform"] != "sequence":
        from ..training.transforms import plot_length

        try:
            plot_length(int(cfg["window"]), 32)
        except ValueError as e:
            raise UserError(f"--window with --transform {cfg['transform']}: {e}") from None
    return cfg


def _tasks(a, cfg, detectors, seeds, train, scored, models: Path, data: Path) -> list[dict]:
    tasks = []
    cost = {d: i for i, d in enumerate(("zscore", "iforest", "wgan", "hst", "lstm"))}  # cheap ones report first
    for det in sorted(detectors, key=lambda d: cost.get(d, 9)):
        for seed in seeds:
            folder = models / det / f"seed{seed}"
            base = {"detector": det, "seed": seed, "config": {**cfg, "seed": seed}, "threads": a.threads,
                    "models": str(folder), "name": det}
            if a.train_rows is not None:
                tasks += [{**base, "per_file": True, "train": [f.values[:a.train_rows]], "files": [(f.id, f.values)],
                           "source": f"{data.name}/{f.id} (first {a.train_rows} rows)"} for f in scored]
            else:
                tasks.append({**base, "per_file": False, "train": [f.values for f in train],
                              "files": [(f.id, f.values) for f in scored],
                              "source": ", ".join(f"{data.name}/{f.id}" for f in train)})
    return tasks


def run(a: argparse.Namespace) -> Report:
    """Load and check the folder, fit and score every (detector, seed, file), threshold and evaluate."""
    from ..training.fit import ConfigKeyError, SeriesModelConfig

    data = Path(a.data)
    cfg = _config(a)
    try:
        SeriesModelConfig.from_flat(cfg, RUNNER_KEYS)  # a configuration the runner cannot fit fails here, by key
        detectors, seeds = parse_detectors(a.detectors), parse_seeds(a.seeds)
    except (ConfigKeyError, ValueError) as e:
        raise UserError(str(e)) from None
    if a.jobs < 1 or a.threads < 1:
        raise UserError("--jobs and --threads must be positive integers")
    channels, train, scored = load_folder(a, data)
    check_protocol(a, cfg, train, scored)
    models = Path(a.models) if a.models else Path(tempfile.mkdtemp(prefix="sd-folder-"))
    for det in detectors:
        for seed in seeds:
            folder = models / det / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(json.dumps({**cfg, "seed": seed}, indent=1) + "\n")
    tasks = _tasks(a, cfg, detectors, seeds, train, scored, models, data)
    started = time.monotonic()
    outputs: dict[tuple[str, int], list[dict]] = {}
    failed = []

    def collect(task: dict, get) -> None:
        tag = f"{task['detector']} seed {task['seed']} " + (task["files"][0][0] if task["per_file"]
                                                             else f"{len(task['files'])} files")
        try:
            out = get()
        except Exception as e:  # one failing fit is reported, not fatal for the folder
            failed.append({"detector": task["detector"], "seed": task["seed"],
                           "files": ",".join(f for f, _ in task["files"]), "error": f"{type(e).__name__}: {e}"})
            print(f"{tag}: failed: {e}", flush=True)
            return
        outputs.setdefault((task["detector"], task["seed"]), []).append(out)
        print(f"{tag}: trained {out['train_seconds']:.1f} s, scored {out['score_seconds']:.1f} s", flush=True)

    if a.jobs == 1:
        for task in tasks:
            collect(task, lambda t=task: run_task(t))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as pool:
            for task, fut in [(t, pool.submit(run_task, t)) for t in tasks]:
                collect(task, fut.result)
    if not outputs:
        raise UserError("no detector could be run: " + "; ".join(f"{f['detector']}: {f['error']}" for f in failed))
    return _report(a, data, cfg, channels, train, scored, outputs, failed, started, models)


def _report(a, data, cfg, channels, train, scored, outputs, failed, started, models) -> Report:
    from ..training.evaluation import ranges_from_mask
    from .peers import versions

    start = a.train_rows if (a.train_rows is not None and a.evaluate_on == "rest") else 0
    labels = {f.id: f.labels for f in scored}
    runs, per_seed, file_figs = [], {}, {}
    order = sorted(outputs, key=lambda k: (DETECTORS.index(k[0]), k[1]))
    for det, seed in order:
        outs = outputs[det, seed]
        records = {fid: rec for o in outs for fid, rec in o["records"].items()}
        rows = [evaluate_file(f.id, records[f.id], labels[f.id], start, cfg) for f in scored if f.id in records]
        tr, sc = sum(o["train_seconds"] for o in outs), sum(o["score_seconds"] for o in outs)
        summary = summarise(rows)
        runs.append({"detector": det, "seed": seed, "summary": summary, "train_seconds": round(tr, 2),
                     "score_seconds": round(sc, 2), "files": rows})
        per_seed.setdefault(det, {})[seed] = flat_summary(summary, tr, sc)
        for r in rows:
            file_figs.setdefault(r["file"], {}).setdefault(det, {})[seed] = flat_file(r)
    per_file = []
    for f in scored:
        y = f.labels[start:]
        per_file.append({"file": f.id, "rows": int(len(f.values)), "evaluated_points": int(len(y)),
                         "anomalous_points": int(y.sum()), "detectors": aggregate(file_figs.get(f.id, {}))})
    if a.train_rows is not None:
        lab = {f.id: int(f.labels[:a.train_rows].sum()) for f in scored if f.labels[:a.train_rows].any()}
    else:
        lab = {f.id: int(f.labels.sum()) for f in train if f.labels is not None and f.labels.any()}
    protocol = {"label_column": a.label_column,
                "ignore_columns": [c.strip() for c in (a.ignore_columns or "").split(",") if c.strip()],
                "exclude": list(a.exclude or []), "sep": a.sep, "train_rows": a.train_rows,
                "train_files": a.train_files,
                "training_files": [f.id for f in train],
                "evaluate_on": a.evaluate_on if a.train_rows is not None else "all",
                "scored_files": len(scored), "labelled_training_points": lab,
                "evaluated_points": sum(len(f.labels) - start for f in scored),
                "anomalous_points": sum(int(f.labels[start:].sum()) for f in scored),
                "label_events": sum(len(ranges_from_mask(f.labels[start:])) for f in scored),
                # evaluated points with no score yet (NaN: never flagged), per detector (its first seed)
                "unscored_points": {}}
    for r in runs:
        protocol["unscored_points"].setdefault(r["detector"], sum(x["unscored_points"] for x in r["files"]))
    protocol["flag_everything"] = flag_everything(protocol["anomalous_points"], protocol["evaluated_points"])
    import torch

    name = a.name or data.name.lower()
    cmp = aggregate(per_seed)
    result = {"dataset": name.upper(), "data": str(data), "models": str(models), "config": cfg, "protocol": protocol,
              "channels": channels, "jobs": a.jobs, "threads": a.threads,
              "machine": f"{machine.cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, "
                         f"torch {torch.__version__}",
              "libraries": versions(), "load_average": [round(v, 2) for v in os.getloadavg()],
              "wall_seconds": round(time.monotonic() - started, 1), "comparison": cmp,
              "seeds_run": {d: sorted(v) for d, v in per_seed.items()}, "per_file": per_file, "runs": runs,
              "failed": failed}
    return Report(name, result, markdown, "pointwise F1 (quantile / pot / telemanom): " + "; ".join(
        f"{d} " + " / ".join(cell(cmp[d][f'{m}.f1']) for m in METHODS) for d in cmp))


BENCHMARK = Benchmark("folder", __doc__.splitlines()[0], add_arguments, run)
build_parser, main = BENCHMARK.build_parser, BENCHMARK.main

if __name__ == "__main__":
    raise SystemExit(main())
