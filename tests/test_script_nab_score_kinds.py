"""``scripts/nab_score_kinds.py`` reads every score kind off one fanogan graph: its readouts
must be what the graph of that kind computes with the same networks (the PyTorch scorer,
switched to the kind), or its NAB table would compare something else."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_series

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "nab_score_kinds.py"


def _script():
    spec = importlib.util.spec_from_file_location("nab_score_kinds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readouts_equal_each_kinds_own_score(trained_sequence_model):
    torch = pytest.importorskip("torch")
    from stream_detector.runtime.scoring import Scorer, sliding_windows
    from stream_detector.training.export import scorer_from_model_dir

    kinds = _script()
    values = synthetic_series(300, seed=3)
    values[200:210, 1] += 3.0  # something anomalous, so the scores vary
    scorer = Scorer(trained_sequence_model, threads=1)
    got = kinds.readouts(scorer, values, batch=64)  # several batches
    windows = torch.from_numpy(np.ascontiguousarray(sliding_windows(values, scorer.window, 1)))
    net = scorer_from_model_dir(trained_sequence_model)
    with torch.no_grad():
        for kind in ("fanogan", "critic", "combined"):
            net.score_kind = kind
            want = net(windows)[0].numpy()
            np.testing.assert_allclose(got[kind], want, rtol=1e-3, atol=1e-5, err_msg=kind)
        cells = net(windows)[4].numpy()
    np.testing.assert_allclose(got["newest point"], cells[:, :, -1].mean(axis=1), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(got["newest 4 points"], cells[:, :, -4:].mean(axis=(1, 2)), rtol=1e-3, atol=1e-6)
    assert len(got["combined"]) == len(values) - scorer.window + 1
    assert not np.allclose(got["combined"], got["fanogan"])  # the critic term is there


def test_the_score_kind_does_not_change_the_trained_networks(tmp_path):
    """The script reads ``combined`` off a ``fanogan`` run's networks; that is the ``combined``
    model only if training does not depend on the kind: the same seed gives the same weights,
    so the two graphs agree on every output but the score, and the score differs by exactly
    the critic term."""
    pytest.importorskip("torch")
    from stream_detector.runtime.scoring import Scorer, sliding_windows
    from stream_detector.training.fit import fit_series_model
    from stream_detector.training.wgan import TrainConfig

    values = synthetic_series(900, seed=5)
    outs = {}
    for kind in ("fanogan", "combined"):
        cfg = TrainConfig(iterations=10, encoder_iterations=10, width=8, latent_dim=4, seed=3)
        fit_series_model(values, ["a", "b", "c"], tmp_path / kind, window=16, stride=4, transform="sequence", cfg=cfg,
                         plot_size=8, progress=False, score_kind=kind)
        scorer = Scorer(tmp_path / kind, threads=1)
        outs[kind] = (scorer.run_all(np.ascontiguousarray(sliding_windows(values, 16, 4))), scorer.card.score)
    (a, card_a), (b, card_b) = outs["fanogan"], outs["combined"]
    for name in ("critic_score", "reconstruction", "cell_scores"):
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert card_b["critic_mean"] == pytest.approx(card_a["critic_mean"]) and card_b["kind"] == "combined"
    np.testing.assert_allclose(b["score"], a["score"] + card_b["critic_scale"] * (a["critic_score"] - card_b["critic_mean"]),
                               rtol=1e-4, atol=1e-6)
