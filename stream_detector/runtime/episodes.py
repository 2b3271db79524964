"""Alert episodes: one alert per stretch of anomalous windows, not one per window.

An episode opens at the first window whose score reaches the threshold and closes when
scores have stayed below the lower release level for ``quiet_seconds`` (0: at the first
such window).  Two levels keep an episode from flapping when the score hovers around the
threshold.  The closing event carries the span, the peak score and the channels whose
residuals contributed most over the episode: the first thing an operator asks is *what*
is wrong.

Episode ids are derived from the source and the first window's end timestamp, so a
window replayed after a worker restart re-creates the same id instead of a second alert.
The tracker's per-source state is a small plain dict, persisted by the worker with the
window buffer.
"""

from __future__ import annotations

import numpy as np


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

    def _top(self) -> list[dict]:
        sums = np.asarray(self.state["channel_sum"])
        order = np.argsort(-sums)[: self.top_k]
        total = float(sums.sum()) or 1.0
        return [{"channel": self.channels[i], "share": round(float(sums[i]) / total, 4)} for i in order]

    def _event(self, kind: str, source: str) -> dict:
        s = self.state
        return {"event": kind, "source": source, "episode_id": s["id"], "start": s["start"], "end": s["end"],
                "peak_score": s["peak"], "threshold": s.get("threshold", self.threshold), "windows": s["windows"],
                "top_channels": self._top()}

    def update(self, source: str, start_ts: float, end_ts: float, score: float,
               channel_scores: np.ndarray, flag: bool | None = None, threshold: float | None = None) -> list[dict]:
        """Feed one scored window; returns the alert events (``opened`` / ``closed``) it causes.

        ``flag`` None: the static rule (open at ``threshold``, hold while at or above ``release``).
        ``flag`` True/False: an adaptive procedure has decided the window (it opens and holds an
        episode exactly while it flags), and ``threshold`` is the level in force, reported in the
        ``opened`` event.
        """
        s, events = self.state, []
        opens = score >= self.threshold if flag is None else flag
        holds = score >= self.release if flag is None else flag
        if not s.get("open"):
            if opens:
                s.update(open=True, id=f"{source}@{end_ts:.6f}", start=float(start_ts), end=float(end_ts),
                         peak=float(score), windows=1, channel_sum=[float(v) for v in channel_scores],
                         below_since=None, threshold=float(self.threshold if threshold is None else threshold))
                events.append(self._event("opened", source))
            return events
        if holds:
            s["below_since"] = None
            s["end"] = float(end_ts)
            s["peak"] = max(s["peak"], float(score))
            s["windows"] += 1
            s["channel_sum"] = [a + float(b) for a, b in zip(s["channel_sum"], channel_scores)]
            return events
        if s.get("below_since") is None:
            s["below_since"] = float(end_ts)
        if end_ts - s["below_since"] >= self.quiet_seconds:
            events.append(self._event("closed", source))
            self.state = {}
        return events

    def close(self, source: str, reason: str) -> dict:
        """Close the open episode now, whatever the scores (e.g. the model's channels changed)."""
        event = self._event("closed", source)
        event["reason"] = reason
        self.state = {}
        return event


