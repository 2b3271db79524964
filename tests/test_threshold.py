"""Label-free thresholds: quantile, POT (extreme values), hysteresis episodes, telemanom's dynamic threshold."""

import numpy as np
import pytest

from stream_detector.runtime.episodes import hysteresis_flags
from stream_detector.runtime.thresholds import (dynamic_threshold_flags, ewma, ewma_adjusted, telemanom_epsilon_z,
                                                telemanom_flags, telemanom_prune)
from stream_detector.training.calibration import pot_threshold, quantile_threshold


def test_pot_extrapolates_beyond_the_calibration_quantile():
    rng = np.random.default_rng(0)
    normal = rng.exponential(1.0, 20000)
    pot = pot_threshold(normal, risk=1e-4, initial_quantile=0.98)
    # exponential tail: P(X > t) = exp(-t), so the 1e-4 quantile is ln(1e4) = 9.21
    assert pot["value"] == pytest.approx(np.log(1e4), rel=0.15)
    assert pot["value"] > quantile_threshold(normal, 0.995)["value"]
    assert abs(pot["shape"]) < 0.15  # the GPD fit recognises an exponential tail
    with pytest.raises(ValueError):
        pot_threshold(normal[:10])


def test_hysteresis_keeps_an_episode_open_until_release():
    s = np.array([0, 5, 3, 3, 1, 0, 5, np.nan, 0], float)
    assert hysteresis_flags(s, threshold=4, release=2).tolist() == [0, 1, 1, 1, 0, 0, 1, 0, 0]


def test_ewma_is_causal():
    x = np.r_[np.zeros(10), np.ones(10)]
    y = ewma(x, span=5)
    assert (y[:10] == 0).all() and 0 < y[10] < y[19] < 1


def test_dynamic_threshold_finds_a_burst_and_ignores_noise():
    rng = np.random.default_rng(1)
    scores = np.abs(rng.normal(0, 1, 5000))
    scores[:63] = np.nan  # before the first full window
    scores[3000:3060] += 12.0
    flags = dynamic_threshold_flags(scores, history=2000, step=100)
    assert flags[3000:3100].any()
    assert flags[:2900].sum() == 0 and flags[3200:].sum() == 0
    quiet = dynamic_threshold_flags(np.abs(rng.normal(0, 1, 5000)))
    assert quiet.sum() < 50  # pure noise: at most a stray short run


def test_ewma_adjusted_is_pandas_adjust_true():
    # span 3: alpha 0.5, weights 1, 0.5, 0.25 on the newest, previous, ... value
    y = ewma_adjusted(np.array([1.0, 0.0, np.nan, 4.0]), span=3)
    assert y[0] == 1.0
    assert y[1] == pytest.approx(0.5 / 1.5)  # (0 + 0.5 * 1) / (1 + 0.5)
    assert np.isnan(y[2])
    assert y[3] == pytest.approx((4 + 0.5 * 0 + 0.25 * 1) / 1.75)


def test_telemanom_prune_drops_from_the_bottom_only():
    # chain 10, 9, 5 | normal 4.5: decreases 0.10, 0.44, 0.10 -> the last >= p is at rank 1
    assert telemanom_prune(np.array([5.0, 10.0, 9.0]), 4.5, p=0.13).tolist() == [False, True, True]
    # chain 10, 9.5, 5 | normal 4: decreases 0.05, 0.47, 0.20 -> everything stays, even the top
    # whose decrease to the next is below p
    assert telemanom_prune(np.array([10.0, 9.5, 5.0]), 4.0, p=0.13).all()
    # a decrease of exactly p keeps (1.0 -> 0.75 is exactly 0.25)
    assert telemanom_prune(np.array([1.0]), 0.75, p=0.25).tolist() == [True]
    assert telemanom_prune(np.array([1.0]), 0.8, p=0.25).tolist() == [False]
    # no normal value to compare with: the smallest peak is compared with 0 and stays
    assert telemanom_prune(np.array([1.0, 0.99]), 0.0, p=0.13).all()


def test_telemanom_epsilon_ties_go_to_the_larger_z():
    # 99 ones and one 100: mean 1.99, std sqrt(100.99 - 1.99^2) = 9.8504; the spike is 9.95 std
    # above the mean, so every z from 2.5 to 9.5 flags the same set with the same score and the
    # largest of them is chosen; 10.0 would flag nothing
    e = np.r_[np.ones(99), 100.0]
    assert telemanom_epsilon_z(e, error_buffer=1) == 9.5


def test_telemanom_epsilon_refuses_more_than_five_sequences():
    # six equal spikes far apart: every z that flags them gives 6 sequences > 5, so no z qualifies
    # and the limit 12 is returned; with five spikes the 5-sequence candidates are accepted
    e = np.ones(600)
    e[[50, 150, 250, 350, 450, 550]] = 50.0
    assert telemanom_epsilon_z(e, error_buffer=3) == 12.0
    e[550] = 1.0
    assert telemanom_epsilon_z(e, error_buffer=3) < 12.0


def test_telemanom_flags_a_burst_with_its_buffer_and_a_drop_only_with_inverse():
    rng = np.random.default_rng(1)
    s = 1 + 0.1 * np.abs(rng.normal(0, 1, 5000))
    s[:63] = np.nan
    s[3000:3060] += 5.0
    f = telemanom_flags(s)
    runs = np.flatnonzero(np.diff(np.r_[0, f.astype(np.int8), 0]))
    assert len(runs) == 2  # one sequence
    start, end = runs[0], runs[1] - 1
    assert 2800 < start < 3000 < 3060 < end < 3400  # the buffer reaches before the burst
    assert not f[:63].any()
    quiet = 1 + 0.1 * np.abs(rng.normal(0, 1, 5000))
    assert telemanom_flags(quiet).sum() == 0
    drop = 1 + 0.1 * np.abs(rng.normal(0, 1, 5000))
    drop[3000:3200] = 0.2
    assert telemanom_flags(drop, inverse=False).sum() == 0
    assert telemanom_flags(drop)[3050:3200].all()
