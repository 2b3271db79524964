"""Decoding and validation of the input topic's messages (the records the worker writes are
:mod:`.publishing`'s).

Input messages are keyed by source id and carry one point or a batch of points::

    {"ts": 1700000000.0, "values": {"temp": 21.5, "rpm": 3000.0}}              # one point
    {"ts": [t0, t1, ...], "values": {"temp": [v0, v1, ...], "rpm": [...]}}     # a batch

They are msgpack by default; JSON is accepted too (told apart by the first byte: a JSON
object starts with ``{`` or white space, a msgpack map never does).  :class:`PointDecoder`
turns one message into :class:`Points` in the *model's* channel order, or raises
:class:`InvalidMessage` with a short machine-readable ``reason`` (one of :data:`REASONS`)
that the worker puts on the dead-letter topic and counts.  The batch path converts each
channel's list with one ``numpy`` call: no per-point Python loop.

>>> dec = PointDecoder(["a", "b"])
>>> p = dec.decode(b"src-1", encode_points([1.0, 2.0], {"b": [3.0, 4.0], "a": [1.0, 2.0]}))
>>> p.source, p.ts.tolist(), p.values.tolist()
('src-1', [1.0, 2.0], [[1.0, 3.0], [2.0, 4.0]])
>>> dec.decode(b"src-1", b'{"ts": 1.0, "values": {"a": 1.0}}')
Traceback (most recent call last):
...
stream_detector.runtime.codec.InvalidMessage: missing_channel: channel 'b' is missing
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

__all__ = [
    "REASONS",
    "InvalidMessage",
    "Points",
    "PointDecoder",
    "encode_points",
    "check_format",
    "check_timestamp",
    "check_timestamps",
    "detect_format",
]

#: Every reason an input message can be rejected for (the dead-letter ``reason`` field and
#: the bounded label set of the rejection counter).
REASONS: tuple[str, ...] = (
    "oversize",           # payload larger than max_message_bytes
    "undecodable",        # not msgpack/JSON, not a map, or fields of the wrong type
    "missing_source",     # no (or empty) message key
    "unknown_source",     # key not in the configured allow-list
    "missing_channel",    # a model channel is absent and imputation is off or impossible
    "unknown_channel",    # a channel the model does not know (a renamed or misrouted sensor)
    "bad_value",          # NaN, inf, out of float32 range, or non-numeric value/timestamp
    "bad_shape",          # batch arrays of unequal length, empty batch, scalar/list mix
    "ts_not_increasing",  # timestamps not strictly increasing (in a batch or per source)
    "no_model",           # no route matches the source, or its model has no servable version
    "internal_error",     # the worker failed on the message's step 3 times (a bug): kept for replay
)

FORMATS = ("msgpack", "json")
_JSON_FIRST_BYTES = frozenset(b"{ \t\r\n")
_NUMBER_KINDS = frozenset("iuf")
_F32_MAX = float(np.finfo(np.float32).max)


class InvalidMessage(Exception):
    """An input message the worker must not score; ``reason`` is one of :data:`REASONS`.

    Deliberately not a :class:`~stream_detector.errors.UserError`: a bad message is data
    for the dead-letter topic, not a reason to stop the worker.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Points:
    """Decoded points of one source: ``ts`` float64 ``[n]``, ``values`` float32 ``[n, C]``.

    ``values`` columns follow the model's channel order, whatever order the producer used.
    """

    source: str
    ts: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def detect_format(raw: bytes) -> str:
    """``"json"`` if ``raw`` looks like a JSON object, else ``"msgpack"``."""
    return "json" if raw[:1] and raw[0] in _JSON_FIRST_BYTES else "msgpack"


def _loads(raw: bytes) -> Any:
    """Decode msgpack or JSON bytes; raise InvalidMessage('undecodable') on any failure."""
    try:
        if detect_format(raw) == "json":
            return json.loads(raw)
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo of types; all mean the same here
        raise InvalidMessage("undecodable", f"{type(exc).__name__}: {exc}"[:200]) from None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class PointDecoder:
    """Decode and validate input messages against a model's channel list.

    Args:
        channels: the model's channel names, in the order the model expects them.
        allow_imputation: if true, a missing channel is filled with that channel's value in
            the source's previous point (pass it as ``last_values``); with no previous
            point the message is still rejected as ``missing_channel``.
        max_bytes: larger payloads are rejected as ``oversize`` before decoding.
        allowed_sources: if given, keys outside it are rejected as ``unknown_source``.
    """

    def __init__(
        self,
        channels: Sequence[str],
        *,
        allow_imputation: bool = False,
        max_bytes: int = 1 << 20,
        allowed_sources: Collection[str] | None = None,
    ) -> None:
        if not channels:
            raise ValueError("a model needs at least one channel")
        if len(set(channels)) != len(channels):
            raise ValueError("duplicate channel names")
        self.channels: tuple[str, ...] = tuple(channels)
        self._known = frozenset(self.channels)
        self.allow_imputation = bool(allow_imputation)
        self.max_bytes = int(max_bytes)
        self.allowed_sources = frozenset(allowed_sources) if allowed_sources is not None else None

    # -- the key ---------------------------------------------------------------------------
    def source_of(self, key: bytes | str | None) -> str:
        """The source id carried by a message key, checked against the allow-list."""
        # len() only for the types that have one: a key of another type (an int, say) is a
        # missing_source below, not a TypeError out of the worker's agent.
        if key is None or (isinstance(key, (bytes, bytearray, memoryview, str)) and len(key) == 0):
            raise InvalidMessage("missing_source", "message has no key (the source id)")
        if isinstance(key, (bytes, bytearray, memoryview)):
            try:
                source = bytes(key).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidMessage("missing_source", "message key is not valid UTF-8") from None
        elif isinstance(key, str):
            source = key
        else:
            raise InvalidMessage("missing_source", f"message key of type {type(key).__name__}")
        if self.allowed_sources is not None and source not in self.allowed_sources:
            raise InvalidMessage("unknown_source", f"source {source[:100]!r} is not in allowed_sources")
        return source

    # -- the payload -----------------------------------------------------------------------
    def decode(
        self,
        key: bytes | str | None,
        raw: bytes,
        last_values: np.ndarray | None = None,
    ) -> Points:
        """Decode one message into :class:`Points` or raise :class:`InvalidMessage`.

        ``last_values`` (float32 ``[C]``, model order) is the source's previous point, used
        only when imputation is allowed and a channel is missing.
        """
        self._check_size(raw)
        return self._payload(self.source_of(key), raw, last_values)

    def decode_payload(self, source: str, raw: bytes, last_values: np.ndarray | None = None) -> Points:
        """:meth:`decode` for a ``source`` already checked by :meth:`source_of` (the worker
        looks it up first, to route the message)."""
        self._check_size(raw)
        return self._payload(source, raw, last_values)

    def _check_size(self, raw: bytes | None) -> None:
        if raw is None:
            raise InvalidMessage("undecodable", "message has no value")
        if len(raw) > self.max_bytes:
            raise InvalidMessage("oversize", f"{len(raw)} bytes > max_message_bytes={self.max_bytes}")

    def _payload(self, source: str, raw: bytes, last_values: np.ndarray | None) -> Points:
        msg = _loads(raw)
        if not isinstance(msg, dict):
            raise InvalidMessage("undecodable", f"payload is a {type(msg).__name__}, not a map")
        if "ts" not in msg or "values" not in msg:
            raise InvalidMessage("undecodable", "payload needs the fields 'ts' and 'values'")
        ts_obj, vals = msg["ts"], msg["values"]
        if not isinstance(vals, dict):
            raise InvalidMessage("undecodable", "'values' must be a map of channel -> value(s)")
        if len(vals) > len(self.channels) or not self._known.issuperset(vals):
            extra = sorted(str(k) for k in vals if k not in self._known)
            raise InvalidMessage("unknown_channel", f"channel {extra[0][:60]!r} is not one of the model's"
                                 + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
        if _is_number(ts_obj):
            ts, values = self._single(ts_obj, vals, last_values)
        elif isinstance(ts_obj, list):
            ts, values = self._batch(ts_obj, vals, last_values)
        else:
            raise InvalidMessage("undecodable", f"'ts' must be a number or a list, not {type(ts_obj).__name__}")
        return Points(source, ts, values)

    def _missing(self, missing: list[int], last_values: np.ndarray | None) -> np.ndarray:
        """Values to impute for the missing channel indices, or raise missing_channel."""
        name = self.channels[missing[0]]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        if not self.allow_imputation:
            raise InvalidMessage("missing_channel", f"channel {name!r} is missing{more}")
        if len(missing) == len(self.channels):
            raise InvalidMessage("missing_channel", "none of the model's channels is present")
        if last_values is None:
            raise InvalidMessage(
                "missing_channel", f"channel {name!r} is missing{more} and the source has no previous point to impute from"
            )
        return np.asarray(last_values, dtype=np.float32)[missing]

    def _single(self, ts: float, vals: dict, last_values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ts = _to_float(ts)
        check_timestamp(ts)
        row = np.empty((1, len(self.channels)), dtype=np.float32)
        missing: list[int] = []
        for j, ch in enumerate(self.channels):
            v = vals.get(ch, _ABSENT)
            if v is _ABSENT:
                missing.append(j)
            elif _is_number(v):
                f = _to_float(v)
                if not (math.isfinite(f) and abs(f) <= _F32_MAX):
                    raise InvalidMessage("bad_value", f"channel {ch!r} is {str(v)[:40]}")
                row[0, j] = f
            elif isinstance(v, list):
                raise InvalidMessage("bad_shape", f"channel {ch!r} is a list but 'ts' is a single number")
            else:
                raise InvalidMessage("bad_value", f"channel {ch!r} is a {type(v).__name__}, not a number")
        if missing:
            row[0, missing] = self._missing(missing, last_values)
        return np.array([ts], dtype=np.float64), row

    def _batch(self, ts_list: list, vals: dict, last_values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = len(ts_list)
        if n == 0:
            raise InvalidMessage("bad_shape", "empty batch ('ts' is [])")
        ts = _numeric_array(ts_list, "'ts'")
        check_timestamps(ts)
        out = np.empty((n, len(self.channels)), dtype=np.float32)
        missing: list[int] = []
        for j, ch in enumerate(self.channels):  # a loop over channels, never over points
            v = vals.get(ch, _ABSENT)
            if v is _ABSENT:
                missing.append(j)
                continue
            if not isinstance(v, list):
                raise InvalidMessage("bad_shape", f"channel {ch!r} is not a list but 'ts' is")
            if len(v) != n:
                raise InvalidMessage("bad_shape", f"channel {ch!r} has {len(v)} values for {n} timestamps")
            col = _numeric_array(v, f"channel {ch!r}")
            # The float32 bound checked on the float64 values, as _single does: after the cast
            # only values from about 3.4028235678e38 on are inf; those just above float32's max
            # were silently rounded down to it.  (NaN fails the comparison too.)
            bad = ~(np.abs(col) <= _F32_MAX)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InvalidMessage("bad_value", f"channel {ch!r}[{i}] is {col[i]!r}")
            out[:, j] = col
        if missing:
            out[:, missing] = self._missing(missing, last_values)
        return ts, out


_ABSENT = object()
_INT64_TO_UINT64 = range(-(2**63), 2**64)


def _to_float(x: int | float) -> float:
    """``float(x)``, but ``inf`` (a bad_value) for an integer outside [-2**63, 2**64).

    Only JSON carries such integers (msgpack cannot), and a batch rejects them (numpy makes an
    object array of them); without this a single point took ``2**64`` as a value or timestamp that
    the same point in batch form, or in msgpack, could not carry.  ``float()`` of a bigger one would
    raise OverflowError.
    """
    if isinstance(x, int) and x not in _INT64_TO_UINT64:
        return math.inf
    return float(x)


def _numeric_array(seq: list, what: str) -> np.ndarray:
    """A 1-D float64 array from a list of numbers, in one numpy call (no per-item loop)."""
    try:
        arr = np.asarray(seq)
    except (ValueError, TypeError):  # ragged nesting
        raise InvalidMessage("bad_shape", f"{what} is not a flat list of numbers") from None
    if arr.ndim != 1:
        raise InvalidMessage("bad_shape", f"{what} is not a flat list of numbers")
    if arr.dtype.kind not in _NUMBER_KINDS:  # strings, None, bools, huge ints -> 'U', 'O', 'b'
        raise InvalidMessage("bad_value", f"{what} holds non-numeric items")
    # numpy quietly makes True/False among numbers 1/0 (only an all-bool list is dtype 'b'); a
    # bool is no number here, as in _single.  map(type) runs in C (no per-item Python loop), and
    # only when there is a 0 or 1 that could have been a bool.
    if ((arr == 0) | (arr == 1)).any() and bool in map(type, seq):
        raise InvalidMessage("bad_value", f"{what} holds non-numeric items")
    return arr.astype(np.float64, copy=False)


# -- the timestamp rule ----------------------------------------------------------------------
def check_timestamp(t: float, after: float | None = None) -> None:
    """One point's timestamp: finite, and later than ``after`` (the source's last), else
    :class:`InvalidMessage`.  The scalar form of :func:`check_timestamps` for the
    single-point path."""
    if not math.isfinite(t):
        raise InvalidMessage("bad_value", "'ts' holds NaN or inf")
    if after is not None and t <= after:
        raise InvalidMessage("ts_not_increasing", f"ts {t!r} <= the source's last ts {after!r}")


def check_timestamps(ts: np.ndarray, after: float | None = None) -> None:
    """The timestamp rule for a batch: all finite, strictly increasing, and the first later than
    ``after`` (the source's last, when the caller knows it), else :class:`InvalidMessage`.
    The decoder checks a message with it and the window buffer checks a push against its source.

    >>> check_timestamps(np.array([1.0, 2.0, 2.0]))
    Traceback (most recent call last):
    ...
    stream_detector.runtime.codec.InvalidMessage: ts_not_increasing: ts[2]=2.0 <= ts[1]=2.0
    """
    if not np.isfinite(ts).all():
        raise InvalidMessage("bad_value", "'ts' holds NaN or inf")
    if after is not None and len(ts) and ts[0] <= after:
        raise InvalidMessage("ts_not_increasing", f"ts {float(ts[0])!r} <= the source's last ts {after!r}")
    # Compared, not subtracted: np.diff overflows (a RuntimeWarning, an exception under
    # -W error) for timestamps more than float64's max apart, e.g. [-1.7e308, 1.7e308].
    if len(ts) > 1 and not (ts[1:] > ts[:-1]).all():
        i = int(np.flatnonzero(ts[1:] <= ts[:-1])[0])
        raise InvalidMessage("ts_not_increasing", f"ts[{i + 1}]={float(ts[i + 1])!r} <= ts[{i}]={float(ts[i])!r}")


# -- input messages (producers, replay, tests) ------------------------------------------------
def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"message format must be one of {FORMATS}, not {fmt!r}")


def encode_points(
    ts: float | Iterable[float] | np.ndarray,
    values: Mapping[str, float | Iterable[float] | np.ndarray],
    fmt: str = "msgpack",
) -> bytes:
    """Encode one point (``ts`` a number) or a batch (``ts`` a sequence) as an input message."""
    check_format(fmt)
    if isinstance(ts, (int, float, np.integer, np.floating)):
        msg: dict[str, Any] = {"ts": float(ts), "values": {ch: float(v) for ch, v in values.items()}}  # type: ignore[arg-type]
    else:
        msg = {
            "ts": np.asarray(ts, dtype=np.float64).tolist(),
            "values": {ch: np.asarray(v, dtype=np.float64).tolist() for ch, v in values.items()},
        }
    if fmt == "json":
        return json.dumps(msg, separators=(",", ":")).encode()
    return msgpack.packb(msg, use_bin_type=True)
