"""Log hygiene for long outages.

While the broker is unreachable, aiokafka logs every failed connection, metadata request,
heartbeat and fetch: about 100 ERROR lines a second, measured through a cut link
(tests/test_outage.py), which buries everything else and fills disks on a long outage.
:func:`quiet_repeats` lets the first occurrence of each message through and then at most one
per ``every`` seconds, saying how many like it were held back.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["RepeatFilter", "quiet_repeats"]


class RepeatFilter(logging.Filter):
    """Passes a record whose (logger, level, message template) was not seen in the last
    ``every`` seconds; counts the others and reports the count on the next one passed."""

    def __init__(self, every: float = 10.0, clock=time.monotonic) -> None:
        super().__init__()
        self.every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple, list] = {}  # key -> [last passed at, suppressed since]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.every:
                entry[1] += 1
                return False
            held = entry[1] if entry is not None else 0
            self._seen[key] = [now, 0]
            if len(self._seen) > 10_000:  # templates are few; messages with ids inlined are not
                self._seen.clear()
        if held:  # the note has no '%', so it is safe with and without ``record.args``
            record.msg = f"{record.msg} [{held} like it held back in the last {self.every:g} s]"
        return True


def quiet_repeats(prefix: str = "aiokafka", every: float = 10.0) -> RepeatFilter:
    """Install one :class:`RepeatFilter` on ``prefix``'s logger and every logger under it that
    exists now (a filter on a logger does not see its children's records)."""
    flt = RepeatFilter(every)
    names = [prefix] + [n for n in logging.root.manager.loggerDict if n.startswith(prefix + ".")]
    for name in names:
        logging.getLogger(name).addFilter(flt)
    return flt
