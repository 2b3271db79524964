"""The one-minute versions of ``bench soak`` and ``bench overload``, and the accounting they rely on.

The full runs (10,000 sources; 20 minutes at half the measured maximum; 2 minutes at twice
it) write docs/benchmarks/soak.* and overload.*; here both runners go through the CLI with
200 sources for a few seconds, on the real worker and the embedded broker, and the JSON must
show what the full runs claim: every window of every point sent scored (counted exactly,
duplicates apart), the series sampled, the RSS growth computed from them, and the consumer lag
back to 0 after the overload.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_detector import cli
from stream_detector.bench.soak import BatchEncoder, Fleet, account_windows, latency_slices, log_levels
from stream_detector.runtime.codec import encode_points


def test_batch_encoder_writes_what_encode_points_writes():
    rng = np.random.default_rng(0)
    for channels, batch in ((["value"], 64), (["a" * 40, "b", "c"], 20)):
        ts = 1.7e9 + np.sort(rng.random((6, batch)), axis=1)
        vals = rng.normal(size=(6, batch, len(channels))) * 1e6
        got = BatchEncoder(channels, batch).encode(ts, vals)
        assert got == [encode_points(ts[i], {c: vals[i, :, j] for j, c in enumerate(channels)}) for i in range(6)]


def test_fleet_sends_each_source_on_its_schedule():
    fleet = Fleet(50, ["value"], points_per_s=500.0, batch=8, t0=1000.0, partitions=4)  # 10 points/s a source
    s, first = fleet.due(1010.0, limit=10**6)
    msgs = fleet.messages(s, first)
    n = np.bincount(s, minlength=50)
    assert len(msgs) == n.sum() and (fleet.sent == 8 * n).all() and set(n.tolist()) <= {12, 13}
    # each source sent exactly the messages whose last point is due, in order from point 0
    src = np.arange(50)
    assert (fleet.ts(src, fleet.sent - 1) <= 1010.0).all() and (fleet.ts(src, fleet.sent + 7) > 1010.0).all()
    assert sorted(zip(s.tolist(), first.tolist())) == [(i, 8 * j) for i in range(50) for j in range(n[i])]
    assert fleet.due(1010.0, limit=10**6)[0].size == 0  # nothing sent twice
    assert set(fleet.partition.tolist()) <= {0, 1, 2, 3} and len(set(fleet.partition.tolist())) > 1


def test_account_windows_counts_missing_duplicate_and_unexpected_records():
    fleet = Fleet(3, ["value"], points_per_s=30.0, batch=8, t0=1000.0, partitions=4)  # dt = 0.1 s
    fleet.sent[:] = [80, 64, 40]  # W = 16, stride 4: 17, 13 and 7 windows
    window, stride = 16, 4
    src, start = [], []
    for s, n in enumerate(fleet.sent):
        for k in range(0, n - window + 1, stride):
            src.append(s)
            start.append(float(fleet.ts(np.array(s), np.array(k))))
    src, start = np.array(src), np.array(start)
    summary, valid, _ = account_windows(fleet, window, stride, src, start)
    assert summary["expected"] == 37 and summary["scored_unique"] == 37 and summary["every_window_scored"]
    assert valid.all()
    # drop one window, repeat two, and add one off the stride grid and one past the points sent
    keep = np.r_[0:10, 11:37, 3, 20]
    src2 = np.r_[src[keep], 0, 2]
    start2 = np.r_[start[keep], fleet.ts(np.array(0), np.array(2)), fleet.ts(np.array(2), np.array(28))]
    summary, valid, _ = account_windows(fleet, window, stride, src2, start2)
    assert (summary["missing"], summary["duplicates"], summary["unexpected"]) == (1, 2, 2)
    assert summary["scored_unique"] == 36 and not summary["every_window_scored"]


def test_log_levels_counts_faust_lines_and_keeps_distinct_problems():
    text = "\n".join([
        "[2026-12-02 11:23:40,401] [3020] [INFO] [^Worker]: Starting... ",
        "[2026-12-02 11:31:23,844] [3020] [ERROR] [^---Thread]: Stream stalled on partition=3 (started 7.72 minutes ago).",
        "There are multiple possible explanations for this:",  # a continuation line, not a record
        "[2026-12-02 11:31:30,844] [3020] [ERROR] [^---Thread]: Stream stalled on partition=2 (started 7.84 minutes ago).",
        "[2026-12-02 11:31:31,000] [3020] [WARNING] Heartbeat failed",
    ])
    got = log_levels(text)
    assert got["lines_by_level"] == {"INFO": 1, "ERROR": 2, "WARNING": 1}
    assert got["first_warnings_and_errors"] == [
        "[^---Thread]: Stream stalled on partition=N (started N minutes ago).", "Heartbeat failed"]


def test_overload_memory_is_bounded_when_it_does_not_follow_the_backlog():
    from stream_detector.bench.soak import rss_bounded

    mib = 2**20
    # a ramp-up (0-20 s), then flat while the backlog grows and drains: bounded
    lag = [0, 100, 200, 400, 800, 1600, 3200, 6400, 3200, 800, 0]
    flat = [{"t": 10.0 * i, "worker_rss_bytes": (100 + min(i, 2) * 50) * mib, "lag_processed": lag[i]}
            for i in range(len(lag))]
    got = rss_bounded(flat, duration=70, w=20)
    assert got["bounded"] and abs(got["bytes_per_backlog_message"]) < 1e-6
    assert got["max_backlog_messages"] == 6400
    # 10 kB per message of backlog held in the worker: 62.5 MiB at 6,400 messages, 31 % of 200 MiB
    holds = [{**r, "worker_rss_bytes": 200 * mib + 10_000 * r["lag_processed"]} for r in flat]
    got = rss_bounded(holds, duration=70, w=20)
    assert not got["bounded"] and got["bytes_per_backlog_message"] == pytest.approx(10_000)
    assert got["rss_for_max_backlog_bytes"] == pytest.approx(64e6)


def test_latency_slices_are_percentiles_of_each_slice():
    pub = np.array([0.5, 1.0, 1.5, 6.0, 7.0])
    lat = np.array([0.1, 0.2, 0.3, 1.0, 3.0])
    sl = latency_slices(0.0, pub, lat, 5.0)
    assert [x["windows"] for x in sl] == [3, 2]
    assert sl[0]["p50"] == pytest.approx(0.2) and sl[1]["max"] == pytest.approx(3.0)
    assert sl[1]["p99"] == pytest.approx(np.percentile([1.0, 3.0], 99))


def _median_rss(samples, lo, hi):
    return float(np.median([r["worker_rss_bytes"] for r in samples if lo <= r["t"] <= hi]))


def _expected_windows(res) -> int:
    w, s = res["settings"]["window"], res["settings"]["stride"]
    return sum(n * ((int(p) - w) // s + 1) for p, n in res["windows"]["points_per_source"].items() if int(p) >= w)


def _check_run(res, sources: int) -> None:
    win = res["windows"]
    assert win["expected"] == _expected_windows(res) > 0
    assert sum(win["points_per_source"].values()) == sources
    assert win["every_window_scored"], win
    assert win["missing"] == 0 and win["unexpected"] == 0 and win["scored_unique"] == win["expected"]
    assert win["records"] == win["expected"] + win["duplicates"]
    assert res["points"]["ok"] == res["points"]["sent"] == res["producer"]["points"] > 0
    assert res["drain"]["caught_up"]
    assert res["lag"]["returned_to_zero"] and res["lag"]["final_committed"] == 0
    samples = res["samples"]
    assert [r["t"] for r in samples] == sorted(r["t"] for r in samples)
    assert all(r["worker_rss_bytes"] > 0 and r["broker_rss_bytes"] > 0 for r in samples)
    assert samples[-1]["phase"] == "drain" and samples[-1]["lag_processed"] == 0
    assert samples[-1]["windows_scored"] >= win["expected"]
    slices = [x for x in res["latency"]["slices"] if x["windows"]]
    assert len(slices) >= 2 and sum(x["windows"] for x in res["latency"]["slices"]) == win["records"]
    assert all(0 < x["p50"] <= x["p99"] <= x["max"] for x in slices)
    assert res["machine"]["cpu_model"]


@pytest.mark.slow
def test_soak_and_overload_one_minute(tmp_path):
    out = tmp_path / "out"
    # the tests' consumer-group timings: the production ones take ~30 s to join the group
    fast = [f"--set=broker_{k}_seconds={v}" for k, v in (("session_timeout", 6), ("heartbeat_interval", 1),
                                                          ("rebalance_timeout", 3))]
    common = ["--sources", "200", "--sample-seconds", "1", "--out", str(out), *fast]
    assert cli.main(["bench", "soak", "--duration", "20", "--slice-seconds", "5", *common]) == 0
    soak = json.loads((out / "soak.json").read_text())
    mx = soak["max"]
    assert mx["measured"] and mx["points_per_s"] > 0 and mx["run"]["windows"] == mx["run"]["expected_windows"]
    assert soak["offered"]["points_per_s"] == pytest.approx(0.5 * mx["points_per_s"])
    _check_run(soak, 200)
    live = [r for r in soak["samples"] if r["phase"] == "live"]
    assert len(live) >= 15 and live[-1]["t"] >= 18
    rss = soak["rss"]  # recomputed from the samples the JSON holds
    w = rss["warmup_seconds"]
    period = soak["settings"]["batch_points"] / soak["offered"]["points_per_s_per_source"]
    assert w == pytest.approx(min(max(0.15 * 20, 2 * period), 10))
    assert rss["rss_after_warmup_bytes"] == _median_rss(live, w, w + (20 - w) / 10)
    assert rss["rss_at_end_bytes"] == _median_rss(live, 20 - (20 - w) / 10, 20)
    assert rss["growth"] == pytest.approx(rss["rss_at_end_bytes"] / rss["rss_after_warmup_bytes"] - 1)
    assert isinstance(rss["target_met"], bool)
    md = (out / "soak.md").read_text()
    assert soak["machine"]["cpu_model"] in md and "stream-detector bench soak --duration 20" in md
    assert (out / "soak.png").stat().st_size > 10_000
    # the worker's own log, counted: a clean short run logs no errors (Faust's stall check included)
    # the broker's own speed at the head of the input topic, sampled beside the worker
    fetches = [r["broker_tail_fetch_ms"] for r in live if r.get("broker_tail_fetch_ms") is not None]
    assert len(fetches) >= 10 and all(0 < f < 30_000 for f in fetches)
    assert soak["settings"]["producer_tick_s"] == 0.01
    lv = soak["worker_log"]["lines_by_level"]
    assert lv.get("INFO", 0) > 10 and lv.get("ERROR", 0) == 0, soak["worker_log"]
    assert "Worker log: " in md

    # the overload at twice the maximum the soak measured, for 10 s, then nothing
    assert cli.main(["bench", "overload", "--duration", "10", "--max-points-per-s", str(mx["points_per_s"]),
                     *common]) == 0
    ov = json.loads((out / "overload.json").read_text())
    assert ov["max"] == {"measured": False, "points_per_s": mx["points_per_s"]}
    assert ov["offered"]["points_per_s"] == pytest.approx(2 * mx["points_per_s"])
    _check_run(ov, 200)
    # a backlog built up while the producer sent (the worker fell behind) and was drained after
    assert max(r["lag_processed"] for r in ov["samples"] if r["phase"] == "live") > 0
    assert ov["drain"]["seconds_after_live_phase"] >= 0
    b = ov["rss"]
    assert b["peak_rss_bytes"] == max(r["worker_rss_bytes"] for r in ov["samples"])
    assert b["growth"] == pytest.approx(b["peak_rss_after_middle_bytes"] / b["rss_before_middle_bytes"] - 1)
    assert isinstance(b["bounded"], bool) and b["peak_rss_bytes"] < 1 << 30
    assert b["backlog_share"] == pytest.approx(b["rss_for_max_backlog_bytes"] / b["rss_median_bytes"])
    assert "Memory bounded" in (out / "overload.md").read_text()
