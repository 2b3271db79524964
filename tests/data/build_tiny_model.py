"""Rebuild the committed tiny model ``tests/data/tiny-sequence/`` (model.onnx + model.json).

It is the model the ``tiny_model`` helper of ``tests/conftest.py`` trains (the project's own
training and export code, ``stream_detector.training.fit.fit_series_model``, at a tiny size: widths 8,
latent 4, 20 WGAN-GP steps, 40 encoder steps, seed 1) on ``synthetic_series()``, channels
a, b, c, window 16, stride 4.  Needs the ``train`` extra (PyTorch, onnx).  See README.md.

    .venv/bin/python tests/data/build_tiny_model.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for conftest's tiny_model

from conftest import tiny_model  # noqa: E402

KEEP = ("model.onnx", "model.json")  # a model directory as the worker reads it; the training plot is left out


def main(out: Path = HERE / "tiny-sequence") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tiny_model(Path(tmp))
        out.mkdir(parents=True, exist_ok=True)
        for name in KEEP:
            shutil.copy(Path(tmp) / name, out / name)
    for name in KEEP:
        print(f"{out / name}: {(out / name).stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "tiny-sequence")
