"""Summarise the D-AnoGAN runs (``bench paper ... --generators K``) in docs/benchmarks/danogan/
into docs/benchmarks/danogan.json and Markdown tables on stdout (pasted into danogan.md).

Each run's report is ``paper_<benchmark>[_<variant>]_k<K>_seed<S>.json`` as written by
``stream-detector bench paper mnist|har ... --generators K --seed S --out docs/benchmarks/danogan
--tag [_<variant>]_k<K>_seed<S>``; runs of one variant (e.g. ``steps4000``) are summarised apart.

    python scripts/danogan_summary.py [--runs docs/benchmarks/danogan] [--out docs/benchmarks/danogan.json]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

# Research document 002 (Dimon 2021), Table 5.1: MNIST ROC-AUC per anomalous digit
DANOGAN_002 = {0: 0.91, 1: 0.91, 2: 0.92, 3: 0.94, 4: 0.91, 5: 0.88, 6: 0.93, 7: 0.91, 8: 0.94, 9: 0.89}
FANOGAN_002 = {0: 0.80, 1: 0.10, 2: 0.79, 3: 0.64, 4: 0.58, 5: 0.72, 6: 0.71, 7: 0.47, 8: 0.71, 9: 0.45}
NAME = re.compile(r"paper_(mnist|har)(?:_([a-z0-9_]+?))?_k(\d+)_seed(\d+)\.json$")


def _mean_std(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v)),
            "values": [round(float(x), 4) for x in v]}


def collect(runs: Path) -> dict:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    machines = set()
    for path in sorted(runs.glob("paper_*_k*_seed*.json")):
        m = NAME.search(path.name)
        if not m:
            continue
        bench, variant, k, seed = m.groups()
        report = json.loads(path.read_text())
        machines.add((report["machine"]["processor"], report["machine"]["cpu_count"]))
        for r in report["results"]:
            what = str(r["anomaly"]) + (f" / {r['transform']}" if "transform" in r else "")
            groups[(bench, variant or "", what, int(k))].append({**r, "seed": int(seed), "file": path.name})
    out = []
    for (bench, variant, what, k), rows in sorted(groups.items()):
        rows.sort(key=lambda r: r["seed"])
        entry = {"benchmark": bench, "variant": variant, "anomaly": what, "generators": k, "seeds": [r["seed"] for r in rows],
                 "roc_auc": _mean_std([r["roc_auc"] for r in rows]), "auprc": _mean_std([r["auprc"] for r in rows]),
                 "train_seconds": _mean_std([r["train_seconds"] for r in rows]),
                 "score_seconds": _mean_std([r["score_seconds"] for r in rows]),
                 "flops_per_sample": rows[0]["flops_per_sample"],
                 "iterations": [rows[0]["gan_iterations_done"], rows[0]["encoder_iterations_done"]],
                 "files": [r["file"] for r in rows]}
        if k > 1:
            for part in ("residual_only_alpha_0", "kl_only_alpha_1"):
                entry[part] = {m: _mean_std([r["ablations"][part][m] for r in rows]) for m in ("roc_auc", "auprc")}
            entry["prior_min"] = _mean_std([min(r["prior"]) for r in rows])
            entry["prior_max"] = _mean_std([max(r["prior"]) for r in rows])
            if all("clusters" in r for r in rows):
                entry["clusters"] = {m: _mean_std([r["clusters"][m] for r in rows])
                                     for m in ("generators_used", "purity", "nmi")}
        if bench == "mnist":
            d = int(what)
            entry["paper_002"] = {"d_anogan_roc_auc": DANOGAN_002[d], "f_anogan_roc_auc": FANOGAN_002[d]}
        out.append(entry)
    return {"source": "scripts/danogan_summary.py over " + str(runs), "machines": sorted(machines),
            "paper_002_table_5_1": {"d_anogan_roc_auc": DANOGAN_002, "f_anogan_roc_auc": FANOGAN_002,
                                    "d_anogan_mean": 0.91, "f_anogan_mean": 0.60},
            "groups": out}


def _ms(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}" if d["n"] > 1 else f"{d['mean']:.3f}"


def markdown(summary: dict) -> str:
    lines = ["| benchmark | anomaly | K | seeds | ROC-AUC | AUPRC | α=0 ROC-AUC | α=1 ROC-AUC | prior min / max "
             "| generators used | NMI class/generator | 002 D-AnoGAN ROC-AUC | met? | train s | FLOPs / sample |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in summary["groups"]:
        paper = g.get("paper_002", {}).get("d_anogan_roc_auc")
        met = "" if paper is None or g["generators"] == 1 else (
            "met" if g["roc_auc"]["mean"] >= paper else f"missed by {paper - g['roc_auc']['mean']:.3f}")
        a0 = _ms(g["residual_only_alpha_0"]["roc_auc"]) if "residual_only_alpha_0" in g else "–"
        a1 = _ms(g["kl_only_alpha_1"]["roc_auc"]) if "kl_only_alpha_1" in g else "–"
        prior = (f"{g['prior_min']['mean']:.2f} / {g['prior_max']['mean']:.2f}" if "prior_min" in g else "–")
        c = g.get("clusters")
        used = "–" if c is None else "/".join(str(int(v)) for v in c["generators_used"]["values"])
        nmi = "–" if c is None else _ms(c["nmi"])
        lines.append(f"| {g['benchmark']}{' ' + g['variant'] if g['variant'] else ''} | {g['anomaly']} | {g['generators']} | {len(g['seeds'])} "
                     f"| {_ms(g['roc_auc'])} | {_ms(g['auprc'])} | {a0} | {a1} | {prior} | {used} | {nmi} "
                     f"| {'' if paper is None else f'{paper:.2f}'} | {met} | {g['train_seconds']['mean']:.0f} "
                     f"| {g['flops_per_sample'] / 1e6:.1f} M |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="docs/benchmarks/danogan")
    p.add_argument("--out", default="docs/benchmarks/danogan.json")
    args = p.parse_args()
    summary = collect(Path(args.runs))
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(summary))


if __name__ == "__main__":
    main()
