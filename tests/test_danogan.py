"""D-AnoGAN (train --generators K): modes split between generators, the exported graph against
PyTorch, windows from neither mode, the single-generator path untouched, the CLI."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_detector.training import danogan  # noqa: E402
from stream_detector.training.export import (OUTPUTS, ScoringNetwork, export_onnx, score_parts,  # noqa: E402
                                             scorer_from_model_dir)
from stream_detector.training.nets import Critic, Encoder, Generator  # noqa: E402
from stream_detector.training.transforms import WindowTransform, fit_normalisation  # noqa: E402
from stream_detector.training.wgan import TrainConfig, train  # noqa: E402

from conftest import synthetic_series  # noqa: E402
from test_cli import assert_one_line_error, run, write_csv  # noqa: E402

W = 32
T = np.arange(W) * 2 * np.pi / W


def two_modes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows ``[n, W, 1]``: even rows a sine (two periods, random phase), odd rows a
    constant level with a little noise; and the mode of each row."""
    rng = np.random.default_rng(seed)
    sine = 0.8 * np.sin(2 * T + rng.uniform(0, 2 * np.pi, (n, 1)))
    level = -0.5 + 0.05 * rng.standard_normal((n, W))
    mode = np.arange(n) % 2
    return np.where(mode[:, None] == 0, sine, level)[:, :, None].astype(np.float32), mode


# windows from neither mode: half of each, a faster sine, a level no window has, a ramp
NEITHER = {"half sine half level": np.concatenate([0.8 * np.sin(2 * T[:16]), np.full(16, -0.5)]),
           "five periods": 0.8 * np.sin(5 * T), "level +0.5": np.full(W, 0.5), "ramp": np.linspace(-0.8, 0.8, W)}


@pytest.fixture(scope="module")
def two_generators(tmp_path_factory):
    """K = 2 trained on the two modes (mlp: a few seconds per thousand steps), the scorer and its ONNX file.
    The prior's entropy bonus decays fast (0.99 per step instead of 0.999) so that the learned prior
    is free over the run's last several hundred steps instead of held uniform throughout."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    raw, mode = two_modes(512, seed=0)
    wt = WindowTransform("sequence", fit_normalisation(raw.reshape(-1, 1)), W)
    x = wt(torch.from_numpy(raw))
    cfg = TrainConfig(generators=2, arch="mlp", width=16, latent_dim=4, iterations=1500, encoder_iterations=400,
                      batch_size=32, lr=3e-4, prior_entropy_decay=0.99, seed=0, log_every=1)
    nets = train(x, cfg, progress=False)
    scorer = ScoringNetwork(wt, nets.encoder, nets.generator, nets.critic, cfg.kappa, classifier=nets.classifier,
                            alpha=cfg.alpha)
    path = tmp_path_factory.mktemp("danogan") / "model.onnx"
    form = export_onnx(scorer, W, 1, path)
    yield {"nets": nets, "x": x, "mode": mode, "scorer": scorer, "onnx": path, "form": form, "wt": wt}
    torch.set_num_threads(threads)


def test_both_generators_are_used_and_each_mode_has_its_own(two_generators):
    nets, x, mode = two_generators["nets"], two_generators["x"], two_generators["mode"]
    assert isinstance(nets.generator, torch.nn.ModuleList) and len(nets.generator) == len(nets.encoder) == 2
    assert len(nets.prior) == 2 and abs(sum(nets.prior) - 1) < 1e-5
    assert min(nets.prior) > 0.2, nets.prior  # the prior did not collapse onto one generator
    assert len(nets.history["classifier"]) == 1500 and len(nets.history["encoder"]) == 400
    with torch.no_grad():
        k = nets.classifier(nets.critic.features(x)).argmax(dim=1).numpy()
    picks = [np.bincount(k[mode == m], minlength=2) for m in (0, 1)]
    assert [p.argmax() for p in picks] in ([0, 1], [1, 0]), picks  # different generators for the two modes
    assert all(p.max() / p.sum() > 0.9 for p in picks), picks  # and each mode > 90 % to its own


def test_the_onnx_graph_gives_the_pytorch_scores(two_generators):
    import onnxruntime as ort

    assert two_generators["form"] == "plain"  # the fast sequence form is for one generator
    raw, _ = two_modes(64, seed=3)
    windows = np.concatenate([raw, np.stack(list(NEITHER.values()))[:, :, None].astype(np.float32)])
    sess = ort.InferenceSession(str(two_generators["onnx"]), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"window": windows})))
    with torch.no_grad():
        want = dict(zip(OUTPUTS, (t.numpy() for t in two_generators["scorer"](torch.from_numpy(windows)))))
    assert set(got) == set(OUTPUTS)
    for name in ("score", "channel_scores", "cell_scores", "critic_score", "reconstruction"):
        assert np.max(np.abs(got[name] - want[name])) < 1e-4 * max(1.0, np.max(np.abs(want[name]))), name
    # the reconstruction is the classifier's generator's, G_k(E_k(x)) for k = argmax C(f(x))
    nets, x = two_generators["nets"], two_generators["wt"](torch.from_numpy(windows))
    with torch.no_grad():
        k = nets.classifier(nets.critic.features(x)).argmax(dim=1)
        own = torch.stack([nets.generator[j](nets.encoder[j](x[i:i + 1]))[0] for i, j in enumerate(k.tolist())])
    assert np.allclose(got["reconstruction"], own.numpy(), atol=1e-5)


def test_a_window_from_neither_mode_scores_above_the_normal_ones(two_generators):
    scorer, wt, nets = two_generators["scorer"], two_generators["wt"], two_generators["nets"]
    normal, _ = two_modes(400, seed=1)  # windows the model never saw
    odd = torch.from_numpy(np.stack(list(NEITHER.values()))[:, :, None].astype(np.float32))
    with torch.no_grad():
        s_normal, s_odd = scorer(torch.from_numpy(normal))[0].numpy(), scorer(odd)[0].numpy()
        # the score is 002's: (1 - alpha) * A_R + alpha * KL, from its two parts
        x = wt(odd)
        a_r = score_parts(x, nets.encoder, nets.generator, nets.critic, 1.0, nets.classifier, alpha=0.0).fanogan
        kl = score_parts(x, nets.encoder, nets.generator, nets.critic, 1.0, nets.classifier, alpha=1.0).fanogan
    assert torch.all(kl >= -1e-6) and np.allclose(s_odd, 0.1 * a_r.numpy() + 0.9 * kl.numpy(), rtol=1e-4, atol=1e-6)
    # half of one mode and half of the other (what D-AnoGAN is for): far above every normal window
    assert s_odd[0] > 3 * s_normal.max(), (s_odd, s_normal.max())
    # every window from neither mode is far from the reconstruction its generator can make (alpha 0:
    # the residual alone; with alpha 0.9 the KL term can be small for a window the classifier is sure of)
    scorer.alpha = 0.0
    try:
        with torch.no_grad():
            r_normal, r_odd = scorer(torch.from_numpy(normal))[0].numpy(), scorer(odd)[0].numpy()
    finally:
        scorer.alpha = nets.config.alpha
    assert np.all(r_odd > 3 * r_normal.max()), dict(zip(NEITHER, r_odd))


def test_prior_loss_follows_the_classifier_once_the_entropy_bonus_has_decayed():
    target = torch.tensor([0.7, 0.2, 0.1])

    def fit(step: int) -> torch.Tensor:
        logits = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.Adam([logits], lr=0.05)
        for _ in range(600):
            loss, _ = danogan.prior_loss(logits, target, step, TrainConfig(generators=3))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return torch.softmax(logits.detach(), 0)

    assert torch.allclose(fit(step=20_000), target, atol=0.02)  # 1000 * 0.999^20000: no bonus left
    assert torch.allclose(fit(step=0), torch.full((3,), 1 / 3), atol=0.02)  # the bonus holds it uniform


def test_one_generator_trains_as_before(monkeypatch):
    """K = 1 never reaches the D-AnoGAN code, and its settings do not touch the single WGAN's weights."""
    def refuse(*a, **k):
        raise AssertionError("the single-generator path called train_multi")

    monkeypatch.setattr(danogan, "train_multi", refuse)
    g = torch.Generator().manual_seed(0)
    phase = torch.rand(128, 1, generator=g) * 6.28
    t = torch.linspace(0, 6.28, 16)
    data = torch.stack([torch.sin(t + phase), torch.cos(t + phase)], dim=1) * 0.9
    small = dict(iterations=5, encoder_iterations=5, width=4, latent_dim=3, batch_size=16, seed=7, log_every=1)
    a = train(data, TrainConfig(**small), progress=False)
    b = train(data, TrainConfig(**small, generators=1, alpha=0.3, classifier_weight=5.0, prior_entropy_weight=1.0,
                                prior_entropy_decay=0.5, prior_lr=0.1), progress=False)
    assert a.classifier is None and a.prior is None and isinstance(a.generator, Generator)
    for m1, m2 in [(a.generator, b.generator), (a.critic, b.critic), (a.encoder, b.encoder)]:
        s1, s2 = m1.state_dict(), m2.state_dict()
        assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.mark.parametrize("transform,level,kind", [("sequence", 0.0, "fanogan"), ("distance-plot", 1.0, "combined")])
def test_untrained_multi_scorer_exports_exactly(tmp_path, transform, level, kind):
    """Random weights, K = 3, conv networks (batch norm in the generators), with the level term and
    the combined kind too: ONNX Runtime gives PyTorch's outputs."""
    import onnxruntime as ort

    torch.manual_seed(0)
    values = synthetic_series(400)
    wt = WindowTransform(transform, fit_normalisation(values), 32, plot_size=16)
    shape = wt.output_shape()
    critic = Critic("conv", shape, 8)
    scorer = ScoringNetwork(wt, torch.nn.ModuleList([Encoder("conv", shape, 8, 4) for _ in range(3)]),
                            torch.nn.ModuleList([Generator("conv", shape, 8, 4) for _ in range(3)]), critic, 1.0,
                            level, kind, critic_mean=0.3, critic_scale=2.0,
                            classifier=danogan.classifier_for(critic, 3), alpha=0.7)
    assert export_onnx(scorer, 32, 3, tmp_path / "model.onnx") == "plain"
    windows = np.stack([values[i:i + 32] for i in range(0, 300, 7)]) * 1.3
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"window": windows})))
    with torch.no_grad():
        want = dict(zip(OUTPUTS, (t.numpy() for t in scorer(torch.from_numpy(windows)))))
    for name in ("score", "channel_scores", "cell_scores", "critic_score", "reconstruction"):
        assert np.max(np.abs(got[name] - want[name])) < 1e-4 * max(1.0, np.max(np.abs(want[name]))), name


def test_train_generators_on_the_command_line(tmp_path):
    from stream_detector.runtime.scoring import Scorer

    write_csv(tmp_path / "train.csv", synthetic_series(800))
    common = ["train", "--data", tmp_path / "train.csv", "--window", 16, "--stride", 4, "--iterations", 5,
              "--encoder-iterations", 5, "--width", 8, "--latent", 4, "--quiet"]
    proc = run(*common, "--out", tmp_path / "m", "--generators", 2, "--alpha", 0.8)
    assert "2 generators, learned prior" in proc.stdout
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["score"]["generators"] == 2 and card["score"]["alpha"] == 0.8
    assert card["score"]["formula"].startswith("(1 - alpha) * mean((x - G_k(E_k(x)))^2) + alpha * KL(C(f(x)) || ")
    assert card["training"]["config"]["generators"] == 2 and len(card["training"]["prior"]) == 2
    assert card["graph"]["form"] == "plain"
    # the PyTorch scorer rebuilt from the card and model.onnx gives the graph's scores
    windows = np.stack([synthetic_series(800)[i:i + 16] for i in range(0, 600, 9)])
    net = scorer_from_model_dir(tmp_path / "m")
    assert isinstance(net.generator, torch.nn.ModuleList) and len(net.generator) == 2 and net.alpha == 0.8
    with torch.no_grad():
        want = net(torch.from_numpy(windows))[0].numpy()
    assert np.allclose(Scorer(tmp_path / "m").score(windows)[0], want, rtol=1e-4, atol=1e-6)
    for bad, fragment in ((["--generators", 0], "--generators must be 1 or more, got 0"),
                          (["--alpha", 1.5], "--alpha must be between 0 and 1, got 1.5")):
        assert_one_line_error(run(*common, "--out", tmp_path / "bad", *bad, ok=False), fragment)
    assert not (tmp_path / "bad").exists()
