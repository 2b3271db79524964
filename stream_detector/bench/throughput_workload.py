"""``bench throughput``'s workload: the synthetic fleet's series and messages, and the models
it is served with (the bundled sequence model, or small ones trained at SMAP shape).

Kept apart from the runs (:mod:`.throughput_runs`) and the report (:mod:`.throughput_report`)
so that what is sent can be read, and reused by ``bench soak``, without the Kafka side.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgpack
import numpy as np


T0 = 1.7e9
CHANNELS_SMAP = 25

BUNDLED_SEQUENCE = Path(__file__).resolve().parents[2] / "models" / "smap-demo" / "1"
# name -> (transform, window, channels, plot_size); "sequence" is the bundled demo model
# (univariate, W = 64, trained on SMAP), the others are trained here at SMAP shape.
MODELS: dict[str, tuple[str, int, int, int]] = {
    "sequence": ("sequence", 64, 1, 32),
    "distance-plot": ("distance-plot", 64, CHANNELS_SMAP, 32),
    "distance-plot-mv": ("distance-plot-mv", 64, CHANNELS_SMAP, 32),
    "sequence-25": ("sequence", 64, CHANNELS_SMAP, 32),
}
DEFAULT_MODELS = ("sequence", "distance-plot", "distance-plot-mv")


# ----------------------------------------------------------------------------- data and models
def fleet_series(n: int, channels: int, seed: int) -> np.ndarray:
    """Smooth periodic channels with noise, ``[n, channels]`` float32 (normal behaviour)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    periods = rng.uniform(6.0, 60.0, channels)[None, :]
    phase = rng.uniform(0, 2 * np.pi, channels)[None, :]
    return (np.sin(t / periods + phase) + rng.normal(0, 0.05, (n, channels))).astype(np.float32)


def channel_names(c: int) -> list[str]:
    return [f"ch{j:02d}" for j in range(c)]


def bench_model(root: Path, name: str) -> Path:
    """The model directory for one of :data:`MODELS` (bundled, or trained into ``root``)."""
    if name == "sequence" and (BUNDLED_SEQUENCE / "model.json").exists():
        return BUNDLED_SEQUENCE
    transform, window, channels, plot = MODELS[name]
    return ensure_model(root, name, transform, window, channels, plot)


def ensure_model(root: Path, name: str, transform: str, window: int, channels: int, plot_size: int = 32,
                 stride: int = 8, iterations: int = 5) -> Path:
    """A small real model (production network sizes, few training steps), cached in ``root/name``."""
    out = root / name
    if (out / "model.json").exists() and (out / "model.onnx").exists():
        return out
    from ..training.fit import fit_series_model
    from ..training.wgan import TrainConfig

    cfg = TrainConfig(iterations=iterations, encoder_iterations=iterations, seed=0)
    fit_series_model(fleet_series(max(20 * window, 2000), channels, seed=1), channel_names(channels), out,
                     window=window, stride=stride, transform=transform, cfg=cfg, plot_size=plot_size,
                     name=f"bench-{name}", version="1", progress=False, max_train_windows=512)
    return out


def preload_messages(sources: int, points: int, channels: list[str], batch: int, seed: int = 0,
                     dt: float = 0.01) -> list[tuple[bytes, bytes]]:
    """``points`` in total over ``sources`` sources, as single-point (``batch`` 1) or batch messages,
    round-robin across sources (each source's messages in time order)."""
    per_source = max(1, points // sources)
    data = fleet_series(per_source, len(channels), seed)
    msgs: list[tuple[bytes, bytes]] = []
    packb = msgpack.packb
    cols = [data[:, j].astype(np.float64) for j in range(len(channels))]
    keys = [f"src-{i:05d}".encode() for i in range(sources)]
    for start in range(0, per_source, batch):
        stop = min(start + batch, per_source)
        for s, key in enumerate(keys):
            ts0 = T0 + s * 1e-4  # sources slightly out of phase
            if batch == 1:
                payload = packb({"ts": ts0 + start * dt, "values": {c: float(col[start]) for c, col in zip(channels, cols)}})
            else:
                payload = packb({"ts": (ts0 + dt * np.arange(start, stop)).tolist(),
                                 "values": {c: col[start:stop].tolist() for c, col in zip(channels, cols)}})
            msgs.append((key, payload))
    return msgs


def expected_windows(points_per_source: int, sources: int, window: int, stride: int) -> int:
    return sources * (0 if points_per_source < window else (points_per_source - window) // stride + 1)


def make_repository(root: Path, names: list[str], model: Path) -> Path:
    """A model repository ``root/<name>/1`` with every name a copy of ``model`` (symlinks where
    the file system has them): each name is its own model version, so the worker loads one
    ONNX Runtime session per name."""
    if root.exists():
        shutil.rmtree(root)
    for name in names:
        (root / name).mkdir(parents=True)
        target = root / name / "1"
        try:
            target.symlink_to(model.resolve(), target_is_directory=True)
        except OSError:
            target.mkdir()
            for f in ("model.onnx", "model.json"):
                shutil.copy2(model / f, target / f)
    return root
