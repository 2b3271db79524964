"""The real worker in a child process, for the benchmarks, the tests and the demo.

Not part of the worker itself (``stream-detector worker`` runs in the foreground under
whatever supervises it); this drives one from outside, as an operator's supervisor would:
write its config, start ``python -m stream_detector.cli worker``, wait until it is ready,
scrape ``/metrics`` and ``/healthz``, stop it cleanly or kill it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError
from .runtime.config import WorkerConfig

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """The real worker in a child process, as the demo, the tests and the benchmarks run it.

    ``start()`` writes the config to ``workdir/worker.yaml``, starts
    ``python -m stream_detector.cli worker`` with its output in ``workdir/worker.log``, and
    returns once Faust reports the worker ready and ``/metrics`` answers.  ``stop()`` sends
    SIGTERM (a clean shutdown that commits offsets); ``kill()`` sends SIGKILL (a crash).
    """

    def __init__(self, cfg: WorkerConfig, workdir, name: str = "worker", module: str = "stream_detector.cli"):
        self.cfg = cfg
        self.module = module  # what ``python -m`` runs (a test may wrap the CLI to inject a fault)
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
            self.proc = subprocess.Popen([sys.executable, "-m", self.module, "worker", "--config",
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

    def scrape(self, names: Sequence[str] = ()) -> str:
        """``/metrics``, or only the series of ``names`` (prometheus_client's ``name[]`` filter:
        the worker then collects just those, which matters when a benchmark polls it 20 times
        a second; a full scrape with Faust's per-partition series costs the worker ~1 ms)."""
        url = self.metrics_url
        if names:
            url += "?" + urllib.parse.urlencode([("name[]", n) for n in names])
        return urllib.request.urlopen(url, timeout=5).read().decode()

    def health(self) -> tuple[int, dict]:
        """``(HTTP status, body)`` of the worker's ``/healthz``."""
        url = self.metrics_url.rsplit("/", 1)[0] + "/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

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
