"""AnoGAN latent search: the precise, slow score, for a second look at windows the encoder flagged.

The deployed score maps a window to the generator's latent space with the encoder in one pass
(f-AnoGAN, research 000 and 004): ``z = E(x)``, then ``A(x) = A_R + kappa * A_D`` at that ``z``.
The encoder is an amortised guess; AnoGAN (research 000, 003, 004) instead *searches* for the
code whose generation matches the window best, by gradient descent on ``z`` with the generator
and critic frozen, and scores the match it finds:

``L(z) = (1 - lam) * mean((x - G(z))^2) + lam * mean((f(x) - f(G(z)))^2)``

(``x`` the transformed window, ``f`` the critic's feature trunk).  A window the generator can
produce gets a low loss once the search finds its code, whatever the encoder guessed; a window
it cannot produce stays high.  So latent search removes the encoder's own misses (a normal
window it encodes badly: a false alarm) at the price of ``restarts x steps`` forward and
backward passes through the generator and critic trunk per window, which is why it is a second
look on flagged windows and not the streaming score.

Choices, and where they come from:

* **Restarts and steps**: 4 x 50 by default, research 003's ``MINIMIZE_RUNS=4``,
  ``MINIMIZE_ITERATIONS=50`` (ROC-AUC 0.91 there; 16 x 100 raised it to 0.98, 8x the cost).
  003 starts every run from a random code; here the first start is the encoder's ``E(x)`` and
  the other ``restarts - 1`` are draws from the prior, and the best code over every start and
  every step is kept (003 keeps the best run).  Starting from ``E(x)`` and counting step 0
  guarantees the search never reports a worse fit than the encoder's.
* **The weight** ``lam``: AnoGAN's ``lambda = 0.1`` (research 000, eq. 6.3; 003 and 004 quote
  the formula without a value) weighs the feature term lightly.  The default here is instead
  ``kappa / (1 + kappa)`` from the model card (0.5 for the usual ``kappa = 1``): the encoder
  was trained (``izi_f``) to minimise exactly ``A_R + kappa * A_D``, so the search refines the
  very quantity the card's score and threshold are about.  The reported score is ``L / (1 -
  lam)``, i.e. ``A_R + lam / (1 - lam) * A_D``: with the default, the card's formula at the
  best ``z``, never above the encoder's score, so the card's threshold still reads as "the
  second look agrees this is anomalous".  ``lam=0.1`` gives AnoGAN's weighting.
* **Optimiser**: Adam (research 000 used Adam, lr 0.001, for 500-4000 steps; 003's TensorFlow
  minimiser is not named).  With 50 steps in a ``[-1, 1]^d`` code space a step of 0.001 moves a
  code by at most 0.05, so the default rate is 0.05.  A label-free check (the objective
  reached on normal training inputs, docs/benchmarks/latent_search.md) found 0.1 to 0.2 reaching
  1 to 4 % lower objectives than 0.05 on four of five models: close, not re-tuned.  All restarts of
  all windows of a chunk are one tensor under one Adam: Adam is element-wise, so each code
  still follows its own gradient, and a chunk is one batched forward/backward.
* **The latent range**: the encoder ends in tanh and the prior is uniform on ``[-1, 1]^d``
  (:mod:`.nets`), so after each step codes are clipped back into ``[-1, 1]``: the generator was
  never trained outside, and a code outside could fit an anomaly with an output no normal
  window produces.
* **The level term**: a distance-plot model's card adds ``level_weight * mean_c range_excess``
  (a window outside the training range); it does not depend on ``z``, so it is added to the
  refined score unchanged and level shifts stay visible.

Deterministic for a fixed seed on one machine and thread count: the random starts are drawn
once for all windows from ``seed`` (so the chunk size does not change them) and nothing else
is random.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np
import torch

#: research 003's defaults (MINIMIZE_RUNS, MINIMIZE_ITERATIONS) and its thorough setting
DEFAULT_RESTARTS, DEFAULT_STEPS = 4, 50
THOROUGH_RESTARTS, THOROUGH_STEPS = 16, 100
DEFAULT_LR = 0.05
ANOGAN_LAMBDA = 0.1  # research 000 (AnoGAN's value)


@contextmanager
def _frozen(*modules: torch.nn.Module):
    """Parameters not requiring gradients while searching (only ``z`` is optimised, and a conv
    computes its weight gradient whenever the weight requires one), restored afterwards."""
    params = [p for m in modules for p in m.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def default_lambda(kappa: float) -> float:
    """``kappa / (1 + kappa)``: the weight under which the search minimises the card's own
    ``A_R + kappa * A_D`` (scaled by ``1 - lam``)."""
    return float(kappa) / (1.0 + float(kappa))


def search_codes(encoder, generator, critic, x: torch.Tensor, *, restarts: int = DEFAULT_RESTARTS,
                 steps: int = DEFAULT_STEPS, lam: float = 0.5, lr: float = DEFAULT_LR, seed: int = 0,
                 batch: int = 128) -> dict:
    """Latent search on already transformed inputs ``x [N, ...]`` (the networks' input).

    Returns numpy arrays: ``objective`` ``[N]`` (``L`` at the best code), ``encoder_objective``
    (``L`` at ``E(x)``, never below ``objective``), ``a_r`` / ``a_d`` (the two terms at the best
    code), ``encoder_a_r`` / ``encoder_a_d`` (at ``E(x)``), ``z`` ``[N, d]`` (the best code),
    ``restart`` ``[N]`` (which start won: 0 is the encoder's), ``recon`` (``G`` of the best code).
    ``batch`` windows are searched at once (``batch * restarts`` codes in one tensor).
    """
    if restarts < 1 or steps < 0:
        raise ValueError(f"restarts must be at least 1 and steps at least 0, got {restarts} and {steps}")
    if not 0.0 <= lam < 1.0:
        raise ValueError(f"lam must be in [0, 1), got {lam}")
    encoder.eval(), generator.eval(), critic.eval()
    n = len(x)
    with torch.no_grad():
        latent = encoder(x[:1]).shape[1]
    rng = torch.Generator().manual_seed(int(seed))
    draws = torch.rand(n, restarts - 1, latent, generator=rng) * 2.0 - 1.0  # the prior: uniform on [-1, 1]^d
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("objective", "encoder_objective", "a_r", "a_d",
                                                             "encoder_a_r", "encoder_a_d", "z", "restart", "recon")}
    with _frozen(encoder, generator, critic):
        for i in range(0, n, batch):
            for k, v in _search_chunk(encoder, generator, critic, x[i:i + batch], draws[i:i + batch],
                                      steps, lam, lr).items():
                parts[k].append(v)
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def _search_chunk(encoder, generator, critic, xb: torch.Tensor, draws: torch.Tensor, steps: int, lam: float,
                  lr: float) -> dict[str, torch.Tensor]:
    b = len(xb)
    restarts = draws.shape[1] + 1
    with torch.no_grad():
        z_enc = encoder(xb)
        fx = critic.features(xb)
    # restart-major layout: rows r*b .. r*b+b-1 are restart r of the chunk's windows
    z0 = torch.cat([z_enc, draws.transpose(0, 1).reshape(-1, z_enc.shape[1])])
    x_rep = xb.repeat(restarts, *([1] * (xb.dim() - 1)))
    fx_rep = fx.repeat(restarts, 1)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best = torch.full((len(z0),), math.inf)
    best_z, best_r, best_d = z0.clone(), torch.zeros(len(z0)), torch.zeros(len(z0))
    first_r = first_d = None
    for step in range(steps + 1):  # step 0 scores the starts themselves (E(x) among them)
        recon = generator(z)
        a_r = ((x_rep - recon) ** 2).flatten(1).mean(dim=1)
        a_d = ((fx_rep - critic.features(recon)) ** 2).mean(dim=1)
        loss = (1.0 - lam) * a_r + lam * a_d
        with torch.no_grad():
            if first_r is None:
                first_r, first_d = a_r[:b].clone(), a_d[:b].clone()
            better = loss < best
            best = torch.where(better, loss, best)
            best_z[better] = z[better]
            best_r = torch.where(better, a_r, best_r)
            best_d = torch.where(better, a_d, best_d)
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        (grad,) = torch.autograd.grad(loss.sum(), z)  # the sum: every code gets its own loss's gradient
        z.grad = grad
        opt.step()
        with torch.no_grad():
            z.clamp_(-1.0, 1.0)
    per_restart = best.view(restarts, b)
    objective, winner = per_restart.min(dim=0)
    rows = winner * b + torch.arange(b)
    with torch.no_grad():
        z_best = best_z[rows]
        recon = generator(z_best)
    return {"objective": objective, "encoder_objective": (1.0 - lam) * first_r + lam * first_d,
            "a_r": best_r[rows], "a_d": best_d[rows], "encoder_a_r": first_r, "encoder_a_d": first_d,
            "z": z_best, "restart": winner, "recon": recon}


def latent_search(scorer, windows: np.ndarray, restarts: int = DEFAULT_RESTARTS, steps: int = DEFAULT_STEPS,
                  lam: float | None = None, lr: float = DEFAULT_LR, seed: int = 0, batch: int = 128) -> dict:
    """Refined scores of raw windows ``[N, W, C]`` with a PyTorch
    :class:`~stream_detector.training.export.ScoringNetwork` (for a model directory:
    :func:`~stream_detector.training.export.scorer_from_model_dir`, which rebuilds it from the
    card and the weights inside ``model.onnx``; no separate checkpoint is kept).  A card whose
    score is ``combined`` keeps its critic part (``-D(x)``, independent of ``z``) added; one
    that scores with the critic alone has nothing to search and is refused (``ValueError``).

    ``lam`` None: :func:`default_lambda` of the card's ``kappa``.  Returns numpy arrays and the
    settings: ``score`` ``[N]`` (``L / (1 - lam)`` at the best code plus the card's level term:
    with the default ``lam`` the card's formula at the best code), ``encoder_score`` (the card's
    score at ``E(x)``, what the ONNX graph computes), ``channel_scores`` ``[N, C]`` (the
    residual at the best code split over channels as the graph splits it, plus the level
    term), ``z``, ``restart``, ``objective`` and ``encoder_objective`` (``L`` without the level
    term), and ``restarts``, ``steps``, ``lam``, ``lr``, ``seed``, ``seconds``,
    ``seconds_per_window``.
    """
    kind = getattr(scorer, "score_kind", "fanogan")
    if kind not in ("fanogan", "combined"):
        raise ValueError(f"the model scores with {kind!r}, which does not depend on the latent code: latent search "
                         "refines the fanogan score (residual + kappa * critic-feature distance) only")
    if getattr(scorer, "classifier", None) is not None:
        raise ValueError("the model has several generators (D-AnoGAN, train --generators): latent search refines "
                         "one generator's fanogan score only")
    lam = default_lambda(scorer.kappa) if lam is None else float(lam)
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    if not windows.flags.writeable:  # a strided view (sliding_windows): torch wants memory of its own
        windows = windows.copy()
    if windows.ndim != 3:
        raise ValueError(f"expected raw windows [batch, W, C], got shape {list(windows.shape)}")
    started = time.perf_counter()
    w = torch.from_numpy(windows)
    scorer.eval()
    with torch.no_grad():
        x = torch.cat([scorer.transform(w[i:i + 1024]) for i in range(0, len(w), 1024)]) if len(w) else None
        level = (scorer.level_weight * scorer.transform.range_excess(w)) if scorer.level_weight and len(w) else None
        # a combined score adds the critic's own rating of the window, -D(x): it does not depend on z
        critic_part = (scorer.critic_scale * (-scorer.critic(x).numpy() - scorer.critic_mean)
                       if kind == "combined" and x is not None else 0.0)
    if x is None:
        empty = np.zeros(0, np.float32)
        return {"score": empty, "encoder_score": empty, "channel_scores": np.zeros((0, windows.shape[2]), np.float32),
                "restarts": restarts, "steps": steps, "lam": lam, "lr": lr, "seed": seed, "seconds": 0.0,
                "seconds_per_window": None}
    found = search_codes(scorer.encoder, scorer.generator, scorer.critic, x, restarts=restarts, steps=steps,
                         lam=lam, lr=lr, seed=seed, batch=batch)
    score = found["objective"] / (1.0 - lam) + critic_part
    encoder_score = found["encoder_a_r"] + scorer.kappa * found["encoder_a_d"] + critic_part
    with torch.no_grad():
        residual = (x - torch.from_numpy(found.pop("recon"))) ** 2
        channels = scorer.transform.channel_attribution(w, residual)
        if level is not None:
            channels = channels + (level / level.shape[1] if scorer.transform.kind == "distance-plot-mv" else level)
            level_mean = level.mean(dim=1).numpy()
            score, encoder_score = score + level_mean, encoder_score + level_mean
    seconds = time.perf_counter() - started
    return {**found, "score": score.astype(np.float32), "encoder_score": encoder_score.astype(np.float32),
            "channel_scores": channels.numpy().astype(np.float32), "restarts": int(restarts), "steps": int(steps),
            "lam": lam, "lr": float(lr), "seed": int(seed), "seconds": seconds,
            "seconds_per_window": seconds / len(windows)}


def describe(result: dict) -> dict:
    """The settings of a :func:`latent_search` result, for reports and records."""
    return {"method": "latent-search", "restarts": result["restarts"], "steps": result["steps"],
            "lam": round(result["lam"], 6), "lr": result["lr"], "seed": result["seed"],
            "seconds_per_window": result["seconds_per_window"]}
