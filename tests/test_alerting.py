"""Alert episodes: open at the threshold, close below the release level, top channels, idempotent ids."""

import numpy as np

from stream_detector.runtime.episodes import EpisodeTracker


def feed(tracker, scores, channel=None, t0=100.0):
    events = []
    for i, s in enumerate(scores):
        cs = np.zeros(3)
        cs[channel if channel is not None else 0] = s
        events += tracker.update("sat-1", t0 + i, t0 + i + 10, s, cs)
    return events


def test_episode_opens_and_closes_with_hysteresis():
    t = EpisodeTracker(threshold=1.0, release=0.5, channels=["a", "b", "c"])
    events = feed(t, [0.1, 1.2, 0.8, 0.9, 1.5, 0.4, 0.2], channel=2)
    assert [e["event"] for e in events] == ["opened", "closed"]
    opened, closed = events
    assert opened["start"] == 101 and opened["end"] == 111
    assert closed["episode_id"] == opened["episode_id"] == "sat-1@111.000000"
    assert closed["peak_score"] == 1.5 and closed["windows"] == 4 and closed["end"] == 114
    assert closed["top_channels"][0] == {"channel": "c", "share": 1.0}
    assert not t.is_open


def test_quiet_time_delays_the_close():
    t = EpisodeTracker(1.0, 0.5, ["a", "b", "c"], quiet_seconds=2.5)
    events = feed(t, [2.0, 0.1, 0.1, 0.1, 0.1])
    # below release from window end 111; closes at the first window ending >= 113.5, i.e. 114
    assert [e["event"] for e in events] == ["opened", "closed"]
    assert t.state == {}
    t2 = EpisodeTracker(1.0, 0.5, ["a", "b", "c"], quiet_seconds=2.5)
    assert [e["event"] for e in feed(t2, [2.0, 0.1, 0.1, 0.7, 0.1, 0.1])] == ["opened"]  # 0.7 resets the quiet time


def test_state_round_trip_and_close_with_a_reason():
    t = EpisodeTracker(1.0, 0.5, ["a", "b", "c"])
    feed(t, [2.0])
    resumed = EpisodeTracker(1.0, 0.5, ["a", "b", "c"], state=dict(t.state))
    assert resumed.is_open
    closed = resumed.close("sat-1", "source_silent")
    assert closed["event"] == "closed" and closed["reason"] == "source_silent" and closed["peak_score"] == 2.0
    assert not resumed.is_open and resumed.state == {}
