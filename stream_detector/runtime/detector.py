"""The worker's core, independent of Faust: many models, their sources, windows, thresholds, alerts.

:class:`Detector` hosts every servable model of a :class:`~stream_detector.runtime.repository.ModelRepository`
and the state of every source.  The Faust agent (``app.py``) only decodes Kafka messages into
:class:`InMessage`, calls the three steps below and publishes what comes back:

1. :meth:`Detector.ingest_parts` (event loop, cheap): route each message's source to a model
   (``no_model`` dead letter when nothing matches), decode and validate it against that
   model's channels, drop redelivered messages, push points into the source's window buffer
   and collect complete windows, grouped per served model version.
2. :meth:`Detector.score` (executor): one ONNX Runtime call per model per ``batch_max_windows``.
3. :meth:`Detector.finish` (event loop): each source's threshold procedure decides its windows
   (immediately for a static threshold; up to ``max_lag`` windows later for the adaptive ones,
   whose undecided windows wait in the source's state), then score records, alert episodes
   and metrics.  :meth:`Detector.states` gives the per-source state to persist once a whole
   step is published.

For offline use and tests :meth:`Detector.process` runs all three on a list of messages, and
:meth:`Detector.process_points` takes one source's points directly (River-style), no Kafka.

**Redelivery.**  Each source's persisted state carries the offset of the last message folded
into it.  After a crash Kafka redelivers from the last committed offset; messages at or below
the saved offset were already windowed (and their records published before the state was
saved), so they are skipped and counted as ``redelivered``.

**Producer duplicates.**  A producer that retries a send after a lost acknowledgement (any
producer without idempotence, through a cut connection) writes the same message again at a new
offset.  A message whose bytes equal the source's previous message and whose timestamps are not
later than the source's last is such a copy: it is skipped and counted as ``duplicate``, not
dead-lettered (``ts_not_increasing``), since it carries nothing new.  Any other message with an
old timestamp is still a dead letter.

**Live versions.**  :meth:`prepare_refresh` (any thread) scans the repository and loads the
sessions of new versions; :meth:`install` (event loop, between steps) swaps them in.  A source
moves to the new version the next time it sends data, before its new points are windowed,
i.e. at a window boundary: every earlier window was scored by the old version.  Its window
buffer is kept when window, stride and channels match (else it restarts: the next window comes
``W`` points later).  Its threshold state is kept when the threshold specification is the same;
otherwise the old procedure decides its pending windows at once (``flush``) and a fresh one
starts, so no window is lost or decided twice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import msgpack
import numpy as np

from . import metrics
from .thresholds import AdaptiveThreshold, make_threshold
from .episodes import EpisodeTracker
from .codec import InvalidMessage, PointDecoder
from .config import WorkerConfig
from .publishing import Outgoing, batch_score_record, dead_letter, decode_record, encode_record, score_record
from .repository import ModelRepository, ModelVersion, Route, Routes
from .scoring import Peaks, Scorer
from .windowing import SourceWindows, channels_fingerprint

log = logging.getLogger(__name__)

STATIC_METHODS = ("quantile", "pot")
#: one group's scores: window scores, channel scores, peak cells (None: the graph has no cell_scores)
Scored = tuple[np.ndarray, np.ndarray, Peaks | None]


@dataclass
class InMessage:
    """What the detector needs of a Kafka message: any object with these attributes will do
    (the worker passes Faust's own ``Message`` objects as they are)."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int


class Served:
    """One model version being served: its ONNX Runtime session and its message decoder."""

    def __init__(self, mv: ModelVersion, scorer: Scorer, cfg: WorkerConfig):
        self.name, self.version, self.scorer = mv.name, mv.version, scorer
        self.card = scorer.card
        self.channels = scorer.channels
        self.fingerprint = channels_fingerprint(self.channels)
        self.decoder = PointDecoder(scorer.channels, allow_imputation=scorer.allow_imputation,
                                    max_bytes=cfg.max_message_bytes, allowed_sources=cfg.allowed_sources)
        self.windows_metric = metrics.WINDOWS.labels(self.name)
        self.inference_metric = metrics.INFERENCE.labels(self.name)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    def observe_call(self, batch_size: int, seconds: float) -> None:
        """One ONNX Runtime call of this model, into the inference and batch-size histograms."""
        self.inference_metric.observe(seconds)
        metrics.BATCH_SIZE.observe(batch_size)


@dataclass
class Group:
    """The windows of one served model version in one part of a step."""

    served: Served
    sources: list[str] = field(default_factory=list)  # one per window
    start_ts: list[np.ndarray] = field(default_factory=list)
    end_ts: list[np.ndarray] = field(default_factory=list)
    windows: list[np.ndarray] = field(default_factory=list)
    ts: list[np.ndarray] = field(default_factory=list)  # every point's timestamp, [n, W] per part

    def stacked(self) -> np.ndarray:
        return np.concatenate(self.windows)

    def peak_rows(self, peaks: Peaks | None) -> np.ndarray:
        """Each window's peak cell as ``[n, 3]`` float64 rows (timestamp, channel index, cell
        value); NaN rows for a graph without ``cell_scores``."""
        n = sum(len(t) for t in self.start_ts)
        if peaks is None:
            return np.full((n, 3), np.nan)
        peak_ts, i = np.empty(n), 0
        for ts in self.ts:  # strided views into each push's points: read one step per window
            peak_ts[i:i + len(ts)] = ts[np.arange(len(ts)), peaks.step[i:i + len(ts)]]
            i += len(ts)
        return np.column_stack([peak_ts, peaks.channel, peaks.value]).astype(np.float64)


@dataclass
class Decided:
    """Windows whose threshold decision is made: ready to become score records."""

    source: str
    served_name: str
    versions: np.ndarray  # int per window
    start_ts: np.ndarray
    end_ts: np.ndarray
    scores: np.ndarray
    channel_scores: np.ndarray
    peaks: np.ndarray  # [n, 3]: peak cell's timestamp, channel index, value (Group.peak_rows)
    flags: np.ndarray | None  # None: the static threshold decides (with hysteresis) in the tracker
    thresholds: np.ndarray
    channels: tuple[str, ...]
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. likelihood per window
    tracker: EpisodeTracker | None = None  # None: the source's; set for windows flushed at a switch
    close_reason: str | None = None  # close the tracker's episode after these windows (channels changed)


@dataclass
class Prepared:
    """Windows gathered from one part of a step, waiting for scores."""

    groups: dict[str, Group] = field(default_factory=dict)
    touched: dict[str, int] = field(default_factory=dict)  # source -> input partition
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    flushed: list[Decided] = field(default_factory=list)  # decided at a version switch
    closed: list[tuple[str, dict]] = field(default_factory=list)  # episodes closed by a switch

    @property
    def n_windows(self) -> int:
        return sum(len(g.sources) for g in self.groups.values())


def encode_state(state: dict) -> bytes:
    return msgpack.packb(state, use_bin_type=True)


def decode_state(raw: bytes | None) -> dict | None:
    if not raw:
        return None
    try:
        state = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:  # a corrupt entry must not stop the worker; the source starts afresh
        return None
    return state if isinstance(state, dict) else None


# -- per-source state ---------------------------------------------------------------------------
class Pending:
    """Scored windows waiting for their threshold decision (adaptive methods only)."""

    def __init__(self, n_channels: int):
        self.versions = np.zeros(0, np.int32)
        self.start_ts = np.zeros(0, np.float64)
        self.end_ts = np.zeros(0, np.float64)
        self.scores = np.zeros(0, np.float32)
        self.channel_scores = np.zeros((0, n_channels), np.float32)
        self.peaks = np.zeros((0, 3), np.float64)

    def __len__(self) -> int:
        return len(self.scores)

    def append(self, version: int, start, end, scores, channel_scores, peaks) -> None:
        self.versions = np.concatenate([self.versions, np.full(len(scores), version, np.int32)])
        self.start_ts = np.concatenate([self.start_ts, start])
        self.end_ts = np.concatenate([self.end_ts, end])
        self.scores = np.concatenate([self.scores, np.asarray(scores, np.float32)])
        self.channel_scores = np.concatenate([self.channel_scores, np.asarray(channel_scores, np.float32)])
        self.peaks = np.concatenate([self.peaks, np.asarray(peaks, np.float64)])

    def pop(self, k: int) -> tuple[np.ndarray, ...]:
        out = (self.versions[:k], self.start_ts[:k], self.end_ts[:k], self.scores[:k], self.channel_scores[:k],
               self.peaks[:k])
        self.versions, self.start_ts, self.end_ts = self.versions[k:], self.start_ts[k:], self.end_ts[k:]
        self.scores, self.channel_scores, self.peaks = self.scores[k:], self.channel_scores[k:], self.peaks[k:]
        return out

    def state(self) -> dict:
        return {"n": len(self), "c": int(self.channel_scores.shape[1]), "v": self.versions.tobytes(),
                "s": self.start_ts.tobytes(), "e": self.end_ts.tobytes(), "x": self.scores.tobytes(),
                "cs": self.channel_scores.tobytes(), "pk": self.peaks.tobytes()}

    @classmethod
    def from_state(cls, st: dict, n_channels: int) -> Pending:
        p = cls(n_channels)
        if st and st.get("n") and int(st.get("c", -1)) == n_channels:
            p.versions = np.frombuffer(st["v"], np.int32).copy()
            p.start_ts = np.frombuffer(st["s"], np.float64).copy()
            p.end_ts = np.frombuffer(st["e"], np.float64).copy()
            p.scores = np.frombuffer(st["x"], np.float32).copy()
            p.channel_scores = np.frombuffer(st["cs"], np.float32).reshape(-1, n_channels).copy()
            # states written before peaks were kept have none: NaN (unknown), never made up
            p.peaks = (np.frombuffer(st["pk"], np.float64).reshape(-1, 3).copy() if "pk" in st
                       else np.full((len(p.scores), 3), np.nan))
        return p


@dataclass
class Source:
    """Everything the worker keeps for one source id."""

    route: Route
    served: Served
    stride: int
    windows: SourceWindows
    spec: dict  # the threshold specification in force
    threshold: AdaptiveThreshold
    tracker: EpisodeTracker
    pending: Pending
    channels: tuple[str, ...]  # of the version whose windows are pending (the served one after a switch)
    version: int
    partition: int = 0  # input partition (its state goes to the same changelog partition)
    last_seen: float = 0.0  # wall clock of the last message taken from it
    # The raw value of the last message taken from it (not persisted): a producer's retry resends
    # the same bytes at a new offset, which the offset check cannot recognise.
    last_value: bytes | None = None

    @property
    def static(self) -> bool:
        return self.spec["method"] in STATIC_METHODS


class Detector:
    """Windows, scores, thresholds and alerts for all sources and models of one worker.

    ``repository`` defaults to the one named by ``cfg`` (``model_repository`` or ``model_dir``);
    ``scorer_factory(model_version) -> Scorer`` builds the ONNX Runtime session of a version
    (tests wrap it); ``load_state(source) -> bytes | None`` reads a source's persisted state
    (the Faust table) the first time the source is seen.
    """

    def __init__(self, cfg: WorkerConfig, repository: ModelRepository | None = None,
                 load_state: Callable[[str], bytes | None] | None = None,
                 scorer_factory: Callable[[ModelVersion], Scorer] | None = None):
        self.cfg = cfg
        self.fmt = cfg.message_format
        self.batch_records = cfg.score_records == "batch"
        self.repository = repository or repository_from_config(cfg)
        self.routes = Routes(cfg.routes)
        self._scorer_factory = scorer_factory or (
            lambda mv: Scorer(mv.path, threads=cfg.inference_threads or None, spinning=False))
        self._load_state = load_state or (lambda source: None)
        self.served: dict[str, Served] = {}
        self.sources: dict[str, Source] = {}
        self.source_gauges = metrics.SourceGauges(cfg.source_metrics_limit)
        self.repository.check()
        self.install(self.prepare_refresh())
        self._check_routes()

    # -- models ------------------------------------------------------------------------------
    def prepare_refresh(self) -> dict[str, Served]:
        """New versions found in the repository, loaded (blocking: call it off the event loop)."""
        new = {}
        for name, mv in self.repository.scan().items():
            cur = self.served.get(name)
            if cur is not None and cur.version == mv.version:
                continue
            try:
                new[name] = Served(mv, self._scorer_factory(mv), self.cfg)
            except Exception as e:  # ONNX Runtime refusing the graph: the old version keeps serving
                metrics.MODEL_VERSIONS_REFUSED.labels(name).inc()
                log.warning("model %s version %s refused by ONNX Runtime, the previous version keeps serving: %s",
                            name, mv.version, e)
        return new

    def install(self, new: dict[str, Served]) -> None:
        """Serve ``new`` from now on (event loop, between steps); sources switch when next seen."""
        for name, served in new.items():
            old = self.served.get(name)
            self.served[name] = served
            metrics.MODEL_VERSION.labels(name).set(served.version)
            metrics.MODEL.labels(name).info({"version": str(served.version), "provider": served.scorer.provider,
                                             "window": str(served.scorer.window), "stride": str(served.scorer.stride),
                                             "transform": served.card.transform,
                                             "threshold": served.card.threshold_method})
            log.info("serving model %s version %s (%s)%s", name, served.version, served.scorer.provider,
                     f", replacing version {old.version}" if old else "")

    def _check_routes(self) -> None:
        for r in self.routes.routes:
            if r.model not in self.served:
                log.warning("route %r names model %r, which the repository does not serve (yet): its sources go "
                            "to the dead-letter topic as no_model", r.pattern, r.model)
            else:
                self._threshold_spec(self.served[r.model], r)  # a bad override fails at start-up

    # -- sources ------------------------------------------------------------------------------
    def _threshold_spec(self, served: Served, route: Route) -> dict:
        card_spec = {"method": served.card.threshold_method, **served.card.threshold}
        if not route.threshold:
            spec = card_spec
        else:
            spec = {"value": card_spec["value"], "release": card_spec["release"], **route.threshold}
        if spec["method"] in STATIC_METHODS:
            if self.cfg.alert_release_threshold is not None:
                spec["release"] = self.cfg.alert_release_threshold
            elif self.cfg.alert_release_ratio is not None:
                spec["release"] = self.cfg.alert_release_ratio * spec["value"]
        return spec

    def _stride(self, served: Served, route: Route) -> int:
        return route.stride or self.cfg.stride or served.scorer.stride

    def _new_source(self, route: Route, served: Served, saved: dict) -> Source:
        """The source as it was saved (same model name: its windows, stride, threshold spec and
        state, pending windows, episode), or fresh.  :meth:`_reconcile` then brings it in line
        with what is served and configured now.  A state written before model repositories
        existed has no model name and belongs to the one model served then."""
        channels = tuple(saved.get("channel_names") or served.channels)
        same_model = saved.get("model", served.name) == served.name
        stride = int(saved.get("stride") or self._stride(served, route)) if same_model else self._stride(served, route)
        spec = saved.get("spec") if same_model and isinstance(saved.get("spec"), dict) else None
        spec = spec or self._threshold_spec(served, route)
        windows = None
        w = saved.get("windows") if same_model else None
        if w and w.get("channels") == served.fingerprint:
            try:
                windows = SourceWindows.from_state(w)
            except (ValueError, AttributeError, KeyError, TypeError):
                windows = None
        if windows is None or not windows.compatible_with(served.scorer.window, stride, len(served.channels)):
            windows = SourceWindows(served.scorer.window, stride, len(served.channels), self.cfg.max_gap_seconds)
        windows.max_gap_seconds = self.cfg.max_gap_seconds  # configuration wins over the saved value
        try:
            threshold = make_threshold(spec, stride, state=saved.get("threshold") if same_model else None)
            pending = Pending.from_state(saved.get("pending") if same_model else None, len(channels))
        except (ValueError, KeyError, TypeError):  # unreadable: decisions restart (logged, counted nowhere else)
            log.warning("threshold state of a source could not be restored; its procedure starts afresh")
            threshold, pending = make_threshold(spec, stride), Pending(len(channels))
        if len(pending) != threshold.pending:  # the two must agree, or decisions would misalign
            threshold, pending = make_threshold(spec, stride), Pending(len(channels))
        tracker = self._tracker(channels, spec, saved.get("episode") if same_model else None)
        version = int(saved.get("version", served.version)) if same_model else served.version
        return Source(route, served, stride, windows, spec, threshold, tracker, pending, channels, version,
                      partition=int(saved.get("partition", 0)), last_seen=float(saved.get("seen", time.time())))

    def _tracker(self, channels: Sequence[str], spec: dict, state: dict | None) -> EpisodeTracker:
        value = float(spec.get("value", math.inf))
        release = float(spec.get("release", value))
        return EpisodeTracker(value, release, list(channels), self.cfg.alert_quiet_seconds,
                              self.cfg.alert_top_channels, state=dict(state or {}))

    def _source(self, source: str, prepared: Prepared) -> Source:
        """The source's state, routed, loaded and brought to the served version; raises
        ``InvalidMessage('no_model')`` when no route or no servable model takes it."""
        st = self.sources.get(source)
        route = st.route if st is not None else self.routes.route(source, self.served)
        if route is None:
            raise InvalidMessage("no_model", f"no route matches source {source!r}")
        served = self.served.get(route.model)
        if served is None:
            raise InvalidMessage("no_model", f"route {route.pattern!r} names model {route.model!r}, which has no "
                                             "servable version in the repository")
        if st is None:
            st = self._new_source(route, served, decode_state(self._load_state(source)) or {})
            self.sources[source] = st
            self._reconcile(source, st, served, prepared)
        elif st.served is not served:
            self._reconcile(source, st, served, prepared)
        return st

    def _reconcile(self, source: str, st: Source, served: Served, prepared: Prepared) -> None:
        """Move a source to ``served`` and today's threshold and stride, at a window boundary (see
        the module docstring): nothing decided twice, nothing pending dropped."""
        spec, stride = self._threshold_spec(served, st.route), self._stride(served, st.route)
        same_channels = tuple(served.channels) == st.channels
        old_tracker, flushed = st.tracker, None
        if spec != st.spec or stride != st.stride or not same_channels:
            flags, thresholds = st.threshold.flush()  # the old procedure decides what it holds
            if len(flags):
                flushed = self._decided(source, st, len(flags), flags, thresholds)
                flushed.tracker = old_tracker
                prepared.flushed.append(flushed)
            st.threshold, st.pending, st.spec = make_threshold(spec, stride), Pending(len(served.channels)), spec
        if not same_channels:
            # The old episode (shares over another channel list) ends with the old windows.
            if flushed is not None:
                flushed.close_reason = "model_changed"
            elif old_tracker.is_open:
                prepared.closed.append((source, old_tracker.close(source, "model_changed")))
            st.tracker = self._tracker(served.channels, spec, None)
        else:
            st.tracker = self._tracker(served.channels, spec, st.tracker.state)
        if not same_channels or not st.windows.compatible_with(served.scorer.window, stride, len(served.channels)):
            offset = st.windows.last_offset
            st.windows = SourceWindows(served.scorer.window, stride, len(served.channels), self.cfg.max_gap_seconds)
            st.windows.last_offset = offset
        st.served, st.stride, st.channels, st.version = served, stride, tuple(served.channels), served.version

    def forget(self, sources: Sequence[str] | None = None) -> None:
        """Drop in-memory state (partitions revoked): it is reloaded from the table on next use."""
        for s in list(self.sources) if sources is None else sources:
            self.sources.pop(s, None)
        metrics.SOURCES.set(len(self.sources))

    # -- step 1 ------------------------------------------------------------------------------
    def _dead(self, prepared: Prepared, msg: InMessage, exc: InvalidMessage) -> None:
        record = dead_letter(msg.value, exc.reason, exc.detail, msg.topic, msg.partition, msg.offset, msg.key)
        prepared.dead_letters.append((msg.key, encode_record(record, self.fmt)))
        metrics.DEAD_LETTERS.labels(exc.reason).inc()
        metrics.MESSAGES.labels("dead_letter").inc()

    def ingest_parts(self, messages: Sequence[InMessage], max_windows: float | None = None) -> Iterator[Prepared]:
        """Route, decode and window ``messages`` in order, yielding a :class:`Prepared` as soon as
        it holds ``max_windows`` windows (default ``batch_max_windows``; ``math.inf``: no cap),
        and the remainder at the end (always at least one part).

        Why parts: the agent hands each part to the model's executor thread as soon as it is
        yielded and decodes the next messages meanwhile (ONNX Runtime releases the GIL), so
        decoding, scoring and publishing overlap instead of taking turns.
        """
        cap = self.cfg.batch_max_windows if max_windows is None else max_windows
        prepared = Prepared()
        n_windows = 0
        # Counted here and added to the metrics once per part, not per message (cheaper).
        ok = points_ok = redelivered = duplicates = 0

        def flush_counts() -> None:
            nonlocal ok, points_ok, redelivered, duplicates
            metrics.MESSAGES_OK.inc(ok)
            metrics.POINTS_OK.inc(points_ok)
            if redelivered:
                metrics.MESSAGES_REDELIVERED.inc(redelivered)
            if duplicates:
                metrics.MESSAGES_DUPLICATE.inc(duplicates)
            ok = points_ok = redelivered = duplicates = 0
            metrics.SOURCES.set(len(self.sources))

        now = time.time()
        source_of = next(iter(self.served.values())).decoder.source_of  # the same rules for every model
        for msg in messages:
            st = None
            try:
                source = source_of(msg.key)
                st = self._source(source, prepared)
                sw = st.windows
                if sw.last_offset is not None and msg.offset <= sw.last_offset:
                    redelivered += 1
                    continue
                decoder = st.served.decoder
                last = sw.last_values() if decoder.allow_imputation else None
                points = decoder.decode_payload(source, msg.value, last)
                batch = sw.push_point(points) if len(points) == 1 else sw.push_batch(points.ts, points.values)
                sw.last_offset = int(msg.offset)
            except InvalidMessage as exc:
                if exc.reason == "ts_not_increasing" and st is not None and msg.value == st.last_value:
                    duplicates += 1
                    continue
                self._dead(prepared, msg, exc)
                continue
            st.last_value = msg.value
            ok += 1
            points_ok += len(points)
            prepared.touched[source] = st.partition = msg.partition
            st.last_seen = now
            if len(batch):
                g = prepared.groups.get(st.served.key)
                if g is None:
                    g = prepared.groups[st.served.key] = Group(st.served)
                g.sources += [source] * len(batch)
                g.start_ts.append(batch.start_ts)
                g.end_ts.append(batch.end_ts)
                g.windows.append(batch.values)
                g.ts.append(batch.ts)
                n_windows += len(batch)
                if n_windows >= cap:
                    flush_counts()
                    yield prepared
                    prepared, n_windows = Prepared(), 0
        flush_counts()
        yield prepared

    # -- step 2 ------------------------------------------------------------------------------
    def score(self, prepared: Prepared) -> dict[str, Scored]:
        """Scores of all prepared windows per group, ``batch_max_windows`` per ONNX Runtime call."""
        return {key: g.served.scorer.score_batches(g.stacked(), self.cfg.batch_max_windows, g.served.observe_call)
                for key, g in prepared.groups.items()}

    # -- step 3 ------------------------------------------------------------------------------
    def _decided(self, source: str, st: Source, k: int, flags: np.ndarray, thresholds: np.ndarray) -> Decided:
        versions, start, end, scores, chs, peaks = st.pending.pop(k)
        extra = {}
        lik = getattr(st.threshold, "last_likelihoods", None)
        if lik is not None and len(lik) == k:
            extra["likelihood"] = np.asarray(lik)
        return Decided(source, st.served.name, versions, start, end, scores, chs, peaks, flags, thresholds,
                       st.channels, extra)

    def decide(self, prepared: Prepared, scored: dict[str, Scored]) -> list[Decided]:
        """Feed each source's new window scores to its threshold procedure, in order; returns the
        windows decided now (some of them may have been scored in earlier steps)."""
        out = list(prepared.flushed)
        for key, g in prepared.groups.items():
            scores, channel_scores, peaks = scored[key]
            peaks = g.peak_rows(peaks)
            starts, ends = np.concatenate(g.start_ts), np.concatenate(g.end_ts)
            by_source: dict[str, list[int]] = {}
            for i, s in enumerate(g.sources):
                by_source.setdefault(s, []).append(i)
            values = None  # the group's windows, stacked once if a procedure needs them (the spatial rule)
            for source, idx in by_source.items():
                st = self.sources[source]
                ix = np.asarray(idx)
                if st.static:  # decided now, with hysteresis, by the episode tracker
                    thr = np.full(len(ix), st.spec["value"])
                    out.append(Decided(source, g.served.name, np.full(len(ix), g.served.version, np.int32),
                                       starts[ix], ends[ix], scores[ix], channel_scores[ix], peaks[ix], None, thr,
                                       st.channels))
                    continue
                st.pending.append(g.served.version, starts[ix], ends[ix], scores[ix], channel_scores[ix], peaks[ix])
                if st.threshold.wants_windows and values is None:
                    values = g.stacked()
                flags, thresholds = st.threshold.update(np.asarray(scores[ix], np.float64),
                                                        values[ix] if st.threshold.wants_windows else None)
                if len(flags):
                    out.append(self._decided(source, st, len(flags), flags, thresholds))
        return out

    def finish(self, prepared: Prepared, scored: dict[str, Scored],
               keep_dicts: bool = False) -> Outgoing:
        """Score records, alert events and dead letters of one part (no state: see :meth:`states`)."""
        out = Outgoing(dead_letters=prepared.dead_letters)
        now = time.time()

        def alert(key: bytes, event: dict) -> None:
            out.alerts.append((key, encode_record(event, self.fmt)))
            if keep_dicts:
                out.events.append(event)
            if event["event"] == "opened":
                metrics.EPISODES_OPENED.inc()

        for source, event in prepared.closed:
            alert(source.encode(), event)
        for d in self.decide(prepared, scored):
            st = self.sources.get(d.source)
            channels = d.channels
            tracker = d.tracker or (st.tracker if st else None)
            key = d.source.encode()
            if self.batch_records and len(d.scores):
                record = batch_score_record(d.source, d.served_name, d.versions, d.start_ts, d.end_ts, d.scores,
                                            d.thresholds, d.flags, channels, d.channel_scores, d.extra, d.peaks)
                out.scores.append((key, encode_record(record, self.fmt)))
            for i in range(len(d.scores)):
                score, thr = float(d.scores[i]), float(d.thresholds[i])
                if d.flags is None:
                    anomalous = score >= thr
                else:
                    anomalous = bool(d.flags[i])
                if keep_dicts or not self.batch_records:
                    record = score_record(d.source, d.start_ts[i], d.end_ts[i], score, thr, anomalous, channels,
                                          d.channel_scores[i], d.served_name, d.versions[i],
                                          {name: float(values[i]) for name, values in d.extra.items()} if d.extra else None,
                                          d.peaks[i])
                    if not self.batch_records:
                        out.scores.append((key, encode_record(record, self.fmt)))
                    if keep_dicts:
                        out.records.append(record)
                metrics.SCORE.observe(score)
                metrics.LATENCY.observe(max(0.0, now - float(d.end_ts[i])))
                if anomalous:
                    metrics.ANOMALIES.inc()
                if tracker is not None:
                    flag = None if d.flags is None else bool(anomalous)
                    for event in tracker.update(d.source, d.start_ts[i], d.end_ts[i], score, d.channel_scores[i],
                                                flag=flag, threshold=thr, peak=d.peaks[i]):
                        alert(key, event)
            if d.close_reason and tracker is not None and tracker.is_open:
                alert(key, tracker.close(d.source, d.close_reason))
            if len(d.scores):
                self.source_gauges.update(d.source, float(d.scores[-1]), float(d.thresholds[-1]),
                                          float(d.end_ts[-1]))
        for g in prepared.groups.values():
            g.served.windows_metric.inc(len(g.sources))
        metrics.EPISODES_OPEN.set(sum(s.tracker.is_open for s in self.sources.values()))
        return out

    def states(self, touched: dict[str, int]) -> dict[str, tuple[int, bytes]]:
        """The state to persist for each touched source: ``source -> (partition, bytes)``.

        Call it only once every part of the step is finished and published: it reads the
        window buffers as they are now, i.e. after the last message of the step, and a state
        must never cover a message whose windows are not yet published.
        """
        out = {}
        for source, partition in touched.items():
            st = self.sources.get(source)
            if st is None:
                continue
            w = st.windows.state(binary=True)
            w["channels"] = st.served.fingerprint
            state = {"model": st.served.name, "version": st.served.version, "channels": st.served.fingerprint,
                     "stride": st.stride, "windows": w, "episode": st.tracker.state, "spec": st.spec,
                     "partition": st.partition, "seen": st.last_seen}
            if not st.static:
                state["threshold"] = st.threshold.state()
                state["pending"] = st.pending.state()
                if len(st.pending):  # to decide them under their own channel names after a change
                    state["channel_names"] = list(st.channels)
            out[source] = (partition, encode_state(state))
        return out

    # -- silent sources ---------------------------------------------------------------------------
    def silence_seconds(self, st: Source) -> float | None:
        """How long ``st`` may send nothing before it counts as silent: ``source_silence_seconds``,
        or 10 windows' worth of its own pace (10 x stride x its median point interval), None
        while that pace is unknown (fewer than two points buffered)."""
        if self.cfg.source_silence_seconds is not None:
            return self.cfg.source_silence_seconds
        interval = st.windows.median_interval()
        return None if interval is None else 10.0 * st.stride * interval

    def sweep(self, now: float, keep_dicts: bool = False) -> Outgoing:
        """Close the open episodes of sources silent for their silence time (reason
        ``source_silent``), count the silent sources, and evict sources silent for
        ``source_evict_seconds`` (their undecided windows are decided first, so nothing is
        lost).  Returns the records to publish, the states to persist and the evicted sources."""
        prepared, closed_states, evicted, silent = Prepared(), {}, {}, 0
        for source, st in list(self.sources.items()):
            quiet = now - st.last_seen
            if quiet < 1.0:
                continue
            if quiet >= self.cfg.source_evict_seconds:
                flags, thresholds = st.threshold.flush() if not st.static else ((), ())
                if len(flags):
                    d = self._decided(source, st, len(flags), flags, thresholds)
                    d.tracker, d.close_reason = st.tracker, "source_silent"
                    prepared.flushed.append(d)
                elif st.tracker.is_open:
                    prepared.closed.append((source, st.tracker.close(source, "source_silent")))
                del self.sources[source]
                evicted[source] = st.partition
                metrics.SOURCES_EVICTED.inc()
                continue
            limit = self.silence_seconds(st)
            if limit is None or quiet < limit:
                continue
            silent += 1
            if st.tracker.is_open:
                event = st.tracker.close(source, "source_silent")
                event["silent_seconds"] = round(quiet, 3)
                prepared.closed.append((source, event))
                closed_states[source] = st.partition
        out = self.finish(prepared, {}, keep_dicts=keep_dicts)
        out.states = self.states(closed_states)
        out.evicted = evicted
        metrics.SOURCES_SILENT.set(silent)
        metrics.SOURCES.set(len(self.sources))
        return out

    def adopt(self, source: str, raw: bytes | None) -> bool:
        """Load a source from its persisted state without waiting for its next message, when
        that state holds an open episode or undecided windows (after a restart or rebalance:
        otherwise a source that stays silent would never be loaded, and its episode never
        closed).  Returns whether it was loaded."""
        if source in self.sources:
            return False
        saved = decode_state(raw) or {}
        if not (saved.get("episode") or {}).get("open") and not (saved.get("pending") or {}).get("n"):
            return False
        route = self.routes.route(source, self.served)
        served = self.served.get(route.model) if route is not None else None
        if served is None:
            return False
        self.sources[source] = self._new_source(route, served, saved)
        return True

    def process(self, messages: Sequence[InMessage], keep_dicts: bool = False) -> Outgoing:
        """All three steps in one call (tests, offline use)."""
        (prepared,) = self.ingest_parts(messages, max_windows=math.inf)  # one part, no window cap
        out = self.finish(prepared, self.score(prepared), keep_dicts=keep_dicts)
        out.states = self.states(prepared.touched)
        return out

    def process_points(self, source: str, ts: Sequence[float] | np.ndarray,
                       values: dict[str, Sequence[float]]) -> tuple[list[dict], list[dict]]:
        """River-style: one source's points in, ``(score records, alert events)`` out, as dicts.

        ``values`` maps channel names to sequences as long as ``ts`` (the batch message form).
        Invalid input raises :class:`~stream_detector.runtime.codec.InvalidMessage`.
        """
        from .codec import encode_points

        st = self.sources.get(source)
        offset = (st.windows.last_offset + 1) if st is not None and st.windows.last_offset is not None else 0
        msg = InMessage(source.encode(), encode_points(list(map(float, ts)), values), "direct", 0, offset)
        out = self.process([msg], keep_dicts=True)
        if out.dead_letters:
            rec = decode_record(out.dead_letters[0][1])
            raise InvalidMessage(rec["reason"], rec["detail"])
        return out.records, out.events


def repository_from_config(cfg: WorkerConfig) -> ModelRepository:
    from .config import ConfigError

    if cfg.model_repository:
        return ModelRepository(root=cfg.model_repository)
    if cfg.model_dir:
        return ModelRepository(single=cfg.model_dir)
    raise ConfigError("config key 'model_repository' (or 'model_dir' for one model): where the models are")
