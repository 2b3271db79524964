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
    out = np.zeros_like(flagged)
    for (a, b), keep in zip(runs, telemanom_prune(peaks, normal_max, min_decrease, inclusive=False)):
        out[a:b + 1] = keep
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
    """Boolean flags per point from the stream's own past (non-finite scores are never flagged).

    A wrapper over the streaming ``adaptive.DynamicThreshold`` (the worker's procedure): the
    whole series fed at once, then flushed.  Every ``step`` points epsilon is chosen on the last
    ``history`` smoothed scores and the newest ``step`` points are flagged; a final partial step
    of ``r`` points is decided with the history ending at the last point.  Differences from the
    batch implementation this replaced: (a) that one re-decided the ``step - r`` points before a
    final partial step with the final history (a stream cannot revise decisions it has
    already made), and (b) an infinite score is treated as missing instead of making the EWMA
    infinite for the rest of the series."""
    from ..runtime.thresholds import DynamicThreshold

    proc = DynamicThreshold(history=history, step=step, smoothing_span=smoothing_span, min_decrease=min_decrease,
                            min_history=min_history, z_range=z_range)
    flags, _ = proc.update(scores)
    return np.concatenate([flags, proc.flush()[0]])


# ---------------------------------------------------------------------------------------
# The telemanom procedure as the paper's reference implementation runs it (Hundman et al.
# 2018; configuration batch_size 70, window_size 30, smoothing_perc 0.05, error_buffer 100,
# p 0.13, l_s 250).  It differs from ``dynamic_threshold_flags`` above in the published
# details: the smoothing span is 5 % of the error window (105 points, not 30); windows are
# 30 batches of 70 points and each window flags only its newest batch (the first window flags
# all of it after ``2 * l_s`` points); every exceedance brings the ``error_buffer`` points on
# either side into its sequence, both when epsilon is chosen (sequences are counted after
# buffering; at most 5 sequences and under half the window flagged; ties go to the larger z)
# and in the output; single-point sequences are dropped; pruning compares sequence peaks with
# the largest error of the window not flagged so far and keeps a peak when its relative
# decrease to the next is at least p; and the inverted errors (mean + (mean - e)) are
# thresholded the same way, since a drop of the error is also anomalous.
# Not reproduced: the gates that skip windows whose errors are small against the telemetry's
# own scale (0.05 of its 5-95 % range, in the units of the predicted value): our scores are
# not in the units of the value.
def ewma_adjusted(values: np.ndarray, span: float) -> np.ndarray:
    """pandas' ``ewm(span).mean()`` (``adjust=True``): the weighted mean of all past values with
    weights (1 - alpha)^k, alpha = 2 / (span + 1); causal; NaN values are skipped (stay NaN)."""
    values = np.asarray(values, dtype=np.float64)
    w = 1.0 - 2.0 / (span + 1.0)
    out = np.full_like(values, np.nan)
    num = den = 0.0
    for i, v in enumerate(values):
        if np.isnan(v):
            continue
        num = v + w * num
        den = 1.0 + w * den
        out[i] = num / den
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Every point within ``radius`` of a True point becomes True."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    return np.convolve(mask.astype(np.int32), np.ones(2 * radius + 1, dtype=np.int32), mode="same") > 0


def _sequences(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True longer than one point (telemanom drops single-point sequences)."""
    return [(a, b) for a, b in _runs(mask) if b > a]


def telemanom_epsilon_z(e: np.ndarray, error_buffer: int = 100, sd_lim: float = 12.0, max_sequences: int = 5,
                        max_fraction: float = 0.5) -> float:
    """The z of epsilon = mean + z * std that maximises
    (Δmean/mean + Δstd/std) / (|E_seq|^2 + |e_a|) over z = 2.5, 3.0, ... < sd_lim, where the
    flagged set e_a is every point above epsilon with ``error_buffer - 1`` neighbours on either
    side and E_seq its sequences; candidates with more than ``max_sequences`` sequences or with
    ``max_fraction`` or more of the window flagged are refused; ties go to the larger z, and
    ``sd_lim`` is returned when nothing qualifies."""
    e = np.asarray(e, dtype=np.float64)
    mean, sd = float(e.mean()), float(e.std())
    best_s, best_z = 0.0, float(sd_lim)
    if sd <= 0 or mean == 0:
        return best_z
    for z in np.arange(2.5, sd_lim, 0.5):
        eps = mean + z * sd
        anom = _dilate(e > eps, error_buffer - 1)
        if not anom.any():
            continue
        below = e[e < eps]
        gain = (mean - below.mean()) / mean + (sd - below.std()) / sd
        n_seq = len(_sequences(anom))
        s = gain / (n_seq ** 2 + int(anom.sum()))
        if s >= best_s and n_seq <= max_sequences and anom.sum() < max_fraction * len(e):
            best_s, best_z = s, float(z)
    return best_z


def telemanom_prune(peaks: np.ndarray, normal_max: float, p: float = 0.13, inclusive: bool = True) -> np.ndarray:
    """Which sequences survive pruning (a boolean per entry of ``peaks``): sort the peaks in
    decreasing order, append the largest non-anomalous error (when positive), and drop, from
    the bottom, every sequence after the last one whose relative decrease to the next value is
    at least ``p`` (``inclusive``, as telemanom) or above it (the simplified ``_prune``).
    Peaks must be positive."""
    peaks = np.asarray(peaks, dtype=np.float64)
    keep = np.zeros(len(peaks), dtype=bool)
    if len(peaks) == 0:
        return keep
    order = np.argsort(-peaks, kind="stable")
    # closing value: the largest normal error; without a positive one, 0 (the smallest peak stays)
    chain = np.append(peaks[order], max(float(normal_max), 0.0))
    last = -1
    for i in range(len(peaks)):
        decrease = (chain[i] - chain[i + 1]) / max(chain[i], 1e-12)
        if decrease >= p if inclusive else decrease > p:
            last = i
    keep[order[:last + 1]] = True
    return keep


def _telemanom_side(e: np.ndarray, eps: float, allowed: np.ndarray, flagged_before: np.ndarray, error_buffer: int,
                    p: float) -> np.ndarray:
    """Flags of one window on one side (errors or inverted errors): buffered exceedances inside
    ``allowed``, grouped into sequences, pruned against the largest error not flagged."""
    cand = _dilate(e > eps, error_buffer - 1) & allowed
    out = np.zeros(len(e), dtype=bool)
    seqs = _sequences(cand)
    if not seqs:
        return out
    normal = ~cand & ~flagged_before
    normal_max = float(e[normal].max()) if normal.any() else 0.0
    peaks = np.array([e[a:b + 1].max() for a, b in seqs])
    for (a, b), k in zip(seqs, telemanom_prune(peaks, normal_max, p)):
        if k:
            out[a:b + 1] = True
    return out


def telemanom_flags(scores: np.ndarray, batch_size: int = 70, window_size: int = 30, smoothing_perc: float = 0.05,
                    error_buffer: int = 100, p: float = 0.13, l_s: int = 250, sd_lim: float = 12.0,
                    inverse: bool = True) -> np.ndarray:
    """Boolean flags per point by telemanom's procedure on the raw ``scores`` (non-finite: never
    flagged; the procedure runs on the finite points in order).

    A wrapper over the streaming ``adaptive.TelemanomThreshold`` (the worker's procedure): the
    whole series fed at once, then flushed, so that offline and online decisions are the same.
    With ``n`` finite points, ``N = batch_size * window_size`` (2100) and ``r = (n - N) %
    batch_size``, the result equals the batch implementation this replaced except:

    * when ``n >= N`` and ``r > 0``: the last full batch and the ``r`` points after it.  The old
      loop decided them together with one longer window ending at the last point; a stream
      decides the full batch when it completes (last ``N`` values) and the ``r`` remaining
      points at the end with the last ``N`` values;
    * when ``N <= n < 2500``: the first ``2 l_s`` (500) points are never flagged, where the old
      code ignored only ``l_s`` (250) for such series: a stream cannot know at its first
      decision that it will be short, so it assumes a long one.

    A series shorter than ``N`` (never one decision) runs exactly the old short-series logic
    (fewer batches per window; ``l_s`` or nothing ignored below 2500 or 1800 points)."""
    from ..runtime.thresholds import TelemanomThreshold

    proc = TelemanomThreshold(batch_size=batch_size, window_size=window_size, smoothing_perc=smoothing_perc,
                              error_buffer=error_buffer, p=p, l_s=l_s, sd_lim=sd_lim, inverse=inverse)
    flags, _ = proc.update(scores)
    return np.concatenate([flags, proc.flush()[0]])
