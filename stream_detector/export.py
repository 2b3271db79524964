"""The fused scorer graph and its ONNX export.

:class:`AnomalyScorer` chains transform, encoder, generator and the critic's feature trunk
into one module from raw windows to scores, so the ONNX file is the whole model:

``A(x) = A_R(x) + kappa * A_D(x)`` with ``A_R = mean((x - G(E(x)))^2)`` over the
transformed input and ``A_D = mean((f(x) - f(G(E(x))))^2)`` over the critic's last hidden
layer (f-AnoGAN, without square roots).  ``channel_scores`` splits ``A_R`` over the input
channels so an alert can name the channels that drove it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .nets import Critic, Encoder, Generator
from .transforms import WindowTransform

OUTPUTS = ("score", "channel_scores", "transformed", "reconstruction")


def anomaly_scores(x: torch.Tensor, encoder: Encoder, generator: Generator, critic: Critic,
                   kappa: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score, squared residual (input-shaped) and reconstruction of transformed inputs ``x``."""
    recon = generator(encoder(x))
    residual = (x - recon) ** 2
    a_r = residual.flatten(1).mean(dim=1)
    a_d = ((critic.features(x) - critic.features(recon)) ** 2).mean(dim=1)
    return a_r + kappa * a_d, residual, recon


class AnomalyScorer(nn.Module):
    """Raw windows ``[B, W, C]`` to (score, channel_scores, transformed input, reconstruction)."""

    def __init__(self, transform: WindowTransform, encoder: Encoder, generator: Generator, critic: Critic,
                 kappa: float):
        super().__init__()
        self.transform = transform
        self.encoder, self.generator, self.critic = encoder, generator, critic
        self.kappa = float(kappa)
        self.eval()

    def forward(self, window: torch.Tensor):
        x = self.transform(window)
        score, residual, recon = anomaly_scores(x, self.encoder, self.generator, self.critic, self.kappa)
        return score, self.transform.channel_attribution(window, residual), x, recon


def export_onnx(scorer: AnomalyScorer, window: int, n_channels: int, path: Path, opset: int = 17) -> None:
    """Write the scorer as ONNX with a dynamic batch axis (TorchScript exporter: fast, no onnxscript)."""
    example = torch.zeros(2, window, n_channels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer, (example,), str(path), input_names=["window"], output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in ("window",) + OUTPUTS},
            opset_version=opset, dynamo=False,
        )
