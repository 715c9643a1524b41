"""The operators' live dashboard: a snapshot every second on ``system:dashboard``.

:class:`Snapshots` reads the figures the server already keeps (the
supervision tree, the realtime pipeline, the WebSocket gateway, the feed
counters, the JSON-RPC tally) and turns counters into rates over the last
interval. :class:`DashboardReporter` publishes one snapshot per interval on
the operator-only channel :data:`CHANNEL` through this process's publisher
(not through the stream: each process reports itself), so the dashboard
page (``GET /dashboard``, ``protocols/static/``) draws live numbers pushed
over its WebSocket, and backfills its charts with ``history`` (the snapshots
taken while someone watched: none are taken while nobody is subscribed).

Snapshot (JSON object, one per interval)::

    {"at": epoch s, "uptime_seconds", "status": "ok"|"degraded",
     "tree": the health tree (GET /health), dynamic children past 50 summarised,
     "rates": {"events_in", "deliveries_out", "rpc_calls", "feed_builds"} per second,
     "latency_ms": {"p50", "p99", "p99.9"} stream-to-publish, last 10-20 s,
     "ws": {"open", "peak_open", "refused"},
     "feeds": {"live", "builds"},
     "realtime": {"read", "events", "poison", "delivered", "slow_disconnects", "gaps",
                  "missed", "relay_dropped", "subscribers"},
     "rpc": [{"method", "calls_per_second", "mean_ms", "errors"}…] busiest first}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import structlog
import trio

from actors.feeds import FeedCounters
from actors.realtime.pipeline import RealtimeStatistics
from actors.realtime.publisher import Publisher
from observability.health import health_tree, live_feed_builders
from protocols.websocket import GatewayStatistics
from supervisor import SupervisorStatistics

log = structlog.get_logger(__name__)

CHANNEL: Final = "system:dashboard"
MAX_CHILDREN_SHOWN: Final = 50


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the figures come from (each ``None`` when that part is not running)."""

    tree: Callable[[], SupervisorStatistics]
    realtime: Callable[[], RealtimeStatistics] | None = None
    gateway: Callable[[], GatewayStatistics] | None = None
    feeds: FeedCounters | None = None
    rpc_tally: dict[str, tuple[int, float, int]] | None = None


class Snapshots:
    """Takes snapshots; rates are over the time since the previous one.

    Args:
        sources: the figures.
        clock: seconds, never going backwards.
    """

    def __init__(self, sources: Sources, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._sources = sources
        self._clock = clock
        self._started = clock()
        self._last_time = self._started
        self._last: dict[str, float] = {}
        self._last_rpc: dict[str, tuple[int, float, int]] = {}

    def take(self) -> dict[str, Any]:
        """One snapshot (see the module docstring)."""
        s = self._sources
        now = self._clock()
        elapsed = max(now - self._last_time, 1e-9)
        root = s.tree()
        tree = _trim(health_tree(root))
        counters = {"events_in": 0.0, "deliveries_out": 0.0, "feed_builds": 0.0}
        snapshot: dict[str, Any] = {
            "at": time.time(),
            "uptime_seconds": round(now - self._started, 3),
            "status": tree["status"],
            "tree": tree,
        }
        if s.realtime is not None:
            r = s.realtime()
            counters["events_in"] = r.read
            counters["deliveries_out"] = r.delivered
            snapshot["latency_ms"] = r.latency_ms
            snapshot["realtime"] = {
                "read": r.read,
                "events": r.events,
                "poison": r.poison,
                "delivered": r.delivered,
                "slow_disconnects": r.slow_disconnects,
                "gaps": r.gaps,
                "missed": r.missed,
                "relay_dropped": r.relay_dropped,
                "subscribers": r.subscribers,
            }
        if s.gateway is not None:
            g = s.gateway()
            snapshot["ws"] = {"open": g.open, "peak_open": g.peak_open, "refused": g.refused}
        if s.feeds is not None:
            counters["feed_builds"] = s.feeds.builds
            snapshot["feeds"] = {"live": live_feed_builders(root), "builds": s.feeds.builds}
        rates = {
            name: round((value - self._last.get(name, value)) / elapsed, 2)
            for name, value in counters.items()
        }
        rpc, calls = self._rpc(elapsed)
        rates["rpc_calls"] = calls
        snapshot["rates"] = rates
        snapshot["rpc"] = rpc
        self._last, self._last_time = counters, now
        return snapshot

    def _rpc(self, elapsed: float) -> tuple[list[dict[str, Any]], float]:
        tally = dict(self._sources.rpc_tally or {})
        rows: list[dict[str, Any]] = []
        total = 0
        for method, (calls, seconds, errors) in tally.items():
            before = self._last_rpc.get(method, (calls, seconds, errors))
            new_calls = calls - before[0]
            total += new_calls
            rows.append(
                {
                    "method": method,
                    "calls_per_second": round(new_calls / elapsed, 2),
                    "mean_ms": round(1000 * (seconds - before[1]) / new_calls, 3)
                    if new_calls
                    else None,
                    "errors": errors,
                    "calls": calls,
                }
            )
        self._last_rpc = tally
        rows.sort(
            key=lambda row: (-float(row["calls_per_second"]), -int(row["calls"]), row["method"])
        )
        return rows, round(total / elapsed, 2)


def _trim(node: dict[str, Any]) -> dict[str, Any]:
    """The tree with every child list past :data:`MAX_CHILDREN_SHOWN` cut (``more``: how many)."""
    children = node.get("children")
    if children is None:
        return node
    shown = [_trim(child) for child in children[:MAX_CHILDREN_SHOWN]]
    trimmed = {**node, "children": shown}
    if len(children) > MAX_CHILDREN_SHOWN:
        trimmed["more"] = len(children) - MAX_CHILDREN_SHOWN
    return trimmed


@dataclass(frozen=True, slots=True)
class ReporterStatistics:
    """Snapshots published so far."""

    name: str
    state: str
    published: int


class DashboardReporter:
    """Publishes a snapshot on :data:`CHANNEL` every ``interval`` seconds while a session
    of this process is subscribed to it.

    Args:
        publisher: this process's publisher (its ``system:`` channel).
        snapshots: takes the snapshots.
        interval: seconds between snapshots.
    """

    name = "dashboard"

    def __init__(
        self, publisher: Publisher, snapshots: Snapshots, *, interval: float = 1.0
    ) -> None:
        self._publisher = publisher
        self._snapshots = snapshots
        self.interval = interval
        self._scope = trio.CancelScope()
        self._state = "new"
        self.published = 0

    async def run(
        self, *, task_status: trio.TaskStatus[DashboardReporter] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Report ready, then publish until stopped."""
        self._scope = trio.CancelScope()
        self._state = "running"
        task_status.started(self)
        with self._scope:
            while True:
                # Nobody watching: no snapshot (walking a tree of thousands of feed
                # builders each second is not free); the next one's rates span the gap.
                if self._publisher.subscribers(CHANNEL):
                    self._publisher.publish(CHANNEL, msgspec.json.encode(self._snapshots.take()))
                    self.published += 1
                await trio.sleep(self.interval)
        self._state = "stopped"

    def request_stop(self) -> None:
        """Stop publishing."""
        self._state = "stopping"
        self._scope.cancel()

    def statistics(self) -> ReporterStatistics:
        """A snapshot of the figures."""
        return ReporterStatistics(self.name, self._state, self.published)
