"""``stream-detector bench overload``: twice the measured maximum for 2 minutes, then nothing.

The runner is :mod:`stream_detector.bench.soak` with ``mode="overload"`` (defaults: 120 s at
twice the maximum, 10,000 sources); it reports the worker's peak memory and whether it stayed
bounded while the backlog grew in the broker, how long the worker took to drain it, and
whether every window of every point sent was scored (duplicates counted apart).
"""

from __future__ import annotations

import sys

from .soak import main as _main


def main(argv: list[str] | None = None) -> int:
    return _main(argv, mode="overload")


if __name__ == "__main__":
    sys.exit(main())
