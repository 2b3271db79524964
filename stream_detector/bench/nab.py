"""The Numenta Anomaly Benchmark, run online and scored by the package's NAB scorer.

``stream-detector bench nab --data DIR`` (``DIR`` = a NAB checkout: ``data/``, ``labels/``,
``config/``).  NAB's rules, kept here:

* online: each point is seen once, in order; a point's score uses only points up to it;
* the detector may train on the probationary first 15 % of each file (capped at 750 points,
  as NAB's scorer caps it) and nothing else (the model is trained once on it; afterwards it
  only scores);
* one configuration for the whole corpus; the NAB threshold is optimised over the corpus
  per profile by the scorer, as for every detector in NAB's leaderboard.

The raw score of a point is the model's score of the window that ends at it.  NAB wants a
score in ``[0, 1]``; two causal post-processings turn the raw score into one (``--post``):

* ``likelihood`` (default): Numenta's anomaly likelihood (nupic's ``AnomalyLikelihood`` as used
  by NAB's ``numenta`` detector): a normal distribution is fitted to the 10-point moving
  averages of the raw score over a trailing history of 8640 points (re-estimated every 100
  points, never from the learning period's points); ``--likelihood-periods`` says which:
  ``probation`` (default, as NAB's ``numenta`` detector sets them: the first half of the
  probation is the learning period, its second half the estimation samples, so the first
  estimate falls on the first scored point) or ``nupic`` (nupic's defaults, the runner's
  setting until 2026-12-03: a learning period of ``max(288, probation)`` points, then 100
  estimation samples, so nothing is scored in the first 100 or more points after the
  probation); the likelihood of a point is one minus the Gaussian tail probability of its own
  10-point average, nupic's red/yellow filter keeps only the first of consecutive points
  above 0.99999, and the reported score is NAB's log scaling
  ``log(1.0000000001 - L) / log(1 - 0.9999999999)``;
* ``rank``: the causal rank of a 5-point moving average of the raw score among all earlier
  ones of the file (the fraction of past scores below it): any new running maximum is 1.0.

Numenta's spatial rule (``--spatial-tolerance``, default 0.05 as in NAB's ``numenta`` detector;
0 turns it off) is applied after either: a point whose VALUE leaves the range of all earlier
values of the file by more than the tolerance times that range scores 1.0, whatever the model
says (the limit check, with limits that widen as the stream shows more).  It is part of the
published HTM detector's NAB result (70.1), so it was adopted as published, for every detector,
before any run with it; :func:`spatial_anomalies` has the rule.

``--via-worker --models DIR`` sends each file through the real worker instead (see
:func:`via_worker_main`) and compares its published likelihoods and NAB scores with the offline
ones on the same models.

``--rescore RESULTS`` reapplies the post-processing to a previous run's saved raw scores
without training.  ``--ensemble DETECTORS`` adds, for each detector named that ran with two
seeds or more, their seed ensemble (``<detector>-ensemble``, :func:`ensemble_rows`): per file,
each seed's raw scores in units of their own mean over the probation, averaged point by point,
then post-processed as a single detector's (offline only: the worker serves one model per
route).

**Detectors and seeds.**  ``--detectors`` (default: all) runs the WGAN model (``wgan``) and the
peers of :mod:`stream_detector.bench.peers` under the same rules (trained on the probation
only, scored online, the same post-processing), ``--seeds 0,1,2`` (default) repeats each per
seed, and the report gives every profile's score as mean ± std over the seeds.  Results go to
``RESULTS/<detector>-seed<k>/`` in NAB's layout; models to ``--models DIR/<detector>/seed<k>/``.
The LSTM's 250-point history is cut to a third of the probation on files whose probation is
shorter than 750 points (NAB's files start with 150 to 750 probationary points).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import math
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ..training.fit import ConfigKeyError, SeriesModelConfig, default_score_kind
from . import machine
from .comparison import DETECTORS, ENSEMBLE, aggregate, cell, parse_detectors, parse_seeds, report_order
from .framework import Benchmark, Report

PUBLISHED = {"ARTime": 74.9, "Numenta HTM": 70.1, "Random Cut Forest": 51.7}
# Training budgeted in iterations, never in seconds (a seed gives the same scores again).
DEFAULT_CONFIG = dict(window=32, transform="sequence", arch="conv", iterations=200, encoder_iterations=200,
                      encoder_mode="izi_f", kappa=1.0, max_seconds=None, probationary=0.15, smoothing=5, seed=0,
                      post="likelihood", spatial_tolerance=0.05, likelihood_periods="probation")
POST = ("likelihood", "rank")
# where the anomaly likelihood's learning period and estimation samples come from (file_likelihood)
LIKELIHOOD_PERIODS = ("probation", "nupic")
PERIODS_BEFORE_THE_KEY = "nupic"  # what a configuration written before ``likelihood_periods`` existed ran
# nupic's AnomalyLikelihood defaults (learningPeriod, estimationSamples, historicWindowSize,
# reestimationPeriod, the moving-average window, and _filterLikelihoods' red/yellow levels).
LIKELIHOOD = dict(learning_period=288, estimation_samples=100, historic_window=8640, reestimation_period=100,
                  averaging_window=10, red=0.99999, yellow=0.999, std_floor=1e-3)
# keys of the flat configuration that are NAB's own, not the model's (see NabConfig)
RUNNER_KEYS = ("probationary", "smoothing", "post", "likelihood", "spatial_tolerance", "likelihood_periods",
               "rescored_from")


@dataclass(frozen=True)
class NabConfig:
    """The corpus configuration, typed: the model (window, transform, training) and NAB's own
    settings (probation, post-processing).  Reports keep the flat mapping (``config``);
    :meth:`from_dict` reads it and names a key that belongs to neither."""

    model: SeriesModelConfig
    probationary: float = 0.15
    smoothing: int = 5
    post: str = "likelihood"
    likelihood: dict | None = None
    spatial_tolerance: float = 0.0
    likelihood_periods: str = PERIODS_BEFORE_THE_KEY
    rescored_from: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> NabConfig:
        if d.get("combine", "none") != "none":  # a run before --combine max_z was removed (it did not help)
            from ..errors import UserError

            raise UserError(f"combine={d['combine']!r}: --combine was removed (max_z measured not to help, "
                            "docs/benchmarks/nab_max_z.md); rescore without it")
        d = {k: v for k, v in d.items() if k != "combine"}
        model, own = SeriesModelConfig.from_flat(d, RUNNER_KEYS)
        return cls(model=model, **own)


def read_nab_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["timestamp"] for r in rows], np.array([float(r["value"]) for r in rows], dtype=np.float32)


def causal_rank(scores: np.ndarray) -> np.ndarray:
    """Fraction of earlier finite scores strictly below each score (NaN -> 0)."""
    out = np.zeros(len(scores))
    seen: list[float] = []
    for i, s in enumerate(scores):
        if not np.isfinite(s):
            continue
        out[i] = bisect.bisect_left(seen, s) / len(seen) if seen else 0.0
        bisect.insort(seen, float(s))
    return out


def moving_average(x: np.ndarray, k: int) -> np.ndarray:
    """Causal mean of the last ``k`` values (NaN where any of them is NaN)."""
    if k <= 1:
        return x
    c = np.cumsum(np.nan_to_num(x, nan=0.0))
    bad = np.cumsum(~np.isfinite(x))
    out = np.full(len(x), np.nan)
    out[k - 1:] = (c[k - 1:] - np.concatenate([[0.0], c[:-k]])) / k
    nan_in = bad[k - 1:] - np.concatenate([[0], bad[:-k]])
    out[k - 1:][nan_in > 0] = np.nan
    return out


def anomaly_likelihood(raw: np.ndarray, learning_period: int = 288, estimation_samples: int = 100,
                       historic_window: int = 8640, reestimation_period: int = 100, averaging_window: int = 10,
                       red: float = 0.99999, yellow: float = 0.999, std_floor: float = 1e-3) -> np.ndarray:
    """Numenta's anomaly likelihood of each raw score, strictly causal.

    Point ``t`` (``t`` points seen before it) gets 0.5 until ``t >= learning_period +
    estimation_samples``.  From then on, at ``t`` = that first point and every multiple of
    ``reestimation_period``, a normal distribution is fitted (mean, population variance) to
    the ``averaging_window``-point moving averages ``m[j]`` for ``j`` in ``[max(t -
    historic_window, learning_period), t - 1]`` (only raw scores before ``t``); between two
    estimates the last one is kept.  The point's likelihood is ``1 - Q(z)``, ``z = (m[t] -
    mean) / std`` (``Q`` the standard normal tail ``0.5 * erfc(z / sqrt 2)``: one-sided, a
    score below the mean gives < 0.5), with ``std >= std_floor * |mean|`` (and >= 1e-12).
    nupic's filter: a tail probability ``<= 1 - red`` right after another one ``<= 1 - red``
    (unfiltered) is raised to ``1 - yellow``.  Non-finite moving averages are left out of
    the estimate and give 0.5.

    Deviations from nupic, all because our raw scores are unbounded rather than in [0, 1]:
    nupic floors the mean at 0.03 and the variance at 0.0003 in the score's own units (here
    a relative floor on the standard deviation), and mirrors scores below the mean (a score
    unusually *low* is flagged too; here it is not).

    A wrapper over the streaming ``runtime.thresholds.LikelihoodThreshold`` (the worker's
    procedure), so offline and online likelihoods are the same (what it replaced: see
    ``docs/benchmarks/history.md``).
    """
    from ..runtime.thresholds import LikelihoodThreshold

    proc = LikelihoodThreshold(learning_period=learning_period, estimation_samples=estimation_samples,
                               historic_window=historic_window, reestimation_period=reestimation_period,
                               averaging_window=averaging_window, red=red, yellow=yellow, std_floor=std_floor)
    proc.update(np.asarray(raw, dtype=np.float64))
    return proc.last_likelihoods


def log_likelihood(likelihood: np.ndarray) -> np.ndarray:
    """NAB's ``numenta`` detector's reported score: ``log(1.0000000001 - L) / log(1 - 0.9999999999)``
    (0.5 -> 0.030, 0.99999 -> 0.5), clipped to [0, 1]."""
    lik = np.asarray(likelihood, dtype=np.float64)
    return np.clip(np.log(1.0000000001 - lik) / math.log(1.0 - 0.9999999999), 0.0, 1.0)


def spatial_anomalies(values: np.ndarray, tolerance: float) -> np.ndarray:
    """Numenta's spatial rule (NAB's ``numenta`` detector, ``SPATIAL_TOLERANCE = 0.05``) on one
    file's values: point ``t`` is a spatial anomaly when ``values[t]`` lies outside ``[lo - tol
    (hi - lo), hi + tol (hi - lo)]``, ``lo`` and ``hi`` the minimum and maximum of ``values[:t]``;
    never while those are equal.  The worker's ``likelihood`` threshold applies the same
    function (:func:`~stream_detector.runtime.thresholds.spatial_flags`) window by window."""
    from ..runtime.thresholds import spatial_flags

    if not tolerance > 0:
        return np.zeros(len(values), dtype=bool)
    return spatial_flags(np.asarray(values, dtype=np.float64).reshape(-1, 1), np.array([np.inf]),
                         np.array([-np.inf]), tolerance)[0]


def file_likelihood(likelihood: dict, probationary: int, periods: str) -> dict:
    """The anomaly likelihood's parameters for one file whose probation is ``probationary``
    points, counted in points.  ``periods="probation"`` is NAB's ``numenta`` detector: learning
    period ``floor(probation / 2)``, estimation samples the rest of the probation, so the first
    estimate falls on the first point NAB scores (the detector learnt from the probation; the
    likelihood only needs to know its scores' spread).  ``periods="nupic"`` keeps nupic's learning
    period but never less than the probation, then ``estimation_samples`` more points."""
    if periods == "probation":
        learning = int(probationary) // 2
        return dict(likelihood, learning_period=learning, estimation_samples=int(probationary) - learning)
    if periods == "nupic":
        return dict(likelihood, learning_period=max(int(likelihood["learning_period"]), int(probationary)))
    raise ValueError(f"unknown likelihood periods {periods!r} (one of {', '.join(LIKELIHOOD_PERIODS)})")


def post_process(x: np.ndarray, cfg: dict, probationary: int, values: np.ndarray | None = None) -> np.ndarray:
    """``x`` (one file's raw scores) to a NAB score in [0, 1] by ``cfg['post']``, then 1.0 at the
    spatial anomalies of ``values`` (the file's points) when ``cfg['spatial_tolerance']`` > 0."""
    post = cfg.get("post", "rank")
    if post == "rank":
        out = causal_rank(moving_average(x, cfg["smoothing"]))
    elif post == "likelihood":
        p = file_likelihood(dict(LIKELIHOOD, **cfg.get("likelihood", {})), probationary,
                            cfg.get("likelihood_periods", PERIODS_BEFORE_THE_KEY))
        out = log_likelihood(anomaly_likelihood(x, **p))
    else:
        raise ValueError(f"unknown post-processing {post!r}")
    tol = float(cfg.get("spatial_tolerance") or 0.0)
    if tol > 0:
        if values is None:
            raise ValueError("the spatial rule needs the file's values")
        out = np.where(spatial_anomalies(values, tol), 1.0, out)
    return out


def run_file(task: dict) -> dict:
    """Train on the probationary part of one file and score every point online, with the task's
    detector: the WGAN model (``wgan``) or a peer of :mod:`stream_detector.bench.peers`."""
    from .nab_scorer import probationary_length

    c = NabConfig.from_dict(task["config"])
    timestamps, values = read_nab_csv(Path(task["path"]))
    n, w = len(values), c.model.window
    # NAB's probationary period (15 %, capped at 750 points): training on more would train on
    # points that are scored afterwards, i.e. look ahead.
    prob = probationary_length(n, c.probationary)
    series = values.reshape(-1, 1)
    detector = task.get("detector", "wgan")
    if detector == "wgan":
        import torch

        from ..training.fit import fit_and_score

        torch.set_num_threads(task["threads"])
        fit = fit_and_score(series[:prob], series, ["value"], Path(task["models"]) / model_folder(task["name"]),
                            c.model, train_fraction=max(0.5, 1 - (w + 20) / prob), name=task["name"],
                            threads=task["threads"])
        raw, train_seconds, score_seconds = fit.points, fit.train_seconds, fit.scores.seconds
    else:
        from .peers import make_peer

        options = {"threads": task["threads"], "history": min(250, prob // 3)} if detector == "lstm" else {}
        peer = make_peer(detector, [0], int(task["config"]["seed"]), **options)
        started = time.monotonic()
        peer.fit(series[:prob])
        train_seconds = time.monotonic() - started
        started = time.monotonic()
        raw = peer.score(series)
        score_seconds = time.monotonic() - started
    started = time.monotonic()
    likelihood = post_process(raw, task["config"], prob, values)
    return {"name": task["name"], "timestamps": timestamps, "scores": likelihood.tolist(),
            "raw": np.asarray(raw, dtype=np.float64).tolist(), "points": n,
            "probationary": prob, "train_seconds": round(train_seconds, 1),
            "score_seconds": round(score_seconds + time.monotonic() - started, 2)}


def rescore_file(root: Path, detector_dir: Path, name: str, cfg: dict, window: int | None = None) -> dict:
    """A file's row from a previous run's results CSV (``detector_dir``, NAB's layout): its model
    scores (``raw_score``) with this run's post-processing; nothing is trained.  The first
    ``window - 1`` points get no score (older runs wrote 0 there)."""
    from .nab_scorer import probationary_length

    category, fname = name.split("/")
    det = detector_dir.name
    with open(detector_dir / category / f"{det}_{fname}", newline="") as f:
        raw = np.array([float(r["raw_score"]) for r in csv.DictReader(f)])
    timestamps, values = read_nab_csv(root / "data" / name)
    if len(raw) != len(values):
        raise ValueError(f"{name}: {len(raw)} raw scores for {len(values)} rows")
    if window:
        raw[: window - 1] = np.nan
    started = time.monotonic()
    prob = probationary_length(len(values), cfg["probationary"])
    likelihood = post_process(raw, cfg, prob, values)
    return {"name": name, "timestamps": timestamps, "scores": likelihood.tolist(), "raw": raw.tolist(),
            "points": len(values), "probationary": prob,
            "train_seconds": 0.0, "score_seconds": round(time.monotonic() - started, 2)}


def ensemble_rows(seed_rows: list[list[dict]], cfg: dict, root: Path) -> list[dict]:
    """One row per file for the seed ensemble of one detector: ``seed_rows`` holds each seed's
    rows (:func:`run_file` / :func:`rescore_file`, the same files in the same order).  Each seed's
    raw scores are divided by their mean over the file's probation (the points it trained on,
    all before the first scored point, so the scaling is causal and label-free: seeds trained to
    different scales weigh the same), averaged per point, and post-processed as one detector's."""
    rows = []
    for per_seed in zip(*seed_rows):
        names = {r["name"] for r in per_seed}
        if len(names) != 1:
            raise ValueError(f"the seeds' files differ: {sorted(names)}")
        first = per_seed[0]
        prob = first["probationary"]
        scaled = []
        for r in per_seed:
            raw = np.asarray(r["raw"], dtype=np.float64)
            train = raw[:prob][np.isfinite(raw[:prob])]
            unit = float(np.mean(train)) if len(train) else 0.0
            scaled.append(raw / unit if unit > 0 else raw)
        raw = np.mean(scaled, axis=0)
        _, values = read_nab_csv(root / "data" / first["name"])
        started = time.monotonic()
        scores = post_process(raw, cfg, prob, values)
        rows.append({**first, "scores": scores.tolist(), "raw": raw.tolist(),
                     "train_seconds": round(sum(r["train_seconds"] for r in per_seed), 1),
                     "score_seconds": round(sum(r["score_seconds"] for r in per_seed) + time.monotonic() - started, 2)})
    return rows


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root / "data")) for p in (root / "data").glob("*/*.csv"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="NAB folder (data/, labels/combined_windows.json, config/)")
    p.add_argument("--limit", type=int, help="only the first N files (smoke runs; the score is then not NAB's)")
    p.add_argument("--detectors", default="all",
                   help=f"comma-separated, from {', '.join(DETECTORS)}, or 'all' (default): the WGAN model and its "
                        "peers under the same rules")
    p.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default 0,1,2); scores are "
                                                     "reported as mean ± std over them")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-seconds", type=float, help="wall-clock cap on the WGAN's training per file (default: none; "
                                                      "budgets are iterations)")
    p.add_argument("--iterations", type=int)
    from ..cli import SCORE_KINDS

    p.add_argument("--score", choices=SCORE_KINDS, help="the WGAN model's score kind, as train --score (default: "
                                                        "train's for sequence models, combined)")
    p.add_argument("--name", default="nab", help="output file stem (default nab)")
    p.add_argument("--models", help="where per-file models go (default: a temporary folder)")
    p.add_argument("--results", help="where the detector's NAB results CSVs go (default: a temporary folder)")
    p.add_argument("--post", choices=POST, help="raw score -> NAB score: 'likelihood' (default: Numenta's anomaly "
                   "likelihood, log-scaled as NAB's numenta detector) or 'rank' (causal rank of a 5-point average)")
    p.add_argument("--spatial-tolerance", type=float,
                   help="Numenta's spatial rule: a value outside the range of all earlier values by more than this "
                        "fraction of the range scores 1.0 (default 0.05, NAB's numenta detector; 0: off)")
    p.add_argument("--likelihood-periods", choices=LIKELIHOOD_PERIODS,
                   help="the likelihood's learning period and estimation samples: 'probation' (default, NAB's "
                        "numenta detector: the probation's first and second half) or 'nupic' (max(288, probation) "
                        "points, then 100)")
    p.add_argument("--rescore", help="a previous run's results folder (<detector>-seed<k>/<category>/*.csv with "
                   "raw_score): reuse its scores, no training, and apply this run's post-processing")
    p.add_argument("--ensemble", metavar="DETECTORS",
                   help="also score these detectors' seeds averaged into one score per point (an ensemble over seeds, "
                        "each seed in units of its mean raw score over the probation), e.g. 'wgan' or 'all'")
    p.add_argument("--likelihood", action="append", default=[], metavar="KEY=VALUE",
                   help="override one of the anomaly likelihood's parameters (repeatable; keys: "
                   + ", ".join(LIKELIHOOD) + ")")
    v = p.add_argument_group("via the worker", "--via-worker --models DIR: send each NAB file through the real "
                             "worker (embedded broker, one source and route per file, threshold 'likelihood') and "
                             "compare its published likelihoods and NAB scores with the offline ones on the same "
                             "models; writes <out>/<name>_via_worker.json/.md")
    v.add_argument("--via-worker", action="store_true", help="needs --models DIR of an earlier run (DIR/<category>__"
                   "<file>/model.onnx + model.json); trains nothing")
    v.add_argument("--batch-points", type=int, default=500, help="points per batch message (default 500)")
    v.add_argument("--worker-timeout", type=float, default=7200.0,
                   help="give up waiting for the worker's records after this many seconds (default 7200)")


def parse_likelihood_overrides(items: list[str]) -> dict:
    """``["reestimation_period=31", ...]`` -> ``{"reestimation_period": 31, ...}`` (keys of ``LIKELIHOOD``)."""
    from ..errors import UserError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in LIKELIHOOD:
            raise UserError(f"--likelihood {item!r}: expected KEY=VALUE with KEY one of {', '.join(LIKELIHOOD)}")
        try:
            out[key] = type(LIKELIHOOD[key])(float(value)) if isinstance(LIKELIHOOD[key], int) else float(value)
        except ValueError:
            raise UserError(f"--likelihood {item!r}: {value!r} is not a number") from None
        if isinstance(LIKELIHOOD[key], int) and float(value) != out[key]:
            raise UserError(f"--likelihood {item!r}: {key} is a whole number of points")
    return out


def write_results(results_dir: Path, detector: str, rows: list[dict], root: Path) -> None:
    """NAB's results layout: ``<detector>/<category>/<detector>_<file>.csv`` with
    ``timestamp,value,anomaly_score`` (what NAB's scorer and ours read), plus the model's
    ``raw_score`` before smoothing and ranking."""
    for r in rows:
        category, fname = r["name"].split("/")
        path = results_dir / detector / category / f"{detector}_{fname}"
        path.parent.mkdir(parents=True, exist_ok=True)
        _, values = read_nab_csv(root / "data" / r["name"])
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "value", "anomaly_score", "raw_score"])
            for t, v, s, raw in zip(r["timestamps"], values, r["scores"], r["raw"]):
                w.writerow([t, repr(float(v)), f"{s:.6f}", f"{raw:.6g}"])


def markdown(result: dict) -> str:
    s = result["scores"]
    lines = [f"# NAB: {result['files']} files, scored by stream_detector.bench.nab_scorer", "",
             f"Machine: {result['machine']}; training {result['train_seconds']:.0f} s and scoring "
             f"{result['score_seconds']:.0f} s in total (wall clock {result['wall_seconds']:.0f} s).", "",
             "Configuration (one for the corpus): " + ", ".join(f"`{k}={v}`" for k, v in result["config"].items()) + ".",
             ""]
    if result.get("comparison"):
        cmp, seeds, profiles = result["comparison"], result["seeds_run"], list(s)
        libs = result.get("libraries", {})
        lines += ["## Detectors side by side (NAB score, mean ± standard deviation over seeds)", "",
                  "Each detector trained on each file's probation only and scored online, with the same post-processing; "
                  "`wgan` is this project's model, the others the peers of `stream_detector.bench.peers` ("
                  + ", ".join(f"{k} {v}" for k, v in libs.items() if v) + ").", "",
                  "| detector | seeds | " + " | ".join(profiles) + " | train s |", "|---|---|" + "---|" * (len(profiles) + 1)]
        ens = result.get("ensembles", {})
        for det, figs in cmp.items():
            lines.append(f"| {det} | {('ensemble of ' if det in ens else '') + ','.join(map(str, seeds[det]))} | "
                         + " | ".join(cell(figs.get(p), 1, det in ens) for p in profiles)
                         + f" | {cell(figs.get('train_seconds'), 0, det in ens)} |")
        if ens:
            lines += ["", "`<detector>-ensemble`: per file, each seed's raw scores divided by their mean over the "
                      "probation, averaged per point, then post-processed as one detector's (offline only: the worker "
                      "serves one model per route)."]
        lines += ["", "| detector | seed | " + " | ".join(profiles) + " |", "|---|---|" + "---|" * len(profiles)]
        for r in result.get("runs", []):
            lines.append(f"| {r['detector']} | {r['seed']} | "
                         + " | ".join(f"{r['scores'][p]['score']:.1f}" for p in profiles) + " |")
        p = result.get("primary", {"detector": "wgan", "seed": 0})
        lines += ["", f"## `{p['detector']}`, seed {p['seed']}", ""]
    lines += ["| profile | score | threshold | tp | fp | fn |", "|---|---|---|---|---|---|"]
    for profile, r in s.items():
        lines.append(f"| {profile} | **{r['score']:.1f}** | {r['threshold']:.4f} | {r.get('tp', '')} | "
                     f"{r.get('fp', '')} | {r.get('fn', '')} |")
    lines += ["", "Published (standard profile): " + "; ".join(f"{k} {v}" for k, v in PUBLISHED.items()) + "."]
    if result.get("plots"):
        lines += ["", "Best and worst labelled file (standard profile, per-file raw score): "
                  + ", ".join(f"[{p}]({p})" for p in result["plots"]) + "."]
    profiles = list(s)
    lines += ["", "## Per file", "", "Raw NAB score per file at the corpus threshold of each profile (a missed window "
              "costs `fnWeight`, a window detected at its start earns about `tpWeight`, false positives cost "
              "`fpWeight` each; the normalised corpus score is not a sum of these).", "",
              "| file | points | probation | train s | score s | " + " | ".join(profiles) + " |",
              "|---|---|---|---|---|" + "---|" * len(profiles)]
    for f in result.get("per_file", []):
        lines.append(f"| {f['name']} | {f['points']} | {f['probationary']} | {f['train_seconds']:.0f} | "
                     f"{f['score_seconds']:.1f} | " + " | ".join(f"{f.get('raw_' + p, 0.0):+.2f}" for p in profiles) + " |")
    return "\n".join(lines) + "\n"


def score_nab_results(detector_dir: Path, root: Path) -> dict:
    """``{profile: {"score", "threshold", "tp", "fp", "fn"}}`` with thresholds optimised over the corpus."""
    from .nab_scorer import score_corpus

    return score_corpus(detector_dir, root / "labels" / "combined_windows.json", root / "config" / "profiles.json",
                        data_dir=root / "data", per_file=True)


def plot_file(root: Path, row: dict, threshold: float, title: str, png: Path, label: str = "NAB score") -> None:
    """Raw values, the detector's NAB score (with the standard profile's threshold), the label
    windows shaded and the probationary period marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .nab_scorer import load_windows, to_datetime64

    ts = to_datetime64(row["timestamps"])
    _, values = read_nab_csv(root / "data" / row["name"])
    windows = load_windows(root / "labels" / "combined_windows.json").get(row["name"], [])
    fig, (a, b) = plt.subplots(2, 1, figsize=(12, 5), sharex=True)
    a.plot(ts, values, lw=0.6, color="tab:blue")
    a.set_ylabel("value")
    b.plot(ts, row["scores"], lw=0.6, color="tab:red", label=label)
    b.axhline(threshold, color="k", ls="--", lw=0.8, label=f"standard threshold {threshold:.4f}")
    b.set_ylabel("score")
    b.set_ylim(-0.02, 1.02)
    for ax in (a, b):
        for lo, hi in windows:
            ax.axvspan(lo, hi, color="orange", alpha=0.3, lw=0)
        ax.axvspan(ts[0], ts[row["probationary"] - 1], color="grey", alpha=0.15, lw=0)
    b.legend(loc="lower left", fontsize=8)
    a.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_best_worst(root: Path, rows: list[dict], scores: dict, out: Path, name: str,
                    label: str = "NAB score") -> list[str]:
    """Plot the labelled files with the highest and lowest per-file raw score (standard profile)."""
    from .nab_scorer import load_windows

    std = scores.get("standard")
    if not std or not std.get("per_file"):
        return []
    windows = load_windows(root / "labels" / "combined_windows.json")
    labelled = [r for r in rows if len(windows.get(r["name"], []))]
    if not labelled:
        return []
    ranked = sorted(labelled, key=lambda r: std["per_file"].get(r["name"], 0.0))
    written = []
    for tag, r in (("best", ranked[-1]), ("worst", ranked[0])):
        stem = Path(r["name"]).stem
        png = out / f"{name}_{tag}_{stem}.png"
        plot_file(root, r, std["threshold"], f"NAB {tag}: {r['name']} (standard raw score "
                  f"{std['per_file'][r['name']]:+.2f}; label windows shaded, probation grey)", png, label)
        written.append(str(png))
    return written


def saved_nab_runs(results: Path, seed: int = 0) -> list[tuple[str, int, Path]]:
    """``(detector, seed, detector folder)`` of every run in a results folder: ``<detector>-seed<k>/``,
    or ``streamdetector/`` of a run from before detectors and seeds (the WGAN model, ``seed``)."""
    runs = []
    for d in sorted(p for p in results.iterdir() if p.is_dir()) if results.is_dir() else []:
        det, _, k = d.name.rpartition("-seed")
        if det in DETECTORS and k.isdigit():
            runs.append((det, int(k), d))
    if not runs and (results / "streamdetector").is_dir():
        runs = [("wgan", seed, results / "streamdetector")]
    return sorted(runs, key=lambda r: (DETECTORS.index(r[0]), r[1]))


def run(a: argparse.Namespace) -> Report:
    """Train and score every file with every detector and seed (or ``--rescore`` a run),
    NAB-score each run over the corpus, plot the best and worst file of the first WGAN run into
    ``--out``; ``--via-worker`` runs :func:`via_worker_main` instead."""
    import multiprocessing as mp

    import torch

    from ..errors import UserError
    from .nab_scorer import load_windows
    from .peers import versions

    root = Path(a.data)
    missing = [need for need in ("data", "labels/combined_windows.json", "config/profiles.json")
               if not (root / need).exists()]
    if missing:  # checked before any training: the scorer needs all three
        raise UserError(f"{root} is not a NAB folder: {', '.join(missing)} missing (need data/, "
                        "labels/combined_windows.json and config/profiles.json)")
    cfg = dict(DEFAULT_CONFIG)
    if a.max_seconds is not None:
        cfg["max_seconds"] = a.max_seconds
    if a.iterations:
        cfg["iterations"] = cfg["encoder_iterations"] = a.iterations
    if a.score:
        if a.rescore:
            raise UserError("--score names the kind to train; a --rescore reuses saved raw scores of whatever kind "
                            "they were")
        cfg["score"] = a.score
    elif not (a.rescore or a.via_worker):  # train's default, named in the report (saved models have their own)
        cfg["score"] = default_score_kind(cfg["transform"])
    if a.post:
        cfg["post"] = a.post
    if a.spatial_tolerance is not None:
        if not a.spatial_tolerance >= 0:
            raise UserError(f"--spatial-tolerance must be 0 or more, got {a.spatial_tolerance}")
        cfg["spatial_tolerance"] = a.spatial_tolerance
    if a.likelihood_periods:
        cfg["likelihood_periods"] = a.likelihood_periods
    if cfg["post"] == "likelihood":
        overrides = parse_likelihood_overrides(a.likelihood)
        fixed = sorted({"learning_period", "estimation_samples"} & set(overrides))
        if fixed and cfg["likelihood_periods"] == "probation":
            raise UserError(f"--likelihood {', '.join(fixed)}: with --likelihood-periods probation they come from "
                            "each file's probation; add --likelihood-periods nupic to set them")
        cfg["likelihood"] = dict(LIKELIHOOD, **overrides)
        if cfg["likelihood_periods"] == "probation":  # each file's probation sets these: not one value to report
            cfg["likelihood"] = {k: v for k, v in cfg["likelihood"].items()
                                 if k not in ("learning_period", "estimation_samples")}
    elif a.likelihood or a.likelihood_periods:
        raise UserError("--likelihood and --likelihood-periods set the parameters of --post likelihood")
    try:
        NabConfig.from_dict(cfg)  # a configuration the runner cannot fit fails here, by key
        detectors, seeds = parse_detectors(a.detectors), parse_seeds(a.seeds)
    except (ConfigKeyError, ValueError) as e:
        raise UserError(str(e)) from None
    try:
        ensemble = parse_detectors(a.ensemble) if a.ensemble else []
    except ValueError as e:
        raise UserError(str(e).replace("--detectors", "--ensemble")) from None
    files = _files(root)[: a.limit] if a.limit else _files(root)
    windows = load_windows(root / "labels" / "combined_windows.json")
    if not any(len(windows.get(f, ())) for f in files):  # NAB's normalised score divides by what they can earn
        raise UserError(f"none of the {len(files)} file(s) chosen has a labelled anomaly window, so NAB's score is "
                        "undefined; take more files (--limit)")
    if a.via_worker:
        return via_worker_main(a, root, cfg, files)
    models = Path(a.models) if a.models else Path(tempfile.mkdtemp(prefix="sd-nab-"))
    started = time.monotonic()
    groups: dict[tuple[str, int], list[dict]] = {}
    if a.rescore:
        runs = saved_nab_runs(Path(a.rescore), cfg["seed"])
        if not runs:
            raise UserError(f"--rescore {a.rescore}: no <detector>-seed<k>/ (or streamdetector/) results folder there")
        for det, seed, folder in runs:
            groups[det, seed] = [rescore_file(root, folder, f, cfg, cfg["window"] if det == "wgan" else None)
                                 for f in files]
        cfg["rescored_from"] = str(a.rescore)
    else:
        cost = {d: i for i, d in enumerate(("zscore", "iforest", "hst", "wgan", "lstm"))}  # cheap ones first
        runs = sorted(((d, sd) for d in detectors for sd in seeds), key=lambda r: (cost[r[0]], r[1]))
        with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [((det, seed, f), pool.submit(run_file, {
                "name": f, "path": str(root / "data" / f), "models": str(models / det / f"seed{seed}"),
                "config": {**cfg, "seed": seed}, "threads": a.threads, "detector": det}))
                for det, seed in runs for f in files]
            for i, ((det, seed, f), fut) in enumerate(futures, 1):
                r = fut.result()
                groups.setdefault((det, seed), []).append(r)
                print(f"[{i}/{len(futures)}] {det} seed {seed} {f}: {r['points']} points, trained "
                      f"{r['train_seconds']:.0f} s, scored {r['score_seconds']:.1f} s "
                      f"(elapsed {time.monotonic() - started:.0f} s)", flush=True)
    ensembles: dict[str, list[int]] = {}
    for det in ensemble:
        members = sorted(sd for d, sd in groups if d == det)
        if len(members) < 2:
            print(f"--ensemble {det}: {len(members)} seed(s) ran, no ensemble", flush=True)
            continue
        groups[det + ENSEMBLE, 0] = ensemble_rows([groups[det, sd] for sd in members], cfg, root)
        ensembles[det + ENSEMBLE] = members
    results_dir = Path(a.results) if a.results else Path(tempfile.mkdtemp(prefix="sd-nab-results-"))
    order = sorted(groups, key=report_order)
    run_scores, per_seed = {}, {}
    for det, seed in order:
        name = f"{det}-seed{seed}"
        write_results(results_dir, name, groups[det, seed], root)
        run_scores[det, seed] = score_nab_results(results_dir / name, root)
        per_seed.setdefault(det, {})[seed] = {
            **{p: s["score"] for p, s in run_scores[det, seed].items()},
            # a rescore trains nothing and does not know the original training time: no figure
            **({} if a.rescore else {"train_seconds": sum(r["train_seconds"] for r in groups[det, seed])})}
    primary = next((k for k in order if k[0] == "wgan"), order[0])
    rows, scores = groups[primary], run_scores[primary]
    result = {"config": cfg, "files": len(rows),
              "machine": f"{machine.cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, "
              f"torch {torch.__version__}", "libraries": versions(),
              "load_average": [round(v, 2) for v in os.getloadavg()],
              "date": datetime.now().isoformat(timespec="seconds"),
              "train_seconds": round(sum(r["train_seconds"] for r in rows), 1),
              "score_seconds": round(sum(r["score_seconds"] for r in rows), 1),
              "wall_seconds": round(time.monotonic() - started, 1),
              "primary": {"detector": primary[0], "seed": primary[1]},
              "comparison": aggregate(per_seed),
              "seeds_run": {d: ensembles.get(d, sorted(v)) for d, v in per_seed.items()}, "ensembles": ensembles,
              "runs": [{"detector": d, "seed": sd, "scores": {p: {k: v for k, v in s.items() if k != "per_file"}
                                                                for p, s in run_scores[d, sd].items()}}
                       for d, sd in order],
              "scores": scores,
              "per_file": [{**{k: r[k] for k in ("name", "points", "probationary", "train_seconds", "score_seconds")},
                            **{f"raw_{p}": round(s["per_file"].get(r["name"], 0.0), 4) for p, s in scores.items()}}
                           for r in rows]}
    for s in scores.values():
        s.pop("per_file", None)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = [Path(p).name for p in plot_best_worst(root, rows, {p: dict(s, per_file={
        f["name"]: f[f"raw_{p}"] for f in result["per_file"]}) for p, s in scores.items()}, out, a.name,
        {"likelihood": "NAB score (log anomaly likelihood)", "rank": "NAB score (causal rank)"}[cfg["post"]])]
    return Report(a.name, result, markdown, "standard profile: " + "; ".join(
        f"{d} {cell(result['comparison'][d]['standard'], 1, d in ensembles)}" for d in per_seed))


BENCHMARK = Benchmark("nab", __doc__.splitlines()[0], add_arguments, run)
build_parser, main = BENCHMARK.build_parser, BENCHMARK.main


# -- the same models through the worker ------------------------------------------------------------
def model_folder(name: str) -> str:
    """A file's model folder under ``--models`` (as :func:`run_file` lays them out), also its source id."""
    return name.replace("/", "__")


def worker_likelihood_params(likelihood: dict, probationary: int, window: int,
                             periods: str = PERIODS_BEFORE_THE_KEY) -> dict:
    """The ``likelihood`` threshold parameters, in windows, of the worker route that reproduces the
    offline post-processing of one file (stride 1).

    Offline, the procedure runs over the file's POINT scores, ``window - 1`` of them (before the
    first complete window) NaN, and its positions count points; the worker feeds it window scores
    only, and its positions count windows (window ``j`` ends at point ``j + window - 1``).  The
    learning period (:func:`file_likelihood`'s, in points offline) is therefore shortened
    by ``window - 1``, so that the same moving averages are left out and the first estimate falls on
    the same point.  Re-estimation still happens every ``reestimation_period`` positions counted
    from the first window, i.e. ``window - 1`` points out of phase with the offline run, unless
    ``reestimation_period`` divides ``window - 1``: only then are the two equal to rounding."""
    p = file_likelihood(likelihood, probationary, periods)
    return dict(p, learning_period=max(0, p["learning_period"] - (window - 1)))


def windows_to_points(n_points: int, end_idx: np.ndarray, values: np.ndarray, before: float = 0.5) -> np.ndarray:
    """Per-point values from per-window ones as the offline runner maps window scores (a point takes
    the latest window ending at or before it); points before the first window get ``before``
    (the likelihood the offline procedure gives them: their raw score is NaN)."""
    from ..runtime.scoring import point_scores

    end_idx = np.asarray(end_idx, dtype=np.int64)
    out = point_scores(n_points, end_idx, 1, np.asarray(values, dtype=np.float64))
    out[: int(end_idx[0]) if len(end_idx) else n_points] = before
    return out


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return float(np.nanmax(d)) if d.size and np.any(np.isfinite(d)) else 0.0


def via_worker_main(a: argparse.Namespace, root: Path, cfg: dict, files: list[str]) -> Report:
    """``--via-worker``: each file's values through the real worker, its ``likelihood`` field against
    the offline post-processing of the same models' raw scores, and both NAB-scored alike.

    Per file: the offline raw point scores are recomputed from the saved model (ONNX, as
    :func:`run_file` scores); the worker serves the same model (one source and one route per
    file, ``threshold: likelihood`` with :func:`worker_likelihood_params`, stride 1) and is sent
    the values with synthetic timestamps 1 s apart (the likelihood does not depend on time; the
    NAB scorer uses the file's own timestamps for both runs).  The worker's per-window likelihood
    is mapped to points as the offline runner maps window scores, log-scaled with
    :func:`log_likelihood`, and the three score sets (offline as ``bench nab`` computes it, the
    worker's, and the offline procedure counted in windows as the worker counts) are scored by
    the same in-memory NAB scoring with the threshold optimised per profile over the files.
    """
    from ..errors import UserError
    from ..training.fit import score_with_model
    from .nab_scorer import probationary_length, score_arrays
    from .machine import cpu_model
    from .via_worker import run_via_worker

    if cfg.get("post") != "likelihood":
        raise UserError(f"--post {cfg.get('post')} is not supported via the worker: the worker's threshold "
                        "procedures include Numenta's anomaly likelihood ('likelihood') but not the causal rank")
    if a.rescore:
        raise UserError("--via-worker takes the raw scores from the models (--models DIR), not --rescore")
    if not a.models:
        raise UserError("--via-worker needs --models DIR: the per-file models of an earlier 'bench nab --models DIR' "
                        "run (DIR/<category>__<file>/model.onnx and model.json)")
    models = Path(a.models)
    if not models.is_dir():
        raise UserError(f"--models {models}: no such folder")
    files = [f for f in files if all((models / model_folder(f) / x).exists() for x in ("model.onnx", "model.json"))]
    if not files:
        raise UserError(f"--models {models}: no <category>__<file>/model.onnx + model.json there for the files of "
                        f"{root / 'data'} (the --models folder of an earlier 'bench nab' run)")
    if a.batch_points < 1:
        raise UserError(f"--batch-points must be a positive integer, got {a.batch_points}")
    started = time.monotonic()
    lik = dict(LIKELIHOOD, **cfg.get("likelihood", {}))
    periods = cfg.get("likelihood_periods", PERIODS_BEFORE_THE_KEY)
    tol = float(cfg.get("spatial_tolerance") or 0.0)
    offline, series, specs, info, spatial = {}, {}, {}, {}, {}
    for f in files:
        timestamps, values = read_nab_csv(root / "data" / f)
        mdir = models / model_folder(f)
        n = len(values)
        prob = probationary_length(n, cfg["probationary"])
        scored = score_with_model(mdir, values.reshape(-1, 1), stride=1, threads=a.threads)
        w, raw = scored.scorer.window, scored.points
        params = worker_likelihood_params(lik, prob, w, periods)
        # the spatial rule: the worker judges no point before its first window (they lie in the
        # probation, which NAB does not score), so neither does the comparison
        spatial[f] = spatial_anomalies(values, tol)
        spatial[f][: w - 1] = False
        by_windows = np.full(n, 0.5)
        by_windows[w - 1:] = anomaly_likelihood(raw[w - 1:], **params)
        whole = anomaly_likelihood(raw, **file_likelihood(lik, prob, periods))
        offline[f] = {"timestamps": timestamps, "raw": raw, "likelihood": np.where(spatial[f], 1.0, whole),
                      "likelihood_windows": np.where(spatial[f], 1.0, by_windows)}
        series[model_folder(f)] = values.reshape(-1, 1)
        specs[model_folder(f)] = {"method": "likelihood", **params, **({"spatial_tolerance": tol} if tol else {})}
        info[f] = {"points": n, "window": w, "probationary": prob}
    offline_seconds = time.monotonic() - started
    print(f"offline: {len(files)} files scored in {offline_seconds:.1f} s; sending them through the worker "
          f"(likelihood, stride 1)", flush=True)
    run = run_via_worker({model_folder(f): models / model_folder(f) for f in files}, series, specs, stride=1,
                         batch_points=a.batch_points, timeout=a.worker_timeout,
                         progress=lambda m: print(m, flush=True))
    per_file, worker_lik = [], {}
    for f in files:
        r, o, n = run.sources[model_folder(f)], offline[f], info[f]["points"]
        wl = r.extra.get("likelihood", np.full(r.published, np.nan))
        worker_lik[f] = windows_to_points(n, r.end_idx, wl)
        row = {"name": f, **info[f], "worker_run": r.summary(),
               "records_without_likelihood": int(np.sum(~np.isfinite(wl))),
               "windows_estimated": int(np.sum(np.isfinite(wl) & (wl != 0.5))),
               "learning_period_windows": specs[model_folder(f)]["learning_period"],
               "spatial_anomalies": int(spatial[f].sum())}
        if r.published:
            row["max_raw_score_difference"] = _max_abs(r.scores, o["raw"][r.end_idx])
            # the worker against the offline run, point by point (windows it never published count)
            row["max_likelihood_difference"] = _max_abs(worker_lik[f], o["likelihood"])
            row["max_likelihood_difference_published"] = _max_abs(wl, o["likelihood"][r.end_idx])
            row["max_likelihood_difference_vs_window_count"] = _max_abs(wl, o["likelihood_windows"][r.end_idx])
            if not r.missing:  # the procedure alone: offline on the worker's own published scores
                same = anomaly_likelihood(r.scores, **{k: v for k, v in specs[model_folder(f)].items()
                                                       if k not in ("method", "spatial_tolerance")})
                row["max_likelihood_difference_same_scores"] = _max_abs(wl, np.where(spatial[f][r.end_idx], 1.0,
                                                                                     same))
            row["points_differing_1e-9"] = int(np.sum(np.abs(worker_lik[f] - o["likelihood"]) > 1e-9))
        per_file.append(row)

    labels, profiles = root / "labels" / "combined_windows.json", root / "config" / "profiles.json"

    def nab_scores(lik_by_file: dict) -> dict:
        s = score_arrays({f: (offline[f]["timestamps"], log_likelihood(lik_by_file[f])) for f in files}, labels,
                         profiles, per_file=True)
        return {p: {k: v for k, v in x.items() if k != "per_file"} | {
            "per_file": {k: round(v, 6) for k, v in x["per_file"].items()}} for p, x in s.items()}

    scores = {"offline": nab_scores({f: offline[f]["likelihood"] for f in files}),
              "worker": nab_scores(worker_lik),
              "offline_window_count": nab_scores({f: offline[f]["likelihood_windows"] for f in files})}
    for run_name, by_profile in scores.items():
        for p, x in by_profile.items():
            per = x.pop("per_file")
            for row in per_file:
                row.setdefault("raw_scores", {}).setdefault(run_name, {})[p] = per.get(row["name"], 0.0)
    diffs = [r for r in per_file if "max_likelihood_difference" in r]
    result = {
        "data": str(root), "models": str(models), "files": len(files), "config": cfg, "likelihood": lik,
        "threshold_per_file": {f: specs[model_folder(f)] for f in files},
        "timestamps": "synthetic, 1 s apart from 1.7e9 (the likelihood does not depend on time; NAB scoring "
                      "uses each file's own timestamps for every run)",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "date": datetime.now().isoformat(timespec="seconds"),
        "offline_seconds": round(offline_seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "worker": run.summary(),
        "scores": scores,
        "max_likelihood_difference": max((r["max_likelihood_difference"] for r in diffs), default=None),
        "max_likelihood_difference_vs_window_count": max(
            (r["max_likelihood_difference_vs_window_count"] for r in diffs), default=None),
        "max_likelihood_difference_same_scores": max(
            (r["max_likelihood_difference_same_scores"] for r in diffs
             if "max_likelihood_difference_same_scores" in r), default=None),
        "max_raw_score_difference": max((r["max_raw_score_difference"] for r in diffs), default=None),
        "per_file": per_file,
    }
    if run.missing or run.timed_out:
        result["worker_log_tail"] = run.worker_log_tail
    if run.missing:
        print(f"worker records missing after {a.worker_timeout:.0f} s: {run.missing}", flush=True)
    return Report(f"{a.name}_via_worker", result, via_worker_markdown,
                  "; ".join(f"{p}: offline {scores['offline'][p]['score']:.2f}, worker "
                            f"{scores['worker'][p]['score']:.2f}" for p in scores["offline"])
                  + f"; largest likelihood difference {result['max_likelihood_difference']}")


def _g(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def via_worker_markdown(result: dict) -> str:
    s, w, m = result["scores"], result["worker"], result["machine"]
    profiles = list(s["offline"])
    lines = [f"# NAB: offline vs via the worker ({result['files']} files, likelihood threshold, stride 1)", "",
             f"The same per-file models (`{result['models']}`).  Offline: the model's raw point scores (ONNX, "
             "stride 1) post-processed by `anomaly_likelihood` over the file's points, as `bench nab` does.  Via the "
             f"worker: each file sent as batch messages of {w['settings']['batch_points']} points through the "
             "embedded broker to the worker serving a model repository with one source and route per file "
             "(`threshold: {method: likelihood, ...}`, the offline parameters, the offline learning period "
             f"(`{result['config'].get('likelihood_periods', PERIODS_BEFORE_THE_KEY)}` periods) less `window - 1` windows), the `likelihood` field of each published "
             "score record mapped to points as the offline runner maps window scores (a point takes the window "
             "ending at it; points before the first window get 0.5, as offline).  Both are log-scaled "
             "(`log_likelihood`) and scored alike (in memory, threshold optimised per profile over these files).",
             "", f"Timestamps: {result['timestamps']}.", "",
             f"Machine: {m['cpu']}, {m['cores']} cores. Worker: {w['windows']} windows published in "
             f"{w['wall_seconds']:.1f} s ({w['windows_per_second']} windows/s); whole comparison "
             f"{result['wall_seconds']:.0f} s (offline scoring {result['offline_seconds']:.0f} s)."
             + (f" **Missing records** (timed out): {w['missing']}." if w["missing"] else ""), "",
             "| run | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    names = {"offline": "offline (`bench nab`)", "worker": "via the worker",
             "offline_window_count": "offline, positions counted in windows (the worker's count)"}
    for run in ("offline", "worker", "offline_window_count"):
        lines.append(f"| {names[run]} | " + " | ".join(
            f"**{s[run][p]['score']:.2f}** (thr {s[run][p]['threshold']:.4f})" for p in profiles) + " |")
    lines += ["", "Largest absolute difference of the worker's likelihood (per point, before log scaling):", "",
              f"* against the offline likelihood: **{_g(result['max_likelihood_difference'])}**;",
              f"* against the offline procedure counting positions in windows, on the offline raw scores: "
              f"{_g(result['max_likelihood_difference_vs_window_count'])};",
              f"* against the offline procedure on the worker's own published scores: "
              f"{_g(result['max_likelihood_difference_same_scores'])};",
              f"* raw scores, worker against offline: {_g(result['max_raw_score_difference'])}.", "",
              "Offline the likelihood counts positions in points (the first window-1 have no score), the worker "
              "counts windows: with the learning period shortened by window-1 the same moving averages are "
              "learnt from, but re-estimation (every `reestimation_period` positions) is window-1 points out of "
              "phase unless `reestimation_period` divides window-1, so the two differ between re-estimations.", "",
              "| file | points | window | probation | published | max likelihood diff | vs window count | "
              + " | ".join(f"{p} offline / worker" for p in profiles) + " |",
              "|---|---|---|---|---|---|---|" + "---|" * len(profiles)]
    for r in result["per_file"]:
        rs = r.get("raw_scores", {})
        lines.append(f"| {r['name']} | {r['points']} | {r['window']} | {r['probationary']} | "
                     f"{r['worker_run']['published']} | {_g(r.get('max_likelihood_difference'))} | "
                     f"{_g(r.get('max_likelihood_difference_vs_window_count'))} | " + " | ".join(
                         f"{rs.get('offline', {}).get(p, 0.0):+.2f} / {rs.get('worker', {}).get(p, 0.0):+.2f}"
                         for p in profiles) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
