"""Scoring with ONNX Runtime: the only model code the streaming worker runs (no PyTorch).

One :class:`Scorer` per model directory.  The graph takes raw windows ``[batch, W, C]``
in the source's units and returns ``score [batch]`` and ``channel_scores [batch, C]``;
normalisation and the transform are inside it.  Graphs exported since ``cell_scores
[batch, C, W]`` exists (the residual mapped back to channels and time steps) also give each
window's peak cell (:class:`Peaks`): which channel, at which step, the model found least
normal.  The provider is CUDA when an NVIDIA GPU
is visible and the CUDA libraries load, else CPU; the active one is in ``.provider``.

Offline helpers turn a whole series into windows and window scores into point scores.
Point mapping is causal: each point gets the score of the most recent window ending at or
before it, which is what a live operator sees at that moment (points before the first
complete window have none: NaN).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .card import load_card
from ..errors import ModelLoadError

log = logging.getLogger(__name__)


def _gpu_visible() -> bool:
    """Whether asking for CUDA makes sense (avoids ORT's error spam on CPU-only machines)."""
    return os.path.exists("/proc/driver/nvidia") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


def choose_providers(prefer: list[str] | None = None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = prefer or (["CUDAExecutionProvider", "CPUExecutionProvider"] if _gpu_visible() else ["CPUExecutionProvider"])
    chosen = [p for p in wanted if p in available]
    return chosen or ["CPUExecutionProvider"]


class Peaks(NamedTuple):
    """Each window's peak cell of ``cell_scores``: its time ``step`` inside the window (0 is the
    first point), its ``channel`` index and its ``value``."""

    step: np.ndarray  # int32 [B]
    channel: np.ndarray  # int32 [B]
    value: np.ndarray  # float32 [B]

    @classmethod
    def of(cls, cells: np.ndarray) -> Peaks:
        """The peaks of ``cell_scores`` ``[B, C, W]`` (the first one on ties)."""
        b, _, w = cells.shape
        flat = cells.reshape(b, -1).argmax(axis=1)
        value = cells.reshape(b, -1)[np.arange(b), flat]
        return cls((flat % w).astype(np.int32), (flat // w).astype(np.int32), value.astype(np.float32))

    @classmethod
    def empty(cls, n: int) -> Peaks:
        return cls(np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.float32))

    def take(self, ix) -> Peaks:
        """The peaks of the windows ``ix`` selects (an index array or a slice)."""
        return Peaks(self.step[ix], self.channel[ix], self.value[ix])


class Scorer:
    """An exported model ready to score batches of raw windows."""

    def __init__(self, model_dir: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 spinning: bool = True):
        """``spinning=False`` (the worker): ONNX Runtime's intra-op threads sleep after each call
        instead of spinning.  The model runs on one executor thread beside the event loop, and
        on a 2-core worker spinning threads took the core that decoding and Kafka I/O needed."""
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        self.card = load_card(self.model_dir)
        self.channels: list[str] = list(self.card.channels)
        self.window: int = self.card.window
        self.stride: int = self.card.stride
        self.threshold: float = float(self.card.threshold["value"])
        self.release_threshold: float = float(self.card.threshold["release"])
        self.name: str = self.card.name
        self.version: str = self.card.version
        self.allow_imputation: bool = self.card.allow_imputation
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        # ONNX Runtime's default, stated because the fast form of sequence models depends on it:
        # its NCHWc layout transformer (level ALL only) is what makes their convolutions fast
        # (onnx_graph.py; at EXTENDED they run 2.5x slower).
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.model_dir / "model.onnx"), sess_options=opts,
                                                providers=choose_providers(providers))
        except Exception as e:  # ORT raises its own exception types for a corrupt graph
            raise ModelLoadError(f"{self.model_dir}: ONNX Runtime cannot load model.onnx ({e})") from None
        self.provider: str = self.session.get_providers()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: whether the graph has ``cell_scores`` (exported since root cause in time exists)
        self.has_cells: bool = "cell_scores" in self.output_names
        meta = self.session.get_modelmeta().custom_metadata_map
        #: ``sequence-conv2d-v1`` for a graph re-expressed by onnx_graph.py, else ``plain``
        self.graph_form: str = meta.get("stream_detector.graph_form", "plain")
        log.info("model %s:%s loaded with %s (graph form %s)", self.name, self.version, self.provider, self.graph_form)

    def _checked(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if windows.ndim != 3 or windows.shape[1:] != (self.window, len(self.channels)):
            raise ValueError(f"expected windows [batch, {self.window}, {len(self.channels)}], got {list(windows.shape)}")
        return windows

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``[B]`` and per-channel scores ``[B, C]`` of raw windows ``[B, W, C]``, one ORT call."""
        windows = self._checked(windows)
        score, channel_scores = self.session.run(["score", "channel_scores"], {"window": windows})
        return score, channel_scores

    def score_peaks(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, Peaks | None]:
        """:meth:`score` and each window's :class:`Peaks` (None for a graph without ``cell_scores``),
        one ORT call."""
        if not self.has_cells:
            return (*self.score(windows), None)
        windows = self._checked(windows)
        score, channel_scores, cells = self.session.run(["score", "channel_scores", "cell_scores"],
                                                        {"window": windows})
        return score, channel_scores, Peaks.of(cells)

    def score_batches(self, windows: np.ndarray, max_batch: int,
                      observe: Callable[[int, float], None] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, Peaks | None]:
        """:meth:`score_peaks` for any number of windows, at most ``max_batch`` per ONNX Runtime
        call (a bounded call keeps memory and the latency of one call bounded; the worker's
        ``batch_max_windows``).  ``observe(batch_size, seconds)`` is told about each call."""
        n = len(windows)
        scores = np.empty(n, np.float32)
        channel_scores = np.empty((n, len(self.channels)), np.float32)
        peaks = Peaks.empty(n) if self.has_cells else None
        for i in range(0, n, max_batch):
            started = time.perf_counter()
            j = slice(i, i + max_batch)
            scores[j], channel_scores[j], p = self.score_peaks(windows[j])
            if peaks is not None:
                peaks.step[j], peaks.channel[j], peaks.value[j] = p
            if observe is not None:
                observe(min(max_batch, n - i), time.perf_counter() - started)
        return scores, channel_scores, peaks

    def run_all(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph (score, channel_scores, transformed input, reconstruction)."""
        outs = self.session.run(None, {"window": np.ascontiguousarray(windows, dtype=np.float32)})
        return dict(zip(self.output_names, outs))


def window_starts(n_points: int, window: int, stride: int) -> np.ndarray:
    """Start indices of the complete windows of a series: 0, stride, 2*stride, ... (as the worker emits)."""
    if n_points < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_points - window + 1, stride, dtype=np.int64)


def sliding_windows(values: np.ndarray, window: int, stride: int) -> np.ndarray:
    """A strided view ``[n_windows, W, C]`` of ``values [T, C]`` (no copy)."""
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # [T-W+1, C, W]
    return view[::stride].transpose(0, 2, 1)


def score_series(scorer: Scorer, values: np.ndarray, stride: int | None = None, batch_size: int = 256) -> dict:
    """Score every complete window of a series ``[T, C]``; returns starts, scores, channel scores
    and, for graphs with ``cell_scores``, each window's peak as a point index of the series
    (``peak_index``) and a channel index (``peak_channel``)."""
    stride = stride or scorer.stride
    starts = window_starts(len(values), scorer.window, stride)
    windows = sliding_windows(np.asarray(values, dtype=np.float32), scorer.window, stride)
    scores, channel_scores, peaks = scorer.score_batches(windows, batch_size)
    out = {"starts": starts, "scores": scores, "channel_scores": channel_scores}
    if peaks is not None:
        out.update(peak_index=starts + peaks.step, peak_channel=peaks.channel)
    return out


def point_scores(n_points: int, starts: np.ndarray, window: int, window_scores: np.ndarray) -> np.ndarray:
    """Causal point scores: the score of the most recent window ending at or before each point."""
    out = np.full(n_points, np.nan, dtype=np.float64)
    if len(starts) == 0:
        return out
    ends = np.asarray(starts) + window - 1
    idx = np.searchsorted(ends, np.arange(n_points), side="right") - 1
    ok = idx >= 0
    out[ok] = np.asarray(window_scores, dtype=np.float64)[idx[ok]]
    return out
