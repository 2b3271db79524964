"""The in-graph transforms against direct numpy computations of the same definitions."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_detector.training.transforms import WindowTransform, fit_normalisation  # noqa: E402


@pytest.fixture
def windows():
    rng = np.random.default_rng(3)
    return rng.normal(5.0, 3.0, (4, 16, 3)).astype(np.float32)


def numpy_normalise(w, stats):
    lo, hi = np.array(stats["min"]), np.array(stats["max"])
    return 2 * (w - lo) / (hi - lo) - 1


def test_normalisation_maps_training_range_to_unit_interval(windows):
    train = windows.reshape(-1, 3)
    stats = fit_normalisation(train)
    s = WindowTransform("sequence", stats, 16)(torch.from_numpy(windows)).numpy()
    assert s.min() == pytest.approx(-1, abs=1e-5) and s.max() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(s, numpy_normalise(windows, stats).transpose(0, 2, 1), atol=1e-5)


def test_constant_channel_does_not_divide_by_zero():
    data = np.ones((10, 2), np.float32)
    data[:, 1] = np.arange(10)
    stats = fit_normalisation(data)
    s = WindowTransform("sequence", stats, 10)(torch.from_numpy(data[None])).numpy()
    assert np.isfinite(s).all() and np.allclose(s[0, 0], -1.0)


def test_distance_plot_per_channel(windows):
    stats = fit_normalisation(windows.reshape(-1, 3))
    out = WindowTransform("distance-plot", stats, 16, plot_size=16)(torch.from_numpy(windows)).numpy()
    s = numpy_normalise(windows, stats)
    expected = np.abs(s[:, :, None, :] - s[:, None, :, :]).transpose(0, 3, 1, 2) - 1  # R_ij = |s_i - s_j|
    assert out.shape == (4, 3, 16, 16)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(out[:, :, np.arange(16), np.arange(16)], -1.0, atol=1e-6)  # zero diagonal


def test_distance_plot_multivariate_with_pooling(windows):
    stats = fit_normalisation(windows.reshape(-1, 3))
    out = WindowTransform("distance-plot-mv", stats, 16, plot_size=8)(torch.from_numpy(windows)).numpy()
    s = numpy_normalise(windows, stats).reshape(4, 8, 2, 3).mean(axis=2)  # pooled in pairs of points
    d = np.sqrt(((s[:, :, None, :] - s[:, None, :, :]) ** 2).sum(-1)) / np.sqrt(3) - 1
    assert out.shape == (4, 1, 8, 8)
    np.testing.assert_allclose(out[:, 0], d, atol=1e-4)


def test_multivariate_attribution_sums_to_residual_off_diagonal(windows):
    stats = fit_normalisation(windows.reshape(-1, 3))
    t = WindowTransform("distance-plot-mv", stats, 16, plot_size=16)
    residual = torch.ones(4, 1, 16, 16)
    shares = t.channel_attribution(torch.from_numpy(windows), residual).numpy()
    # every off-diagonal pixel's residual (1) is split among channels; the 16 diagonal pixels go to none
    np.testing.assert_allclose(shares.sum(1), (256 - 16) / 256, atol=1e-4)


def test_bad_window_for_plot_size_is_rejected():
    stats = fit_normalisation(np.random.rand(50, 2))
    with pytest.raises(ValueError, match="multiple of plot_size"):
        WindowTransform("distance-plot", stats, 48, plot_size=32)
