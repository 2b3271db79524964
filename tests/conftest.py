"""Shared fixtures: tiny models trained in seconds on synthetic data, and the shared data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_detector.data import data_root


def synthetic_series(n: int = 1200, seed: int = 0) -> np.ndarray:
    """Three smooth periodic channels with a little noise: easy normal behaviour."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([np.sin(t / 8.0), np.cos(t / 5.0), 0.5 * np.sin(t / 13.0) + 0.2],
                    axis=1).astype(np.float32) + rng.normal(0, 0.02, (n, 3)).astype(np.float32)


def tiny_model(out: Path, transform: str = "sequence", window: int = 16, encoder_mode: str = "izi_f") -> dict:
    pytest.importorskip("torch")
    from stream_detector.fit import fit_series_model
    from stream_detector.training import TrainConfig

    cfg = TrainConfig(iterations=20, encoder_iterations=40, encoder_mode=encoder_mode, width=8, latent_dim=4, seed=1)
    return fit_series_model(synthetic_series(), ["a", "b", "c"], out, window=window, stride=4, transform=transform,
                            cfg=cfg, plot_size=8, name="tiny", version="1", progress=False)


@pytest.fixture(scope="session")
def sequence_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model-seq")
    tiny_model(out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder not found at {root} (set STREAM_DETECTOR_DATA)")
    return root
