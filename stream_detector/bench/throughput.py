"""Throughput and latency of the real worker on the embedded broker: ``stream-detector bench throughput``.

What one run does (everything on this machine, nothing mocked):

1. Starts the embedded broker and trains (or reuses, from ``--workdir``) one small model per
   transform on synthetic SMAP-shaped data (25 channels, ``W = 64``; the networks are the
   production ones, sized by ``nets.default_sizes``; a few training steps suffice because
   speed does not depend on the weights).
2. Pre-loads ``N`` points for ``M`` sources on an input topic, once as single-point messages
   and once as batch messages (``--batch-points`` points each), interleaved across sources
   the way a fleet sends them.
3. For every model and message kind, ``--runs`` times: starts the real worker
   (:class:`~stream_detector.bench.worker_process.WorkerProcess`, a child process running Faust) in a
   fresh consumer group, and times it from the first point processed (``/metrics`` polled
   every 50 ms) to the publication of the last score (the score record's Kafka timestamp).
   On the same topic it times a pass-through Faust agent (same settings, same
   ``take_events`` batching, doing nothing; with the worker's consumer and with Faust's
   stock one) and a raw aiokafka ``getmany`` drain.  The detector's throughput is reported
   as a ratio of both, medians of the runs.
4. Latency: a live producer sends at half of the measured maximum (timestamps = the wall
   clock at production) to a running worker; latency is the score record's Kafka timestamp
   (its publication) minus the timestamp of the window's last point; p50/p95/p99.
5. ``--scaling``: points/s and the worker's resident memory for 10 to 10,000 sources, and for
   windows of 64, 128, 256 points (univariate sequence models); memory per idle source is
   the slope of RSS over sources minus the window buffer; a table and a PNG plot.
6. ``--many-models``: a repository of ``--many-models-count`` (54) copies of the bundled sequence
   model (SMAP shape), one route and one source per model, batch messages, against one model
   serving the same sources in the same run (points/s ratio, target >= 0.5; worker RSS of both:
   every model version has its own ONNX Runtime session).
7. ``--thresholds static,telemanom,likelihood``: the one-model sequence row with a route's
   threshold override against the card's static threshold (single-point and batch messages;
   points/s ratio to static, target >= 0.9).  Only decided windows are published, so the
   runner waits for every window to be scored and expects only the decided records.

Results go to ``<--out>/throughput.{json,md}`` (and ``scaling.{json,md,png}``),
with the load average before and after each measurement and whether another benchmark was
running, since the machine has two cores.  ``--quick`` is a smoke run with tiny N.

The runner is split by concern: :mod:`.throughput_workload` (the series, messages and
models), :mod:`.throughput_runs` (Kafka, the worker process, the pass-through and latency
runs), :mod:`.throughput_report` (Markdown and plot); this module sequences the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import profile
from .throughput_workload import (
    DEFAULT_MODELS, MODELS, bench_model, ensure_model, expected_windows, make_repository, preload_messages)
from .throughput_runs import (
    REF_REPEAT, background_load, worker_config_for, median_of, _passthrough_main, preload_input, machine,
    produce, run_aiokafka, run_detector, run_latency, run_passthrough)
from .throughput_report import (
    MANY_MODELS_TARGET, THRESHOLDS_TARGET, scaling_markdown, scaling_plot, throughput_markdown)
from .framework import Benchmark, Report, error

SCALING_WINDOWS = (64, 128, 256)
SCALING_SOURCES = (10, 100, 1000, 10000)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from ..broker import EmbeddedBroker
    from ..runtime.card import load_card

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    models_dir = workdir / "models"
    results: dict[str, Any] = {
        "benchmark": "throughput", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "settings": {"sources": args.sources, "single_points": args.single_points, "batch_points": args.batch_points_total,
                     "points_per_batch_message": args.batch_points, "runs": args.runs, "quick": args.quick,
                     "score_records": args.score_records},
        "background_start": background_load(), "models": {}, "passthrough": {}, "aiokafka": {},
    }
    forms = args.score_records
    results["calibration"] = calibration(args.runs, "start")
    kinds = {"single": (1, args.single_points), "batch": (args.batch_points, args.batch_points_total)}
    with EmbeddedBroker() as broker:
        models = {m: bench_model(models_dir, m) for m in args.models}
        cards = {m: load_card(path) for m, path in models.items()}
        # one pre-loaded topic per channel set and message kind
        topics: dict[tuple[tuple[str, ...], str], tuple[str, int, int]] = {}
        for card in cards.values():
            channels = tuple(card.channels)
            for kind, (batch, points) in kinds.items():
                if (channels, kind) in topics:
                    continue
                topic = f"preload-{len(topics)}-{kind}"
                worker_config_for(broker, Path("."), topic, topic_input=topic)
                msgs = preload_messages(args.sources, points, list(channels), batch)
                t = time.time()
                produce(broker.bootstrap, topic, msgs)
                topics[channels, kind] = (topic, len(msgs), (points // args.sources) * args.sources)
                print(f"pre-loaded {len(msgs)} {kind} messages ({topics[channels, kind][2]} points, "
                      f"{len(channels)} channels) in {time.time() - t:.1f} s", flush=True)
        # The references on the same messages.  A pass-through drains the batch-message topic
        # several times faster than the detector (0.4-1.1 s for 600,000 points, three-fold
        # differences between runs), so its runs read a topic of REF_REPEAT times as many
        # messages of the same shape instead.
        refs = {}
        for (channels, kind), (topic, n_msgs, n_points) in topics.items():
            if kind == "batch" and not args.quick:
                ref_topic = f"{topic}-ref"
                worker_config_for(broker, Path("."), ref_topic, topic_input=ref_topic)
                msgs = preload_messages(args.sources, n_points * REF_REPEAT, list(channels), kinds[kind][0])
                produce(broker.bootstrap, ref_topic, msgs)
                refs[channels, kind] = (ref_topic, len(msgs), n_points * REF_REPEAT)
            else:
                refs[channels, kind] = (topic, n_msgs, n_points)
        for (channels, kind), (topic, n_msgs, n_points) in refs.items():
            ref: dict[str, list] = {"aiokafka": [], "faust_stock": [], "faust_worker_consumer": []}
            for r in range(args.runs):
                ref["aiokafka"].append(run_aiokafka(broker.bootstrap, topic, n_msgs))
                for name, stock in (("faust_stock", True), ("faust_worker_consumer", False)):
                    ref[name].append(run_passthrough(broker.url, topic, n_msgs, f"pt-{topic}-{name}-{r}", stock, workdir,
                                                     args.batch_max_messages, args.batch_max_latency_ms))
            pts_per_msg = n_points / n_msgs
            tkey = f"{kind}/{len(channels)}ch"
            for name, runs in ref.items():
                mps = median_of(runs, "messages_per_s")
                entry = {"messages_per_s": mps, "points_per_s": mps * pts_per_msg, "runs": runs}
                if all("cpu_us_per_message" in r for r in runs):
                    entry["cpu_us_per_point"] = median_of(runs, "cpu_us_per_message") / pts_per_msg
                (results["aiokafka"] if name == "aiokafka" else results["passthrough"]).setdefault(tkey, {})[name] = entry
                print(f"{tkey} {name}: {mps:,.0f} messages/s", flush=True)
        # the detector, per model
        for mname, model in models.items():
            card = cards[mname]
            transform, window, c, stride = card.transform, card.window, len(card.channels), card.stride
            mres: dict[str, Any] = {"model_dir": str(model), "transform": transform, "window": window, "channels": c,
                                    "stride": stride, "plot_size": card.plot_size,
                                    "width": card.training["config"].get("width"),
                                    "flops_per_window": card.graph["flops_per_window"], "kinds": {}}
            for kind in kinds:
                topic, n_msgs, n_points = topics[tuple(card.channels), kind]
                tkey = f"{kind}/{c}ch"
                n_windows = expected_windows(n_points // args.sources, args.sources, window, stride)
                pt = results["passthrough"][tkey]["faust_worker_consumer"]["points_per_s"]
                stock = results["passthrough"][tkey]["faust_stock"]["points_per_s"]
                raw = results["aiokafka"][tkey]["aiokafka"]["points_per_s"]
                by_form = {}
                for form in forms:  # the first form is the table's; the others are compared with it
                    runs = [run_detector(broker, model, topic, f"det-{mname}-{kind}-{form}-{r}", n_points, n_windows,
                                         workdir, batch_max_messages=args.batch_max_messages,
                                         batch_max_latency_ms=args.batch_max_latency_ms, score_records=form)
                            for r in range(args.runs)]
                    e = _detector_entry(runs, pt, results["calibration"], mres["flops_per_window"])
                    pps = e["points_per_s"]
                    e.update(score_records=form, ratio_to_stock_faust_passthrough=pps / stock, ratio_to_aiokafka=pps / raw)
                    print(f"{mname} {kind} ({form} records): {pps:,.0f} points/s ({pps / pt:.0%} of pass-through, "
                          f"{pps / raw:.1%} of aiokafka), {e['worker_cpu_us_per_point']:.1f} us CPU/point", flush=True)
                    by_form[form] = e
                entry = by_form[forms[0]]
                pps = entry["points_per_s"]
                entry["score_record_forms"] = {f: {k: v for k, v in e.items() if k != "score_record_forms"}
                                               for f, e in by_form.items() if f != forms[0]}
                if not args.no_latency:
                    # the message shape the maximum was measured with: half of it is then half load
                    live_batch = 1 if kind == "single" else (args.live_batch or args.batch_points)
                    entry["latency"] = run_latency(broker, model, f"lat-{mname}-{kind}", list(card.channels),
                                                   args.sources, pps / 2, live_batch, args.latency_seconds, workdir,
                                                   score_records=forms[0])
                    lat = entry["latency"]
                    if lat["p50"] is not None:
                        print(f"  latency at {pps / 2:,.0f} points/s: p50 {lat['p50']:.3f} s p95 {lat['p95']:.3f} s "
                              f"p99 {lat['p99']:.3f} s ({lat['windows']} windows)", flush=True)
                mres["kinds"][kind] = entry
                if args.profile and mname == args.models[0]:
                    raw = workdir / f"profile-{mname}-{kind}.txt"
                    run_detector(broker, model, topic, f"prof-{mname}-{kind}", n_points, n_windows, workdir,
                                 profile_to=raw, batch_max_messages=args.batch_max_messages,
                                 batch_max_latency_ms=args.batch_max_latency_ms, score_records=forms[0])
                    prof = profile.breakdown(profile.read_stacks(raw), entry["worker_cpu_us_per_point"])
                    results.setdefault("profile", {"model": mname, "kinds": {}})["kinds"][kind] = prof
                    print(f"profile {mname} {kind}: " + ", ".join(
                        f"{st['stage']} {st['us_per_point']:.1f}" for st in prof["stages"][:6]) + " us/point", flush=True)
            results["models"][mname] = mres
        if args.stride_sweep and models:
            results["stride_sweep"] = stride_sweep(broker, models, cards, topics, results, args, workdir)
        if args.many_models:
            results["many_models"] = many_models(broker, args, workdir)
        if args.thresholds:
            results["thresholds"] = threshold_rows(broker, args, workdir)
    results["calibration_end"] = calibration(1, "end")
    results["background_end"] = background_load()
    results["targets"] = targets(results)
    return results


def calibration(rounds: int, when: str) -> dict[str, Any]:
    """The machine's own speed, taken in this run (``bench inference``'s calibration: float32
    GEMM on all cores and one, a fixed pure-Python loop), medians of ``rounds``: detector
    figures are also reported as ratios to it, which move far less between machines than
    points/s (the same command gave 3x different figures on two 2-core machines)."""
    from .inference import calibrate

    got = [calibrate(os.cpu_count() or 1, 0.3) for _ in range(max(rounds, 1))]
    med = {k: float(statistics.median(g[k] for g in got)) for k in got[0]}
    print(f"calibration ({when}): GEMM peak {med['gemm_peak_gflops']:.0f} GFLOP/s, one core "
          f"{med['gemm_peak_1thread_gflops']:.0f}, Python loop {med['python_loop_ns_per_iteration']:.1f} ns/iteration",
          flush=True)
    return {**med, "rounds": got}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the sequence model that this run measured, with the figure and whether
    it was met (medians of ``--runs``, all in this run, on this machine)."""
    seq = res["models"].get("sequence")
    if not seq:
        return []
    out = []

    def add(name: str, value: float | None, bound: float, higher: bool = True, unit: str = "ratio") -> None:
        if value is not None:
            out.append({"target": name, "value": value, "bound": bound, "unit": unit,
                        "met": value >= bound if higher else value <= bound})

    kinds = seq["kinds"]
    if "single" in kinds:
        add("single-point messages: points/s vs pass-through", kinds["single"]["ratio_to_passthrough"], 0.8)
    if "batch" in kinds:
        add(f"batch messages at stride {seq['stride']}: points/s vs pass-through",
            kinds["batch"]["ratio_to_passthrough"], 0.3)
    for row in res.get("stride_sweep", []):
        if row["model"] == "sequence" and row["stride"] == 32:
            add("batch messages at stride 32: points/s vs pass-through", row["ratio_to_passthrough"], 0.8)
    for kind, e in kinds.items():
        lat = e.get("latency") or {}
        if lat.get("p99") is not None:
            add(f"{kind} messages: p99 latency at half load", lat["p99"] * 1e3, 250, higher=False, unit="ms")
    return out


def stride_sweep(broker, models: dict, cards: dict, topics: dict, results: dict, args: argparse.Namespace,
                 workdir: Path) -> list[dict[str, Any]]:
    """The first model with batch messages at larger strides: the stride trades latency (a
    window is scored every ``stride`` points) for compute (windows/s = points/s / stride)."""
    mname = next(iter(models))
    card = cards[mname]
    topic, _, n_points = topics[tuple(card.channels), "batch"]
    pt = results["passthrough"][f"batch/{len(card.channels)}ch"]["faust_worker_consumer"]["points_per_s"]
    rows = []
    for stride in args.stride_sweep:
        n_windows = expected_windows(n_points // args.sources, args.sources, card.window, stride)
        runs = [run_detector(broker, models[mname], topic, f"stride-{mname}-{stride}-{r}", n_points, n_windows, workdir,
                             stride=stride, batch_max_messages=args.batch_max_messages,
                             batch_max_latency_ms=args.batch_max_latency_ms, score_records=args.score_records[0])
                for r in range(args.runs)]
        rows.append({"model": mname, "stride": stride, **_detector_entry(runs, pt)})
        print(f"{mname} batch, stride {stride}: {rows[-1]['points_per_s']:,.0f} points/s "
              f"({rows[-1]['ratio_to_passthrough']:.0%} of pass-through)", flush=True)
    return rows


def _row_entry(runs: list[dict]) -> dict[str, Any]:
    return {"points_per_s": median_of(runs, "points_per_s"), "windows_per_s": median_of(runs, "windows_per_s"),
            "published_per_s": median_of(runs, "published_per_s"),
            "worker_cpu_us_per_point": median_of(runs, "worker_cpu_us_per_point"),
            "rss_bytes": median_of(runs, "rss_bytes"), "runs": runs}


# a telemanom that decides within a smoke run's few windows (parameters in points)
QUICK_TELEMANOM = {"batch_size": 24, "window_size": 5, "error_buffer": 3, "l_s": 5}


def many_models(broker, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``--many-models``: ``N`` copies of the sequence model (SMAP shape: W = 64, one channel) in a
    repository, one route and one source per model, batch messages; against the same topic with
    one model serving every source (a one-model repository, one catch-all route), same run,
    same points, same stride (the card's).  Each model version has its own ONNX Runtime session
    in the worker: the worker's RSS shows the memory cost."""
    from ..runtime.card import load_card
    from ..runtime.repository import parse_routes

    n = args.many_models_count
    model = bench_model(workdir / "models", "sequence")
    card = load_card(model)
    window, stride = card.window, card.stride
    topic = "many-models-batch"
    n_msgs, n_points = preload_input(broker, topic, n, args.many_models_points, list(card.channels), args.batch_points, 5)
    n_windows = expected_windows(n_points // n, n, window, stride)
    names = [f"m{i:02d}" for i in range(n)]
    sources = [f"src-{i:05d}" for i in range(n)]  # the keys preload_messages writes
    plans = {
        "one": (make_repository(workdir / "repo-one", names[:1], model), [{"sources": "*", "model": names[0]}]),
        "many": (make_repository(workdir / "repo-many", names, model),
                 [{"sources": src, "model": name} for src, name in zip(sources, names)]),
    }
    runs: dict[str, list] = {"one": [], "many": []}
    for r in range(args.runs):  # alternate the rows, so that drift in the machine's load hits both
        for key, (repo, routes) in plans.items():
            runs[key].append(run_detector(broker, model, topic, f"mm-{key}-{r}", n_points, n_windows, workdir,
                                          model_dir=None, model_repository=str(repo), routes=parse_routes(routes),
                                          batch_max_messages=args.batch_max_messages,
                                          batch_max_latency_ms=args.batch_max_latency_ms, score_records=args.score_records[0]))
    rows = {key: {"models": 1 if key == "one" else n, "sources": n, "points": n_points, "messages": n_msgs,
                  "stride": stride, "window": window, **_row_entry(v)} for key, v in runs.items()}
    ratio = rows["many"]["points_per_s"] / rows["one"]["points_per_s"]
    res = {"model_dir": str(model), "models": n, "sources": n, "messages": "batch",
           "points_per_message": args.batch_points, "points": n_points, "stride": stride,
           "one_model": rows["one"], "many_models": rows["many"], "ratio": ratio,
           "target": MANY_MODELS_TARGET, "target_met": ratio >= MANY_MODELS_TARGET,
           "rss_increase_bytes": rows["many"]["rss_bytes"] - rows["one"]["rss_bytes"]}
    print(f"many models: {n} models {rows['many']['points_per_s']:,.0f} points/s "
          f"(RSS {rows['many']['rss_bytes'] / 2**20:.0f} MiB) vs one model {rows['one']['points_per_s']:,.0f} points/s "
          f"(RSS {rows['one']['rss_bytes'] / 2**20:.0f} MiB): {ratio:.0%} (target >= {MANY_MODELS_TARGET:.0%} "
          f"{'met' if res['target_met'] else 'missed'})", flush=True)
    return res


def threshold_spec(method: str, params: dict[str, dict]) -> dict | None:
    """The route's threshold override for ``method`` (None: the card's static threshold)."""
    if method == "static":
        return None
    return {"method": method, **params.get(method, {})}


def threshold_rows(broker, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``--thresholds``: the one-model sequence row (``--sources`` sources, single-point and batch
    messages) with a route's threshold override against the card's static threshold, same run,
    same topics; ``--threshold-windows`` windows per source at the card's stride so that the
    adaptive procedures decide (telemanom's first decision comes after ``window_size`` batches).
    The runner waits for every window to be *scored*; it expects only the *decided* ones on
    the score topic, and every row ends when the last window was scored (or the last record
    published, if later)."""
    from ..runtime.thresholds import make_threshold
    from ..runtime.card import load_card
    from ..runtime.repository import parse_routes

    model = bench_model(workdir / "models", "sequence")
    card = load_card(model)
    window, stride, channels = card.window, card.stride, list(card.channels)
    name = "sequence"
    repo = make_repository(workdir / "repo-thresholds", [name], model)
    per_source = window + (args.threshold_windows - 1) * stride
    windows_per_source = expected_windows(per_source, 1, window, stride)
    specs = {m: threshold_spec(m, args.threshold_params) for m in args.thresholds}
    published_per_source = {}
    for m, spec in specs.items():
        k = windows_per_source if spec is None else len(make_threshold(spec, stride).update(np.zeros(windows_per_source))[0])
        if k == 0:
            raise ValueError(f"--thresholds {m}: no window of {windows_per_source} per source is decided at stride "
                             f"{stride}; raise --threshold-windows")
        published_per_source[m] = k
    res: dict[str, Any] = {"model_dir": str(model), "sources": args.sources, "stride": stride, "window": window,
                           "windows_per_source": windows_per_source, "points_per_source": per_source,
                           "specs": {m: spec or {"method": card.threshold_method, **card.threshold} for m, spec in specs.items()},
                           "target": THRESHOLDS_TARGET, "kinds": {}}
    for kind, batch in (("single", 1), ("batch", args.batch_points)):
        topic = f"thresholds-{kind}"
        n_msgs, n_points = preload_input(broker, topic, args.sources, per_source * args.sources, channels, batch, 6)
        n_windows = windows_per_source * args.sources
        runs: dict[str, list] = {m: [] for m in specs}
        for r in range(args.runs):  # alternate the methods, so that drift in the machine's load hits all
            for m, spec in specs.items():
                route = {"sources": "*", "model": name, **({"threshold": spec} if spec else {})}
                runs[m].append(run_detector(broker, model, topic, f"thr-{kind}-{m}-{r}", n_points, n_windows, workdir,
                                            published=published_per_source[m] * args.sources, end_at_settle=True,
                                            model_dir=None, model_repository=str(repo), routes=parse_routes([route]),
                                            batch_max_messages=args.batch_max_messages,
                                            batch_max_latency_ms=args.batch_max_latency_ms, score_records=args.score_records[0]))
        rows = {}
        for m in specs:
            rows[m] = {"points": n_points, "messages": n_msgs, "windows_scored": n_windows,
                       "windows_published": published_per_source[m] * args.sources, **_row_entry(runs[m])}
        base = rows.get("static")
        for m, row in rows.items():
            if base is not None:
                row["ratio_to_static"] = row["points_per_s"] / base["points_per_s"]
                row["target_met"] = m == "static" or row["ratio_to_static"] >= THRESHOLDS_TARGET
            print(f"threshold {m}, {kind} messages: {row['points_per_s']:,.0f} points/s"
                  + (f" ({row['ratio_to_static']:.0%} of static)" if base is not None else ""), flush=True)
        res["kinds"][kind] = {"points_per_message": batch, "rows": rows}
    return res


def _detector_entry(runs: list[dict], passthrough_points_per_s: float, cal: dict[str, Any] | None = None,
                    flops_per_window: float | None = None) -> dict[str, Any]:
    """Medians of a detector's runs, its ratio to the pass-through agent on the same topic and,
    given the run's calibration, to the machine: the share of its GEMM peak that the windows
    scored per second amount to, and the worker's CPU per point in iterations of the fixed
    Python loop (both move less between machines than points/s do)."""
    pps = median_of(runs, "points_per_s")
    e = {"points_per_s": pps, "windows_per_s": median_of(runs, "windows_per_s"),
         "worker_cpu_us_per_point": median_of(runs, "worker_cpu_us_per_point"),
         "ratio_to_passthrough": pps / passthrough_points_per_s, "runs": runs}
    if cal is not None:
        e["cpu_per_point_in_python_loop_iterations"] = e["worker_cpu_us_per_point"] * 1e3 / cal["python_loop_ns_per_iteration"]
        if flops_per_window:
            e["ratio_to_gemm_peak"] = e["windows_per_s"] * flops_per_window / (cal["gemm_peak_gflops"] * 1e9)
    return e


# ----------------------------------------------------------------------------- scaling
def scaling(args: argparse.Namespace) -> dict[str, Any]:
    from ..broker import EmbeddedBroker
    from ..runtime.card import load_card

    workdir = Path(args.workdir)
    models_dir = workdir / "models"
    res: dict[str, Any] = {"benchmark": "scaling", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "machine": machine(),
                           "background_start": background_load(), "sources": [], "windows": []}
    plan = [(m, SCALING_WINDOWS[0]) for m in args.scaling_sources] + [(args.scaling_window_sources, w)
                                                                      for w in SCALING_WINDOWS[1:]]
    with EmbeddedBroker() as broker:
        for i, (sources, window) in enumerate(plan):
            model = ensure_model(models_dir, f"seq-w{window}", "sequence", window, 1, stride=8)
            card = load_card(model)
            per_source = max(-(-args.scaling_points // sources), 2 * window)
            batch = min(args.batch_points, per_source)
            topic = f"scale-{i}"
            worker_config_for(broker, model, f"scale-{i}-topics", topic_input=topic)
            msgs = preload_messages(sources, per_source * sources, ["ch00"], batch, seed=i)
            produce(broker.bootstrap, topic, msgs)
            n_points = per_source * sources
            n_windows = expected_windows(per_source, sources, window, card.stride)
            run = run_detector(broker, model, topic, f"scale-{i}", n_points, n_windows, workdir,
                               batch_max_messages=args.batch_max_messages, batch_max_latency_ms=args.batch_max_latency_ms, score_records=args.score_records[0])
            row = {"sources": sources, "window": window, "points_per_source": per_source, **{
                k: run[k] for k in ("points", "points_per_s", "windows_per_s", "rss_bytes", "seconds")},
                "window_buffer_bytes": window * (8 + 4 * 1), "background": run["background_after"]}
            (res["sources"] if i < len(args.scaling_sources) else res["windows"]).append(row)
            if window == SCALING_WINDOWS[0] and sources == args.scaling_window_sources:
                res["windows"].insert(0, row)
            print(f"scaling: {sources} sources W={window}: {row['points_per_s']:,.0f} points/s, "
                  f"RSS {row['rss_bytes'] / 2**20:.1f} MiB", flush=True)
    rows = res["sources"]
    if len(rows) >= 2:
        x = np.array([r["sources"] for r in rows], float)
        y = np.array([r["rss_bytes"] for r in rows], float)
        slope = float(np.polyfit(x, y, 1)[0])
        res["bytes_per_source"] = slope
        res["bytes_per_idle_source_beyond_window_buffer"] = slope - rows[0]["window_buffer_bytes"]
    res["background_end"] = background_load()
    return res


# ----------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default=None, help="models cache and worker logs (default: a temporary folder)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--sources", type=int, default=100)
    p.add_argument("--single-points", type=int, default=150_000, help="points sent as single-point messages")
    p.add_argument("--batch-points-total", type=int, default=3_000_000,
                   help="points sent as batch messages (at 200,000 points/s a run takes 15 s)")
    p.add_argument("--batch-points", type=int, default=100, help="points per batch message")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch-max-messages", type=int, default=1000)
    p.add_argument("--batch-max-latency-ms", type=float, default=20.0)
    p.add_argument("--score-records", default="window,batch",
                   help="the worker's score_records forms to measure, comma-separated: one record per window "
                        "(window), one per source and step (batch); the first is the main tables' form")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--live-batch", type=int, default=None,
                   help="points per message in the batch-message latency run (default --batch-points, the shape "
                        "the maximum was measured with)")
    p.add_argument("--stride-sweep", default="16,32,64",
                   help="strides at which the first model is run again with batch messages ('' to skip)")
    p.add_argument("--scaling", action="store_true", help="run the scaling sweep instead (scaling.json/.md/.png)")
    p.add_argument("--scaling-sources", default=",".join(map(str, SCALING_SOURCES)))
    p.add_argument("--scaling-window-sources", type=int, default=100)
    p.add_argument("--scaling-points", type=int, default=300_000)
    p.add_argument("--many-models", action="store_true",
                   help="add the many-models row: copies of the sequence model, one route and source each, batch messages")
    p.add_argument("--many-models-count", type=int, default=None, help="models (and sources) in that row (default 54)")
    p.add_argument("--many-models-points", type=int, default=None,
                   help="points in that row and its one-model row (default --batch-points-total)")
    p.add_argument("--thresholds", default="",
                   help="comma-separated threshold rows, e.g. static,telemanom,likelihood ('static': the card's)")
    p.add_argument("--threshold-windows", type=int, default=None,
                   help="windows per source at the card's stride in the threshold rows (default 2200)")
    p.add_argument("--threshold-params", default=None,
                   help='JSON: parameters per method, e.g. \'{"telemanom": {"batch_size": 10}}\' (default: none)')
    p.add_argument("--profile", action="store_true",
                   help="one extra, untimed run per message kind of the first model under py-spy: the CPU per point by stage")
    p.add_argument("--profile-before", default=None,
                   help="a throughput.json with an earlier profile, shown beside this run's (before / after a change)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny N, one run, short latency phase")


def run_from_args(args: argparse.Namespace) -> Report | int:
    """Check the arguments (an ``error:`` line and status 2 for a bad one), run the rows or the
    scaling sweep, plot into ``--out``, report."""
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        return error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    args.scaling_sources = [int(x) for x in args.scaling_sources.split(",") if x]
    args.stride_sweep = [int(x) for x in args.stride_sweep.split(",") if x]
    args.score_records = [f.strip() for f in args.score_records.split(",") if f.strip()]
    if not args.score_records or any(f not in ("window", "batch") for f in args.score_records):
        return error("--score-records: a comma-separated list of window and batch")
    from ..runtime.thresholds import METHODS

    args.thresholds = [m.strip() for m in args.thresholds.split(",") if m.strip()]
    bad = [m for m in args.thresholds if m != "static" and m not in METHODS]
    if bad:
        return error(f"unknown threshold {bad[0]!r}; choose from static, {', '.join(METHODS)}")
    try:
        params = json.loads(args.threshold_params) if args.threshold_params else {}
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise ValueError("a mapping of method -> mapping of parameters")
    except ValueError as e:
        return error(f"--threshold-params: {e}")
    args.threshold_params = params
    if args.quick:
        args.stride_sweep = args.stride_sweep[:1]
        if args.models == list(DEFAULT_MODELS):
            args.models = ["sequence"]  # the bundled model: nothing to train
        args.sources, args.single_points, args.batch_points_total, args.batch_points = 4, 400, 800, 50
        args.runs, args.latency_seconds = 1, 1.5
        args.scaling_sources, args.scaling_window_sources, args.scaling_points = [2, 4], 2, 600
        if args.many_models_count is None:
            args.many_models_count = 3
        if args.threshold_windows is None:
            args.threshold_windows = 40
        if "telemanom" not in args.threshold_params:
            args.threshold_params["telemanom"] = dict(QUICK_TELEMANOM)
    if args.many_models_count is None:
        args.many_models_count = 54
    if args.many_models_points is None:
        args.many_models_points = args.batch_points_total
    if args.threshold_windows is None:
        args.threshold_windows = 2200
    if args.many_models_count < 1 or args.threshold_windows < 1:
        return error("--many-models-count and --threshold-windows must be positive")
    if args.thresholds:  # a bad spec fails here, not after the main rows
        for m in args.thresholds:
            spec = threshold_spec(m, args.threshold_params)
            if spec is not None:
                try:
                    from ..runtime.thresholds import make_threshold

                    make_threshold({"value": 1.0, **spec})
                except ValueError as e:
                    return error(f"--thresholds {m}: {e}")
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sd-bench-")
        args.workdir = tmp.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.scaling:
            res = scaling(args)
            png = out / "scaling.png"
            scaling_plot(res, png)
            return Report("scaling", res, lambda r: scaling_markdown(r, png.name), f"plot {png}")
        else:
            before = None
            if args.profile_before:
                try:
                    doc = json.loads(Path(args.profile_before).read_text())
                    before = {**doc["profile"], "source": f"`{args.profile_before}` ({doc['created']})"}
                except (OSError, ValueError, KeyError) as e:
                    return error(f"--profile-before {args.profile_before}: no profile there ({e})")
            res = benchmark(args)
            if before is not None:
                res["profile_before"] = before
            return Report("throughput", res, throughput_markdown)
    finally:
        if tmp is not None:
            tmp.cleanup()


class ThroughputBenchmark(Benchmark):
    def main(self, argv: list[str] | None = None) -> int:
        """``_passthrough ...``: the child process of :func:`run_passthrough`, not a benchmark."""
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv[:1] == ["_passthrough"]:
            return _passthrough_main(argv[1:])
        return super().main(argv)


BENCHMARK = ThroughputBenchmark("throughput", __doc__.splitlines()[0], add_arguments, run_from_args)
build_parser, main = BENCHMARK.build_parser, BENCHMARK.main


if __name__ == "__main__":
    sys.exit(main())
