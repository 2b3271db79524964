"""``bench throughput``'s Markdown and plot: the tables of ``throughput.md`` and ``scaling.md``
and the scaling PNG, from the JSON the runner measured (nothing here measures anything, so a
report can be re-rendered or tested from a saved result).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import profile
from .throughput_runs import REF_REPEAT


# The profiles that shaped the consumer (what was measured, what was changed) are the
# performance history in docs/benchmarks/history.md; each report points there.
PROFILE_NOTES = """\
## Where the time went (profiles)

The profiles of a pass-through Faust agent that led to the worker's batch-draining consumer
(``BatchDrainConsumer``), with the figures before and after, are in the performance history:
[history.md](history.md).  This run's own profile, when ``--profile`` was given, is above.
"""
MANY_MODELS_TARGET = 0.5  # points/s of the many-models row over the one-model row, at least
THRESHOLDS_TARGET = 0.9  # points/s of an adaptive threshold over the static one, at least


def throughput_markdown(res: dict[str, Any]) -> str:
    s = res["settings"]
    lines = [
        "# Throughput and latency of the worker",
        "",
        f"CPU: {res['machine'].get('cpu_model', 'unknown')}, {res['machine']['cpus']} cores.",
        "",
        f"`stream-detector bench throughput` on {res['machine']['cpus']} CPU cores ({res['machine']['platform']}), "
        f"{res['created']}. Embedded broker (Tansu, memory storage) on the same machine; one worker process; "
        f"{s['sources']} sources; {s['single_points']:,} points as single-point messages and "
        f"{s['batch_points']:,} points as batch messages of {s['points_per_batch_message']} points; "
        f"median of {s['runs']} runs. Models: `sequence` is the bundled `models/smap-demo/1` (univariate, "
        "W = 64); the others are the production networks (sized by `nets.default_sizes`) at SMAP shape "
        "(W = 64, C = 25, 32 x 32 plots), trained for a few steps (speed does not depend on the weights); "
        "default stride of the card (8). Load average at start: "
        f"{res['background_start']['loadavg']}; other benchmarks running: "
        f"{', '.join(res['background_start']['other_benchmarks']) or 'none'}.",
        "",
    ]
    cal = res.get("calibration")
    if cal:
        end = res.get("calibration_end", {})
        lines += ["## The machine, measured in this run", "",
                  "| calibration | start (median) | end |", "|---|---:|---:|"]
        for key, label in (("gemm_peak_gflops", "float32 GEMM peak, all cores (GFLOP/s)"),
                           ("gemm_peak_1thread_gflops", "float32 GEMM, one thread (GFLOP/s)"),
                           ("python_loop_ns_per_iteration", "fixed pure-Python loop (ns/iteration)")):
            lines.append(f"| {label} | {cal[key]:,.1f} | {end.get(key, float('nan')):,.1f} |")
        lines += ["", "Every detector row is also given as a ratio to these and to the pass-through agent and raw "
                  "aiokafka drain measured on the same topic in this run (section *References*): *GEMM share* = "
                  "windows/s x FLOP/window / the GEMM peak; *CPU/point in loop iterations* = the worker's CPU per "
                  "point / one iteration of the Python loop. Compare machines by these, not by points/s.", ""]
    if res.get("targets"):
        lines += ["## Targets (sequence model; medians of the runs, this machine, this run)", "",
                  "| target | measured | bound | status |", "|---|---:|---:|---|"]
        for t in res["targets"]:
            fmt = (lambda v: f"{v:.2f}") if t["unit"] == "ratio" else (lambda v: f"{v:.0f} ms")
            lines.append(f"| {t['target']} | {fmt(t['value'])} | {'>=' if t['unit'] == 'ratio' else '<='} "
                         f"{fmt(t['bound'])} | {target_mark(t['met'])} |")
        lines.append("")
    lines += [
        "## The detector",
        "",
        f"Score records in the `{s['score_records'][0]}` form (`score_records: {s['score_records'][0]}`).",
        "",
        "| model | C | FLOP/window | stride | messages | points/s | windows/s | worker CPU us/point | vs pass-through | vs stock-Faust pass-through | vs aiokafka | GEMM share | CPU/point in loop iterations | p50 / p95 / p99 latency at half load (ms) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, m in res["models"].items():
        for kind, e in m["kinds"].items():
            lat = e.get("latency")
            lat_s = (f"{lat['p50'] * 1e3:.0f} / {lat['p95'] * 1e3:.0f} / {lat['p99'] * 1e3:.0f}"
                     if lat and lat["p50"] is not None else "-")
            lines.append(f"| {name} | {m['channels']} | {m['flops_per_window'] / 1e6:.1f} M | {m['stride']} | {kind} | "
                         f"{e['points_per_s']:,.0f} | {e['windows_per_s']:,.0f} | {e['worker_cpu_us_per_point']:.1f} | "
                         f"{e['ratio_to_passthrough']:.0%} | "
                         f"{e['ratio_to_stock_faust_passthrough']:.0%} | {e['ratio_to_aiokafka']:.1%} | "
                         f"{_ratio(e.get('ratio_to_gemm_peak'), '.3f')} | "
                         f"{_ratio(e.get('cpu_per_point_in_python_loop_iterations'), ',.0f')} | {lat_s} |")
    forms = [(name, kind, f, fe) for name, m in res["models"].items() for kind, e in m["kinds"].items()
             for f, fe in e.get("score_record_forms", {}).items()]
    if forms:
        lines += ["", "## Score records: one per window or one per source and step", "",
                  "The same rows with `score_records: batch` (one columnar record per source and agent step, "
                  "carrying all of that step's windows) against the table's form, same topics, same run.", "",
                  "| model | messages | score records | points/s | worker CPU us/point | vs pass-through | vs the table's form |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for name, kind, f, fe in forms:
            base = res["models"][name]["kinds"][kind]
            lines.append(f"| {name} | {kind} | {f} | {fe['points_per_s']:,.0f} | {fe['worker_cpu_us_per_point']:.1f} | "
                         f"{fe['ratio_to_passthrough']:.0%} | {fe['points_per_s'] / base['points_per_s']:.2f}x |")
    if res.get("stride_sweep"):
        lines += ["", "## Stride: latency traded for compute (batch messages)", "",
                  "| model | stride | points/s | windows/s | worker CPU us/point | vs pass-through |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in res["stride_sweep"]:
            lines.append(f"| {r['model']} | {r['stride']} | {r['points_per_s']:,.0f} | {r['windows_per_s']:,.0f} | "
                         f"{r['worker_cpu_us_per_point']:.1f} | {r['ratio_to_passthrough']:.0%} |")
    if res.get("many_models"):
        lines += many_models_markdown(res["many_models"])
    if res.get("thresholds"):
        lines += thresholds_markdown(res["thresholds"])
    if res.get("profile"):
        lines += [""] + profile.markdown(res["profile"]["kinds"], (res.get("profile_before") or {}).get("kinds"))
        if res.get("profile_before"):
            lines += ["", f"*Before*: {res['profile_before']['source']}."]
    lines += ["", "## References on the same topics", "",
              "| messages | consumer | messages/s | points/s | CPU us/point |", "|---|---|---:|---:|---:|"]
    for kind in res["aiokafka"]:
        for name, e in [("aiokafka getmany", res["aiokafka"][kind]["aiokafka"]),
                        ("Faust pass-through, stock consumer", res["passthrough"][kind]["faust_stock"]),
                        ("Faust pass-through, worker's BatchDrainConsumer", res["passthrough"][kind]["faust_worker_consumer"])]:
            lines.append(f"| {kind} | {name} | {e['messages_per_s']:,.0f} | {e['points_per_s']:,.0f} | "
                         f"{_ratio(e.get('cpu_us_per_point'), '.1f')} |")
    lines += ["", f"The batch-message references read a topic of {REF_REPEAT} times as many messages of the same shape: "
              "a pass-through drains the detector's topic several times faster than the detector, and a run of under "
              "a second (as with 600,000 points) is too short to time.",
              "", "Latency: a live producer sends at half of the measured maximum points/s, each point stamped with "
              "the wall clock; latency = the score record's Kafka timestamp (its publication) minus the timestamp of "
              "the window's last point. With batch messages it includes the producer's own batching (a message "
              "carries the last few points of each source).", "", PROFILE_NOTES]
    return "\n".join(lines) + "\n"


def _ratio(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def target_mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def many_models_markdown(mm: dict[str, Any]) -> list[str]:
    lines = ["", "## Many models", "",
             (f"{mm['models']} copies of `{Path(mm['model_dir']).parent.name}/{Path(mm['model_dir']).name}` (W = 64, one "
             f"channel, the SMAP shape) in a model repository, one route and one source per model, so the worker "
             f"holds {mm['models']} ONNX Runtime sessions; against one model serving the same {mm['sources']} sources "
             f"(a one-model repository, one catch-all route). Same run, same topic: {mm['points']:,} points as batch "
             f"messages of {mm['points_per_message']} points, stride {mm['stride']}. Worker RSS after the run."), "",
             "| models | sources | points/s | windows/s | worker CPU us/point | worker RSS (MiB) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in (mm["one_model"], mm["many_models"]):
        lines.append(f"| {row['models']} | {row['sources']} | {row['points_per_s']:,.0f} | {row['windows_per_s']:,.0f} | "
                     f"{row['worker_cpu_us_per_point']:.1f} | {row['rss_bytes'] / 2**20:.0f} |")
    lines += ["", (f"{mm['models']} models reach {mm['ratio']:.0%} of the one-model points/s (target: at least "
              f"{mm['target']:.0%}: {target_mark(mm['target_met'])}); the extra sessions cost "
              f"{mm['rss_increase_bytes'] / 2**20:,.0f} MiB of worker RSS "
              f"({mm['rss_increase_bytes'] / max(mm['models'] - 1, 1) / 2**20:.1f} MiB a model).")]
    return lines


def thresholds_markdown(th: dict[str, Any]) -> list[str]:
    lines = ["", "## Adaptive thresholds", "",
             (f"The one-model sequence row (`{Path(th['model_dir']).parent.name}/{Path(th['model_dir']).name}`, "
             f"{th['sources']} sources, {th['windows_per_source']:,} windows of {th['window']} points per source at "
             f"stride {th['stride']}) with a route's threshold override against the card's static threshold, same "
             "run, same topics. An adaptive procedure publishes a window's record only once it decides it "
             "(telemanom in batches, after a first `window_size` batches), so fewer records are published; every "
             "row is timed until the worker has *scored* every window (or published the last record, if later)."), "",
             ("| messages | threshold | points/s | windows scored | records published | worker CPU us/point | "
              f"vs static | target (>= {th['target']:.0%}) |"),
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for kind, k in th["kinds"].items():
        for m, row in k["rows"].items():
            ratio = row.get("ratio_to_static")
            lines.append(f"| {kind} | {m} | {row['points_per_s']:,.0f} | {row['windows_scored']:,} | "
                         f"{row['windows_published']:,} | {row['worker_cpu_us_per_point']:.1f} | "
                         f"{'-' if ratio is None else f'{ratio:.0%}'} | "
                         f"{'-' if m == 'static' or ratio is None else target_mark(row['target_met'])} |")
    specs = "; ".join(f"{m}: `{json.dumps(spec, sort_keys=True)}`" for m, spec in th["specs"].items())
    lines += ["", f"Threshold specifications (parameters in points, divided by the stride): {specs}."]
    return lines


def scaling_markdown(res: dict[str, Any], png: str | None) -> str:
    lines = ["# Scaling with sources and window length", "",
             f"`stream-detector bench throughput --scaling`, {res['machine']['cpus']} CPU cores, {res['created']}. "
             "Univariate sequence models (production network sizes), batch messages, one worker; RSS of the "
             "worker process after the run (all sources idle, their state in memory and in the Faust table).", "",
             "| sources | window | points/source | points/s | windows/s | worker RSS (MiB) |",
             "|---:|---:|---:|---:|---:|---:|"]
    seen = set()
    for r in res["sources"] + res["windows"]:
        if (r["sources"], r["window"]) in seen:
            continue
        seen.add((r["sources"], r["window"]))
        lines.append(f"| {r['sources']:,} | {r['window']} | {r['points_per_source']:,} | {r['points_per_s']:,.0f} | "
                     f"{r['windows_per_s']:,.0f} | {r['rss_bytes'] / 2**20:.1f} |")
    if "bytes_per_source" in res:
        lines += ["", f"Memory per source (slope of RSS over sources, W = 64): {res['bytes_per_source']:,.0f} bytes; "
                  f"beyond its window buffer ({res['sources'][0]['window_buffer_bytes']} bytes): "
                  f"{res['bytes_per_idle_source_beyond_window_buffer']:,.0f} bytes. This includes the Faust table's "
                  "copy of the persisted state (the last W - 1 points), the episode tracker and dict entries."]
    if png:
        lines += ["", f"![scaling]({png})"]
    return "\n".join(lines) + "\n"


def scaling_plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    rows = res["sources"]
    x = [r["sources"] for r in rows]
    axes[0].plot(x, [r["points_per_s"] for r in rows], "o-")
    axes[0].set(xscale="log", xlabel="sources", ylabel="points/s", title="throughput vs sources (W=64)")
    axes[1].plot(x, [r["rss_bytes"] / 2**20 for r in rows], "o-", color="C1")
    axes[1].set(xscale="log", xlabel="sources", ylabel="worker RSS (MiB)", title="memory vs sources (W=64)")
    w = res["windows"]
    axes[2].plot([r["window"] for r in w], [r["points_per_s"] for r in w], "o-", color="C2")
    axes[2].set(xlabel="window length", ylabel="points/s", title=f"throughput vs window ({w[0]['sources'] if w else ''} sources)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
