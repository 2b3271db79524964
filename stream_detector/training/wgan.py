"""Offline training: WGAN-GP first, then the encoder against the frozen generator.

The recipe follows the guide's method section (Gulrajani et al. for the GAN; f-AnoGAN /
Haloui et al. for the encoder):

* critic loss ``E[D(G(z))] - E[D(x)] + lambda * E[(||grad D(x_hat)||_2 - 1)^2]``, with
  ``x_hat`` on straight lines between real and generated samples, ``lambda = 10``,
  ``n_critic = 5`` critic steps per generator step, Adam(lr 1e-4, betas (0.5, 0.9));
* encoder modes ``izi`` (input reconstruction), ``ziz`` (latent reconstruction) and
  ``izi_f`` (``izi`` plus ``kappa`` times the critic-feature residual).

Everything is seeded from one integer; on the same machine and thread count two runs give
identical weights.  Training has a wall-clock budget because on a 2-core CPU a GAN can eat
hours: when the budget runs out the loop stops and says so in the history.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .nets import Critic, Encoder, Generator, sample_prior

ENCODER_MODES = ("izi", "ziz", "izi_f")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (recorded in the model card)."""

    arch: str = "conv"
    width: int | None = None  # None: sized from the input (nets.default_sizes)
    latent_dim: int | None = None
    iterations: int = 2000  # generator steps
    n_critic: int = 5
    gp_lambda: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    batch_size: int = 64
    encoder_iterations: int = 2000
    encoder_lr: float = 1e-4
    encoder_mode: str = "izi_f"
    kappa: float = 1.0
    seed: int = 0
    max_seconds: float | None = None  # wall-clock budget for GAN + encoder together
    checkpoint_every: int = 0  # generator steps; 0 = only at the end
    log_every: int = 10
    # D-AnoGAN (research document 002, training/danogan.py): K generators and encoders with a
    # learned prior over them and a classifier on the critic's features; 1 = the single WGAN above.
    generators: int = 1
    alpha: float = 0.9  # score weight: (1 - alpha) * A_R + alpha * KL (002's MNIST value, not tuned on test data)
    classifier_weight: float = 1.0  # lambda of the generator's classifier term
    prior_entropy_weight: float = 1000.0  # 002's bandit: entropy bonus weight ...
    prior_entropy_decay: float = 0.999  # ... times decay ** step
    prior_lr: float = 1e-3  # 002's bandit learning rate
    # The forecaster of the forecast score kinds (training/forecast.py), trained after the GAN
    forecast_horizon: int = 0  # steps predicted; 0: forecast.default_horizon(window)
    forecast_iterations: int = 0  # Adam steps; 0: as many as encoder_iterations
    forecast_hidden: int = 64

    def __post_init__(self) -> None:
        if self.encoder_mode not in ENCODER_MODES:
            raise ValueError(f"encoder mode {self.encoder_mode!r}: choose one of {', '.join(ENCODER_MODES)}")
        if isinstance(self.generators, bool) or int(self.generators) != self.generators or self.generators < 1:
            raise ValueError(f"generators must be an integer of 1 or more, got {self.generators!r}")
        self.generators = int(self.generators)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha!r}")
        self.betas = tuple(self.betas)


@dataclass
class TrainedNets:
    """The trained networks; with ``config.generators > 1`` (D-AnoGAN) ``generator`` and
    ``encoder`` are ``nn.ModuleList`` s of K, ``classifier`` maps the critic's features to K
    logits and ``prior`` is the learned prior over the generators (probabilities)."""

    generator: Generator | nn.ModuleList
    critic: Critic
    encoder: Encoder | nn.ModuleList
    config: TrainConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    classifier: nn.Module | None = None
    prior: list[float] | None = None


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """WGAN-GP's penalty on the critic's gradient norm at random points between real and fake."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=gen)
    x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def encoder_loss(mode: str, x: torch.Tensor, encoder: nn.Module, generator: nn.Module, critic: Critic,
                 kappa: float, z: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder objective for ``izi``, ``ziz`` or ``izi_f`` (means over elements = the 1/n factors)."""
    if mode == "ziz":
        assert z is not None
        return ((z - encoder(generator(z))) ** 2).mean()
    recon = generator(encoder(x))
    loss = ((x - recon) ** 2).mean()
    if mode == "izi_f":
        loss = loss + kappa * ((critic.features(x) - critic.features(recon)) ** 2).mean()
    return loss


def train(data: torch.Tensor, cfg: TrainConfig, progress: bool = True,
          checkpoint_dir: Path | None = None) -> TrainedNets:
    """Train generator, critic and encoder on ``data`` (already transformed, in ``[-1, 1]``).

    ``data`` is ``[N, C, L]`` or ``[N, C, H, W]``.  Returns the networks in eval mode with
    the per-step history: ``wasserstein`` (the critic's estimate E[D(x)] - E[D(G(z))]),
    ``gradient_penalty``, ``generator`` loss and ``encoder`` loss.  ``cfg.generators > 1``
    trains D-AnoGAN instead (:func:`.danogan.train_multi`).
    """
    from .nets import default_sizes

    if cfg.generators > 1:  # D-AnoGAN; the single-generator path below is left as it was
        from .danogan import train_multi

        return train_multi(data, cfg, progress=progress, checkpoint_dir=checkpoint_dir)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = tuple(data.shape[1:])
    width, latent = default_sizes(shape, cfg.arch)
    cfg.width = cfg.width or width
    cfg.latent_dim = cfg.latent_dim or latent
    G = Generator(cfg.arch, shape, cfg.width, cfg.latent_dim)
    D = Critic(cfg.arch, shape, cfg.width)
    E = Encoder(cfg.arch, shape, cfg.width, cfg.latent_dim)
    history: dict[str, list[float]] = {"wasserstein": [], "gradient_penalty": [], "generator": [], "encoder": []}
    started = time.monotonic()
    gan_budget = None if cfg.max_seconds is None else 0.75 * cfg.max_seconds
    stopped_early = False
    n = data.shape[0]

    def batch() -> torch.Tensor:
        return data[torch.randint(0, n, (cfg.batch_size,), generator=gen)]

    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    G.train()
    D.train()
    bar = _progress(cfg.iterations, "WGAN-GP", progress)
    for step in range(cfg.iterations):
        for _ in range(cfg.n_critic):
            real = batch()
            with torch.no_grad():
                fake = G(sample_prior(cfg.batch_size, cfg.latent_dim, gen))
            d_real, d_fake = D(real).mean(), D(fake).mean()
            gp = gradient_penalty(D, real, fake, gen)
            loss_d = d_fake - d_real + cfg.gp_lambda * gp
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        loss_g = -D(G(sample_prior(cfg.batch_size, cfg.latent_dim, gen))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for p in D.parameters():
            p.requires_grad_(True)
        if step % cfg.log_every == 0 or step == cfg.iterations - 1:
            history["wasserstein"].append((d_real - d_fake).item())
            history["gradient_penalty"].append(gp.item())
            history["generator"].append(loss_g.item())
            bar.set_postfix(W=f"{history['wasserstein'][-1]:.3f}", gp=f"{history['gradient_penalty'][-1]:.3f}")
        bar.update(1)
        if checkpoint_dir and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir / f"gan-{step + 1:06d}.pt", G=G, D=D)
        if gan_budget is not None and time.monotonic() - started > gan_budget:
            stopped_early = True
            break
    bar.close()
    gan_seconds = time.monotonic() - started

    G.eval()
    D.eval()
    for p in list(G.parameters()) + list(D.parameters()):
        p.requires_grad_(False)
    def loss_e() -> torch.Tensor:
        z = sample_prior(cfg.batch_size, cfg.latent_dim, gen) if cfg.encoder_mode == "ziz" else None
        return encoder_loss(cfg.encoder_mode, batch(), E, G, D, cfg.kappa, z)

    stopped_early |= train_encoder_phase(E, loss_e, cfg, history, started, progress, f"encoder ({cfg.encoder_mode})")
    nets = TrainedNets(G, D, E, cfg, history, stopped_early=stopped_early,
                       seconds={"gan": gan_seconds, "encoder": time.monotonic() - started - gan_seconds})
    if checkpoint_dir:
        save_checkpoint(checkpoint_dir / "final.pt", G=G, D=D, E=E)
    return nets


def train_encoder_phase(encoder: nn.Module, loss_fn, cfg: TrainConfig, history: dict, started: float,
                        progress: bool, desc: str) -> bool:
    """The encoder phase of every trainer (one encoder or D-AnoGAN's K): Adam on ``loss_fn()``
    for ``cfg.encoder_iterations`` steps within the run's wall-clock budget (counted from
    ``started``), logged in ``history["encoder"]``; leaves the encoder frozen in eval mode.
    Returns whether the budget stopped it."""
    opt_e = torch.optim.Adam(encoder.parameters(), lr=cfg.encoder_lr, betas=cfg.betas)
    encoder.train()
    stopped = False
    bar = _progress(cfg.encoder_iterations, desc, progress)
    for step in range(cfg.encoder_iterations):
        loss_e = loss_fn()
        opt_e.zero_grad(set_to_none=True)
        loss_e.backward()
        opt_e.step()
        if step % cfg.log_every == 0 or step == cfg.encoder_iterations - 1:
            history["encoder"].append(loss_e.item())
            bar.set_postfix(loss=f"{history['encoder'][-1]:.4f}")
        bar.update(1)
        if cfg.max_seconds is not None and time.monotonic() - started > cfg.max_seconds:
            stopped = True
            break
    bar.close()
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return stopped


def save_checkpoint(path: Path, **modules: nn.Module) -> None:
    """Weights only (state dicts of tensors), loadable with ``torch.load(weights_only=True)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: m.state_dict() for name, m in modules.items()}, path)


def config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["betas"] = list(cfg.betas)
    return d
