"""Worker configuration: defaults, then a YAML file, then ``STREAM_DETECTOR_*`` variables.

Every setting is a flat key (the field names of :class:`WorkerConfig`); the environment
variable for key ``batch_max_windows`` is ``STREAM_DETECTOR_BATCH_MAX_WINDOWS``.  The
environment overrides the file.  An unknown key, a wrong type or an invalid value raises
:class:`ConfigError`, whose message names the key (and the variable or file it came from)
so the operator knows exactly what to fix::

    config key 'batch_max_windows' (from STREAM_DETECTOR_BATCH_MAX_WINDOWS): expected a
    positive integer, got 'abc'

Relative paths in the file (``model_dir``, ``ssl_*``) are relative to the file's folder;
relative paths from the environment are relative to the working directory.  Environment
values are text: lists are comma-separated, booleans are true/false/1/0/yes/no, and an
empty value means "unset" for optional keys.

Example file::

    broker: kafka://kafka-1:9092;kafka://kafka-2:9092
    security_protocol: SASL_SSL
    sasl_mechanism: SCRAM-SHA-512
    sasl_username: detector
    model_repository: models          # <name>/<version>/ folders; or model_dir for one model
    routes:
      - {sources: "A-*", model: smap-a, threshold: {method: telemanom}}
      - {sources: "re:E-\\d+", model: smap-e}
      - {sources: "*", model: smap-demo}   # the default
    batch_max_windows: 64
    max_gap_seconds: 30
    allowed_sources: [A-1, A-2, E-7]
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["ConfigError", "WorkerConfig", "load_config", "ENV_PREFIX", "CONFIG_PATH_ENV", "env_name"]

ENV_PREFIX = "STREAM_DETECTOR_"
#: Names the config file when ``load_config`` gets no path (not itself a setting).
CONFIG_PATH_ENV = "STREAM_DETECTOR_CONFIG"
#: ``STREAM_DETECTOR_*`` variables that belong to other parts of the program and are not
#: settings; anything else with the prefix that is not a key is reported as a typo.
RESERVED_ENV: set[str] = {CONFIG_PATH_ENV}

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
MESSAGE_FORMATS = ("msgpack", "json")
SCORE_RECORD_FORMS = ("window", "batch")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(UserError):
    """A configuration value the operator must fix; the message names the key."""


@dataclass
class WorkerConfig:
    """Everything the streaming worker needs besides the model itself (which has its card)."""

    # Kafka connection
    broker: str = "kafka://127.0.0.1:9092"  # one URL, or several separated by ';' or ','
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # kept out of logs
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Faust group-membership timing; None keeps Faust's defaults (30 s to join a group).
    broker_session_timeout_seconds: float | None = None
    broker_heartbeat_interval_seconds: float | None = None
    broker_rebalance_timeout_seconds: float | None = None
    # The app and its topics
    app_id: str = "stream-detector"  # also the consumer group id
    topic_input: str = "telemetry"
    topic_scores: str = "scores"
    topic_alerts: str = "alerts"
    topic_dead_letters: str = "dead-letters"
    partitions: int = 4
    message_format: str = "msgpack"  # of the records the worker writes; input is auto-detected
    score_records: str = "window"  # one score record per window, or one per source and step (columnar)
    # The models and windowing
    model_repository: str | None = None  # DIR/<name>/<version>/model.onnx + model.json (Triton's layout)
    model_dir: str | None = None  # one-model shorthand: a single <name>/<version> directory
    routes: list | None = None  # ordered [{sources: PATTERN, model: NAME, threshold: {...}, stride: N}]
    model_poll_seconds: float = 30.0  # how often the repository is checked for new versions
    stride: int | None = None  # None: the model card's stride
    max_gap_seconds: float | None = None  # None: never reset a source's buffer on a gap
    max_message_bytes: int = 1 << 20
    allowed_sources: list[str] | None = None  # None: any source id
    # Micro-batching of windows into one ONNX Runtime call
    batch_max_windows: int = 64
    batch_max_latency_ms: float = 20.0
    batch_max_messages: int = 1000  # input messages taken per agent step (Faust take_events)
    # ONNX Runtime intra-op threads per model session; 0 = its default (one per core).  One:
    # the scorer runs beside the event loop, which needs a core of its own
    # (docs/benchmarks/inference.md).
    inference_threads: int = 1
    # Alert episodes
    alert_release_ratio: float | None = None  # release level = ratio * threshold
    alert_release_threshold: float | None = None  # absolute release level
    alert_quiet_seconds: float = 0.0  # score below release this long before an episode closes
    alert_top_channels: int = 3
    # Silent sources: None = 10 windows' worth of the source's own pace (10 x stride x its
    # median point interval); an open episode of a source silent this long is closed.
    source_silence_seconds: float | None = None
    source_evict_seconds: float = 86400.0  # a source silent this long leaves memory and the table
    # Prometheus
    metrics_host: str = "127.0.0.1"  # loopback unless configured
    metrics_port: int = 9108  # 0 disables the metrics server
    source_metrics_limit: int = 100  # per-source gauges for at most this many sources (0: none)
    log_level: str = "info"

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` entries of :attr:`broker`, for aiokafka clients."""
        return _broker_hosts(self.broker)

    @property
    def broker_urls(self) -> list[str]:
        """``kafka://host:port`` entries of :attr:`broker`, for Faust."""
        return [f"kafka://{h}" for h in self.bootstrap_servers]

    def aiokafka_security_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer`` security."""
        kw: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL"):
            kw.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return kw

    def faust_credentials(self) -> Any:
        """The ``broker_credentials`` object for ``faust.App`` (``None`` for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return None
        import faust
        from aiokafka.helpers import create_ssl_context

        ctx = None
        if self.security_protocol in ("SSL", "SASL_SSL"):
            ctx = create_ssl_context(cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile)
        if self.security_protocol == "SSL":
            return faust.SSLCredentials(ctx)
        return faust.SASLCredentials(
            username=self.sasl_username, password=self.sasl_password, ssl_context=ctx, mechanism=self.sasl_mechanism
        )


# -- value parsers: (raw value, came_from_env) -> value, or raise _Bad(expected) -------------------
class _Bad(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


Parser = Callable[[Any, bool], Any]


def _int(pred: Callable[[int], bool], expected: str) -> Parser:
    def parse(v: Any, from_env: bool) -> int:
        if from_env and isinstance(v, str):
            try:
                v = int(v.strip())
            except ValueError:
                raise _Bad(expected) from None
        if isinstance(v, bool) or not isinstance(v, int) or not pred(v):
            raise _Bad(expected)
        return v

    return parse


def _float(pred: Callable[[float], bool], expected: str) -> Parser:
    def parse(v: Any, from_env: bool) -> float:
        if from_env and isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                raise _Bad(expected) from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or not pred(float(v)):
            raise _Bad(expected)
        return float(v)

    return parse


def _str(expected: str = "a non-empty string", pattern: str | None = None) -> Parser:
    def parse(v: Any, from_env: bool) -> str:
        if not isinstance(v, str) or not v.strip() or (pattern and not re.fullmatch(pattern, v.strip())):
            raise _Bad(expected)
        return v.strip()

    return parse


def _choice(options: tuple[str, ...], fold: Callable[[str], str] = str.upper) -> Parser:
    expected = "one of " + ", ".join(options)

    def parse(v: Any, from_env: bool) -> str:
        if not isinstance(v, str) or fold(v.strip()) not in options:
            raise _Bad(expected)
        return fold(v.strip())

    return parse


def _str_list(v: Any, from_env: bool) -> list[str]:
    expected = "a list of non-empty strings" + (" (comma-separated)" if from_env else "")
    if from_env and isinstance(v, str):
        v = [s.strip() for s in v.split(",")]
    if not isinstance(v, list) or not v:
        raise _Bad(expected)
    out = []
    for item in v:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or not str(item).strip():
            raise _Bad(expected)
        out.append(str(item).strip())
    return out


_HOSTPORT = r"[A-Za-z0-9_.\-]+:\d{1,5}|\[[0-9A-Fa-f:]+\]:\d{1,5}"


def _broker_hosts(value: str) -> list[str]:
    hosts = []
    for part in re.split(r"[;,]", value):
        part = part.strip()
        if not part:
            continue
        part = re.sub(r"^kafka://", "", part)
        if not re.fullmatch(_HOSTPORT, part):
            raise _Bad("a broker URL like kafka://host:9092 (several separated by ';')")
        hosts.append(part)
    if not hosts:
        raise _Bad("a broker URL like kafka://host:9092 (several separated by ';')")
    return hosts


def _broker(v: Any, from_env: bool) -> str:
    if not isinstance(v, str):
        raise _Bad("a broker URL like kafka://host:9092 (several separated by ';')")
    _broker_hosts(v)
    return v.strip()


def _path(v: Any, from_env: bool) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad("a path")
    return v.strip()


def _routes(v: Any, from_env: bool) -> list:
    """Routes as parsed :class:`~stream_detector.runtime.repository.Route` objects (JSON text from the environment)."""
    from .repository import parse_routes

    if from_env and isinstance(v, str):
        import json

        try:
            v = json.loads(v)
        except ValueError:
            raise _Bad("a JSON list of {\"sources\": PATTERN, \"model\": NAME}") from None
    try:
        return parse_routes(v)
    except ValueError as e:
        raise _Bad(f"a list of {{sources: PATTERN, model: NAME}} ({e})") from None


_TOPIC = _str("a Kafka topic name (letters, digits, '.', '_', '-')", r"[A-Za-z0-9._\-]{1,249}")
_positive_int = _int(lambda x: x > 0, "a positive integer")
_positive_float = _float(lambda x: x > 0, "a positive number")

_PARSERS: dict[str, Parser] = {
    "broker": _broker,
    "security_protocol": _choice(SECURITY_PROTOCOLS),
    "sasl_mechanism": _choice(SASL_MECHANISMS),
    "sasl_username": _str(),
    "sasl_password": _str(),
    "ssl_cafile": _path,
    "ssl_certfile": _path,
    "ssl_keyfile": _path,
    "broker_session_timeout_seconds": _positive_float,
    "broker_heartbeat_interval_seconds": _positive_float,
    "broker_rebalance_timeout_seconds": _positive_float,
    "app_id": _str("a non-empty id (letters, digits, '.', '_', '-')", r"[A-Za-z0-9._\-]+"),
    "topic_input": _TOPIC,
    "topic_scores": _TOPIC,
    "topic_alerts": _TOPIC,
    "topic_dead_letters": _TOPIC,
    "partitions": _positive_int,
    "message_format": _choice(MESSAGE_FORMATS, str.lower),
    "score_records": _choice(SCORE_RECORD_FORMS, str.lower),
    "model_repository": _path,
    "model_dir": _path,
    "routes": _routes,
    "model_poll_seconds": _positive_float,
    "stride": _positive_int,
    "max_gap_seconds": _positive_float,
    "max_message_bytes": _positive_int,
    "allowed_sources": _str_list,
    "batch_max_windows": _positive_int,
    "batch_max_latency_ms": _float(lambda x: x >= 0, "a number >= 0"),
    "batch_max_messages": _positive_int,
    "inference_threads": _int(lambda x: x >= 0, "an integer >= 0 (0: one per core)"),
    "alert_release_ratio": _float(lambda x: 0 < x <= 1, "a number in (0, 1]"),
    "alert_release_threshold": _float(lambda x: True, "a number"),
    "alert_quiet_seconds": _float(lambda x: x >= 0, "a number >= 0"),
    "alert_top_channels": _positive_int,
    "source_silence_seconds": _positive_float,
    "source_evict_seconds": _positive_float,
    "metrics_host": _str("a host name or IP address"),
    "metrics_port": _int(lambda x: 0 <= x <= 65535, "a port number 0-65535 (0 disables)"),
    "source_metrics_limit": _int(lambda x: x >= 0, "an integer >= 0"),
    "log_level": _choice(LOG_LEVELS, str.lower),
}
_FIELDS = {f.name: f for f in dataclasses.fields(WorkerConfig)}
assert set(_PARSERS) == set(_FIELDS), "every WorkerConfig field needs a parser"
_OPTIONAL = {name for name, f in _FIELDS.items() if f.default is None}
_PATHS = {"model_repository", "model_dir", "ssl_cafile", "ssl_certfile", "ssl_keyfile"}


def env_name(key: str) -> str:
    """The environment variable for a config key: ``batch_max_windows`` -> ``STREAM_DETECTOR_BATCH_MAX_WINDOWS``."""
    return ENV_PREFIX + key.upper()


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _parse(key: str, raw: Any, origin: str, from_env: bool) -> Any:
    if raw is None or (from_env and isinstance(raw, str) and not raw.strip()):
        if key in _OPTIONAL:
            return None
        raise ConfigError(f"config key {key!r} ({origin}): a value is required (default {_FIELDS[key].default!r})")
    try:
        return _PARSERS[key](raw, from_env)
    except _Bad as bad:
        shown = "***" if key == "sasl_password" else _show(raw)
        raise ConfigError(f"config key {key!r} ({origin}): expected {bad.expected}, got {shown}") from None


def _read_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of key: value, not a {type(data).__name__}")
    return data


def _unknown(key: str, origin: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(str(key).lower(), list(_FIELDS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(_FIELDS)}"
    return ConfigError(f"config key {key!r} ({origin}) is not a setting{hint}")


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> WorkerConfig:
    """Build the worker configuration: defaults < file at ``path`` < ``STREAM_DETECTOR_*`` env.

    ``path`` None means ``$STREAM_DETECTOR_CONFIG`` if set, else no file.  ``env`` defaults
    to ``os.environ``.  Raises :class:`ConfigError` naming the offending key.
    """
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_PATH_ENV):
        path = env[CONFIG_PATH_ENV]
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        origin = f"in {str(p)}"
        for key, raw in _read_file(p).items():
            if key not in _FIELDS:
                raise _unknown(key, origin)
            v = _parse(key, raw, origin, from_env=False)
            if key in _PATHS and v is not None and not Path(v).expanduser().is_absolute():
                v = str(p.parent / Path(v))
            values[key] = v
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in _FIELDS:
            raise _unknown(key, f"from {name}")
        values[key] = _parse(key, raw, f"from {name}", from_env=True)
    for key in _PATHS:
        if values.get(key):
            values[key] = os.path.expanduser(values[key])
    cfg = WorkerConfig(**values)
    _check_together(cfg)
    return cfg


def _check_together(cfg: WorkerConfig) -> None:
    """Rules that involve more than one key; each error still names the key to change."""
    if cfg.security_protocol.startswith("SASL"):
        if cfg.sasl_mechanism is None:
            raise ConfigError(f"config key 'sasl_mechanism': required with security_protocol {cfg.security_protocol} "
                              f"(one of {', '.join(SASL_MECHANISMS)})")
        for key in ("sasl_username", "sasl_password"):
            if getattr(cfg, key) is None:
                raise ConfigError(f"config key {key!r}: required with security_protocol {cfg.security_protocol} "
                                  f"(set {env_name(key)} or put it in the config file)")
    else:
        for key in ("sasl_mechanism", "sasl_username", "sasl_password"):
            if getattr(cfg, key) is not None:
                raise ConfigError(f"config key {key!r}: only used with security_protocol SASL_PLAINTEXT or SASL_SSL, "
                                  f"but security_protocol is {cfg.security_protocol}")
    if cfg.security_protocol not in ("SSL", "SASL_SSL"):
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(cfg, key) is not None:
                raise ConfigError(f"config key {key!r}: only used with security_protocol SSL or SASL_SSL, "
                                  f"but security_protocol is {cfg.security_protocol}")
    if (cfg.ssl_certfile is None) != (cfg.ssl_keyfile is None):
        missing = "ssl_keyfile" if cfg.ssl_keyfile is None else "ssl_certfile"
        raise ConfigError(f"config key {missing!r}: ssl_certfile and ssl_keyfile go together (client certificate)")
    if cfg.alert_release_ratio is not None and cfg.alert_release_threshold is not None:
        raise ConfigError("config key 'alert_release_threshold': set either alert_release_ratio or "
                          "alert_release_threshold, not both")
    if cfg.model_repository is not None and cfg.model_dir is not None:
        raise ConfigError("config key 'model_dir': set either model_repository (many models) or model_dir "
                          "(one model), not both")
    if cfg.routes and cfg.model_dir is not None:
        raise ConfigError("config key 'routes': routes choose between the models of a model_repository; "
                          "with model_dir every source goes to that one model")
    if cfg.metrics_port != 0 and cfg.metrics_host in ("", None):
        raise ConfigError("config key 'metrics_host': required when metrics_port is not 0")
