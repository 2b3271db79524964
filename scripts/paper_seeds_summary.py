"""Summarise ``bench paper`` runs of several seeds into mean ± std per class, beside the paper.

Each run is one report ``<stem>_seed<S>.json`` written by ``stream-detector bench paper mnist|har
... --seed S --tag <tag>_seed<S>``; the summary gives, per anomalous class (and transform), the
model's AUPRC and ROC-AUC, the peers' AUPRC, the paper's figure, and the mean over classes
(the per-seed means' mean ± their standard deviation), as JSON and as a Markdown table on stdout.

    python scripts/paper_seeds_summary.py docs/benchmarks/paper_mnist_iterations/paper_mnist_iter3000 \\
        --out docs/benchmarks/paper_mnist_iterations.json
"""

from __future__ import annotations

import argparse
import glob
import json
import re
from pathlib import Path

import numpy as np


def _ms(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "values": [round(float(x), 4) for x in v]}


def _cell(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def summarise(stem: str) -> dict:
    files = sorted(glob.glob(f"{stem}_seed*.json"), key=lambda f: int(re.search(r"_seed(\d+)\.json$", f).group(1)))
    if not files:
        raise SystemExit(f"error: no {stem}_seed<S>.json files")
    runs = [json.loads(Path(f).read_text()) for f in files]
    seeds = [int(re.search(r"_seed(\d+)\.json$", f).group(1)) for f in files]
    keys = [(r["anomaly"], r.get("transform")) for r in runs[0]["results"]]
    rows, per_seed_mean = [], {"auprc": [], "roc_auc": []}
    peers = list(runs[0]["results"][0].get("peers", {}))
    for key in keys:
        found = [next(r for r in run["results"] if (r["anomaly"], r.get("transform")) == key) for run in runs]
        rows.append({"anomaly": key[0], "transform": key[1], "paper_auprc": found[0].get("paper_auprc"),
                     "auprc": _ms([r["auprc"] for r in found]), "roc_auc": _ms([r["roc_auc"] for r in found]),
                     "peers": {p: _ms([r["peers"][p]["auprc"] for r in found]) for p in peers},
                     "gan_iterations": sorted({r["gan_iterations_done"] for r in found}),
                     "encoder_iterations": sorted({r["encoder_iterations_done"] for r in found}),
                     "train_seconds": _ms([r["train_seconds"] for r in found])})
    for run in runs:
        for m in per_seed_mean:
            per_seed_mean[m].append(np.mean([r[m] for r in run["results"]]))
    peer_means = {p: _ms([np.mean([r["peers"][p]["auprc"] for r in run["results"]]) for run in runs]) for p in peers}
    kinds = list(runs[0]["results"][0].get("score_kinds", {}))
    kind_means = {k: {m: _ms([np.mean([r["score_kinds"][k][m] for r in run["results"]]) for run in runs])
                      for m in ("auprc", "roc_auc", "log_auc")} for k in kinds}
    paper = [r["paper_auprc"] for r in rows if r["paper_auprc"] is not None]
    return {"stem": stem, "seeds": seeds, "benchmark": runs[0]["benchmark"], "config": runs[0]["config"],
            "machine": runs[0].get("machine"), "rows": rows,
            "mean": {m: _ms(v) for m, v in per_seed_mean.items()}, "peers_mean_auprc": peer_means,
            "score_kinds_mean": kind_means,
            "paper_mean_auprc": float(np.mean(paper)) if len(paper) == len(rows) else None}


def markdown(s: dict) -> str:
    peers = list(s["peers_mean_auprc"])
    out = [f"| anomaly | AUPRC (seeds {', '.join(map(str, s['seeds']))}) | ROC-AUC | paper AUPRC | "
           + " | ".join(f"{p} AUPRC" for p in peers) + " | GAN / encoder steps |",
           "|---|---|---|---|" + "---|" * len(peers) + "---|"]
    for r in s["rows"]:
        name = r["anomaly"] if r["transform"] is None else f"{r['anomaly']} / {r['transform']}"
        paper = "" if r["paper_auprc"] is None else f"{r['paper_auprc']:.2f}"
        out.append(f"| {name} | {_cell(r['auprc'])} | {_cell(r['roc_auc'])} | {paper} | "
                   + " | ".join(_cell(r["peers"][p]) for p in peers)
                   + f" | {'/'.join(map(str, r['gan_iterations']))} / {'/'.join(map(str, r['encoder_iterations']))} |")
    paper = "" if s["paper_mean_auprc"] is None else f"{s['paper_mean_auprc']:.3f}"
    out.append(f"| **mean** | **{_cell(s['mean']['auprc'])}** | {_cell(s['mean']['roc_auc'])} | {paper} | "
               + " | ".join(_cell(s["peers_mean_auprc"][p]) for p in peers) + " | |")
    if s["score_kinds_mean"]:
        out += ["", "| score kind (same networks) | mean AUPRC | mean ROC-AUC | mean logAUC |", "|---|---|---|---|"]
        out += [f"| {k} | {_cell(v['auprc'])} | {_cell(v['roc_auc'])} | {_cell(v['log_auc'])} |"
                for k, v in s["score_kinds_mean"].items()]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stem", help="reports <stem>_seed<S>.json")
    p.add_argument("--out", help="write the summary JSON here")
    args = p.parse_args()
    s = summarise(args.stem)
    if args.out:
        Path(args.out).write_text(json.dumps(s, indent=2) + "\n")
    print(markdown(s))


if __name__ == "__main__":
    main()
