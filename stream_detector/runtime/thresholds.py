"""Per-source streaming threshold procedures, with state that survives a worker restart.

Why streaming.  The offline threshold functions (``telemanom_flags``,
``dynamic_threshold_flags``, ``bench.nab.anomaly_likelihood``) see a whole series at
once.  The worker sees each source's window scores a few at a time, must decide as early as
the procedure allows, and may be killed and restarted at any moment.  Each procedure here is
therefore a small state machine: :meth:`AdaptiveThreshold.update` takes the source's next
scores and returns the decisions that became possible; the offline functions are thin wrappers
that feed a whole series and :meth:`~AdaptiveThreshold.flush`, so offline benchmarks and the
worker make the same decisions by construction (one implementation of each procedure).

Decision lag.  ``quantile``, ``pot`` and ``likelihood`` decide each window as it arrives
(``max_lag`` 0).  ``telemanom`` and ``dynamic`` choose their threshold on a window of the
stream's own recent past and decide a whole batch (step) at a time: a window's decision waits
until its batch is complete (``dynamic``: at most ``step - 1`` windows; ``telemanom``: at most
``batch_size - 1`` windows once running, but the very first decision needs ``batch_size *
window_size`` finite scores, so ``max_lag`` is ``batch_size * window_size - 1``).  ``update``
always returns the OLDEST undecided windows, in order, so the caller keeps a FIFO of its
pending score records and pops ``len(flags)`` of them per call.

State.  :meth:`~AdaptiveThreshold.state` is a small msgpack-able dict (ints, floats, ``None``,
and numpy arrays as raw little-endian ``bytes``) holding only what the next decisions need:
for ``telemanom`` the EWMA's numerator and denominator, the last ``batch_size * window_size``
smoothed scores and their flags (bits); for ``dynamic`` the EWMA and the last ``history``
smoothed scores; for ``likelihood`` the last ``averaging_window - 1`` raw scores, running sums
per block of ``reestimation_period`` moving averages (not the 8640 averages themselves), the
current estimate and the red-filter bit (and, with the spatial rule, the range of the points
seen per channel).  ``make_threshold(spec, stride, state)`` rebuilds an
object that continues exactly where the saved one stopped (bit-identical decisions).  A state
carries a checksum of the parameters it was made with; restoring it under other parameters (a
changed spec or stride) is a ``ValueError``, and the caller starts afresh.

Points and windows.  Procedure parameters are published in POINTS of the series (telemanom's
batch of 70 points, NAB's 8640-point history, ...).  The worker's unit is the window, one per
``stride`` points, so :func:`make_threshold` divides every parameter given in points by the
stride (rounded half up, at least 1; at least 0 where 0 is meaningful, e.g. a learning
period) so that the procedure spans the same stretch of time at any stride; at stride 1 they
are unchanged.  Counts that are not in points (telemanom's ``window_size`` in batches,
probabilities, z limits) are never converted.

Non-finite scores (NaN, +-inf) are "missing": never flagged and never fed to a procedure, but
still decided in order.  Their threshold is the one of the decision that releases them (the one
in force at that moment), NaN while no threshold has been chosen yet.
"""

from __future__ import annotations

import json
import math
import zlib
from statistics import NormalDist

import numpy as np

METHODS = ("quantile", "pot", "telemanom", "dynamic", "likelihood")
STATE_VERSION = 1


# ---------------------------------------------------------------------------------------
# byte packing for msgpack-able states
def _f8(a) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def _unf8(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f8").astype(np.float64)


def _i8(a) -> bytes:
    return np.ascontiguousarray(a, dtype="<i8").tobytes()


def _uni8(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<i8").astype(np.int64)


def _bits(mask) -> bytes:
    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def _unbits(b: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(b, dtype=np.uint8), count=n).astype(bool) if n else np.zeros(0, bool)


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.float64)


def _as_scores(scores) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64).reshape(-1)


class AdaptiveThreshold:
    """A per-source threshold procedure fed window scores in order (see the module docstring).

    ``params`` holds the procedure's parameters in WINDOWS (already converted from points)."""

    method: str = ""
    max_lag: int = 0
    wants_windows: bool = False  # True: update() needs the scored windows too (the spatial rule)

    def __init__(self, params: dict):
        self.params = dict(params)
        self._flushed = False

    # -- interface --------------------------------------------------------------------------
    def update(self, scores: np.ndarray, windows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Feed this source's next window scores (1-D, in order); returns ``(flags, thresholds)``
        of the windows decided by this call: always the oldest undecided ones, in order (possibly
        none, possibly more than were fed).  ``windows`` (``[k, W, C]``, the scored windows) is
        read only by a procedure that :attr:`wants_windows`."""
        if self._flushed:
            raise RuntimeError("update() after flush(): a flushed procedure has ended its series")
        return self._update(_as_scores(scores))

    @property
    def pending(self) -> int:
        """Windows fed but not decided yet."""
        return 0

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """End of a finite series (offline use; the worker never calls it): decide every pending
        window.  No update may follow."""
        self._flushed = True
        return self._flush()

    def state(self) -> dict:
        """msgpack-able dict from which :func:`make_threshold` restores this procedure exactly."""
        return {"v": STATE_VERSION, "method": self.method, "params": _checksum(self.params), **self._state()}

    # -- per method ---------------------------------------------------------------------------
    def _update(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _flush(self) -> tuple[np.ndarray, np.ndarray]:
        return _empty()

    def _state(self) -> dict:
        return {}

    def _load(self, state: dict) -> None:
        pass


def _checksum(params: dict) -> int:
    """A short, process-independent fingerprint of the parameters (kept in the state so that a
    state is never silently continued under other parameters)."""
    return zlib.crc32(json.dumps(params, sort_keys=True, default=float).encode())


# ---------------------------------------------------------------------------------------
class StaticThreshold(AdaptiveThreshold):
    """``quantile`` / ``pot``: a fixed calibrated value; flag = score >= value, decided at once.
    (NaN is never flagged; +inf is.)  Episodes with the ``release`` level are formed by the
    caller; the release level is only carried here."""

    def __init__(self, method: str, value: float, release: float | None = None):
        super().__init__({"value": value, "release": release})
        self.method = method
        self.value = float(value)
        self.release = None if release is None else float(release)

    def _update(self, x):
        with np.errstate(invalid="ignore"):
            return x >= self.value, np.full(len(x), self.value)

    def state(self) -> dict:
        # the calibrated value is not state: a recalibrated card simply takes over
        return {"v": STATE_VERSION, "method": self.method}


# ---------------------------------------------------------------------------------------
class TelemanomThreshold(AdaptiveThreshold):
    """telemanom's dynamic threshold (Hundman et al. 2018), streamed; see
    ``threshold.telemanom_flags`` for the procedure itself.

    Streaming form: the smoothed score is ``ewma_adjusted``'s recurrence kept incrementally over
    the finite scores.  When ``batch_size * window_size`` finite scores have arrived, the first
    window is decided whole (after telemanom's fix-up of the first ``l_s`` smoothed values to the
    mean of the first ``2 l_s``; nothing in the first ``2 l_s`` is ever flagged: a long stream is
    assumed).  Afterwards each completed batch is decided with the last ``batch_size *
    window_size`` smoothed values, exactly as one iteration of the offline loop (only the newest
    batch may be flagged; flags already decided inside the window count as not normal when
    pruning; both sides with ``inverse``).  :meth:`flush` decides a final partial batch with the
    window ending at the last score, or, when no decision was ever made (a short series),
    runs the offline short-series logic (fewer batches per window, less ignored).

    The threshold reported for a window is ``mean + z sd`` of the window that decided it (the
    upper side; the inverted side has its own, not reported), in smoothed-score units.
    """

    method = "telemanom"

    def __init__(self, batch_size: int = 70, window_size: int = 30, smoothing_perc: float = 0.05,
                 error_buffer: int = 100, p: float = 0.13, l_s: int = 250, sd_lim: float = 12.0,
                 inverse: bool = True, long_series: int = 2500, short_series: int = 1800):
        super().__init__(dict(batch_size=int(batch_size), window_size=int(window_size),
                              smoothing_perc=float(smoothing_perc), error_buffer=int(error_buffer), p=float(p),
                              l_s=int(l_s), sd_lim=float(sd_lim), inverse=bool(inverse),
                              long_series=int(long_series), short_series=int(short_series)))
        self.B, self.W = int(batch_size), int(window_size)
        self.cap = self.B * self.W
        span = self.B * self.W * float(smoothing_perc)
        self._w = 1.0 - 2.0 / (span + 1.0)
        self.max_lag = self.cap - 1
        self.n = 0                      # finite scores fed
        self.num = self.den = 0.0       # the EWMA's running numerator and denominator
        self.e = np.zeros(0)            # the last <= cap smoothed values (decided or not)
        self.f = np.zeros(0, bool)      # their flags (False while undecided)
        self.queue: list[bool] = []     # pending windows, oldest first: finite or not
        self.thr = math.nan             # the threshold of the latest decision
        self._new: list[float] = []     # smoothed values of this update not yet merged into e

    @property
    def pending(self) -> int:
        return len(self.queue)

    @property
    def started(self) -> bool:
        return self.n >= self.cap

    def _merge(self) -> None:
        if self._new:
            self.e = np.concatenate([self.e, np.asarray(self._new)])[-self.cap:]
            self.f = np.concatenate([self.f, np.zeros(len(self._new), bool)])[-self.cap:]
            self._new = []

    def _window(self, e: np.ndarray, allowed: np.ndarray, before: np.ndarray) -> tuple[np.ndarray, float]:
        """One iteration of the offline loop: the new flags inside ``allowed`` and the threshold."""
        prm = self.params
        eb, p, sd_lim = prm["error_buffer"], prm["p"], prm["sd_lim"]
        mean, sd = float(e.mean()), float(e.std())
        eps = mean + telemanom_epsilon_z(e, eb, sd_lim) * sd
        new = _telemanom_side(e, eps, allowed, before, eb, p)
        if prm["inverse"]:
            e_inv = 2 * mean - e
            new |= _telemanom_side(e_inv, mean + telemanom_epsilon_z(e_inv, eb, sd_lim) * sd, allowed, before,
                                   eb, p)
        return new, eps

    def _emit(self, fin_flags: np.ndarray, fin_thr, out_f: list, out_t: list) -> None:
        """Decide the whole queue: finite windows take ``fin_flags`` (and ``fin_thr``) in order."""
        fin_thr = np.broadcast_to(np.asarray(fin_thr, dtype=np.float64), (len(fin_flags),))
        i = 0
        for finite in self.queue:
            if finite:
                out_f.append(bool(fin_flags[i]))
                out_t.append(float(fin_thr[i]))
                i += 1
            else:
                out_f.append(False)
                out_t.append(self.thr)
        self.queue = []

    def _decide(self, out_f: list, out_t: list) -> None:
        self._merge()
        L = self.params["l_s"]
        if self.n == self.cap:  # the first window: decided whole
            e = self.e
            if self.n > L:  # telemanom's fix-up of the first l_s smoothed values
                e[:L] = e[:2 * L].mean()
            allowed = np.arange(len(e)) >= 2 * L
            new, self.thr = self._window(e, allowed, np.zeros(len(e), bool))
            self.f = new
            self._emit(new, self.thr, out_f, out_t)
        else:  # a completed batch: the newest B of the last cap values
            allowed = np.zeros(self.cap, bool)
            allowed[-self.B:] = True
            new, self.thr = self._window(self.e, allowed, self.f.copy())
            self.f |= new
            self._emit(self.f[-self.B:], self.thr, out_f, out_t)

    def _update(self, x):
        out_f: list[bool] = []
        out_t: list[float] = []
        w, cap, B = self._w, self.cap, self.B
        num, den = self.num, self.den
        for v in x.tolist():
            if math.isfinite(v):
                num = v + w * num
                den = 1.0 + w * den
                self._new.append(num / den)
                self.queue.append(True)
                self.n += 1
                if self.n >= cap and (self.n - cap) % B == 0:
                    self.num, self.den = num, den
                    self._decide(out_f, out_t)
            elif self.queue:
                self.queue.append(False)
            else:  # nothing older is pending: decided at once
                out_f.append(False)
                out_t.append(self.thr)
        self.num, self.den = num, den
        self._merge()
        return np.array(out_f, dtype=bool), np.array(out_t, dtype=np.float64)

    def _flush(self):
        self._merge()
        out_f: list[bool] = []
        out_t: list[float] = []
        if not self.queue:
            return _empty()
        pf = sum(self.queue)
        if self.started:
            if pf:
                allowed = np.zeros(len(self.e), bool)
                allowed[-pf:] = True
                new, self.thr = self._window(self.e, allowed, self.f.copy())
                self.f |= new
                self._emit(self.f[-pf:], self.thr, out_f, out_t)
            else:
                self._emit(np.zeros(0, bool), [], out_f, out_t)
        else:
            flags, thr = self._short_series()
            self._emit(flags, thr, out_f, out_t)
        return np.array(out_f, dtype=bool), np.array(out_t, dtype=np.float64)

    def _short_series(self) -> tuple[np.ndarray, np.ndarray]:
        """The offline procedure on a series that never filled one window (all n values held)."""
        prm = self.params
        B, W, L = self.B, self.W, prm["l_s"]
        n = self.n
        flags = np.zeros(n, dtype=bool)
        thr = np.full(n, np.nan)
        if n < max(B, 2):
            return flags, thr
        e_all = self.e.copy()
        if n > L:
            e_all[:L] = e_all[:2 * L].mean()
        while W > 1 and n < B * W:
            W -= 1
        num_windows = max(0, (n - B * W) // B)
        ignore = 2 * L if n >= prm["long_series"] else (L if n >= prm["short_series"] else 0)
        done = 0
        for i in range(num_windows + 1):
            lo = i * B
            hi = n if i == num_windows else B * W + i * B
            pos = np.arange(lo, hi)
            allowed = pos >= (ignore if i == 0 else done)
            new, t = self._window(e_all[lo:hi], allowed, flags[lo:hi].copy())
            flags[lo:hi] |= new
            thr[done:hi] = t
            done = hi
        return flags, thr

    def _state(self):
        return {"n": self.n, "num": self.num, "den": self.den, "e": _f8(self.e), "f": _bits(self.f),
                "q": _bits(self.queue), "nq": len(self.queue), "thr": self.thr}

    def _load(self, s):
        self.n, self.num, self.den = int(s["n"]), float(s["num"]), float(s["den"])
        self.e = _unf8(s["e"])
        self.f = _unbits(s["f"], len(self.e))
        self.queue = _unbits(s["q"], int(s["nq"])).tolist()
        self.thr = float(s["thr"])


# ---------------------------------------------------------------------------------------
class DynamicThreshold(AdaptiveThreshold):
    """The simplified dynamic threshold (``dynamic_threshold_flags``), streamed.

    Every ``step`` windows (NaN ones included: the procedure counts positions) epsilon is chosen
    on the last ``history`` smoothed scores (EWMA, span ``smoothing_span``) and the newest
    ``step`` are decided; with fewer than ``min_history`` finite smoothed values in that history
    they are all unflagged and their threshold is NaN.  :meth:`flush` decides a final partial
    step of ``r`` windows with the history ending at the last score.  The threshold reported is
    epsilon, in smoothed-score units (flags are after pruning, so a score above it can stay
    unflagged).
    """

    method = "dynamic"

    def __init__(self, history: int = 2000, step: int = 100, smoothing_span: float = 30,
                 min_decrease: float = 0.13, min_history: int = 300, z_range=None):
        z_range = np.arange(2.5, 12.0, 0.5) if z_range is None else np.asarray(z_range, dtype=np.float64)
        super().__init__(dict(history=int(history), step=int(step), smoothing_span=float(smoothing_span),
                              min_decrease=float(min_decrease), min_history=int(min_history),
                              z_range=[float(z) for z in z_range]))
        self.z_range = z_range
        self.history, self.step = int(history), int(step)
        self._alpha = 2.0 / (float(smoothing_span) + 1.0)
        self.max_lag = self.step - 1
        self.n = 0                      # windows fed (positions, finite or not)
        self.acc = math.nan             # the EWMA
        self.e = np.zeros(0)            # the last <= history smoothed values (NaN where missing)
        self._new: list[float] = []

    @property
    def pending(self) -> int:
        return 0 if self._flushed else self.n % self.step

    def _merge(self) -> None:
        if self._new:
            self.e = np.concatenate([self.e, np.asarray(self._new)])[-self.history:]
            self._new = []

    def _decide(self, k: int, out_f: list, out_t: list) -> None:
        """Decide the newest ``k`` positions with the last ``history`` smoothed values."""
        self._merge()
        e = self.e
        ok = np.isfinite(e)
        flags = np.zeros(k, dtype=bool)
        if ok.sum() < self.params["min_history"]:
            thr = math.nan
        else:
            e_ok = e[ok]
            thr = _best_epsilon(e_ok, self.z_range)
            window_flags = _prune(e_ok, e_ok >= thr, thr, self.params["min_decrease"])
            full = np.zeros(len(e), dtype=bool)
            full[ok] = window_flags
            m = min(k, len(e))  # (a step longer than the history: its oldest windows lie outside it)
            flags[k - m:] = full[len(e) - m:]
        out_f.extend(flags.tolist())
        out_t.extend([thr] * k)

    def _update(self, x):
        out_f: list[bool] = []
        out_t: list[float] = []
        a = self._alpha
        acc = self.acc
        for v in x.tolist():
            if math.isfinite(v):
                acc = v if math.isnan(acc) else a * v + (1 - a) * acc
                self._new.append(acc)
            else:
                self._new.append(math.nan)
            self.n += 1
            if self.n % self.step == 0:
                self._decide(self.step, out_f, out_t)
        self.acc = acc
        self._merge()
        return np.array(out_f, dtype=bool), np.array(out_t, dtype=np.float64)

    def _flush(self):
        out_f: list[bool] = []
        out_t: list[float] = []
        if self.n % self.step:
            self._decide(self.n % self.step, out_f, out_t)
        return np.array(out_f, dtype=bool), np.array(out_t, dtype=np.float64)

    def _state(self):
        return {"n": self.n, "acc": self.acc, "e": _f8(self.e)}

    def _load(self, s):
        self.n, self.acc, self.e = int(s["n"]), float(s["acc"]), _unf8(s["e"])


# ---------------------------------------------------------------------------------------
def spatial_flags(points: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  tolerance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numenta's spatial rule on ``points`` ``[n, C]`` in order: point ``i`` is flagged when on
    some channel it lies outside ``[lo - tol (hi - lo), hi + tol (hi - lo)]``, ``lo``/``hi`` the
    channel's minimum and maximum over the range given (``[C]``; ``inf``/``-inf`` for none) and
    the points before ``i``; never while a channel's range is a single value.  NaN points are
    never flagged and do not move the range.  Returns the flags ``[n]`` and the range after the
    last point (the state that carries over to the next call)."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        return np.zeros(len(x), dtype=bool), lo, hi
    lows = np.fmin.accumulate(np.vstack([lo[None, :], x]), axis=0)
    highs = np.fmax.accumulate(np.vstack([hi[None, :], x]), axis=0)
    before_lo, before_hi = lows[:-1], highs[:-1]
    with np.errstate(invalid="ignore"):
        pad = tolerance * (before_hi - before_lo)
        out = (before_hi > before_lo) & ((x > before_hi + pad) | (x < before_lo - pad))
    return out.any(axis=1), lows[-1], highs[-1]


class LikelihoodThreshold(AdaptiveThreshold):
    """Numenta's anomaly likelihood (nupic's ``AnomalyLikelihood`` as NAB's ``numenta`` detector
    uses it), streamed; ``bench.nab.anomaly_likelihood`` is a wrapper over this class and its
    docstring has the procedure and its deviations from nupic.

    Decided at once: flag = likelihood >= ``flag_likelihood`` (default 0.99999, nupic's red
    level; with the red/yellow filter only the first of consecutive red windows reaches it).
    ``last_likelihoods`` holds the likelihoods of the windows the last call decided (for the
    score record).  The threshold reported is the level of the MOVING AVERAGE of the raw score
    (not the raw score) at which the likelihood reaches ``flag_likelihood`` under the estimate
    in force: ``mean + z std``, ``1 - Q(z) = flag_likelihood``; NaN before the first estimate.

    Numenta's spatial rule (``spatial_tolerance`` > 0, 0.05 in NAB's ``numenta`` detector; 0, the
    default, is off): a window one of whose new points leaves the range of every point seen
    before it, on any channel, by more than the tolerance times that range, gets likelihood 1.0
    and is flagged, whatever its score (a limit check whose limits widen as the stream shows
    more).  It needs the windows themselves: :meth:`update`'s ``windows``; a window's new
    points are its last ``stride`` (the first window's earlier points only start the range).

    State: instead of the trailing ``historic_window`` moving averages, running sums (count,
    sum, sum of squares) per block of moving averages, the blocks cut where a future estimate's
    history begins (every ``reestimation_period``), so the state is about ``historic_window /
    reestimation_period`` blocks.  The sums are accumulated sequentially and the moving average
    is a direct sum of the last ``averaging_window`` raw scores, so values do not depend on how
    the stream is chunked and do not lose precision on an endless stream (the old offline
    code's cumulative sums over the whole series did; the two agree to ~1e-12).
    """

    method = "likelihood"

    def __init__(self, learning_period: int = 288, estimation_samples: int = 100, historic_window: int = 8640,
                 reestimation_period: int = 100, averaging_window: int = 10, red: float = 0.99999,
                 yellow: float = 0.999, std_floor: float = 1e-3, flag_likelihood: float = 0.99999,
                 spatial_tolerance: float = 0.0, stride: int = 1):
        params = dict(learning_period=int(learning_period), estimation_samples=int(estimation_samples),
                      historic_window=int(historic_window), reestimation_period=int(reestimation_period),
                      averaging_window=int(averaging_window), red=float(red), yellow=float(yellow),
                      std_floor=float(std_floor), flag_likelihood=float(flag_likelihood))
        if spatial_tolerance:  # absent when off, so states saved before the rule existed stay valid
            params["spatial_tolerance"] = float(spatial_tolerance)
        super().__init__(params)
        self.spatial_tolerance = float(spatial_tolerance)
        self.stride = int(stride)  # a window's new points (the spatial rule)
        self.lo = self.hi = None  # the spatial rule's range of the points seen, per channel
        self.LP, self.H, self.R = int(learning_period), int(historic_window), int(reestimation_period)
        self.first = self.LP + int(estimation_samples)
        self.K = max(1, int(averaging_window))
        self.red_tail, self.yellow_tail = 1.0 - float(red), 1.0 - float(yellow)
        self.std_floor = float(std_floor)
        self.flag = float(flag_likelihood)
        self._zq = NormalDist().inv_cdf(self.flag)
        self.t = 0                                    # windows fed
        self.tail = np.full(self.K - 1, np.nan)       # the last K - 1 raw scores
        self.starts = np.zeros(0, np.int64)           # blocks of moving averages: first position,
        self.cnt = np.zeros(0, np.int64)              # count of finite ones,
        self.s1 = np.zeros(0)                         # their sum
        self.s2 = np.zeros(0)                         # and sum of squares
        self.mean = self.std = math.nan               # the estimate in force
        self.est_cnt = 0
        self.prev_red = False
        self.last_likelihoods = np.zeros(0)

    @property
    def wants_windows(self) -> bool:
        return self.spatial_tolerance > 0

    def update(self, scores, windows=None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`AdaptiveThreshold.update`; ``windows`` is required while the spatial rule is on."""
        flags, thr = super().update(scores)
        if self.wants_windows:
            if windows is None:
                raise ValueError("likelihood with spatial_tolerance needs the windows (update(scores, windows))")
            w = np.asarray(windows, dtype=np.float64)
            if w.ndim != 3 or len(w) != len(flags):
                raise ValueError(f"windows must be [k, W, C] with k = {len(flags)} scores, got shape {w.shape}")
            if self.lo is None or len(self.lo) != w.shape[2]:  # the first window's older points start the range
                old = w[0, : max(0, w.shape[1] - self.stride)]
                self.lo, self.hi = np.fmin.reduce(old, axis=0, initial=np.inf), np.fmax.reduce(old, axis=0,
                                                                                               initial=-np.inf)
            new = w[:, w.shape[1] - min(self.stride, w.shape[1]):]
            point_flags, self.lo, self.hi = spatial_flags(new.reshape(-1, w.shape[2]), self.lo, self.hi,
                                                          self.spatial_tolerance)
            spatial = point_flags.reshape(len(w), -1).any(axis=1)
            if spatial.any():
                self.last_likelihoods = np.where(spatial, 1.0, self.last_likelihoods)
                flags = flags | spatial
        return flags, thr

    def _is_cut(self, p: int) -> bool:
        return p == self.LP or (p + self.H) % self.R == 0 or p == self.first - self.H

    def _next_boundary(self, t: int) -> int:
        """The next position after ``t`` where an estimate is made or a block begins."""
        c = [(t // self.R + 1) * self.R, t + 1 + (-(t + 1 + self.H)) % self.R]
        c += [p for p in (self.LP, self.first, self.first - self.H) if p > t]
        return min(c)

    def _estimate(self, t: int) -> None:
        lo = max(t - self.H, self.LP)
        sel = self.starts >= lo
        cnt = int(self.cnt[sel].sum())
        s1 = s2 = 0.0
        for a, b in zip(self.s1[sel].tolist(), self.s2[sel].tolist()):
            s1 += a
            s2 += b
        self.est_cnt = cnt
        if cnt > 0:
            mean = s1 / cnt
            var = max(s2 / cnt - mean * mean, 0.0)
            self.mean, self.std = mean, max(math.sqrt(var), max(self.std_floor * abs(mean), 1e-12))
        else:
            self.mean = self.std = math.nan
        # blocks wholly before the next estimate's history are not needed any more
        lo_next = max((t // self.R + 1) * self.R - self.H, self.LP)
        keep = self.starts >= lo_next
        self.starts, self.cnt, self.s1, self.s2 = self.starts[keep], self.cnt[keep], self.s1[keep], self.s2[keep]

    def _moving_average(self, x: np.ndarray) -> np.ndarray:
        K, k = self.K, len(x)
        ext = np.concatenate([self.tail, x])
        good = np.isfinite(ext)
        z = np.where(good, ext, 0.0)
        acc = z[0:k].copy()
        for i in range(1, K):  # sequential, so the same whatever the chunking
            acc += z[i:i + k]
        bad = np.concatenate([[0], np.cumsum(~good)])
        m = acc / K
        m[(bad[K:K + k] - bad[0:k]) > 0] = np.nan
        if K > 1:
            self.tail = ext[len(ext) - (K - 1):]
        return m

    def _update(self, x):
        k = len(x)
        if k == 0:
            self.last_likelihoods = np.zeros(0)
            return _empty()
        m = self._moving_average(x)
        tails = np.full(k, 0.5)
        thr = np.full(k, np.nan)
        t0 = self.t
        erfc = np.frompyfunc(math.erfc, 1, 1)
        i = 0
        while i < k:
            t = t0 + i
            if t >= self.first and (t == self.first or t % self.R == 0):
                self._estimate(t)
            j = min(self._next_boundary(t) - t0, k)
            seg = slice(i, j)
            if t >= self.first and self.est_cnt > 0:
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    z = (m[seg] - self.mean) / self.std
                q = np.asarray(erfc(np.nan_to_num(z, nan=0.0, posinf=1e300, neginf=-1e300) / math.sqrt(2.0)),
                               dtype=np.float64) * 0.5
                tails[seg] = np.where(np.isfinite(z), q, 0.5)
                thr[seg] = self.mean + self._zq * self.std
            if t >= self.LP:
                if self._is_cut(t) or len(self.starts) == 0:
                    self.starts = np.append(self.starts, t)
                    self.cnt = np.append(self.cnt, 0)
                    self.s1 = np.append(self.s1, 0.0)
                    self.s2 = np.append(self.s2, 0.0)
                v = m[seg]
                v = v[np.isfinite(v)]
                if v.size:
                    self.cnt[-1] += v.size
                    self.s1[-1] = np.add.accumulate(np.concatenate([[self.s1[-1]], v]))[-1]
                    self.s2[-1] = np.add.accumulate(np.concatenate([[self.s2[-1]], v * v]))[-1]
            i = j
        self.t += k
        in_red = tails <= self.red_tail
        prev = np.concatenate([[self.prev_red], in_red[:-1]])
        self.prev_red = bool(in_red[-1])
        lik = 1.0 - np.where(in_red & prev, self.yellow_tail, tails)
        self.last_likelihoods = lik
        return lik >= self.flag, thr

    def _state(self):
        return {"t": self.t, "tail": _f8(self.tail), "starts": _i8(self.starts), "cnt": _i8(self.cnt),
                "s1": _f8(self.s1), "s2": _f8(self.s2), "mean": self.mean, "std": self.std,
                "est_cnt": self.est_cnt, "red": self.prev_red,
                "lo": None if self.lo is None else _f8(self.lo), "hi": None if self.hi is None else _f8(self.hi)}

    def _load(self, s):
        self.t = int(s["t"])
        self.tail = _unf8(s["tail"])
        self.starts, self.cnt = _uni8(s["starts"]), _uni8(s["cnt"])
        self.s1, self.s2 = _unf8(s["s1"]), _unf8(s["s2"])
        self.mean, self.std, self.est_cnt = float(s["mean"]), float(s["std"]), int(s["est_cnt"])
        self.prev_red = bool(s["red"])
        if s.get("lo") is not None:
            self.lo, self.hi = _unf8(s["lo"]), _unf8(s["hi"])


# ---------------------------------------------------------------------------------------
# specs: key -> (default, kind, minimum); kind "points" is divided by the stride
_SPECS = {
    "telemanom": {"batch_size": (70, "points", 1), "window_size": (30, "int", 1),
                  "smoothing_perc": (0.05, "float", 0.0), "error_buffer": (100, "points", 1),
                  "p": (0.13, "prob", 0.0), "l_s": (250, "points", 0), "sd_lim": (12.0, "float", 2.5),
                  "inverse": (True, "bool", None)},
    "dynamic": {"history": (2000, "points", 1), "step": (100, "points", 1), "smoothing_span": (30, "points", 1),
                "min_decrease": (0.13, "prob", 0.0), "min_history": (300, "points", 1),
                "z_min": (2.5, "float", 0.0), "z_max": (12.0, "float", 0.0), "z_step": (0.5, "float", 0.0)},
    "likelihood": {"learning_period": (288, "points", 0), "estimation_samples": (100, "points", 0),
                   "historic_window": (8640, "points", 1), "reestimation_period": (100, "points", 1),
                   "averaging_window": (10, "points", 1), "red": (0.99999, "prob", 0.0),
                   "yellow": (0.999, "prob", 0.0), "std_floor": (1e-3, "float", 0.0),
                   "flag_likelihood": (0.99999, "prob", 0.0), "spatial_tolerance": (0.0, "prob", 0.0)},
}
# the adaptive methods' parameters and their defaults, in points (what a card records)
DEFAULTS = {method: {key: d for key, (d, _, _) in table.items()} for method, table in _SPECS.items()}
# keys any spec may carry for the caller, not read here (the card's quantile calibration: a
# static level and release for episodes, a reference scale; a free-form note)
_PASSIVE = {"method", "release", "value", "calibration", "note"}


def _number(method: str, key: str, v) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(v)):
        raise ValueError(f"threshold spec ({method}): {key!r} must be a finite number, got {v!r}")
    return float(v)


def _convert(method: str, key: str, v, kind: str, minimum, stride: int):
    if kind == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"threshold spec ({method}): {key!r} must be true or false, got {v!r}")
        return bool(v)
    x = _number(method, key, v)
    if kind == "points":
        if x < minimum:
            raise ValueError(f"threshold spec ({method}): {key!r} must be at least {minimum} (points), got {v!r}")
        return max(int(minimum), int(math.floor(x / stride + 0.5)))
    if kind == "int":
        if x != int(x) or x < minimum:
            raise ValueError(f"threshold spec ({method}): {key!r} must be an integer >= {minimum}, got {v!r}")
        return int(x)
    if kind == "prob":
        if not 0.0 <= x < 1.0:
            raise ValueError(f"threshold spec ({method}): {key!r} must be in [0, 1), got {v!r}")
        return x
    if x <= minimum:
        raise ValueError(f"threshold spec ({method}): {key!r} must be above {minimum}, got {v!r}")
    return x


def _points(v: float, stride: int, minimum: int = 1) -> int:
    return max(minimum, int(math.floor(v / stride + 0.5)))


def make_threshold(spec: dict, stride: int = 1, state: dict | None = None) -> AdaptiveThreshold:
    """The procedure a card's or route's threshold ``spec`` asks for, in windows of ``stride``
    points (parameters in points are divided by the stride, rounded half up, at least 1 (0 for a
    learning period / ``l_s`` / ``estimation_samples``)); ``state`` (a previous :meth:`state`)
    restores it.  An unknown method, key or a bad value is a ``ValueError`` naming it; so is a
    state made by another method or under other parameters."""
    if not isinstance(spec, dict):
        raise ValueError(f"threshold spec must be a mapping, got {type(spec).__name__}")
    method = spec.get("method")
    if method not in METHODS:
        raise ValueError(f"threshold spec: unknown 'method' {method!r} (expected one of {', '.join(METHODS)})")
    if isinstance(stride, (bool, np.bool_)) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"threshold stride must be a positive integer, got {stride!r}")
    stride = int(stride)
    if method in ("quantile", "pot"):
        if "value" not in spec:
            raise ValueError(f"threshold spec ({method}): 'value' is required")
        value = _number(method, "value", spec["value"])
        release = spec.get("release")
        obj: AdaptiveThreshold = StaticThreshold(method, value,
                                                 None if release is None else _number(method, "release", release))
    else:
        table = _SPECS[method]
        unknown = sorted(set(spec) - set(table) - _PASSIVE)
        if unknown:
            raise ValueError(f"threshold spec ({method}): unknown key {unknown[0]!r} (known: {', '.join(table)})")
        kw = {key: _convert(method, key, spec.get(key, d), kind, mn, stride) for key, (d, kind, mn) in table.items()}
        if method == "telemanom":
            obj = TelemanomThreshold(**kw, long_series=_points(2500, stride), short_series=_points(1800, stride))
        elif method == "dynamic":
            z_min, z_max, z_step = kw.pop("z_min"), kw.pop("z_max"), kw.pop("z_step")
            z_range = np.arange(z_min, z_max, z_step)
            if z_range.size == 0:
                raise ValueError(f"threshold spec (dynamic): 'z_max' ({z_max}) must be above 'z_min' ({z_min})")
            obj = DynamicThreshold(**kw, z_range=z_range)
        else:
            obj = LikelihoodThreshold(**kw, stride=stride)
    if state is not None:
        _restore(obj, state)
    return obj


def _restore(obj: AdaptiveThreshold, state: dict) -> None:
    if not isinstance(state, dict):
        raise ValueError(f"threshold state must be a mapping, got {type(state).__name__}")
    if state.get("v") != STATE_VERSION:
        raise ValueError(f"threshold state: version {state.get('v')!r}, expected {STATE_VERSION}")
    if state.get("method") != obj.method:
        raise ValueError(f"threshold state: 'method' {state.get('method')!r} does not match the spec's "
                         f"{obj.method!r}")
    if isinstance(obj, StaticThreshold):
        return
    if state.get("params") != _checksum(obj.params):
        raise ValueError(f"threshold state ({obj.method}): 'params' differ (made under another spec or stride); "
                         "start a fresh state")
    try:
        obj._load(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"threshold state ({obj.method}): unreadable ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------------------------
# Dynamic error threshold (Hundman et al., "Detecting Spacecraft Anomalies Using LSTMs and
# Nonparametric Dynamic Thresholding", KDD 2018, the telemanom method), applied causally:
# every ``step`` points the threshold is chosen on the last ``history`` smoothed scores (the
# stream's own past, no labels) and flags only the newest ``step`` points.
def ewma(values: np.ndarray, span: int) -> np.ndarray:
    """Exponentially weighted moving average (causal), NaN-tolerant (NaN stays NaN)."""
    values = np.asarray(values, dtype=np.float64)
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(values)
    acc = np.nan
    for i, v in enumerate(values):
        if np.isnan(v):
            out[i] = np.nan
            continue
        acc = v if np.isnan(acc) else alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def ranges_from_mask(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` runs of True in a boolean mask (the one run-length coder:
    the procedures below and the offline event metrics use it)."""
    d = np.diff(np.concatenate([[0], np.asarray(mask, bool).astype(np.int8), [0]]))
    return [(int(s), int(e)) for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1)]


def _best_epsilon(e: np.ndarray, z_range: np.ndarray) -> float:
    """telemanom's choice of epsilon = mean + z * std, the z that removes the most mean and
    spread with the fewest (and least fragmented) flagged points."""
    mean, std = float(e.mean()), float(e.std())
    best, best_eps = -np.inf, mean + z_range[-1] * std
    for z in z_range:
        eps = mean + z * std
        below = e[e < eps]
        above = e >= eps
        n_above = int(above.sum())
        if n_above == 0 or below.size == 0:
            continue
        n_seq = len(ranges_from_mask(above))
        gain = ((mean - below.mean()) / max(mean, 1e-12) + (std - below.std()) / max(std, 1e-12))
        score = gain / (n_above + n_seq ** 2)
        if score > best:
            best, best_eps = score, eps
    return best_eps


def _prune(e: np.ndarray, flagged: np.ndarray, eps: float, min_decrease: float) -> np.ndarray:
    """telemanom's pruning: sequences whose peak is not clearly above the next lower peak
    (relative decrease below ``min_decrease``, the highest normal score closing the list) are
    unflagged, which removes the many small excursions just over epsilon."""
    runs = ranges_from_mask(flagged)
    if not runs:
        return flagged
    peaks = np.array([e[a:b + 1].max() for a, b in runs])
    normal_max = e[~flagged].max() if (~flagged).any() else eps
    out = np.zeros_like(flagged)
    for (a, b), keep in zip(runs, telemanom_prune(peaks, normal_max, min_decrease)):
        out[a:b + 1] = keep
    return out


# ---------------------------------------------------------------------------------------
# The telemanom procedure as the paper's reference implementation runs it (Hundman et al.
# 2018; configuration batch_size 70, window_size 30, smoothing_perc 0.05, error_buffer 100,
# p 0.13, l_s 250).  It differs from ``dynamic_threshold_flags`` above in the published
# details: the smoothing span is 5 % of the error window (105 points, not 30); windows are
# 30 batches of 70 points and each window flags only its newest batch (the first window flags
# all of it after ``2 * l_s`` points); every exceedance brings the ``error_buffer`` points on
# either side into its sequence, both when epsilon is chosen (sequences are counted after
# buffering; at most 5 sequences and under half the window flagged; ties go to the larger z)
# and in the output; single-point sequences are dropped; pruning compares sequence peaks with
# the largest error of the window not flagged so far and keeps a peak when its relative
# decrease to the next is at least p; and the inverted errors (mean + (mean - e)) are
# thresholded the same way, since a drop of the error is also anomalous.
# Not reproduced: the gates that skip windows whose errors are small against the telemetry's
# own scale (0.05 of its 5-95 % range, in the units of the predicted value): our scores are
# not in the units of the value.
def ewma_adjusted(values: np.ndarray, span: float) -> np.ndarray:
    """pandas' ``ewm(span).mean()`` (``adjust=True``): the weighted mean of all past values with
    weights (1 - alpha)^k, alpha = 2 / (span + 1); causal; NaN values are skipped (stay NaN)."""
    values = np.asarray(values, dtype=np.float64)
    w = 1.0 - 2.0 / (span + 1.0)
    out = np.full_like(values, np.nan)
    num = den = 0.0
    for i, v in enumerate(values):
        if np.isnan(v):
            continue
        num = v + w * num
        den = 1.0 + w * den
        out[i] = num / den
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Every point within ``radius`` of a True point becomes True."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    return np.convolve(mask.astype(np.int32), np.ones(2 * radius + 1, dtype=np.int32), mode="same") > 0


def _sequences(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True longer than one point (telemanom drops single-point sequences)."""
    return [(a, b) for a, b in ranges_from_mask(mask) if b > a]


def telemanom_epsilon_z(e: np.ndarray, error_buffer: int = 100, sd_lim: float = 12.0, max_sequences: int = 5,
                        max_fraction: float = 0.5) -> float:
    """The z of epsilon = mean + z * std that maximises
    (Δmean/mean + Δstd/std) / (|E_seq|^2 + |e_a|) over z = 2.5, 3.0, ... < sd_lim, where the
    flagged set e_a is every point above epsilon with ``error_buffer - 1`` neighbours on either
    side and E_seq its sequences; candidates with more than ``max_sequences`` sequences or with
    ``max_fraction`` or more of the window flagged are refused; ties go to the larger z, and
    ``sd_lim`` is returned when nothing qualifies."""
    e = np.asarray(e, dtype=np.float64)
    mean, sd = float(e.mean()), float(e.std())
    best_s, best_z = 0.0, float(sd_lim)
    if sd <= 0 or mean == 0:
        return best_z
    for z in np.arange(2.5, sd_lim, 0.5):
        eps = mean + z * sd
        anom = _dilate(e > eps, error_buffer - 1)
        if not anom.any():
            continue
        below = e[e < eps]
        if not below.size:  # every error at or above epsilon: no gain (telemanom's NaN score, never chosen)
            continue
        gain = (mean - below.mean()) / mean + (sd - below.std()) / sd
        n_seq = len(_sequences(anom))
        s = gain / (n_seq ** 2 + int(anom.sum()))
        if s >= best_s and n_seq <= max_sequences and anom.sum() < max_fraction * len(e):
            best_s, best_z = s, float(z)
    return best_z


def telemanom_prune(peaks: np.ndarray, normal_max: float, p: float = 0.13) -> np.ndarray:
    """Which sequences survive pruning (a boolean per entry of ``peaks``): sort the peaks in
    decreasing order, append the largest non-anomalous error (when positive), and drop, from
    the bottom, every sequence after the last one whose relative decrease to the next value is
    at least ``p`` (as telemanom; the ``dynamic`` method's pruning uses the same rule).
    Peaks must be positive."""
    peaks = np.asarray(peaks, dtype=np.float64)
    keep = np.zeros(len(peaks), dtype=bool)
    if len(peaks) == 0:
        return keep
    order = np.argsort(-peaks, kind="stable")
    # closing value: the largest normal error; without a positive one, 0 (the smallest peak stays)
    chain = np.append(peaks[order], max(float(normal_max), 0.0))
    last = -1
    for i in range(len(peaks)):
        decrease = (chain[i] - chain[i + 1]) / max(chain[i], 1e-12)
        if decrease >= p:
            last = i
    keep[order[:last + 1]] = True
    return keep


def _telemanom_side(e: np.ndarray, eps: float, allowed: np.ndarray, flagged_before: np.ndarray, error_buffer: int,
                    p: float) -> np.ndarray:
    """Flags of one window on one side (errors or inverted errors): buffered exceedances inside
    ``allowed``, grouped into sequences, pruned against the largest error not flagged."""
    cand = _dilate(e > eps, error_buffer - 1) & allowed
    out = np.zeros(len(e), dtype=bool)
    seqs = _sequences(cand)
    if not seqs:
        return out
    normal = ~cand & ~flagged_before
    normal_max = float(e[normal].max()) if normal.any() else 0.0
    peaks = np.array([e[a:b + 1].max() for a, b in seqs])
    for (a, b), k in zip(seqs, telemanom_prune(peaks, normal_max, p)):
        if k:
            out[a:b + 1] = True
    return out


def telemanom_flags(scores: np.ndarray, batch_size: int = 70, window_size: int = 30, smoothing_perc: float = 0.05,
                    error_buffer: int = 100, p: float = 0.13, l_s: int = 250, sd_lim: float = 12.0,
                    inverse: bool = True) -> np.ndarray:
    """Boolean flags per point by telemanom's procedure on the raw ``scores`` (non-finite: never
    flagged; the procedure runs on the finite points in order).

    A wrapper over the streaming ``adaptive.TelemanomThreshold`` (the worker's procedure): the
    whole series fed at once, then flushed, so that offline and online decisions are the same.
    With ``n`` finite points, ``N = batch_size * window_size`` (2100) and ``r = (n - N) %
    batch_size``, the result equals the batch implementation this replaced except:

    * when ``n >= N`` and ``r > 0``: the last full batch and the ``r`` points after it.  The old
      loop decided them together with one longer window ending at the last point; a stream
      decides the full batch when it completes (last ``N`` values) and the ``r`` remaining
      points at the end with the last ``N`` values;
    * when ``N <= n < 2500``: the first ``2 l_s`` (500) points are never flagged, where the old
      code ignored only ``l_s`` (250) for such series: a stream cannot know at its first
      decision that it will be short, so it assumes a long one.

    A series shorter than ``N`` (never one decision) runs exactly the old short-series logic
    (fewer batches per window; ``l_s`` or nothing ignored below 2500 or 1800 points)."""
    proc = TelemanomThreshold(batch_size=batch_size, window_size=window_size, smoothing_perc=smoothing_perc,
                              error_buffer=error_buffer, p=p, l_s=l_s, sd_lim=sd_lim, inverse=inverse)
    flags, _ = proc.update(scores)
    return np.concatenate([flags, proc.flush()[0]])


# ---------------------------------------------------------------------------------------
# Offline form: a whole series through the streaming procedure, then flushed.
def dynamic_threshold_flags(scores: np.ndarray, history: int = 2000, step: int = 100, smoothing_span: int = 30,
                            z_range: np.ndarray | None = None, min_decrease: float = 0.13,
                            min_history: int = 300) -> np.ndarray:
    """Boolean flags per point from the stream's own past (non-finite scores are never flagged).

    A wrapper over the streaming ``adaptive.DynamicThreshold`` (the worker's procedure): the
    whole series fed at once, then flushed.  Every ``step`` points epsilon is chosen on the last
    ``history`` smoothed scores and the newest ``step`` points are flagged; a final partial step
    of ``r`` points is decided with the history ending at the last point.  Differences from the
    batch implementation this replaced: (a) that one re-decided the ``step - r`` points before a
    final partial step with the final history (a stream cannot revise decisions it has
    already made), and (b) an infinite score is treated as missing instead of making the EWMA
    infinite for the rest of the series."""
    proc = DynamicThreshold(history=history, step=step, smoothing_span=smoothing_span, min_decrease=min_decrease,
                            min_history=min_history, z_range=z_range)
    flags, _ = proc.update(scores)
    return np.concatenate([flags, proc.flush()[0]])
