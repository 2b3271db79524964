"""The fused scorer graph and its ONNX export.

:class:`ScoringNetwork` chains transform, encoder, generator and the critic into one module
from raw windows to scores, so the ONNX file is the whole model.  The score is chosen by the
card's ``score.kind`` (:data:`SCORE_KINDS`, ``train --score``):

* ``fanogan`` (the default): ``A_R(x) + kappa * A_D(x)`` with ``A_R = mean((x - G(E(x)))^2)``
  over the transformed input and ``A_D = mean((f(x) - f(G(E(x))))^2)`` over the critic's
  last hidden layer (f-AnoGAN, without square roots);
* ``critic``: the critic's own output, negated (``-D(x)``: the WGAN critic rates normal data
  high), nearly free once the features are computed (research documents 003 and 004; 003
  found it faster with earlier detection, 004 unreliable on MNIST);
* ``combined``: ``fanogan + critic_scale * (-D(x) - critic_mean)``: the critic's score
  standardised on the training windows and put on the fanogan score's scale
  (``critic_scale = std(fanogan) / std(-D)``), so that each counts alike;

With several generators (D-AnoGAN, ``train --generators K``, :mod:`.danogan`) the ``fanogan``
part is research document 002's score instead: ``(1 - alpha) * A_R + alpha * KL(C(f(x)) ||
C(f(G_k(E_k(x)))))``, with ``C`` the classifier on the critic's features and ``k`` the generator
``C`` picks for the window (no ``kappa * A_D`` term).  The pick is a one-hot mask, not a branch:
all K encoder/generator pairs run on every window, so the graph costs about K times a single
pair's reconstruction.

* ``forecast`` / ``hybrid`` (:mod:`.forecast`): the error of a small forecaster that predicts
  the window's last steps from its first (research document 000's forecast, AER's second
  half), alone or added to the fanogan score standardised on the training windows
  (``fanogan + forecast_scale * (forecast - forecast_mean)``); its squared errors are
  ``cell_scores`` (``forecast``) or join them (``hybrid``), so the root cause points at the
  steps the forecast missed;

plus, for every kind, the level term ``lambda * A_L``: the mean over channels of
:meth:`~.transforms.WindowTransform.range_excess` (how far the raw window leaves the training
range; ``lambda`` is the card's ``level_weight``, 0 for none).

Root cause: ``cell_scores [B, C, W]`` maps ``A_R``'s residual (and the level term) back onto
the raw window's channels and time steps (:meth:`~.transforms.WindowTransform.cell_attribution`),
and ``channel_scores [B, C]`` is its mean over time, so an alert can say which channel and
when.  Both come from the residual for the GAN's kinds (the critic gives one number per
window and cannot be split), from the forecast errors for the forecast kinds.
``critic_score [B]`` is ``-D(x)``, always in the graph.

Sequence conv scorers are written in the form of :mod:`.onnx_graph` (the same function,
re-expressed for ONNX Runtime's fast CPU kernels, checked against the plain export at every
export); the others as PyTorch exports them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .forecast import FORECAST_KINDS, Forecaster
from .nets import Critic, Encoder, Generator
from .transforms import WindowTransform

OUTPUTS = ("score", "channel_scores", "transformed", "reconstruction", "cell_scores", "critic_score")
GAN_SCORE_KINDS = ("fanogan", "critic", "combined")  # made from the GAN's parts alone (:func:`combine`)
SCORE_KINDS = GAN_SCORE_KINDS + FORECAST_KINDS


class ScoreParts(NamedTuple):
    """The parts every score kind is made of, for transformed inputs ``x``."""

    fanogan: torch.Tensor  # A_R + kappa * A_D, [B] (several generators: (1 - alpha) * A_R + alpha * KL)
    critic: torch.Tensor  # -D(x), [B]
    residual: torch.Tensor  # (x - G(E(x)))^2, input-shaped
    reconstruction: torch.Tensor


def residual_mean(residual: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``A_R``: the residual's mean, or with ``weights`` (one per input plane, summing to 1: the
    scored channels of a conditioned model) the weighted mean of the planes' means."""
    if weights is None:
        return residual.flatten(1).mean(dim=1)
    return (residual.flatten(2).mean(dim=2) * weights).sum(dim=1)


def score_parts(x: torch.Tensor, encoder: Encoder | nn.ModuleList, generator: Generator | nn.ModuleList,
                critic: Critic, kappa: float, classifier: nn.Module | None = None, alpha: float = 0.9,
                weights: torch.Tensor | None = None) -> ScoreParts:
    """The score's parts.  With a ``classifier`` (D-AnoGAN: ``encoder`` and ``generator`` are
    ModuleLists of K) the window's generator is the classifier's most probable one, chosen by a
    mask over all K reconstructions (ties share equally), and ``fanogan`` is ``(1 - alpha) * A_R
    + alpha * KL(p(x) || p(recon))`` with ``p = softmax(C(f(.)))``.  ``weights``: see
    :func:`residual_mean`."""
    if classifier is not None:
        return _multi_score_parts(x, encoder, generator, critic, classifier, alpha, weights)
    recon = generator(encoder(x))
    residual = (x - recon) ** 2
    a_r = residual_mean(residual, weights)
    f_x = critic.features(x)
    a_d = ((f_x - critic.features(recon)) ** 2).mean(dim=1)
    return ScoreParts(a_r + kappa * a_d, -critic.head(f_x).squeeze(1), residual, recon)


def _multi_score_parts(x: torch.Tensor, encoders: nn.ModuleList, generators: nn.ModuleList, critic: Critic,
                       classifier: nn.Module, alpha: float, weights: torch.Tensor | None = None) -> ScoreParts:
    f_x = critic.features(x)
    logits = classifier(f_x)
    p_x = torch.softmax(logits, dim=1)
    pick = (p_x >= p_x.max(dim=1, keepdim=True).values).to(x.dtype)
    pick = pick / pick.sum(dim=1, keepdim=True)  # [B, K], one-hot unless tied
    shape = (-1,) + (1,) * (x.dim() - 1)
    recon = None
    for j, (e, g) in enumerate(zip(encoders, generators)):
        part = pick[:, j].reshape(shape) * g(e(x))
        recon = part if recon is None else recon + part
    residual = (x - recon) ** 2
    a_r = residual_mean(residual, weights)
    kl = (p_x * (torch.log_softmax(logits, dim=1) - torch.log_softmax(classifier(critic.features(recon)), dim=1))
          ).sum(dim=1)
    return ScoreParts((1.0 - alpha) * a_r + alpha * kl, -critic.head(f_x).squeeze(1), residual, recon)


def combine(kind: str, parts: ScoreParts, critic_mean: float = 0.0, critic_scale: float = 1.0) -> torch.Tensor:
    """The score of ``kind`` (:data:`SCORE_KINDS`) from its parts (without the level term)."""
    if kind == "fanogan":
        return parts.fanogan
    if kind == "critic":
        return parts.critic
    if kind == "combined":
        return parts.fanogan + critic_scale * (parts.critic - critic_mean)
    raise ValueError(f"unknown score kind {kind!r}; choose one of {', '.join(SCORE_KINDS)}")


def anomaly_scores(x: torch.Tensor, encoder: Encoder, generator: Generator, critic: Critic,
                   kappa: float, classifier: nn.Module | None = None,
                   alpha: float = 0.9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fanogan score, squared residual (input-shaped) and reconstruction of transformed inputs."""
    parts = score_parts(x, encoder, generator, critic, kappa, classifier, alpha)
    return parts.fanogan, parts.residual, parts.reconstruction


def standardisation(fanogan: torch.Tensor, other: torch.Tensor, name: str = "critic") -> dict:
    """``<name>_mean`` and ``<name>_scale`` that put ``other`` (the critic's or the forecast's
    score of the training windows) on the scale of their fanogan score:
    ``fanogan + scale * (other - mean)`` counts each alike."""
    o_std = float(other.std())
    return {f"{name}_mean": float(other.mean()),
            f"{name}_scale": float(fanogan.std()) / o_std if o_std > 0 else 0.0}


def critic_standardisation(fanogan: torch.Tensor, critic: torch.Tensor) -> dict:
    """``critic_mean`` and ``critic_scale`` of the ``combined`` score from training windows' parts."""
    return standardisation(fanogan, critic, "critic")


class ScoringNetwork(nn.Module):
    """Raw windows ``[B, W, C]`` to the graph's :data:`OUTPUTS`."""

    def __init__(self, transform: WindowTransform, encoder: Encoder, generator: Generator, critic: Critic,
                 kappa: float, level_weight: float = 0.0, score_kind: str = "fanogan",
                 critic_mean: float = 0.0, critic_scale: float = 1.0, classifier: nn.Module | None = None,
                 alpha: float = 0.9, score_channels: list[int] | None = None,
                 forecaster: Forecaster | None = None, forecast_mean: float = 0.0, forecast_scale: float = 1.0):
        """``score_channels``: the indices of the channels the score is about (a model conditioned
        on the others: the networks see every channel, ``A_R``, the level term, ``channel_scores``
        and ``cell_scores`` count only these); None: all.  ``forecaster``: needed by the
        forecast kinds (it predicts the score channels)."""
        super().__init__()
        if score_kind not in SCORE_KINDS:
            raise ValueError(f"unknown score kind {score_kind!r}; choose one of {', '.join(SCORE_KINDS)}")
        if (score_kind in FORECAST_KINDS) != (forecaster is not None):
            raise ValueError(f"score kind {score_kind!r} " + ("needs a forecaster" if forecaster is None
                                                             else "has no use for a forecaster"))
        self.transform = transform
        self.encoder, self.generator, self.critic = encoder, generator, critic
        self.kappa = float(kappa)
        self.level_weight = float(level_weight)
        self.score_kind = score_kind
        self.critic_mean, self.critic_scale = float(critic_mean), float(critic_scale)
        self.classifier, self.alpha = classifier, float(alpha)  # D-AnoGAN: K encoders/generators and C
        self.score_channels = None if score_channels is None else sorted({int(c) for c in score_channels})
        self.forecaster = forecaster
        self.forecast_mean, self.forecast_scale = float(forecast_mean), float(forecast_scale)
        if self.score_channels is not None:
            n = transform.n_channels
            if not self.score_channels or self.score_channels[0] < 0 or self.score_channels[-1] >= n:
                raise ValueError(f"score channels {score_channels} are not among the {n} input channels")
            if transform.kind == "distance-plot-mv":
                raise ValueError("the multivariate distance plot mixes every channel in one plane: it cannot score "
                                 "some channels only")
            mask = torch.zeros(n)
            mask[self.score_channels] = 1.0
            self.register_buffer("score_mask", mask)
            self.register_buffer("score_weights", mask / mask.sum())
        self.eval()

    def score_spec(self) -> dict:
        """What the card's ``score`` records of the score's kind: the kind and the critic's
        standardisation (used by the graph for ``combined``; recorded for every kind, so that
        ``score + critic_scale * (critic_score - critic_mean)`` gives the combined score of any
        model from its two outputs)."""
        spec = {"kind": self.score_kind, "critic_mean": self.critic_mean, "critic_scale": self.critic_scale}
        if self.forecaster is not None:
            spec["forecast"] = {**self.forecaster.spec(), "mean": self.forecast_mean, "scale": self.forecast_scale}
        return spec

    def forward(self, window: torch.Tensor):
        x = self.transform(window)
        weights = self.score_weights if self.score_channels is not None else None
        parts = score_parts(x, self.encoder, self.generator, self.critic, self.kappa, self.classifier, self.alpha,
                            weights)
        cells = self.transform.cell_attribution(window, parts.residual)  # [B, C, W]
        if self.forecaster is None:
            score = combine(self.score_kind, parts, self.critic_mean, self.critic_scale)
        else:
            forecast, forecast_cells = self.forecaster.score_and_cells(self.transform.normalise(window))
            if self.score_kind == "forecast":
                score, cells = forecast, forecast_cells  # the root cause of this score: the missed steps
            else:  # hybrid
                score = parts.fanogan + self.forecast_scale * (forecast - self.forecast_mean)
                cells = cells + self.forecast_scale * forecast_cells
        if self.level_weight:
            excess = self.level_weight * self.transform.range_excess_cells(window)  # [B, C, W]
            score = score + (excess.mean(dim=(1, 2)) if weights is None else (excess.mean(dim=2) * weights).sum(dim=1))
            # the multivariate plot's channel shares sum to its residual; the others average to it
            cells = cells + (excess / excess.shape[1] if self.transform.kind == "distance-plot-mv" else excess)
        if weights is not None:  # only the scored channels can be the root cause
            cells = cells * self.score_mask[:, None]
        return score, cells.mean(dim=2), x, parts.reconstruction, cells, parts.critic


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
    sc = card.score
    k = int(cfg.get("generators", 1))
    critic, classifier = Critic(arch, shape, width), None
    if k > 1:  # D-AnoGAN: K encoders and generators (state dict names encoder.0..., generator.0...) and C
        from .danogan import classifier_for

        encoder = nn.ModuleList([Encoder(arch, shape, width, latent) for _ in range(k)])
        generator = nn.ModuleList([Generator(arch, shape, width, latent) for _ in range(k)])
        classifier = classifier_for(critic, k)
    else:
        encoder, generator = Encoder(arch, shape, width, latent), Generator(arch, shape, width, latent)
    forecaster, fc = None, sc.get("forecast")
    if fc:
        from .forecast import forecaster_from_spec

        forecaster = forecaster_from_spec(fc, card.window, len(card.channels))
    scorer = ScoringNetwork(wt, encoder, generator, critic, float(sc.get("kappa", 1.0)),
                            float(sc.get("level_weight", 0.0)), sc.get("kind", "fanogan"),
                            float(sc.get("critic_mean", 0.0)), float(sc.get("critic_scale", 1.0)),
                            classifier, float(sc.get("alpha", cfg.get("alpha", 0.9))),
                            [card.channels.index(c) for c in sc["channels"]] if sc.get("channels") else None,
                            forecaster, float(fc.get("mean", 0.0)) if fc else 0.0,
                            float(fc.get("scale", 1.0)) if fc else 1.0)
    params, eps = onnx_graph.state_dict_params(onnx.load(str(Path(model_dir) / "model.onnx")))
    state = {k: torch.from_numpy(np.array(v)) for k, v in params.items()}
    missing, unexpected = scorer.load_state_dict(state, strict=False)
    # the score channels' mask and weights come from the card (the exporter may fold them into
    # constants of its own name)
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("score_")]
    unexpected = [k for k in unexpected if not k.startswith("onnx::")]
    if any(k.startswith("critic.head.") for k in missing):
        # Graphs exported before the critic score was an output do not carry the critic's head:
        # its score is unknown (NaN), never a made-up number.
        if scorer.score_kind != "fanogan":
            raise ValueError(f"{model_dir}: the card's score kind {scorer.score_kind!r} needs the critic's head, "
                             "which model.onnx does not carry")
        with torch.no_grad():
            scorer.critic.head.weight.zero_()
            scorer.critic.head.bias.fill_(float("nan"))
        missing = [k for k in missing if not k.startswith("critic.head.")]
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
    plain export's outputs; other scorers (D-AnoGAN's several generators among them), and
    ``optimise=False``, get the plain export.  Returns the form written (``onnx_graph.FORM`` or ``"plain"``).
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
    # the fast form has no A_L, no forecaster, and one encoder/generator pair without a classifier
    if (optimise and scorer.transform.kind == "sequence" and not scorer.level_weight and scorer.classifier is None
            and scorer.forecaster is None):
        try:
            graph = onnx_graph.optimise(graph, window, n_channels, scorer.kappa, onnx_graph.params_from_torch(scorer),
                                        scorer.score_spec())
            form = onnx_graph.FORM
        except onnx_graph.NotApplicable:
            pass
        except onnx_graph.GraphMismatch as e:  # a bug in the re-expression: never serve it, say so
            warnings.warn(f"the fast ONNX form disagrees with the plain export ({e}); writing the plain graph",
                          RuntimeWarning, stacklevel=2)
    Path(path).write_bytes(graph)
    return form
