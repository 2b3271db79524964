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


def test_range_excess_sees_points_and_window_means_outside_the_training_ranges():
    """Zero on every training window; a point beyond the points' range counts (0.5 half-ranges
    beyond: 0.25 over the window's length); a flat level inside the points' range but above
    every training window's mean counts through the mean part only, and only when the
    statistics carry the window-mean range."""
    from stream_detector.training.transforms import fit_window_mean_range

    t = np.arange(400)
    values = np.stack([np.sin(t / 8.0), np.cos(t / 5.0)], axis=1).astype(np.float32)
    train = np.lib.stride_tricks.sliding_window_view(values, 16, axis=0).transpose(0, 2, 1)  # [N, 16, 2]
    stats = fit_normalisation(values)
    with_means = WindowTransform("distance-plot", {**stats, **fit_window_mean_range(train)}, 16, 16)
    points_only = WindowTransform("distance-plot", stats, 16, 16)
    assert float(with_means.range_excess(torch.from_numpy(np.ascontiguousarray(train))).max()) < 1e-9  # rounding
    spike = train[:1].copy()
    spike[0, 3, 1] = float(stats["max"][1]) + 0.5 * (stats["max"][1] - stats["min"][1]) / 2  # half a half-range up
    e = points_only.range_excess(torch.from_numpy(spike))
    assert float(e[0, 1]) == pytest.approx(0.25 / 16, rel=1e-4) and float(e[0, 0]) == 0.0
    flat = np.full((1, 16, 2), 0.0, dtype=np.float32)
    flat[0, :, 0] = 0.95 * float(stats["max"][0])  # inside the points' range, above every window mean
    assert float(points_only.range_excess(torch.from_numpy(flat)).max()) == 0.0
    assert float(with_means.range_excess(torch.from_numpy(flat))[0, 0]) > 0.01
    assert float(with_means.range_excess(torch.from_numpy(flat))[0, 1]) == 0.0
