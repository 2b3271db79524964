"""Per-source windowing against direct numpy slicing, in any chunking, across restarts."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

from stream_detector.runtime.codec import InvalidMessage
from stream_detector.runtime.windowing import SourceWindows, WindowBatch


def stream(n, c=3, seed=0, dt=1.0):
    rng = np.random.default_rng(seed)
    ts = 1000.0 + dt * np.arange(n, dtype=np.float64)
    return ts, rng.normal(size=(n, c)).astype(np.float32)


def expected(ts, vals, w, s):
    """Reference: windows start at 0, s, 2s, ... while a full window fits."""
    starts = np.arange(0, len(ts) - w + 1, s)
    return ts[starts], ts[starts + w - 1], np.stack([vals[i:i + w] for i in starts]) if len(starts) else None


def random_chunks(n, rng, max_chunk):
    cuts, i = [], 0
    while i < n:
        k = int(rng.integers(1, max_chunk + 1))
        cuts.append((i, min(n, i + k)))
        i += k
    return cuts


def feed(sw, ts, vals, chunks):
    got = [sw.push_batch(ts[a:b], vals[a:b]) for a, b in chunks]
    return WindowBatch(*(np.concatenate(x) for x in zip(*got)))


@pytest.mark.parametrize("w, s", [(1, 1), (5, 1), (8, 3), (8, 8), (4, 7), (16, 5)])
@pytest.mark.parametrize("max_chunk", [1, 3, 50])
def test_windows_equal_direct_slicing_for_any_chunking(w, s, max_chunk):
    n = 97
    ts, vals = stream(n)
    rng = np.random.default_rng(w * 100 + s * 10 + max_chunk)
    out = feed(SourceWindows(w, s, 3), ts, vals, random_chunks(n, rng, max_chunk))
    assert len(out) == (n - w) // s + 1
    st, et, wins = expected(ts, vals, w, s)
    np.testing.assert_array_equal(out.start_ts, st)
    np.testing.assert_array_equal(out.end_ts, et)
    np.testing.assert_array_equal(out.values, wins)
    assert out.values.dtype == np.float32 and out.values.shape[1:] == (w, 3)


def test_fewer_points_than_window_emit_nothing():
    ts, vals = stream(7)
    sw = SourceWindows(8, 2, 3)
    assert len(feed(sw, ts, vals, [(0, 3), (3, 7)])) == 0
    assert sw.push(ts[:0], vals[:0]) == []


def test_push_returns_window_tuples():
    ts, vals = stream(10)
    wins = SourceWindows(4, 3, 3).push(ts, vals)
    assert [(w.start_ts, w.end_ts) for w in wins] == [(1000.0, 1003.0), (1003.0, 1006.0), (1006.0, 1009.0)]
    np.testing.assert_array_equal(wins[1].values, vals[3:7])


@pytest.mark.parametrize("chunked", [False, True])
def test_gap_resets_the_buffer(chunked):
    w, s = 4, 2
    ts1, v1 = stream(9, seed=1)
    ts2, v2 = stream(6, seed=2)
    ts2 = ts2 + 100.0  # a 92 s gap between the two runs
    ts = np.concatenate([ts1, ts2])
    vals = np.concatenate([v1, v2])
    sw = SourceWindows(w, s, 3, max_gap_seconds=10.0)
    chunks = [(i, i + 1) for i in range(len(ts))] if chunked else [(0, len(ts))]
    out = feed(sw, ts, vals, chunks)
    a, b = expected(ts1, v1, w, s), expected(ts2, v2, w, s)
    np.testing.assert_array_equal(out.start_ts, np.concatenate([a[0], b[0]]))
    np.testing.assert_array_equal(out.values, np.concatenate([a[2], b[2]]))
    # Without max_gap the runs are stitched together.
    out2 = feed(SourceWindows(w, s, 3), ts, vals, chunks)
    assert len(out2) == (len(ts) - w) // s + 1


def test_gap_resets_inside_one_batch_several_times():
    ts = np.array([0, 1, 2, 50, 51, 52, 53, 200, 201, 202], dtype=np.float64)
    vals = np.arange(10, dtype=np.float32)[:, None]
    out = SourceWindows(3, 1, 1, max_gap_seconds=5).push_batch(ts, vals)
    assert out.start_ts.tolist() == [0, 50, 51, 200]
    assert out.values[:, :, 0].tolist() == [[0, 1, 2], [3, 4, 5], [4, 5, 6], [7, 8, 9]]


def test_backwards_or_repeated_ts_rejected_without_state_change():
    ts, vals = stream(10)
    sw = SourceWindows(4, 2, 3)
    sw.push_batch(ts[:6], vals[:6])
    before = sw.state()
    for bad_ts in ([ts[5]], [ts[3]], [ts[6], ts[6]], [ts[7], ts[6]], [ts[6], ts[4]]):
        bad_ts = np.array(bad_ts)
        with pytest.raises(InvalidMessage) as info:
            sw.push_batch(bad_ts, vals[: len(bad_ts)])
        assert info.value.reason == "ts_not_increasing"
        assert sw.state() == before
    # ...and the stream carries on as if nothing happened.
    rest = sw.push_batch(ts[6:], vals[6:])
    st, _, wins = expected(ts, vals, 4, 2)
    np.testing.assert_array_equal(rest.values, wins[-len(rest):])
    with pytest.raises(InvalidMessage):
        sw.push_batch(np.array([np.nan]), vals[:1])


@pytest.mark.parametrize("w, s", [(1, 1), (6, 2), (6, 9), (16, 1)])
@pytest.mark.parametrize("cut", [0, 3, 5, 6, 7, 40])
@pytest.mark.parametrize("codec", ["json", "msgpack", "msgpack-binary"])
def test_state_round_trip_mid_stream(w, s, cut, codec):
    n = 60
    ts, vals = stream(n, seed=cut)
    chunks = random_chunks(n, np.random.default_rng(cut), 4)
    whole = feed(SourceWindows(w, s, 3), ts, vals, chunks)

    first = SourceWindows(w, s, 3)
    head = [c for c in chunks if c[1] <= cut] if cut else []
    split = head[-1][1] if head else 0
    a = feed(first, ts, vals, head) if head else None
    first.last_offset = 17
    st = first.state(binary=codec == "msgpack-binary")
    if codec == "json":
        st = json.loads(json.dumps(st))
    else:
        st = msgpack.unpackb(msgpack.packb(st, use_bin_type=True), raw=False)
    restored = SourceWindows.from_state(st)
    assert restored.last_offset == 17 and restored.last_ts == first.last_ts
    b = feed(restored, ts, vals, [c for c in chunks if c[0] >= split])
    parts = [x for x in (a, b) if x is not None and len(x)]
    got = WindowBatch(*(np.concatenate(x) for x in zip(*parts)))
    np.testing.assert_array_equal(got.start_ts, whole.start_ts)  # nothing skipped or doubled
    np.testing.assert_array_equal(got.values, whole.values)


def test_state_is_small():
    w, c = 64, 25
    ts, vals = stream(1000, c=c)
    sw = SourceWindows(w, 8, c)
    sw.push_batch(ts, vals)
    assert len(msgpack.packb(sw.state(binary=True))) < (w - 1) * (c * 4 + 8) + 300
    assert len(json.dumps(sw.state())) < 1.4 * (w - 1) * (c * 4 + 8) + 400


def test_from_state_rejects_garbage():
    for bad in ({}, {"v": 99}, {"v": 1, "window": 4, "stride": 1, "n_channels": 2, "need": 1, "last_ts": 1.0,
                                 "ts": "AAAA", "values": "AAAA"}):
        with pytest.raises(ValueError):
            SourceWindows.from_state(bad)


def test_last_values_for_imputation():
    sw = SourceWindows(4, 1, 2)
    assert sw.last_values() is None
    sw.push_batch(np.array([1.0, 2.0]), np.array([[1, 2], [3, 4]], dtype=np.float32))
    assert sw.last_values().tolist() == [3, 4]
    restored = SourceWindows.from_state(SourceWindows(1, 1, 2).state())
    assert restored.last_values() is None
    one = SourceWindows(1, 1, 2)
    one.push_batch(np.array([1.0]), np.array([[5, 6]], dtype=np.float32))
    assert SourceWindows.from_state(one.state()).last_values().tolist() == [5, 6]  # W=1 still keeps one point


def test_a_buffer_is_reused_only_by_a_model_of_the_same_shape():
    """The worker keeps a source's buffer across a model version only when window, stride and
    channel count match (detector._reconcile); any other shape restarts it."""
    sw = SourceWindows(8, 4, 3)
    assert sw.compatible_with(8, 4, 3)
    assert not sw.compatible_with(16, 4, 3) and not sw.compatible_with(8, 2, 3) and not sw.compatible_with(8, 4, 2)


@pytest.mark.parametrize("max_gap", [None, 3.5])
def test_push_point_is_push_batch_for_one_point(max_gap):
    """The single-point path the worker takes for a decoded single-point message gives the same
    windows and the same state as push_batch, gaps and rejections included."""
    from stream_detector.runtime.codec import Points

    rng = np.random.default_rng(3)
    ts = np.cumsum(rng.choice([1.0, 1.0, 1.0, 5.0], 200))
    vals = rng.normal(size=(200, 2)).astype(np.float32)
    a, b = SourceWindows(16, 4, 2, max_gap), SourceWindows(16, 4, 2, max_gap)
    for t, v in zip(ts, vals):
        wa = a.push_point(Points("s", np.array([t]), v[None, :]))
        wb = b.push_batch(np.array([t]), v[None, :])
        assert np.array_equal(wa.values, wb.values) and np.array_equal(wa.start_ts, wb.start_ts)
        assert np.array_equal(wa.end_ts, wb.end_ts)
    assert a.state() == b.state()
    with pytest.raises(InvalidMessage) as e:
        a.push_point(Points("s", np.array([ts[-1]]), vals[:1]))
    assert e.value.reason == "ts_not_increasing" and a.state() == b.state()
    for bad in (np.nan, -np.inf):  # the reasons push_batch gives
        with pytest.raises(InvalidMessage) as e:
            a.push_point(Points("s", np.array([bad]), vals[:1]))
        with pytest.raises(InvalidMessage) as e2:
            b.push_batch(np.array([bad]), vals[:1])
        assert e.value.reason == e2.value.reason == "bad_value" and a.state() == b.state()


def test_batches_carry_every_points_timestamp():
    """``WindowBatch.ts`` holds each window's own timestamps, whichever path made the window
    (a batch, single points, a batch across a gap), so a peak step maps to its exact time."""
    ts = np.cumsum(np.random.default_rng(1).uniform(0.5, 1.5, 40))
    ts[25:] += 100.0  # a gap: the buffer resets
    values = np.arange(40, dtype=np.float32)[:, None]
    for chunks in ([40], [1] * 40, [7, 13, 20]):
        sw = SourceWindows(window=5, stride=3, n_channels=1, max_gap_seconds=10.0)
        got, i = [], 0
        for n in chunks:
            got.append(sw.push_batch(ts[i:i + n], values[i:i + n]))
            i += n
        batch = WindowBatch(*(np.concatenate(x) for x in zip(*got)))
        assert len(batch) > 4
        first = batch.values[:, :, 0].astype(int)  # the values are the point indices
        np.testing.assert_array_equal(batch.ts, ts[first])
        np.testing.assert_array_equal(batch.ts[:, 0], batch.start_ts)
        np.testing.assert_array_equal(batch.ts[:, -1], batch.end_ts)
