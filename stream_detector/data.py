"""Loading telemetry files for the offline commands, with errors an operator can act on.

Accepted: a ``.npy`` array ``[T, C]`` (channels named ``c0..c{C-1}``) or a CSV with a
header, an optional timestamp column (``timestamp``, ``ts`` or ``time``: epoch seconds or
ISO 8601) and one numeric column per channel.  A label column can be named for
``evaluate``.  Every problem is one :class:`DataError` line naming the file and the fix.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import DataError

TIMESTAMP_COLUMNS = ("timestamp", "ts", "time")


@dataclass
class Series:
    """One multivariate series: values ``[T, C]`` float32, channel names, optional timestamps and labels."""

    values: np.ndarray
    channels: list[str]
    timestamps: np.ndarray | None = None
    labels: np.ndarray | None = None
    path: str = ""


def _parse_ts(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp {text!r} is neither epoch seconds nor ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _load_csv(path: Path, label_column: str | None) -> Series:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty file") from None
        rows = list(reader)
    lower = [h.lower() for h in header]
    ts_idx = next((lower.index(n) for n in TIMESTAMP_COLUMNS if n in lower), None)
    label_idx = None
    if label_column:
        if label_column not in header:
            raise DataError(f"{path}: no label column {label_column!r} (columns: {', '.join(header)})")
        label_idx = header.index(label_column)
    chan_idx = [i for i in range(len(header)) if i not in (ts_idx, label_idx)]
    if not chan_idx:
        raise DataError(f"{path}: no channel columns besides the timestamp/label")
    values = np.empty((len(rows), len(chan_idx)), dtype=np.float32)
    ts = np.empty(len(rows)) if ts_idx is not None else None
    labels = np.empty(len(rows), dtype=bool) if label_idx is not None else None
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise DataError(f"{path}: line {r + 2} has {len(row)} fields, the header has {len(header)}")
        try:
            values[r] = [float(row[i]) if row[i].strip() != "" else np.nan for i in chan_idx]
            if ts is not None:
                ts[r] = _parse_ts(row[ts_idx])
            if labels is not None:
                labels[r] = float(row[label_idx]) != 0
        except ValueError as e:
            raise DataError(f"{path}: line {r + 2}: not a number ({e})") from None
    return Series(values, [header[i] for i in chan_idx], ts, labels, str(path))


def load_series(path: str | Path, label_column: str | None = None) -> Series:
    """Load a ``.npy`` or ``.csv`` series and check it is usable (exists, numeric, no NaN/inf)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a .npy or .csv file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from None
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"{path}: expected a numeric array [T, C], got {arr.dtype} {list(arr.shape)}")
        if label_column:
            raise DataError(f"{path}: a .npy file has no label column; give the labels as ranges")
        series = Series(arr.astype(np.float32), [f"c{i}" for i in range(arr.shape[1])], None, None, str(path))
    elif suffix == ".csv":
        series = _load_csv(path, label_column)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .npy [T, C] or .csv with a header")
    bad = ~np.isfinite(series.values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{path}: {int(bad.sum())} NaN/inf values (first at row {r}, channel {series.channels[c]!r}); "
                        "clean or impute the data first")
    if series.timestamps is not None and np.any(np.diff(series.timestamps) <= 0):
        r = int(np.argmax(np.diff(series.timestamps) <= 0)) + 1
        raise DataError(f"{path}: timestamps must increase; row {r} does not")
    return series


def require_rows(series: Series, window: int) -> None:
    if len(series.values) < window:
        raise DataError(f"{series.path}: {len(series.values)} rows, fewer than one window of {window}")


def select_channels(series: Series, channels: list[str]) -> np.ndarray:
    """The series' values in the model's channel order; extra channels are ignored."""
    missing = [c for c in channels if c not in series.channels]
    if missing:
        raise DataError(f"{series.path}: channels do not match the model: missing {missing} "
                        f"(model expects {channels}, file has {series.channels})")
    idx = [series.channels.index(c) for c in channels]
    return series.values[:, idx]


def load_ranges(spec: str, n_points: int | None = None, label_id: str | None = None) -> list[tuple[int, int]]:
    """Labelled anomaly ranges (inclusive index pairs) from a JSON list, a JSON file, or a telemanom CSV.

    ``spec`` is inline JSON (``[[10, 20], [50, 60]]``), a ``.json`` file holding such a list,
    or telemanom's ``labeled_anomalies.csv`` together with ``label_id`` (the channel id; rows
    with the same id are united).
    """
    path = Path(spec)
    if spec.lstrip().startswith("["):
        text = spec
    elif path.suffix.lower() == ".csv":
        if not path.exists():
            raise DataError(f"labels file not found: {path}")
        if not label_id:
            raise DataError(f"{path}: a telemanom labels CSV needs --label-id (the channel id, e.g. P-1)")
        ranges: list[tuple[int, int]] = []
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("chan_id") == label_id:
                    ranges += [tuple(r) for r in json.loads(row["anomaly_sequences"])]
        if not ranges:
            raise DataError(f"{path}: no rows for channel {label_id!r}")
        from .training.evaluation import merge_ranges

        return merge_ranges(ranges)  # a channel listed twice (SMAP's P-2) has overlapping rows
    elif path.exists():
        text = path.read_text()
    else:
        raise DataError(f"labels not found: {spec!r} is neither a file nor a JSON list of [start, end] ranges")
    try:
        ranges = [(int(a), int(b)) for a, b in json.loads(text)]
    except (ValueError, TypeError) as e:
        raise DataError(f"labels {spec!r}: expected a JSON list of [start, end] pairs ({e})") from None
    for a, b in ranges:
        if a > b or a < 0 or (n_points is not None and a >= n_points):
            raise DataError(f"labels: range [{a}, {b}] is outside the series of {n_points} points or reversed")
    return sorted(ranges)
