"""Per-source windowing: points in, full ``[W, C]`` windows out every ``stride`` points.

Each source keeps a ring buffer of its last ``W`` points (float64 timestamps, float32
values) and one counter, ``need``: how many more points until the next window ends.
Since the last reset, windows start at points 0, S, 2S, ... so a stream of ``n`` points
yields ``floor((n - W) / S) + 1`` windows (none while ``n < W``), whatever chunk sizes the
points arrive in.  A batch is handled with numpy slicing (one gather for all its windows);
single points take a short path that writes one ring row.

A timestamp gap larger than ``max_gap_seconds`` resets the buffer: the point after the gap
starts a fresh stream, so no window stitches unrelated data together.  A timestamp at or
before the source's last one raises ``InvalidMessage("ts_not_increasing")`` and changes
nothing.

:meth:`SourceWindows.state` is a small JSON/msgpack-able dict (the last ``W - 1`` points as
base64 little-endian arrays, ``need``, the last timestamp, and the input offset the caller
recorded); :meth:`SourceWindows.from_state` rebuilds an object that emits exactly the
windows the original would have.  A Faust table keyed by source can therefore hold it.

>>> sw = SourceWindows(window=3, stride=2, n_channels=1)
>>> [w.end_ts for w in sw.push(np.arange(6.0), np.arange(6.0, dtype=np.float32)[:, None])]
[2.0, 4.0]
>>> [w.values[:, 0].tolist() for w in sw.push(np.array([6.0]), np.array([[6.0]], np.float32))]
[[4.0, 5.0, 6.0]]
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .codec import check_timestamp, check_timestamps

__all__ = ["Window", "WindowBatch", "SourceWindows", "STATE_VERSION"]

STATE_VERSION = 1


class Window(NamedTuple):
    """One full window: first and last point's timestamps and ``values`` float32 ``[W, C]``."""

    start_ts: float
    end_ts: float
    values: np.ndarray


_EMPTY: dict[tuple[int, int], "WindowBatch"] = {}


class WindowBatch(NamedTuple):
    """All windows from one push, stacked: ``start_ts``/``end_ts`` ``[B]``, ``values`` ``[B, W, C]``
    and every point's timestamp ``ts`` ``[B, W]`` (to say *when* inside a window the model saw
    the anomaly: the graph's ``cell_scores`` are per time step)."""

    start_ts: np.ndarray
    end_ts: np.ndarray
    values: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return int(self.start_ts.shape[0])

    def windows(self) -> list[Window]:
        """The batch as a list of :class:`Window` (views into ``values``, no copies)."""
        return [Window(float(s), float(e), self.values[i]) for i, (s, e) in enumerate(zip(self.start_ts, self.end_ts))]


def _b64(arr: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=dtype).tobytes()).decode("ascii")


def _unb64(data: str | bytes, dtype: str) -> np.ndarray:
    raw = base64.b64decode(data) if isinstance(data, str) else bytes(data)
    return np.frombuffer(raw, dtype=dtype)


class SourceWindows:
    """The windowing state of one source.

    Args:
        window: points per window (``W`` >= 1).
        stride: points between consecutive window starts (``S`` >= 1; may exceed ``W``).
        n_channels: ``C``, columns of every ``values`` array.
        max_gap_seconds: a gap between consecutive timestamps larger than this resets the
            buffer; ``None`` never resets.
    """

    __slots__ = ("window", "stride", "n_channels", "max_gap_seconds", "last_offset",
                 "_ts", "_vals", "_head", "_size", "_need", "_last_ts")

    def __init__(self, window: int, stride: int, n_channels: int, max_gap_seconds: float | None = None) -> None:
        if int(window) < 1 or int(stride) < 1 or int(n_channels) < 1:
            raise ValueError(f"window, stride and n_channels must be >= 1 (got {window}, {stride}, {n_channels})")
        if max_gap_seconds is not None and not max_gap_seconds > 0:
            raise ValueError(f"max_gap_seconds must be > 0 or None (got {max_gap_seconds})")
        self.window = int(window)
        self.stride = int(stride)
        self.n_channels = int(n_channels)
        self.max_gap_seconds = None if max_gap_seconds is None else float(max_gap_seconds)
        #: Free for the caller: the input offset of the last message pushed, persisted with
        #: the state so a restarted worker can tell replayed messages from new ones.
        self.last_offset: int | None = None
        self._ts = np.empty(self.window, dtype=np.float64)  # ring buffer, capacity W
        self._vals = np.empty((self.window, self.n_channels), dtype=np.float32)
        self._head = 0        # ring row the next point goes to
        self._size = 0        # valid rows (<= W)
        self._need = self.window  # points until the next window ends
        self._last_ts: float | None = None

    # -- inspection ------------------------------------------------------------------------
    @property
    def last_ts(self) -> float | None:
        """Timestamp of the last accepted point (``None`` before the first)."""
        return self._last_ts

    @property
    def buffered(self) -> int:
        """Points currently in the ring buffer (at most ``W``)."""
        return self._size

    def last_values(self) -> np.ndarray | None:
        """The last accepted point's values (float32 ``[C]``), e.g. for imputation."""
        if self._size == 0:
            return None
        return self._vals[(self._head - 1) % self.window].copy()

    def median_interval(self) -> float | None:
        """The median time between the buffered points (None with fewer than two): the
        source's own pace, from which a silence is judged."""
        if self._size < 2:
            return None
        ts, _ = self._ordered(self._size)
        return float(np.median(np.diff(ts)))

    def _ordered(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The last ``k`` buffered points, oldest first (copies)."""
        idx = (self._head - k + np.arange(k)) % self.window
        return self._ts[idx], self._vals[idx]

    # -- pushing ---------------------------------------------------------------------------
    def push(self, ts: np.ndarray, values: np.ndarray) -> list[Window]:
        """Add points (``ts`` ``[n]`` strictly increasing, ``values`` ``[n, C]``); return new windows."""
        return self.push_batch(ts, values).windows()

    def push_batch(self, ts: np.ndarray, values: np.ndarray) -> WindowBatch:
        """Like :meth:`push` but returns the windows stacked (what a micro-batcher wants)."""
        ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        values = np.asarray(values, dtype=np.float32)
        n = ts.shape[0]
        if values.ndim == 1 and n == 1:
            values = values[None, :]
        if values.shape != (n, self.n_channels):
            raise ValueError(f"values must have shape ({n}, {self.n_channels}), got {values.shape}")
        if n == 0:
            return self._empty()
        if n == 1:
            return self._push_single(float(ts[0]), values[0])
        check_timestamps(ts, self._last_ts)  # before touching state: a rejected push changes nothing
        dt = np.diff(ts)

        cuts: list[int] = []  # indices whose point starts a fresh stream (gap before it)
        if self.max_gap_seconds is not None:
            if self._last_ts is not None and ts[0] - self._last_ts > self.max_gap_seconds:
                cuts.append(0)
            cuts.extend((np.flatnonzero(dt > self.max_gap_seconds) + 1).tolist())
        if not cuts:
            return self._push_segment(ts, values)
        parts = [self._push_segment(ts[:cuts[0]], values[:cuts[0]])] if cuts[0] > 0 else []
        for a, b in zip(cuts, cuts[1:] + [n]):
            self._reset()
            parts.append(self._push_segment(ts[a:b], values[a:b]))
        return WindowBatch(*(np.concatenate(x) for x in zip(*parts)))

    def push_point(self, points) -> WindowBatch:
        """:meth:`push_batch` for one decoded point (:class:`~stream_detector.runtime.codec.Points` of
        length 1, finite and of the right width): the single-point message's path, without the
        array conversions and checks the decoder has already made."""
        return self._push_single(float(points.ts[0]), points.values[0])

    def _push_single(self, t: float, row: np.ndarray) -> WindowBatch:
        """One point, checked (finite, after the source's last) before any state changes."""
        check_timestamp(t, self._last_ts)
        return self._push_one(t, row)

    def _empty(self) -> WindowBatch:
        """No window (most single-point pushes): one shared, read-only instance per shape."""
        key = (self.window, self.n_channels)
        batch = _EMPTY.get(key)
        if batch is None:
            e = np.empty(0, dtype=np.float64)
            e.flags.writeable = False
            v = np.empty((0, self.window, self.n_channels), dtype=np.float32)
            v.flags.writeable = False
            t = np.empty((0, self.window), dtype=np.float64)
            t.flags.writeable = False
            batch = _EMPTY[key] = WindowBatch(e, e, v, t)
        return batch

    def _reset(self) -> None:
        self._size = 0
        self._head = 0
        self._need = self.window

    def _push_one(self, t: float, row: np.ndarray) -> WindowBatch:
        """The single-point path: one ring write, at most one window gather."""
        if self.max_gap_seconds is not None and self._last_ts is not None and t - self._last_ts > self.max_gap_seconds:
            self._reset()
        h = self._head
        self._ts[h] = t
        self._vals[h] = row
        self._head = (h + 1) % self.window
        self._size = min(self._size + 1, self.window)
        self._last_ts = t
        self._need -= 1
        if self._need > 0:
            return self._empty()
        self._need = self.stride
        wts, wvals = self._ordered(self.window)
        return WindowBatch(wts[:1], wts[-1:], wvals[None], wts[None])

    def _push_segment(self, ts: np.ndarray, values: np.ndarray) -> WindowBatch:
        """Add a gap-free run of ``m`` points; gather all windows ending inside it at once."""
        m = ts.shape[0]
        W, S = self.window, self.stride
        if m >= self._need:
            k = self._size
            buf_ts, buf_vals = self._ordered(k)
            all_ts = np.concatenate([buf_ts, ts])
            all_vals = np.concatenate([buf_vals, values])
            ends = np.arange(k + self._need - 1, k + m, S)
            starts = ends - (W - 1)  # >= 0: the ring holds every point a pending window needs
            # the timestamps as a strided view (no copy: the starts are S apart); only a window's
            # peak step is ever read from it
            ts_view = np.ndarray((len(starts), W), np.float64, all_ts, offset=int(starts[0]) * 8,
                                 strides=(S * 8, 8))  # all_ts: a fresh contiguous float64 array
            out = WindowBatch(all_ts[starts], all_ts[ends], all_vals[starts[:, None] + np.arange(W)], ts_view)
            self._need = S - (k + m - 1 - int(ends[-1]))
        else:
            self._need -= m
            out = self._empty()
        # Keep the last min(W, m) new points in the ring.
        if m >= W:
            self._ts[:] = ts[-W:]
            self._vals[:] = values[-W:]
            self._head, self._size = 0, W
        else:
            idx = (self._head + np.arange(m)) % W
            self._ts[idx] = ts
            self._vals[idx] = values
            self._head = (self._head + m) % W
            self._size = min(self._size + m, W)
        self._last_ts = float(ts[-1])
        return out

    # -- persistence -----------------------------------------------------------------------
    def state(self, binary: bool = False) -> dict[str, Any]:
        """A compact, msgpack- and JSON-serialisable snapshot.

        Holds the last ``min(W - 1, buffered)`` points (all a future window can need; at
        least one point so imputation still has a previous value), ``need``, the last
        timestamp and ``last_offset``.  Arrays are little-endian float64/float32 bytes,
        base64 text by default or raw ``bytes`` with ``binary=True`` (msgpack only).
        For W=64, C=25 that is about 8.6 kB as base64, 6.9 kB binary.
        """
        k = min(max(self.window - 1, 1), self._size)
        ts, vals = self._ordered(k)
        enc = (lambda a, d: np.ascontiguousarray(a, dtype=d).tobytes()) if binary else _b64
        return {
            "v": STATE_VERSION,
            "window": self.window,
            "stride": self.stride,
            "n_channels": self.n_channels,
            "max_gap_seconds": self.max_gap_seconds,
            "need": self._need,
            "last_ts": self._last_ts,
            "last_offset": self.last_offset,
            "ts": enc(ts, "<f8"),
            "values": enc(vals, "<f4"),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SourceWindows:
        """Rebuild a :class:`SourceWindows` from :meth:`state`; ``ValueError`` if it is malformed."""
        try:
            if state["v"] != STATE_VERSION:
                raise ValueError(f"unsupported windowing state version {state['v']!r}")
            sw = cls(state["window"], state["stride"], state["n_channels"], state.get("max_gap_seconds"))
            ts = _unb64(state["ts"], "<f8")
            vals = _unb64(state["values"], "<f4").reshape(-1, sw.n_channels)
            need = int(state["need"])
            last_ts = state["last_ts"]
            last_offset = state.get("last_offset")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed windowing state: {exc}") from None
        k = ts.shape[0]
        if vals.shape[0] != k or k > sw.window or not 1 <= need <= max(sw.window, sw.stride):
            raise ValueError("malformed windowing state: inconsistent sizes")
        sw._ts[:k] = ts
        sw._vals[:k] = vals
        sw._head, sw._size = k % sw.window, k
        sw._need = need
        sw._last_ts = None if last_ts is None else float(last_ts)
        sw.last_offset = None if last_offset is None else int(last_offset)
        return sw

    def compatible_with(self, window: int, stride: int, n_channels: int) -> bool:
        """Whether this state can serve a model with this window, stride and channel count."""
        return (self.window, self.stride, self.n_channels) == (int(window), int(stride), int(n_channels))


def channels_fingerprint(channels: Sequence[str]) -> str:
    """A short id of a channel list (order matters), to tell whether saved state still fits."""
    return hashlib.sha256("\x1f".join(channels).encode()).hexdigest()[:16]
