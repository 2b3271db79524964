"""The committed tiny model (``tests/data/tiny-sequence``) that the worker tests run on: it must
stay small, still load with the current card schema, and score with ONNX Runtime alone (no
PyTorch), with a card that belongs to its graph.  If the card schema changes, rebuild it with
``python tests/data/build_tiny_model.py`` (tests/data/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_MODEL, synthetic_series

from stream_detector.runtime.card import FORMAT_VERSION, ModelCard, load_card
from stream_detector.runtime.scoring import Scorer, sliding_windows


def test_committed_model_is_a_small_model_directory():
    files = {p.name: p.stat().st_size for p in TINY_MODEL.iterdir()}
    assert set(files) == {"model.onnx", "model.json"}, "a model directory as the worker reads it, nothing else"
    assert sum(files.values()) < 200_000, files


def test_committed_card_matches_the_current_schema():
    raw = json.loads((TINY_MODEL / "model.json").read_text())
    card = load_card(TINY_MODEL)  # schema and the SHA-256 of model.onnx
    assert card.format_version == FORMAT_VERSION
    assert card.extra == {}, f"keys the current card schema does not know: {sorted(card.extra)}"
    assert card.to_dict() == raw, "the card does not round-trip through the current ModelCard"
    assert (card.name, card.version, card.channels, card.window, card.stride, card.transform) == \
        ("tiny", "1", ("a", "b", "c"), 16, 4, "sequence")
    assert card.threshold_method == "quantile" and card.threshold["release"] < card.threshold["value"]


def test_committed_model_scores_with_onnxruntime():
    import onnxruntime as ort

    scorer = Scorer(TINY_MODEL, providers=["CPUExecutionProvider"])
    values = synthetic_series()  # the series it was trained on; the last 20 % were held out
    windows = sliding_windows(values, 16, 1)
    scores, channel_scores = scorer.score(windows)
    assert scores.shape == (len(windows),) and channel_scores.shape == (len(windows), 3)
    assert np.isfinite(scores).all() and (scores > 0).all()
    # the graph as ONNX Runtime runs it, without the scorer around it
    session = ort.InferenceSession(str(TINY_MODEL / "model.onnx"), providers=["CPUExecutionProvider"])
    raw_scores, raw_channels = session.run(["score", "channel_scores"], {"window": windows})[:2]
    np.testing.assert_array_equal(scores, raw_scores)
    np.testing.assert_array_equal(channel_scores, raw_channels)
    # the card belongs to this graph: its threshold is the 99.5 % quantile of the held-out windows
    held_out = scorer.score(sliding_windows(values[960:], 16, 1))[0]
    assert scorer.threshold == pytest.approx(float(np.quantile(held_out, 0.995)), rel=1e-5)
    # and the model tells anomalous data apart, which the alerting tests rely on
    shifted = windows.copy()
    shifted[:, :, 0] += 6.0
    assert (scorer.score(shifted)[0] > scorer.threshold).all()


def test_committed_model_scores_without_torch(tmp_path):
    """The worker's scoring path imports no PyTorch: with ``import torch`` failing it still scores."""
    (tmp_path / "torch.py").write_text("raise ModuleNotFoundError('No module named torch', name='torch')\n")
    code = ("import numpy as np, sys; from stream_detector.runtime.scoring import Scorer; "
            f"s = Scorer({str(TINY_MODEL)!r}); print(s.score(np.zeros((2, 16, 3), np.float32))[0].shape); "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(2,)", "False"]
