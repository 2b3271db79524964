"""D-AnoGAN (research document 002, Dimon 2021): several generators and encoders, a learned
prior over them and a classifier on the critic's features, for normal data with several modes.

One generator has to stretch a single continuous manifold over every mode of the normal data
(flight phases, eclipse and sunlight; nine MNIST digits), and what lies between the modes is
then reconstructed well too.  With K generators each can keep to one mode; the classifier tells
which generator a sample belongs to, and an anomaly is scored by the one generator its
classifier output picks (:func:`~.export.score_parts`).

Training (``train --generators K``; 002's Appendix A and its code: ``train_G``, ``train_E_2``,
``train_B``), everything seeded from ``cfg.seed``:

* **GAN phase**, per generator step: ``n_critic`` WGAN-GP critic steps as in
  :func:`~.wgan.train`, the fakes ``G_k(z)`` drawn with ``k ~ Categorical(softmax(b))`` (``b``:
  the learned prior logits, 002's "bandit", initialised to ones) and ``z`` from the uniform
  prior, each generator run on its own sub-batch; then

  - the generator step ``l_G = -E[D(G_k(z))] + lambda * CE(C(f(G_k(z))), k)``
    (``classifier_weight``): the classifier term makes each generator's output recognisable as
    its own, so two generators do not settle on the same mode;
  - the classifier step: the same cross-entropy on the fakes' critic features (detached);
  - the bandit step ``l_B = -mean_k(p_k * log softmax(b)_k) - nu * beta^t * H(softmax(b)) / K``
    with ``p`` the classifier's mean output on a real batch (no gradient into classifier or
    critic), ``nu = prior_entropy_weight`` (1000) and ``beta = prior_entropy_decay`` (0.999):
    the prior follows the share of real data the classifier gives each generator, and the
    decaying entropy bonus keeps it near uniform while generators and classifier learn (its
    weight ``1000 * 0.999^t`` falls to 1 only after about 6,900 generator steps: in short runs
    the prior stays close to uniform).

* **Encoder phase**, generators, critic and classifier frozen: the project's encoder modes per
  cluster.  ``izi`` / ``izi_f`` send each real ``x`` to ``k = argmax C(f(x))`` and fit ``E_k``
  so that ``G_k(E_k(x))`` reconstructs it (002's "xzx-training"); ``ziz`` draws ``k`` from the
  prior and fits ``E_k(G_k(z)) = z``.

Deviations from 002: the encoders are not also trained on ``z`` during the GAN phase (002's own
ablation, Table 5.6, found the phase on real data alone enough: MNIST mean ROC-AUC 0.90 without
the second phase, 0.91 with it); the classifier is one linear layer on the critic's last hidden
layer (002: a convolution, batch norm and a linear layer on an intermediate critic layer); the
networks are the project's (:mod:`.nets`), the Adam settings the GAN's (002: per-network ones);
the score's ``alpha`` is fixed (0.9, 002's MNIST value), never chosen on test labels (002 took
the best ``alpha`` per test on its test data).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .nets import Critic, Encoder, Generator, default_sizes, sample_prior
from .wgan import TrainConfig, TrainedNets, _progress, gradient_penalty, save_checkpoint, train_encoder_phase


class Prior(nn.Module):
    """The learned prior over the K generators: logits (002's bandit), initialised to ones."""

    def __init__(self, k: int):
        super().__init__()
        self.logits = nn.Parameter(torch.ones(k))

    def probs(self) -> torch.Tensor:
        return F.softmax(self.logits, dim=0)


def classifier_for(critic: Critic, k: int) -> nn.Linear:
    """The classifier: critic features (the trunk's output) to K logits."""
    return nn.Linear(critic.trunk.out_features, k)


def prior_loss(logits: torch.Tensor, p_real: torch.Tensor, step: int,
               cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """002's bandit loss at generator step ``step`` and the prior's entropy (nats):
    ``-mean_k(p_real_k * log softmax(b)_k) - nu * beta^step * H(softmax(b)) / K``; its minimum
    without the entropy bonus is ``softmax(b) = p_real``."""
    log_b = F.log_softmax(logits, dim=0)
    entropy = -(log_b.exp() * log_b).sum()
    bonus = cfg.prior_entropy_weight * cfg.prior_entropy_decay ** step
    return -(p_real * log_b).mean() - bonus * entropy / len(logits), entropy


def route(fn: Callable[[int, torch.Tensor], torch.Tensor], inputs: torch.Tensor, k: torch.Tensor,
          n: int) -> torch.Tensor:
    """``fn(k_i, inputs_i)`` for every row, each of the ``n`` branches on its own sub-batch, in the
    rows' order (training only: the sub-batches depend on the data; the exported scorer runs every
    branch on every window and selects with a mask instead)."""
    parts, order = [], []
    for j in range(n):
        idx = torch.nonzero(k == j).squeeze(1)
        if len(idx):
            parts.append(fn(j, inputs[idx]))
            order.append(idx)
    return torch.cat(parts)[torch.argsort(torch.cat(order))]


def train_multi(data: torch.Tensor, cfg: TrainConfig, progress: bool = True,
                checkpoint_dir: Path | None = None) -> TrainedNets:
    """Train K = ``cfg.generators`` generators and encoders, one critic, the classifier and the
    prior on ``data`` (transformed, in ``[-1, 1]``).  Returns :class:`~.wgan.TrainedNets` with
    ``generator`` and ``encoder`` as ``nn.ModuleList`` s, ``classifier`` and ``prior`` (the final
    probabilities); history as :func:`~.wgan.train` plus ``classifier`` (the cross-entropy on the
    fakes) and ``prior_entropy`` (nats)."""
    k_count = cfg.generators
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = tuple(data.shape[1:])
    width, latent = default_sizes(shape, cfg.arch)
    cfg.width = cfg.width or width
    cfg.latent_dim = cfg.latent_dim or latent
    Gs = nn.ModuleList([Generator(cfg.arch, shape, cfg.width, cfg.latent_dim) for _ in range(k_count)])
    D = Critic(cfg.arch, shape, cfg.width)
    Es = nn.ModuleList([Encoder(cfg.arch, shape, cfg.width, cfg.latent_dim) for _ in range(k_count)])
    C = classifier_for(D, k_count)
    prior = Prior(k_count)
    history: dict[str, list[float]] = {"wasserstein": [], "gradient_penalty": [], "generator": [], "encoder": [],
                                       "classifier": [], "prior_entropy": []}
    started = time.monotonic()
    gan_budget = None if cfg.max_seconds is None else 0.75 * cfg.max_seconds
    stopped_early = False
    n = data.shape[0]

    def batch() -> torch.Tensor:
        return data[torch.randint(0, n, (cfg.batch_size,), generator=gen)]

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        """Generator indices from the learned prior and latent codes from the uniform prior."""
        k = torch.multinomial(prior.probs().detach(), cfg.batch_size, replacement=True, generator=gen)
        return k, sample_prior(cfg.batch_size, cfg.latent_dim, gen)

    def generate(z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return route(lambda j, s: Gs[j](s), z, k, k_count)

    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_g = torch.optim.Adam(Gs.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_c = torch.optim.Adam(C.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_b = torch.optim.Adam(prior.parameters(), lr=cfg.prior_lr, betas=cfg.betas)
    Gs.train()
    D.train()
    C.train()
    bar = _progress(cfg.iterations, f"D-AnoGAN, {k_count} generators", progress)
    for step in range(cfg.iterations):
        for _ in range(cfg.n_critic):
            real = batch()
            k, z = draw()
            with torch.no_grad():
                fake = generate(z, k)
            d_real, d_fake = D(real).mean(), D(fake).mean()
            gp = gradient_penalty(D, real, fake, gen)
            loss_d = d_fake - d_real + cfg.gp_lambda * gp
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        k, z = draw()
        feats = D.features(generate(z, k))
        adversarial = -D.head(feats).mean()
        loss_g = adversarial + cfg.classifier_weight * F.cross_entropy(C(feats), k)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        # the classifier on the same fakes' features, detached (C's gradients from l_G are dropped)
        loss_c = F.cross_entropy(C(feats.detach()), k)
        opt_c.zero_grad(set_to_none=True)
        loss_c.backward()
        opt_c.step()
        # the prior: towards the classifier's mean output on real data, with the decaying entropy bonus
        with torch.no_grad():
            p_real = F.softmax(C(D.features(real)), dim=1).mean(dim=0)
        loss_b, entropy = prior_loss(prior.logits, p_real, step, cfg)
        opt_b.zero_grad(set_to_none=True)
        loss_b.backward()
        opt_b.step()
        for p in D.parameters():
            p.requires_grad_(True)
        if step % cfg.log_every == 0 or step == cfg.iterations - 1:
            history["wasserstein"].append((d_real - d_fake).item())
            history["gradient_penalty"].append(gp.item())
            history["generator"].append(adversarial.item())
            history["classifier"].append(loss_c.item())
            history["prior_entropy"].append(entropy.item())
            bar.set_postfix(W=f"{history['wasserstein'][-1]:.3f}", CE=f"{history['classifier'][-1]:.3f}",
                            prior=" ".join(f"{v:.2f}" for v in prior.probs().tolist()))
        bar.update(1)
        if checkpoint_dir and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir / f"gan-{step + 1:06d}.pt", G=Gs, D=D, C=C, B=prior)
        if gan_budget is not None and time.monotonic() - started > gan_budget:
            stopped_early = True
            break
    bar.close()
    gan_seconds = time.monotonic() - started

    for m in (Gs, D, C, prior):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    def loss_e() -> torch.Tensor:
        if cfg.encoder_mode == "ziz":
            k, z = draw()
            with torch.no_grad():
                x_gen = generate(z, k)
            return ((z - route(lambda j, s: Es[j](s), x_gen, k, k_count)) ** 2).mean()
        x = batch()
        with torch.no_grad():
            f_x = D.features(x)
            k = C(f_x).argmax(dim=1)
        recon = route(lambda j, s: Gs[j](Es[j](s)), x, k, k_count)
        loss = ((x - recon) ** 2).mean()
        if cfg.encoder_mode == "izi_f":
            loss = loss + cfg.kappa * ((f_x - D.features(recon)) ** 2).mean()
        return loss

    stopped_early |= train_encoder_phase(Es, loss_e, cfg, history, started, progress,
                                         f"encoders ({cfg.encoder_mode})")
    probs = [float(v) for v in prior.probs()]
    nets = TrainedNets(Gs, D, Es, cfg, history, stopped_early=stopped_early,
                       seconds={"gan": gan_seconds, "encoder": time.monotonic() - started - gan_seconds},
                       classifier=C, prior=probs)
    if checkpoint_dir:
        save_checkpoint(checkpoint_dir / "final.pt", G=Gs, D=D, E=Es, C=C, B=prior)
    return nets
