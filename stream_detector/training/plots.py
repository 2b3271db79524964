"""PNG plots for training and evaluation reports (matplotlib, headless ``Agg`` backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _smooth(values: Sequence[float], k: int = 25) -> np.ndarray:
    v = np.asarray(values, float)
    if len(v) < 2 * k:
        return v
    return np.convolve(v, np.ones(k) / k, mode="valid")


def plot_training_curves(history: dict, path) -> Path:
    """Wasserstein estimate, gradient penalty and generator loss per generator step, the
    encoder loss per encoder step and, for the forecast score kinds, the forecaster's loss
    (raw in light colour, a moving average on top)."""
    panels = [("wasserstein", "Wasserstein estimate"), ("gradient_penalty", "gradient penalty"),
              ("generator", "generator loss"), ("encoder", "encoder loss")]
    if history.get("forecast"):
        panels.append(("forecast", "forecaster loss"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels):
        v = history.get(key) or []
        ax.set_title(title)
        ax.set_xlabel("step")
        if not v:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(v, color="tab:blue", alpha=0.3, lw=0.8)
        s = _smooth(v)
        ax.plot(np.arange(len(s)) + (len(v) - len(s)) // 2, s, color="tab:blue", lw=1.5)
        if key in ("encoder", "forecast") and min(v) > 0:
            ax.set_yscale("log")
    return _save(fig, path)


def plot_pr_curve(labels: np.ndarray, scores: np.ndarray, path, title: str = "precision-recall") -> Path:
    from sklearn.metrics import PrecisionRecallDisplay

    fig, ax = plt.subplots(figsize=(5, 4.5))
    PrecisionRecallDisplay.from_predictions(np.asarray(labels, bool), np.asarray(scores, float), ax=ax,
                                            name="anomaly score")
    ax.axhline(np.mean(labels), color="grey", ls=":", lw=1, label="chance")
    ax.set_title(title)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_score_timeline(scores: np.ndarray, threshold: float, label_ranges, path, values: np.ndarray | None = None,
                        title: str = "anomaly score") -> Path:
    """Scores over time with the threshold and the labelled ranges shaded; the raw values of
    one channel above when given."""
    rows = 2 if values is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(13, 2.6 * rows), sharex=True, squeeze=False)
    axes = axes[:, 0]
    if values is not None:
        axes[0].plot(np.asarray(values), lw=0.6, color="tab:grey")
        axes[0].set_ylabel("value")
    ax = axes[-1]
    ax.plot(np.asarray(scores), lw=0.7, color="tab:blue", label="score")
    finite = np.asarray(scores, float)[np.isfinite(scores)]
    if finite.size and finite.min() >= 0 and finite.max() > 100 * max(np.median(finite), 1e-12):
        ax.set_yscale("symlog", linthresh=max(float(np.median(finite)), 1e-6))  # scores spanning decades
    ax.axhline(threshold, color="tab:red", ls="--", lw=1, label="threshold")
    for i, (s, e) in enumerate(label_ranges):
        for a in axes:
            a.axvspan(s, e, color="tab:orange", alpha=0.25, lw=0, label="labelled anomaly" if (i == 0 and a is ax) else None)
    ax.set_xlabel("index")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_reconstruction(window: np.ndarray, reconstruction: np.ndarray, residual: np.ndarray, path,
                        channel_names: Sequence[str] | None = None) -> Path:
    """One window's model input, reconstruction and residual side by side: images for a
    distance plot ``[H, W]``, line plots for a sequence ``[W, C]``."""
    window, reconstruction, residual = (np.asarray(a) for a in (window, reconstruction, residual))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    titles = ("input (transformed)", "reconstruction", "|residual|")
    if window.ndim == 2 and window.shape[0] == window.shape[1] and window.shape[0] > 4:
        lo, hi = float(min(window.min(), reconstruction.min())), float(max(window.max(), reconstruction.max()))
        for ax, img, t in zip(axes, (window, reconstruction, residual), titles):
            im = ax.imshow(img, cmap="viridis", vmin=None if t.startswith("|") else lo, vmax=None if t.startswith("|") else hi)
            ax.set_title(t)
            fig.colorbar(im, ax=ax, fraction=0.046)
    else:
        w = window.reshape(len(window), -1)
        r = reconstruction.reshape(len(reconstruction), -1)
        d = residual.reshape(len(residual), -1)
        names = list(channel_names or [])
        for ax, arr, t in zip(axes, (w, r, d), titles):
            for c in range(arr.shape[1]):
                ax.plot(arr[:, c], lw=0.9, label=names[c] if c < len(names) and arr.shape[1] <= 8 else None)
            ax.set_title(t)
            ax.set_xlabel("step")
        if names and w.shape[1] <= 8:
            axes[0].legend(fontsize=7)
    return _save(fig, path)
