"""Decoder fuzzing with Hypothesis: every input message either decodes to exactly the points
that were encoded, or is rejected with :class:`InvalidMessage` whose ``reason`` is one of
:data:`REASONS` -- and nothing else ever escapes ``PointDecoder.decode`` / ``source_of`` (an
escaping exception would crash the worker's agent instead of producing a dead letter).

Messages per run: the five property tests below feed ``PointDecoder.decode`` one generated
message per example, ``BUDGET`` examples each::

    valid 3,000 + invalid 4,000 + arbitrary bytes 2,000 + imputation 1,000 + keys 1,000 = 11,000

(at least 10,000, checked at import time; each test also checks afterwards that its messages were
really decoded).  The valid test additionally re-encodes every batch point by point and decodes
those single points as well (6,873 more with the default settings, not counted above).  The
module takes about 30 s on one core.

Settings: ``derandomize=True`` -- the examples come from a fixed pseudo-random stream, so CI runs are
reproducible and a failure shows up on every run; ``database=None``, so no example database is read
or written (``.hypothesis/``, where Hypothesis keeps caches, is in ``.gitignore``).  For an
exploratory run with fresh random examples set ``CODEC_FUZZ_RANDOM=1`` (and, e.g.,
``CODEC_FUZZ_SCALE=10`` for ten times the examples).  ``deadline=None``: timing is not a property.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stream_detector.runtime.codec import REASONS, InvalidMessage, PointDecoder, Points, encode_points

SCALE = max(1, int(os.environ.get("CODEC_FUZZ_SCALE", "1")))
BUDGET = {"valid": 3000, "invalid": 4000, "bytes": 2000, "imputation": 1000, "keys": 1000}
assert sum(BUDGET.values()) >= 10_000, "the issue asks for at least 10,000 generated messages per run"
DECODED: Counter[str] = Counter()  # decode() calls per test (the generated messages)


def fuzz(name: str):
    return settings(
        max_examples=BUDGET[name] * SCALE,
        deadline=None,
        derandomize=not os.environ.get("CODEC_FUZZ_RANDOM"),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def check_count(name: str) -> None:
    assert DECODED[name] >= BUDGET[name] * SCALE, f"{name}: only {DECODED[name]} messages decoded"


# -- numbers ----------------------------------------------------------------------------------
F32 = np.finfo(np.float32)
F32_MAX = float(F32.max)
ABOVE_F32_MAX = float(np.nextafter(F32_MAX, math.inf))  # finite in float64; a float32 cast rounds it DOWN to F32_MAX
F32_EDGES = [0.0, -0.0, 1.0, -1.0, F32_MAX, -F32_MAX, float(F32.tiny), -float(F32.tiny),
             float(F32.smallest_subnormal), -float(F32.smallest_subnormal), float(F32.eps), 5e-324, -5e-324]
INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # what msgpack can carry (and numpy converts without objects)

valid_values = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),  # exact float32: tiny, subnormal, huge
    st.floats(min_value=-F32_MAX, max_value=F32_MAX),  # float64 in float32's range: rounded on decode
    st.integers(min_value=INT64_MIN, max_value=UINT64_MAX),  # every one is within float32's range
    st.sampled_from(F32_EDGES),
)
ts_scalars = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=INT64_MIN, max_value=UINT64_MAX),
    st.sampled_from([0.0, -0.0, 1.7e9, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308]),
)
F64_MAX = sys.float_info.max


def increasing(ts: list) -> list:
    """Strictly increasing as float64: one item per float value, sorted."""
    return sorted({float(t): t for t in ts}.values(), key=float)


_ts_lists = st.lists(ts_scalars, min_size=1, max_size=10)
# Sometimes spanning more than float64's range (a difference of two timestamps overflows).
ts_batches = (_ts_lists | _ts_lists.map(lambda ts: [-F64_MAX, *ts, F64_MAX])).map(increasing)
# Beyond 64 bits (JSON only: msgpack cannot carry them), in and beyond float32's and float64's range.
big_ints = st.one_of(
    st.integers(min_value=UINT64_MAX + 1), st.integers(max_value=INT64_MIN - 1),
    st.sampled_from([UINT64_MAX + 1, INT64_MIN - 1, 10**20, 2**127, 2**128, 10**39, 10**309, -(10**400)]),
)
bad_values = st.one_of(  # bad as a value, whatever the format
    st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, ABOVE_F32_MAX, -ABOVE_F32_MAX, 1e39, 1.7e308]),
    st.floats(min_value=ABOVE_F32_MAX), st.floats(max_value=-ABOVE_F32_MAX),
)
bad_ts = st.sampled_from([math.nan, -math.nan, math.inf, -math.inf])  # an ABOVE_F32_MAX timestamp is fine

# -- names, keys, junk --------------------------------------------------------------------------
names = st.one_of(st.sampled_from(["temp", "rpm", "a", "b", "c", "Température", "速度", "🌡", ""]), st.text(max_size=6))
channel_lists = st.lists(names, min_size=1, max_size=5, unique=True)
FORMATS = ("msgpack", "json")


def _junk(fmt: str) -> st.SearchStrategy:
    """Wrong-typed things (no numbers): None, bools, text, (msgpack) bytes, nested maps and lists."""
    leaves = st.none() | st.booleans() | st.text(max_size=5)
    keys = st.text(max_size=5)
    if fmt == "msgpack":
        leaves = leaves | st.binary(max_size=5)
        keys = keys | st.integers(-5, 5) | st.binary(max_size=3)
    return st.recursive(leaves, lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3), max_leaves=6)


# Built once: building strategies inside every draw costs more than drawing from them.
JUNK = {fmt: _junk(fmt) for fmt in FORMATS}
JUNK_NOT_LIST = {fmt: JUNK[fmt].filter(lambda x: not isinstance(x, list)) for fmt in FORMATS}
NOT_A_MAP = {fmt: JUNK[fmt].filter(lambda x: not isinstance(x, dict)) | valid_values | st.lists(valid_values, max_size=3)
             for fmt in FORMATS}


def junk(fmt: str, lists: bool = True) -> st.SearchStrategy:
    return JUNK[fmt] if lists else JUNK_NOT_LIST[fmt]


def pack(obj, fmt: str, draw=None) -> bytes:
    """msgpack or JSON bytes of ``obj``; with ``draw``, in one of the layouts producers use."""
    if fmt == "json":
        indent = draw(st.sampled_from([None, 0, 2])) if draw else None
        ascii_only = draw(st.booleans()) if draw else True
        lead = draw(st.sampled_from(["", " ", "\n", "\t", "\r\n  "])) if draw else ""
        return (lead + json.dumps(obj, indent=indent, ensure_ascii=ascii_only, allow_nan=True)).encode()
    return msgpack.packb(obj, use_bin_type=True)


@st.composite
def points_message(draw, channels, batch: bool, present=None):
    """(ts, values) of a valid message: channels in a random order, ``present`` (default all)."""
    order = draw(st.permutations(list(channels if present is None else present)))
    if batch:
        ts = draw(ts_batches)
        return ts, {ch: draw(st.lists(valid_values, min_size=len(ts), max_size=len(ts))) for ch in order}
    return draw(ts_scalars), {ch: draw(valid_values) for ch in order}


def expected_points(channels, ts, values, last_values=None):
    """What decode must return: float64 timestamps, float32 values in the model's channel order."""
    batch = isinstance(ts, list)
    ts_list = ts if batch else [ts]
    exp_ts = np.array([float(t) for t in ts_list], dtype=np.float64)
    exp = np.empty((len(ts_list), len(channels)), dtype=np.float32)
    for j, ch in enumerate(channels):
        if ch in values:
            col = values[ch] if batch else [values[ch]]
            exp[:, j] = [np.float32(float(v)) for v in col]
        else:
            exp[:, j] = last_values[j]
    return exp_ts, exp


def decode(name: str, dec: PointDecoder, key, raw, last_values=None):
    """``dec.decode``: Points, or the InvalidMessage (reason checked); anything else propagates.

    Warnings are errors here: a numpy RuntimeWarning on a message is a bug waiting for a worker
    run with ``-W error`` (and noise in its log otherwise).
    """
    DECODED[name] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return dec.decode(key, raw, last_values=last_values)
        except InvalidMessage as exc:
            assert exc.reason in REASONS
            return exc


def assert_sane(p: Points, dec: PointDecoder) -> None:
    """What any accepted message must look like, whatever it was."""
    assert isinstance(p, Points)
    assert p.ts.dtype == np.float64 and p.values.dtype == np.float32
    assert p.ts.ndim == 1 and len(p) >= 1 and p.values.shape == (len(p), len(dec.channels))
    assert np.isfinite(p.ts).all() and (p.ts[1:] > p.ts[:-1]).all()
    assert np.isfinite(p.values).all()


def assert_same(got, exp_ts, exp_values) -> None:
    assert isinstance(got, Points), f"valid message rejected: {got!r}"
    assert got.ts.dtype == np.float64 and got.values.dtype == np.float32
    # Bit for bit (-0.0 stays -0.0), not just ==.
    assert got.ts.shape == exp_ts.shape and got.ts.tobytes() == exp_ts.tobytes(), (got.ts, exp_ts)
    assert got.values.shape == exp_values.shape and got.values.tobytes() == exp_values.tobytes(), (got.values, exp_values)


def assert_rejected(got, allowed: set[str]) -> None:
    assert isinstance(got, InvalidMessage), f"invalid message accepted (expected {sorted(allowed)}): {got!r}"
    assert got.reason in allowed, f"reason {got.reason!r}, expected one of {sorted(allowed)} ({got})"


source_keys = st.one_of(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12).map(str.encode))


def source_of_key(key) -> str:
    return key.decode() if isinstance(key, bytes) else key


# -- 1. valid messages ---------------------------------------------------------------------------
@st.composite
def valid_cases(draw):
    channels = draw(channel_lists)
    fmt, batch = draw(st.sampled_from(FORMATS)), draw(st.booleans())
    ts, values = draw(points_message(channels, batch))
    extra = draw(st.dictionaries(st.text(max_size=5).filter(lambda k: k not in ("ts", "values")),
                                 st.none() | st.integers(-9, 9) | st.text(max_size=3), max_size=2))
    fields = draw(st.permutations([("ts", ts), ("values", values), *extra.items()]))  # extra fields are ignored
    if not extra and draw(st.booleans()):
        raw = encode_points(ts, values, fmt=fmt)  # the project's own encoder
    else:
        raw = pack(dict(fields), fmt, draw)
    return channels, draw(source_keys), raw, ts, values


@given(case=valid_cases())
@fuzz("valid")
def _valid(case):
    channels, key, raw, ts, values = case
    dec = PointDecoder(channels)
    got = decode("valid", dec, key, raw)
    exp_ts, exp_values = expected_points(channels, ts, values)
    assert_same(got, exp_ts, exp_values)
    assert got.source == source_of_key(key)
    if isinstance(ts, list):  # a batch decodes exactly as its points one by one
        for i, t in enumerate(ts):
            DECODED["valid, batch points re-sent singly"] += 1
            one = dec.decode(key, encode_points(t, {ch: v[i] for ch, v in values.items()}))
            assert_same(one, exp_ts[i:i + 1], exp_values[i:i + 1])


def test_valid_messages_decode_to_exactly_what_was_encoded():
    _valid()
    check_count("valid")


# -- 2. invalid messages -----------------------------------------------------------------------
@dataclass
class Bad:
    raw: bytes
    allowed: set[str]
    dec_kw: dict = field(default_factory=dict)
    last_values: np.ndarray | None = None


def _elem_reason(x) -> str:
    """The reason for a wrong-typed item where a number belongs (a list there is a shape error)."""
    return "bad_shape" if isinstance(x, list) else "bad_value"


@st.composite
def invalid_cases(draw):
    channels = draw(channel_lists)
    return channels, draw(_invalid_message(channels))


@st.composite
def _invalid_message(draw, channels):
    fmt, batch = draw(st.sampled_from(FORMATS)), draw(st.booleans())
    ts, values = draw(points_message(channels, batch))
    n = len(ts) if batch else 1
    ch = draw(st.sampled_from(channels))
    i = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from([
        "bad_value", "big_int_value", "bad_ts", "big_int_ts", "junk_value", "junk_ts", "junk_channel",
        "junk_values", "junk_payload", "missing_field", "extra_channel", "missing_channel", "batch_length",
        "scalar_list_mix", "empty_batch", "ts_not_increasing", "oversize", "truncated", "trailing_garbage",
    ]))
    if kind.startswith("big_int"):
        fmt = "json"  # msgpack cannot carry integers beyond 64 bits
    note(f"kind={kind} fmt={fmt} (as first drawn: batch={batch} channel={ch!r} i={i})")
    msg = {"ts": ts, "values": values}

    def put(target: str, x) -> None:  # replace one value/timestamp (an item of the list in a batch)
        if target == "ts":
            if batch:
                ts[i] = x
            else:
                msg["ts"] = x
        elif batch:
            values[ch][i] = x
        else:
            values[ch] = x

    kw: dict = {}
    if kind == "bad_value":
        put("value", draw(bad_values))
        allowed = {"bad_value"}
    elif kind == "big_int_value":
        put("value", draw(big_ints))
        allowed = {"bad_value"}
    elif kind == "bad_ts":
        put("ts", draw(bad_ts))
        allowed = {"bad_value"}
    elif kind == "big_int_ts":
        put("ts", draw(big_ints))
        allowed = {"bad_value"}
    elif kind == "junk_value":
        x = draw(junk(fmt))
        put("value", x)
        allowed = {_elem_reason(x)}
    elif kind == "junk_ts":
        x = draw(junk(fmt))
        put("ts", x)
        if batch:
            allowed = {_elem_reason(x)}
        else:  # a list there makes it a (broken) batch
            allowed = {"bad_shape", "bad_value"} if isinstance(x, list) else {"undecodable"}
    elif kind == "junk_channel":  # a batch channel that is not a list / a single channel that is a list
        values[ch] = draw(junk(fmt, lists=False) | valid_values) if batch else draw(st.lists(valid_values | junk(fmt)))
        allowed = {"bad_shape"}
    elif kind == "junk_values":
        msg["values"] = draw(NOT_A_MAP[fmt])
        allowed = {"undecodable"}
    elif kind == "junk_payload":
        msg = draw(NOT_A_MAP[fmt])
        allowed = {"undecodable"}
    elif kind == "missing_field":
        del msg[draw(st.sampled_from(["ts", "values"]))]
        if draw(st.booleans()):  # the field present under another key type or spelling
            msg[draw(st.sampled_from(["TS", "Values", "ts ", "valuës"]))] = ts
        allowed = {"undecodable"}
    elif kind == "extra_channel":
        if fmt == "json":
            k = draw(names | st.integers() | st.floats() | st.booleans() | st.none())
            clash = json.loads(json.dumps({k: 0})).popitem()[0] in channels  # JSON turns keys into text
        else:
            k = draw(names | st.integers(INT64_MIN, UINT64_MAX) | st.floats() | st.booleans() | st.none()
                     | st.binary(max_size=4) | st.tuples(st.integers(0, 3)))
            clash = k in channels
        if clash:
            k = "\x00not-a-channel\x00"
        values[k] = draw(st.lists(valid_values, min_size=n, max_size=n)) if batch else draw(valid_values)
        allowed = {"unknown_channel"}
        if isinstance(k, tuple):  # an array as a map key: msgpack cannot make it a dict key
            allowed.add("undecodable")
    elif kind == "missing_channel":
        gone = draw(st.lists(st.sampled_from(channels), min_size=1, unique=True))
        for c in gone:
            del values[c]
        if draw(st.booleans()):  # imputation on, but nothing to impute from / nothing to impute to
            kw["allow_imputation"] = True
            if len(gone) == len(channels):
                last = draw(arrays(np.float32, len(channels), elements=st.floats(width=32, allow_nan=False,
                                                                                 allow_infinity=False)))
                return Bad(pack(msg, fmt, draw), {"missing_channel"}, kw, last)
        allowed = {"missing_channel"}
    elif kind == "batch_length":
        if not batch:  # make it a batch of one first
            ts, n = [1.0], 1
            values = {c: [v] for c, v in values.items()}
            msg = {"ts": ts, "values": values}
        values[ch] = draw(st.lists(valid_values, max_size=n + 3).filter(lambda v: len(v) != n))
        allowed = {"bad_shape"}
    elif kind == "scalar_list_mix":
        values[ch] = draw(valid_values) if batch else draw(st.lists(valid_values, max_size=3))
        allowed = {"bad_shape"}
    elif kind == "empty_batch":
        msg = {"ts": [], "values": {c: draw(st.just([]) | st.lists(valid_values, max_size=2)) for c in channels}}
        allowed = {"bad_shape"}
    elif kind == "ts_not_increasing":
        ts = draw(ts_batches.filter(lambda t: len(t) >= 2))
        j = draw(st.integers(0, len(ts) - 2))
        how = draw(st.sampled_from(["equal", "swap", "reverse"]))
        if how == "equal":  # the same instant, maybe spelled differently (1 vs 1.0, 0.0 vs -0.0)
            t = ts[j]
            ts[j + 1] = draw(st.sampled_from([t, float(t), -float(t) if float(t) == 0 else t]))
        elif how == "swap":
            ts[j], ts[j + 1] = ts[j + 1], ts[j]
        else:
            ts.reverse()
        msg = {"ts": ts, "values": {c: draw(st.lists(valid_values, min_size=len(ts), max_size=len(ts))) for c in channels}}
        allowed = {"ts_not_increasing"}
    elif kind == "oversize":
        raw = pack(msg, fmt, draw)
        kw["max_bytes"] = draw(st.integers(0, len(raw) - 1))
        return Bad(raw, {"oversize"}, kw)
    elif kind == "truncated":
        raw = pack(msg, fmt, draw)
        return Bad(raw[:draw(st.integers(0, len(raw) - 1))], {"undecodable"})
    elif kind == "trailing_garbage":
        raw = pack(msg, fmt, draw)
        tail = draw(st.binary(min_size=1, max_size=8).filter(lambda b: b.strip(b" \t\r\n")))  # JSON allows white space
        return Bad(raw + tail, {"undecodable"})
    else:  # pragma: no cover
        raise AssertionError(kind)
    return Bad(pack(msg, fmt, draw), allowed, kw)


@given(case=invalid_cases(), key=source_keys)
@fuzz("invalid")
def _invalid(case, key):
    channels, bad = case
    note(f"raw={bad.raw!r}")
    got = decode("invalid", PointDecoder(channels, **bad.dec_kw), key, bad.raw, bad.last_values)
    assert_rejected(got, bad.allowed)


def test_invalid_messages_are_dead_letters_with_the_right_reason():
    _invalid()
    check_count("invalid")


# -- 3. arbitrary bytes: anything may come back, as long as it is Points or InvalidMessage -------
numbers = st.floats() | st.integers(INT64_MIN, UINT64_MAX)
ANYTHING = {fmt: st.recursive(JUNK[fmt] | numbers, lambda c: st.lists(c, max_size=4), max_leaves=8) for fmt in FORMATS}


@st.composite
def arbitrary_payloads(draw, channels):
    how = draw(st.sampled_from(["bytes", "json_start", "structure", "flipped"]))
    note(f"how={how}")
    if how == "bytes":
        return draw(st.binary(max_size=64))
    if how == "json_start":
        return draw(st.sampled_from([b"{", b" ", b"\n{", b"\t", b"\r"])) + draw(st.binary(max_size=32))
    fmt = draw(st.sampled_from(FORMATS))
    anything = ANYTHING[fmt]
    if how == "structure":  # right field names, anything (numbers included) inside
        vkeys = st.sampled_from(channels) | st.text(max_size=3)
        msg = {"ts": draw(anything), "values": draw(st.dictionaries(vkeys, anything, max_size=len(channels) + 1))}
        return pack(msg, fmt, draw)
    ts, values = draw(points_message(channels, draw(st.booleans())))  # a valid message, with bytes changed
    raw = bytearray(pack({"ts": ts, "values": values}, fmt, draw))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "set":
            raw[at] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif len(raw) > 1:
            del raw[at]
    return bytes(raw)


@st.composite
def arbitrary_cases(draw):
    channels = draw(channel_lists)
    return channels, draw(st.booleans()), draw(arbitrary_payloads(channels))


@given(case=arbitrary_cases())
@fuzz("bytes")
def _arbitrary(case):
    channels, impute, raw = case
    dec = PointDecoder(channels, allow_imputation=impute)
    last = np.arange(len(channels), dtype=np.float32) if impute else None
    got = decode("bytes", dec, b"src", raw, last)
    if isinstance(got, Points):
        assert_sane(got, dec)


def test_arbitrary_bytes_never_raise_anything_but_invalid_message():
    _arbitrary()
    check_count("bytes")


# -- 4. imputation ------------------------------------------------------------------------------
@st.composite
def imputation_cases(draw):
    channels = draw(channel_lists)
    present = draw(st.lists(st.sampled_from(channels), unique=True))
    batch, fmt = draw(st.booleans()), draw(st.sampled_from(FORMATS))
    ts, values = draw(points_message(channels, batch, present))
    last = draw(st.none() | arrays(np.float32, len(channels),
                                   elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
    poison = bool(present) and draw(st.booleans())  # a bad value among the present channels
    if poison:
        ch = draw(st.sampled_from(present))
        if batch:
            values[ch][draw(st.integers(0, len(ts) - 1))] = draw(bad_values)
        else:
            values[ch] = draw(bad_values)
    return channels, present, ts, values, last, poison, pack({"ts": ts, "values": values}, fmt, draw)


@given(case=imputation_cases())
@fuzz("imputation")
def _imputation(case):
    channels, present, ts, values, last, poison, raw = case
    got = decode("imputation", PointDecoder(channels, allow_imputation=True), b"src", raw, last)
    missing = len(present) < len(channels)
    if poison:
        assert_rejected(got, {"bad_value"})  # imputation does not excuse bad values ...
    elif missing and (last is None or not present):
        assert_rejected(got, {"missing_channel"})  # ... and needs a previous point and at least one channel
    else:
        assert_same(got, *expected_points(channels, ts, values, last))


def test_imputation_fills_exactly_the_missing_channels():
    _imputation()
    check_count("imputation")


# -- 5. message keys ----------------------------------------------------------------------------
keys = st.one_of(
    st.none(), st.just(b""), st.just(""),
    st.binary(max_size=12),  # mostly invalid UTF-8
    st.text(max_size=12), st.text(max_size=12).map(str.encode),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates
    st.binary(max_size=8).map(bytearray), st.binary(max_size=8).map(memoryview),
    st.integers(), st.floats(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.none(), max_size=1),
)


def expected_source(key, allowed):
    """(source, None) or (None, reason) per source_of's documented rules."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        try:
            key = bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            return None, "missing_source"
    if not isinstance(key, str) or key == "":
        return None, "missing_source"
    if allowed is not None and key not in allowed:
        return None, "unknown_source"
    return key, None


@st.composite
def key_cases(draw):
    key = draw(keys)
    allowed = None
    if draw(st.booleans()):
        allowed = set(draw(st.lists(st.text(max_size=4), max_size=3)))
        if draw(st.booleans()) and isinstance(key, (str, bytes)):
            try:
                allowed.add(key if isinstance(key, str) else key.decode())
            except UnicodeDecodeError:
                pass
    return key, allowed, draw(st.sampled_from(FORMATS))


@given(case=key_cases())
@fuzz("keys")
def _keys(case):
    key, allowed, fmt = case
    dec = PointDecoder(["a", "b"], allowed_sources=allowed)
    want, reason = expected_source(key, allowed)
    try:
        got = dec.source_of(key)
    except InvalidMessage as exc:
        got = exc
    points = decode("keys", dec, key, encode_points(1.0, {"b": 2.0, "a": 1.0}, fmt=fmt))
    if reason is None:
        assert got == want and isinstance(points, Points) and points.source == want
    else:
        assert_rejected(got, {reason})
        assert_rejected(points, {reason})


def test_message_keys_are_sources_or_dead_letters():
    _keys()
    check_count("keys")
