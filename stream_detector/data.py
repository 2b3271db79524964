"""Loading telemetry files for the offline commands, with errors an operator can act on.

Accepted: a ``.npy`` array ``[T, C]`` (channels named ``c0..c{C-1}``) or a CSV with a
header, separated by ``,``, ``;`` or tabs (sniffed from the header line unless ``sep`` is
given), an optional timestamp column (``timestamp``, ``ts``, ``time`` or ``datetime``: epoch
seconds or ISO 8601 such as ``2020-03-09 10:14:33``) and one numeric column per channel.  A
0/1 label column can be named for ``evaluate`` and the benchmarks, and other columns left
out (``ignore_columns``, e.g. SKAB's ``changepoint``).  Every problem is one
:class:`DataError` line naming the file and the fix.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import DataError

TIMESTAMP_COLUMNS = ("timestamp", "ts", "time", "datetime")
SEPARATORS = (",", ";", "\t")


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


def sniff_separator(line: str) -> str:
    """The separator of a CSV header line: the one of ``,``, ``;`` and tab that occurs most
    (``,`` when none does, a one-column file)."""
    counts = [line.count(c) for c in SEPARATORS]
    return SEPARATORS[counts.index(max(counts))] if max(counts) else ","


def read_header(path: str | Path, sep: str | None = None) -> tuple[list[str], str]:
    """``(column names, separator)`` of a CSV file (the separator sniffed unless given)."""
    with open(path, newline="") as f:
        first = f.readline()
    if not first.strip():
        raise DataError(f"{path}: empty file")
    sep = sep or sniff_separator(first)
    return [h.strip() for h in next(csv.reader([first], delimiter=sep))], sep


def _load_csv(path: Path, label_column: str | None, sep: str | None = None,
              ignore_columns: tuple[str, ...] | list[str] = ()) -> Series:
    header, sep = read_header(path, sep)
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        next(reader)
        rows = list(reader)
    lower = [h.lower() for h in header]
    ts_idx = next((lower.index(n) for n in TIMESTAMP_COLUMNS if n in lower), None)
    label_idx = None
    if label_column:
        if label_column not in header:
            raise DataError(f"{path}: no label column {label_column!r} (columns: {', '.join(header)})")
        label_idx = header.index(label_column)
    skip = {header.index(c) for c in ignore_columns if c in header}
    chan_idx = [i for i in range(len(header)) if i not in (ts_idx, label_idx) and i not in skip]
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
                label = float(row[label_idx]) if _is_number(row[label_idx]) and row[label_idx].strip() else None
                if label not in (0.0, 1.0):
                    raise DataError(f"{path}: line {r + 2}: label column {label_column!r} holds {row[label_idx]!r}; "
                                    "labels must be 0 or 1")
                labels[r] = label == 1.0
        except ValueError as e:
            bad = next((header[i] for i in chan_idx if not _is_number(row[i])), None)
            where = f" in column {bad!r} (a non-numeric column can be left out)" if bad else ""
            raise DataError(f"{path}: line {r + 2}: not a number{where} ({e})") from None
    return Series(values, [header[i] for i in chan_idx], ts, labels, str(path))


def _is_number(text: str) -> bool:
    if text.strip() == "":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_series(path: str | Path, label_column: str | None = None, *, sep: str | None = None,
                ignore_columns: tuple[str, ...] | list[str] = ()) -> Series:
    """Load a ``.npy`` or ``.csv`` series and check it is usable (exists, numeric, no NaN/inf).

    For a CSV: ``sep`` is its separator (default: sniffed from the header line), and the
    columns named in ``ignore_columns`` (where present) are neither channels nor labels."""
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
        series = _load_csv(path, label_column, sep, ignore_columns)
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
