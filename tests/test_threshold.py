"""Label-free thresholds: quantile, POT (extreme values), hysteresis episodes, telemanom's dynamic threshold."""

import numpy as np
import pytest

from stream_detector.threshold import (dynamic_threshold_flags, ewma, hysteresis_flags, pot_threshold,
                                       quantile_threshold)


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
