"""Threshold calibration on held-out normal windows (no labels involved).

The simple default: the alarm threshold is a high quantile of the scores of normal windows
the model never trained on, and the release level (where an open alert episode closes) a
lower quantile, so that an episode does not flap around one value.
"""

from __future__ import annotations

import numpy as np


def quantile_threshold(scores: np.ndarray, quantile: float = 0.995, release_quantile: float = 0.95) -> dict:
    """Threshold and release level from held-out normal scores; recorded as is in the card."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no finite calibration scores")
    if not 0.0 < release_quantile <= quantile < 1.0:
        raise ValueError("need 0 < release_quantile <= quantile < 1")
    value = float(np.quantile(scores, quantile))
    release = float(min(np.quantile(scores, release_quantile), value))
    return {"method": "quantile", "quantile": quantile, "release_quantile": release_quantile,
            "value": value, "release": release, "calibration_windows": int(scores.size),
            "calibration_max": float(scores.max())}


# ---------------------------------------------------------------------------------------
# Extreme-value threshold (POT, Siffer et al., "Anomaly Detection in Streams with Extreme
# Value Theory", KDD 2017): fit a generalised Pareto distribution to the excesses of normal
# scores over a high initial quantile and extrapolate to a false-alarm probability ``risk``
# that is far beyond what the calibration set can show by counting.
def pot_threshold(scores: np.ndarray, risk: float = 1e-4, initial_quantile: float = 0.98) -> dict:
    """The POT threshold of normal ``scores`` for a per-window false-alarm probability ``risk``."""
    from scipy.stats import genpareto

    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size < 50:
        raise ValueError(f"POT needs at least 50 calibration scores, got {scores.size}")
    t = float(np.quantile(scores, initial_quantile))
    excess = scores[scores > t] - t
    n, n_t = scores.size, excess.size
    if n_t < 5:
        return {"method": "pot", "value": float(scores.max()), "initial": t, "risk": risk, "shape": None,
                "scale": None, "excesses": int(n_t), "calibration_windows": int(n)}
    shape, _, scale = genpareto.fit(excess, floc=0.0)
    r = risk * n / n_t
    if abs(shape) < 1e-6:
        value = t - scale * np.log(r)
    else:
        value = t + scale / shape * (r ** (-shape) - 1.0)
    return {"method": "pot", "value": float(value), "initial": t, "risk": risk, "shape": float(shape),
            "scale": float(scale), "excesses": int(n_t), "calibration_windows": int(n)}


# ---------------------------------------------------------------------------------------
# Dynamic error threshold (Hundman et al., "Detecting Spacecraft Anomalies Using LSTMs and
# Nonparametric Dynamic Thresholding", KDD 2018, the telemanom method), applied causally:
# every ``step`` points the threshold is chosen on the last ``history`` smoothed scores (the
# stream's own past, no labels) and flags only the newest ``step`` points.
def ewma(values: np.ndarray, span: int) -> np.ndarray:
    """Exponentially weighted moving average (causal), NaN-tolerant (NaN stays NaN)."""
    values = np.asarray(values, dtype=np.float64)
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(values)
    acc = np.nan
    for i, v in enumerate(values):
        if np.isnan(v):
            out[i] = np.nan
            continue
        acc = v if np.isnan(acc) else alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def _best_epsilon(e: np.ndarray, z_range: np.ndarray) -> float:
    """telemanom's choice of epsilon = mean + z * std, the z that removes the most mean and
    spread with the fewest (and least fragmented) flagged points."""
    mean, std = float(e.mean()), float(e.std())
    best, best_eps = -np.inf, mean + z_range[-1] * std
    for z in z_range:
        eps = mean + z * std
        below = e[e < eps]
        above = e >= eps
        n_above = int(above.sum())
        if n_above == 0 or below.size == 0:
            continue
        n_seq = len(_runs(above))
        gain = ((mean - below.mean()) / max(mean, 1e-12) + (std - below.std()) / max(std, 1e-12))
        score = gain / (n_above + n_seq ** 2)
        if score > best:
            best, best_eps = score, eps
    return best_eps


def _prune(e: np.ndarray, flagged: np.ndarray, eps: float, min_decrease: float) -> np.ndarray:
    """telemanom's pruning: sequences whose peak is not clearly above the next lower peak
    (relative decrease below ``min_decrease``, the highest normal score closing the list) are
    unflagged, which removes the many small excursions just over epsilon."""
    runs = _runs(flagged)
    if not runs:
        return flagged
    peaks = np.array([e[a:b + 1].max() for a, b in runs])
    normal_max = e[~flagged].max() if (~flagged).any() else eps
    order = np.argsort(-peaks)
    chain = np.concatenate([peaks[order], [normal_max]])
    keep_until = -1
    for i in range(len(order)):
        if (chain[i] - chain[i + 1]) / max(chain[i], 1e-12) > min_decrease:
            keep_until = i
    out = np.zeros_like(flagged)
    for rank, idx in enumerate(order):
        if rank <= keep_until:
            a, b = runs[idx]
            out[a:b + 1] = True
    return out


def hysteresis_flags(scores: np.ndarray, threshold: float, release: float) -> np.ndarray:
    """Points inside alert episodes as the worker forms them: an episode opens at a score at or
    above ``threshold`` and stays open while scores stay at or above ``release``."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    release = min(release, threshold)
    flags = np.zeros(len(scores), dtype=bool)
    open_ = False
    for i, v in enumerate(scores):
        open_ = v >= threshold or (open_ and v >= release)
        flags[i] = open_
    return flags


def dynamic_threshold_flags(scores: np.ndarray, history: int = 2000, step: int = 100, smoothing_span: int = 30,
                            z_range: np.ndarray | None = None, min_decrease: float = 0.13,
                            min_history: int = 300) -> np.ndarray:
    """Boolean flags per point from the stream's own past (``NaN`` scores are never flagged)."""
    z_range = np.arange(2.5, 12.0, 0.5) if z_range is None else z_range
    smoothed = ewma(scores, smoothing_span)
    flags = np.zeros(len(smoothed), dtype=bool)
    for end in range(step, len(smoothed) + step, step):
        end = min(end, len(smoothed))
        lo = max(0, end - history)
        e = smoothed[lo:end]
        ok = np.isfinite(e)
        if ok.sum() < min_history:
            continue
        idx = np.flatnonzero(ok) + lo
        e_ok = smoothed[idx]
        eps = _best_epsilon(e_ok, z_range)
        window_flags = _prune(e_ok, e_ok >= eps, eps, min_decrease)
        newest = idx >= end - step
        flags[idx[newest]] = window_flags[newest]
    return flags
