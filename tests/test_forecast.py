"""The forecast score kinds: trained, exported into the one graph, located, reproducible."""

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_detector.runtime.scoring import Scorer  # noqa: E402
from stream_detector.training.export import OUTPUTS, ScoringNetwork, scorer_from_model_dir  # noqa: E402
from stream_detector.training.fit import fit_series_model  # noqa: E402
from stream_detector.training.forecast import Forecaster, train_forecaster  # noqa: E402
from stream_detector.training.nets import Critic, Encoder, Generator  # noqa: E402
from stream_detector.training.transforms import WindowTransform, fit_normalisation  # noqa: E402
from stream_detector.training.wgan import TrainConfig  # noqa: E402

from conftest import synthetic_series  # noqa: E402

W = 32


def windows_of(values, starts):
    return np.stack([values[s:s + W] for s in starts]).astype(np.float32)


@pytest.fixture(scope="module")
def forecast_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("forecast") / "model"
    cfg = TrainConfig(width=8, latent_dim=4, iterations=10, encoder_iterations=10, forecast_iterations=400, seed=3)
    fit_series_model(synthetic_series(2000), ["a", "b", "c"], out, window=W, stride=4, transform="sequence",
                     cfg=cfg, progress=False, score_kind="forecast")
    return out


def test_card_records_the_forecaster_and_the_graph_matches_pytorch(forecast_model):
    card = json.loads((forecast_model / "model.json").read_text())
    fc = card["score"]["forecast"]
    assert card["score"]["kind"] == "forecast" and fc["horizon"] == W // 8 and fc["channels"] == [0, 1, 2]
    assert fc["scale"] > 0 and card["training"]["config"]["forecast_iterations"] == 400
    assert card["graph"]["form"] == "plain"  # the fast form has no forecaster
    windows = windows_of(synthetic_series(600, seed=5), range(0, 500, 9))
    onnx_out = Scorer(forecast_model).run_all(windows)  # what the worker runs
    with torch.no_grad():
        torch_out = dict(zip(OUTPUTS, (t.numpy() for t in scorer_from_model_dir(forecast_model)(
            torch.from_numpy(windows)))))
    for name in ("score", "channel_scores", "cell_scores"):
        assert np.allclose(onnx_out[name], torch_out[name], rtol=1e-4, atol=1e-7), name
    # the forecast score's cells are its errors: zero before the predicted steps
    assert np.all(onnx_out["cell_scores"][:, :, :W - W // 8] == 0)
    assert np.allclose(onnx_out["cell_scores"].sum(axis=(1, 2)) / (3 * (W // 8)), onnx_out["score"], rtol=1e-4)


def test_a_spike_in_the_predicted_steps_raises_the_score_and_is_located(forecast_model):
    values = synthetic_series(600, seed=7)
    windows = windows_of(values, range(0, 500, 5))
    spiked = windows.copy()
    spiked[:, W - 2, 1] += 1.0  # channel b, second-last step
    scorer = Scorer(forecast_model)
    normal, _ = scorer.score(windows)
    score, _, peaks = scorer.score_peaks(spiked)
    assert np.min(score) > np.max(normal)  # every spiked window scores above every normal one
    assert np.all(peaks.channel == 1) and np.all(peaks.step == W - 2)


def test_hybrid_is_fanogan_plus_the_standardised_forecast():
    torch.manual_seed(0)
    values = synthetic_series(400)
    wt = WindowTransform("sequence", fit_normalisation(values), W)
    shape = wt.output_shape()
    nets = (Encoder("conv", shape, 8, 4), Generator("conv", shape, 8, 4), Critic("conv", shape, 8))
    fc = Forecaster(W, 3, 4, [0, 2])
    make = lambda kind, **kw: ScoringNetwork(wt, *nets, 1.0, 0.0, kind, **kw).eval()  # noqa: E731
    x = torch.from_numpy(windows_of(values, range(0, 300, 11)))
    with torch.no_grad():
        fanogan = make("fanogan")(x)[0]
        forecast = make("forecast", forecaster=fc)(x)[0]
        hybrid = make("hybrid", forecaster=fc, forecast_mean=0.25, forecast_scale=3.0)(x)[0]
    assert torch.allclose(hybrid, fanogan + 3.0 * (forecast - 0.25), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs a forecaster"):
        make("forecast")
    with pytest.raises(ValueError, match="no use for a forecaster"):
        make("fanogan", forecaster=fc)


def test_a_seed_gives_the_same_forecaster_twice():
    x = torch.from_numpy(windows_of(synthetic_series(800), range(0, 700, 3)))
    a, _ = train_forecaster(x, 4, None, 50, seed=11)
    b, _ = train_forecaster(x, 4, None, 50, seed=11)
    c, _ = train_forecaster(x, 4, None, 50, seed=12)
    sa, sb, sc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(sa, sb) and not torch.equal(sa, sc)


def test_conditioned_forecast_predicts_the_score_channels_only():
    x = torch.from_numpy(windows_of(synthetic_series(800), range(0, 700, 3)))
    model, losses = train_forecaster(x, 4, [2], 200, seed=0)
    assert losses[-1] < losses[0] / 4  # it learns
    score, cells = model.score_and_cells(x)
    assert cells.shape == (len(x), 3, W) and torch.all(cells[:, :2] == 0) and torch.all(score >= 0)


def test_cli_forecast_options_and_their_errors(tmp_path):
    from test_cli import assert_one_line_error, write_csv

    write_csv(tmp_path / "train.csv", synthetic_series(900))
    cli = [sys.executable, "-m", "stream_detector.cli", "train", "--data", str(tmp_path / "train.csv"), "--window", "16",
           "--iterations", "5", "--encoder-iterations", "5", "--width", "8", "--latent", "4", "--quiet"]
    proc = subprocess.run(cli + ["--out", str(tmp_path / "h"), "--score", "hybrid", "--forecast-horizon", "3",
                                 "--forecast-iterations", "30"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    card = json.loads((tmp_path / "h" / "model.json").read_text())
    assert card["score"]["kind"] == "hybrid" and card["score"]["forecast"]["horizon"] == 3
    assert card["training"]["config"]["forecast_iterations"] == 30 and "forecast_scale" in card["score"]["formula"]
    for bad in ("0", "16"):
        proc = subprocess.run(cli + ["--out", str(tmp_path / "bad"), "--score", "forecast", "--forecast-horizon", bad],
                              capture_output=True, text=True, timeout=300)
        assert_one_line_error(proc, "--forecast-horizon must be at least 1 and shorter than --window (16)")


def test_the_worker_serves_a_forecast_model_and_names_the_spike(forecast_model):
    from stream_detector.runtime.config import WorkerConfig
    from stream_detector.runtime.detector import Detector

    from test_root_cause import SPIKE_AT, SPIKE_CHANNEL, _messages

    values = synthetic_series(seed=7)
    values[SPIKE_AT, SPIKE_CHANNEL] += 8.0
    ts = 1_700_000_000.0 + np.arange(len(values), dtype=np.float64)
    det = Detector(WorkerConfig(model_dir=str(forecast_model), metrics_port=0, score_records="window"))
    out = det.process(_messages(values, ts), keep_dicts=True)
    assert out.records and not out.dead_letters
    predicted = [r for r in out.records if r["end"] - (W // 8) < ts[SPIKE_AT] <= r["end"]]
    assert predicted and all(r["peak_channel"] == "b" and r["peak_ts"] == ts[SPIKE_AT] for r in predicted)
    opened = [e for e in out.events if e["event"] == "opened" and e["start"] <= ts[SPIKE_AT] <= e["end"]]
    assert opened, "the spike opened no episode"
    assert opened[0]["top_cells"][0]["channel"] == "b" and opened[0]["top_cells"][0]["ts"] == ts[SPIKE_AT]
