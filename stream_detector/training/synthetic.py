"""Synthetic anomalies: what a model catches, measured without a single label.

Why.  A fleet's telemetry rarely comes with labelled faults, and a benchmark's test labels may
not choose a configuration (issue 10: "chosen without test labels").  The faults operators know
(a spike, a level shift, a stuck sensor, a noise burst, a slow drift) can be injected into
held-out NORMAL data, one at a time, and the question asked of the model is the one an operator
asks: does its score single the fault out?  The approach is unsupervised model selection by
synthetic anomaly injection (e.g. Goswami et al., "Unsupervised Model Selection for Time-series
Anomaly Detection", ICLR 2023): it reads no label, so it may choose a configuration; its faults
are idealised, so its figures say what a model can see, not what a benchmark will score.

Procedure (:func:`synthetic_check`).  For each kind and each of ``repeats`` draws (seeded): one
scored channel, a start (never in the first window, so the fault has normal context), a sign,
and the fault of ``length`` points (1 for a spike) is written into a copy of the clean series,
with a size in units of the channel's scale on that clean series (its standard deviation, at
least a tenth of its range, so a flat channel still gets a visible fault):

=============  =====================================================================
``spike``      one point moved by 6 scales
``level_shift`` the points moved by 3 scales
``stuck``      the points held at the first one's value (a frozen sensor)
``noise``      Gaussian noise of 2 scales added
``drift``      a ramp from 0 to 4 scales added
=============  =====================================================================

(all multiplied by ``magnitude``).  Each copy is scored with the exported model (ONNX Runtime,
the worker's graph).  A window is positive when it overlaps the fault.  Per kind:

* ``auprc``: average precision of the window scores over all draws (a random score gets the
  positive fraction, ``base_rate``);
* ``detected``: the fraction of faults with a window over the clean series' 99th percentile of
  window scores (a threshold with 1 % false alarms on this data), the operator's question.

``mean_auprc`` and ``mean_detected`` average the kinds: the selection criterion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("spike", "level_shift", "stuck", "noise", "drift")
SIZES = {"spike": 6.0, "level_shift": 3.0, "noise": 2.0, "drift": 4.0}  # in scales of the channel
FALSE_ALARM_QUANTILE = 0.99


@dataclass(frozen=True)
class Fault:
    kind: str
    channel: int  # column of the series
    start: int
    length: int
    sign: float


def channel_scales(clean: np.ndarray) -> np.ndarray:
    """Per column: the standard deviation, at least a tenth of the range (and 1e-6)."""
    x = np.asarray(clean, dtype=np.float64)
    return np.maximum(np.maximum(np.nanstd(x, axis=0), 0.1 * (np.nanmax(x, axis=0) - np.nanmin(x, axis=0))), 1e-6)


def inject(clean: np.ndarray, fault: Fault, scale: float, rng: np.random.Generator,
           magnitude: float = 1.0) -> np.ndarray:
    """A copy of ``clean`` ``[n, C]`` with ``fault`` written into it."""
    x = np.array(clean, dtype=np.float64, copy=True)
    c, s = fault.channel, fault.start
    e = s + (1 if fault.kind == "spike" else fault.length)
    size = magnitude * scale * SIZES.get(fault.kind, 0.0)
    if fault.kind in ("spike", "level_shift"):
        x[s:e, c] += fault.sign * size
    elif fault.kind == "stuck":
        x[s:e, c] = x[s, c]
    elif fault.kind == "noise":
        x[s:e, c] += rng.normal(0.0, size, e - s)
    elif fault.kind == "drift":
        x[s:e, c] += fault.sign * np.linspace(0.0, size, e - s)
    else:
        raise ValueError(f"unknown fault kind {fault.kind!r} (expected one of {', '.join(KINDS)})")
    return x


def draw_faults(kind: str, n: int, window: int, channels: list[int], length: int, repeats: int,
                rng: np.random.Generator) -> list[Fault]:
    """``repeats`` faults of one kind in a series of ``n`` points: start after the first window,
    end inside the series."""
    span = 1 if kind == "spike" else length
    lo, hi = window, n - span
    if hi <= lo:
        raise ValueError(f"the clean series has {n} points: too short for a window of {window} and a fault of "
                         f"{span} (need more than {window + span})")
    return [Fault(kind, int(rng.choice(channels)), int(rng.integers(lo, hi)), span, float(rng.choice([-1.0, 1.0])))
            for _ in range(repeats)]


def synthetic_check(scorer, clean: np.ndarray, *, repeats: int = 20, seed: int = 0, magnitude: float = 1.0,
                    length: int | None = None, kinds: tuple[str, ...] = KINDS) -> dict:
    """Inject each kind of fault ``repeats`` times into ``clean`` (``[n, C]``, the model's channel
    order, normal data the model was NOT trained on) and score every copy with ``scorer`` (a
    :class:`~stream_detector.runtime.scoring.Scorer` or a model directory); see the module
    docstring for the measures.  The faults go into the channels the score is about (the card's
    ``score.channels``; all channels otherwise)."""
    from ..runtime.scoring import Scorer
    from .evaluation import auprc
    from .fit import score_with_model

    scorer = scorer if isinstance(scorer, Scorer) else Scorer(scorer)
    x = np.asarray(clean, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    w = scorer.window
    names = list(scorer.card.score.get("channels") or scorer.channels)
    channels = [list(scorer.channels).index(c) for c in names]
    length = int(length or max(1, w // 2))
    rng = np.random.default_rng(seed)
    scales = channel_scales(x)
    base = score_with_model(scorer, x.astype(np.float32), stride=1).windows["scores"]
    threshold = float(np.quantile(base[np.isfinite(base)], FALSE_ALARM_QUANTILE))
    out = {"windows": int(len(base)), "threshold": threshold, "repeats": int(repeats), "length": length,
           "magnitude": float(magnitude), "seed": int(seed), "channels": names, "kinds": {}}
    starts = np.arange(len(base))
    for kind in kinds:
        labels, scores, hits = [], [], 0
        for fault in draw_faults(kind, len(x), w, channels, length, repeats, rng):
            # only the windows overlapping the fault change: score those, keep the clean scores elsewhere
            lo, hi = max(0, fault.start - w + 1), min(len(x), fault.start + fault.length + w - 1)
            s = base.copy()
            part = inject(x, fault, scales[fault.channel], rng, magnitude)[lo:hi].astype(np.float32)
            s[lo:hi - w + 1] = score_with_model(scorer, part, stride=1).windows["scores"]
            pos = (starts <= fault.start + fault.length - 1) & (starts + w - 1 >= fault.start)
            ok = np.isfinite(s)
            labels.append(pos[ok])
            scores.append(s[ok])
            hits += bool(np.any(s[pos & ok] >= threshold))
        lab, sc = np.concatenate(labels), np.concatenate(scores)
        out["kinds"][kind] = {"auprc": auprc(lab, sc), "base_rate": float(lab.mean()),
                              "detected": hits / max(1, repeats)}
    out["mean_auprc"] = float(np.mean([k["auprc"] for k in out["kinds"].values()]))
    out["mean_detected"] = float(np.mean([k["detected"] for k in out["kinds"].values()]))
    return out


def markdown(result: dict, title: str) -> str:
    """The per-kind table of :func:`synthetic_check`."""
    lines = [f"# {title}", "",
             f"{result['repeats']} faults of each kind, {result['length']} points long (a spike: 1), magnitude "
             f"{result['magnitude']:g}, seed {result['seed']}, in channel(s) {', '.join(result['channels'])}; "
             f"{result['windows']} windows per copy. `detected`: a window over the clean data's 99th percentile "
             f"of window scores ({result['threshold']:.5g}, 1 % false alarms on this data).", "",
             "| fault | AUPRC | random score | detected |", "|---|---|---|---|"]
    for kind, r in result["kinds"].items():
        lines.append(f"| {kind} | {r['auprc']:.3f} | {r['base_rate']:.3f} | {r['detected']:.0%} |")
    lines.append(f"| **mean** | **{result['mean_auprc']:.3f}** | | **{result['mean_detected']:.0%}** |")
    return "\n".join(lines) + "\n"
