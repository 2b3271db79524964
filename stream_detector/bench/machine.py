"""What machine a benchmark ran on, named the same way in every report."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in ``/proc/cpuinfo`` on Linux), else what
    :mod:`platform` knows: speed figures differ threefold between machines of one kind."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """The machine description every report carries under ``host`` (the framework adds it), so
    that two reports can be compared knowing whether they ran on the same kind of machine."""
    import os

    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
