"""Build the demo's bundled data and model from NASA SMAP (``../shared/data/smap``).

1. ``stream_detector/demo_data/smap_demo.npz``: the *test* split of a few SMAP channels
   (the telemetry value, column 0, as float32), one demo source each, with the labelled
   anomaly ranges from ``labeled_anomalies.csv``.  A few tens of KB, compressed.
2. ``models/smap-demo/1/``: one univariate sequence model trained on the pooled *train*
   splits of every SMAP channel (no test data, no labels), threshold calibrated on the
   held-out last 20 % of each train split: the demo's default route.
3. ``models/<channel>/1/`` for each demo channel: its own model, trained on its own *train*
   split with the configuration of ``bench telemanom`` (its ``DEFAULT_CONFIG``: window 64,
   stride 1, sequence transform, combined score, 200 GAN + 200 encoder iterations, no
   wall-clock cap, seed 0), flagging with telemanom's adaptive threshold (``--threshold
   telemanom``): what the SMAP benchmark measures (docs/benchmarks/quality.md).

Run ``python scripts/build_demo.py`` (needs the ``train`` extra); the outputs are committed
so that ``make demo`` needs neither the shared data nor PyTorch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO_SOURCES = ["G-6", "E-11", "P-2", "D-3", "A-9"]


def build_data(smap: Path, out: Path) -> None:
    from stream_detector.data import load_ranges

    labels = smap / "labeled_anomalies.csv"
    arrays, ranges = {}, {}
    for src in DEMO_SOURCES:
        test = np.load(smap / "test" / f"{src}.npy")[:, 0].astype(np.float32)
        arrays[src] = test
        ranges[src] = [list(map(int, r)) for r in load_ranges(str(labels), len(test), src)]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, sources=np.array(DEMO_SOURCES), ranges=np.array(json.dumps(ranges)),
                        **{f"series_{s}": a for s, a in arrays.items()})
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB, sources {', '.join(DEMO_SOURCES)}")


def build_model(smap: Path, out: Path, seconds: float, iterations: int) -> None:
    from stream_detector.training.fit import fit_series_model
    from stream_detector.training.wgan import TrainConfig

    segments = [np.load(p)[:, :1].astype(np.float32) for p in sorted((smap / "train").glob("*.npy"))]
    segments = [s for s in segments if len(s) >= 400]
    cfg = TrainConfig(arch="conv", iterations=iterations, encoder_iterations=iterations, encoder_mode="izi_f",
                      kappa=1.0, seed=0, max_seconds=seconds)
    card = fit_series_model(segments, ["value"], out, window=64, stride=8, transform="sequence", cfg=cfg,
                            name="smap-demo", version=out.name, source=f"{smap}/train/*.npy column 0 "
                            f"({len(segments)} channels pooled)", progress=True)
    print(f"{out}: threshold {card.threshold['value']:.5g}, trained {card.training['seconds']:.0f} s")


def copy_channel_models(bench_models: Path, root: Path, channels: list[str]) -> None:
    """The same models from a ``bench telemanom --models DIR`` run (same configuration), their
    cards switched to the telemanom threshold calibrated on the run's saved held-out scores
    (exactly what ``--threshold telemanom`` writes); the ONNX files are unchanged."""
    import shutil
    from dataclasses import replace

    from stream_detector.runtime.card import load_card, write_card
    from stream_detector.training.fit import threshold_spec

    for chan in channels:
        src, dst = bench_models / chan, root / chan / "1"
        card = load_card(src)
        with np.load(src / "scores.npz") as z:
            calib = z["calibration_scores"]
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "model.onnx", dst / "model.onnx")
        card = replace(card.with_threshold(threshold_spec("telemanom", calib)),
                       training={**card.training, "note": "copied from a bench telemanom run (same configuration)"})
        write_card(dst, card)
        print(f"{dst}: from {src}, threshold telemanom")


def build_channel_models(smap: Path, root: Path, channels: list[str]) -> None:
    from stream_detector.bench.telemanom import DEFAULT_CONFIG as C
    from stream_detector.training.fit import fit_series_model
    from stream_detector.training.wgan import TrainConfig

    cfg = TrainConfig(arch=C["arch"], width=C["width"], latent_dim=C["latent_dim"], iterations=C["iterations"],
                      encoder_iterations=C["encoder_iterations"], encoder_mode=C["encoder_mode"], kappa=C["kappa"],
                      seed=C["seed"], max_seconds=C["max_seconds"])
    for chan in channels:
        train = np.load(smap / "train" / f"{chan}.npy")[:, :1].astype(np.float32)
        calib = max(int(0.2 * len(train)), C["window"] + 50)  # as bench telemanom splits it
        # channel "c0", as bench telemanom names column 0 (bench latent and --channel-models-from rely on it)
        card = fit_series_model(train, ["c0"], root / chan / "1", window=C["window"], stride=1,
                                transform=C["transform"], cfg=cfg, train_fraction=1.0 - calib / len(train), name=chan,
                                source=f"{smap.name}/train/{chan}.npy column 0", progress=False, threshold="telemanom",
                                score_kind=C["score"])
        print(f"{root / chan / '1'}: {card.threshold_method}, trained {card.training['seconds']:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smap", default=str(ROOT.parent / "shared" / "data" / "smap"))
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--skip-model", action="store_true", help="do not rebuild models/smap-demo/1")
    p.add_argument("--skip-channel-models", action="store_true", help="do not rebuild models/<channel>/1")
    p.add_argument("--channel-models-from", help="copy the channel models from a 'bench telemanom --models DIR' run "
                                                 "instead of training them again")
    a = p.parse_args()
    smap = Path(a.smap)
    build_data(smap, ROOT / "stream_detector" / "demo_data" / "smap_demo.npz")
    if not a.skip_model:
        build_model(smap, ROOT / "models" / "smap-demo" / "1", a.seconds, a.iterations)
    if a.channel_models_from:
        copy_channel_models(Path(a.channel_models_from), ROOT / "models", DEMO_SOURCES)
    elif not a.skip_channel_models:
        build_channel_models(smap, ROOT / "models", DEMO_SOURCES)


if __name__ == "__main__":
    main()
