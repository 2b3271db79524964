"""Where the benchmarks (and the tests that use real data) find the shared data sets.

Benchmark-only: the product reads the files it is given, never a data folder of its own.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """The shared benchmark data: ``$STREAM_DETECTOR_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("STREAM_DETECTOR_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
