"""The MNIST and UCI HAR protocols of Haloui et al., "Anomaly detection with Wasserstein GAN".

One class is the anomaly, the others are normal.  A WGAN-GP with an encoder is trained on
normal data only (:func:`stream_detector.training.wgan.train`) and every test sample is scored
with :func:`stream_detector.training.export.anomaly_scores`, the function the exported ONNX graph
runs; AUPRC (anomaly = positive class) and ROC-AUC are reported beside the paper's figures.

Protocols (both seeded by one integer, the same seed for the splits and the networks):

* **MNIST**: the pool is ``x_train`` (60,000 images) by default (``pool="test"`` or
  ``"both"`` run the same protocol on ``x_test`` or on all 70,000).  For digit ``d``: normal = the other nine
  digits of the pool, split 80/20 at random; train on the 80 %; test = the 20 % normal
  plus every image of ``d`` in the pool.  Images are scaled to ``[-1, 1]``, ``[1, 28, 28]``.
* **HAR** (the published test split, 2,947 windows ``[128, 9]``): for activity ``a``:
  normal = the other five activities, split 70/30 stratified by activity; every window of
  ``a`` goes to the test set.  Min/max normalisation is fitted on the training windows
  only; the windows are scored through the ``distance-plot`` transform (128 steps pooled
  to a 32 x 32 plot per channel) and through the ``sequence`` transform.

Every row also scores the same split with the trivial peers (:func:`.peers.sample_peer_scores`:
the largest ``|z|`` and an IsolationForest), so the model is judged against what a user would
pick instead.

Tuning never looks at a benchmark test set: ``validation=True`` (``--validation``) drops
the benchmark's test samples and runs the same one-class protocol *inside the training
pool*, with the next normal class as a pseudo-anomaly (:func:`protocol_split`).

One configuration per benchmark (per transform for HAR), the same for every class
(:data:`MNIST_CONFIG`, :data:`HAR_CONFIG`).  MNIST trains by iteration count, as the paper
does, with the paper's encoder mode and score (``izi``: the encoder fitted to reconstruct
through the frozen generator; the score the reconstruction's mean squared error, ``kappa``
0), so a seed gives the same figures on any machine.  HAR is bounded by wall clock
(``max_seconds`` per model, 75 % of it for the GAN, as :func:`~stream_detector.training.wgan.train`
splits it) unless ``--max-seconds 0`` and ``--iterations`` are given; each result records the
steps done.

Models are independent, so they can run in parallel worker processes (``jobs``), each with
a fixed number of torch threads (``threads``); the committed figures were run with
``jobs=1, threads=1`` on a shared 2-core machine.  Every result records its training
seconds, the iterations actually done within the wall-clock budget, the FLOPs per sample of
the scorer and the machine, so that figures from different machines are not confused.

Run ``python -m stream_detector.bench.paper mnist --help``; the command-line entry points are
:func:`build_parser` (fills a given ``argparse`` parser, e.g. a ``bench paper`` sub-command)
and :func:`main` (takes the parsed namespace, or an argv list).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import UserError
from .framework import Benchmark, Report, write_report
from .machine import cpu_model

PAPER = "Haloui et al., \"Anomaly detection with Wasserstein GAN\" (arXiv:1812.02463)"
PAPER_MNIST_AUPRC = {0: 0.97, 1: 0.51, 2: 0.89, 3: 0.78, 4: 0.83, 5: 0.72, 6: 0.87, 7: 0.57, 8: 0.90, 9: 0.70}
HAR_ACTIVITIES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
# The paper's HAR figures: LAYING with a fully connected WGAN on raw total acceleration; the
# distance plots of the nine channels did not separate WALKING_DOWNSTAIRS (no figure given).
PAPER_HAR_AUPRC = {"LAYING": 0.70}
HAR_TRANSFORMS = ("distance-plot", "sequence")

# One configuration per benchmark, for every digit / activity: no per-class tuning.
# MNIST: the networks chosen on validation runs (--validation, digits 1 and 7, i.e.
# pseudo-anomalies 2 and 8, 60 s per model): mlp width 64 at lr 3e-4 (mean AUPRC 0.645) beat
# conv width 16 at lr 3e-4 (0.567, fewer steps in the same time); lr 3e-4 beat 1e-4 for the mlp
# on the x_test pool.  The paper's encoder mode and score (izi, kappa 0), 3,000 + 2,000 steps.
MNIST_CONFIG = dict(arch="mlp", width=64, latent_dim=32, iterations=3000, encoder_iterations=2000,
                    encoder_mode="izi", kappa=0.0, lr=3e-4)
# HAR: ``iterations`` is deliberately out of reach: the wall-clock budget (``max_seconds``, of
# which training spends 75 % on the GAN) decides how many generator steps are done.
# HAR: one configuration per transform (the same for all six activities).  Widths are set
# explicitly, not left to nets.default_sizes, because on one CPU thread the default widths
# (32 for nine channels) leave only a few hundred generator steps in the budget.
HAR_CONFIG = {
    "sequence": dict(arch="conv", width=16, latent_dim=16, iterations=100_000, encoder_iterations=2000,
                     encoder_mode="izi_f", kappa=1.0),
    "distance-plot": dict(arch="conv", width=8, latent_dim=16, iterations=100_000, encoder_iterations=2000,
                          encoder_mode="izi_f", kappa=1.0),
}
HAR_CONFIG["distance-plot-mv"] = HAR_CONFIG["distance-plot"]
# --generators K > 1 (D-AnoGAN, research document 002): the score of the same trained networks
DANOGAN_SCORE = ("(1 - alpha) * mean((x - G_k(E_k(x)))^2) + alpha * KL(C(f(x)) || C(f(G_k(E_k(x))))), "
                 "k = argmax C(f(x)) (D-AnoGAN)")


# ------------------------------------------------------------------ helpers
def metric_functions():
    """``(auprc, roc_auc, name)``: the package's metrics when present, else scikit-learn's."""
    try:
        from ..training.evaluation import auprc, roc_auc

        return auprc, roc_auc, "stream_detector.training.evaluation"
    except ImportError:
        from sklearn.metrics import average_precision_score, roc_auc_score

        return average_precision_score, roc_auc_score, "sklearn.metrics (average_precision_score, roc_auc_score)"


def machine_info(jobs: int, threads: int) -> dict:
    import torch

    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"platform": platform.platform(), "processor": cpu_model(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads_per_model": threads, "parallel_models": jobs, "load_average_at_start": load}


def _data_root(root: str | Path | None) -> Path:
    from .datasets import data_root

    return Path(root) if root else data_root()


def mnist_path(root: str | Path | None = None) -> Path:
    return _data_root(root) / "mnist" / "mnist.npz"


def har_path(root: str | Path | None = None) -> Path:
    return _data_root(root) / "har" / "uci_har_test_inertial.npz"


def _require(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"benchmark data not found: {path} (set STREAM_DETECTOR_DATA to the shared data folder)")


def load_mnist(pool: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 1, 28, 28]`` float32 in ``[-1, 1]`` and labels, from ``x_train``, ``x_test`` or both."""
    path = mnist_path(root)
    _require(path)
    with np.load(path) as d:
        parts = {"train": [("x_train", "y_train")], "test": [("x_test", "y_test")],
                 "both": [("x_train", "y_train"), ("x_test", "y_test")]}[pool]
        x = np.concatenate([d[a] for a, _ in parts])
        y = np.concatenate([d[b] for _, b in parts]).astype(np.int64)
    return (x.astype(np.float32) / 127.5 - 1.0)[:, None], y


def subsample_per_class(y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices keeping at most ``limit`` samples of each class (all when ``limit`` is None)."""
    if limit is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(y == c))[:limit] for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


def one_class_split(y: np.ndarray, anomaly: int, train_fraction: float, seed: int,
                    stratify: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train indices, test indices, test labels): normal = every class but ``anomaly``.

    The normal samples are split ``train_fraction`` / rest at random (stratified by class
    if asked); the test set is the normal rest plus every anomalous sample (label 1).
    """
    from sklearn.model_selection import train_test_split

    normal = np.flatnonzero(y != anomaly)
    anomalous = np.flatnonzero(y == anomaly)
    train_idx, test_normal = train_test_split(normal, train_size=train_fraction, random_state=seed,
                                              stratify=y[normal] if stratify else None)
    test_idx = np.concatenate([np.sort(test_normal), anomalous])
    labels = np.concatenate([np.zeros(len(test_normal), dtype=np.int64), np.ones(len(anomalous), dtype=np.int64)])
    return np.sort(train_idx), test_idx, labels


def protocol_split(y: np.ndarray, anomaly: int, train_fraction: float, seed: int, stratify: bool,
                   validation: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    """The benchmark split for ``anomaly``, or its validation stand-in.

    With ``validation`` the benchmark's test samples (the held-out normals and every sample
    of ``anomaly``) are dropped, and the same one-class protocol is run inside the training
    pool with a *pseudo-anomaly*: the next normal class after ``anomaly`` (cyclically).
    Configurations are compared on these figures, never on the benchmark's test set.
    Returns (train indices, test indices, test labels, pseudo-anomaly or None).
    """
    train_idx, test_idx, labels = one_class_split(y, anomaly, train_fraction, seed, stratify)
    if not validation:
        return train_idx, test_idx, labels, None
    classes = [int(c) for c in np.unique(y[train_idx])]
    pseudo = next((c for c in classes if c > anomaly), classes[0])
    inner_train, inner_test, inner_labels = one_class_split(y[train_idx], pseudo, train_fraction, seed + 1, stratify)
    return train_idx[inner_train], train_idx[inner_test], inner_labels, pseudo


def _multi(nets, alpha: float | None = None) -> dict:
    """The D-AnoGAN arguments of the score functions for ``nets`` (``classifier`` and ``alpha``; the
    classifier is None for one generator, and the score is then f-AnoGAN's); ``alpha`` overrides
    the configuration's (for ablations)."""
    return {"classifier": getattr(nets, "classifier", None),
            "alpha": nets.config.alpha if alpha is None else float(alpha)}


def _score_graph(encoder, generator, critic, kappa: float, classifier=None, alpha: float = 0.9):
    """encoder + generator + critic trunk (and classifier: all K pairs with several generators) as one
    module running :func:`anomaly_scores`, for :func:`count_flops`."""
    from torch import nn

    from ..training.export import anomaly_scores

    class ScoreGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.generator, self.critic, self.classifier = encoder, generator, critic, classifier

        def forward(self, x):
            return anomaly_scores(x, self.encoder, self.generator, self.critic, kappa, self.classifier, alpha)[0]

    return ScoreGraph()


def _score(x, nets, batch: int = 1024, alpha: float | None = None) -> np.ndarray:
    import torch

    from ..training.export import anomaly_scores

    with torch.no_grad():
        return torch.cat([anomaly_scores(x[i:i + batch], nets.encoder, nets.generator, nets.critic,
                                         nets.config.kappa, **_multi(nets, alpha))[0]
                          for i in range(0, len(x), batch)]).numpy()


def score_kinds(nets, x_train, x_test, labels: np.ndarray, batch: int = 1024) -> dict:
    """The same trained networks scored each way of :data:`~stream_detector.training.export.GAN_SCORE_KINDS`
    (fanogan, critic, combined standardised on the training samples, as ``train --score`` does),
    on transformed inputs (no level term): AUPRC, ROC-AUC and logAUC (research document 003's)
    per kind."""
    import torch

    from ..training.evaluation import log_auc
    from ..training.export import GAN_SCORE_KINDS, combine, critic_standardisation, score_parts

    def parts(x):
        with torch.no_grad():
            got = [score_parts(x[i:i + batch], nets.encoder, nets.generator, nets.critic, nets.config.kappa,
                               **_multi(nets)) for i in range(0, len(x), batch)]
        return type(got[0])(*(torch.cat([g[k] for g in got]) for k in range(4)))

    auprc, roc_auc, _ = metric_functions()
    on_test = parts(x_test)
    standard = critic_standardisation(*parts(x_train)[:2])
    out = {}
    for kind in GAN_SCORE_KINDS:
        scores = combine(kind, on_test, **standard).numpy().astype(np.float64)
        ok = np.isfinite(scores)
        out[kind] = {"auprc": float(auprc(labels[ok], scores[ok])), "roc_auc": float(roc_auc(labels[ok], scores[ok])),
                     "log_auc": log_auc(labels[ok], scores[ok]), "non_finite": int((~ok).sum())}
    return out


def generator_clusters(nets, x, classes: np.ndarray, batch: int = 1024) -> dict:
    """Which generator the classifier of D-AnoGAN networks picks for samples ``x`` of known normal
    ``classes`` (digits, activities; never read by training): per class the count per generator,
    the class's purity (the share going to its most frequent generator; mean over classes: 1 also
    when every sample goes to one generator), the normalised mutual information between class and
    generator (0: unrelated, 1: one-to-one), and the generators picked for 5 % of the samples or more."""
    import torch
    from sklearn.metrics import normalized_mutual_info_score

    with torch.no_grad():
        pick = torch.cat([nets.classifier(nets.critic.features(x[i:i + batch])).argmax(dim=1)
                          for i in range(0, len(x), batch)]).numpy()
    k = len(nets.generator)
    counts = {str(c): np.bincount(pick[classes == c], minlength=k).tolist() for c in np.unique(classes)}
    return {"per_class": counts, "purity": float(np.mean([max(v) / sum(v) for v in counts.values()])),
            "nmi": float(normalized_mutual_info_score(classes, pick)),
            "generators_used": int((np.bincount(pick, minlength=k) >= 0.05 * len(pick)).sum())}


def _peers(train: np.ndarray, test: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """The peers (:data:`~.peers.SAMPLE_PEERS`) on the same split as the model: AUPRC and ROC-AUC."""
    from .peers import sample_peer_scores

    auprc, roc_auc, _ = metric_functions()
    return {name: {"auprc": float(auprc(labels, s)), "roc_auc": float(roc_auc(labels, s))}
            for name, s in sample_peer_scores(train, test, seed).items()}


def _fit_and_score(x_train, x_test, labels: np.ndarray, cfg, flops_module=None, flops_example=None,
                   score_fn=None, ablations=None, describe=None) -> dict:
    """Train on ``x_train`` (transformed), score ``x_test`` (or ``score_fn(nets)``: e.g. the
    deployable scorer on raw windows), return metrics and costs; ``ablations`` (name ->
    ``fn(nets)``) scores the same trained networks other ways, reported under ``ablations``;
    ``describe(nets)`` adds its dict to the result."""
    from ..training.nets import count_flops
    from ..training.wgan import config_dict, train

    auprc, roc_auc, _ = metric_functions()
    started = time.monotonic()
    nets = train(x_train, replace(cfg, log_every=1), progress=False)
    train_seconds = time.monotonic() - started
    started = time.monotonic()
    scores = _score(x_test, nets) if score_fn is None else score_fn(nets)
    score_seconds = time.monotonic() - started
    kinds = score_kinds(nets, x_train, x_test, labels)
    extra = {}
    for name, fn in (ablations or {}).items():
        alt = fn(nets)
        extra[name] = {"auprc": float(auprc(labels, alt)), "roc_auc": float(roc_auc(labels, alt))}
    finite = np.isfinite(scores)
    if not finite.all():  # a diverged model: give non-finite scores the top finite score (counted) rather than crash
        scores = np.where(finite, scores, np.nanmax(np.where(finite, scores, -np.inf)) if finite.any() else 0.0)
    if flops_module is None:
        flops_module = _score_graph(nets.encoder, nets.generator, nets.critic, cfg.kappa, **_multi(nets))
        flops_example = x_test[:1]
    else:
        flops_module = flops_module(nets)
    w = nets.history["wasserstein"]
    tail = max(1, len(w) // 10)
    return {
        "auprc": float(auprc(labels, scores)),
        "roc_auc": float(roc_auc(labels, scores)),
        "non_finite_scores": int((~finite).sum()),
        "train_seconds": round(train_seconds, 2),
        "gan_seconds": round(nets.seconds["gan"], 2),
        "encoder_seconds": round(nets.seconds["encoder"], 2),
        "score_seconds": round(score_seconds, 3),
        "gan_iterations_done": len(w),
        "encoder_iterations_done": len(nets.history["encoder"]),
        "stopped_early": bool(nets.stopped_early),
        "final_wasserstein_estimate": float(np.mean(w[-tail:])) if w else None,
        "final_encoder_loss": float(np.mean(nets.history["encoder"][-tail:])) if nets.history["encoder"] else None,
        "flops_per_sample": count_flops(flops_module, flops_example),
        "config": config_dict(nets.config),
        "mean_score_normal": float(scores[labels == 0].mean()),
        "mean_score_anomalous": float(scores[labels == 1].mean()),
        "score_kinds": kinds,
        **({"ablations": extra} if extra else {}),
        **({"prior": [round(v, 4) for v in nets.prior]} if getattr(nets, "prior", None) is not None else {}),
        **(describe(nets) if describe else {}),
    }


# ------------------------------------------------------------------ one model (runs in a worker)
def _mnist_task(task: dict) -> dict:
    import torch

    from ..training.wgan import TrainConfig

    x, y = load_mnist(task["pool"], task["root"])
    keep = subsample_per_class(y, task["limit"], task["seed"])
    x, y = x[keep], y[keep]
    d = task["anomaly"]
    train_idx, test_idx, labels, pseudo = protocol_split(y, d, task["train_fraction"], task["seed"], stratify=False,
                                                         validation=task["validation"])
    cfg = TrainConfig(**task["cfg"])
    x_test = torch.from_numpy(x[test_idx])
    # D-AnoGAN: its score's two parts alone, on the same networks (reported beside, never chosen on these labels)
    parts = {"residual_only_alpha_0": lambda nets: _score(x_test, nets, alpha=0.0),
             "kl_only_alpha_1": lambda nets: _score(x_test, nets, alpha=1.0)} if cfg.generators > 1 else None
    normal = labels == 0
    clusters = (lambda nets: {"clusters": generator_clusters(nets, x_test[torch.from_numpy(normal)],
                                                             y[test_idx][normal])}) if cfg.generators > 1 else None
    out = _fit_and_score(torch.from_numpy(x[train_idx]), x_test, labels, cfg, ablations=parts, describe=clusters)
    row = {"anomaly": d, "paper_auprc": PAPER_MNIST_AUPRC.get(d), "n_train": int(len(train_idx)),
           "n_test_normal": int((labels == 0).sum()), "n_test_anomalous": int(labels.sum()), **out,
           "peers": _peers(x[train_idx].reshape(len(train_idx), 1, -1), x[test_idx].reshape(len(test_idx), 1, -1),
                           labels, task["seed"])}
    if pseudo is not None:
        row["validation_pseudo_anomaly"] = pseudo
    return row


def _har_task(task: dict) -> dict:
    import torch

    from ..training.export import ScoringNetwork
    from ..training.fit import default_level_weight
    from ..training.wgan import TrainConfig
    from ..training.transforms import WindowTransform, fit_normalisation, fit_window_mean_range

    path = har_path(task["root"])
    _require(path)
    with np.load(path) as d:
        windows, y = d["X"].astype(np.float32), d["y"].astype(np.int64)
    keep = subsample_per_class(y, task["limit"], task["seed"])
    windows, y = windows[keep], y[keep]
    name = task["anomaly"]
    a = HAR_ACTIVITIES.index(name) + 1
    train_idx, test_idx, labels, pseudo = protocol_split(y, a, task["train_fraction"], task["seed"], stratify=True,
                                                         validation=task["validation"])
    level = default_level_weight(task["transform"]) if task.get("level_weight") is None else task["level_weight"]
    stats = fit_normalisation(windows[train_idx].reshape(-1, windows.shape[2]))
    if level:
        stats.update(fit_window_mean_range(windows[train_idx]))
    wt = WindowTransform(task["transform"], stats, windows.shape[1], task["plot_size"])
    with torch.no_grad():
        x_train = wt(torch.from_numpy(windows[train_idx]))
        x_test = wt(torch.from_numpy(windows[test_idx]))
    cfg = TrainConfig(**task["cfg"])
    raw_test = torch.from_numpy(windows[test_idx])

    def deployable(nets, weight: float = level, alpha: float | None = None) -> np.ndarray:
        """The scorer the worker runs (raw window in: transform, networks and level term inside)."""
        net = ScoringNetwork(wt, nets.encoder, nets.generator, nets.critic, cfg.kappa, weight, **_multi(nets, alpha))
        with torch.no_grad():
            return torch.cat([net(raw_test[i:i + 1024])[0] for i in range(0, len(raw_test), 1024)]).numpy()

    # FLOPs of the deployable scorer (raw window in, transform inside); the transform
    # itself (subtractions, pooling) is not counted, only convolutions and linear layers.
    normal = labels == 0
    clusters = (lambda nets: {"clusters": generator_clusters(nets, x_test[torch.from_numpy(normal)],
                                                             y[test_idx][normal])}) if cfg.generators > 1 else None
    ablations = {"without_level_term": lambda nets: deployable(nets, 0.0)} if level else {}
    for w in task.get("level_weights") or ():  # a sweep on the same networks (choose it on --validation runs)
        if w != level:
            ablations[f"level_weight_{w:g}"] = lambda nets, w=w: deployable(nets, w)
    if cfg.generators > 1:  # D-AnoGAN: its score's two parts alone, on the same networks
        ablations.update(residual_only_alpha_0=lambda nets: deployable(nets, alpha=0.0),
                         kl_only_alpha_1=lambda nets: deployable(nets, alpha=1.0))
    out = _fit_and_score(x_train, x_test, labels, cfg,
                         flops_module=lambda nets: ScoringNetwork(wt, nets.encoder, nets.generator, nets.critic,
                                                                 cfg.kappa, level, **_multi(nets)),
                         flops_example=torch.zeros(1, windows.shape[1], windows.shape[2]), score_fn=deployable,
                         ablations=ablations or None, describe=clusters)
    out["level_weight"] = level
    n_train_per_class = {HAR_ACTIVITIES[c - 1]: int((y[train_idx] == c).sum()) for c in np.unique(y[train_idx])}
    row = {"anomaly": name, "transform": task["transform"], "input_shape": list(wt.output_shape()),
           "paper_auprc": PAPER_HAR_AUPRC.get(name), "n_train": int(len(train_idx)),
           "n_train_per_activity": n_train_per_class, "n_test_normal": int((labels == 0).sum()),
           "n_test_anomalous": int(labels.sum()), **out,
           "peers": _peers(windows[train_idx], windows[test_idx], labels, task["seed"])}
    if pseudo is not None:
        row["validation_pseudo_anomaly"] = HAR_ACTIVITIES[pseudo - 1]
    return row


def _run_task(task: dict) -> dict:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(task["threads"])
    try:
        return (_mnist_task if task["kind"] == "mnist" else _har_task)(task)
    finally:
        torch.set_num_threads(previous)


def _run_all(tasks: list[dict], jobs: int, progress: bool) -> list[dict]:
    """Run tasks in ``jobs`` spawned workers (in this process when ``jobs == 1``), keeping their order."""
    def report(r: dict) -> None:
        if progress:
            what = r["anomaly"] if "transform" not in r else f"{r['anomaly']} / {r['transform']}"
            print(f"  {what}: AUPRC {r['auprc']:.3f}  ROC-AUC {r['roc_auc']:.3f}  "
                  f"({r['train_seconds']:.0f} s, {r['gan_iterations_done']} GAN + {r['encoder_iterations_done']} "
                  f"encoder steps)", file=sys.stderr, flush=True)

    if jobs <= 1:
        results = []
        for t in tasks:
            results.append(_run_task(t))
            report(results[-1])
        return results
    import multiprocessing

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_task, t) for t in tasks]
        for f in futures:
            report(f.result())
        return [f.result() for f in futures]


def _config(base: dict, overrides: dict, seed: int, max_seconds: float | None) -> dict:
    from ..training.wgan import TrainConfig, config_dict

    cfg = {**base, **{k: v for k, v in overrides.items() if v is not None}, "seed": seed, "max_seconds": max_seconds}
    return config_dict(TrainConfig(**cfg))


def _summary(rows: list[dict]) -> dict:
    out = {"mean_auprc": float(np.mean([r["auprc"] for r in rows])),
           "mean_roc_auc": float(np.mean([r["roc_auc"] for r in rows])),
           "train_seconds_total": round(float(sum(r["train_seconds"] for r in rows)), 1)}
    if all("score_kinds" in r for r in rows):
        out["score_kinds"] = {kind: {m: float(np.mean([r["score_kinds"][kind][m] for r in rows]))
                                     for m in ("auprc", "roc_auc", "log_auc")} for kind in rows[0]["score_kinds"]}
    if all("peers" in r for r in rows):
        out["peers"] = {name: {m: float(np.mean([r["peers"][name][m] for r in rows])) for m in ("auprc", "roc_auc")}
                        for name in rows[0]["peers"]}
    return out


def _peers_table(rows: list[dict], what: str) -> list[str]:
    """The model beside its peers (issue 10) on the same splits."""
    rows = [r for r in rows if "peers" in r]
    if not rows:
        return []
    names = list(rows[0]["peers"])
    out = ["", "The model beside its peers on the same splits (`stream_detector.bench.peers`: zscore, the largest "
           "|z| of a sample against the training points; iforest, scikit-learn's IsolationForest, 100 trees, on the "
           "flattened standardised samples):", "",
           f"| {what} | model AUPRC | " + " | ".join(f"{n} AUPRC" for n in names) + " | model ROC-AUC | "
           + " | ".join(f"{n} ROC-AUC" for n in names) + " |", "|---|" + "---|" * (2 * len(names) + 2)]
    for r in rows + [None]:
        src = r if r is not None else {"auprc": float(np.mean([q["auprc"] for q in rows])),
                                       "roc_auc": float(np.mean([q["roc_auc"] for q in rows])),
                                       "peers": {n: {m: float(np.mean([q["peers"][n][m] for q in rows]))
                                                     for m in ("auprc", "roc_auc")} for n in names}}
        name = "**mean**" if r is None else (r["anomaly"] if "transform" not in r else f"{r['anomaly']} / {r['transform']}")
        out.append(f"| {name} | {_f(src['auprc'])} | " + " | ".join(_f(src["peers"][n]["auprc"]) for n in names)
                   + f" | {_f(src['roc_auc'])} | " + " | ".join(_f(src["peers"][n]["roc_auc"]) for n in names) + " |")
    return out


def _kinds_table(rows: list[dict], what: str) -> list[str]:
    """The score kinds (issue 11: fanogan, critic, combined) of the same trained networks, side by side."""
    rows = [r for r in rows if "score_kinds" in r]
    if not rows:
        return []
    kinds = list(rows[0]["score_kinds"])
    out = ["", f"Score kinds on the same trained networks (transformed inputs, no level term; logAUC as research "
           f"document 003 defines it, a threshold with no false positive counting as 0.5 / N_neg):", "",
           f"| {what} | " + " | ".join(f"{k} AUPRC | {k} ROC-AUC | {k} logAUC" for k in kinds) + " |",
           "|---|" + "---|" * (3 * len(kinds))]
    for r in rows:
        name = r["anomaly"] if "transform" not in r else f"{r['anomaly']} / {r['transform']}"
        out.append(f"| {name} | " + " | ".join(f"{_f(r['score_kinds'][k]['auprc'])} | {_f(r['score_kinds'][k]['roc_auc'])} "
                                                f"| {_f(r['score_kinds'][k]['log_auc'])}" for k in kinds) + " |")
    mean = {k: {m: float(np.mean([r["score_kinds"][k][m] for r in rows])) for m in ("auprc", "roc_auc", "log_auc")}
            for k in kinds}
    out.append("| **mean** | " + " | ".join(f"**{_f(mean[k]['auprc'])}** | {_f(mean[k]['roc_auc'])} "
                                            f"| {_f(mean[k]['log_auc'])}" for k in kinds) + " |")
    return out


# ------------------------------------------------------------------ the two benchmarks
_VALIDATION_NOTE = ("validation run, not the benchmark: the benchmark's test samples are dropped and the next "
                    "normal class is the pseudo-anomaly inside the training pool (same split fractions)")


def run_mnist(digits: Iterable[int] | None = None, *, seed: int = 0, max_seconds: float | None = None,
              pool: str = "train", train_fraction: float = 0.8, jobs: int = 1, threads: int = 1,
              limit_per_class: int | None = None, root: str | Path | None = None, progress: bool = False,
              validation: bool = False, **config: Any) -> dict:
    """One model per anomalous digit; returns the result dict that :func:`write_results` writes.

    ``config`` overrides :data:`MNIST_CONFIG` (``TrainConfig`` fields: ``arch``, ``width``,
    ``iterations`` ...); ``max_seconds`` is the wall-clock budget of each model.
    ``validation`` runs the tuning stand-in of :func:`protocol_split` instead of the benchmark.
    """
    digits = list(range(10)) if digits is None else [int(d) for d in digits]
    if bad := [d for d in digits if d not in range(10)]:
        raise ValueError(f"digits must be 0..9, got {bad}")
    if pool not in ("train", "test", "both"):
        raise ValueError(f"pool must be train, test or both, got {pool!r}")
    cfg = _config(MNIST_CONFIG, config, seed, max_seconds)
    tasks = [{"kind": "mnist", "anomaly": d, "cfg": cfg, "seed": seed, "pool": pool, "train_fraction": train_fraction,
              "limit": limit_per_class, "root": str(root) if root else None, "threads": threads,
              "validation": validation} for d in digits]
    mnist_path(root).exists() or _require(mnist_path(root))
    machine = machine_info(jobs, threads)
    started = time.monotonic()
    rows = _run_all(tasks, jobs, progress)
    wall = time.monotonic() - started
    summary = _summary(rows)
    paper = [PAPER_MNIST_AUPRC[r["anomaly"]] for r in rows]
    summary.update({"paper_mean_auprc": float(np.mean(paper)),
                    "digits_at_or_above_paper": sum(r["auprc"] >= p for r, p in zip(rows, paper)),
                    "digits": len(rows)})
    return {
        "benchmark": "paper-mnist" + ("-validation" if validation else ""), "paper": PAPER,
        "protocol": {"pool": {"train": "x_train (60,000)", "test": "x_test (10,000)", "both": "x_train + x_test"}[pool],
                     "normal": "the nine other digits", "split": f"{train_fraction:.0%} of the normal images train, "
                     "the rest test (seeded random split)", "test": "held-out normal + every image of the anomalous digit",
                     "input": "[1, 28, 28] scaled to [-1, 1]", "positive_class": "anomaly",
                     "limit_per_class": limit_per_class, "seed": seed, "validation": _VALIDATION_NOTE if validation
                     else False},
        "config": cfg, "metrics": metric_functions()[2],
        "score": ("anomaly_scores: " + DANOGAN_SCORE if cfg["generators"] > 1 else
                  "anomaly_scores: mean((x - G(E(x)))^2) + kappa * mean((f(x) - f(G(E(x))))^2)"),
        "machine": machine, "wall_seconds": round(wall, 1), "results": rows, "summary": summary,
    }


def _activity(name: str | int) -> str:
    text = str(name).strip()
    if text.isdigit():
        if not 1 <= int(text) <= 6:
            raise ValueError(f"activity number {text} is not 1..6")
        return HAR_ACTIVITIES[int(text) - 1]
    if text.upper() not in HAR_ACTIVITIES:
        raise ValueError(f"unknown activity {text!r}; choose from {', '.join(HAR_ACTIVITIES)} or 1..6")
    return text.upper()


def run_har(activities: Iterable[str | int] | None = None, *, transforms: Sequence[str] = HAR_TRANSFORMS,
            seed: int = 0, max_seconds: float | None = 130.0, train_fraction: float = 0.7, plot_size: int = 32,
            jobs: int = 1, threads: int = 1, limit_per_class: int | None = None, root: str | Path | None = None,
            progress: bool = False, validation: bool = False, level_weight: float | None = None,
            level_weights: Sequence[float] = (), **config: Any) -> dict:
    """One model per (anomalous activity, transform); returns the result dict for :func:`write_results`.

    Scores come from the deployable scorer on raw windows (``ScoringNetwork``: the transform, the
    networks and the level term ``level_weight``; ``None``: 1.0 for distance plots, 0 for
    sequences); with a level term the same networks are also scored without it and with each of
    ``level_weights`` (``ablations``: a sweep that costs no training, to choose the weight on
    ``validation`` runs).

    ``config`` overrides :data:`HAR_CONFIG` for every transform; ``validation`` runs the
    tuning stand-in of :func:`protocol_split` instead of the benchmark.
    """
    names = list(HAR_ACTIVITIES) if activities is None else [_activity(a) for a in activities]
    for t in transforms:
        if t not in ("sequence", "distance-plot", "distance-plot-mv"):
            raise ValueError(f"unknown transform {t!r}")
    cfgs = {t: _config(HAR_CONFIG[t], config, seed, max_seconds) for t in transforms}
    tasks = [{"kind": "har", "anomaly": a, "transform": t, "cfg": cfgs[t], "seed": seed,
              "train_fraction": train_fraction, "plot_size": plot_size, "limit": limit_per_class,
              "root": str(root) if root else None, "threads": threads, "validation": validation,
              "level_weight": level_weight, "level_weights": [float(w) for w in level_weights]}
             for a in names for t in transforms]
    _require(har_path(root))
    machine = machine_info(jobs, threads)
    started = time.monotonic()
    # Longest first keeps both workers busy to the end (distance plots cost more than sequences).
    order = sorted(range(len(tasks)), key=lambda i: tasks[i]["transform"] == "sequence")
    done = _run_all([tasks[i] for i in order], jobs, progress)
    rows = [None] * len(tasks)
    for i, r in zip(order, done):
        rows[i] = r
    wall = time.monotonic() - started
    return {
        "benchmark": "paper-har" + ("-validation" if validation else ""), "paper": PAPER,
        "protocol": {"data": "UCI HAR published test split: 2,947 windows of 128 steps x 9 channels",
                     "normal": "the five other activities",
                     "split": f"{train_fraction:.0%} of the normal windows train, the rest test "
                              "(seeded, stratified by activity); every anomalous window is a test window",
                     "normalisation": "per-channel min/max fitted on the training windows",
                     "transforms": {t: ("normalised window [9, 128]" if t == "sequence" else
                                        f"per-channel distance plot, 128 steps average-pooled to {plot_size}")
                                    for t in transforms},
                     "positive_class": "anomaly", "limit_per_class": limit_per_class, "seed": seed,
                     "validation": _VALIDATION_NOTE if validation else False},
        "config": cfgs, "metrics": metric_functions()[2],
        "score": "ScoringNetwork on raw windows: "
                 + (DANOGAN_SCORE if any(c["generators"] > 1 for c in cfgs.values()) else
                    "mean((x - G(E(x)))^2) + kappa * mean((f(x) - f(G(E(x))))^2)")
                 + " + level_weight * mean_c (mean_t relu(|s| - 1)^2 + relu(|m| - 1)^2) (s: the window normalised to the "
                 "training points' range, m: its mean mapped onto the training windows' mean range)",
        "machine": machine, "wall_seconds": round(wall, 1), "results": rows,
        "summary": {t: _summary([r for r in rows if r["transform"] == t]) for t in transforms},
    }


# ------------------------------------------------------------------ output
def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _flops(v: int) -> str:
    return f"{v / 1e6:.2f} M" if v < 1e9 else f"{v / 1e9:.2f} G"


def _cfg_line(cfg: dict) -> str:
    keys = ("arch", "width", "latent_dim", "iterations", "encoder_iterations", "n_critic", "gp_lambda", "lr", "betas",
            "batch_size", "encoder_mode", "kappa", "seed", "max_seconds")
    if cfg.get("generators", 1) > 1:
        keys += ("generators", "alpha", "classifier_weight", "prior_entropy_weight", "prior_entropy_decay", "prior_lr")
    return ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)


def _machine_line(m: dict) -> str:
    return (f"{m['platform']}, {m['cpu_count']} CPUs ({m['processor']}), torch {m['torch']}, "
            f"{m['torch_threads_per_model']} thread(s) per model, {m['parallel_models']} models in parallel, "
            f"load average at start {m['load_average_at_start']}")


def markdown(results: dict) -> str:
    """A readable table of a result dict from :func:`run_mnist` or :func:`run_har`."""
    rows = results["results"]
    out = []
    if results["benchmark"] == "paper-mnist":
        s = results["summary"]
        out += [f"# MNIST, one digit as the anomaly ({PAPER})", "",
                f"Pool: {results['protocol']['pool']}; {results['protocol']['split']}; "
                f"test = {results['protocol']['test']}. AUPRC with the anomaly as the positive class.", "",
                "| anomalous digit | AUPRC | paper AUPRC | difference | ROC-AUC | train / test (normal + anomalous) "
                "| train s | GAN / encoder steps |",
                "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            p = r["paper_auprc"]
            out.append(f"| {r['anomaly']} | {_f(r['auprc'])} | {_f(p, 2)} | {r['auprc'] - p:+.3f} | {_f(r['roc_auc'])} "
                       f"| {r['n_train']} / {r['n_test_normal']} + {r['n_test_anomalous']} | {r['train_seconds']:.0f} "
                       f"| {r['gan_iterations_done']} / {r['encoder_iterations_done']} |")
        out.append(f"| **mean** | **{_f(s['mean_auprc'])}** | **{_f(s['paper_mean_auprc'])}** | "
                   f"{s['mean_auprc'] - s['paper_mean_auprc']:+.3f} | {_f(s['mean_roc_auc'])} | | "
                   f"{s['train_seconds_total']:.0f} | |")
        out += ["", f"At or above the paper on {s['digits_at_or_above_paper']} of {s['digits']} digits."]
        below = [r for r in rows if r["auprc"] < r["paper_auprc"]]
        if below:
            out.append("Below the paper: " + ", ".join(f"digit {r['anomaly']} ({r['auprc']:.3f} vs "
                                                        f"{r['paper_auprc']:.2f})" for r in below) + ".")
    else:
        out += [f"# UCI HAR, one activity as the anomaly ({PAPER})", "",
                f"{results['protocol']['data']}; {results['protocol']['split']}; "
                f"{results['protocol']['normalisation']}. AUPRC with the anomaly as the positive class.", "",
                "| anomalous activity | transform | AUPRC | ROC-AUC | paper AUPRC | train / test (normal + anomalous) "
                "| train s | GAN / encoder steps | FLOPs / window |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['anomaly']} | {r['transform']} | {_f(r['auprc'])} | {_f(r['roc_auc'])} "
                       f"| {_f(r['paper_auprc'], 2)} | {r['n_train']} / {r['n_test_normal']} + {r['n_test_anomalous']} "
                       f"| {r['train_seconds']:.0f} | {r['gan_iterations_done']} / {r['encoder_iterations_done']} "
                       f"| {_flops(r['flops_per_sample'])} |")
        for t, s in results["summary"].items():
            out.append(f"| **mean** | {t} | **{_f(s['mean_auprc'])}** | {_f(s['mean_roc_auc'])} | | | "
                       f"{s['train_seconds_total']:.0f} | | |")
        out += ["", "The paper gives one HAR figure: LAYING, AUPRC 0.70 (fully connected WGAN + encoder on raw "
                "total acceleration); its distance plots of all nine channels did not separate WALKING_DOWNSTAIRS."]
        ablated = [r for r in rows if "without_level_term" in r.get("ablations", {})]
        if ablated:
            out += ["", "The same trained networks scored without the level term (ablation): "
                    + "; ".join(f"{r['anomaly']} {r['transform']} AUPRC {r['ablations']['without_level_term']['auprc']:.3f} "
                                f"(with it {r['auprc']:.3f}, weight {r['level_weight']})" for r in ablated) + "."]
        swept = [r for r in rows if any(k.startswith("level_weight_") for k in r.get("ablations", {}))]
        if swept:
            out += ["", "The same trained networks with other level weights (--level-weights): "
                    + "; ".join(f"{r['anomaly']} {r['transform']}: " + ", ".join(
                        f"weight {k[len('level_weight_'):]} AUPRC {v['auprc']:.3f}" for k, v in r["ablations"].items()
                        if k.startswith("level_weight_")) + f" (weight {r['level_weight']:g}: {r['auprc']:.3f})"
                                for r in swept) + "."]
        for name, note in (("LAYING", "paper 0.70, project target 0.95"),
                           ("WALKING_DOWNSTAIRS", "the paper's distance plots failed here")):
            found = [r for r in rows if r["anomaly"] == name]
            if found and not results["protocol"].get("validation"):
                out.append(f"{name} ({note}): " + ", ".join(f"{r['transform']} AUPRC {r['auprc']:.3f}"
                                                            for r in found) + ".")
    out += _kinds_table(rows, "anomaly" if results["benchmark"].startswith("paper-mnist") else "activity / transform")
    out += _peers_table(rows, "anomaly" if results["benchmark"].startswith("paper-mnist") else "activity / transform")
    multi = [r for r in rows if "kl_only_alpha_1" in r.get("ablations", {})]
    if multi:
        out += ["", "D-AnoGAN: the score's two parts alone on the same networks (alpha 0: the residual of the "
                "classifier's generator; alpha 1: the KL term; HAR: with the level term where the model has one), the "
                "learned prior over the generators, and how the classifier splits the normal test samples' classes "
                "(digits, activities) between the generators (used: generators picked for 5 % of them or more; purity: "
                "mean share of a class going to its most frequent generator; NMI: normalised mutual information of "
                "class and generator):", "",
                "| model | AUPRC | ROC-AUC | alpha 0 AUPRC | alpha 0 ROC-AUC | alpha 1 AUPRC | alpha 1 ROC-AUC | prior "
                "| used | purity | NMI |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in multi:
            a0, a1 = r["ablations"]["residual_only_alpha_0"], r["ablations"]["kl_only_alpha_1"]
            name = r["anomaly"] if "transform" not in r else f"{r['anomaly']} / {r['transform']}"
            out.append(f"| {name} | {_f(r['auprc'])} | {_f(r['roc_auc'])} | {_f(a0['auprc'])} | {_f(a0['roc_auc'])} "
                       f"| {_f(a1['auprc'])} | {_f(a1['roc_auc'])} | {', '.join(f'{v:.2f}' for v in r.get('prior', []))} "
                       f"| {r.get('clusters', {}).get('generators_used', '–')} "
                       f"| {_f(r.get('clusters', {}).get('purity'), 2)} | {_f(r.get('clusters', {}).get('nmi'), 2)} |")
    flops = sorted({r["flops_per_sample"] for r in rows})
    cfg = results["config"]
    if "arch" in cfg:
        out += ["", f"Configuration (same for every model): {_cfg_line(cfg)}."]
    else:
        out += ["", "Configuration (one per transform, the same for every activity):"]
        out += [f"- {t}: {_cfg_line(c)}." for t, c in cfg.items()]
    if results["protocol"].get("validation"):
        out += ["", f"**This is a {results['protocol']['validation']}.** Pseudo-anomalies: "
                + ", ".join(f"{r['anomaly']} -> {r['validation_pseudo_anomaly']}" for r in rows) + "."]
    out += ["Note: the AUPRC column refers to the pseudo-anomaly in a validation run."
            if results["protocol"].get("validation") else "",
            f"Score: {results['score']}. Metrics: {results['metrics']}.",
            f"Scorer cost: {', '.join(_flops(f) for f in flops)} FLOPs per sample (encoder + generator + critic trunk "
            "twice; convolutions and linear layers).",
            f"Machine: {_machine_line(results['machine'])}. Wall clock for the whole run: "
            f"{results['wall_seconds'] / 60:.1f} min.",
            f"Models stopped by the wall-clock budget: {sum(r['stopped_early'] for r in rows)} of {len(rows)}.", ""]
    return "\n".join(out)


def write_results(results: dict, json_path: str | Path, md_path: str | Path) -> None:
    """Write the result dict as JSON and as a Markdown table (the framework's writer: one stem,
    one folder, the machine added under ``host``)."""
    json_path, md_path = Path(json_path), Path(md_path)
    if json_path.with_suffix(".md") != md_path or json_path.suffix != ".json":
        raise ValueError(f"{json_path} and {md_path}: expected <stem>.json and <stem>.md in one folder")
    write_report(json_path.parent, Report(json_path.stem, results, markdown))


# ------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("benchmark", choices=("mnist", "har"))
    p.add_argument("--digits", help="comma-separated anomalous digits (mnist; default all ten)")
    p.add_argument("--activities", help="comma-separated anomalous activities, names or 1..6 (har; default all six)")
    p.add_argument("--transforms", default=",".join(HAR_TRANSFORMS), help="har: comma-separated transforms")
    p.add_argument("--iterations", type=int, help="generator steps per model")
    p.add_argument("--encoder-iterations", type=int, help="encoder steps per model")
    p.add_argument("--max-seconds", type=float, help="wall-clock budget per model (default: none for mnist, 130 for har; 0 = none, then --iterations "
                   "bounds it)")
    p.add_argument("--arch", choices=("conv", "mlp"))
    p.add_argument("--width", type=int)
    p.add_argument("--latent", type=int, dest="latent_dim")
    p.add_argument("--encoder-mode", choices=("izi", "ziz", "izi_f"))
    p.add_argument("--kappa", type=float)
    p.add_argument("--lr", type=float, help="Adam learning rate of generator and critic")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--generators", type=int, help="D-AnoGAN: K generators and encoders (default 1)")
    p.add_argument("--alpha", type=float, help="D-AnoGAN's score weight (default 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level-weight", type=float, help="har: weight of the level term in the score (default 1.0 for "
                   "distance plots, 0 for sequences)")
    p.add_argument("--level-weights", help="har: comma-separated level weights to score the same trained networks "
                   "with as well (a sweep that costs no training; choose the weight on --validation runs)")
    p.add_argument("--jobs", type=int, default=1, help="models trained in parallel (worker processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per model")
    p.add_argument("--pool", choices=("train", "test", "both"), default="train", help="mnist: which images to use")
    p.add_argument("--limit-per-class", type=int, help="subsample each class (quick runs)")
    p.add_argument("--validation", action="store_true",
                   help="tuning run: drop the benchmark's test samples and use the next normal class as a "
                        "pseudo-anomaly inside the training pool (output tag defaults to _validation)")
    p.add_argument("--data", help="shared data folder (default $STREAM_DETECTOR_DATA or ../shared/data)")
    p.add_argument("--tag", default="", help="suffix of the output files (paper_<benchmark><tag>.json/.md)")
    p.add_argument("--quiet", action="store_true")


def run_from_args(args: argparse.Namespace) -> Report:
    overrides = {k: getattr(args, k) for k in ("iterations", "encoder_iterations", "arch", "width", "latent_dim",
                                               "encoder_mode", "kappa", "lr", "batch_size", "generators",
                                               "alpha")}
    common = dict(seed=args.seed, jobs=args.jobs, threads=args.threads, limit_per_class=args.limit_per_class,
                  progress=not args.quiet, validation=args.validation, root=args.data, **overrides)
    if args.max_seconds is not None:
        common["max_seconds"] = args.max_seconds or None
    if args.benchmark == "mnist":
        digits = [int(d) for d in args.digits.split(",")] if args.digits else None
        results = run_mnist(digits, pool=args.pool, **common)
    else:
        acts = args.activities.split(",") if args.activities else None
        try:
            sweep = [float(w) for w in args.level_weights.split(",")] if args.level_weights else []
        except ValueError:
            raise UserError(f"--level-weights: expected comma-separated numbers, got {args.level_weights!r}") from None
        if any(not w >= 0 for w in sweep):
            raise UserError(f"--level-weights must be 0 or more, got {args.level_weights!r}")
        results = run_har(acts, transforms=args.transforms.split(","), level_weight=args.level_weight,
                          level_weights=sweep, **common)
    stem = f"paper_{args.benchmark}{args.tag or ('_validation' if args.validation else '')}"
    if not args.quiet:
        print(markdown(results))
    return Report(stem, results, markdown, None if args.quiet else "")


class PaperBenchmark(Benchmark):
    out_flags = ("--out", "--out-dir")  # --out-dir: the spelling of the reports' Reproduce lines before --out

    def main(self, argv: Sequence[str] | None = None) -> int:
        """A missing data file or a bad digit/activity is one ``error:`` line and status 2."""
        try:
            return super().main(argv)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2


BENCHMARK = PaperBenchmark("paper", "Reproduce the MNIST / UCI HAR protocols of Haloui et al.", add_arguments,
                           run_from_args)
build_parser, main = BENCHMARK.build_parser, BENCHMARK.main  # main(argv): ``stream-detector bench paper mnist|har``


if __name__ == "__main__":
    sys.exit(main())
