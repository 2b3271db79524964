"""From a normal series to a model directory: train, export, calibrate, write the card.

Time order is kept: the first ``train_fraction`` of the points trains the networks, the
rest is held out to calibrate the threshold on windows the model never saw (the card
records both spans).  The threshold is computed by ONNX Runtime on the exported graph, so
it is calibrated on exactly what the worker will run.

PyTorch and the training modules are imported inside the functions that train: the
score-only half (:func:`score_with_model`, what ``stream-detector score`` runs) and the
configuration types must import on an install without the ``train`` extra.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..runtime.card import ModelCard, write_card
from ..errors import DataError
from ..runtime.scoring import sliding_windows
from .calibration import pot_threshold, quantile_threshold

if TYPE_CHECKING:
    import torch

    from .transforms import WindowTransform
    from .wgan import TrainConfig


def _transform_windows(transform: WindowTransform, windows: np.ndarray, chunk: int = 1024) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return torch.cat([transform(torch.from_numpy(np.ascontiguousarray(windows[i:i + chunk])))
                          for i in range(0, len(windows), chunk)])


def library_versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"stream_detector": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _split_segments(segments: list[np.ndarray], window: int, train_fraction: float, source: str):
    """Each segment's first ``train_fraction`` trains, its rest calibrates (time order kept)."""
    train_parts, calib_parts = [], []
    for i, seg in enumerate(segments):
        split = int(len(seg) * train_fraction)
        if split < window or len(seg) - split < window:
            what = source or "data"
            if len(segments) > 1:
                what += f" (segment {i})"
            need = int(np.ceil(window / min(train_fraction, 1 - train_fraction)))
            raise DataError(f"{what}: {len(seg)} rows are too few to train on {train_fraction:.0%} and calibrate on "
                            f"the rest with windows of {window}; need at least {need}")
        train_parts.append(seg[:split])
        calib_parts.append(seg[split:])
    return train_parts, calib_parts


def _windows(parts: list[np.ndarray], window: int, stride: int) -> np.ndarray:
    return np.concatenate([sliding_windows(p, window, stride) for p in parts])


def _onnx_scores(onnx_path: Path, windows: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Window scores from the exported graph with ONNX Runtime (what the worker will run)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["score"], {"window": np.ascontiguousarray(windows[i:i + chunk], np.float32)})[0]
                           for i in range(0, len(windows), chunk)])


def threshold_spec(method: str, calib_scores: np.ndarray, quantile: float = 0.995, release_quantile: float = 0.95,
                   params: dict | None = None) -> dict:
    """The card's ``threshold``: the method the worker applies, its parameters, and the held-out
    quantile calibration (``value``, ``release``) that every card carries.

    ``pot`` replaces ``value`` by the extreme-value level fitted on the same scores; the adaptive
    methods (``telemanom``, ``dynamic``, ``likelihood``) set their level from each source's own
    stream and record their parameters (defaults from :mod:`stream_detector.runtime.thresholds`)."""
    from ..runtime.thresholds import DEFAULTS, make_threshold

    spec = quantile_threshold(calib_scores, quantile, release_quantile)
    if method not in ("quantile", "pot", *DEFAULTS):
        raise ValueError(f"--threshold {method!r}: expected quantile, pot, {', '.join(DEFAULTS)}")
    if method == "pot":
        pot = pot_threshold(calib_scores, **(params or {}))
        spec.update(method="pot", value=max(pot["value"], spec["release"]), pot=pot)
    elif method != "quantile":
        spec = {"method": method, **DEFAULTS[method], **(params or {}), "value": spec["value"],
                "release": spec["release"], "calibration": spec}
    make_threshold(spec, 1)  # refuses unknown or bad parameters now, not in the worker
    return spec


FANOGAN = "mean((x - G(E(x)))^2) + kappa * mean((f(x) - f(G(E(x))))^2)"
FORECAST = "mean_(t, c)((F(s[:W-H])_(t, c) - s[W-H:]_(t, c))^2) over the last H steps of the scored channels"
SCORE_FORMULAS = {"fanogan": FANOGAN, "critic": "-D(x)",
                  "combined": f"{FANOGAN} + critic_scale * (-D(x) - critic_mean)",
                  "forecast": FORECAST, "hybrid": f"{FANOGAN} + forecast_scale * ({FORECAST} - forecast_mean)"}
# D-AnoGAN (train --generators K > 1): research document 002's score, k = argmax_k C(f(x))_k
DANOGAN = ("(1 - alpha) * mean((x - G_k(E_k(x)))^2) + alpha * KL(C(f(x)) || C(f(G_k(E_k(x)))))"
           " with k = argmax C(f(x)), C = softmax of the classifier on the critic's features")
MULTI_SCORE_FORMULAS = {"fanogan": DANOGAN, "critic": "-D(x)",
                        "combined": f"{DANOGAN} + critic_scale * (-D(x) - critic_mean)",
                        "forecast": FORECAST, "hybrid": f"{DANOGAN} + forecast_scale * ({FORECAST} - forecast_mean)"}


def default_level_weight(transform: str) -> float:
    """The level term's weight when none is given: 1.0 for the distance plots, which cannot
    see a level shift without it (``R_ij = |s_i - s_j|`` ignores an added constant), 0 for
    ``sequence``, whose reconstruction sees the level already."""
    return 0.0 if transform == "sequence" else 1.0


def default_score_kind(transform: str) -> str:
    """The score kind when none is given: ``combined`` (fanogan plus the critic's standardised
    score) for ``sequence`` models, ``fanogan`` for the distance plots.  Chosen leave one dataset
    out on the three sequence benchmarks (docs/benchmarks/quality.md): ``combined`` scored above
    ``fanogan`` on SMAP, NAB and SKAB, so each dataset's choice rests on the other two; on the
    distance plot (UCI HAR) it ranked far below (AUPRC 0.501 against 0.698), so plots keep
    ``fanogan``."""
    return "combined" if transform == "sequence" else "fanogan"


def fit_series_model(values: np.ndarray | list[np.ndarray], channels: list[str], out_dir: Path, *, window: int,
                     stride: int, transform: str, cfg: TrainConfig, plot_size: int = 32, name: str = "model",
                     version: str = "1", train_fraction: float = 0.8, threshold_quantile: float = 0.995,
                     release_quantile: float = 0.95, max_train_windows: int = 20000, source: str = "",
                     progress: bool = True, threshold: str = "quantile",
                     threshold_params: dict | None = None, level_weight: float | None = None,
                     score_kind: str | None = None, score_channels: list[str] | None = None) -> ModelCard:
    """Train on ``values [T, C]`` (or a list of such segments, e.g. several sources of one kind
    pooled, with no window spanning two segments) and write ``model.onnx``, ``model.json`` and
    plots to ``out_dir``.

    ``threshold`` is the method the worker applies (:func:`threshold_spec`); the held-out
    quantile calibration is always recorded (``value``/``release``), as the static level and
    as a reference scale for the adaptive methods.  ``score_kind`` is one of
    :data:`~.export.SCORE_KINDS` (``combined`` standardises the critic on the training windows;
    None: :func:`default_score_kind` of the transform).
    ``score_channels`` (names): condition on the other channels, score these only (the networks
    see every channel; see :class:`~.export.ScoringNetwork`)."""
    import torch

    from .export import SCORE_KINDS, ScoringNetwork, critic_standardisation, export_onnx, score_parts, standardisation
    from .forecast import FORECAST_KINDS, default_horizon, train_forecaster
    from .nets import count_flops
    from .transforms import WindowTransform, fit_normalisation, fit_window_mean_range
    from .wgan import config_dict, train

    score_kind = default_score_kind(transform) if score_kind is None else score_kind
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"unknown score kind {score_kind!r}; choose one of {', '.join(SCORE_KINDS)}")
    scored = None
    if score_channels:
        unknown = [c for c in score_channels if c not in channels]
        if unknown:
            raise DataError(f"score channels {', '.join(unknown)} are not among the data's channels "
                            f"({', '.join(channels)})")
        scored = [channels.index(c) for c in score_channels]
    segments = [np.asarray(v, dtype=np.float32) for v in (values if isinstance(values, (list, tuple)) else [values])]
    train_parts, calib_parts = _split_segments(segments, window, train_fraction, source)
    n = sum(len(v) for v in segments)
    split = sum(len(v) for v in train_parts)
    train_values = np.concatenate(train_parts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    level = default_level_weight(transform) if level_weight is None else float(level_weight)
    train_stride = max(1, int(np.ceil((split - window + 1) / max_train_windows)))
    train_windows = _windows(train_parts, window, train_stride)
    stats = fit_normalisation(train_values)
    if level:  # the level term also holds each window's mean to the training windows' range
        stats.update(fit_window_mean_range(train_windows))
    wt = WindowTransform(transform, stats, window, plot_size)
    x = _transform_windows(wt, train_windows)
    nets = train(x, cfg, progress=progress, checkpoint_dir=out_dir / "checkpoints")
    # The critic's standardisation on the training windows, for every kind: the combined score's
    # constants, and for the others what lets a benchmark form the combined score from the
    # graph's score and critic_score outputs without retraining.
    weights = None
    if scored:
        weights = torch.zeros(len(channels))
        weights[scored] = 1.0 / len(scored)
    with torch.no_grad():
        parts = [score_parts(x[i:i + 1024], nets.encoder, nets.generator, nets.critic, cfg.kappa, nets.classifier,
                             cfg.alpha, weights) for i in range(0, len(x), 1024)]
    fanogan = torch.cat([q.fanogan for q in parts])
    standardise = critic_standardisation(fanogan, torch.cat([q.critic for q in parts]))
    forecast = {}
    if score_kind in FORECAST_KINDS:
        with torch.no_grad():
            normalised = wt.normalise(torch.from_numpy(np.ascontiguousarray(train_windows)))
        forecaster, losses = train_forecaster(normalised, cfg.forecast_horizon or default_horizon(window), scored,
                                              cfg.forecast_iterations or cfg.encoder_iterations, cfg.seed,
                                              cfg.batch_size, hidden=cfg.forecast_hidden, progress=progress)
        nets.history["forecast"] = losses
        with torch.no_grad():
            errors = torch.cat([forecaster.score_and_cells(normalised[i:i + 1024])[0]
                                for i in range(0, len(normalised), 1024)])
        forecast = {"forecaster": forecaster, **standardisation(fanogan, errors, "forecast")}
    scorer = ScoringNetwork(wt, nets.encoder, nets.generator, nets.critic, cfg.kappa, level, score_kind,
                            score_channels=scored, **standardise,
                            classifier=nets.classifier, alpha=cfg.alpha, **forecast)
    multi = nets.classifier is not None
    form = export_onnx(scorer, window, len(channels), out_dir / "model.onnx")
    flops = count_flops(scorer, torch.zeros(1, window, len(channels)))

    # Calibrate on the held-out normal windows with the exported graph itself, in memory: the
    # card is built once, complete, and written once.
    calib_scores = _onnx_scores(out_dir / "model.onnx", _windows(calib_parts, window, 1))
    train_scores = _onnx_scores(out_dir / "model.onnx", train_windows)
    card = ModelCard(
        name=name, version=str(version), channels=tuple(channels), window=window, stride=stride, transform=transform,
        normalisation=stats, allow_imputation=False,
        threshold=threshold_spec(threshold, calib_scores, threshold_quantile, release_quantile, threshold_params),
        plot_size=plot_size if transform != "sequence" else None,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        score={"formula": (MULTI_SCORE_FORMULAS if multi else SCORE_FORMULAS)[score_kind]
                          + (" + level_weight * mean_c (mean_t relu(|s| - 1)^2 + relu(|m| - 1)^2)" if level else "")
                          + ("; the residual and level terms over the score channels only (the networks see every "
                             "channel)" if scored else ""),
               **scorer.score_spec(),
               **({"channels": [channels[i] for i in scored]} if scored else {}),
               "kappa": cfg.kappa,
               **({"generators": cfg.generators, "alpha": cfg.alpha} if multi else {}),
               "level_weight": level,
               "encoder_mode": cfg.encoder_mode, "point_mapping": "causal: latest window ending at or before the point"},
        graph={"inputs": {"window": ["batch", window, len(channels)]},
               "outputs": {"score": ["batch"], "channel_scores": ["batch", len(channels)],
                           "transformed": ["batch", *wt.output_shape()], "reconstruction": ["batch", *wt.output_shape()],
                           "cell_scores": ["batch", len(channels), window], "critic_score": ["batch"]},
               "flops_per_window": flops, "form": form},
        training={"config": config_dict(cfg), "source": source, "points": n, "segments": len(segments),
                  "train_points": split, "calibration_points": n - split, "train_windows": int(len(x)),
                  "train_window_stride": train_stride, "seconds": round(time.monotonic() - started, 2),
                  "stopped_early_by_budget": nets.stopped_early,
                  **({"prior": [round(v, 6) for v in nets.prior]} if nets.prior is not None else {}),
                  "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip()},
        validation={
            "calibration_score_median": float(np.median(calib_scores)),
            "calibration_score_p99": float(np.quantile(calib_scores, 0.99)),
            "train_score_median": float(np.median(train_scores)),
            "train_score_p99": float(np.quantile(train_scores, 0.99)),
            "final_wasserstein": nets.history["wasserstein"][-1] if nets.history["wasserstein"] else None,
            "final_encoder_loss": nets.history["encoder"][-1] if nets.history["encoder"] else None,
        },
        libraries=library_versions(),
    )
    card = write_card(out_dir, card)
    from .plots import plot_training_curves

    plot_training_curves(nets.history, out_dir / "training_curves.png")
    return card


# ---------------------------------------------------------------- one fit-and-score for every caller
@dataclass(frozen=True)
class SeriesModelConfig:
    """Everything that fits a series model besides the data, typed: the window and its transform,
    the threshold calibration, and the training configuration (:class:`TrainConfig`).

    Benchmarks keep their configuration as one flat mapping in their reports (``window``,
    ``iterations``, ...); :meth:`from_flat` reads such a mapping, the training keys going to
    ``train``, and refuses a key it does not know by name instead of ignoring a typo."""

    window: int = 64
    stride: int = 1
    transform: str = "sequence"
    plot_size: int = 32
    threshold: str = "quantile"
    threshold_quantile: float = 0.995
    release_quantile: float = 0.95
    max_train_windows: int = 20000
    level_weight: float | None = None  # None: default_level_weight(transform)
    score: str | None = None  # export.SCORE_KINDS; None: default_score_kind(transform)
    score_channels: tuple[str, ...] | None = None  # None: every channel is scored
    train: TrainConfig = field(default_factory=lambda: _train_config_type()())

    @classmethod
    def from_flat(cls, d: Mapping, runner_keys: Iterable[str] = ()) -> tuple[SeriesModelConfig, dict]:
        """``(config, the runner's own keys)`` from a flat mapping; ``runner_keys`` are the keys the
        caller handles itself (e.g. NAB's ``probationary``).  Raises :class:`ConfigKeyError`
        naming the first unknown key and listing the known ones."""
        TrainConfig = _train_config_type()
        own = {f.name for f in fields(cls)} - {"train"}
        train_keys = {f.name for f in fields(TrainConfig)}
        runner_keys = set(runner_keys)
        unknown = [k for k in d if k not in own | train_keys | runner_keys]
        if unknown:
            raise ConfigKeyError(unknown[0], sorted(own | train_keys | runner_keys))
        train = TrainConfig(**{k: v for k, v in d.items() if k in train_keys})
        model = cls(train=train, **{k: v for k, v in d.items() if k in own})
        return model, {k: v for k, v in d.items() if k in runner_keys}

    @classmethod
    def from_dict(cls, d: Mapping) -> SeriesModelConfig:
        """A flat mapping with no runner keys (see :meth:`from_flat`)."""
        return cls.from_flat(d)[0]

    def with_training(self, **changes) -> SeriesModelConfig:
        return replace(self, train=replace(self.train, **changes))


def _train_config_type() -> type:
    from .wgan import TrainConfig  # imports torch: only when a training configuration is built

    return TrainConfig


class ConfigKeyError(ValueError):
    """A configuration key no field has: named, with the keys there are."""

    def __init__(self, key: str, known: list[str]):
        self.key = key
        super().__init__(f"unknown configuration key {key!r}; known keys: {', '.join(known)}")


@dataclass
class SeriesScores:
    """A series scored by one model: the window scores (``score_series``'s ``starts``,
    ``scores``, ``channel_scores``) and the causal point scores (a point takes the latest
    window ending at or before it; NaN before the first)."""

    scorer: object  # runtime.scoring.Scorer
    windows: dict
    points: np.ndarray
    seconds: float


def score_with_model(model, values: np.ndarray, *, stride: int | None = None,
                     threads: int | None = None) -> SeriesScores:
    """Score ``values [T, C]`` (columns in the card's channel order) with a model directory or
    an open :class:`~stream_detector.runtime.scoring.Scorer`: the score-only half, shared by
    ``stream-detector score`` / ``evaluate`` and the benchmarks, so offline figures are always
    computed the one way."""
    from ..runtime.scoring import Scorer, point_scores, score_series

    started = time.monotonic()
    if isinstance(model, Scorer):
        scorer = model
    else:
        scorer = Scorer(model) if threads is None else Scorer(model, threads=threads)
    result = score_series(scorer, values, stride=stride)
    points = point_scores(len(values), result["starts"], scorer.window, result["scores"])
    return SeriesScores(scorer, result, points, time.monotonic() - started)


@dataclass
class FitAndScore:
    """What :func:`fit_and_score` returns: the written card, the series' scores, the timings."""

    card: ModelCard
    scores: SeriesScores
    train_seconds: float

    @property
    def points(self) -> np.ndarray:
        return self.scores.points


def fit_and_score(train_values: np.ndarray, score_values: np.ndarray, channels: list[str], model_dir: Path,
                  config: SeriesModelConfig, *, train_fraction: float = 0.8, name: str = "model", source: str = "",
                  threads: int | None = None, progress: bool = False, stride: int | None = 1) -> FitAndScore:
    """Fit a model on ``train_values`` (its first ``train_fraction`` trains, the rest calibrates
    the threshold, as :func:`fit_series_model`) into ``model_dir`` and score the whole
    ``score_values`` with the exported graph (stride ``stride``; ``None``: the card's).

    The one fit-then-score of the benchmarks: NAB trains on a file's probation and scores the
    file, telemanom trains on a channel's train split and scores its test split."""
    started = time.monotonic()
    card = fit_series_model(train_values, channels, model_dir, window=config.window, stride=config.stride,
                            transform=config.transform, cfg=config.train, plot_size=config.plot_size, name=name,
                            train_fraction=train_fraction, threshold_quantile=config.threshold_quantile,
                            release_quantile=config.release_quantile, max_train_windows=config.max_train_windows,
                            source=source, progress=progress, threshold=config.threshold,
                            level_weight=config.level_weight, score_kind=config.score,
                            score_channels=list(config.score_channels) if config.score_channels else None)
    train_seconds = time.monotonic() - started
    scores = score_with_model(model_dir, score_values, stride=stride, threads=threads)
    return FitAndScore(card, scores, train_seconds)
