"""Synthetic faults (``stream_detector.training.synthetic``, ``stream-detector validate``): the
faults are written where they are drawn, the check is deterministic, a model singles out faults
a random score cannot, and the command reports bad input readably."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_detector.cli import main as cli_main
from stream_detector.training import synthetic as S

from conftest import synthetic_series


def test_each_fault_changes_only_its_channel_and_span():
    rng = np.random.default_rng(0)
    clean = np.tile(np.arange(100.0)[:, None], (1, 2))
    for kind in S.KINDS:
        f = S.Fault(kind, channel=1, start=40, length=10, sign=-1.0)
        x = S.inject(clean, f, scale=2.0, rng=rng, magnitude=0.5)
        changed = np.argwhere(x != clean)
        end = 41 if kind == "spike" else 50
        assert changed[:, 1].tolist() == [1] * len(changed), kind  # channel 1 only
        assert changed[:, 0].min() >= 40 and changed[:, 0].max() < end, kind
        if kind == "spike":
            assert x[40, 1] == 40.0 - 0.5 * 2.0 * 6.0
        elif kind == "level_shift":
            np.testing.assert_array_equal(x[40:50, 1], clean[40:50, 1] - 3.0)
        elif kind == "stuck":
            np.testing.assert_array_equal(x[40:50, 1], 40.0)
        elif kind == "drift":
            assert x[40, 1] == 40.0 and x[49, 1] == pytest.approx(49.0 - 4.0)
    with pytest.raises(ValueError, match="unknown fault kind"):
        S.inject(clean, S.Fault("gremlin", 0, 1, 1, 1.0), 1.0, rng)


def test_scales_have_floors_and_faults_stay_inside_the_series():
    flat = np.r_[np.zeros(99), 10.0][:, None]  # std ~1, range 10: the range floor (1.0) wins
    assert S.channel_scales(flat)[0] == pytest.approx(1.0)
    assert S.channel_scales(np.ones((50, 1)))[0] == 1e-6
    rng = np.random.default_rng(1)
    faults = S.draw_faults("noise", n=200, window=16, channels=[0, 2], length=8, repeats=300, rng=rng)
    assert {f.channel for f in faults} == {0, 2}
    assert min(f.start for f in faults) >= 16 and max(f.start + f.length for f in faults) <= 200
    with pytest.raises(ValueError, match="too short"):
        S.draw_faults("noise", n=20, window=16, channels=[0], length=8, repeats=1, rng=rng)


def test_a_model_singles_out_faults_and_the_check_is_deterministic(sequence_model):
    held_out = synthetic_series(400, seed=7)  # the tiny model's training recipe, another stretch
    a = S.synthetic_check(sequence_model, held_out, repeats=8, seed=3, magnitude=2.0)
    b = S.synthetic_check(sequence_model, held_out, repeats=8, seed=3, magnitude=2.0)
    assert a == b
    assert set(a["kinds"]) == set(S.KINDS) and a["channels"] == ["a", "b", "c"]
    for kind in ("spike", "level_shift"):  # large, sudden faults: far better than a random score
        assert a["kinds"][kind]["auprc"] > 2 * a["kinds"][kind]["base_rate"], (kind, a["kinds"][kind])
        assert a["kinds"][kind]["detected"] >= 0.5, (kind, a["kinds"][kind])
    # a tiny fault is near invisible: the measure can fall
    tiny = S.synthetic_check(sequence_model, held_out, repeats=8, seed=3, magnitude=0.01)
    assert tiny["mean_auprc"] < a["mean_auprc"] and tiny["mean_detected"] < a["mean_detected"]
    assert "| **mean** |" in S.markdown(a, "t")


def test_validate_command_writes_a_report_and_refuses_bad_input(sequence_model, tmp_path, capsys):
    data = tmp_path / "normal.csv"
    np.savetxt(data, synthetic_series(300, seed=5), delimiter=",", header="a,b,c", comments="")
    out = tmp_path / "report"
    assert cli_main(["validate", "--model", str(sequence_model), "--data", str(data), "--repeats", "4",
                     "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["repeats"] == 4 and report["length"] == 8 and set(report["kinds"]) == set(S.KINDS)
    assert report["windows"] == 300 - 16 + 1 and report["start_row"] == 0
    # --start: only the rows from there on
    assert cli_main(["validate", "--model", str(sequence_model), "--data", str(data), "--repeats", "2",
                     "--start", "100", "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["windows"] == 200 - 16 + 1
    assert "level_shift" in (out / "report.md").read_text() and "detected" in capsys.readouterr().out
    short = tmp_path / "short.csv"
    np.savetxt(short, synthetic_series(20, seed=5), delimiter=",", header="a,b,c", comments="")
    assert cli_main(["validate", "--model", str(sequence_model), "--data", str(short)]) != 0
    assert "needs more than 24" in capsys.readouterr().err
    assert cli_main(["validate", "--model", str(sequence_model), "--data", str(data), "--magnitude", "0"]) != 0
    assert "--magnitude must be above 0" in capsys.readouterr().err
