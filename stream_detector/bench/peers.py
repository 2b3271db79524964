"""The detectors every quality runner measures beside the WGAN model, on the same data.

A detector here is what a user would pick instead of this project, or the trivial thing it
has to beat.  Each is fitted on the normal (training) part of a series and gives a *causal*
score per point of another series (a point's score uses that point and earlier ones only;
``NaN`` where it has too little history), so every runner thresholds its scores with the same
label-free procedures (quantile, POT, telemanom's) as the WGAN model's.

* ``zscore``: ``max_c |x_c - mean_c| / std_c`` over the scored columns, against the training
  split's mean and deviation: no training at all (the limit check operators already trust).
* ``iforest``: scikit-learn's :class:`~sklearn.ensemble.IsolationForest` on flattened windows
  of the scored columns (window 32, 100 trees); the score is ``-score_samples``.
* ``hst``: River's :class:`~river.anomaly.HalfSpaceTrees` with River's defaults (10 trees of
  height 8, window 250) on the last 8 values of each scored column, the training range scaled
  to [0.25, 0.75]; learned on the training split, then scoring and learning online on the
  scored series, as it is meant to run.  (The paper's 25 trees of height 15 cost 110 s per
  SMAP channel on one core, five times as much, too much for 54 channels x 3 seeds here.)
* ``lstm``: telemanom's forecaster (Hundman et al., KDD 2018) in PyTorch: 2 LSTM layers of 80
  units (dropout 0.3) reading the last 250 points of *all* input columns, predicting the next
  value of the scored columns, Adam (lr 1e-3), batches of 64, MSE; the score is the absolute
  prediction error (telemanom's threshold smooths it itself).  Trained for a fixed number of
  iterations (default 150, about 4 epochs of a SMAP channel; telemanom trains up to 35 epochs
  with early stopping) because 2 cores cannot afford more for 54 channels and 3 seeds.  A
  training split no longer than the history gets a history of half its length.

Every random choice comes from ``seed``; :func:`versions` names the libraries for the reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PEERS = ("zscore", "iforest", "hst", "lstm")
SAMPLE_PEERS = ("zscore", "iforest")  # the peers of the one-class sample benchmarks (bench paper)


def versions() -> dict:
    """Library versions of the peers, for the reports."""
    import sklearn
    import torch

    out = {"scikit-learn": sklearn.__version__, "torch": torch.__version__}
    try:
        import river

        out["river"] = river.__version__
    except ImportError:  # pragma: no cover - river is in the bench extra
        out["river"] = None
    return out


def _causal(n: int, scores: np.ndarray, first: int) -> np.ndarray:
    """Point scores ``[n]``: ``NaN`` before ``first``, ``scores`` from there on."""
    out = np.full(n, np.nan)
    out[first:] = scores
    return out


def _windows(values: np.ndarray, window: int) -> np.ndarray:
    """Flattened windows ``[T-W+1, W*C]``, window ``i`` ending at point ``i + W - 1``."""
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # [T-W+1, C, W]
    return view.reshape(len(view), -1)


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and deviation of ``x``; a constant column gets deviation 1 (raw units)."""
    std = x.std(0)
    return x.mean(0), np.where(std < 1e-12, 1.0, std)


@dataclass
class ZScore:
    """``max_c |z_c|`` against the training split: no training."""

    columns: list[int]
    seed: int = 0
    lookback: int = 0

    def fit(self, train: np.ndarray) -> ZScore:
        self.mean, self.std = _standardiser(train[:, self.columns].astype(np.float64))
        return self

    def score(self, series: np.ndarray) -> np.ndarray:
        return np.abs((series[:, self.columns] - self.mean) / self.std).max(1)


@dataclass
class IsolationForestPeer:
    """IsolationForest on flattened windows of the scored columns."""

    columns: list[int]
    seed: int = 0
    window: int = 32
    trees: int = 100
    max_train_windows: int = 20000

    @property
    def lookback(self) -> int:
        return self.window - 1

    def fit(self, train: np.ndarray) -> IsolationForestPeer:
        from sklearn.ensemble import IsolationForest

        x = train[:, self.columns].astype(np.float64)
        self.mean, self.std = _standardiser(x)
        w = _windows((x - self.mean) / self.std, self.window)
        if len(w) > self.max_train_windows:
            w = w[np.random.default_rng(self.seed).choice(len(w), self.max_train_windows, replace=False)]
        self.model = IsolationForest(n_estimators=self.trees, random_state=self.seed).fit(w)
        return self

    def score(self, series: np.ndarray) -> np.ndarray:
        x = (series[:, self.columns].astype(np.float64) - self.mean) / self.std
        if len(x) < self.window:
            return np.full(len(x), np.nan)
        return _causal(len(x), -self.model.score_samples(_windows(x, self.window)), self.window - 1)


@dataclass
class HalfSpaceTreesPeer:
    """River's HalfSpaceTrees, online, on the last ``lags`` values of each scored column."""

    columns: list[int]
    seed: int = 0
    lags: int = 8
    trees: int = 10
    height: int = 8
    window_size: int = 250

    @property
    def lookback(self) -> int:
        return self.lags - 1

    def _features(self, series: np.ndarray) -> np.ndarray:
        # The training range maps to [0.25, 0.75]: HST's half-spaces cover [0, 1], so values up to
        # half a range beyond the training range land in space the training data never filled
        # (with [0, 1] they would be clipped onto the training extremes and look normal).
        x = 0.25 + 0.5 * (series[:, self.columns].astype(np.float64) - self.lo) / self.span
        return _windows(np.clip(x, 0.0, 1.0), self.lags)

    def fit(self, train: np.ndarray) -> HalfSpaceTreesPeer:
        from river.anomaly import HalfSpaceTrees

        x = train[:, self.columns].astype(np.float64)
        self.lo, hi = x.min(0), x.max(0)
        self.span = np.where(hi - self.lo < 1e-12, 1.0, hi - self.lo)
        self.model = HalfSpaceTrees(n_trees=self.trees, height=self.height, window_size=self.window_size,
                                    seed=self.seed)
        self.names = [f"f{i}" for i in range(self.lags * len(self.columns))]
        for row in self._features(train):
            self.model.learn_one(dict(zip(self.names, row)))
        return self

    def score(self, series: np.ndarray) -> np.ndarray:
        """Scores and learns each point in turn (River's online use); the fitted model is
        copied first, so scoring one series does not change the next one's scores."""
        import copy

        if len(series) < self.lags:
            return np.full(len(series), np.nan)
        model = copy.deepcopy(self.model)
        out = np.empty(len(series) - self.lags + 1)
        for i, row in enumerate(self._features(series)):
            x = dict(zip(self.names, row))
            out[i] = model.score_one(x)
            model.learn_one(x)
        return _causal(len(series), out, self.lags - 1)


@dataclass
class LSTMForecaster:
    """telemanom's 2 x 80 LSTM: the next value of the scored columns from 250 points of all columns."""

    columns: list[int]
    seed: int = 0
    history: int = 250
    units: int = 80
    dropout: float = 0.3
    iterations: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    threads: int = 1

    @property
    def lookback(self) -> int:
        return self.history

    def _net(self, n_in: int):
        import torch

        class Net(torch.nn.Module):
            def __init__(s):
                super().__init__()
                s.lstm = torch.nn.LSTM(n_in, self.units, num_layers=2, batch_first=True, dropout=self.dropout)
                s.out = torch.nn.Linear(self.units, len(self.columns))

            def forward(s, x):
                h, _ = s.lstm(x)
                return s.out(h[:, -1])

        return Net()

    def fit(self, train: np.ndarray) -> LSTMForecaster:
        import torch

        torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        x = train.astype(np.float32)
        self.mean, self.std = x.mean(0), np.where(x.std(0) < 1e-6, 1.0, x.std(0)).astype(np.float32)
        z = torch.from_numpy((x - self.mean) / self.std)
        if len(z) <= self.history:  # too short for the history (SMAP's D-12: 250 points): half of it
            self.history = max(1, len(z) // 2)
        n = len(z) - self.history
        self.net = self._net(z.shape[1])
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.net.train()
        idx = torch.arange(self.history)
        for _ in range(self.iterations):
            starts = torch.from_numpy(rng.integers(0, n, size=min(self.batch_size, n)))
            xb = z[starts[:, None] + idx]  # [B, history, C]
            yb = z[starts + self.history][:, self.columns]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(self.net(xb), yb)
            loss.backward()
            opt.step()
        self.net.eval()
        self.final_loss = float(loss.detach())
        return self

    def score(self, series: np.ndarray, chunk: int = 512) -> np.ndarray:
        import torch

        torch.set_num_threads(self.threads)
        z = torch.from_numpy((series.astype(np.float32) - self.mean) / self.std)
        n = len(z) - self.history
        if n < 1:
            return np.full(len(series), np.nan)
        idx = torch.arange(self.history)
        errors = []
        with torch.no_grad():
            for lo in range(0, n, chunk):
                starts = torch.arange(lo, min(lo + chunk, n))
                pred = self.net(z[starts[:, None] + idx])
                errors.append((pred - z[starts + self.history][:, self.columns]).abs().max(1).values.numpy())
        return _causal(len(series), np.concatenate(errors), self.history)


def make_peer(name: str, columns: list[int], seed: int, **options):
    """A fresh, unfitted peer detector by name (``options`` override its defaults)."""
    kinds = {"zscore": ZScore, "iforest": IsolationForestPeer, "hst": HalfSpaceTreesPeer, "lstm": LSTMForecaster}
    if name not in kinds:
        raise ValueError(f"unknown peer {name!r}: choose from {', '.join(PEERS)}")
    return kinds[name](columns=list(columns), seed=seed, **options)


def fit_and_score_peer(peer, train: np.ndarray, test: np.ndarray, calib_fraction: float = 0.2,
                       threshold_quantile: float = 0.995, release_quantile: float = 0.95) -> dict:
    """Fit ``peer`` on the first part of ``train``, score its held-out tail (calibration) and
    ``test``: the raw-score record the runners threshold (same keys as the WGAN model's
    ``scores.npz``: test and calibration scores, the quantile threshold and release level)."""
    import time

    from ..training.calibration import quantile_threshold

    calib_points = max(int(calib_fraction * len(train)), 50)
    split = len(train) - calib_points
    started = time.monotonic()
    peer.fit(train[:split])
    train_seconds = time.monotonic() - started
    started = time.monotonic()
    lo = max(0, split - peer.lookback)  # the calibration points' own history, from the fitted part
    calib = peer.score(train[lo:])[split - lo:]
    test_scores = peer.score(test)
    score_seconds = time.monotonic() - started
    calib = calib[np.isfinite(calib)]
    q = quantile_threshold(calib, threshold_quantile, release_quantile)
    return {"test_scores": np.asarray(test_scores, dtype=np.float64), "calibration_scores": calib,
            "quantile_threshold": q["value"], "release": q["release"], "train_points": split,
            "train_seconds": train_seconds, "score_seconds": score_seconds, "stopped_early_by_budget": False}


def sample_peer_scores(train: np.ndarray, test: np.ndarray, seed: int, trees: int = 100) -> dict[str, np.ndarray]:
    """The :data:`SAMPLE_PEERS`' scores of independent samples ``test [M, T, C]`` (activity
    windows of ``T`` points and ``C`` channels; an image is one point of ``C`` pixels), fitted on
    the normal samples ``train [N, T, C]``: ``zscore`` is the largest ``|z|`` of the sample's
    points and channels against the training points' per-channel mean and deviation (the
    limit check), ``iforest`` scikit-learn's IsolationForest (``trees`` trees, seeded) on the
    flattened samples standardised the same way, ``-score_samples``."""
    from sklearn.ensemble import IsolationForest

    c = train.shape[-1]
    mean, std = _standardiser(train.reshape(-1, c).astype(np.float64))
    z_train = ((train - mean) / std).reshape(len(train), -1)
    z_test = ((test - mean) / std).reshape(len(test), -1)
    forest = IsolationForest(n_estimators=trees, random_state=seed).fit(z_train)
    return {"zscore": np.abs(z_test).max(axis=1), "iforest": -forest.score_samples(z_test)}
