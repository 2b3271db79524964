"""The forecasting score: predict a window's last steps from its first, judge the observed
steps against the prediction.

Research document 000 pairs the anomaly detector with a forecaster that predicts the next
time step and judges the observed one against the prediction; AER, the best published
detector on SMAP, adds such a forecast error to a reconstruction error.  Here the forecast is
made *inside* each window, so that it needs no state between windows and runs in the same
ONNX graph as the reconstruction: a small network reads the first ``W - H`` normalised steps
of every channel (the command columns of a conditioned model too) and predicts the last ``H``
steps of the scored channels, as offsets from each channel's last observed value (a level the
window already sits at costs nothing to predict; the level term sees levels).  The window's
forecast error is the mean squared error over those ``H`` steps and channels, and the error
of each cell is what the root cause of a forecast score points at.

Score kinds (:data:`FORECAST_KINDS`, ``train --score``): ``forecast`` (the forecast error
alone) and ``hybrid`` (the fanogan score plus the forecast error standardised on the training
windows and put on the fanogan score's scale, as ``combined`` does for the critic).
"""

from __future__ import annotations

import torch
from torch import nn

FORECAST_KINDS = ("forecast", "hybrid")


def default_horizon(window: int) -> int:
    """Steps predicted when none is given: an eighth of the window (at least 1), short enough
    for a precise forecast and for the error to point at the window's newest steps."""
    return max(1, window // 8)


class Forecaster(nn.Module):
    """Normalised windows ``[B, W, C]`` to the predicted last ``horizon`` steps of the scored
    channels, ``[B, horizon, S]`` (a multilayer perceptron on the flattened context)."""

    def __init__(self, window: int, n_channels: int, horizon: int, scored: list[int] | None = None,
                 hidden: int = 64):
        super().__init__()
        if not 1 <= horizon < window:
            raise ValueError(f"forecast horizon {horizon} must be at least 1 and shorter than the window ({window})")
        self.window, self.horizon, self.context = int(window), int(horizon), int(window - horizon)
        self.scored = list(range(n_channels)) if scored is None else sorted(int(c) for c in scored)
        self.hidden = int(hidden)
        pick = torch.zeros(n_channels, len(self.scored))  # one-hot: input channel -> scored channel
        pick[self.scored, torch.arange(len(self.scored))] = 1.0
        self.register_buffer("pick", pick, persistent=False)  # derived from ``scored``: not a weight
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(self.context * n_channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, horizon * len(self.scored)))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        context = s[:, :self.context, :]
        last = context[:, -1:, :] @ self.pick  # [B, 1, S]
        return last + self.net(context).reshape(-1, self.horizon, len(self.scored))

    def errors(self, s: torch.Tensor) -> torch.Tensor:
        """Squared forecast error of each predicted cell, ``[B, horizon, S]``."""
        return (self.forward(s) - s[:, self.context:, :] @ self.pick) ** 2

    def score_and_cells(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's forecast error ``[B]`` and its cells on the raw window's grid
        ``[B, C, W]`` (zero outside the predicted steps and the scored channels)."""
        err = self.errors(s)
        cells = torch.nn.functional.pad(err, (0, 0, self.context, 0)) @ self.pick.transpose(0, 1)  # [B, W, C]
        return err.mean(dim=(1, 2)), cells.transpose(1, 2)

    def spec(self) -> dict:
        """What the card records to rebuild it (:func:`forecaster_from_spec`)."""
        return {"horizon": self.horizon, "hidden": self.hidden, "channels": self.scored}


def forecaster_from_spec(spec: dict, window: int, n_channels: int) -> Forecaster:
    return Forecaster(window, n_channels, int(spec["horizon"]), spec.get("channels"), int(spec.get("hidden", 64)))


def train_forecaster(normalised: torch.Tensor, horizon: int, scored: list[int] | None, iterations: int,
                     seed: int, batch_size: int = 64, lr: float = 1e-3, hidden: int = 64,
                     progress: bool = False) -> tuple[Forecaster, list[float]]:
    """Adam on the mean squared forecast error of random batches of training windows
    ``[N, W, C]`` (normalised), for ``iterations`` steps, seeded; returns the frozen forecaster
    and its loss every 10 steps."""
    from .wgan import _progress

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n, window, channels = normalised.shape
    model = Forecaster(window, channels, horizon, scored, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    bar = _progress(iterations, "forecaster", progress)
    for step in range(iterations):
        loss = model.errors(normalised[torch.randint(0, n, (batch_size,), generator=gen)]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == iterations - 1:
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.update(1)
    bar.close()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, losses
