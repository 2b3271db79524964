"""The hybrid score's forecast standardisation, on training windows and on held-out windows.

A ``hybrid`` model adds ``forecast_scale * (forecast - forecast_mean)`` to its fanogan score,
``forecast_scale = std(fanogan) / std(forecast)`` over the training windows (the card's
``score.forecast``).  This recomputes the same ratio over each SMAP channel's held-out last 20 %
of the train split (windows neither network trained on) for every saved model of a ``bench
telemanom --score hybrid --models DIR`` run, to tell a forecaster that merely fits its own
training windows from one that predicts the channel out of sample too (quality.md, "A
label-free criterion: synthetic faults").  It reads the models, retrains nothing.

    python scripts/hybrid_scales.py DIR/wgan --data ../shared/data/smap
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from stream_detector.training.export import score_parts, scorer_from_model_dir, standardisation
from stream_detector.training.fit import _windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", help="<models>/wgan of a bench telemanom --score hybrid run (seed<k>/<channel>/)")
    ap.add_argument("--data", required=True, help="the SMAP folder (train/<channel>.npy)")
    ap.add_argument("--train-fraction", type=float, default=0.8, help="the share of the train split the model "
                                                                      "trained on (bench telemanom: 0.8)")
    a = ap.parse_args()
    print("| seed | channel | scale, training windows | scale, held-out windows | held-out forecast MSE "
          "(mean, std) | held-out fanogan std |\n|---|---|---|---|---|---|")
    for md in sorted(d for d in Path(a.models).glob("seed*/*") if (d / "model.json").exists()):
        card = json.loads((md / "model.json").read_text())
        if "forecast" not in card["score"]:
            continue
        train = np.load(Path(a.data) / "train" / f"{md.name}.npy")[:, :len(card["channels"])].astype(np.float32)
        held_out = torch.from_numpy(_windows([train[int(len(train) * a.train_fraction):]], card["window"], 1))
        net = scorer_from_model_dir(md)
        with torch.no_grad():
            fanogan = score_parts(net.transform(held_out), net.encoder, net.generator, net.critic, net.kappa,
                                  net.classifier, net.alpha).fanogan
            error = net.forecaster.score_and_cells(net.transform.normalise(held_out))[0]
        scale = standardisation(fanogan, error, "forecast")["forecast_scale"]
        print(f"| {md.parent.name} | {md.name} | {card['score']['forecast']['scale']:.3g} | {scale:.3g} | "
              f"{float(error.mean()):.3g}, {float(error.std()):.3g} | {float(fanogan.std()):.3g} |")


if __name__ == "__main__":
    main()
