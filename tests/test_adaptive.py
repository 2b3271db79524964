"""Streaming threshold procedures (stream_detector.runtime.thresholds): chunking never changes a decision,
a state survives msgpack and a restart, offline wrappers equal the batch implementations they
replaced (copied below as references) up to the documented differences, specs are checked."""

import math

import msgpack
import numpy as np
import pytest

from stream_detector.runtime import thresholds as T
from stream_detector.runtime.thresholds import DEFAULTS, LikelihoodThreshold, make_threshold
from stream_detector.bench import nab


# ------------------------------------------------------------------------------------------
# the batch implementations before the streaming rewrite (references)
def _old_dynamic_flags(scores, history=2000, step=100, smoothing_span=30, z_range=None, min_decrease=0.13,
                       min_history=300):
    z_range = np.arange(2.5, 12.0, 0.5) if z_range is None else z_range
    smoothed = T.ewma(scores, smoothing_span)
    flags = np.zeros(len(smoothed), dtype=bool)
    for end in range(step, len(smoothed) + step, step):
        end = min(end, len(smoothed))
        lo = max(0, end - history)
        e = smoothed[lo:end]
        ok = np.isfinite(e)
        if ok.sum() < min_history:
            continue
        idx = np.flatnonzero(ok) + lo
        e_ok = smoothed[idx]
        eps = T._best_epsilon(e_ok, z_range)
        window_flags = T._prune(e_ok, e_ok >= eps, eps, min_decrease)
        newest = idx >= end - step
        flags[idx[newest]] = window_flags[newest]
    return flags


def _old_telemanom_flags(scores, batch_size=70, window_size=30, smoothing_perc=0.05, error_buffer=100, p=0.13,
                         l_s=250, sd_lim=12.0, inverse=True):
    scores = np.asarray(scores, dtype=np.float64)
    flags = np.zeros(len(scores), dtype=bool)
    idx = np.flatnonzero(np.isfinite(scores))
    n = len(idx)
    if n < max(batch_size, 2):
        return flags
    e_all = T.ewma_adjusted(scores[idx], batch_size * window_size * smoothing_perc)
    if n > l_s:
        e_all[:l_s] = e_all[:2 * l_s].mean()
    while window_size > 1 and n < batch_size * window_size:
        window_size -= 1
    num_windows = max(0, (n - batch_size * window_size) // batch_size)
    ignore = 2 * l_s if n >= 2500 else (l_s if n >= 1800 else 0)
    out = np.zeros(n, dtype=bool)
    done = 0
    for i in range(num_windows + 1):
        lo = i * batch_size
        hi = n if i == num_windows else batch_size * window_size + i * batch_size
        e = e_all[lo:hi]
        pos = np.arange(lo, hi)
        allowed = pos >= (ignore if i == 0 else done)
        before = out[lo:hi].copy()
        mean, sd = float(e.mean()), float(e.std())
        new = T._telemanom_side(e, mean + T.telemanom_epsilon_z(e, error_buffer, sd_lim) * sd, allowed, before,
                                error_buffer, p)
        if inverse:
            e_inv = 2 * mean - e
            new |= T._telemanom_side(e_inv, mean + T.telemanom_epsilon_z(e_inv, error_buffer, sd_lim) * sd, allowed,
                                     before, error_buffer, p)
        out[lo:hi] |= new
        done = hi
    flags[idx] = out
    return flags


def _old_anomaly_likelihood(raw, learning_period=288, estimation_samples=100, historic_window=8640,
                            reestimation_period=100, averaging_window=10, red=0.99999, yellow=0.999, std_floor=1e-3):
    x = np.asarray(raw, dtype=np.float64)
    n = len(x)
    m = nab.moving_average(x, averaging_window)
    ok = np.isfinite(m)
    ok[:learning_period] = False
    mz = np.where(ok, m, 0.0)
    c0 = np.concatenate([[0], np.cumsum(ok)])
    c1 = np.concatenate([[0.0], np.cumsum(mz)])
    c2 = np.concatenate([[0.0], np.cumsum(mz * mz)])
    tail = np.full(n, 0.5)
    first = learning_period + estimation_samples
    if n > first:
        t = np.arange(first, n)
        est = np.maximum(first, (t // reestimation_period) * reestimation_period)
        lo = np.maximum(est - historic_window, learning_period)
        cnt = (c0[est] - c0[lo]).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (c1[est] - c1[lo]) / cnt
            var = np.maximum((c2[est] - c2[lo]) / cnt - mean * mean, 0.0)
            std = np.maximum(np.sqrt(var), np.maximum(std_floor * np.abs(mean), 1e-12))
            z = (m[first:] - mean) / std
        erfc = np.frompyfunc(math.erfc, 1, 1)
        q = np.asarray(erfc(np.nan_to_num(z, nan=0.0, posinf=1e300, neginf=-1e300) / math.sqrt(2.0)),
                       dtype=np.float64) * 0.5
        tail[first:] = np.where(np.isfinite(z) & (cnt > 0), q, 0.5)
    in_red = tail <= 1.0 - red
    repeat = in_red & np.concatenate([[False], in_red[:-1]])
    return 1.0 - np.where(repeat, 1.0 - yellow, tail)


# ------------------------------------------------------------------------------------------
# series and small parameter sets (small windows keep the whole file fast)
def series(n, seed, kind="mixed"):
    """Noise with spikes, a burst, a level shift, a drop and missing scores."""
    rng = np.random.default_rng(seed)
    s = 1.0 + 0.1 * np.abs(rng.normal(size=n))
    if kind in ("mixed", "spikes"):
        s[rng.integers(0, n, max(1, n // 400))] += rng.uniform(2, 8)
        a = int(rng.integers(n // 3, 2 * n // 3))
        s[a:a + 25] += 3.0
    if kind == "mixed":
        s[int(0.8 * n):] += 0.5                      # a level shift
        b = int(rng.integers(n // 5, n // 3))
        s[b:b + 30] = 0.2                            # a drop (the inverted side)
        s[rng.integers(0, n, max(1, n // 50))] = np.nan
        s[:5] = np.nan
    return s


TEL = dict(batch_size=10, window_size=8, error_buffer=4, l_s=10)  # one window: 80 finite scores
DYN = dict(history=200, step=20, smoothing_span=5, min_history=40)
LIK = dict(learning_period=30, estimation_samples=20, historic_window=150, reestimation_period=17,
           averaging_window=4)
SPECS = {"telemanom": {"method": "telemanom", **TEL}, "dynamic": {"method": "dynamic", **DYN},
         "likelihood": {"method": "likelihood", **LIK}, "quantile": {"method": "quantile", "value": 1.2,
                                                                      "release": 1.1}}


def run(proc, x, chunks=None, seed=0, restore=None):
    """Feed ``x`` in chunks (an int, or a list to draw sizes from), then flush; with ``restore``
    = (spec, stride), rebuild the procedure from its msgpack'ed state after every chunk."""
    rng = np.random.default_rng(seed)
    flags, thr, lik = [], [], []
    i = 0
    while i < len(x):
        c = len(x) if chunks is None else (chunks if isinstance(chunks, int) else int(rng.choice(chunks)))
        f, t = proc.update(x[i:i + c])
        assert len(f) == len(t) and f.dtype == bool and t.dtype == np.float64
        flags.append(f)
        thr.append(t)
        if isinstance(proc, LikelihoodThreshold):
            lik.append(proc.last_likelihoods)
        i = min(i + c, len(x))
        assert proc.pending == i - sum(map(len, flags))
        if restore is not None:
            raw = msgpack.packb(proc.state(), use_bin_type=True)
            proc = make_threshold(restore[0], restore[1], state=msgpack.unpackb(raw, raw=False))
    f, t = proc.flush()
    flags.append(f)
    thr.append(t)
    assert proc.pending == 0
    out = np.concatenate(flags), np.concatenate(thr)
    assert len(out[0]) == len(x)
    return (*out, np.concatenate(lik)) if lik else out


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    for u, v in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(u, v)  # bit-identical thresholds (NaN == NaN)


# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["telemanom", "dynamic", "likelihood", "quantile"])
def test_chunking_never_changes_a_decision(method):
    for seed, n in ((0, 437), (1, 1000), (2, 63)):
        x = series(n, seed)
        whole = run(make_threshold(SPECS[method]), x)
        assert whole[0].any() or n < 100
        for chunks in (1, 7, 70, [1, 2, 7, 33, 70, 150]):
            assert_same(run(make_threshold(SPECS[method]), x, chunks, seed), whole)


@pytest.mark.parametrize("method", ["telemanom", "dynamic", "likelihood", "quantile"])
def test_state_round_trip_through_msgpack(method):
    spec = SPECS[method]
    for seed, stride in ((3, 1), (4, 2)):
        x = series(900, seed)
        whole = run(make_threshold(spec, stride), x)
        assert_same(run(make_threshold(spec, stride), x, [1, 3, 16, 41, 90], seed, restore=(spec, stride)), whole)


def test_telemanom_equals_the_batch_implementation_up_to_the_documented_differences():
    for seed in range(6):
        x = series(int(np.random.default_rng(seed).integers(60, 900)), seed)
        idx = np.flatnonzero(np.isfinite(x))
        n, N, B, L = len(idx), 80, TEL["batch_size"], TEL["l_s"]
        new, old = T.telemanom_flags(x, **TEL), _old_telemanom_flags(x, **TEL)
        if n < N:  # never decided while streaming: the old short-series logic exactly
            np.testing.assert_array_equal(new, old)
            continue
        r = (n - N) % B
        same = np.ones(n, bool)
        same[:2 * L] = False  # (this is a "short" series for the old code: it ignored less)
        if r:
            same[n - B - r:] = False
        np.testing.assert_array_equal(new[idx[same]], old[idx[same]])
        assert not new[~np.isfinite(x)].any()
    # default parameters, n finite >= 2500 and a whole number of batches after the first window:
    # identical; one more point: only the last batch and that point may differ
    x = series(2800 + 30, 7)
    x[np.isnan(x)] = 1.0
    x[:30] = np.nan
    np.testing.assert_array_equal(T.telemanom_flags(x), _old_telemanom_flags(x))
    assert T.telemanom_flags(x)[1500:].any()
    y = np.r_[x, 1.05]
    np.testing.assert_array_equal(T.telemanom_flags(y)[:-71], _old_telemanom_flags(y)[:-71])
    # a short series (1800 <= n < 2100) at default parameters: exactly the old logic
    z = series(2000, 8)
    np.testing.assert_array_equal(T.telemanom_flags(z), _old_telemanom_flags(z))


def test_dynamic_equals_the_batch_implementation_but_for_the_redecided_points():
    step = DYN["step"]
    for seed in range(6):
        n = int(np.random.default_rng(seed).integers(30, 1200))
        x = series(n, seed)
        new, old = T.dynamic_threshold_flags(x, **DYN), _old_dynamic_flags(x, **DYN)
        r = n % step
        same = np.ones(n, bool)
        if r and n > step:
            same[n - step:n - r] = False  # the old code re-decided these with the final history
        np.testing.assert_array_equal(new[same], old[same])
    x = series(3000, 9)
    np.testing.assert_array_equal(T.dynamic_threshold_flags(x), _old_dynamic_flags(x))


def test_likelihood_equals_the_batch_implementation():
    rng = np.random.default_rng(10)
    for seed in range(12):
        n = int(rng.integers(10, 3000))
        x = series(n, seed) * np.exp(rng.normal(size=n))
        params = LIK if seed % 3 else dict(learning_period=int(rng.integers(0, 50)),
                                           estimation_samples=int(rng.integers(1, 40)),
                                           historic_window=int(rng.integers(5, 400)),
                                           reestimation_period=int(rng.integers(1, 60)),
                                           averaging_window=int(rng.integers(1, 12)))
        new, old = nab.anomaly_likelihood(x, **params), _old_anomaly_likelihood(x, **params)
        np.testing.assert_allclose(new, old, rtol=1e-9, atol=0)
        np.testing.assert_array_equal(new >= 0.99999, old >= 0.99999)
    x = series(22000, 11)
    np.testing.assert_allclose(nab.anomaly_likelihood(x), _old_anomaly_likelihood(x), rtol=1e-9, atol=0)


# ------------------------------------------------------------------------------------------
def test_parameters_in_points_become_windows():
    for method, defaults in DEFAULTS.items():
        params = make_threshold({"method": method}).params
        # (the spatial rule's tolerance is left out of the parameters while it is 0: off)
        assert {k: params[k] for k in defaults if k in params} == {k: v for k, v in defaults.items()
                                                                   if not k.startswith("z_")
                                                                   and not (k == "spatial_tolerance" and v == 0)}
    t = make_threshold({"method": "telemanom"}, stride=8).params
    # 70 / 8 = 8.75 -> 9; 100 / 8 = 12.5 -> 13 (half up); 250 / 8 = 31.25 -> 31; window_size is in batches
    assert (t["batch_size"], t["error_buffer"], t["l_s"], t["window_size"]) == (9, 13, 31, 30)
    assert t["smoothing_perc"] == 0.05 and t["p"] == 0.13 and t["long_series"] == 313
    d = make_threshold({"method": "dynamic", "step": 4}, stride=8).params
    assert (d["history"], d["step"], d["smoothing_span"], d["min_history"]) == (250, 1, 4, 38)  # 4/8 -> at least 1
    lk = make_threshold({"method": "likelihood"}, stride=8).params
    assert (lk["learning_period"], lk["estimation_samples"], lk["historic_window"], lk["reestimation_period"],
            lk["averaging_window"]) == (36, 13, 1080, 13, 1)
    assert make_threshold({"method": "likelihood", "learning_period": 0}, stride=8).params["learning_period"] == 0
    for spec in SPECS.values():
        for stride in (1, 8):
            p = make_threshold(spec, stride).params
            for key, v in spec.items():
                if key in ("batch_size", "error_buffer", "l_s", "history", "step", "smoothing_span",
                           "min_history", "learning_period", "estimation_samples", "historic_window",
                           "reestimation_period", "averaging_window"):
                    assert p[key] == max(1 if key not in ("l_s", "learning_period", "estimation_samples") else 0,
                                         math.floor(v / stride + 0.5))


@pytest.mark.parametrize("spec, key", [
    ({"method": "nope"}, "method"), ({}, "method"), ({"method": "quantile"}, "value"),
    ({"method": "pot", "value": "high"}, "value"), ({"method": "quantile", "value": 1.0, "release": float("nan")},
                                                    "release"),
    ({"method": "telemanom", "batch_sise": 70}, "batch_sise"), ({"method": "telemanom", "batch_size": 0}, "batch_size"),
    ({"method": "telemanom", "window_size": 2.5}, "window_size"), ({"method": "telemanom", "p": 1.5}, "p"),
    ({"method": "telemanom", "inverse": "yes"}, "inverse"), ({"method": "telemanom", "sd_lim": 2}, "sd_lim"),
    ({"method": "dynamic", "history": -5}, "history"), ({"method": "dynamic", "z_max": 1.0}, "z_max"),
    ({"method": "likelihood", "flag_likelihood": 1.0}, "flag_likelihood"),
    ({"method": "likelihood", "averaging_window": True}, "averaging_window"),
])
def test_bad_specs_name_the_key(spec, key):
    with pytest.raises(ValueError, match=repr(key)):
        make_threshold(spec)


def test_bad_stride_or_foreign_state_is_refused():
    with pytest.raises(ValueError, match="stride"):
        make_threshold({"method": "telemanom"}, stride=0)
    with pytest.raises(ValueError, match="mapping"):
        make_threshold(["telemanom"])
    proc = make_threshold(SPECS["telemanom"])
    proc.update(series(100, 0))
    state = proc.state()
    with pytest.raises(ValueError, match="'method'"):
        make_threshold(SPECS["dynamic"], state=state)
    with pytest.raises(ValueError, match="'params'"):
        make_threshold(SPECS["telemanom"], stride=2, state=state)
    with pytest.raises(ValueError, match="'params'"):
        make_threshold({**SPECS["telemanom"], "p": 0.2}, state=state)
    # the card's passive keys are accepted (and change nothing)
    card = {**SPECS["telemanom"], "value": 3.0, "release": 2.0, "calibration": {"value": 3.0}}
    assert make_threshold(card, state=state).pending == proc.pending


def test_state_is_small_and_msgpack_bytes():
    proc = make_threshold({"method": "telemanom"})
    proc.update(series(5000, 1))
    raw = msgpack.packb(proc.state(), use_bin_type=True)
    assert len(raw) < 2100 * 8 + 2100 // 8 + 200  # the window's smoothed values, their flag bits, a few numbers
    proc = make_threshold({"method": "likelihood"})
    proc.update(series(20000, 2))
    raw = msgpack.packb(proc.state(), use_bin_type=True)
    assert len(raw) < 4000  # block sums, not the 8640 moving averages
    assert len(proc.starts) <= 8640 // 100 + 3


# ------------------------------------------------------------------------------------------
# hand-checkable cases
def test_telemanom_flat_series_with_a_spike():
    rng = np.random.default_rng(5)
    x = 1.0 + 0.01 * rng.normal(size=3500)
    x[3000:3005] = 20.0
    proc = make_threshold({"method": "telemanom"})
    assert proc.max_lag == 2099
    f, t = proc.update(x[:2099])
    assert len(f) == 0 and proc.pending == 2099  # the first window needs 2100 finite scores
    f, t = proc.update(x[2099:2100])
    assert len(f) == 2100 and not f.any() and np.all(t == t[0]) and proc.pending == 0
    f, _ = proc.update(x[2100:2999])
    assert len(f) == 840 and not f.any() and proc.pending == 59  # decided in whole batches of 70
    f, t = proc.update([np.nan])  # queued behind the pending windows
    assert len(f) == 0 and proc.pending == 60
    f, t = proc.update(x[2999:3010])  # completes the batch 2940..3009 (the spike inside)
    assert len(f) == 71 and proc.pending == 0
    assert not f[59] and t[59] == t[0]  # the missing score: never flagged, the batch's threshold
    batch = np.r_[f[:59], f[60:]]  # points 2940..3009
    assert batch[60:65].all()  # the spike (and its buffer of 99 points before it)
    f, _ = proc.update([np.nan])  # nothing pending: decided at once
    assert len(f) == 1 and not f[0]
    rest, _ = proc.update(x[3010:])
    flags = np.r_[np.zeros(2940, bool), batch, rest, proc.flush()[0]]
    assert len(flags) == 3500
    hit = np.flatnonzero(flags)
    # one sequence: from the spike's batch (earlier batches were decided before it) to where the
    # smoothed spike (span 105) decays, plus the 99-point buffer
    assert hit[0] == 2940 and 3104 < hit[-1] < 3300 and len(hit) == hit[-1] - hit[0] + 1
    np.testing.assert_array_equal(flags, _old_telemanom_flags(x))  # 3500 = 2100 + 20 batches: exact


def test_dynamic_burst_is_flagged_at_the_end_of_its_step():
    rng = np.random.default_rng(6)
    x = np.abs(rng.normal(size=3000))
    x[2500:2540] += 12.0
    proc = make_threshold({"method": "dynamic"})
    assert proc.max_lag == 99
    f, t = proc.update(x[:2550])
    assert len(f) == 2500 and proc.pending == 50 and not f.any()
    assert np.isnan(t[:200]).all() and np.isfinite(t[300:]).all()  # no threshold before min_history (300)
    f, t = proc.update(x[2550:2600])
    assert len(f) == 100 and f[:40].any() and np.all(t == t[0])


def test_likelihood_constant_then_jump():
    x = np.r_[np.ones(1000), np.full(50, 5.0)]
    proc = make_threshold({"method": "likelihood"})
    f, t = proc.update(x)
    assert proc.max_lag == 0 and proc.pending == 0
    # m[1000] = (9 + 5) / 10 = 1.4 against mean 1, std floored at 1e-3: z = 400, likelihood 1;
    # the next windows are red too and demoted to 0.999 by the red/yellow filter
    assert np.flatnonzero(f).tolist() == [1000]
    lik = proc.last_likelihoods
    assert lik[1000] == 1.0 and np.all(lik[1001:1010] == pytest.approx(0.999)) and np.all(lik[:1000] == 0.5)
    assert np.isnan(t[:388]).all()  # no estimate before learning_period + estimation_samples
    assert t[1000] == pytest.approx(1.0 + 4.264890793922825 * 1e-3)  # mean + z std at 1 - Q(z) = 0.99999


def _walk_windows(n, w, seed):
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(size=n))  # a random walk leaves its range often
    return values, np.lib.stride_tricks.sliding_window_view(values, w)[:, :, None], rng


def test_likelihood_spatial_rule_equals_the_offline_rule_window_by_window():
    W = 16
    values, windows, rng = _walk_windows(1200, W, 21)
    scores = np.abs(rng.normal(size=len(windows)))
    spec = {"method": "likelihood", "spatial_tolerance": 0.05}
    proc = make_threshold(spec)
    assert proc.wants_windows and not make_threshold({"method": "likelihood"}).wants_windows
    f, _ = proc.update(scores, windows=windows)
    plain, _ = make_threshold({"method": "likelihood"}).update(scores)
    offline = nab.spatial_anomalies(values, 0.05)[W - 1:]  # the window ending at point t <-> point t
    assert offline.sum() > 5 and (offline & ~plain).any()
    np.testing.assert_array_equal(f, plain | offline)
    assert np.all(proc.last_likelihoods[offline] == 1.0)
    # chunked, restarted from the saved state half-way: the same decisions
    first = make_threshold(spec)
    a, _ = first.update(scores[:500], windows=windows[:500])
    again = make_threshold(spec, state=msgpack.unpackb(msgpack.packb(first.state())))
    b, _ = again.update(scores[500:], windows=windows[500:])
    np.testing.assert_array_equal(np.r_[a, b], f)
    # stride 2: a window's new points are its last two
    f2, _ = make_threshold(spec, stride=2).update(scores[::2], windows=windows[::2])
    all_points = nab.spatial_anomalies(values, 0.05)
    ends = np.arange(W - 1, len(values), 2)
    spatial2 = all_points[ends] | all_points[ends - 1]
    plain2, _ = make_threshold({"method": "likelihood"}, stride=2).update(scores[::2])
    np.testing.assert_array_equal(f2, plain2 | spatial2)
    with pytest.raises(ValueError, match="needs the windows"):
        make_threshold(spec).update(scores)
    with pytest.raises(ValueError, match="spatial_tolerance"):
        make_threshold({"method": "likelihood", "spatial_tolerance": -0.1})


def test_spatial_flags_skip_nan_and_single_valued_ranges():
    x = np.array([[1.0, 5.0], [1.0, np.nan], [1.0, 6.0], [9.0, 6.1], [np.nan, 20.0]])
    flags, lo, hi = T.spatial_flags(x, np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf]), 0.05)
    # channel 0 is single-valued until 9.0 (no range yet: not flagged), so is channel 1 before
    # 6.0 (NaN skipped); then channel 1's range [5, 6]: 6.1 > 6.05, and [5, 6.1]: 20 > 6.155
    assert flags.tolist() == [False, False, False, True, True]
    assert lo.tolist() == [1.0, 5.0] and hi.tolist() == [9.0, 20.0]


def test_quantile_is_immediate():
    proc = make_threshold({"method": "quantile", "value": 2.0, "release": 1.0, "quantile": 0.995})
    f, t = proc.update([1.0, 2.0, np.nan, 3.0])
    assert f.tolist() == [False, True, False, True] and t.tolist() == [2.0] * 4 and proc.max_lag == 0
    assert make_threshold({"method": "pot", "value": 2.0}, state=proc.state() | {"method": "pot"}).update([5])[0][0]
