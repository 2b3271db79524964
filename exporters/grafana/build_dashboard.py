"""Build the stream-detector Grafana dashboard as code (grafana-foundation-sdk).

    python exporters/grafana/build_dashboard.py          # (re)write dashboards/stream-detector.json
    python exporters/grafana/build_dashboard.py --check  # exit 1 if the committed JSON is stale

The JSON is committed so that Grafana's file provisioning (provisioning/dashboards/)
can load it without Python; tests/test_exporters.py checks that it equals what this
script generates and that every query names only metrics the worker exports.

Panels query the worker's own metrics (stream_detector/runtime/metrics.py), Faust's sensor
(stream_detector_faust_*), ``up`` and Prometheus' ``ALERTS`` series.  Variables: the
Prometheus data source, the scrape job(s) and the source(s) with per-source gauges.

The SDK is pinned (``SDK_VERSION``: its Grafana 11.3 build, schemaVersion 39, matching the
Grafana of deploy/docker-compose.yml): another SDK build writes different JSON.

The SDK's AnnotationQuery model has no Prometheus-specific fields (step, titleFormat,
tagKeys); :func:`build` adds them to the encoded JSON (see ``PROMETHEUS_ANNOTATION_EXTRAS``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as pb
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

#: The grafana-foundation-sdk release this generator is written against (dev extra pin).
SDK_VERSION = "1769699590!11.3.0"

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards" / "stream-detector.json"

UID = "stream-detector"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: uid of the data source in provisioning/datasources/prometheus.yml (the variable's default).
PROVISIONED_DS_UID = "prometheus"
SEL = 'job=~"$job"'
SRC = 'job=~"$job", source=~"$source"'
RATE = "$__rate_interval"

#: Prometheus annotation options the SDK model lacks, by annotation name.
PROMETHEUS_ANNOTATION_EXTRAS = {
    "Anomaly episodes": {"step": "15s", "titleFormat": "Anomaly episode open ({{job}})", "tagKeys": "job",
                         "textFormat": "", "useValueForTime": False},
    "Score above threshold": {"step": "15s", "titleFormat": "{{source}}: score above threshold",
                              "tagKeys": "source", "textFormat": "", "useValueForTime": False},
}


def query(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False,
          table_format: bool = False) -> pb.Dataquery:
    q = pb.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)
    q = q.instant() if instant else q.range()
    if table_format:
        q = q.format(pm.PromQueryFormat.TABLE)
    return q


def legend_table(calcs: list[str]) -> cb.VizLegendOptions:
    return (cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM).show_legend(True).calcs(calcs))


def ts(panel_id: int, title: str, description: str, unit: str, w: int = 12, h: int = 8) -> timeseries.Panel:
    return (timeseries.Panel().id(panel_id).title(title).description(description).datasource(DS).unit(unit)
            .span(w).height(h).line_width(1).fill_opacity(10).legend(legend_table(["mean", "max", "lastNotNull"])))


def score_panel() -> timeseries.Panel:
    dashed = [dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
              dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0)]
    return (ts(1, "Score and threshold per source",
               "Latest window score of each source (first source_metrics_limit sources) and its alert threshold "
               "(dashed). Shaded regions: anomaly episodes and scores above threshold (annotations).",
               "short", w=24, h=10)
            .with_target(query(f"stream_detector_source_score{{{SRC}}}", "{{source}} score", "A"))
            .with_target(query(f"stream_detector_source_threshold{{{SRC}}}", "{{source}} threshold", "B"))
            .override_by_query("B", dashed))


def stat_panel(panel_id: int, title: str, description: str, expr: str, unit: str = "none",
               red_at: float | None = None, w: int = 6) -> stat.Panel:
    p = (stat.Panel().id(panel_id).title(title).description(description).datasource(DS).unit(unit).span(w).height(4)
         .with_target(query(expr, "__auto", "A", instant=True)))
    if red_at is not None:
        p = p.thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps([
            dm.Threshold(value=None, color="green"), dm.Threshold(value=red_at, color="red")]))
    return p


def quantiles(metric: str, qs: tuple[float, ...]) -> list[pb.Dataquery]:
    return [query(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{SEL}}}[{RATE}])))", f"p{q * 100:g}",
                  chr(ord("A") + i)) for i, q in enumerate(qs)]


def model_table() -> table.Panel:
    organize = dm.DataTransformerConfig(id_val="organize", options={
        "excludeByName": {"Time": True, "Value": True, "__name__": True},
        "indexByName": {"instance": 0, "job": 1, "name": 2, "version": 3, "provider": 4, "transform": 5,
                        "window": 6, "stride": 7},
        "renameByName": {"provider": "ONNX Runtime provider"},
    })
    return (table.Panel().id(20).title("Model and provider")
            .description("stream_detector_model_info: the model each worker serves and the ONNX Runtime "
                         "execution provider running it (CUDAExecutionProvider on the GPU image).")
            .datasource(DS).span(16).height(5)
            .with_target(query(f"stream_detector_model_info{{{SEL}}}", "__auto", "A", instant=True, table_format=True))
            .with_transformation(organize))


def alerts_table() -> table.Panel:
    organize = dm.DataTransformerConfig(id_val="organize", options={
        "excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True},
        "indexByName": {"alertname": 0, "severity": 1, "source": 2, "topic": 3, "instance": 4, "job": 5},
    })
    return (table.Panel().id(6).title("Firing alerts")
            .description("Prometheus alerts of exporters/prometheus/alert_rules.yml that are firing now "
                         "(Prometheus' ALERTS series).")
            .datasource(DS).span(12).height(6)
            .with_target(query('ALERTS{alertstate="firing", alertname=~"StreamDetector.*"}', "__auto", "A",
                               instant=True, table_format=True))
            .with_transformation(organize))


def annotations() -> list[db.AnnotationQuery]:
    return [
        db.AnnotationQuery().name("Anomaly episodes").datasource(DS).enable(True).hide(False).icon_color("red")
        .expr(f"sum by (job) (stream_detector_alert_episodes_open{{{SEL}}}) > 0"),
        db.AnnotationQuery().name("Score above threshold").datasource(DS).enable(True).hide(False)
        .icon_color("orange")
        .expr(f"stream_detector_source_score{{{SRC}}} >= stream_detector_source_threshold{{{SRC}}}"),
    ]


def variables() -> list:
    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus")
        .current(dm.VariableOption(selected=True, text="Prometheus", value=PROVISIONED_DS_UID)),
        db.QueryVariable("job").label("Job").datasource(DS)
        .query({"query": "label_values(stream_detector_model_info, job)", "refId": "job"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all")),
        db.QueryVariable("source").label("Source").datasource(DS)
        .query({"query": 'label_values(stream_detector_source_score{job=~"$job"}, source)', "refId": "source"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all")),
    ]


def dashboard() -> db.Dashboard:
    d = (db.Dashboard("stream-detector").uid(UID).tags(["stream-detector", "anomaly-detection", "kafka"])
         .description("Streaming anomaly detection: scores, alerts, throughput, latency and lag of the "
                      "stream-detector worker.")
         .refresh("10s").time("now-1h", "now").timezone("browser").tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .editable().variables(variables()).annotations(annotations()))

    d = d.with_row(db.Row("Detection").id(100))
    d = d.with_panel(score_panel())
    d = d.with_panel(stat_panel(2, "Open anomaly episodes", "Alert episodes open now, all workers.",
                                f"sum(stream_detector_alert_episodes_open{{{SEL}}})", red_at=1))
    d = d.with_panel(stat_panel(3, "Episodes opened (range)", "Alert episodes opened in the dashboard's time range.",
                                f"sum(increase(stream_detector_alert_episodes_opened_total{{{SEL}}}[$__range]))"))
    d = d.with_panel(stat_panel(4, "Anomalous windows", "Share of scored windows at or above the threshold "
                                "over the dashboard's time range.",
                                f"sum(increase(stream_detector_anomalous_windows_total{{{SEL}}}[$__range])) / "
                                f"sum(increase(stream_detector_windows_scored_total{{{SEL}}}[$__range]))",
                                unit="percentunit"))
    d = d.with_panel(stat_panel(5, "Sources", "Sources with window state on the workers.",
                                f"sum(stream_detector_sources{{{SEL}}})"))
    d = d.with_panel(alerts_table())
    score_q = ts(7, "Window score quantiles (all sources)", "From the stream_detector_window_score histogram.",
                 "short")
    for q in quantiles("stream_detector_window_score", (0.5, 0.99)):
        score_q = score_q.with_target(q)
    d = d.with_panel(score_q)

    d = d.with_row(db.Row("Throughput").id(101))
    d = d.with_panel(ts(8, "Points/s", "Telemetry points taken in, by outcome.", "suffix: points/s", w=8)
                     .with_target(query(f"sum by (status) (rate(stream_detector_points_total{{{SEL}}}[{RATE}]))",
                                        "{{status}}")))
    d = d.with_panel(ts(9, "Messages/s", "Input messages, by outcome.", "suffix: msg/s", w=8)
                     .with_target(query(f"sum by (status) (rate(stream_detector_messages_total{{{SEL}}}[{RATE}]))",
                                        "{{status}}"))
                     .with_target(query(f"sum(rate(stream_detector_windows_scored_total{{{SEL}}}[{RATE}]))",
                                        "windows scored", "B")))
    d = d.with_panel(ts(10, "Dead letters by reason", "Messages sent to the dead-letter topic, by reason.",
                        "suffix: msg/s", w=8)
                     .with_target(query(f"sum by (reason) (rate(stream_detector_dead_letters_total{{{SEL}}}[{RATE}]))",
                                        "{{reason}}")))

    d = d.with_row(db.Row("Latency and lag").id(102))
    inference = ts(11, "Inference latency", "Duration of one ONNX Runtime call (one micro-batch).", "s", w=8)
    for q in quantiles("stream_detector_inference_duration_seconds", (0.5, 0.9, 0.99)):
        inference = inference.with_target(q)
    inference = inference.with_target(query(
        f"sum(rate(stream_detector_inference_batch_windows_sum{{{SEL}}}[{RATE}])) / "
        f"sum(rate(stream_detector_inference_batch_windows_count{{{SEL}}}[{RATE}]))", "windows per call", "D"))
    inference = inference.override_by_query("D", [dm.DynamicConfigValue(id_val="unit", value="short"),
                                                  dm.DynamicConfigValue(id_val="custom.axisPlacement",
                                                                        value="right")])
    d = d.with_panel(inference)
    e2e = ts(12, "End-to-end latency", "From the timestamp of a window's last point to the publication of its "
             "score.", "s", w=8)
    for q in quantiles("stream_detector_end_to_end_latency_seconds", (0.5, 0.99)):
        e2e = e2e.with_target(q)
    d = d.with_panel(e2e)
    d = d.with_panel(ts(13, "Consumer lag", "Messages behind per topic: Faust's end offset seen on fetch minus "
                        "its committed offset, summed over partitions.", "short", w=8)
                     .with_target(query(
                         "sum by (topic) (clamp_min("
                         f"stream_detector_faust_topic_partition_end_offset{{{SEL}}} - "
                         f"stream_detector_faust_topic_partition_offset_commited{{{SEL}}}, 0))", "{{topic}}")))

    d = d.with_row(db.Row("Model and workers").id(103))
    d = d.with_panel(model_table())
    d = d.with_panel(stat_panel(21, "Workers up", "Scrape targets of the job(s) that answer.",
                                f"sum(up{{{SEL}}})", w=8))
    return d


def build() -> dict:
    """The dashboard as a JSON-ready dict (SDK output plus the Prometheus annotation extras)."""
    data = json.loads(json.dumps(dashboard().build(), cls=JSONEncoder))
    for ann in data["annotations"]["list"]:
        ann.update(PROMETHEUS_ANNOTATION_EXTRAS.get(ann["name"], {}))
    return data


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUTPUT)
    ap.add_argument("--check", action="store_true", help="only check that --out is up to date")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is stale: run python exporters/grafana/build_dashboard.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
