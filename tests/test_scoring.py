"""Offline scoring helpers: windows, causal point mapping, the ORT scorer's input checks."""

import numpy as np
import pytest

from stream_detector.runtime.scoring import Scorer, point_scores, score_series, sliding_windows, window_starts


def test_window_starts_and_views_agree():
    values = np.arange(30, dtype=np.float32).reshape(15, 2)
    starts = window_starts(15, 4, 3)
    assert starts.tolist() == [0, 3, 6, 9]  # the last window 9..12; 12..15 would overrun
    views = sliding_windows(values, 4, 3)
    assert views.shape == (4, 4, 2)
    for s, w in zip(starts, views):
        np.testing.assert_array_equal(w, values[s:s + 4])
    assert window_starts(3, 4, 1).size == 0


def test_point_scores_are_causal():
    # windows of 4 starting at 0, 3, 6 end at 3, 6, 9
    pts = point_scores(11, np.array([0, 3, 6]), 4, np.array([1.0, 2.0, 3.0]))
    expected = [np.nan] * 3 + [1, 1, 1, 2, 2, 2, 3, 3]
    np.testing.assert_array_equal(pts, np.array(expected))


def test_scorer_runs_on_the_first_available_requested_provider(sequence_model):
    from conftest import expected_provider

    # by default: CUDA when a GPU is visible and this onnxruntime has it, else CPU
    assert Scorer(sequence_model).provider == expected_provider()
    # an explicit request: the first of the list that onnxruntime.get_available_providers() has
    assert Scorer(sequence_model, providers=["CPUExecutionProvider"]).provider == "CPUExecutionProvider"
    requested = ["NoSuchExecutionProvider", "CPUExecutionProvider"]
    assert Scorer(sequence_model, providers=requested).provider == expected_provider(requested) == "CPUExecutionProvider"


def test_scorer_checks_window_shape(sequence_model):
    scorer = Scorer(sequence_model)
    with pytest.raises(ValueError, match=r"expected windows \[batch, 16, 3\]"):
        scorer.score(np.zeros((2, 15, 3), np.float32))


def test_score_series_batches_equal_one_call(sequence_model):
    from conftest import synthetic_series

    scorer = Scorer(sequence_model)
    values = synthetic_series(300, seed=2)
    result = score_series(scorer, values, batch_size=7)
    direct, direct_ch = scorer.score(sliding_windows(values, 16, 4))
    np.testing.assert_allclose(result["scores"], direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["channel_scores"], direct_ch, rtol=1e-5, atol=1e-6)


def test_worker_scorers_use_inference_threads(sequence_model):
    """``inference_threads`` reaches the ONNX Runtime sessions the worker builds (default one,
    0 for ONNX Runtime's own choice), and a negative value is a config error."""
    from stream_detector.runtime.config import ConfigError, WorkerConfig, load_config
    from stream_detector.runtime.detector import Detector

    def threads(cfg):
        det = Detector(cfg)
        (served,) = det.served.values()
        return served.scorer.session.get_session_options().intra_op_num_threads

    assert threads(WorkerConfig(model_dir=str(sequence_model))) == 1
    assert threads(WorkerConfig(model_dir=str(sequence_model), inference_threads=2)) == 2
    assert threads(WorkerConfig(model_dir=str(sequence_model), inference_threads=0)) == 0  # ORT decides
    with pytest.raises(ConfigError, match="inference_threads"):
        load_config(env={"STREAM_DETECTOR_MODEL_DIR": str(sequence_model), "STREAM_DETECTOR_INFERENCE_THREADS": "-1"})
