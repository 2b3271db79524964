"""The Numenta Anomaly Benchmark (NAB v1.1) scorer, vectorised with numpy.

Written from NAB's description and its reference scorer (``nab/sweeper.py``,
``nab/runner.py`` of numenta/NAB); the rules kept here, and why each matters:

* **Anomaly windows** (``labels/combined_windows.json``): each labelled anomaly is a window of
  timestamps centred on it.  A detection anywhere in a window is a true positive; a window
  without any detection is one false negative.  Points are scored, not windows, but a window
  counts **once**, for its *earliest* detection: NAB rewards early warning, not alarm storms.
* **Scaled sigmoid** ``S(y) = 2 / (1 + exp(5 y)) - 1`` (``-1`` from ``y >= 3`` on): ``y`` is a
  point's position relative to the right edge of its window, in window widths.  Inside a
  window ``y = -(right - i + 1) / width``, so the window's first point has ``y = -1`` and earns
  the full ``tpWeight`` (NAB divides by ``S(-1)`` for that), falling to about 0 at the right
  edge.  Outside a window ``y = (i - right_prev) / (width_prev - 1)`` from the right edge of the
  previous window: a false positive just after a window costs little (it is probably the
  same event, a bit late), one far from it costs the full ``fpWeight``; before any window
  ``y = 3``, the full cost.
* **Application profiles** (``config/profiles.json``): ``standard`` (tp 1, fp 0.11, fn 1),
  ``reward_low_FP_rate`` (fp 0.22) and ``reward_low_FN_rate`` (fn 2) weight the same counts.
* **Probationary period**: the first ``min(floor(0.15 n), 0.15 * 5000)`` points of a file of
  ``n`` points are not scored at all (the detector is still learning); a window that lies
  wholly inside it is ignored.
* **Threshold**: a point is a detection when its anomaly score is ``>= threshold``.  NAB's
  optimiser (the sweeper) tries every unique score of the corpus as threshold (plus ``1.1``,
  nothing detected) and keeps, per profile, the one giving the highest raw score summed over
  *all* files: one threshold for the corpus, not one per file.
* **Normalisation**: ``100 * (raw - null) / (perfect - null)`` where ``null`` is the raw score
  of the detector that never fires (``-fnWeight`` per scored window) and ``perfect`` is
  ``tpWeight`` per labelled window (every window hit on its first point, no false positive).

Point counts (``tp``, ``fp``, ``fn``, ``tn``) are NAB's: scored *points* in / out of windows,
detected or not; ``windows`` and ``windows_detected`` give the per-window view.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROBATIONARY_FRACTION = 0.15
#: NAB caps the probationary period at ``fraction * 5000`` points (750 for 15 %).
PROBATIONARY_CAP_POINTS = 5000
#: The sweep's first threshold: above every score in ``[0, 1]``, so nothing is detected.
NOTHING_THRESHOLD = 1.1
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

ScoresByFile = Mapping[str, tuple[Any, Any]]


# --------------------------------------------------------------------------------------------
# NAB's weighting functions


def scaled_sigmoid(y):
    """NAB's ``S(y) = 2 * sigmoid(-5 y) - 1``, and ``-1`` for ``y >= 3``.

    ``S(-1) = 0.98661`` (left edge of a window, the earliest true positive), ``S(0) = 0`` (right
    edge), ``S(1) = -0.98661`` (one window width past it).  The cut at 3 makes every point far
    from a window, or before the first one, a full false positive.  Accepts scalars or arrays.
    """
    y = np.asarray(y, dtype=np.float64)
    clipped = np.minimum(y, 3.0)  # exp(5 * 3) is finite; larger y is -1 anyway
    out = np.where(y >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * clipped)) - 1.0)
    return float(out) if out.ndim == 0 else out


#: ``S(-1)``: NAB divides true-positive weights by it, so a hit on a window's first point
#: earns exactly ``tpWeight``.
MAX_TP = scaled_sigmoid(-1.0)


def probationary_length(n: int, fraction: float = PROBATIONARY_FRACTION) -> int:
    """Points at the start of a file of ``n`` points that NAB does not score.

    ``min(floor(fraction * n), fraction * 5000)``: the detector may still be learning there,
    and long files do not get a longer grace period than 750 points.
    """
    return int(min(math.floor(fraction * n), fraction * PROBATIONARY_CAP_POINTS))


def unweighted_point_scores(n: int, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point of a file: NAB's unweighted sweep score and the index of its window (-1 outside).

    ``windows`` is an ``[K, 2]`` array of inclusive ``(first, last)`` row indices, sorted and
    disjoint.  Inside window ``k`` the score is ``S(-(last - i + 1) / width) / S(-1)`` (the
    true-positive reward, 1 at the window's first point); outside, ``S((i - last_prev) /
    (width_prev - 1))`` relative to the previous window (``S(3) = -1`` before any window), to
    be multiplied by ``fpWeight``.
    """
    i = np.arange(n)
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    starts, ends = windows[:, 0], windows[:, 1]
    widths = (ends - starts + 1).astype(np.float64)
    win = np.full(n, -1, dtype=np.int64)
    y = np.full(n, 3.0)
    if len(windows):
        k = np.searchsorted(starts, i, side="right") - 1  # last window starting at or before i
        inside = (k >= 0) & (i <= ends[np.maximum(k, 0)])
        win[inside] = k[inside]
        ki = k[inside]
        y_in = -(ends[ki] - i[inside] + 1) / widths[ki]
        j = np.searchsorted(ends, i, side="left") - 1  # last window ending before i
        past = ~inside & (j >= 0)
        jp = j[past]
        with np.errstate(divide="ignore"):  # a one-point window: every later point is far past it
            y[past] = (i[past] - ends[jp]) / (widths[jp] - 1.0)
    u = scaled_sigmoid(y)
    if len(windows):
        u[inside] = scaled_sigmoid(y_in) / MAX_TP
    return u, win


# --------------------------------------------------------------------------------------------
# Loading the corpus


def _load_json(source) -> Any:
    if isinstance(source, Mapping):
        return source
    with open(source) as f:
        return json.load(f)


def to_datetime64(timestamps) -> np.ndarray:
    """Timestamps as ``datetime64[ms]``: NAB strings (``2014-07-01 00:00:00[.000000]``),
    datetime64 values, or numbers taken as epoch seconds."""
    a = np.asarray(timestamps)
    if np.issubdtype(a.dtype, np.datetime64):
        return a.astype("datetime64[ms]")
    if np.issubdtype(a.dtype, np.number):
        return (np.round(a.astype(np.float64) * 1000.0)).astype("int64").astype("datetime64[ms]")
    return np.array([str(t).strip() for t in a], dtype="datetime64[ms]")


def load_windows(labels_path) -> dict[str, np.ndarray]:
    """``combined_windows.json`` as ``{relative data path: [K, 2] datetime64 (start, end)}``,
    windows sorted by start (NAB walks them in time order)."""
    raw = _load_json(labels_path)
    out = {}
    for rel, pairs in raw.items():
        w = to_datetime64([t for pair in pairs for t in pair]).reshape(-1, 2)
        out[rel] = w[np.argsort(w[:, 0], kind="stable")]
    return out


def load_profiles(profiles_path) -> dict[str, dict[str, float]]:
    """``config/profiles.json`` as ``{profile: {"tpWeight", "fpWeight", "fnWeight", "tnWeight"}}``."""
    raw = _load_json(profiles_path)
    return {name: {k: float(v) for k, v in p.get("CostMatrix", p).items()}
            for name, p in raw.items()}


def load_thresholds(thresholds_path, detector: str) -> dict[str, float]:
    """A detector's tuned thresholds from NAB's ``config/thresholds.json``: ``{profile: threshold}``."""
    raw = _load_json(thresholds_path)
    if detector not in raw:
        raise KeyError(f"detector {detector!r} not in {thresholds_path}; have {sorted(raw)}")
    return {profile: float(v["threshold"]) for profile, v in raw[detector].items()}


def _read_csv_columns(path: Path, columns: tuple[str, ...]) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} (header: {','.join(header)})")
        idx = [header.index(c) for c in columns]
        cols: dict[str, list[str]] = {c: [] for c in columns}
        for row in reader:
            if not row:
                continue
            for c, k in zip(columns, idx):
                cols[c].append(row[k])
    return cols


def results_relative_path(path: Path, results_dir: Path) -> str:
    """``<category>/<detector>_<file>.csv`` under a detector's results folder -> the data file's
    relative path ``<category>/<file>.csv`` (the key of the label windows)."""
    rel = path.relative_to(results_dir)
    prefix = results_dir.name + "_"
    name = rel.name[len(prefix):] if rel.name.startswith(prefix) else rel.name.split("_", 1)[-1]
    return str(rel.parent / name)


def load_results(results_dir, data_dir=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A detector's NAB results folder as ``{relative data path: (timestamps, anomaly scores)}``.

    Reads ``<results_dir>/<category>/<detector>_<file>.csv`` (column ``anomaly_score``; the
    top-level ``*_scores.csv`` summaries are skipped).  With ``data_dir`` the timestamps are the
    data file's, as NAB's scorer takes them; otherwise the results file's own.
    """
    results_dir = Path(results_dir)
    out = {}
    for path in sorted(results_dir.glob("*/*.csv")):
        rel = results_relative_path(path, results_dir)
        cols = _read_csv_columns(path, ("timestamp", "anomaly_score"))
        scores = np.array(cols["anomaly_score"], dtype=np.float64)
        ts = cols["timestamp"]
        if data_dir is not None:
            ts = _read_csv_columns(Path(data_dir) / rel, ("timestamp",))["timestamp"]
            if len(ts) != len(scores):
                raise ValueError(f"{path}: {len(scores)} scores but the data file {rel} has {len(ts)} rows")
        out[rel] = (to_datetime64(ts), scores)
    if not out:
        raise ValueError(f"no results CSVs under {results_dir}/<category>/")
    return out


# --------------------------------------------------------------------------------------------
# The scorable points of a corpus


@dataclass
class Prepared:
    """Every scored (post-probation) point of a corpus, concatenated over files.

    ``u``: unweighted sweep score (true-positive reward inside a window, false-positive cost
    factor outside); ``win``: global window id or -1; ``file``: index into ``files``.
    ``scored_windows``: windows with at least one scored point (each costs ``fnWeight`` if
    missed); ``labelled_windows``: all windows of the scored files (the perfect detector's
    denominator, as NAB counts the labels).
    """

    files: list[str]
    score: np.ndarray
    u: np.ndarray
    win: np.ndarray
    file: np.ndarray
    window_file: np.ndarray
    scored_windows: int
    labelled_windows: int

    def weights(self, cost: Mapping[str, float]) -> np.ndarray:
        """Per point sweep score under a profile: ``tpWeight * u`` in windows, ``fpWeight * u`` out."""
        return np.where(self.win >= 0, cost["tpWeight"] * self.u, cost["fpWeight"] * self.u)


def prepare(scores_by_file: ScoresByFile, windows: Mapping[str, np.ndarray], data_dir=None,
            probationary_fraction: float = PROBATIONARY_FRACTION) -> Prepared:
    """Window membership and sweep weights of every scored point (profile-independent).

    ``scores_by_file``: ``{relative data path: (timestamps, scores)}``; timestamps may be
    ``None`` when ``data_dir`` is given (then the data file's rows are the timestamps).  Window
    limits are matched to rows as NAB does (first row at or after the start, last row at or
    before the end).
    """
    files, score, u, win, fid, window_file = [], [], [], [], [], []
    next_window = 0
    labelled = 0
    for f, rel in enumerate(sorted(scores_by_file)):
        ts, s = scores_by_file[rel]
        s = np.asarray(s, dtype=np.float64).ravel()
        if ts is None:
            if data_dir is None:
                raise ValueError(f"{rel}: no timestamps and no data_dir to read them from")
            ts = _read_csv_columns(Path(data_dir) / rel, ("timestamp",))["timestamp"]
        ts = to_datetime64(ts)
        if len(ts) != len(s):
            raise ValueError(f"{rel}: {len(ts)} timestamps but {len(s)} scores")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{rel}: {int(np.sum(~np.isfinite(s)))} anomaly scores are NaN or infinite")
        if rel not in windows:
            raise KeyError(f"{rel} has no entry in the label windows")
        lim = windows[rel]
        idx = np.stack([np.searchsorted(ts, lim[:, 0], side="left"),
                        np.searchsorted(ts, lim[:, 1], side="right") - 1], axis=1) if len(lim) else \
            np.zeros((0, 2), dtype=np.int64)
        empty = idx[:, 0] > idx[:, 1]
        if np.any(empty):
            raise ValueError(f"{rel}: window(s) {lim[empty].astype(str).tolist()} contain no row")
        labelled += len(idx)
        uf, wf = unweighted_point_scores(len(s), idx)
        p = probationary_length(len(s), probationary_fraction)
        uf, wf, sf = uf[p:], wf[p:], s[p:]
        # Only windows with a scored point take part (NAB names the others "probationary").
        present = np.unique(wf[wf >= 0])
        remap = np.full(len(idx) + 1, -1, dtype=np.int64)
        remap[present] = next_window + np.arange(len(present))
        wf = remap[wf]  # -1 maps through remap[-1] == -1
        next_window += len(present)
        window_file += [f] * len(present)
        files.append(rel)
        score.append(sf)
        u.append(uf)
        win.append(wf)
        fid.append(np.full(len(sf), f, dtype=np.int64))
    if not files:
        raise ValueError("no files to score")
    return Prepared(files, np.concatenate(score), np.concatenate(u), np.concatenate(win),
                    np.concatenate(fid), np.array(window_file, dtype=np.int64), next_window, labelled)


# --------------------------------------------------------------------------------------------
# Scoring at a threshold, and the sweep


def _counts(prep: Prepared, detected: np.ndarray) -> dict[str, int]:
    inside = prep.win >= 0
    tp = int(np.sum(detected & inside))
    fp = int(np.sum(detected & ~inside))
    hit = np.unique(prep.win[detected & inside])
    return {"tp": tp, "fp": fp, "fn": int(np.sum(inside)) - tp, "tn": int(np.sum(~inside)) - fp,
            "windows": prep.scored_windows, "windows_detected": len(hit)}


def raw_at_threshold(prep: Prepared, cost: Mapping[str, float], threshold: float,
                     per_file: bool = False) -> tuple[float, dict[str, int], dict[str, float] | None]:
    """Raw NAB score of the corpus with detections ``score >= threshold``.

    Sum of the false positives' weighted sweep scores, plus per window the weighted score of its
    earliest detection (the largest, since the reward falls along the window) or ``-fnWeight``
    when it has none.  Returns ``(raw, counts, per-file raw or None)``.
    """
    w = prep.weights(cost)
    det = prep.score >= threshold
    inside = prep.win >= 0
    fp_mask = det & ~inside
    best = np.full(prep.scored_windows, -cost["fnWeight"])
    np.maximum.at(best, prep.win[det & inside], w[det & inside])
    raw = float(np.sum(w[fp_mask]) + np.sum(best))
    files = None
    if per_file:
        n = len(prep.files)
        pf = np.bincount(prep.file[fp_mask], weights=w[fp_mask], minlength=n).astype(np.float64)
        pf += np.bincount(prep.window_file, weights=best, minlength=n)
        files = dict(zip(prep.files, pf.tolist()))
    return raw, _counts(prep, det), files


def sweep(prep: Prepared, cost: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """NAB's threshold sweep: raw score for every candidate threshold, highest threshold first.

    Candidates are ``1.1`` (nothing detected) and every unique anomaly score; at threshold
    ``t`` all points with score ``>= t`` are detections.  Points are visited in decreasing score
    order; a false positive adds its weighted score, a window's contribution moves from
    ``-fnWeight`` to the best (earliest) detection so far.  ``O(N log N)`` for the whole corpus.
    """
    nothing = -cost["fnWeight"] * prep.scored_windows
    if not len(prep.score):
        return np.array([NOTHING_THRESHOLD]), np.array([nothing])
    w = prep.weights(cost)
    order = np.argsort(-prep.score, kind="stable")
    s, ws, wi = prep.score[order], w[order], prep.win[order]
    delta = np.where(wi < 0, ws, 0.0)
    # Per window, the running best detection in score order; its increments go into the total.
    by_window = np.argsort(wi, kind="stable")  # groups by window, keeping the score order
    wsorted = wi[by_window]
    first_in = np.searchsorted(wsorted, 0, side="left")
    bounds = np.flatnonzero(np.diff(wsorted[first_in:])) + 1 + first_in
    for group in np.split(by_window[first_in:], bounds - first_in):
        if len(group):
            run = np.maximum.accumulate(np.concatenate(([-cost["fnWeight"]], ws[group])))
            delta[group] = np.diff(run)
    total = nothing + np.cumsum(delta)
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # last point at each unique score
    top = NOTHING_THRESHOLD if s[0] < NOTHING_THRESHOLD else np.inf
    thresholds = np.concatenate(([top], s[last]))
    raws = np.concatenate(([nothing], total[last]))
    return thresholds, raws


def optimize_threshold(prep: Prepared, cost: Mapping[str, float]) -> tuple[float, float]:
    """The corpus-wide threshold with the highest raw score (NAB's optimiser): ``(threshold, raw)``.
    Ties go to the highest threshold, as NAB's stable sort of its sweep rows does."""
    thresholds, raws = sweep(prep, cost)
    k = int(np.argmax(raws))
    return float(thresholds[k]), float(raws[k])


def normalize(raw: float, null: float, perfect: float) -> float:
    """NAB's reported score: ``100 * (raw - null) / (perfect - null)`` (null 0, perfect 100)."""
    return 100.0 * (raw - null) / (perfect - null)


# --------------------------------------------------------------------------------------------
# Public entry points


def score_prepared(prep: Prepared, profiles: Mapping[str, Mapping[str, float]],
                   thresholds: Mapping[str, float] | None = None, per_file: bool = False) -> dict[str, dict]:
    """Score a prepared corpus under every profile; ``thresholds=None`` optimises each one."""
    out = {}
    for name, cost in profiles.items():
        if thresholds is None:
            threshold, _ = optimize_threshold(prep, cost)
        else:
            if name not in thresholds:
                raise KeyError(f"no threshold for profile {name!r}; have {sorted(thresholds)}")
            threshold = float(thresholds[name])
        raw, counts, files = raw_at_threshold(prep, cost, threshold, per_file=per_file)
        null = -cost["fnWeight"] * prep.scored_windows
        perfect = cost["tpWeight"] * prep.labelled_windows
        out[name] = {"threshold": threshold, "score": normalize(raw, null, perfect), "raw": raw,
                     "null": null, "perfect": perfect, **counts}
        if per_file:
            out[name]["per_file"] = files
    return out


def score_arrays(scores_by_file: ScoresByFile, labels_path, profiles_path, data_dir=None,
                 thresholds: Mapping[str, float] | None = None,
                 probationary_fraction: float = PROBATIONARY_FRACTION, per_file: bool = False) -> dict[str, dict]:
    """NAB scores of in-memory detector output, without writing results CSVs.

    ``scores_by_file``: ``{relative data path (e.g. "realKnownCause/nyc_taxi.csv"): (timestamps,
    anomaly scores)}``, one score per data row, timestamps as NAB strings, datetime64 or epoch
    seconds (or ``None`` with ``data_dir``).  ``labels_path`` / ``profiles_path``: NAB's
    ``combined_windows.json`` and ``profiles.json`` (or the loaded dicts).  ``thresholds``:
    ``{profile: threshold}`` to use, or ``None`` to optimise per profile over the corpus.

    Returns ``{profile: {"threshold", "score" (normalised), "raw", "null", "perfect", "tp",
    "fp", "fn", "tn" (NAB's point counts), "windows", "windows_detected"}}`` (and ``"per_file"``
    raw scores with ``per_file=True``).  Only the given files are scored and normalised: the
    whole corpus gives NAB's figures, a subset a score on that subset.
    """
    prep = prepare(scores_by_file, load_windows(labels_path), data_dir=data_dir,
                   probationary_fraction=probationary_fraction)
    return score_prepared(prep, load_profiles(profiles_path), thresholds, per_file=per_file)


def score_corpus(results_dir, labels_path, profiles_path, data_dir=None,
                 thresholds: Mapping[str, float] | None = None,
                 probationary_fraction: float = PROBATIONARY_FRACTION, per_file: bool = False) -> dict[str, dict]:
    """NAB scores of a detector's results folder (``results/<detector>/``): see :func:`score_arrays`.

    ``thresholds`` as in NAB's ``config/thresholds.json`` for the detector (see
    :func:`load_thresholds`), or ``None`` to optimise them as NAB's optimiser does.
    """
    return score_arrays(load_results(results_dir, data_dir=data_dir), labels_path, profiles_path,
                        data_dir=None, thresholds=thresholds, probationary_fraction=probationary_fraction,
                        per_file=per_file)
