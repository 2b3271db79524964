"""Root cause in time and channel: ``cell_scores`` locates a spike, offline and through the worker.

A spike injected in one channel at one time must come back as that channel and that time: in
the series scorer's ``peak_index``/``peak_channel``, in the score records' ``peak_ts`` and
``peak_channel``, and as the first of the alert's ``top_cells``.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import synthetic_series

from stream_detector.runtime.codec import encode_points
from stream_detector.runtime.config import WorkerConfig
from stream_detector.runtime.detector import Detector, InMessage, Pending
from stream_detector.runtime.scoring import Peaks, Scorer, score_series

SPIKE_AT, SPIKE_CHANNEL = 630, 1  # channel "b"


def _train(out, transform: str):
    pytest.importorskip("torch")
    from stream_detector.training.fit import fit_series_model
    from stream_detector.training.wgan import TrainConfig

    cfg = TrainConfig(iterations=30, encoder_iterations=60, width=8, latent_dim=4, seed=3)
    fit_series_model(synthetic_series(), ["a", "b", "c"], out, window=16, stride=4, transform=transform, cfg=cfg,
                     plot_size=8, name="rc", version="1", progress=False)
    return out


@pytest.fixture(scope="module", params=["sequence", "distance-plot", "distance-plot-mv"])
def model(request, tmp_path_factory):
    return _train(tmp_path_factory.mktemp(f"rc-{request.param}"), request.param)


def spiked() -> np.ndarray:
    values = synthetic_series(seed=7)
    values[SPIKE_AT, SPIKE_CHANNEL] += 8.0  # four times the channel's whole range
    return values


def test_peaks_of_cell_scores():
    cells = np.zeros((2, 3, 5), np.float32)
    cells[0, 2, 1] = 4.0
    cells[1, 0, 4] = 1.0
    p = Peaks.of(cells)
    assert p.step.tolist() == [1, 4] and p.channel.tolist() == [2, 0] and p.value.tolist() == [4.0, 1.0]
    assert p.take(np.array([1])).channel.tolist() == [0]


def test_a_spike_is_located_in_time_and_channel_offline(model):
    scorer = Scorer(model)
    assert scorer.has_cells
    out = score_series(scorer, spiked(), stride=1)
    covering = (out["starts"] <= SPIKE_AT) & (SPIKE_AT < out["starts"] + scorer.window)
    pool = 1 if scorer.card.transform == "sequence" else scorer.window // 8
    # every window that holds the spike puts its peak on it (to the pooled step of a distance plot)
    assert np.all(out["peak_channel"][covering] == SPIKE_CHANNEL)
    assert np.all(np.abs(out["peak_index"][covering] - SPIKE_AT) < pool)
    # and those windows are anomalous by the card's threshold
    assert out["scores"][covering].min() > scorer.threshold


def _messages(values: np.ndarray, ts: np.ndarray, chunk: int = 10) -> list[InMessage]:
    cols = {c: values[:, j] for j, c in enumerate("abc")}
    return [InMessage(b"pump-1", encode_points(ts[i:i + chunk], {c: v[i:i + chunk] for c, v in cols.items()}),
                      "telemetry", 0, k) for k, i in enumerate(range(0, len(ts), chunk))]


def test_the_worker_says_which_channel_and_when(model):
    # one transform is enough for the batched record shape
    for records in ("window", "batch") if Scorer(model).card.transform == "sequence" else ("window",):
        _check_worker(model, records)


def _check_worker(model, records: str) -> None:
    values = spiked()
    ts = 1_700_000_000.0 + np.cumsum(np.random.default_rng(0).uniform(0.5, 1.5, len(values)))  # irregular
    det = Detector(WorkerConfig(model_dir=str(model), metrics_port=0, score_records=records))
    out = det.process(_messages(values, ts), keep_dicts=True)
    holds = [r for r in out.records if r["start"] <= ts[SPIKE_AT] <= r["end"]]
    pool = 1 if Scorer(model).card.transform == "sequence" else 2
    near = set(ts[SPIKE_AT - pool + 1:SPIKE_AT + pool].tolist())
    assert holds and all(r["peak_channel"] == "b" and r["peak_ts"] in near for r in holds)
    assert all("peak_ts" in r and r["start"] <= r["peak_ts"] <= r["end"] for r in out.records)
    opened = [e for e in out.events if e["event"] == "opened" and e["start"] <= ts[SPIKE_AT] <= e["end"]]
    assert opened, "the spike opened no episode"
    cell = opened[0]["top_cells"][0]
    assert cell["channel"] == "b" and cell["ts"] in near
    if records == "batch":  # the columnar record carries the same peaks
        from stream_detector.runtime.publishing import decode_record, score_windows

        windows = [w for _, raw in out.scores for w in score_windows(decode_record(raw))]
        assert [(w["peak_ts"], w["peak_channel"]) for w in windows] == \
            [(r["peak_ts"], r["peak_channel"]) for r in out.records]


def test_pending_windows_keep_their_peaks_across_a_restart():
    p = Pending(3)
    p.append(1, [0.0, 1.0], [15.0, 16.0], [0.5, 0.7], np.ones((2, 3)), np.array([[7.0, 2, 0.9], [9.0, 1, 0.4]]))
    again = Pending.from_state(p.state(), 3)
    np.testing.assert_array_equal(again.pop(2)[5], [[7.0, 2, 0.9], [9.0, 1, 0.4]])
    old = p.state()
    del old["pk"]  # a state written before peaks were kept
    assert np.isnan(Pending.from_state(old, 3).peaks).all()
