"""``python -m faulty_worker worker --config F``: the real worker CLI with faults injected into
the Faust-free core, for tests/test_agent_faults.py (test code, never imported by the package).

- a step that scores windows of the source ``poison`` raises ``RuntimeError`` (a bug on
  some input);
- the first step that writes the state of the source ``flaky`` raises ``ConnectionResetError``
  after its records have been published and acknowledged (a broker error at the worst moment);
- with ``SLOW_SEEK=SECONDS`` in the environment, seeking to the committed offsets after an
  assignment returns that much later, while the fetcher runs; with ``SLOW_SCORE=SECONDS``,
  every scoring call takes that much longer (as on a loaded machine, both).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from faust.transport.drivers import aiokafka as faust_aiokafka

from stream_detector.runtime import detector as core
from stream_detector.cli import main

_score, _states = core.Detector.score, core.Detector.states
_failed = []


def score(self, prepared):
    if any("poison" in g.sources for g in prepared.groups.values()):
        raise RuntimeError("injected fault")
    if os.environ.get("SLOW_SCORE"):
        time.sleep(float(os.environ["SLOW_SCORE"]))
    return _score(self, prepared)


def states(self, touched):
    if "flaky" in touched and not _failed:
        _failed.append(True)
        raise ConnectionResetError("injected: connection reset while writing the state")
    return _states(self, touched)


core.Detector.score, core.Detector.states = score, states

if os.environ.get("SLOW_SEEK"):
    _seek_to_committed = faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed

    async def slow_seek_to_committed(self):
        offsets = await _seek_to_committed(self)
        await asyncio.sleep(float(os.environ["SLOW_SEEK"]))  # fetches land between the seek and the resume
        return offsets

    faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed = slow_seek_to_committed

if __name__ == "__main__":
    sys.exit(main())
