"""Stream-to-publish latency of recent events (the dashboard's and ``system.stats``'s figure)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hdrh.histogram import HdrHistogram


class LatencyWindow:
    """Stream-to-publish latency of recent events, in milliseconds (HdrHistogram).

    An event's latency is the wall clock when the publisher offered it to
    the local subscribers minus the time in its stream entry id (the
    milliseconds part, set by XADD or the in-process stream). Percentiles
    cover the last ``window`` to ``2 × window`` seconds: two histograms take
    turns, the older one dropped at each turn.

    Args:
        window: seconds per histogram.
        clock: seconds, never going backwards (``time.monotonic``).
    """

    def __init__(self, window: float = 10.0, clock: Any = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._turn = clock() + window
        self._current = HdrHistogram(1, 3_600_000, 2)
        self._previous = HdrHistogram(1, 3_600_000, 2)

    def record(self, entries: Sequence[str], now_ms: float) -> None:
        """Record the events of stream entries ``entries``, published at ``now_ms`` (epoch ms)."""
        self._rotate()
        counts: dict[str, int] = {}
        for entry in entries:
            stamp = entry[: entry.find("-")]
            counts[stamp] = counts.get(stamp, 0) + 1
        now = int(now_ms)
        for stamp, count in counts.items():
            if stamp.isdigit():
                self._current.record_value(min(max(1, now - int(stamp)), 3_600_000), count)

    def percentiles(self, *percentiles: float) -> dict[str, float]:
        """``{"p50": ms, …}`` over the window; zeros when nothing was recorded."""
        self._rotate()
        both = HdrHistogram(1, 3_600_000, 2)
        both.add(self._previous)
        both.add(self._current)
        return {f"p{p:g}": float(both.get_value_at_percentile(p)) for p in percentiles}

    def _rotate(self) -> None:
        now = self._clock()
        if now < self._turn:
            return
        if now >= self._turn + self.window:  # idle for a whole window: both are old
            self._current.reset()
        self._previous, self._current = self._current, self._previous
        self._current.reset()
        self._turn = now + self.window
