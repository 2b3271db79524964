"""Detection-quality metrics for per-point anomaly scores against labelled ranges.

Threshold-free metrics (ROC-AUC, AUPRC, logAUC, best F1) come from scikit-learn's curves.  The
event-level counting follows the Orion benchmark (Alnegheimy et al., TadGAN): predicted and
labelled anomalies are *segments*; a labelled segment that any predicted segment overlaps
is one true positive, a labelled segment that none overlaps is one false negative, and a
predicted segment that overlaps no labelled segment is one false positive.  Point-adjusted
F1 (every point of a labelled segment counts as detected once any of its points is)
is reported because papers use it, but it flatters noisy detectors and is never shown alone.

Ranges are inclusive index pairs ``(start, end)``.  Points whose score is NaN (before the
first complete window) are left out of the threshold-free metrics and count as "not
flagged" for the thresholded ones.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from sklearn import metrics as skm

from ..runtime.thresholds import ranges_from_mask  # noqa: F401 - the one run-length coder, used here and by callers

Range = tuple[int, int]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(skm.roc_auc_score(np.asarray(labels, bool), np.asarray(scores, float)))


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve, as average precision (anomaly = positive)."""
    return float(skm.average_precision_score(np.asarray(labels, bool), np.asarray(scores, float)))


def log_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """logAUC as research document 003 (Eide 2018, section 3.2) defines it: the area under the
    ROC curve with the false-positive rate on a log axis, which weighs the early steepness of
    the curve (detection at the false-alarm rates operators can live with).  A threshold with no
    false positive counts as half a false positive, ``0.5 / N_neg``, so that the integral is
    defined; the area runs from that rate to 1 and is divided by the axis' length, so a perfect
    ranking scores 1 and a random one about ``1 / (ln 10 * log10(2 N_neg))`` (0.13 for 1,000
    negatives)."""
    y = np.asarray(labels, bool)
    fpr, tpr, _ = skm.roc_curve(y, np.asarray(scores, float))
    floor = 0.5 / max(1, int((~y).sum()))
    x = np.log10(np.maximum(fpr, floor))
    area = np.trapezoid(tpr, x) if hasattr(np, "trapezoid") else np.trapz(tpr, x)
    return float(area / -math.log10(floor))


def best_f1(labels: np.ndarray, scores: np.ndarray) -> dict:
    """The best point-wise F1 over all thresholds (an oracle figure: it uses the labels)."""
    p, r, t = skm.precision_recall_curve(np.asarray(labels, bool), np.asarray(scores, float))
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)[:-1]
    i = int(np.argmax(f)) if len(f) else 0
    return {"f1": float(f[i]) if len(f) else 0.0, "precision": float(p[i]), "recall": float(r[i]),
            "threshold": float(t[i]) if len(t) else float("nan")}


def mask_from_ranges(ranges: Iterable[Sequence[int]], n: int) -> np.ndarray:
    """Boolean mask of length ``n`` with the inclusive ranges set (clipped to ``[0, n)``)."""
    mask = np.zeros(n, bool)
    for s, e in ranges:
        s, e = max(0, int(s)), min(n - 1, int(e))
        if s <= e:
            mask[s:e + 1] = True
    return mask


def merge_ranges(ranges: Iterable[Sequence[int]], gap: int = 0) -> list[Range]:
    """Sort ranges and merge those that overlap or are separated by at most ``gap`` points."""
    out: list[list[int]] = []
    for s, e in sorted((int(a), int(b)) for a, b in ranges):
        if out and s <= out[-1][1] + gap + 1:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _overlaps(a: Range, b: Range) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def event_counts(truth: Sequence[Range], predicted: Sequence[Range]) -> dict:
    """Orion-style segment counts ``tp``, ``fp``, ``fn``."""
    tp = sum(1 for t in truth if any(_overlaps(t, p) for p in predicted))
    fp = sum(1 for p in predicted if not any(_overlaps(t, p) for t in truth))
    return {"tp": tp, "fp": fp, "fn": len(truth) - tp}


def f1_from_counts(c: dict) -> dict:
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {**c, "precision": precision, "recall": recall, "f1": f1}


def event_f1(truth: Sequence[Range], predicted: Sequence[Range]) -> dict:
    return f1_from_counts(event_counts(truth, predicted))


def sum_event_counts(per_series: Iterable[dict]) -> dict:
    """Pool tp/fp/fn over many series (how the benchmark totals are formed) and score them."""
    total = {"tp": 0, "fp": 0, "fn": 0}
    for c in per_series:
        for k in total:
            total[k] += int(c[k])
    return f1_from_counts(total)


def point_adjusted_f1(labels: np.ndarray, flagged: np.ndarray) -> dict:
    labels, adjusted = np.asarray(labels, bool), np.asarray(flagged, bool).copy()
    for s, e in ranges_from_mask(labels):
        if adjusted[s:e + 1].any():
            adjusted[s:e + 1] = True
    tp = int(np.sum(adjusted & labels))
    fp = int(np.sum(adjusted & ~labels))
    fn = int(np.sum(~adjusted & labels))
    return f1_from_counts({"tp": tp, "fp": fp, "fn": fn})


def evaluate_scores(labels: np.ndarray, scores: np.ndarray, threshold: float, merge_gap: int = 0) -> dict:
    """Every metric for one series: threshold-free ones on the finite scores, thresholded ones
    (event-level and point-adjusted) with ``threshold``, detections merged across ``merge_gap``."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, float)
    if labels.shape != scores.shape:
        raise ValueError(f"labels ({labels.shape}) and scores ({scores.shape}) differ in length")
    finite = np.isfinite(scores)
    y, s = labels[finite], scores[finite]
    both = y.any() and not y.all()
    flagged = finite & (np.where(finite, scores, -np.inf) >= threshold)
    predicted = merge_ranges(ranges_from_mask(flagged), merge_gap)
    truth = ranges_from_mask(labels)
    return {
        "points": int(len(scores)), "scored_points": int(finite.sum()), "anomalous_points": int(labels.sum()),
        "roc_auc": roc_auc(y, s) if both else float("nan"),
        "auprc": auprc(y, s) if both else float("nan"),
        "log_auc": log_auc(y, s) if both else float("nan"),
        "best_f1": best_f1(y, s) if both else {"f1": float("nan"), "precision": float("nan"),
                                                "recall": float("nan"), "threshold": float("nan")},
        "event": event_f1(truth, predicted),
        "point_adjusted": point_adjusted_f1(labels, flagged),
        "predicted_ranges": [list(r) for r in predicted],
    }
