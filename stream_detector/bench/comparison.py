"""Detectors side by side over several seeds: the shape every quality runner reports in.

A quality claim is a mean over at least three training seeds with its spread, next to the
trivial baselines and the peers measured in the same run (``stream_detector.bench.peers``).
The runners fill ``{detector: {seed: summary}}`` where a summary is a flat mapping of figures;
:func:`aggregate` turns it into ``{detector: {figure: {"mean", "std", "n"}}}`` and
:func:`cell` prints one as ``0.712 ± 0.015``.  Configurations are compared on means only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from .peers import PEERS

DETECTORS = ("wgan",) + PEERS
ENSEMBLE = "-ensemble"  # a detector's seeds averaged into one score report as "<detector>-ensemble"


def report_order(key: tuple[str, int]) -> tuple[float, int]:
    """Sort key of a ``(detector, seed)`` run in reports: the detectors' order, each seed
    ensemble (``<detector>-ensemble``) right after its seeds."""
    det = key[0].removesuffix(ENSEMBLE)
    return DETECTORS.index(det) + (0.5 if key[0].endswith(ENSEMBLE) else 0.0), key[1]


def parse_detectors(spec: str) -> list[str]:
    """``"wgan,zscore"`` or ``"all"`` → names, checked (ValueError names an unknown one)."""
    names = list(DETECTORS) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in DETECTORS]
    if bad or not names:
        raise ValueError(f"--detectors: unknown {', '.join(bad) or '(none given)'}; choose from "
                         f"{', '.join(DETECTORS)} or 'all'")
    return names


def parse_seeds(spec: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]`` (ValueError on anything else)."""
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds: comma-separated integers, not {spec!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: distinct comma-separated integers, not {spec!r}")
    return seeds


def mean_std(values: Iterable[float | None]) -> dict:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the values given."""
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def aggregate(per_seed: Mapping[str, Mapping[int, Mapping[str, float]]]) -> dict:
    """``{detector: {seed: {figure: value}}}`` → ``{detector: {figure: mean_std}}``."""
    out = {}
    for det, seeds in per_seed.items():
        figures = sorted({k for s in seeds.values() for k in s})
        out[det] = {k: mean_std(s.get(k) for s in seeds.values()) for k in figures}
    return out


def cell(ms: dict | None, digits: int = 3, ensemble: bool = False) -> str:
    """``0.712 ± 0.015`` for a mean_std over several seeds, ``0.712 (1 seed)`` for one, ``—`` for
    none; ``ensemble``: the figure of a seed ensemble (one detector made of several seeds), ``0.712``."""
    if not ms or ms["mean"] is None:
        return "—"
    if ensemble:
        return f"{ms['mean']:.{digits}f}"
    if ms["n"] == 1:
        return f"{ms['mean']:.{digits}f} (1 seed)"
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"
