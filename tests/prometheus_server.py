"""Start a real ``prometheus`` server for tests: free loopback port, temporary directory.

Reusable by any test that needs a live Prometheus (e.g. one that scrapes a running
worker and evaluates the project's rules)::

    from prometheus_server import PrometheusServer, prometheus_binary

    config = '''
    global: {scrape_interval: 1s, evaluation_interval: 1s}
    rule_files: [alert_rules.yml]
    scrape_configs:
      - job_name: stream-detector
        static_configs: [{targets: ["127.0.0.1:9108"]}]
    '''
    with PrometheusServer(config, files={"alert_rules.yml": RULES}) as prom:
        prom.wait_for('up{job="stream-detector"} == 1')
        prom.query("ALERTS")

The literal ``__PROMETHEUS_ADDRESS__`` in the configuration is replaced by the server's
own ``host:port`` (so it can scrape itself).  ``files`` are copied (Path) or written (str)
next to the configuration, so relative ``rule_files`` entries work.  Nothing here needs
anything beyond the standard library and the ``prometheus`` binary (Debian package
``prometheus``; ``scripts/install-tools.sh`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ADDRESS_TOKEN = "__PROMETHEUS_ADDRESS__"


def prometheus_binary() -> str | None:
    """Path of the ``prometheus`` binary (``$PROMETHEUS_BIN`` or PATH), or None."""
    return os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PrometheusError(RuntimeError):
    """Prometheus did not start, or an API call failed; the message has the server's log tail."""


class PrometheusServer:
    """A ``prometheus`` process on ``host:port`` with its config and TSDB in a temporary dir."""

    def __init__(self, config: str, files: dict[str, str | Path] | None = None, host: str = "127.0.0.1",
                 binary: str | None = None, workdir: str | Path | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.config = config
        self.files = dict(files or {})
        self.host = host
        self.binary = binary or prometheus_binary()
        self.extra_args = list(extra_args or [])
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 60.0, attempts: int = 3) -> "PrometheusServer":
        """Start and wait until ``/-/ready`` answers 200; retries on a port taken meanwhile."""
        if not self.binary:
            raise PrometheusError("prometheus binary not found: run scripts/install-tools.sh "
                                  "(Debian package 'prometheus') or set PROMETHEUS_BIN")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="prometheus-test-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            dest = self.workdir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, dest)
            else:
                dest.write_text(content)
        last_error = None
        for _ in range(attempts):
            self.port = free_port(self.host)
            try:
                self._launch(timeout)
                return self
            except PrometheusError as exc:
                last_error = exc
                self._terminate()
                if "address already in use" not in str(exc):
                    break
        self.stop()
        raise last_error  # type: ignore[misc]

    def _launch(self, timeout: float) -> None:
        assert self.workdir is not None
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(self.config.replace(ADDRESS_TOKEN, self.address))
        data = self.workdir / "data"
        log_path = self.workdir / "prometheus.log"
        self._log = open(log_path, "ab")
        cmd = [self.binary, f"--config.file={config_path}", f"--storage.tsdb.path={data}",
               f"--web.listen-address={self.address}", "--log.level=info", *self.extra_args]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with status {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.workdir is None or not (self.workdir / "prometheus.log").exists():
            return ""
        text = (self.workdir / "prometheus.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop the process and remove the temporary directory (if this object made it)."""
        self._terminate()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "PrometheusServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP API ---------------------------------------------------------------------------
    def api(self, path: str, **params) -> object:
        """GET ``/api/v1/<path>``; returns the ``data`` field or raises PrometheusError."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{url}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant query; returns the ``result`` list (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        data = self.api("query", query=expr)
        return data["result"]  # type: ignore[index]

    def wait_for(self, expr: str, timeout: float = 30.0, interval: float = 0.5) -> list[dict]:
        """Poll ``expr`` until it returns at least one series; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise PrometheusError(f"{expr!r} returned nothing within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(interval)
