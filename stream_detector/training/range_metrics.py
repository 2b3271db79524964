"""Range-based detection metrics that the anomaly-detection field now asks for, computed by the
packages made for them (not re-implemented here).

- **VUS-PR / VUS-ROC**: the volume under the surface of range-based PR / ROC curves over label
  buffers of 0 to ``window`` points (Paparrizos et al., "Volume Under the Surface", VLDB 2022).
  Computed by TSB-AD 1.5 (``TSB_AD.evaluation.basic_metrics.generate_curve``, version ``opt``,
  250 thresholds: what TSB-AD's own ``get_metrics`` reports as VUS-PR / VUS-ROC).  TSB-AD's
  evaluation module needs only numpy and scikit-learn; the ``vus`` 0.0.6 package (the VLDB
  paper's) holds the same algorithm and is the reference in tests/test_range_metrics.py.
- **Corrected event-wise F0.5** of the ESA Anomaly Detection Benchmark (Kotowski et al.,
  ESA-ADB, 2024) and **affiliation** precision / recall / F (Huet et al., KDD 2022), from
  ``telemeval`` 0.3.4.

Both TSB-AD and vus declare dependencies we cannot take (tensorflow, transformers, numpy<2), so
the Makefile installs them with ``pip install --no-deps``; telemeval (numpy, pandas) comes with
the ``bench`` extra.  The imports are inside the functions: the rest of the package works
without these libraries, and the runtime never imports this module.

Inputs are per-point arrays: ``labels`` 0/1 (1 = inside a labelled anomaly), ``scores`` floats,
``flags`` 0/1 detections.
"""

from __future__ import annotations

import numpy as np

_INSTALL = ("is not installed; run `make install` (the Makefile's .venv/.installed step installs "
            "vus and TSB-AD with --no-deps and telemeval with the `bench` extra)")


def _labels(labels, n: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or (n is not None and len(y) != n):
        raise ValueError(f"labels must be one-dimensional with one value a point (got shape {y.shape})")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    if not y.any():
        raise ValueError("labels hold no anomaly: range-based metrics need at least one labelled range")
    # int64, not bool or uint8: TSB-AD finds a range's end where np.diff(label) == -1, never
    # true on those dtypes, so every range would run to the end of the series.
    return y.astype(np.int64)


def vus_pr(labels, scores, window: int, *, thresholds: int = 250) -> dict[str, float]:
    """VUS-PR and VUS-ROC of ``scores`` against ``labels``, with label buffers of 0 to ``window``
    points (the papers use the detector's window length or the series' period).

    Computed by TSB-AD 1.5's ``generate_curve`` (version ``opt``; ``thresholds`` score
    thresholds, 250 as in TSB-AD).  NaN scores (the first points of a stream, before its first
    full window) become the smallest finite score: those points count as flagged only at the
    lowest threshold, where every point is.  Returns ``{"vus_pr": ..., "vus_roc": ...}``.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"scores must be one-dimensional (got shape {s.shape})")
    y = _labels(labels, len(s))
    nan = np.isnan(s)
    if nan.all():
        raise ValueError("every score is NaN")
    if nan.any():
        s = np.where(nan, np.min(s[~nan]), s)
    if int(window) != window or window < 0:
        raise ValueError(f"window must be a non-negative integer (got {window!r})")
    try:
        from TSB_AD.evaluation.basic_metrics import generate_curve
    except ImportError as e:
        raise ImportError(f"TSB-AD (TSB_AD 1.5) {_INSTALL}") from e
    *_, vus_roc_, vus_pr_ = generate_curve(y, s, int(window), version="opt", thre=thresholds)
    return {"vus_pr": float(vus_pr_), "vus_roc": float(vus_roc_)}


def _telemeval_inputs(labels, flags):
    """The arrays as telemeval's metric inputs: one series on a one-minute grid, each labelled
    run one event (what ``telemeval.sklearn`` does, through telemeval's public API)."""
    try:
        import pandas as pd
        import telemeval
    except ImportError as e:
        raise ImportError(f"telemeval 0.3.4 (with pandas) {_INSTALL}") from e
    p = np.asarray(flags)
    if p.ndim != 1 or not np.isin(p, (0, 1)).all():
        raise ValueError("flags must be one-dimensional and 0/1")
    y = _labels(labels, len(p))
    t = pd.Timestamp("2000-01-01") + pd.Timedelta(minutes=1) * np.arange(len(y))
    edges = np.flatnonzero(np.diff(np.concatenate(([0], y, [0]))))
    starts, ends = edges[::2], edges[1::2] - 1
    events = pd.DataFrame({"ID": [f"event_{i}" for i in range(len(starts))], "Channel": "series",
                           "StartTime": t[starts], "EndTime": t[ends]})
    predictions = {"series": pd.DataFrame({"Timestamp": t, "Score": p.astype(np.uint8)})}
    return telemeval, telemeval.build_metric_inputs(telemeval.validate_labels(events), predictions), y, p


def esa_event_f05(labels, flags) -> dict[str, float]:
    """ESA-ADB's corrected event-wise precision, recall and F0.5 of per-point detections.

    Recall = detected labelled events / labelled events.  Precision = TP_e / (TP_e + FP_e) x TNR:
    TP_e the labelled events with at least one flagged point, FP_e the runs of flagged points
    that touch no labelled event, TNR = 1 - (flagged points outside labels) / (points outside
    labels), the correction of Sehili and Zhang (2023) that ESA-ADB adopted.  F0.5 weighs
    precision above recall, as ESA-ADB ranks detectors.

    telemeval 0.3.4's ``score_event_wise`` supplies the event counts (its recall is ESA-ADB's);
    its own precision is a different figure (flagged runs that hit an event / all runs, no TNR
    correction; it says so itself), so the precision here is formed from its counts.  ESA-ADB
    measures the TNR in seconds; on a uniform grid that is the share of points above up to the
    closed-interval conventions at range edges.
    """
    telemeval, inputs, y, p = _telemeval_inputs(labels, flags)
    ew = telemeval.score_event_wise(inputs, beta=0.5)
    tp, fp = ew["detected_events"], ew["false_alarms"]
    nominal = y == 0
    tnr = 1.0 - np.count_nonzero(p[nominal]) / max(np.count_nonzero(nominal), 1)
    precision = tp / (tp + fp) * tnr if tp + fp else 0.0
    recall = float(ew["event_wise_recall"])
    f05 = 1.25 * precision * recall / (0.25 * precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": recall, "f05": float(f05), "tnr": float(tnr),
            "detected_events": tp, "events": ew["total_events"], "false_alarms": fp}


def affiliation_f1(labels, flags) -> dict[str, float]:
    """Affiliation precision, recall and F1 of per-point detections (Huet et al., KDD 2022: each
    labelled event owns the stretch of time closer to it than to any other; a flag scores by how
    unlikely a random point of that zone is to lie as close to the event).  Computed by
    telemeval 0.3.4's ``score_affiliation``, which wraps the paper's reference code; a flag at
    index i is the interval [i, i+1).  Precision is NaN when nothing is flagged (F1 is then 0).
    ESA-ADB reports the same precision and recall, with F0.5.
    """
    telemeval, inputs, _, _ = _telemeval_inputs(labels, flags)
    aff = telemeval.score_affiliation(inputs, beta=1.0)
    precision, recall = aff["affiliation_precision"], aff["affiliation_recall"]
    return {"precision": float("nan") if precision is None else float(precision),
            "recall": float("nan") if recall is None else float(recall),
            "f1": float(aff["affiliation_fbeta"])}
