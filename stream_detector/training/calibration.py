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
