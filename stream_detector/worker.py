"""Run the Faust worker from a config: ``stream-detector worker --config FILE``.

Topics are declared at the partition counts the app expects before the worker starts
(input, scores, alerts, dead letters and the state table's changelog), so a broker that
does not auto-create topics, or creates them with one partition, cannot leave the state
table co-partitioned wrongly with the input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .config import WorkerConfig
from .errors import UserError

log = logging.getLogger(__name__)


def topic_plan(cfg: WorkerConfig) -> dict[str, int]:
    """Every topic the worker uses, with its partition count."""
    from .app import STATE_TABLE

    return {cfg.topic_input: cfg.partitions, cfg.topic_scores: cfg.partitions, cfg.topic_alerts: cfg.partitions,
            cfg.topic_dead_letters: cfg.partitions, f"{cfg.app_id}-{STATE_TABLE}-changelog": cfg.partitions}


async def ensure_topics(cfg: WorkerConfig, timeout: float = 20.0) -> None:
    """Create the missing topics with aiokafka's admin client (existing ones are left alone)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap_servers, request_timeout_ms=int(timeout * 1000),
                                **cfg.aiokafka_security_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in topic_plan(cfg).items() if name not in existing]
        if missing:
            await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()


def run_worker(cfg: WorkerConfig, loglevel: str | None = None) -> None:
    """Load the models (refusing a bad repository now), declare topics and run Faust until stopped."""
    import faust

    from .app import create_app
    from .detector import Detector

    detector = Detector(cfg)
    asyncio.run(ensure_topics(cfg))
    app = create_app(cfg, detector)
    worker = faust.Worker(app, loglevel=(loglevel or cfg.log_level).upper(), quiet=True)
    worker.execute_from_commandline()


class WorkerProcess:
    """The real worker in a child process, as the demo, the tests and the benchmarks run it.

    ``start()`` writes the config to ``workdir/worker.yaml``, starts
    ``python -m stream_detector.cli worker`` with its output in ``workdir/worker.log``, and
    returns once Faust reports the worker ready and ``/metrics`` answers.  ``stop()`` sends
    SIGTERM (a clean shutdown that commits offsets); ``kill()`` sends SIGKILL (a crash).
    """

    def __init__(self, cfg: WorkerConfig, workdir, name: str = "worker"):
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}.log"
        self.proc = None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.cfg.metrics_host}:{self.cfg.metrics_port}/metrics"

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(self.cfg).items() if v is not None}
        if settings.get("routes"):
            settings["routes"] = [r.to_dict() for r in settings["routes"]]
        self.config_path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "stream_detector.cli", "worker", "--config",
                                          str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.wait_ready(timeout)
        return self

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(f"the worker exited with status {self.proc.returncode}:\n{self.tail()}")
            if "Worker]: Ready" in self.log_text():
                if not self.cfg.metrics_port:
                    return
                try:
                    urllib.request.urlopen(self.metrics_url, timeout=1).read()
                    return
                except OSError:
                    pass
            time.sleep(0.2)
        raise UserError(f"the worker was not ready within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def scrape(self) -> str:
        return urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()

    def _signal(self, sig: int, wait: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self, wait: float = 30.0) -> None:
        self._signal(signal.SIGTERM, wait)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, 5)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
