"""The repeat filter that keeps an outage's aiokafka errors from burying the log."""

from __future__ import annotations

import logging

from stream_detector.logs import RepeatFilter, quiet_repeats


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def record(msg, *args, name="aiokafka.conn", level=logging.ERROR):
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_first_passes_repeats_are_held_then_counted():
    clock = Clock()
    f = RepeatFilter(every=10, clock=clock)
    assert f.filter(record("Unable connect to node with id %s: %r", 111, "closed"))
    for _ in range(99):
        clock.t += 0.05
        assert not f.filter(record("Unable connect to node with id %s: %r", 111, "closed"))
    assert f.filter(record("Failed fetch messages from %s", 111)), "another message is not held back"
    clock.t = 10.0
    r = record("Unable connect to node with id %s: %r", 111, "closed")
    assert f.filter(r)
    assert r.getMessage() == "Unable connect to node with id 111: 'closed' [99 like it held back in the last 10 s]"
    r2 = record("Unable connect to node with id %s: %r", 111, "closed")
    assert not f.filter(r2)


def test_installed_on_child_loggers_through_the_handler_output(caplog):
    logging.getLogger("sdtest.child")  # exists before installation, as aiokafka's modules do
    quiet_repeats("sdtest", every=60)
    with caplog.at_level(logging.ERROR, logger="sdtest"):
        for _ in range(50):
            logging.getLogger("sdtest.child").error("connection to %s closed", "127.0.0.1:9092")
    assert [r.getMessage() for r in caplog.records] == ["connection to 127.0.0.1:9092 closed"]
