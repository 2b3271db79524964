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
