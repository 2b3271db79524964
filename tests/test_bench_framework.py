"""The benchmark framework: one report writer (JSON + Markdown + the machine, where --out
says), typed configurations that name a bad key, and the one fit-and-score function."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

from stream_detector.bench import framework
from stream_detector.bench.machine import cpu_model
from stream_detector.errors import UserError

from conftest import synthetic_series


class _Toy(framework.Benchmark):
    name = "toy"
    description = "a benchmark that counts"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n", type=int, default=3)

    def run(self, args: argparse.Namespace):
        if args.n < 0:
            return framework.error("--n must not be negative")
        return framework.Report("toy", {"n": args.n, "squares": [i * i for i in range(args.n)]},
                                lambda r: f"# Toy\n\n{r['n']} squares.\n")


def test_report_goes_to_out_with_json_markdown_and_the_machine(tmp_path, capsys):
    out = tmp_path / "reports"
    assert _Toy().main(["--n", "4", "--out", str(out)]) == 0
    result = json.loads((out / "toy.json").read_text())
    assert result["squares"] == [0, 1, 4, 9]
    assert result["host"]["cpu_model"] == cpu_model() and result["host"]["cores"] == os.cpu_count()
    md = (out / "toy.md").read_text()
    assert md.startswith("# Toy") and f"Machine: {cpu_model()}, {os.cpu_count()} cores" in md
    assert f"wrote {out / 'toy'}.json" in capsys.readouterr().out


def test_default_out_is_outside_the_package_and_docs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _Toy().build_parser().parse_args([]).out == "bench-results"
    assert _Toy().main([]) == 0
    assert (tmp_path / "bench-results" / "toy.json").exists()
    for name in ("nab", "telemanom", "inference", "throughput", "paper"):
        module = __import__(f"stream_detector.bench.{name}", fromlist=["BENCHMARK"])
        argv = {"nab": ["--data", "x"], "telemanom": ["--data", "x"], "paper": ["har"]}.get(name, [])
        assert module.build_parser().parse_args(argv).out == "bench-results", name


def test_markdown_that_names_the_machine_is_left_alone(tmp_path):
    md = f"# R\n\nCPU: {cpu_model()}.\n"
    framework.write_report(tmp_path, framework.Report("r", {"a": 1}, md))
    assert (tmp_path / "r.md").read_text() == md


def test_a_refused_argument_is_status_2_and_writes_nothing(tmp_path, capsys):
    assert _Toy().main(["--n", "-1", "--out", str(tmp_path)]) == 2
    assert "error: --n must not be negative" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a_bad_configuration_key_is_named():
    from stream_detector.training.fit import ConfigKeyError, SeriesModelConfig

    with pytest.raises(ConfigKeyError, match="unknown configuration key 'iteratoins'.*iterations"):
        SeriesModelConfig.from_dict({"window": 16, "iteratoins": 5})
    model, own = SeriesModelConfig.from_flat({"window": 16, "iterations": 5, "probationary": 0.1}, ["probationary"])
    assert (model.window, model.train.iterations, own) == (16, 5, {"probationary": 0.1})


def test_a_runner_refuses_a_bad_configuration_key_by_name():
    from stream_detector.bench.nab import NabConfig
    from stream_detector.bench.telemanom import DEFAULT_CONFIG, TelemanomConfig

    assert TelemanomConfig.from_dict(DEFAULT_CONFIG).model.train.iterations == DEFAULT_CONFIG["iterations"]
    with pytest.raises(ValueError, match="'telemanom_bach'"):
        TelemanomConfig.from_dict({**DEFAULT_CONFIG, "telemanom_bach": 7})
    with pytest.raises(ValueError, match="'smothing'"):
        NabConfig.from_dict({"window": 32, "smothing": 5})


def test_nab_main_turns_a_bad_key_into_one_user_error(tmp_path, monkeypatch):
    from stream_detector.bench import nab

    (tmp_path / "data").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text("{}")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "profiles.json").write_text("{}")
    monkeypatch.setitem(nab.DEFAULT_CONFIG, "windw", 3)
    with pytest.raises(UserError, match="'windw'"):
        nab.main(["--data", str(tmp_path), "--out", str(tmp_path / "out")])


def test_fit_and_score_with_a_seed_gives_the_same_scores_twice(tmp_path):
    pytest.importorskip("torch")
    from stream_detector.training.fit import SeriesModelConfig, fit_and_score, score_with_model

    series = synthetic_series(600, seed=3)
    cfg = SeriesModelConfig.from_dict({"window": 16, "iterations": 20, "encoder_iterations": 30, "width": 8,
                                       "latent_dim": 4, "seed": 5})
    runs = [fit_and_score(series[:400], series, ["a", "b", "c"], tmp_path / f"m{i}", cfg, train_fraction=0.75)
            for i in range(2)]
    a, b = runs
    assert len(a.points) == len(series) and np.isnan(a.points[:15]).all() and np.isfinite(a.points[15:]).all()
    np.testing.assert_array_equal(a.points, b.points)
    assert a.card.threshold["value"] == b.card.threshold["value"]
    # the score-only half on the written model is the same scores (what `stream-detector score` runs)
    again = score_with_model(tmp_path / "m0", series, stride=1)
    np.testing.assert_array_equal(again.points, a.points)
    # a different seed trains a different model: the check above can fail
    c = fit_and_score(series[:400], series, ["a", "b", "c"], tmp_path / "m2", cfg.with_training(seed=6),
                      train_fraction=0.75)
    assert not np.array_equal(c.points[15:], a.points[15:])
