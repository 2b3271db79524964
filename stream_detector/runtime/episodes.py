"""Alert episodes: one alert per stretch of anomalous windows, not one per window.

An episode opens at the first window whose score reaches the threshold and closes when
scores have stayed below the lower release level for ``quiet_seconds`` (0: at the first
such window).  Two levels keep an episode from flapping when the score hovers around the
threshold.  The closing event carries the span, the peak score and the channels whose
residuals contributed most over the episode: the first thing an operator asks is *what*
is wrong.  For graphs with ``cell_scores`` both events also carry the episode's top
(channel, time) cells, the highest of its windows' peak cells: *where and when*.

Episode ids are derived from the source and the first window's end timestamp, so a
window replayed after a worker restart re-creates the same id instead of a second alert.
The tracker's per-source state is a small plain dict, persisted by the worker with the
window buffer.
"""

from __future__ import annotations

import numpy as np

from .publishing import AlertEvent, TopCell, TopChannel, alert_event


def static_rule(score: float, threshold: float, release: float) -> tuple[bool, bool]:
    """The static threshold's episode rule: ``(opens, holds)`` for one window's score.  An
    episode opens at a score at or above ``threshold`` and stays open while scores stay at or
    above ``release`` (callers clip it to ``threshold`` once, not per window).  The worker's
    tracker and the offline :func:`hysteresis_flags` both decide with it."""
    return score >= threshold, score >= release


def hysteresis_flags(scores: np.ndarray, threshold: float, release: float) -> np.ndarray:
    """Windows inside alert episodes as the worker forms them (static threshold, no quiet
    time): the offline form of :class:`EpisodeTracker`'s rule.  NaN scores count as below.

    >>> hysteresis_flags(np.array([0.1, 0.9, 0.6, 0.4, 0.6]), threshold=0.8, release=0.5).tolist()
    [False, True, True, False, False]
    """
    flags = np.zeros(len(scores), dtype=bool)
    open_, release = False, min(release, threshold)
    for i, v in enumerate(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)):
        opens, holds = static_rule(v, threshold, release)
        open_ = opens or (open_ and holds)
        flags[i] = open_
    return flags


class EpisodeTracker:
    """Opens and closes alert episodes for one source from its window scores."""

    def __init__(self, threshold: float, release: float, channels: list[str], quiet_seconds: float = 0.0,
                 top_k: int = 3, state: dict | None = None):
        self.threshold, self.release = float(threshold), float(min(release, threshold))
        self.channels, self.quiet_seconds, self.top_k = channels, float(quiet_seconds), int(top_k)
        self.state: dict = state if state is not None else {}

    @property
    def is_open(self) -> bool:
        return bool(self.state.get("open"))

    def _top(self) -> list[TopChannel]:
        sums = np.asarray(self.state["channel_sum"])
        order = np.argsort(-sums)[: self.top_k]
        total = float(sums.sum()) or 1.0
        return [{"channel": self.channels[i], "share": round(float(sums[i]) / total, 4)} for i in order]

    def _cells(self) -> list[TopCell]:
        return [{"channel": self.channels[int(c)], "ts": float(t), "score": round(float(v), 6)}
                for t, c, v in self.state.get("cells", [])]

    def _add_cell(self, peak) -> None:
        """Keep the ``top_k`` highest peak cells of the episode, one entry per (channel, time):
        overlapping windows see the same point, each with its own value; the highest counts."""
        if peak is None or not np.isfinite(peak[0]):
            return
        t, c, v = float(peak[0]), int(peak[1]), float(peak[2])
        cells = self.state.setdefault("cells", [])
        for cell in cells:
            if cell[0] == t and cell[1] == c:
                cell[2] = max(cell[2], v)
                break
        else:
            cells.append([t, c, v])
        cells.sort(key=lambda cell: -cell[2])
        del cells[self.top_k:]

    def _event(self, kind: str, source: str) -> AlertEvent:
        return alert_event(kind, source, self.state, self.state.get("threshold", self.threshold), self._top(),
                           self._cells())

    def update(self, source: str, start_ts: float, end_ts: float, score: float,
               channel_scores: np.ndarray, flag: bool | None = None, threshold: float | None = None,
               peak=None) -> list[AlertEvent]:
        """Feed one scored window; returns the alert events (``opened`` / ``closed``) it causes.

        ``peak``: the window's peak cell as (timestamp, channel index, value); None or NaN
        when the graph has no ``cell_scores``.

        ``flag`` None: the static rule (open at ``threshold``, hold while at or above ``release``).
        ``flag`` True/False: an adaptive procedure has decided the window (it opens and holds an
        episode exactly while it flags), and ``threshold`` is the level in force, reported in the
        ``opened`` event.
        """
        s, events = self.state, []
        if flag is None:
            opens, holds = static_rule(score, self.threshold, self.release)
        else:
            opens = holds = flag
        if not s.get("open"):
            if opens:
                s.update(open=True, id=f"{source}@{end_ts:.6f}", start=float(start_ts), end=float(end_ts),
                         peak=float(score), windows=1, channel_sum=[float(v) for v in channel_scores],
                         below_since=None, threshold=float(self.threshold if threshold is None else threshold),
                         cells=[])
                self._add_cell(peak)
                events.append(self._event("opened", source))
            return events
        if holds:
            s["below_since"] = None
            s["end"] = float(end_ts)
            s["peak"] = max(s["peak"], float(score))
            s["windows"] += 1
            s["channel_sum"] = [a + float(b) for a, b in zip(s["channel_sum"], channel_scores)]
            self._add_cell(peak)
            return events
        if s.get("below_since") is None:
            s["below_since"] = float(end_ts)
        if end_ts - s["below_since"] >= self.quiet_seconds:
            events.append(self._event("closed", source))
            self.state = {}
        return events

    def close(self, source: str, reason: str) -> AlertEvent:
        """Close the open episode now, whatever the scores (e.g. the model's channels changed)."""
        event = self._event("closed", source)
        event["reason"] = reason
        self.state = {}
        return event


