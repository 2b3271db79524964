"""Window transforms, written once in PyTorch so that they are exported inside the ONNX graph.

A window arrives in the source's own units as ``[batch, W, C]``.  The graph normalises it
with statistics fitted on training data and turns it into the networks' input; serving
therefore needs nothing but the ONNX file, and training and serving cannot drift apart.

Transforms (``TRANSFORMS``):

* ``sequence``: the normalised window as ``[batch, C, W]`` for 1-D convolutions.
* ``distance-plot``: one ``W' x W'`` image per channel, ``R_ij = |s_i - s_j|``.
* ``distance-plot-mv``: one multivariate image, ``R_ij = ||s_i - s_j||_2 / sqrt(C)``.

Distance plots cost ``W'^2`` per channel, so windows longer than ``plot_size`` are first
average-pooled in time to ``plot_size`` points.  Images are shifted by -1 so that the
range of normalised data, distances in ``[0, 2]``, maps onto the generator's tanh range.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

TRANSFORMS = ("sequence", "distance-plot", "distance-plot-mv")


def fit_normalisation(values: np.ndarray) -> dict:
    """Per-channel min/max of training data ``[T, C]``, the statistics the graph embeds.

    Min/max (rather than mean/std) because the generator ends in tanh: training data must
    land in ``[-1, 1]``.  Constant channels (one-hot command flags that never fire) get a
    unit range so they map to -1 instead of dividing by zero.
    """
    lo = np.nanmin(values, axis=0).astype(np.float64)
    hi = np.nanmax(values, axis=0).astype(np.float64)
    span = hi - lo
    hi = np.where(span > 0, hi, lo + 1.0)
    return {"method": "minmax", "min": lo.tolist(), "max": hi.tolist()}


def fit_window_mean_range(windows: np.ndarray) -> dict:
    """Per-channel min/max of the means of training windows ``[N, W, C]``: the range the level
    term holds each window's mean to (see :meth:`WindowTransform.range_excess`).  Kept in the
    card's ``normalisation`` beside the point range."""
    means = np.asarray(windows, dtype=np.float64).mean(axis=1)
    return {"window_mean_min": means.min(axis=0).tolist(), "window_mean_max": means.max(axis=0).tolist()}


class Normalise(nn.Module):
    """Maps each channel's training range onto ``[-1, 1]``."""

    def __init__(self, stats: dict):
        super().__init__()
        lo = torch.tensor(stats["min"], dtype=torch.float32)
        hi = torch.tensor(stats["max"], dtype=torch.float32)
        self.register_buffer("offset", lo)
        self.register_buffer("scale", 2.0 / (hi - lo))

    def forward(self, window: torch.Tensor) -> torch.Tensor:  # [B, W, C]
        return (window - self.offset) * self.scale - 1.0


def plot_length(window: int, plot_size: int) -> int:
    """Time length of the window after pooling for a distance plot."""
    if window <= plot_size:
        return window
    if window % plot_size:
        raise ValueError(f"window {window} must be a multiple of plot_size {plot_size}")
    return plot_size


class WindowTransform(nn.Module):
    """Normalisation followed by one of :data:`TRANSFORMS`; ``[B, W, C]`` in, network input out."""

    def __init__(self, kind: str, stats: dict, window: int, plot_size: int = 32):
        super().__init__()
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown transform {kind!r}; choose one of {', '.join(TRANSFORMS)}")
        self.kind = kind
        self.normalise = Normalise(stats)
        self.n_channels = len(stats["min"])
        self.window = window
        self.pool = 1 if kind == "sequence" else window // plot_length(window, plot_size)
        self.has_mean_range = "window_mean_min" in stats
        if self.has_mean_range:  # maps the training windows' mean range onto [-1, 1]
            lo = torch.tensor(stats["window_mean_min"], dtype=torch.float32)
            span = torch.tensor(stats["window_mean_max"], dtype=torch.float32) - lo
            point_span = torch.tensor(stats["max"], dtype=torch.float32) - torch.tensor(stats["min"],
                                                                                            dtype=torch.float32)
            self.register_buffer("mean_offset", lo)
            self.register_buffer("mean_scale", 2.0 / torch.where(span > 0, span, point_span))

    def output_shape(self) -> tuple[int, ...]:
        """Shape of one transformed window (without the batch axis)."""
        if self.kind == "sequence":
            return (self.n_channels, self.window)
        side = self.window // self.pool
        return (self.n_channels if self.kind == "distance-plot" else 1, side, side)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        s = self.normalise(window)  # [B, W, C]
        if self.kind == "sequence":
            return s.transpose(1, 2)
        if self.pool > 1:
            b, w, c = s.shape
            s = s.reshape(b, w // self.pool, self.pool, c).mean(dim=2)
        diff = s.unsqueeze(2) - s.unsqueeze(1)  # [B, W', W', C]: s_i - s_j
        if self.kind == "distance-plot":
            return diff.abs().permute(0, 3, 1, 2) - 1.0
        dist = torch.sqrt((diff * diff).sum(dim=3) + 1e-12) / float(np.sqrt(self.n_channels))
        return dist.unsqueeze(1) - 1.0

    def range_excess(self, window: torch.Tensor) -> torch.Tensor:
        """:meth:`range_excess_cells` averaged over time, ``[B, C]``."""
        return self.range_excess_cells(window).mean(dim=2)

    def range_excess_cells(self, window: torch.Tensor) -> torch.Tensor:
        """How far each channel of a raw window ``[B, W, C]`` leaves its training range at each
        time step, ``[B, C, W]``:
        ``relu(|s| - 1)^2`` on the normalised window ``s`` (the training
        range is ``[-1, 1]``, so 1.0 is a full half-range beyond it), plus, when the statistics
        hold the training windows' mean range (:func:`fit_window_mean_range`), ``relu(|m| - 1)^2``
        for the window's mean ``m`` mapped the same way onto that range, spread evenly over the
        window's steps (it belongs to no one step).

        The limit check operators already trust, in the graph: a distance plot does not change
        when a constant is added to the window, so without this term a level shift or a stuck
        reading looks normal to it.  The mean part catches a level that stays inside the
        points' range but no training window sat at (on UCI HAR, LAYING: its points leave the
        other activities' range by little, its window means by far)."""
        s = self.normalise(window)
        excess = (torch.relu(s.abs() - 1.0) ** 2).transpose(1, 2)  # [B, C, W]
        if self.has_mean_range:
            m = (window.mean(dim=1) - self.mean_offset) * self.mean_scale - 1.0
            excess = excess + (torch.relu(m.abs() - 1.0) ** 2).unsqueeze(2)
        return excess

    def channel_attribution(self, window: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Per-input-channel share of a squared residual in transformed space, ``[B, C]``: the
        mean over time of :meth:`cell_attribution`."""
        return self.cell_attribution(window, residual).mean(dim=2)

    def cell_attribution(self, window: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """A squared residual in transformed space mapped back onto the raw window's channels
        and time steps, ``[B, C, W]``; its mean over ``(C, W)`` is the residual's mean (for the
        multivariate plot, whose channels share one plane, its sum over channels and mean over
        time is).  What lets an alert say *when* as well as *which channel*.

        ``sequence``: the residual itself.  ``distance-plot``: pixel ``(i, j)`` of a channel's
        plane compares steps ``i`` and ``j``, so step ``i`` gets the mean of row ``i`` (the plot
        is symmetric: row and column alike); a spike at one step lights up its whole row and
        column, which every other step shares only once.  The multivariate plot mixes channels
        in every pixel: each pixel's residual is split among channels in proportion to their
        squared part of that pixel's distance.  Pooled plots give each of a pooled step's
        ``pool`` raw steps the pooled step's value.
        """
        if self.kind == "sequence":
            return residual
        if self.kind == "distance-plot":
            cells = residual.mean(dim=3)  # [B, C, W']
        else:
            s = self.normalise(window)
            if self.pool > 1:
                b, w, c = s.shape
                s = s.reshape(b, w // self.pool, self.pool, c).mean(dim=2)
            diff2 = (s.unsqueeze(2) - s.unsqueeze(1)) ** 2  # [B, W', W', C]
            share = diff2 / (diff2.sum(dim=3, keepdim=True) + 1e-12)
            cells = (share * residual[:, 0].unsqueeze(3)).mean(dim=2).transpose(1, 2)  # [B, C, W']
        if self.pool > 1:
            cells = cells.unsqueeze(3).expand(-1, -1, -1, self.pool).flatten(2)
        return cells
