"""Training: reproducible from a seed, every encoder mode, checkpoints, wall-clock budget."""

import time

import pytest

torch = pytest.importorskip("torch")

from stream_detector.training.wgan import TrainConfig, encoder_loss, train  # noqa: E402


def data(n=256):
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 6.28, 16)
    phase = torch.rand(n, 1, generator=g) * 6.28
    return torch.stack([torch.sin(t + phase), torch.cos(t + phase)], dim=1) * 0.9  # [n, 2, 16]


def small(**kw):
    base = dict(iterations=5, encoder_iterations=5, width=4, latent_dim=3, batch_size=16, seed=7, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def test_same_seed_same_weights():
    a, b = train(data(), small(), progress=False), train(data(), small(), progress=False)
    for m1, m2 in [(a.generator, b.generator), (a.critic, b.critic), (a.encoder, b.encoder)]:
        for p1, p2 in zip(m1.state_dict().values(), m2.state_dict().values()):
            assert torch.equal(p1, p2)
    c = train(data(), small(seed=8), progress=False)
    assert not torch.equal(next(iter(a.generator.parameters())), next(iter(c.generator.parameters())))


@pytest.mark.parametrize("mode", ["izi", "ziz", "izi_f"])
def test_encoder_modes_reduce_their_loss(mode):
    nets = train(data(), small(iterations=3, encoder_iterations=150, encoder_mode=mode, encoder_lr=1e-3),
                 progress=False)
    losses = nets.history["encoder"]
    assert len(losses) == 150 and sum(losses[-10:]) < sum(losses[:10])


def test_izi_f_adds_the_feature_term():
    nets = train(data(), small(), progress=False)
    x = data(32)
    izi = encoder_loss("izi", x, nets.encoder, nets.generator, nets.critic, 1.0)
    izi_f0 = encoder_loss("izi_f", x, nets.encoder, nets.generator, nets.critic, 0.0)
    izi_f2 = encoder_loss("izi_f", x, nets.encoder, nets.generator, nets.critic, 2.0)
    assert torch.isclose(izi, izi_f0) and izi_f2 > izi


def test_history_checkpoints_and_budget(tmp_path):
    started = time.monotonic()
    nets = train(data(), small(iterations=100000, max_seconds=1.5), progress=False, checkpoint_dir=tmp_path)
    assert time.monotonic() - started < 15
    assert nets.stopped_early
    assert set(nets.history) == {"wasserstein", "gradient_penalty", "generator", "encoder"}
    assert all(len(v) > 0 for v in nets.history.values())
    saved = torch.load(tmp_path / "final.pt", weights_only=True)
    assert set(saved) == {"G", "D", "E"}


def test_unknown_encoder_mode_is_rejected():
    with pytest.raises(ValueError, match="encoder mode"):
        TrainConfig(encoder_mode="zz")
