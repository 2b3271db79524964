"""Worker configuration: defaults < YAML file < STREAM_DETECTOR_* env; errors name the key."""

from __future__ import annotations

import dataclasses

import pytest

from stream_detector.runtime.config import ConfigError, WorkerConfig, env_name, load_config
from stream_detector.errors import UserError


def write(tmp_path, text, name="worker.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults():
    cfg = load_config(env={})
    assert cfg == WorkerConfig()
    assert (cfg.topic_input, cfg.topic_scores, cfg.topic_alerts, cfg.topic_dead_letters) == (
        "telemetry", "scores", "alerts", "dead-letters")
    assert cfg.partitions == 4 and cfg.metrics_host == "127.0.0.1" and cfg.message_format == "msgpack"
    assert cfg.bootstrap_servers == ["127.0.0.1:9092"]


def test_file_then_env_precedence(tmp_path):
    p = write(tmp_path, """
broker: kafka://k1:9092;kafka://k2:9093
batch_max_windows: 32
batch_max_latency_ms: 5
max_gap_seconds: 30
allowed_sources: [A-1, A-2, 7]
model_dir: models/m/1
metrics_port: 9200
""")
    cfg = load_config(p, env={"STREAM_DETECTOR_BATCH_MAX_WINDOWS": "128", "STREAM_DETECTOR_STRIDE": "4",
                              "STREAM_DETECTOR_ALLOWED_SOURCES": "x, y", "UNRELATED": "1"})
    assert cfg.batch_max_windows == 128  # env wins
    assert cfg.batch_max_latency_ms == 5.0 and isinstance(cfg.batch_max_latency_ms, float)
    assert cfg.stride == 4 and cfg.max_gap_seconds == 30.0
    assert cfg.allowed_sources == ["x", "y"]
    assert cfg.metrics_port == 9200
    assert cfg.bootstrap_servers == ["k1:9092", "k2:9093"]
    assert cfg.broker_urls == ["kafka://k1:9092", "kafka://k2:9093"]
    assert cfg.model_dir == str(tmp_path / "models/m/1")  # relative to the config file
    # Without the env overrides, the file's values hold.
    cfg2 = load_config(p, env={})
    assert cfg2.batch_max_windows == 32 and cfg2.allowed_sources == ["A-1", "A-2", "7"] and cfg2.stride is None


def test_config_path_from_env_and_empty_env_unsets_optional(tmp_path):
    p = write(tmp_path, "stride: 3\nmax_gap_seconds: 10\n")
    cfg = load_config(env={"STREAM_DETECTOR_CONFIG": str(p), "STREAM_DETECTOR_STRIDE": ""})
    assert cfg.stride is None and cfg.max_gap_seconds == 10.0
    assert load_config(write(tmp_path, "", "empty.yaml"), env={}) == WorkerConfig()


@pytest.mark.parametrize(
    "env, key",
    [
        ({"STREAM_DETECTOR_BATCH_MAX_WINDOWS": "abc"}, "batch_max_windows"),
        ({"STREAM_DETECTOR_BATCH_MAX_WINDOWS": "0"}, "batch_max_windows"),
        ({"STREAM_DETECTOR_PARTITIONS": "2.5"}, "partitions"),
        ({"STREAM_DETECTOR_MAX_GAP_SECONDS": "-1"}, "max_gap_seconds"),
        ({"STREAM_DETECTOR_MAX_GAP_SECONDS": "nan"}, "max_gap_seconds"),
        ({"STREAM_DETECTOR_METRICS_PORT": "70000"}, "metrics_port"),
        ({"STREAM_DETECTOR_MESSAGE_FORMAT": "xml"}, "message_format"),
        ({"STREAM_DETECTOR_SECURITY_PROTOCOL": "TLS"}, "security_protocol"),
        ({"STREAM_DETECTOR_ALERT_RELEASE_RATIO": "1.5"}, "alert_release_ratio"),
        ({"STREAM_DETECTOR_BROKER": "http://x"}, "broker"),
        ({"STREAM_DETECTOR_TOPIC_INPUT": "bad topic"}, "topic_input"),
        ({"STREAM_DETECTOR_APP_ID": ""}, "app_id"),
        ({"STREAM_DETECTOR_BATCH_MAX_WINDOW": "3"}, "batch_max_window"),  # typo: unknown key
    ],
)
def test_env_errors_name_the_key(env, key):
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    msg = str(info.value)
    assert f"config key {key!r}" in msg
    assert next(iter(env)) in msg  # and where it came from
    assert isinstance(info.value, UserError)


def test_the_example_message():
    with pytest.raises(ConfigError, match=r"config key 'batch_max_windows' \(from STREAM_DETECTOR_BATCH_MAX_WINDOWS\): "
                                          r"expected a positive integer, got 'abc'"):
        load_config(env={"STREAM_DETECTOR_BATCH_MAX_WINDOWS": "abc"})


@pytest.mark.parametrize(
    "text, key",
    [
        ("batch_max_windows: abc", "batch_max_windows"),
        ("batch_max_windows: '64'", "batch_max_windows"),  # the file is typed: a string is wrong
        ("batch_max_windows: true", "batch_max_windows"),
        ("partitions: 1.5", "partitions"),
        ("allowed_sources: A-1", "allowed_sources"),
        ("allowed_sources: []", "allowed_sources"),
        ("max_message_bytes: -5", "max_message_bytes"),
        ("batch_max_windos: 8", "batch_max_windos"),
        ("app_id: null", "app_id"),
    ],
)
def test_file_errors_name_the_key(tmp_path, text, key):
    p = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(p, env={})
    assert f"config key {key!r}" in str(info.value) and str(p) in str(info.value)


def test_unknown_key_suggests_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'batch_max_windows'"):
        load_config(write(tmp_path, "batch_max_windos: 8\n"), env={})


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(write(tmp_path, "a: 1\nb: [\n"), env={})
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"), env={})


def test_security_rules_name_the_key(tmp_path):
    env = {"STREAM_DETECTOR_SECURITY_PROTOCOL": "sasl_ssl", "STREAM_DETECTOR_SASL_MECHANISM": "scram-sha-512",
           "STREAM_DETECTOR_SASL_USERNAME": "det"}
    with pytest.raises(ConfigError, match="config key 'sasl_password'"):
        load_config(env=env)
    cfg = load_config(env={**env, "STREAM_DETECTOR_SASL_PASSWORD": "s3cret"})
    assert cfg.security_protocol == "SASL_SSL" and cfg.sasl_mechanism == "SCRAM-SHA-512"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg)
    kw = cfg.aiokafka_security_kwargs()
    assert kw["sasl_plain_password"] == "s3cret" and kw["security_protocol"] == "SASL_SSL" and "ssl_context" in kw
    with pytest.raises(ConfigError, match="config key 'sasl_mechanism'"):
        load_config(env={"STREAM_DETECTOR_SASL_MECHANISM": "PLAIN"})  # but protocol is PLAINTEXT
    with pytest.raises(ConfigError, match="config key 'ssl_keyfile'"):
        load_config(write(tmp_path, "security_protocol: SSL\nssl_certfile: c.pem\n"), env={})
    with pytest.raises(ConfigError, match="config key 'alert_release_threshold'"):
        load_config(env={"STREAM_DETECTOR_ALERT_RELEASE_RATIO": "0.8", "STREAM_DETECTOR_ALERT_RELEASE_THRESHOLD": "3"})
    assert load_config(env={}).aiokafka_security_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert load_config(env={}).faust_credentials() is None


def test_password_not_echoed_in_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "sasl_password: 987654321\n"), env={})
    assert "config key 'sasl_password'" in str(info.value) and "987654321" not in str(info.value)


def test_every_field_has_an_env_variable():
    for f in dataclasses.fields(WorkerConfig):
        assert env_name(f.name) == "STREAM_DETECTOR_" + f.name.upper()
