"""Shared fixtures: the committed tiny model (no torch needed), tiny models trained in seconds on
synthetic data (torch), and the shared data folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from stream_detector.bench.datasets import data_root

#: Scripts run as child processes, never collected: ``--doctest-modules`` (pyproject) would import
#: faulty_worker.py into the test process, where its fault injection patches the Detector.
collect_ignore = ["faulty_worker.py", "prometheus_server.py"]

#: A model directory (model.onnx + model.json) built once by tests/data/build_tiny_model.py
#: with ``tiny_model`` below; see tests/data/README.md.  The worker tests use it, so they run
#: on an install without PyTorch, as the worker does.
TINY_MODEL = Path(__file__).resolve().parent / "data" / "tiny-sequence"


def synthetic_series(n: int = 1200, seed: int = 0) -> np.ndarray:
    """Three smooth periodic channels with a little noise: easy normal behaviour."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([np.sin(t / 8.0), np.cos(t / 5.0), 0.5 * np.sin(t / 13.0) + 0.2],
                    axis=1).astype(np.float32) + rng.normal(0, 0.02, (n, 3)).astype(np.float32)


def tiny_model(out: Path, transform: str = "sequence", window: int = 16, encoder_mode: str = "izi_f") -> dict:
    pytest.importorskip("torch")
    from stream_detector.training.fit import fit_series_model
    from stream_detector.training.wgan import TrainConfig

    cfg = TrainConfig(iterations=20, encoder_iterations=40, encoder_mode=encoder_mode, width=8, latent_dim=4, seed=1)
    return fit_series_model(synthetic_series(), ["a", "b", "c"], out, window=window, stride=4, transform=transform,
                            cfg=cfg, plot_size=8, name="tiny", version="1", progress=False)


def expected_provider(requested: list[str] | None = None) -> str:
    """The ONNX Runtime provider a scorer must run on: the first of the requested providers that
    this onnxruntime build reports available.  Unless told otherwise the worker requests CUDA
    then CPU when an NVIDIA GPU is visible (the driver's /proc entry or CUDA_VISIBLE_DEVICES),
    and CPU alone otherwise."""
    import onnxruntime as ort

    if requested is None:
        gpu = os.path.exists("/proc/driver/nvidia") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
        requested = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    return next(p for p in requested if p in available)


@pytest.fixture(scope="session")
def sequence_model(tmp_path_factory) -> Path:
    """The committed tiny model (channels a, b, c; window 16, stride 4), copied so that no test
    can alter the committed files.  Needs no PyTorch."""
    out = tmp_path_factory.mktemp("model-seq") / "tiny-sequence"
    shutil.copytree(TINY_MODEL, out)
    return out


@pytest.fixture(scope="session")
def trained_sequence_model(tmp_path_factory) -> Path:
    """The same recipe trained now by the current training and export code (needs PyTorch): for
    the tests of training and export themselves."""
    out = tmp_path_factory.mktemp("model-seq-trained")
    tiny_model(out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder not found at {root} (set STREAM_DETECTOR_DATA)")
    return root
