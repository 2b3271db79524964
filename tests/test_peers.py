"""The peer detectors of the quality runners: each must rank a burst it never saw in training
above normal data, score causally (a point's score does not change when later points change),
and give the same scores for the same seed."""

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("river")
pytest.importorskip("torch")

from conftest import synthetic_series  # noqa: E402

from stream_detector.bench.comparison import aggregate, cell, mean_std, parse_detectors, parse_seeds  # noqa: E402
from stream_detector.bench.peers import PEERS, fit_and_score_peer, make_peer  # noqa: E402
from stream_detector.training.evaluation import roc_auc  # noqa: E402

SMALL = {"lstm": {"history": 40, "iterations": 60, "units": 16}, "hst": {"window_size": 100}}


def peer(name: str, seed: int = 0):
    return make_peer(name, [0], seed, **SMALL.get(name, {}))


@pytest.fixture(scope="module")
def data():
    train = synthetic_series(900, seed=1)
    test = synthetic_series(600, seed=2)
    test[400:440, 0] += 3.0  # a burst the detectors never saw
    labels = np.zeros(600, bool)
    labels[400:440] = True
    return train, test, labels


@pytest.mark.parametrize("name", PEERS)
def test_each_peer_ranks_an_unseen_burst_above_normal_data(name, data):
    train, test, labels = data
    saved = fit_and_score_peer(peer(name), train, test)
    s = saved["test_scores"]
    assert s.shape == (600,)
    ok = np.isfinite(s)
    assert ok[-1] and ok.sum() >= 600 - 40, "only the first points (too little history) may lack a score"
    assert not ok[:ok.argmax()].any()  # the missing ones are a prefix
    assert roc_auc(labels[ok], s[ok]) > 0.9, name
    # calibration on the held-out tail of the training split: a threshold above most normal scores
    assert saved["release"] <= saved["quantile_threshold"] and len(saved["calibration_scores"]) >= 100
    # (under 10 % for all but HST, which keeps learning online: 12 % after it has learnt the burst)
    assert np.mean(s[ok & ~labels] > saved["quantile_threshold"]) < (0.2 if name == "hst" else 0.1)


@pytest.mark.parametrize("name", PEERS)
def test_peer_scores_are_causal_and_reproducible(name, data):
    train, test, _ = data
    a = peer(name).fit(train).score(test)
    changed = test.copy()
    changed[300:] += 5.0  # the future changes; scores before point 300 must not
    b = peer(name).fit(train).score(changed)
    np.testing.assert_array_equal(a[:300], b[:300])
    assert not np.allclose(a[300:], b[300:]), "the scores ignore the data"
    np.testing.assert_array_equal(a, peer(name).fit(train).score(test))  # same seed, same scores
    if name in ("iforest", "lstm"):  # randomised: another seed, other scores
        assert not np.array_equal(a, peer(name, seed=1).fit(train).score(test))


def test_unknown_peer_and_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown peer"):
        make_peer("svm", [0], 0)
    with pytest.raises(ValueError, match="unknown svm"):
        parse_detectors("wgan,svm")
    assert parse_detectors("all")[0] == "wgan" and set(PEERS) <= set(parse_detectors("all"))
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "a", "1,1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_aggregate_gives_mean_and_sample_std_over_seeds():
    per_seed = {"wgan": {0: {"f1": 0.6}, 1: {"f1": 0.8}, 2: {"f1": 0.7}}, "zscore": {0: {"f1": 0.5}}}
    agg = aggregate(per_seed)
    assert agg["wgan"]["f1"] == pytest.approx({"mean": 0.7, "std": 0.1, "n": 3})
    assert cell(agg["wgan"]["f1"]) == "0.700 ± 0.100"
    assert cell(agg["zscore"]["f1"]) == "0.500 (1 seed)"
    assert mean_std([None, float("nan")]) == {"mean": None, "std": None, "n": 0} and cell(None) == "—"


def test_lstm_on_a_training_split_shorter_than_its_history_halves_the_history():
    train = synthetic_series(60, seed=1)
    p = make_peer("lstm", [0], 0, history=100, iterations=5, units=8).fit(train)
    assert p.history == 30
    s = p.score(synthetic_series(100, seed=2))
    assert np.isnan(s[:30]).all() and np.isfinite(s[30:]).all()


def test_sample_peers_rank_an_outlying_sample_first_and_are_seeded():
    from stream_detector.bench.peers import sample_peer_scores

    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (200, 16, 3))
    test = rng.normal(0, 1, (40, 16, 3))
    test[7, :, 2] += 5.0  # one sample leaves the normal range on one channel
    a = sample_peer_scores(train, test, seed=1)
    b = sample_peer_scores(train, test, seed=1)
    c = sample_peer_scores(train, test, seed=2)
    assert set(a) == {"zscore", "iforest"}
    for name in a:
        assert np.argmax(a[name]) == 7 and a[name].shape == (40,)
        assert np.array_equal(a[name], b[name])
    assert not np.array_equal(a["iforest"], c["iforest"])
