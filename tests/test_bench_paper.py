"""The paper-reproduction benchmark end to end on tiny synthetic stand-ins for MNIST and UCI HAR.

The data files are written in the shared data's own formats (``mnist/mnist.npz``,
``har/uci_har_test_inertial.npz``) into a temporary folder, so the test needs no shared
data and runs in seconds; it checks the protocol's split sizes, that the reported AUPRC and
ROC-AUC are scikit-learn's on the very labels and scores of each model (captured as the
benchmark runs, in this process), and the JSON / Markdown outputs, through the Python API
and through the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from stream_detector.bench import paper  # noqa: E402
from stream_detector.errors import UserError  # noqa: E402

PER_CLASS = 30  # samples of each class written to the fake files
LIMIT = 20  # --limit-per-class used by the runs
TINY = dict(iterations=20, encoder_iterations=20, batch_size=16, max_seconds=None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paper-data")
    rng = np.random.default_rng(0)
    # MNIST-like: digit d is a bright bar in row band d, on 28 x 28 uint8 images.
    y = np.repeat(np.arange(10), PER_CLASS).astype(np.uint8)
    x = rng.integers(0, 30, (len(y), 28, 28)).astype(np.uint8)
    for i, d in enumerate(y):
        x[i, 2 * d + 4: 2 * d + 7, 4:24] = 250
    (root / "mnist").mkdir()
    np.savez(root / "mnist" / "mnist.npz", x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
    # HAR-like: activity a is a sine of frequency a on every channel, 128 steps x 9 channels.
    acts = np.repeat(np.arange(1, 7), PER_CLASS).astype(np.int8)
    t = np.arange(128) / 128.0
    windows = np.sin(2 * np.pi * acts[:, None, None] * t[None, :, None] + rng.uniform(0, 6.28, (len(acts), 1, 9)))
    windows = (windows + rng.normal(0, 0.05, windows.shape)).astype(np.float32)
    (root / "har").mkdir()
    np.savez(root / "har" / "uci_har_test_inertial.npz", X=windows, y=acts, channels=np.array(["c"] * 9),
             activities=np.array(paper.HAR_ACTIVITIES))
    return root


@pytest.fixture
def captured(monkeypatch) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """``(labels, scores, result)`` of every model the benchmark fits and scores in this process."""
    seen, last = [], {}
    score, fit_and_score = paper._score, paper._fit_and_score

    def score_spy(x, nets, *args, **kwargs):
        last["scores"] = score(x, nets, *args, **kwargs)
        return last["scores"]

    def fit_and_score_spy(x_train, x_test, labels, cfg, *args, **kwargs):
        if kwargs.get("score_fn") is not None:  # HAR scores with the deployable scorer, not _score
            fn = kwargs["score_fn"]

            def score_fn_spy(nets):
                last["scores"] = fn(nets)
                return last["scores"]

            kwargs["score_fn"] = score_fn_spy
        out = fit_and_score(x_train, x_test, labels, cfg, *args, **kwargs)
        seen.append((np.asarray(labels).copy(), np.asarray(last.pop("scores")).copy(), out))
        return out

    monkeypatch.setattr(paper, "_score", score_spy)
    monkeypatch.setattr(paper, "_fit_and_score", fit_and_score_spy)
    return seen


def _check_metrics(rows: list[dict], captured: list) -> None:
    """Each row's AUPRC and ROC-AUC are scikit-learn's on its own labels (anomaly = 1) and scores."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    assert len(captured) == len(rows)
    for r, (labels, scores, _) in zip(rows, captured):
        assert labels.sum() == r["n_test_anomalous"] and (labels == 0).sum() == r["n_test_normal"]
        assert len(np.unique(scores)) > 2, "the scores must not be degenerate for this check to mean anything"
        assert r["auprc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
        assert r["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert r["mean_score_anomalous"] == pytest.approx(float(scores[labels == 1].mean()))


def _check_common(results: dict, json_path: Path, md_path: Path) -> dict:
    on_disk = json.loads(json_path.read_text())
    assert on_disk["results"] == json.loads(json.dumps(results["results"]))
    for key in ("benchmark", "paper", "protocol", "config", "metrics", "score", "machine", "wall_seconds", "results",
                "summary"):
        assert key in on_disk, key
    for key in ("platform", "processor", "cpu_count", "torch", "torch_threads_per_model", "parallel_models"):
        assert key in on_disk["machine"], key
    for r in on_disk["results"]:
        for key in ("anomaly", "auprc", "roc_auc", "train_seconds", "gan_iterations_done", "encoder_iterations_done",
                    "n_train", "n_test_normal", "n_test_anomalous", "flops_per_sample", "config", "paper_auprc"):
            assert key in r, key
        assert r["train_seconds"] > 0 and r["flops_per_sample"] > 0
        assert r["gan_iterations_done"] == TINY["iterations"] and r["encoder_iterations_done"] == TINY["encoder_iterations"]
    md = md_path.read_text()
    assert md.startswith("# ") and "| AUPRC |" in md and "Machine:" in md and "train s" in md
    return on_disk


def test_mnist_protocol_end_to_end(data_dir, tmp_path, captured):
    results = paper.run_mnist([1, 7], seed=3, jobs=1, threads=1, limit_per_class=LIMIT, root=data_dir, **TINY)
    paper.write_results(results, tmp_path / "m.json", tmp_path / "m.md")
    out = _check_common(results, tmp_path / "m.json", tmp_path / "m.md")
    assert [r["anomaly"] for r in out["results"]] == [1, 7]
    _check_metrics(out["results"], captured)
    for r in out["results"]:
        normal = 9 * LIMIT  # the nine other digits, LIMIT images each
        assert r["n_train"] == round(0.8 * normal) and r["n_test_normal"] == normal - r["n_train"]
        assert r["n_test_anomalous"] == LIMIT
        assert r["paper_auprc"] == paper.PAPER_MNIST_AUPRC[r["anomaly"]]
    s = out["summary"]
    assert s["mean_auprc"] == pytest.approx(np.mean([r["auprc"] for r in out["results"]]))
    assert s["paper_mean_auprc"] == pytest.approx((0.51 + 0.57) / 2) and s["digits"] == 2
    md = (tmp_path / "m.md").read_text()
    assert "| 1 |" in md and "| 7 |" in md and "**mean**" in md
    # the three score kinds of the same networks: fanogan is the benchmark's own score
    for r in out["results"]:
        kinds = r["score_kinds"]
        assert set(kinds) == {"fanogan", "critic", "combined"}
        assert kinds["fanogan"]["auprc"] == pytest.approx(r["auprc"], abs=1e-6)
        assert kinds["critic"]["auprc"] != kinds["fanogan"]["auprc"]
        assert all(0.0 <= k[m] <= 1.0 for k in kinds.values() for m in ("auprc", "roc_auc", "log_auc"))
    assert set(s["score_kinds"]) == {"fanogan", "critic", "combined"}
    assert "critic logAUC" in md and "combined AUPRC" in md
    # the peers on the same split (tests/test_peers.py checks what they find)
    for r in out["results"]:
        assert set(r["peers"]) == {"zscore", "iforest"}
        assert all(0.0 <= p[m] <= 1.0 for p in r["peers"].values() for m in ("auprc", "roc_auc"))
    assert s["peers"]["iforest"]["auprc"] == pytest.approx(np.mean([r["peers"]["iforest"]["auprc"]
                                                                    for r in out["results"]]))
    assert "| 1 |" in md and "iforest AUPRC" in md and "model AUPRC" in md


def test_har_protocol_both_transforms_via_cli(data_dir, tmp_path, captured):
    code = paper.main(["har", "--activities", "3", "--limit-per-class", str(LIMIT), "--iterations", "20",
                       "--encoder-iterations", "20", "--batch-size", "16", "--max-seconds", "0", "--jobs", "1", "--threads", "1",
                       "--data", str(data_dir), "--out-dir", str(tmp_path), "--quiet"])
    assert code == 0
    out = _check_common(json.loads((tmp_path / "paper_har.json").read_text()), tmp_path / "paper_har.json",
                        tmp_path / "paper_har.md")
    rows = out["results"]
    _check_metrics(rows, captured)
    assert {(r["anomaly"], r["transform"]) for r in rows} == {
        ("WALKING_DOWNSTAIRS", t) for t in ("distance-plot", "sequence")}
    for r in rows:
        # five normal activities of LIMIT windows, split 70/30 stratified: 14 + 6 of each
        assert r["n_train"] == 5 * 14 and r["n_test_normal"] == 5 * 6 and r["n_test_anomalous"] == LIMIT
        assert r["anomaly"] not in r["n_train_per_activity"]
        assert set(r["n_train_per_activity"].values()) == {14}
        assert r["input_shape"] == ([9, 32, 32] if r["transform"] == "distance-plot" else [9, 128])
    assert all(r["paper_auprc"] is None for r in rows)  # the paper gives no WALKING_DOWNSTAIRS figure
    assert set(out["summary"]) == {"distance-plot", "sequence"}
    assert set(out["config"]) == {"distance-plot", "sequence"}
    md = (tmp_path / "paper_har.md").read_text()
    assert "| WALKING_DOWNSTAIRS | sequence |" in md and "| WALKING_DOWNSTAIRS | distance-plot |" in md


def test_har_level_weight_sweep_scores_the_same_networks(data_dir, tmp_path):
    code = paper.main(["har", "--activities", "LAYING", "--transforms", "distance-plot", "--limit-per-class",
                       str(LIMIT), "--iterations", "10", "--encoder-iterations", "10", "--batch-size", "16",
                       "--max-seconds", "0", "--level-weights", "0,1,30", "--validation", "--data", str(data_dir),
                       "--out-dir", str(tmp_path), "--quiet"])
    assert code == 0
    out = json.loads((tmp_path / "paper_har_validation.json").read_text())
    (row,) = out["results"]
    ab = row["ablations"]
    assert row["level_weight"] == 1.0 and "level_weight_1" not in ab  # the run's own weight is the row itself
    assert ab["level_weight_0"]["auprc"] == pytest.approx(ab["without_level_term"]["auprc"])
    assert "level_weight_30" in ab and row["validation_pseudo_anomaly"] != "LAYING"
    assert "weight 30 AUPRC" in (tmp_path / "paper_har_validation.md").read_text()
    with pytest.raises(UserError, match="--level-weights must be 0 or more"):
        paper.main(["har", "--level-weights", "1,-2", "--data", str(data_dir), "--out-dir", str(tmp_path)])


def test_validation_split_never_touches_the_benchmark_test_set():
    y = np.repeat(np.arange(1, 7), 50)
    train, test, labels, pseudo = paper.protocol_split(y, 6, 0.7, 0, stratify=True, validation=False)
    vtrain, vtest, vlabels, vpseudo = paper.protocol_split(y, 6, 0.7, 0, stratify=True, validation=True)
    assert pseudo is None and vpseudo == 1
    assert set(vtrain) | set(vtest) <= set(train)  # only the benchmark's training samples
    assert not set(vtest) & set(test) and not (y[vtrain] == 6).any() and not (y[vtrain] == 1).any()
    assert (vlabels == (y[vtest] == 1)).all() and vlabels.sum() == (y[train] == 1).sum()
    with pytest.raises(ValueError):
        paper.run_mnist([10])
