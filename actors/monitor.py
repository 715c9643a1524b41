"""Backend monitors: workers that health-check a backend and crash when it is gone.

A monitor pings its backend at start (a failed ping fails the start) and
then every ``interval`` seconds; a failed ping raises, so the ``stores``
supervisor restarts it with backoff and ``/health`` shows the backend
degraded until it answers again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class MonitorStatistics:
    """A monitor's figures.

    Attributes:
        backend: what it watches, e.g. ``"ladybug:///data/graph"``.
        pings: successful pings since the monitor object was made.
        last_ping_ms: round trip of the last successful ping, in milliseconds.
    """

    backend: str
    pings: int
    last_ping_ms: float | None


class BackendMonitor:
    """Pings one backend periodically.

    Args:
        backend: a label for health output (a URL without credentials).
        ping: raises when the backend does not answer (bounded by the adapter's timeouts).
        interval: seconds between pings.
    """

    def __init__(
        self, backend: str, ping: Callable[[], Awaitable[None]], *, interval: float = 5 * SECONDS
    ) -> None:
        self.backend = backend
        self._ping = ping
        self.interval = interval
        self._pings = 0
        self._last_ms: float | None = None
        self._stop = trio.Event()

    async def _check(self) -> None:
        started = trio.current_time()
        await self._ping()
        self._last_ms = round((trio.current_time() - started) * 1000, 3)
        self._pings += 1

    async def run(
        self, *, task_status: trio.TaskStatus[BackendMonitor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Ping once, report ready, then ping every ``interval`` until stopped.

        Raises:
            stores.errors.StoreError: a ping failed.
        """
        self._stop = trio.Event()
        await self._check()
        task_status.started(self)
        while not self._stop.is_set():
            with trio.move_on_after(self.interval):
                await self._stop.wait()
            if not self._stop.is_set():
                await self._check()

    def request_stop(self) -> None:
        """Stop after the current ping."""
        self._stop.set()

    def statistics(self) -> MonitorStatistics:
        """The monitor's figures."""
        return MonitorStatistics(self.backend, self._pings, self._last_ms)
