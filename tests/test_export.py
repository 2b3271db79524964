"""The exported ONNX graph against PyTorch, the card, and refusal of a tampered graph."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_detector.runtime.card import load_card  # noqa: E402
from stream_detector.errors import ModelLoadError  # noqa: E402
from stream_detector.training.export import OUTPUTS, ScoringNetwork, export_onnx  # noqa: E402
from stream_detector.training.nets import Critic, Encoder, Generator  # noqa: E402
from stream_detector.runtime.scoring import Scorer  # noqa: E402
from stream_detector.training.transforms import WindowTransform, fit_normalisation  # noqa: E402

from conftest import synthetic_series, tiny_model  # noqa: E402


@pytest.mark.parametrize("transform,arch,level,kind", [
    ("sequence", "conv", 0.0, "fanogan"), ("distance-plot", "conv", 1.0, "fanogan"),
    ("distance-plot-mv", "conv", 1.0, "combined"), ("sequence", "mlp", 0.0, "critic"),
    ("distance-plot", "conv", 0.0, "critic"), ("sequence", "conv", 0.5, "fanogan"),
    ("sequence", "conv", 0.0, "combined"), ("sequence", "conv", 0.0, "critic")])
def test_onnx_runtime_matches_pytorch(tmp_path, transform, arch, level, kind):
    torch.manual_seed(0)
    values = synthetic_series(400)
    stats = fit_normalisation(values)
    wt = WindowTransform(transform, stats, 32, plot_size=16)
    shape = wt.output_shape()
    scorer = ScoringNetwork(wt, Encoder(arch, shape, 8, 4), Generator(arch, shape, 8, 4), Critic(arch, shape, 8), 1.0,
                            level, kind, critic_mean=0.3, critic_scale=2.0)
    export_onnx(scorer, 32, 3, tmp_path / "model.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    windows = np.stack([values[i:i + 32] for i in range(0, 300, 7)]) * 1.3  # also outside the training range
    onnx_out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"window": windows})))
    with torch.no_grad():
        torch_out = dict(zip(OUTPUTS, (t.numpy() for t in scorer(torch.from_numpy(windows)))))
    assert set(onnx_out) == set(OUTPUTS)
    assert onnx_out["score"].shape == (len(windows),) and onnx_out["channel_scores"].shape == (len(windows), 3)
    assert onnx_out["cell_scores"].shape == (len(windows), 3, 32) and onnx_out["critic_score"].shape == (len(windows),)
    for name in ("score", "channel_scores", "cell_scores", "critic_score"):
        assert np.max(np.abs(onnx_out[name] - torch_out[name])) < 1e-4 * max(1.0, np.max(np.abs(torch_out[name]))), name
    # channel scores are the cells' mean over time
    assert np.allclose(onnx_out["cell_scores"].mean(axis=2), onnx_out["channel_scores"], rtol=1e-4, atol=1e-6)
    # the kind decides the score
    fanogan = onnx_out["score"] if kind == "fanogan" else None
    if kind == "critic" and not level:
        assert np.allclose(onnx_out["score"], onnx_out["critic_score"], rtol=1e-5)
    if kind == "combined" and not level:
        fanogan = onnx_out["score"] - 2.0 * (onnx_out["critic_score"] - 0.3)
        assert np.all(fanogan > 0)  # what is left is a sum of squares
    if fanogan is not None and not level and wt.kind != "distance-plot-mv":
        assert np.all(fanogan >= onnx_out["channel_scores"].mean(axis=1) - 1e-6)  # A_R + kappa * A_D >= A_R
    # dynamic batch: a batch of one gives the same score as inside the big batch
    single = sess.run(["score"], {"window": windows[5:6]})[0]
    assert abs(single[0] - onnx_out["score"][5]) < 1e-5 * max(1.0, abs(onnx_out["score"][5]))


def test_card_records_the_contract(trained_sequence_model):
    card = load_card(trained_sequence_model)
    assert card.channels == ("a", "b", "c") and card.window == 16 and card.stride == 4
    assert card.transform == "sequence" and card.normalisation["method"] == "minmax"
    thr = card.threshold
    assert thr["method"] == "quantile" and thr["release"] <= thr["value"] and thr["calibration_windows"] > 100
    assert card.graph["flops_per_window"] > 0
    assert {"torch", "onnxruntime", "numpy"} <= set(card.libraries)
    assert card.training["train_points"] + card.training["calibration_points"] == 1200
    assert (trained_sequence_model / "training_curves.png").stat().st_size > 1000


def test_threshold_matches_calibration_quantile(trained_sequence_model):
    """The card's threshold is the q-quantile of the held-out windows' scores from the ONNX graph."""
    scorer = Scorer(trained_sequence_model)
    values = synthetic_series()[960:]  # the held-out 20 %
    windows = np.stack([values[i:i + 16] for i in range(len(values) - 15)])
    scores = scorer.score(windows)[0]
    assert scorer.threshold == pytest.approx(float(np.quantile(scores, 0.995)), rel=1e-5)


def test_tampered_onnx_is_refused(sequence_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(sequence_model, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match its card"):
        Scorer(bad)


def test_card_without_threshold_is_refused(sequence_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(sequence_model, bad)
    card = json.loads((bad / "model.json").read_text())
    del card["threshold"]
    (bad / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="missing keys threshold"):
        Scorer(bad)


def test_anomalous_windows_score_higher(tmp_path):
    tiny_model(tmp_path, window=16)
    scorer = Scorer(tmp_path)
    values = synthetic_series(400, seed=5)
    normal = np.stack([values[i:i + 16] for i in range(0, 300, 5)])
    broken = normal.copy()
    broken[:, 8:, 1] += 2.0  # a level shift in one channel
    s_normal, _ = scorer.score(normal)
    s_broken, c_broken = scorer.score(broken)
    assert np.median(s_broken) > np.median(s_normal)
    assert np.mean(np.argmax(c_broken, axis=1) == 1) > 0.5  # the shifted channel is blamed


@pytest.mark.parametrize("transform", ["distance-plot", "distance-plot-mv"])
def test_level_term_lets_a_distance_plot_see_a_level_shift(tmp_path, transform):
    """A distance plot is blind to a constant added to a channel (``|s_i - s_j|`` does not
    change); the level term in the exported graph sees it and blames that channel.  The card
    records the weight, and the model rebuilt from its directory scores as the graph does."""
    from stream_detector.training.export import scorer_from_model_dir
    from stream_detector.training.fit import fit_series_model
    from stream_detector.training.wgan import TrainConfig

    cfg = TrainConfig(iterations=10, encoder_iterations=20, width=8, latent_dim=4, seed=1)
    values = synthetic_series(400, seed=5)
    normal = np.stack([values[i:i + 16] for i in range(0, 300, 5)])
    shifted = normal.copy()
    shifted[:, :, 1] += 3.0  # the whole window: only the level changes
    scores = {}
    for weight in (None, 0.0):  # None: the default for distance plots, 1.0
        out = tmp_path / f"w{weight}"
        card = fit_series_model(synthetic_series(), ["a", "b", "c"], out, window=16, stride=4, transform=transform,
                                cfg=cfg, plot_size=8, progress=False, level_weight=weight)
        assert card.score["level_weight"] == (1.0 if weight is None else 0.0)
        scorer = Scorer(out)
        scores[weight] = scorer.score(normal), scorer.score(shifted)
        with torch.no_grad():
            rebuilt = scorer_from_model_dir(out)(torch.from_numpy(shifted.astype(np.float32)))[0].numpy()
        np.testing.assert_allclose(rebuilt, scores[weight][1][0], rtol=1e-4, atol=1e-6)
    (n0, _), (s0, _) = scores[0.0]
    np.testing.assert_allclose(s0, n0, rtol=1e-4, atol=1e-6)  # blind without the term
    (n1, _), (s1, c1) = scores[None]
    assert np.all(s1 > n1 + 0.3)  # b (range 2) shifted by 3.0: every point half a range outside or more
    assert np.all(np.argmax(c1, axis=1) == 1)  # the shifted channel is blamed


@pytest.mark.parametrize("transform,level", [("sequence", 0.0), ("sequence", 1.0), ("distance-plot", 1.0)])
def test_a_conditioned_model_scores_its_score_channels_only(tmp_path, transform, level):
    """``score_channels``: the networks see every channel, the score and the root cause count only
    the scored ones.  A change in a context channel moves the score only through the critic's
    features; the exported graph (the fast form for sequences) equals PyTorch, the card names the
    channels, and the model rebuilt from its directory scores as the graph does."""
    from stream_detector.training.export import scorer_from_model_dir
    from stream_detector.training.fit import fit_series_model
    from stream_detector.training.wgan import TrainConfig

    cfg = TrainConfig(iterations=10, encoder_iterations=20, width=8, latent_dim=4, seed=1)
    out = tmp_path / "m"
    card = fit_series_model(synthetic_series(), ["a", "b", "c"], out, window=16, stride=4, transform=transform,
                            cfg=cfg, plot_size=8, progress=False, level_weight=level, score_channels=["b"])
    assert card.score["channels"] == ["b"] and "score channels only" in card.score["formula"]
    # the fast form carries the score channels (sequence without a level term); the others are plain
    assert card.graph["form"] == ("sequence-conv2d-v1" if transform == "sequence" and not level else "plain")
    values = synthetic_series(400, seed=5)
    windows = np.stack([values[i:i + 16] for i in range(0, 300, 5)]).astype(np.float32)
    windows[::3, 5, 0] += 4.0  # out-of-range points in the context channel a
    scorer = Scorer(out)
    outs = scorer.run_all(windows)
    # the root cause never names an unscored channel
    assert np.all(outs["channel_scores"][:, [0, 2]] == 0) and np.all(outs["cell_scores"][:, [0, 2]] == 0)
    assert np.all(outs["channel_scores"][:, 1] > 0)
    with torch.no_grad():
        rebuilt = [t.numpy() for t in scorer_from_model_dir(out)(torch.from_numpy(windows))]
    np.testing.assert_allclose(outs["score"], rebuilt[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(outs["cell_scores"], rebuilt[4], rtol=1e-4, atol=1e-6)
    if not level:
        return
    # the level term counts channel b only: a's out-of-range points add nothing to it
    with torch.no_grad():
        net = scorer_from_model_dir(out)
        x = torch.from_numpy(windows)
        excess_b = net.transform.range_excess(x)[:, 1]
        net.level_weight = 0.0
        without = net(x)[0]
    np.testing.assert_allclose(outs["score"] - without.numpy(), excess_b.numpy(), rtol=1e-4, atol=1e-6)


def test_score_channels_are_checked():
    from stream_detector.errors import DataError
    from stream_detector.training.fit import fit_series_model
    from stream_detector.training.wgan import TrainConfig

    with pytest.raises(DataError, match="score channels z are not among"):
        fit_series_model(synthetic_series(), ["a", "b", "c"], "/nonexistent", window=16, stride=4,
                         transform="sequence", cfg=TrainConfig(iterations=1), score_channels=["z"])
    stats = fit_normalisation(synthetic_series(100))
    wt = WindowTransform("distance-plot-mv", stats, 16, plot_size=8)
    shape = wt.output_shape()
    with pytest.raises(ValueError, match="cannot score some channels only"):
        ScoringNetwork(wt, Encoder("conv", shape, 8, 4), Generator("conv", shape, 8, 4), Critic("conv", shape, 8),
                       1.0, score_channels=[0])
