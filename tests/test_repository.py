"""The model repository (Triton layout), routes, and the Faust-free multi-model core.

No broker here: :class:`~stream_detector.runtime.detector.Detector` is driven directly, as the Faust
agent drives it (the embedded-broker tests are in ``test_serving.py``).
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from stream_detector.runtime import metrics
from stream_detector.runtime.codec import InvalidMessage, encode_points
from stream_detector.runtime.publishing import decode_record
from stream_detector.runtime.config import ConfigError, WorkerConfig, load_config
from stream_detector.runtime.detector import Detector, InMessage
from stream_detector.errors import UserError
from stream_detector.runtime.repository import ModelRepository, Routes, parse_routes
from stream_detector.runtime.scoring import Scorer, score_series


def lay_out(repo, model_dir, name: str, version: int):
    """Copy a model directory to ``repo/name/version`` (the folder, not the card, names it)."""
    dst = repo / name / str(version)
    shutil.copytree(model_dir, dst)
    return dst


def refused(name: str) -> float:
    return metrics.MODEL_VERSIONS_REFUSED.labels(name)._value.get()


def test_highest_complete_version_is_served_and_bad_ones_are_refused(sequence_model, tmp_path):
    repo = tmp_path / "repo"
    lay_out(repo, sequence_model, "engine", 1)
    lay_out(repo, sequence_model, "engine", 2)
    r = ModelRepository(repo)
    assert {n: mv.version for n, mv in r.scan().items()} == {"engine": 2}

    before = refused("engine")
    tampered = lay_out(repo, sequence_model, "engine", 3)
    with open(tampered / "model.onnx", "ab") as f:
        f.write(b"\0")
    incomplete = repo / "engine" / "4"
    incomplete.mkdir()
    shutil.copy(sequence_model / "model.onnx", incomplete / "model.onnx")  # card not written yet
    assert r.scan()["engine"].version == 2
    assert refused("engine") == before + 2
    assert r.scan()["engine"].version == 2
    assert refused("engine") == before + 2  # refused once, not at every poll

    shutil.copy(sequence_model / "model.json", incomplete / "model.json")  # the copy completes
    assert r.scan()["engine"].version == 4
    (repo / "engine" / "latest").mkdir()  # not an integer: not a version
    (repo / "engine" / "0").mkdir()
    assert r.scan()["engine"].version == 4


def test_repository_start_up_errors_are_readable(tmp_path, sequence_model):
    with pytest.raises(UserError, match="no such directory"):
        ModelRepository(tmp_path / "nope").check()
    (tmp_path / "empty" / "m" / "1").mkdir(parents=True)
    with pytest.raises(UserError, match="no servable model"):
        ModelRepository(tmp_path / "empty").check()
    single = ModelRepository(single=sequence_model)
    assert list(single.scan()) == ["tiny"]


def test_routes_first_match_glob_regex_and_default():
    routes = Routes(parse_routes([{"sources": "A-*", "model": "a"},
                                  {"sources": r"re:[DE]-\d+", "model": "de", "stride": 2},
                                  {"sources": "*", "model": "fallback"}]))
    served = {"a": 1, "de": 1, "fallback": 1}
    assert routes.route("A-7", served).model == "a"
    assert routes.route("E-13", served).model == "de"
    assert routes.route("E-13x", served).model == "fallback"  # a regex matches the whole id
    assert routes.route("P-1", served).model == "fallback"
    assert Routes(parse_routes([{"sources": "A-*", "model": "a"}])).route("B-1", served) is None
    assert Routes(None).route("anything", {"only": 1}).model == "only"
    assert Routes(None).route("anything", {"x": 1, "y": 2}) is None


@pytest.mark.parametrize("bad, message", [
    ([], "non-empty list"),
    ([{"sources": "A-*"}], "'model' must be a non-empty string"),
    ([{"sources": "re:([", "model": "m"}], "not a valid regular expression"),
    ([{"sources": "*", "model": "m", "treshold": {}}], "unknown key"),
    ([{"sources": "*", "model": "m", "threshold": {"value": 1}}], "'threshold' must be a mapping with a 'method'"),
    ([{"sources": "*", "model": "m", "stride": 0}], "'stride' must be a positive integer"),
])
def test_bad_routes_name_the_entry_and_key(tmp_path, bad, message):
    path = tmp_path / "w.yaml"
    path.write_text(json.dumps({"model_repository": "models", "routes": bad}))
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert "'routes'" in str(e.value) and message in str(e.value)


def test_model_repository_and_model_dir_are_exclusive(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("model_repository: a\nmodel_dir: b\n")
    with pytest.raises(ConfigError, match="not both"):
        load_config(path, env={})
    path.write_text("model_repository: repo\nroutes: [{sources: '*', model: m}]\nmodel_poll_seconds: 5\n")
    cfg = load_config(path, env={})
    assert cfg.model_repository == str(tmp_path / "repo") and cfg.routes[0].model == "m"
    assert cfg.model_poll_seconds == 5.0


# -- the core ------------------------------------------------------------------------------------
def series(n: int, seed: int, channels: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return {c: np.sin(t / (5.0 + i)) + rng.normal(0, 0.05, n) for i, c in enumerate(channels)}


def messages(source: str, ts: np.ndarray, vals: dict, chunk: int, offset0: int = 0) -> list[InMessage]:
    out = []
    for k, i in enumerate(range(0, len(ts), chunk)):
        payload = encode_points(ts[i:i + chunk], {c: v[i:i + chunk] for c, v in vals.items()})
        out.append(InMessage(source.encode(), payload, "telemetry", 0, offset0 + k))
    return out


def records(out) -> list[dict]:
    return [decode_record(v) for _, v in out.scores]


def test_routing_micro_batches_per_model_and_no_model_dead_letters(sequence_model, tmp_path):
    repo = tmp_path / "repo"
    lay_out(repo, sequence_model, "left", 1)
    lay_out(repo, sequence_model, "right", 3)
    cfg = WorkerConfig(model_repository=str(repo), metrics_port=0,
                       routes=parse_routes([{"sources": "L-*", "model": "left"},
                                            {"sources": "R-*", "model": "right", "stride": 8}]))
    det = Detector(cfg)
    chans = det.served["left"].channels
    ts = 1.7e9 + np.arange(64.0)
    vals = series(64, 0, chans)
    msgs = messages("L-1", ts, vals, 64) + messages("R-1", ts, vals, 64) + messages("X-1", ts, vals, 64)
    (prepared,) = det.ingest_parts(msgs, max_windows=math.inf)
    assert sorted(prepared.groups) == ["left:1", "right:3"]
    out = det.finish(prepared, det.score(prepared))
    recs = records(out)
    by_model = {m: [r for r in recs if r["model"] == m] for m in ("left", "right")}
    assert len(by_model["left"]) == (64 - 16) // 4 + 1 and len(by_model["right"]) == (64 - 16) // 8 + 1
    assert {r["model_version"] for r in by_model["right"]} == {"3"}
    (dead,) = [decode_record(v) for _, v in out.dead_letters]
    assert dead["reason"] == "no_model" and "X-1" in dead["detail"]
    # the routed model's channels validate the message
    bad = InMessage(b"L-1", encode_points(ts[-1] + 1, {"nope": 1.0}), "telemetry", 0, 99)
    (dead,) = [decode_record(v) for _, v in det.process([bad]).dead_letters]
    assert dead["reason"] in ("missing_channel", "unknown_channel")


def test_new_version_is_picked_up_at_a_window_boundary_without_losing_windows(sequence_model, tmp_path):
    repo = tmp_path / "repo"
    lay_out(repo, sequence_model, "m", 1)
    det = Detector(WorkerConfig(model_repository=str(repo), metrics_port=0))
    chans = det.served["m"].channels
    n = 200
    ts = 1.7e9 + np.arange(float(n))
    vals = series(n, 1, chans)
    msgs = messages("s", ts, vals, 10)
    first = records(det.process(msgs[:7]))
    assert det.prepare_refresh() == {}  # nothing new
    lay_out(repo, sequence_model, "m", 2)
    det.install(det.prepare_refresh())
    second = records(det.process(msgs[7:]))
    got = first + second
    expected_ends = ts[np.arange(16 - 1, n, 4)]
    np.testing.assert_array_equal([r["end"] for r in got], expected_ends)  # none lost, none twice
    assert {r["model_version"] for r in first} == {"1"} and {r["model_version"] for r in second} == {"2"}
    # same graph, same windows: the scores are the offline ones
    offline = score_series(Scorer(sequence_model), np.stack([vals[c] for c in chans], 1))["scores"]
    np.testing.assert_allclose([r["score"] for r in got], offline, rtol=1e-5)


def test_tampered_version_is_refused_and_the_old_one_keeps_serving(sequence_model, tmp_path):
    repo = tmp_path / "repo"
    lay_out(repo, sequence_model, "m", 1)
    det = Detector(WorkerConfig(model_repository=str(repo), metrics_port=0))
    before = refused("m")
    bad = lay_out(repo, sequence_model, "m", 2)
    card = json.loads((bad / "model.json").read_text())
    card["onnx_sha256"] = "0" * 64
    (bad / "model.json").write_text(json.dumps(card))
    assert det.prepare_refresh() == {}
    assert det.served["m"].version == 1 and refused("m") == before + 1


ADAPTIVE = {"method": "telemanom", "batch_size": 10, "window_size": 6, "error_buffer": 3, "l_s": 5}


@pytest.mark.parametrize("spec", [ADAPTIVE, {"method": "likelihood", "learning_period": 20, "estimation_samples": 10,
                                              "reestimation_period": 5, "averaging_window": 3}])
def test_adaptive_threshold_state_survives_a_restart(sequence_model, tmp_path, spec):
    """Kill after any step and restart from the persisted states: the same records and alerts."""
    repo = tmp_path / "repo"
    lay_out(repo, sequence_model, "m", 1)
    cfg = WorkerConfig(model_repository=str(repo), metrics_port=0, stride=1,
                       routes=parse_routes([{"sources": "*", "model": "m", "threshold": spec}]))
    chans = Detector(cfg).served["m"].channels
    n = 400
    ts = 1.7e9 + np.arange(float(n))
    vals = series(n, 2, chans)
    vals[chans[0]][250:262] += 4.0  # something to flag
    msgs = messages("s", ts, vals, 13)

    whole = Detector(cfg)
    ref = whole.process(msgs)
    ref_recs = records(ref)
    assert len(ref_recs) + whole.sources["s"].threshold.pending == n - 16 + 1
    table: dict[str, bytes] = {}
    got, alerts = [], []
    for lo in range(0, len(msgs), 5):  # a fresh worker every 5 messages, state from the "table"
        det = Detector(cfg, load_state=table.get)
        out = det.process(msgs[max(0, lo - 2):lo + 5])  # 2 redelivered messages each time
        got += records(out)
        alerts += [decode_record(v) for _, v in out.alerts]
        table.update({s: raw for s, (_, raw) in out.states.items()})
    assert [(r["end"], r["is_anomaly"], r["threshold"]) for r in got] == \
        [(r["end"], r["is_anomaly"], r["threshold"]) for r in ref_recs]
    assert alerts == [decode_record(v) for _, v in ref.alerts]
    if spec["method"] == "telemanom":
        assert any(r["is_anomaly"] for r in ref_recs) and alerts


def test_a_producers_retry_is_counted_as_duplicate_not_dead_lettered(sequence_model):
    """A retried send writes the same bytes at a new offset: skipped, the windows unchanged;
    an old timestamp with other values is still a dead letter."""
    cfg = WorkerConfig(model_dir=str(sequence_model), metrics_port=0)
    chans = Detector(cfg).served["tiny"].channels
    ts = 1.7e9 + np.arange(60.0)
    msgs = messages("s", ts, series(60, 4, chans), 6)
    ref = records(Detector(cfg).process(msgs))
    retried = [InMessage(m.key, m.value, m.topic, m.partition, i) for i, m in
               enumerate(x for m in msgs for x in ([m, m] if m.offset % 3 == 1 else [m]))]
    before = metrics.MESSAGES_DUPLICATE._value.get()
    out = Detector(cfg).process(retried)
    assert records(out) == ref and not out.dead_letters
    assert metrics.MESSAGES_DUPLICATE._value.get() - before == sum(m.offset % 3 == 1 for m in msgs)
    changed = InMessage(b"s", encode_points(ts[-1], {c: 9.0 for c in chans}), "telemetry", 0, len(retried))
    det = Detector(cfg)
    det.process(retried)
    (dead,) = [decode_record(v) for _, v in det.process([changed]).dead_letters]
    assert dead["reason"] == "ts_not_increasing"


def test_process_points_river_style(sequence_model):
    det = Detector(WorkerConfig(model_dir=str(sequence_model), metrics_port=0))
    chans = det.served["tiny"].channels
    vals = series(40, 3, chans)
    ts = 1.7e9 + np.arange(40.0)
    recs, events = det.process_points("engine-1", ts[:20], {c: v[:20] for c, v in vals.items()})
    more, _ = det.process_points("engine-1", ts[20:], {c: v[20:] for c, v in vals.items()})
    assert [r["end"] for r in recs + more] == list(ts[np.arange(15, 40, 4)])
    with pytest.raises(InvalidMessage) as e:
        det.process_points("engine-1", [ts[0]], {c: [0.0] for c in chans})
    assert e.value.reason == "ts_not_increasing"


def set_card_threshold(version_dir, spec: dict) -> None:
    """Change the card's threshold (the card is not hashed; the ONNX file is)."""
    card = json.loads((version_dir / "model.json").read_text())
    card["threshold"] = {"value": card["threshold"]["value"], "release": card["threshold"]["release"], **spec}
    (version_dir / "model.json").write_text(json.dumps(card))


def test_switch_to_a_version_with_another_threshold_decides_pending_windows_once(sequence_model, tmp_path):
    """Windows the old adaptive procedure still held are decided by it at the switch (flush),
    then the new version's threshold takes over: every window is published exactly once."""
    repo = tmp_path / "repo"
    set_card_threshold(lay_out(repo, sequence_model, "m", 1), ADAPTIVE)
    det = Detector(WorkerConfig(model_repository=str(repo), metrics_port=0, stride=1))
    chans = det.served["m"].channels
    n = 300
    ts = 1.7e9 + np.arange(float(n))
    vals = series(n, 4, chans)
    msgs = messages("s", ts, vals, 10)
    first = records(det.process(msgs[:15]))
    held = det.sources["s"].threshold.pending
    assert held > 0 and {r["model_version"] for r in first} == {"1"}
    lay_out(repo, sequence_model, "m", 2)  # the card's static quantile threshold
    det.install(det.prepare_refresh())
    second = records(det.process(msgs[15:]))
    got = first + second
    np.testing.assert_array_equal([r["end"] for r in got], ts[np.arange(16 - 1, n)])
    flushed, after = second[:held], second[held:]
    assert {r["model_version"] for r in flushed} == {"1"} and {r["model_version"] for r in after} == {"2"}
    static = float(json.loads((repo / "m" / "2" / "model.json").read_text())["threshold"]["value"])
    assert all(r["threshold"] == static for r in after)


def test_state_from_before_model_repositories_keeps_its_window_buffer(sequence_model):
    """A table entry written by the one-model worker (no model name in it) still belongs to the
    model served: the source's buffer and offset carry over an upgrade."""
    import msgpack

    from stream_detector.runtime.windowing import SourceWindows, channels_fingerprint

    det = Detector(WorkerConfig(model_dir=str(sequence_model), metrics_port=0))
    chans = det.served["tiny"].channels
    sw = SourceWindows(16, 4, len(chans))
    ts = 1.7e9 + np.arange(15.0)
    sw.push_batch(ts, np.zeros((15, len(chans)), np.float32))
    sw.last_offset = 6
    legacy = {"windows": {**sw.state(binary=True), "channels": channels_fingerprint(chans)}, "episode": {}}
    det = Detector(WorkerConfig(model_dir=str(sequence_model), metrics_port=0),
                   load_state=lambda s: msgpack.packb(legacy, use_bin_type=True))
    payload = encode_points(1.7e9 + 15, {c: 0.0 for c in chans})
    out = det.process([InMessage(b"old", payload, "telemetry", 0, 6), InMessage(b"old", payload, "telemetry", 0, 7)])
    assert len(out.scores) == 1  # offset 6 was folded in already; offset 7 completes the first window
