"""Run the Faust worker from a config: ``stream-detector worker --config FILE``.

Topics are declared at the partition counts the app expects before the worker starts
(input, scores, alerts, dead letters and the state table's changelog), so a broker that
does not auto-create topics, or creates them with one partition, cannot leave the state
table co-partitioned wrongly with the input.
"""

from __future__ import annotations

import asyncio
import logging

from .config import WorkerConfig
from ..errors import UserError

log = logging.getLogger(__name__)


def topic_plan(cfg: WorkerConfig) -> dict[str, int]:
    """Every topic the worker uses, with its partition count."""
    from .app import STATE_TABLE

    return {cfg.topic_input: cfg.partitions, cfg.topic_scores: cfg.partitions, cfg.topic_alerts: cfg.partitions,
            cfg.topic_dead_letters: cfg.partitions, f"{cfg.app_id}-{STATE_TABLE}-changelog": cfg.partitions}


async def ensure_topics(cfg: WorkerConfig, timeout: float = 20.0) -> None:
    """Create the missing topics with aiokafka's admin client.

    An existing topic is never changed, and one whose partition count differs from the
    configuration's is refused with a :class:`UserError` (the state table's changelog must be
    co-partitioned with the input).  A broker that cannot be reached, whose TLS certificate is
    not trusted, or that refuses the SASL login is a :class:`UserError` saying which.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap_servers, request_timeout_ms=int(timeout * 1000),
                                **cfg.aiokafka_security_kwargs())
    try:
        await admin.start()
    except Exception as exc:  # aiokafka logs the cause and raises "Unable to bootstrap", or a bare KeyError
        try:
            await admin.close()
        except Exception:
            pass
        raise UserError(await explain_connect_failure(cfg, exc, timeout)) from None
    try:
        plan = topic_plan(cfg)
        existing = set(await admin.list_topics())
        present = [name for name in plan if name in existing]
        if present:
            have = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(present)
                    if t["error_code"] == 0}
            wrong = {name: have[name] for name in present if name in have and have[name] != plan[name]}
            if wrong:
                raise UserError(_partition_mismatch(wrong, plan, cfg))
        missing = [NewTopic(name, n, 1) for name, n in plan.items() if name not in existing]
        if missing:
            await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()


def _partition_mismatch(wrong: dict[str, int], plan: dict[str, int], cfg: WorkerConfig) -> str:
    topics = "; ".join(f"topic {name!r} exists with {n} partition{'s' * (n != 1)}, expected {plan[name]}"
                       for name, n in wrong.items())
    counts = set(wrong.values())
    advice = f"set 'partitions: {counts.pop()}' in the config if every topic of the worker has that many, or " \
        if len(counts) == 1 else ""
    return (f"{topics} (config key 'partitions' is {cfg.partitions}). The worker does not change existing topics "
            f"and will not run with a different partition count (its state changelog must be co-partitioned with "
            f"the input): {advice}delete the topic{'s' * (len(wrong) > 1)} ({', '.join(wrong)}) so that the worker "
            f"creates {'them' if len(wrong) > 1 else 'it'} with {cfg.partitions}.")


async def explain_connect_failure(cfg: WorkerConfig, exc: BaseException, timeout: float = 20.0) -> str:
    """Why no connection to the brokers: one more connection to the first bootstrap server, as
    aiokafka makes it, catches the cause that aiokafka's client logs but does not raise."""
    import ssl

    from aiokafka import errors as kafka_errors
    from aiokafka.conn import create_conn

    where = cfg.bootstrap_servers[0]
    host, _, port = where.rpartition(":")
    proto = cfg.security_protocol
    try:
        probe_timeout = min(timeout, 10.0)
        conn = await asyncio.wait_for(create_conn(host.strip("[]"), int(port),
                                                  request_timeout_ms=int(probe_timeout * 1000),
                                                  **cfg.aiokafka_security_kwargs()), probe_timeout)
        conn.close()
        err: BaseException = exc
    except Exception as probe:
        err = probe
    sasl = proto.startswith("SASL")
    if isinstance(err, ssl.SSLCertVerificationError):
        cafile = cfg.ssl_cafile or "not set, so the system's CA certificates"
        return (f"TLS: the certificate of the Kafka broker at {where} is not trusted ({err.verify_message}). "
                f"Check ssl_cafile ({cafile}): it must hold the CA that signed the broker's certificate, and the "
                f"certificate must name the host in 'broker'.")
    tls = proto in ("SSL", "SASL_SSL")
    # a TLS client to a plaintext listener: no handshake answer, or the connection is reset
    if isinstance(err, ssl.SSLError) or (tls and err is not exc and isinstance(err, (asyncio.TimeoutError,
                                                                                       ConnectionResetError))):
        why = getattr(err, "reason", None) or str(err) or type(err).__name__
        return (f"TLS handshake with the Kafka broker at {where} failed ({why}): is that listener TLS, as "
                f"security_protocol {proto} says?")
    if isinstance(err, kafka_errors.UnsupportedSaslMechanismError):
        return (f"authentication failed: the Kafka broker at {where} does not offer SASL mechanism "
                f"{cfg.sasl_mechanism}; check sasl_mechanism.")
    if sasl and (isinstance(err, (kafka_errors.SaslAuthenticationFailed, kafka_errors.IllegalSaslStateError))
                 or not isinstance(err, (OSError, asyncio.TimeoutError, kafka_errors.KafkaError))):
        if isinstance(err, kafka_errors.KafkaError):
            detail = err.args[0] if err.args else type(err).__name__
        else:  # aiokafka's SCRAM client fails on a server-final message that carries an error, not a signature
            detail = f"the SCRAM exchange ended without the server's signature: {type(err).__name__} {err}"
        return (f"authentication failed: the Kafka broker at {where} refused the SASL {cfg.sasl_mechanism} login "
                f"as user {cfg.sasl_username!r} ({detail}). Check sasl_username and sasl_password.")
    if isinstance(err, kafka_errors.KafkaConnectionError):
        mech = f" and sasl_mechanism ({cfg.sasl_mechanism})" if sasl else ""
        return (f"cannot connect to the Kafka broker at {where}: {err}. A broker closes the connection of a client "
                f"that does not speak the security protocol or SASL mechanism it wants: check security_protocol "
                f"({proto}){mech}.")
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
    return f"cannot connect to the Kafka broker at {where}: {reason}. Is it running, and is 'broker' right?"


def run_worker(cfg: WorkerConfig, loglevel: str | None = None) -> None:
    """Load the models (refusing a bad repository now), declare topics and run Faust until stopped."""
    import faust

    from .app import create_app
    from .detector import Detector
    from ..logs import quiet_repeats

    detector = Detector(cfg)
    asyncio.run(ensure_topics(cfg))
    app = create_app(cfg, detector)
    quiet_repeats("aiokafka")  # after create_app has imported every aiokafka module
    worker = faust.Worker(app, loglevel=(loglevel or cfg.log_level).upper(), quiet=True)
    worker.execute_from_commandline()
