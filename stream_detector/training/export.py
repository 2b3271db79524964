"""The fused scorer graph and its ONNX export.

:class:`ScoringNetwork` chains transform, encoder, generator and the critic's feature trunk
into one module from raw windows to scores, so the ONNX file is the whole model:

``A(x) = A_R(x) + kappa * A_D(x) + lambda * A_L(x)`` with ``A_R = mean((x - G(E(x)))^2)``
over the transformed input, ``A_D = mean((f(x) - f(G(E(x))))^2)`` over the critic's last
hidden layer (f-AnoGAN, without square roots), and the level term ``A_L``, the mean over
channels of :meth:`~.transforms.WindowTransform.range_excess` (how far the raw window leaves
the training range; ``lambda`` is the card's ``level_weight``, 0 for none).
``channel_scores`` splits ``A_R + lambda * A_L`` over the input channels so an alert can name
the channels that drove it.

Sequence conv scorers are written in the form of :mod:`.onnx_graph` (the same function,
re-expressed for ONNX Runtime's fast CPU kernels, checked against the plain export at every
export); the others as PyTorch exports them.
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


class ScoringNetwork(nn.Module):
    """Raw windows ``[B, W, C]`` to (score, channel_scores, transformed input, reconstruction)."""

    def __init__(self, transform: WindowTransform, encoder: Encoder, generator: Generator, critic: Critic,
                 kappa: float, level_weight: float = 0.0):
        super().__init__()
        self.transform = transform
        self.encoder, self.generator, self.critic = encoder, generator, critic
        self.kappa = float(kappa)
        self.level_weight = float(level_weight)
        self.eval()

    def forward(self, window: torch.Tensor):
        x = self.transform(window)
        score, residual, recon = anomaly_scores(x, self.encoder, self.generator, self.critic, self.kappa)
        channels = self.transform.channel_attribution(window, residual)
        if self.level_weight:
            excess = self.level_weight * self.transform.range_excess(window)  # [B, C]
            score = score + excess.mean(dim=1)
            # the multivariate plot's channel shares sum to its residual; the others average to it
            channels = channels + (excess / excess.shape[1] if self.transform.kind == "distance-plot-mv" else excess)
        return score, channels, x, recon


def scorer_from_model_dir(model_dir: Path | str) -> ScoringNetwork:
    """The PyTorch scorer of a model directory, rebuilt from its card and the weights in its
    ``model.onnx`` (plain export or fast form, :func:`.onnx_graph.state_dict_params`): what
    the benchmark exports plainly to measure "before", and what tests compare against."""
    import numpy as np
    import onnx

    from . import onnx_graph
    from ..runtime.card import load_card
    from .nets import default_sizes

    card = load_card(model_dir)
    cfg = card.training.get("config", {})
    wt = WindowTransform(card.transform, card.normalisation, card.window, card.plot_size or 32)
    shape = wt.output_shape()
    arch = cfg.get("arch", "conv")
    width, latent = default_sizes(shape, arch)
    width, latent = cfg.get("width") or width, cfg.get("latent_dim") or latent
    scorer = ScoringNetwork(wt, Encoder(arch, shape, width, latent), Generator(arch, shape, width, latent),
                           Critic(arch, shape, width), float(card.score.get("kappa", 1.0)),
                           float(card.score.get("level_weight", 0.0)))
    params, eps = onnx_graph.state_dict_params(onnx.load(str(Path(model_dir) / "model.onnx")))
    state = {k: torch.from_numpy(np.array(v)) for k, v in params.items()}
    missing, unexpected = scorer.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("critic.head.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{model_dir}: weights do not fit the card's networks "
                         f"(missing {missing}, unexpected {unexpected})")
    for name, module in scorer.named_modules():
        if f"{name}.weight" in eps:
            module.eps = eps[f"{name}.weight"]
    return scorer.eval()


def export_onnx(scorer: ScoringNetwork, window: int, n_channels: int, path: Path, opset: int = 17,
                optimise: bool = True) -> str:
    """Write the scorer as ONNX with a dynamic batch axis (TorchScript exporter: fast, no onnxscript).

    With ``optimise`` (the default) a sequence conv scorer is written in the form ONNX Runtime
    runs fast (:mod:`.onnx_graph`: 2-D convolutions for its NCHWc kernels, transposed
    convolutions as phase convolutions, batch norm folded), after checking that it gives the
    plain export's outputs; other scorers, and ``optimise=False``, get the plain export.
    Returns the form written (``onnx_graph.FORM`` or ``"plain"``).
    """
    import io

    from . import onnx_graph

    example = torch.zeros(2, window, n_channels)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer, (example,), buf, input_names=["window"], output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in ("window",) + OUTPUTS},
            opset_version=opset, dynamo=False,
        )
    graph, form = buf.getvalue(), onnx_graph.PLAIN
    if optimise and scorer.transform.kind == "sequence" and not scorer.level_weight:  # the fast form has no A_L
        try:
            graph = onnx_graph.optimise(graph, window, n_channels, scorer.kappa, onnx_graph.params_from_torch(scorer))
            form = onnx_graph.FORM
        except onnx_graph.NotApplicable:
            pass
        except onnx_graph.GraphMismatch as e:  # a bug in the re-expression: never serve it, say so
            warnings.warn(f"the fast ONNX form disagrees with the plain export ({e}); writing the plain graph",
                          RuntimeWarning, stacklevel=2)
    Path(path).write_bytes(graph)
    return form
