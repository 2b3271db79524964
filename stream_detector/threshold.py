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
