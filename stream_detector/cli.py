"""The ``stream-detector`` command line.

Every user mistake (bad path, NaNs, too few rows, wrong channels, bad config, a model whose
card does not match) ends as one ``error: ...`` line on stderr and exit status 2; only
bugs show a traceback.  Commands that need PyTorch import it lazily, so the worker side of
the CLI runs on an install without the ``train`` extra.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np

from .errors import UserError

# export.SCORE_KINDS, spelled out here: the training modules import torch, the CLI must not
SCORE_KINDS = ("fanogan", "critic", "combined", "forecast", "hybrid")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ---------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("training needs PyTorch: pip install 'stream-detector[train]'") from None
    from .data import load_series, require_rows
    from .training.fit import fit_series_model
    from .training.wgan import TrainConfig
    from .training.transforms import plot_length

    series = load_series(args.data)
    require_rows(series, args.window)
    values, channels = series.values, series.channels
    if args.channels:
        from .data import select_channels

        channels = args.channels.split(",")
        values = select_channels(series, channels)
    if args.transform != "sequence":
        try:
            plot_length(args.window, args.plot_size)
        except ValueError as e:
            raise UserError(f"--window/--plot-size: {e}") from None
    if args.level_weight is not None and not args.level_weight >= 0:
        raise UserError(f"--level-weight must be 0 or more, got {args.level_weight}")
    if args.generators < 1:
        raise UserError(f"--generators must be 1 or more, got {args.generators}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    cfg = TrainConfig(arch=args.arch, width=args.width, latent_dim=args.latent, iterations=args.iterations,
                      encoder_iterations=args.encoder_iterations, encoder_mode=args.encoder_mode, kappa=args.kappa,
                      seed=args.seed, max_seconds=args.max_seconds, batch_size=args.batch_size,
                      generators=args.generators, alpha=args.alpha,
                      forecast_horizon=args.forecast_horizon or 0, forecast_iterations=args.forecast_iterations or 0)
    if args.forecast_horizon is not None and not 1 <= args.forecast_horizon < args.window:
        raise UserError(f"--forecast-horizon must be at least 1 and shorter than --window ({args.window}), "
                        f"got {args.forecast_horizon}")
    try:
        card = fit_series_model(values, channels, Path(args.out), window=args.window, stride=args.stride,
                                transform=args.transform, cfg=cfg, plot_size=args.plot_size, name=args.name,
                                version=args.version, threshold_quantile=args.threshold_quantile,
                                source=str(args.data), progress=not args.quiet, threshold=args.threshold,
                                level_weight=args.level_weight, score_kind=args.score,
                                score_channels=args.score_channels.split(",") if args.score_channels else None)
    except ValueError as e:  # network sizing that cannot fit the window (e.g. odd lengths for conv)
        raise UserError(str(e)) from None
    print(f"model written to {args.out}: {len(channels)} channels, window {args.window}, stride {args.stride}, "
          f"{args.transform}, score {card.score['kind']}, threshold method {card.threshold_method} (held-out "
          f"q{args.threshold_quantile}: "
          f"{card.threshold['value']:.5g}), "
          f"{card.graph['flops_per_window'] / 1e6:.2f} MFLOP/window, trained in {card.training['seconds']:.0f} s"
          + (f"; {args.generators} generators, learned prior {', '.join(f'{v:.2f}' for v in card.training['prior'])}"
             if args.generators > 1 else ""))
    return 0


# ---------------------------------------------------------------- score
def _score_file(model: str, data: str, stride: int | None, label_column: str | None = None):
    """Score a file with a model directory: the benchmarks' score-only half
    (:func:`~stream_detector.training.fit.score_with_model`; no PyTorch needed)."""
    from .data import load_series, require_rows, select_channels
    from .runtime.scoring import Scorer
    from .training.fit import score_with_model

    scorer = Scorer(model)
    series = load_series(data, label_column=label_column)
    values = select_channels(series, scorer.channels)
    require_rows(series, scorer.window)
    scored = score_with_model(scorer, values, stride=stride)
    return scorer, series, values, scored.windows, scored.points


def _latent_search_scores(args: argparse.Namespace, scorer, values: np.ndarray, result: dict) -> tuple[dict, dict]:
    """``score``/``evaluate --latent-search``: the windows of ``result`` re-scored by AnoGAN latent
    search (:mod:`~stream_detector.training.latent_search`, PyTorch) with the PyTorch scorer rebuilt
    from the model directory.  Returns the window scores with ``scores``/``channel_scores``
    replaced (the encoder's kept as ``encoder_scores``) and the method's description."""
    if not args.latent_search:
        if args.restarts is not None or args.steps is not None:
            raise UserError("--restarts and --steps set the latent search: add --latent-search")
        return result, {"method": "encoder"}
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("--latent-search needs PyTorch: pip install 'stream-detector[train]'") from None
    from .runtime.scoring import sliding_windows
    from .training import latent_search as ls
    from .training.export import scorer_from_model_dir

    restarts = args.restarts or ls.DEFAULT_RESTARTS
    steps = ls.DEFAULT_STEPS if args.steps is None else args.steps
    windows = sliding_windows(np.asarray(values, dtype=np.float32), scorer.window, args.stride or scorer.stride)
    try:
        found = ls.latent_search(scorer_from_model_dir(scorer.model_dir), windows, restarts=restarts, steps=steps)
    except ValueError as e:  # a card the search cannot refine (critic-only score), weights that do not fit
        raise UserError(f"--latent-search: {e}") from None
    method = ls.describe(found)
    print(f"latent search ({restarts} restarts x {steps} steps): {len(windows)} windows in {found['seconds']:.1f} s "
          f"({found['seconds'] * 1e3 / max(1, len(windows)):.1f} ms per window)")
    return {**result, "scores": found["score"], "channel_scores": found["channel_scores"],
            "encoder_scores": result["scores"]}, method


def cmd_score(args: argparse.Namespace) -> int:
    from .runtime.scoring import point_scores

    scorer, series, values, result, points = _score_file(args.model, args.data, args.stride)
    result, method = _latent_search_scores(args, scorer, values, result)
    refined = "encoder_scores" in result
    if refined:
        points = point_scores(len(points), result["starts"], scorer.window, result["scores"])
        encoder_points = point_scores(len(points), result["starts"], scorer.window, result["encoder_scores"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        # with --latent-search, two more columns: the encoder's score beside the refined one, and the method
        w.writerow(["index", "timestamp", "score", "threshold", "is_anomaly"]
                   + (["encoder_score", "method"] if refined else []))
        ts = series.timestamps
        for i, s in enumerate(points):
            w.writerow([i, "" if ts is None else repr(float(ts[i])), "" if np.isnan(s) else f"{s:.7g}",
                        f"{scorer.threshold:.7g}", int(bool(s >= scorer.threshold))]
                       + (["" if np.isnan(encoder_points[i]) else f"{encoder_points[i]:.7g}",
                           f"latent-search {method['restarts']}x{method['steps']}"] if refined else []))
    if args.windows_out:
        with open(args.windows_out, "w", newline="") as f:
            w = csv.writer(f)
            peaks = "peak_index" in result  # the window's peak cell: point index and channel (root cause)
            w.writerow(["start", "end", "score", "is_anomaly"] + [f"channel:{c}" for c in scorer.channels]
                       + (["peak_index", "peak_channel"] if peaks else []) + (["encoder_score"] if refined else []))
            for k, (s, sc, cs) in enumerate(zip(result["starts"], result["scores"], result["channel_scores"])):
                w.writerow([int(s), int(s) + scorer.window - 1, f"{sc:.7g}", int(sc >= scorer.threshold)]
                           + [f"{v:.6g}" for v in cs]
                           + ([int(result["peak_index"][k]), scorer.channels[int(result["peak_channel"][k])]]
                              if peaks else [])
                           + ([f"{result['encoder_scores'][k]:.7g}"] if refined else []))
    n_anom = int(np.sum(points >= scorer.threshold))
    print(f"scored {len(points)} points ({len(result['starts'])} windows, provider {scorer.provider}"
          f"{', latent search' if refined else ''}): {n_anom} points above threshold {scorer.threshold:.5g}; "
          f"written to {out}")
    return 0


# ---------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_ranges
    from .training.evaluation import evaluate_scores, mask_from_ranges, ranges_from_mask
    from .training import plots

    if not args.labels and not args.label_column:
        raise UserError("evaluate needs labels: --labels RANGES|FILE or --label-column NAME")
    scorer, series, values, result, points = _score_file(args.model, args.data, args.stride, args.label_column)
    result, method = _latent_search_scores(args, scorer, values, result)
    encoder_points = points
    if "encoder_scores" in result:
        from .runtime.scoring import point_scores

        points = point_scores(len(points), result["starts"], scorer.window, result["scores"])
    n = len(points)
    if args.label_column:
        labels = series.labels
        ranges = ranges_from_mask(labels)
    else:
        ranges = load_ranges(args.labels, n, args.label_id)
        labels = mask_from_ranges(ranges, n)
    if labels.all() or not labels.any():
        raise UserError("labels mark every point or no point as anomalous; evaluation needs both classes")
    report = evaluate_scores(labels, points, scorer.threshold, merge_gap=args.merge_gap)
    report.update({"model": f"{scorer.name}:{scorer.version}", "model_dir": str(args.model), "data": str(args.data),
                   "threshold": scorer.threshold, "provider": scorer.provider, "windows": int(len(result["starts"])),
                   "label_ranges": [list(map(int, r)) for r in ranges], "score_method": method})
    if "encoder_scores" in result:  # the fast score on the same points, for comparison
        from .training.evaluation import auprc, roc_auc

        ok = np.isfinite(encoder_points)
        report["encoder_score"] = {"roc_auc": roc_auc(labels[ok], encoder_points[ok]),
                                   "auprc": auprc(labels[ok], encoder_points[ok])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "report.md").write_text(_report_markdown(report))
    finite = np.isfinite(points)
    plots.plot_pr_curve(labels[finite], points[finite], out / "pr_curve.png")
    plots.plot_score_timeline(points, scorer.threshold, ranges, out / "timeline.png", values=values[:, 0])
    worst = int(np.argmax(result["scores"]))
    start = int(result["starts"][worst])
    outs = scorer.run_all(values[None, start:start + scorer.window])
    x, recon = outs["transformed"][0], outs["reconstruction"][0]
    if x.ndim == 3:  # images: show the channel with the largest residual
        c = int(np.argmax(((x - recon) ** 2).reshape(len(x), -1).mean(1)))
        x, recon = x[c], recon[c]
    else:  # sequences [C, W] -> [W, C]
        x, recon = x.T, recon.T
    plots.plot_reconstruction(x, recon, np.abs(x - recon), out / "window.png", channel_names=scorer.channels)
    ev = report["event"]
    print(f"ROC-AUC {report['roc_auc']:.3f}  AUPRC {report['auprc']:.3f}  best F1 {report['best_f1']['f1']:.3f}  "
          f"event F1 {ev['f1']:.3f} (tp {ev['tp']} fp {ev['fp']} fn {ev['fn']})  "
          f"point-adjusted F1 {report['point_adjusted']['f1']:.3f}  logAUC {report['log_auc']:.3f}; report in {out}")
    return 0


def _report_markdown(r: dict) -> str:
    ev, pa, bf = r["event"], r["point_adjusted"], r["best_f1"]
    rows = [
        ("ROC-AUC", f"{r['roc_auc']:.4f}"), ("AUPRC", f"{r['auprc']:.4f}"), ("logAUC", f"{r['log_auc']:.4f}"),
        ("best F1 (oracle threshold)", f"{bf['f1']:.4f} (P {bf['precision']:.3f}, R {bf['recall']:.3f})"),
        ("event-level F1 (card threshold)", f"{ev['f1']:.4f} (tp {ev['tp']}, fp {ev['fp']}, fn {ev['fn']})"),
        ("point-adjusted F1 (flatters; never alone)", f"{pa['f1']:.4f}"),
    ]
    lines = [f"# Evaluation of {r['model']} on {r['data']}", "",
             f"Threshold {r['threshold']:.6g} from the model card; {r['windows']} windows; provider {r['provider']}.", "",
             "| metric | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    m = r.get("score_method") or {}
    if m.get("method") == "latent-search":
        enc = r["encoder_score"]
        lines += ["", f"Window scores by latent search ({m['restarts']} restarts x {m['steps']} steps, lambda "
                  f"{m['lam']:.3g}, Adam lr {m['lr']}, seed {m['seed']}; {m['seconds_per_window'] * 1e3:.1f} ms per "
                  f"window); the encoder's score on the same points: ROC-AUC {enc['roc_auc']:.4f}, AUPRC "
                  f"{enc['auprc']:.4f}."]
    lines += ["", "Plots: `pr_curve.png`, `timeline.png`, `window.png` (highest-scoring window: input, reconstruction, residual).", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- validate
def cmd_validate(args: argparse.Namespace) -> int:
    from .data import load_series, require_rows, select_channels
    from .runtime.scoring import Scorer
    from .training import synthetic

    if not args.magnitude > 0:
        raise UserError(f"--magnitude must be above 0, got {args.magnitude}")
    scorer = Scorer(args.model)
    series = load_series(args.data)
    values = select_channels(series, scorer.channels)[args.start:]
    require_rows(series, scorer.window)
    length = args.length or max(1, scorer.window // 2)
    if len(values) <= scorer.window + length:
        raise UserError(f"{args.data}: {len(values)} rows" + (f" from row {args.start}" if args.start else "")
                        + "; injecting a fault of {length} points after a first "
                        f"window of {scorer.window} needs more than {scorer.window + length}")
    result = synthetic.synthetic_check(scorer, values, repeats=args.repeats, seed=args.seed,
                                       magnitude=args.magnitude, length=length)
    result.update({"model": f"{scorer.name}:{scorer.version}", "model_dir": str(args.model), "data": str(args.data),
                   "start_row": args.start, "provider": scorer.provider})
    text = synthetic.markdown(result, f"Synthetic faults: {result['model']} on {args.data}")
    print(text, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "report.md").write_text(text)
        print(f"written to {out}/report.json and report.md")
    return 0


# ---------------------------------------------------------------- streaming
def cmd_worker(args: argparse.Namespace) -> int:
    from .runtime.config import load_config
    from .runtime.worker import run_worker

    cfg = load_config(args.config)
    if args.model:
        from dataclasses import replace

        cfg = replace(cfg, model_dir=args.model, model_repository=None, routes=None)
    run_worker(cfg)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .broker import EmbeddedBroker

    topics = {name: args.partitions for name in args.topic}
    with EmbeddedBroker(port=args.port, topics=topics) as broker:
        print(f"embedded Kafka broker on {broker.bootstrap} (Faust URL {broker.url}); topics: "
              f"{', '.join(f'{t} x{n}' for t, n in topics.items()) or 'none yet'}; Ctrl-C to stop", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            if not broker.running:
                raise UserError(f"the broker exited; its log: {broker.log_path}")
    return 0


def replay_sources(paths: list[str], names: list[str] | None, channels: list[str] | None):
    """One :class:`~stream_detector.replay.ReplaySource` per file, named by ``names`` or the file stem."""
    from .data import load_series, select_channels
    from .replay import ReplaySource

    if names and len(names) != len(paths):
        raise UserError(f"--source names {len(names)} sources but --data gives {len(paths)} files")
    out = []
    for i, path in enumerate(paths):
        series = load_series(path)
        chans = channels or series.channels
        if channels:
            from dataclasses import replace

            series = replace(series, values=select_channels(series, channels))
        out.append(ReplaySource(names[i] if names else Path(path).stem, series, list(chans)))
    return out


def cmd_replay(args: argparse.Namespace) -> int:
    import asyncio

    from .runtime.config import load_config
    from .replay import replay

    cfg = load_config(args.config)
    bootstrap = args.bootstrap.split(",") if args.bootstrap else cfg.bootstrap_servers
    channels = args.channels.split(",") if args.channels else None
    if args.model:
        from .runtime.card import load_card

        channels = list(load_card(args.model).channels)
    if args.demo:
        from .data import Series
        from .demo import load_demo_data
        from .replay import ReplaySource

        sources = [ReplaySource(name, Series(values, ["value"]), ["value"]) for name, (values, _) in load_demo_data().items()]
    elif args.data:
        sources = replay_sources(args.data, args.source.split(",") if args.source else None, channels)
    else:
        raise UserError("replay needs --data FILE... or --demo")
    try:
        result = asyncio.run(replay(sources, bootstrap, args.topic or cfg.topic_input, rate=args.rate,
                                    batch=args.batch, fmt=args.format, retime=args.retime, limit=args.limit,
                                    security=cfg.aiokafka_security_kwargs()))
    except Exception as e:  # aiokafka's connection errors are the user's broker address, not a bug
        if type(e).__module__.startswith("aiokafka") or isinstance(e, OSError):
            raise UserError(f"cannot send to Kafka at {','.join(bootstrap)}: {e}") from None
        raise
    print(f"sent {result['points']} points in {result['messages']} messages from {len(sources)} sources "
          f"in {result['seconds']:.1f} s ({result['points_per_second']} points/s)")
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("refine needs PyTorch (latent search): pip install 'stream-detector[train]'") from None
    import asyncio
    import signal

    from .refine import EVENTS, RefineSettings, run_refine
    from .runtime.config import load_config

    cfg = load_config(args.config)
    events = tuple(e.strip() for e in args.events.split(",") if e.strip())
    if not events or any(e not in EVENTS for e in events):
        raise UserError(f"--events {args.events!r}: expected a comma-separated list of {', '.join(EVENTS)}")
    settings = RefineSettings(restarts=args.restarts, steps=args.steps, topic_refined=args.topic_refined,
                              events=events, buffer_points=args.buffer_points, wait_seconds=args.wait_seconds)

    async def main() -> int:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        return await run_refine(cfg, settings, from_beginning=args.from_beginning, stop=stop)

    print(f"refine: latent search ({args.restarts} x {args.steps}) on the windows of {'/'.join(events)} episodes "
          f"from {cfg.topic_alerts}, points from {cfg.topic_input}, records to {args.topic_refined}; Ctrl-C to stop",
          flush=True)
    print(f"published {asyncio.run(main())} refined records")
    return 0


BENCHES = {
    "paper": "MNIST and UCI HAR protocols of Haloui et al. (AUPRC per class)",
    "telemanom": "per-channel detection on a telemanom-layout folder (SMAP): event F1 and more",
    "nab": "the Numenta Anomaly Benchmark, scored by the package's NAB scorer",
    "folder": "a folder of labelled CSV files (SKAB): per-file training, F1/FAR/MAR, event F1, AUPRC, VUS-PR",
    "throughput": "points/s and latency of the real worker on the embedded broker",
    "inference": "windows/s of ONNX Runtime vs PyTorch by batch size, against the matmul peak",
    "soak": "10,000 sources for 20 minutes at half the measured maximum: worker RSS, p99 latency and lag over time",
    "overload": "twice the measured maximum for 2 minutes, then nothing: bounded memory, every window scored",
    "latent": "AnoGAN latent search against the encoder score (MNIST, SMAP): AUPRC, ROC-AUC, seconds per window",
}


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f".bench.{args.benchmark}", __package__)
    return int(module.main([*args.rest]) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(seconds=args.seconds, rate=args.rate, metrics_port=args.metrics_port, live=not args.no_live)


# ---------------------------------------------------------------- parser
def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {text!r}")
    return value


def _latent_search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latent-search", action="store_true",
                   help="score each window by AnoGAN latent search (needs PyTorch; slow: restarts x steps passes "
                        "through generator and critic per window) instead of the encoder's one pass")
    p.add_argument("--restarts", type=_positive_int, help="latent search: starts per window, E(x) and random codes "
                   "(default 4, research 003)")
    p.add_argument("--steps", type=_non_negative_int, help="latent search: Adam steps per start (default 50)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-detector", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on normal data and export it (ONNX + card)")
    t.add_argument("--data", required=True, help=".npy [T, C] or CSV (timestamp column optional, one column per channel)")
    t.add_argument("--window", type=_positive_int, default=64)
    t.add_argument("--stride", type=_positive_int, default=8, help="points between scored windows when serving")
    t.add_argument("--transform", choices=["sequence", "distance-plot", "distance-plot-mv"], default="sequence")
    t.add_argument("--out", required=True, help="model directory to write")
    t.add_argument("--channels", help="comma-separated channel names to use (default: all)")
    t.add_argument("--arch", choices=["conv", "mlp"], default="conv")
    t.add_argument("--width", type=_positive_int, help="base network width (default: sized from the input)")
    t.add_argument("--latent", type=_positive_int, help="latent size (default: sized from the input)")
    t.add_argument("--iterations", type=_positive_int, default=2000, help="generator steps of WGAN-GP")
    t.add_argument("--encoder-iterations", type=_positive_int, default=2000)
    t.add_argument("--encoder-mode", choices=["izi", "ziz", "izi_f"], default="izi_f")
    t.add_argument("--kappa", type=float, default=1.0)
    t.add_argument("--level-weight", type=float, help="weight of the level term in the score (how far a window leaves "
                   "the training range; default 1.0 for distance plots, which cannot see a level shift without it, "
                   "0 for sequence)")
    t.add_argument("--score", choices=SCORE_KINDS,
                   help="the window score: fanogan (residual + kappa * critic-feature distance), critic (the "
                   "critic's own output, -D(x)), combined (fanogan + the critic's score standardised on the "
                   "training windows; the default for sequence models, fanogan for distance plots), forecast (the error of a forecaster that predicts each window's last "
                   "steps from its first), or hybrid (fanogan + the forecast error standardised on the training "
                   "windows)")
    t.add_argument("--forecast-horizon", type=int, metavar="H",
                   help="forecast kinds: steps predicted at the end of each window (default: window / 8)")
    t.add_argument("--forecast-iterations", type=_positive_int, metavar="N",
                   help="forecast kinds: the forecaster's Adam steps (default: as many as --encoder-iterations)")
    t.add_argument("--generators", type=int, default=1, metavar="K",
                   help="D-AnoGAN (research 002): K generators and encoders with a learned prior over them and a "
                   "classifier on the critic's features, for normal data with several modes; the graph runs all K "
                   "per window (about K times the cost); 1 (default): one generator")
    t.add_argument("--alpha", type=float, default=0.9,
                   help="with --generators K > 1: the score (1 - alpha) * residual + alpha * KL between the "
                   "classifier's outputs on the window and on its reconstruction (default 0.9, research 002's)")
    t.add_argument("--score-channels", help="comma-separated channels the score is about; the networks see every "
                   "channel (--channels) and are conditioned on the others, e.g. command flags beside telemetry "
                   "(default: score every channel)")
    t.add_argument("--batch-size", type=_positive_int, default=64)
    t.add_argument("--plot-size", type=_positive_int, default=32, help="distance-plot side; longer windows are pooled")
    t.add_argument("--max-seconds", type=float, help="wall-clock budget for training")
    t.add_argument("--threshold-quantile", type=float, default=0.995)
    t.add_argument("--threshold", choices=["quantile", "pot", "dynamic", "telemanom", "likelihood"], default="quantile",
                   help="how the worker flags windows: a static level from held-out windows (quantile, pot) or an "
                        "adaptive procedure on each source's own stream (telemanom, dynamic, likelihood); recorded "
                        "in the card, overridable per route")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--name", default="model")
    t.add_argument("--version", default="1")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="score a file offline: per-point anomaly scores to CSV")
    s.add_argument("--model", required=True, help="model directory (model.onnx + model.json)")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="CSV: index,timestamp,score,threshold,is_anomaly")
    s.add_argument("--windows-out", help="also write one row per window (start, end, score, channel scores)")
    s.add_argument("--stride", type=_positive_int, help="override the card's stride")
    _latent_search_arguments(s)
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("evaluate", help="score a labelled file and write a metrics report with plots")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--labels", help="JSON list of [start, end] index ranges (inclusive), a .json file of them, "
                                    "or telemanom's labeled_anomalies.csv with --label-id")
    e.add_argument("--label-id", help="channel id in a telemanom labels CSV")
    e.add_argument("--label-column", help="CSV column holding 0/1 labels")
    e.add_argument("--merge-gap", type=int, default=0, help="merge detections separated by at most this many points")
    e.add_argument("--stride", type=_positive_int, help="override the card's stride")
    e.add_argument("--out", required=True, help="report directory")
    _latent_search_arguments(e)
    e.set_defaults(func=cmd_evaluate)

    v = sub.add_parser("validate", help="check a model without labels: inject synthetic faults (spike, level shift, "
                       "stuck sensor, noise burst, drift) into normal data and report which it singles out")
    v.add_argument("--model", required=True, help="model directory (model.onnx + model.json)")
    v.add_argument("--data", required=True, help="NORMAL data the model was not trained on (.npy or CSV), e.g. a "
                   "later stretch of the same source")
    v.add_argument("--start", type=_non_negative_int, default=0, help="use the rows from this one on (e.g. the "
                   "card's training.train_points, when --data is the file the model was trained on)")
    v.add_argument("--repeats", type=_positive_int, default=20, help="faults of each kind (default 20)")
    v.add_argument("--length", type=_positive_int, help="points per fault (default: half a window; a spike is 1)")
    v.add_argument("--magnitude", type=float, default=1.0, help="scales every fault's size (default 1: spike 6, "
                   "level shift 3, noise 2, drift 4 standard deviations of the channel)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", help="report directory (report.json, report.md)")
    v.set_defaults(func=cmd_validate)

    w = sub.add_parser("worker", help="run the streaming worker (Faust agent) against Kafka")
    w.add_argument("--config", help="YAML config file (STREAM_DETECTOR_* environment variables override it)")
    w.add_argument("--model", help="one model directory (overrides the config's model_repository/model_dir and routes)")
    w.set_defaults(func=cmd_worker)

    b = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (development, demo, tests)")
    b.add_argument("--port", type=_positive_int, help="TCP port on 127.0.0.1 (default: a free one)")
    b.add_argument("--topic", action="append", default=[], help="topic to create (repeatable)")
    b.add_argument("--partitions", type=_positive_int, default=4)
    b.set_defaults(func=cmd_broker)

    r = sub.add_parser("replay", help="send recorded telemetry (CSV or .npy) to the input topic, keyed by source")
    r.add_argument("--data", nargs="+", help="one file per source")
    r.add_argument("--demo", action="store_true", help="send the bundled SMAP demo channels (one source each)")
    r.add_argument("--source", help="comma-separated source ids, one per file (default: file stems)")
    r.add_argument("--topic", help="input topic (default: the config's topic_input)")
    r.add_argument("--config", help="worker config for the broker address and security settings")
    r.add_argument("--bootstrap", help="host:port[,host:port] (overrides the config)")
    r.add_argument("--rate", type=float, help="points per second per source (default: as fast as possible)")
    r.add_argument("--batch", type=_positive_int, default=1, help="points per message (1: single-point messages)")
    r.add_argument("--format", choices=["msgpack", "json"], default="msgpack")
    r.add_argument("--channels", help="comma-separated channel names to send (default: all)")
    r.add_argument("--model", help="send the channels this model's card names")
    r.add_argument("--retime", action="store_true", help="send wall-clock timestamps instead of the file's")
    r.add_argument("--limit", type=_positive_int, help="send at most this many points per source")
    r.set_defaults(func=cmd_replay)

    rf = sub.add_parser("refine", help="re-score the windows of alert episodes by latent search (PyTorch) and "
                        "publish the refined scores")
    rf.add_argument("--config", help="the worker's YAML config (broker, topics, models, routes)")
    rf.add_argument("--restarts", type=_positive_int, default=4, help="latent search starts per window (default 4)")
    rf.add_argument("--steps", type=_non_negative_int, default=50, help="Adam steps per start (default 50)")
    rf.add_argument("--topic-refined", default="refined", help="topic for the refined records (default refined)")
    rf.add_argument("--events", default="opened",
                    help="alert events to refine: opened, closed or both (comma-separated)")
    rf.add_argument("--buffer-points", type=_positive_int, default=4096, help="points kept per source (default 4096)")
    rf.add_argument("--wait-seconds", type=float, default=10.0,
                    help="how long an alert waits for its episode's points to be read (default 10)")
    rf.add_argument("--from-beginning", action="store_true",
                    help="a new consumer group reads the topics from their start (default: from their end)")
    rf.set_defaults(func=cmd_refine)

    d = sub.add_parser("demo", help="broker + worker + replay of real SMAP telemetry, with a live view")
    d.add_argument("--seconds", type=float, default=100.0, help="replay duration budget")
    d.add_argument("--rate", type=float, help="points per second per source (default: fit the budget)")
    d.add_argument("--metrics-port", type=int, default=9108)
    d.add_argument("--no-live", action="store_true", help="no live table, just the summary")
    d.set_defaults(func=cmd_demo)

    bn = sub.add_parser("bench", help="benchmarks that write JSON and Markdown where --out says "
                        "(default ./bench-results/)",
                        description="; ".join(f"{k}: {v}" for k, v in BENCHES.items()))
    bn.add_argument("benchmark", choices=list(BENCHES), help="which benchmark ('bench NAME --help' for its options)")
    bn.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bn.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
