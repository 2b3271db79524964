"""Every score kind of the same trained NAB models, NAB-scored: no retraining.

The ``fanogan``, ``critic`` and ``combined`` kinds differ only in how the graph's outputs are
read (export.py: ``combined = fanogan + critic_scale * (critic - critic_mean)``, with the card's
standardisation from the training windows), and every exported graph outputs its ``score``
(fanogan or combined), the ``critic_score`` and the residual ``cell_scores``.  So one ``bench
nab --models DIR`` run answers what each kind would score with the *same* networks;
``bench nab --score KIND`` would retrain them (bit for bit the same networks at the same seed)
only to read another output.  Two diagnostic readouts that are not score kinds are added: the
residual of the window's newest point and of its newest 4 points (a streaming score of "the
points just arrived" instead of the whole window's mean).

Each readout gets bench nab's post-processing (the configuration of the run, from its report),
is NAB-scored per seed, and the table gives mean ± std over the seeds.  It reads NAB's labels:
a comparison, not a way to choose the kind.

    python scripts/nab_score_kinds.py DIR/wgan --data ../shared/data/nab --out docs/benchmarks

``DIR/wgan`` holds ``seed<k>/<category>__<file>/`` of ``bench nab --detectors wgan --models DIR``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from stream_detector.bench import nab
from stream_detector.bench.comparison import aggregate, cell
from stream_detector.bench.nab_scorer import probationary_length
from stream_detector.runtime.scoring import Scorer, sliding_windows

KINDS = ("fanogan", "critic", "combined", "newest point", "newest 4 points")


def readouts(scorer: Scorer, values: np.ndarray, batch: int = 4096) -> dict[str, np.ndarray]:
    """Each readout of :data:`KINDS` per window of ``values [T, C]`` (stride 1), from one pass of the graph."""
    w = sliding_windows(np.asarray(values, dtype=np.float32), scorer.window, 1)
    parts: dict[str, list] = {"score": [], "critic_score": [], "cell_scores": []}
    for i in range(0, len(w), batch):
        out = scorer.run_all(w[i:i + batch])
        for k in parts:
            parts[k].append(out[k])
    o = {k: np.concatenate(v) for k, v in parts.items()}
    spec = scorer.card.score
    kind = spec.get("kind", "fanogan")
    if kind not in ("fanogan", "combined") or spec.get("level_weight"):
        raise SystemExit(f"{scorer.model_dir}: a fanogan or combined model without a level term is needed, not {spec}")
    critic_term = spec["critic_scale"] * (o["critic_score"] - spec["critic_mean"])
    fanogan = o["score"] - critic_term if kind == "combined" else o["score"]
    return {"fanogan": fanogan, "critic": o["critic_score"], "combined": fanogan + critic_term,
            "newest point": o["cell_scores"][:, :, -1].mean(axis=1),
            "newest 4 points": o["cell_scores"][:, :, -4:].mean(axis=(1, 2))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", help="<models>/wgan of a bench nab run (seed<k>/<category>__<file>/)")
    ap.add_argument("--data", required=True, help="the NAB folder")
    ap.add_argument("--out", required=True, help="where nab_score_kinds.md/.json go")
    a = ap.parse_args()
    root = Path(a.data)
    cfg = dict(nab.DEFAULT_CONFIG)
    cfg["likelihood"] = dict(nab.LIKELIHOOD)  # the default periods ('probation') set the two periods per file
    files = nab._files(root)
    seeds = sorted(int(d.name[4:]) for d in Path(a.models).glob("seed*") if d.name[4:].isdigit())
    per_seed: dict[str, dict[int, dict]] = {}
    results = Path(tempfile.mkdtemp(prefix="sd-nab-kinds-"))
    for seed in seeds:
        rows: dict[str, list[dict]] = {k: [] for k in KINDS}
        for f in files:
            timestamps, values = nab.read_nab_csv(root / "data" / f)
            scorer = Scorer(Path(a.models) / f"seed{seed}" / nab.model_folder(f), threads=1)
            prob = probationary_length(len(values), cfg["probationary"])
            for kind, v in readouts(scorer, values.reshape(-1, 1)).items():
                raw = np.full(len(values), np.nan)
                raw[scorer.window - 1:] = v
                scores = nab.post_process(raw, cfg, prob, values)
                rows[kind].append({"name": f, "timestamps": timestamps, "scores": scores.tolist(), "raw": raw.tolist(),
                                   "points": len(values), "probationary": prob})
        for kind in KINDS:
            name = f"{kind.replace(' ', '_')}-seed{seed}"
            nab.write_results(results, name, rows[kind], root)
            scores = nab.score_nab_results(results / name, root)
            per_seed.setdefault(kind, {})[seed] = {p: s["score"] for p, s in scores.items()}
            print(f"seed {seed} {kind}: " + ", ".join(f"{p} {s['score']:.1f}" for p, s in scores.items()), flush=True)
    cmp = aggregate(per_seed)
    profiles = list(next(iter(per_seed.values()))[seeds[0]])
    lines = ["# NAB: the score kinds of the same trained models", "",
             f"`python scripts/nab_score_kinds.py {a.models} --data {a.data} --out {a.out}`: {len(files)} files, "
             f"seeds {','.join(map(str, seeds))}, post-processing as `bench nab`'s default (Numenta's likelihood with "
             "NAB's periods, the spatial rule 0.05). Reads NAB's labels: a comparison, not a choice.", "",
             "| readout | " + " | ".join(profiles) + " | per seed (standard) |", "|---|" + "---|" * (len(profiles) + 1)]
    for kind in KINDS:
        lines.append(f"| {kind} | " + " | ".join(cell(cmp[kind][p], 1) for p in profiles) + " | "
                     + ", ".join(f"{per_seed[kind][sd]['standard']:.1f}" for sd in seeds) + " |")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nab_score_kinds.md").write_text("\n".join(lines) + "\n")
    (out / "nab_score_kinds.json").write_text(json.dumps({"models": a.models, "seeds": seeds, "files": len(files),
                                                          "per_seed": per_seed, "comparison": cmp}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
