"""Generator, critic and encoder, sized from the shape of the transformed window.

Three families share one interface so the training loop and the exported scorer never
look at the architecture:

* ``conv`` for 1-D sequences ``[C, L]`` and 2-D images ``[C, H, H]``: strided
  convolutions halve the length/side down to 4-8, widths double per layer from ``width``
  up to ``8 * width``.  DCGAN-style, without batch norm in the critic (WGAN-GP's gradient
  penalty is per sample) and with batch norm in the generator.
* ``mlp``: fully connected on the flattened input (the paper's own choice for MNIST and
  raw accelerations); cheapest where inputs are small.

The critic exposes ``features(x)``, its last hidden layer, used by the ``izi_f`` encoder
loss and by the discriminator term of the anomaly score.  The encoder ends in tanh and
the prior is uniform on ``[-1, 1]^d``, so codes stay in the region the generator knows.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ARCHS = ("conv", "mlp")


def sample_prior(n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latent codes from the uniform prior on ``[-1, 1]^d`` (matches the encoder's tanh)."""
    return torch.rand(n, latent_dim, generator=generator) * 2.0 - 1.0


def _downsamples(size: int) -> int:
    """How many stride-2 layers take ``size`` down to 4..8 while staying an exact halving."""
    n = 0
    while size % 2 == 0 and size // 2 >= 4 and n < 4:
        size //= 2
        n += 1
    return n


def _widths(width: int, n: int) -> list[int]:
    return [min(width * 2**i, width * 8) for i in range(n)]


class _ConvTrunk(nn.Module):
    """Strided convolutions to a flat feature vector: the critic's and encoder's body."""

    def __init__(self, shape: tuple[int, ...], width: int):
        super().__init__()
        dims = len(shape) - 1
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        n = _downsamples(shape[1])
        if n == 0:
            raise ValueError(f"input length {shape[1]} is too short or odd for the conv networks; use --arch mlp")
        layers: list[nn.Module] = []
        c_in = shape[0]
        for c_out in _widths(width, n):
            layers += [conv(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.out_features = c_in * (shape[1] // 2**n) ** dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _MlpTrunk(nn.Module):
    def __init__(self, shape: tuple[int, ...], width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(shape), width * 4),
            nn.LeakyReLU(0.2),
            nn.Linear(width * 4, width * 4),
            nn.LeakyReLU(0.2),
        )
        self.out_features = width * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _trunk(arch: str, shape: tuple[int, ...], width: int) -> nn.Module:
    if arch == "conv":
        return _ConvTrunk(shape, width)
    if arch == "mlp":
        return _MlpTrunk(shape, width)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


class Critic(nn.Module):
    """WGAN critic: an unbounded real-valued score, and its feature trunk for f-AnoGAN."""

    def __init__(self, arch: str, shape: tuple[int, ...], width: int):
        super().__init__()
        self.trunk = _trunk(arch, shape, width)
        self.head = nn.Linear(self.trunk.out_features, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).squeeze(1)


class Encoder(nn.Module):
    """Maps an input to a latent code in ``[-1, 1]^d`` (tanh keeps it inside the prior)."""

    def __init__(self, arch: str, shape: tuple[int, ...], width: int, latent_dim: int):
        super().__init__()
        self.trunk = _trunk(arch, shape, width)
        self.head = nn.Sequential(nn.Linear(self.trunk.out_features, latent_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class Generator(nn.Module):
    """Maps a latent code to an input-shaped tensor in ``[-1, 1]`` (tanh output)."""

    def __init__(self, arch: str, shape: tuple[int, ...], width: int, latent_dim: int):
        super().__init__()
        self.shape = tuple(shape)
        if arch == "mlp":
            self.net = nn.Sequential(
                nn.Linear(latent_dim, width * 4),
                nn.ReLU(),
                nn.Linear(width * 4, width * 4),
                nn.ReLU(),
                nn.Linear(width * 4, math.prod(shape)),
                nn.Tanh(),
                nn.Unflatten(1, self.shape),
            )
            return
        if arch != "conv":
            raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
        dims = len(shape) - 1
        n = _downsamples(shape[1])
        if n == 0:
            raise ValueError(f"input length {shape[1]} is too short or odd for the conv networks; use --arch mlp")
        deconv = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        widths = list(reversed(_widths(width, n)))
        base = shape[1] // 2**n
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, widths[0] * base**dims),
            nn.ReLU(),
            nn.Unflatten(1, (widths[0],) + (base,) * dims),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [deconv(c_in, c_out, 4, stride=2, padding=1), norm(c_out), nn.ReLU()]
        layers += [deconv(widths[-1], shape[0], 4, stride=2, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def default_sizes(shape: tuple[int, ...], arch: str) -> tuple[int, int]:
    """(width, latent_dim) from the input shape: small inputs get small networks.

    FLOPs decide the worker's throughput on a CPU, so widths grow with the channel count
    only as far as detection needs: 16 for a handful of channels, up to 64.
    """
    channels = shape[0]
    width = 16 if channels <= 4 else 32 if channels <= 32 else 64
    if arch == "mlp":
        width = max(width, 64)
    latent = int(min(64, max(8, 2 * channels)))
    return width, latent


def count_flops(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass per sample, from conv and linear layers."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += 2 * mod.in_features * mod.out_features * (out.numel() // out.shape[-1]) // out.shape[0]
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            k = math.prod(mod.kernel_size) * mod.in_channels // mod.groups
            total += 2 * k * out[0].numel()
        elif isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
            k = math.prod(mod.kernel_size) * mod.out_channels // mod.groups
            total += 2 * k * inp[0][0].numel()

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            module(example[:1])
    finally:
        for h in handles:
            h.remove()
    return int(total)
