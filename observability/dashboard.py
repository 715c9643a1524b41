"""The operators' live dashboard: figures every second, snapshots on ``system:dashboard``.

:class:`Snapshots` reads the figures the server already keeps (the
supervision tree, the realtime pipeline, the WebSocket gateway, the feed
counters, the JSON-RPC tally) and turns counters into rates over the last
interval. :class:`DashboardReporter` publishes through this process's
publisher (not through the stream: each process reports itself) on two
operator-only channels, which the dashboard page (``GET /dashboard``,
``protocols/static/dashboard.js``) and ``starling status`` read over ``/ws``:

- :data:`CHANNEL` (``system:dashboard``): a whole snapshot every ``interval``
  while a session of this process is subscribed, and one at once (within
  ``poll`` seconds) when another subscribes, so a new page paints without
  waiting for the next tick.
- :data:`SERIES_CHANNEL` (``system:dashboard.series``): the chart points, one
  per interval *whether or not anyone watches*, published ``batch`` at a time.

Why the backfill is a channel of points rather than the snapshots' own history:
the charts need a few numbers a second, while a snapshot carries the tree
(measured on the demo world: 4 KiB idle, 14 KiB with 1,000 live feed
builders, whose walk then takes 16 ms). Taking snapshots with nobody watching
would cost that every second for nothing, and a ``history`` of 100 of them
(1.4 MiB) would not fit a connection's 1 MiB outbox (close 4008). A point
needs no tree walk and is about 150 bytes, so the reporter takes one every
interval, always; batching them makes the channel's history
(``--history-size`` publications, 100 by default) cover 100 × ``batch``
intervals (over 8 minutes at 5 × 1 s) in about 75 KiB. The publisher already
keeps, numbers and serves that history (``history``, ``subscribe`` with
``since``), so no new request or route is needed: a new viewer asks
``history`` of :data:`SERIES_CHANNEL`, subscribes to it ``since`` the
position that answer gave (no batch lost in between), then to
:data:`CHANNEL`, whose snapshots carry the points not yet batched. Merged by
``at``, that is every point of the last minutes, none missing or twice.
The history lives in the publisher, so it survives a restart of this actor
(not of the process); it is lost only if the channel is evicted from the
publisher's registry (10,000 channels, least recently used first), and then
the charts start from the next points. A new viewer is noticed by its
channel's subscriber count growing between two looks: one that leaves while
another arrives within the same ``poll`` waits for the next interval.

Chart point (JSON object, one per interval)::

    {"at": epoch s, "events_in", "deliveries_out", "rpc_calls", "feed_builds": per second,
     "p50", "p99", "p99.9": stream-to-publish latency in ms, "ws_open": connections}

Series publication: ``{"points": [point…]}``, oldest first, ``batch`` points.

Snapshot (JSON object)::

    {"at": epoch s, "uptime_seconds", "status": "ok"|"degraded",
     "tree": the health tree (GET /health), dynamic children past 50 summarised,
     "rates": {"events_in", "deliveries_out", "rpc_calls", "feed_builds"} per second,
     "latency_ms": {"p50", "p99", "p99.9"} stream-to-publish, last 10-20 s,
     "ws": {"open", "peak_open", "refused"},
     "feeds": {"live", "builds"},
     "realtime": {"read", "events", "poison", "delivered", "slow_disconnects", "gaps",
                  "missed", "relay_dropped", "subscribers"},
     "presence": {"sets", "joins", "leaves"}: channels with presence subscribers here,
                 join and leave pushes queued to them since start,
     "subscriptions": {kind: n}: this process's subscriptions per channel kind
                      (post, user, following, circle, system),
     "pushes": {"pub", "gap", "unsubscribed", "join", "leave", "feed.stale"} per second:
               publications queued to sessions, gap notices (per channel), subscriptions
               the server ended, presence pushes, feed.stale notices appended here,
     "rpc": [{"method", "calls_per_second", "mean_ms", "errors", "calls"}…] busiest first,
     "points": [point…] the points not yet on the series channel, oldest first,
               the last one this snapshot's own}

A snapshot published at once for a new viewer repeats the last interval's
figures (``at`` included) with a fresh tree: rates stay per whole interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec
import structlog
import trio

from actors.feeds import FeedCounters
from actors.realtime.pipeline import RealtimeStatistics
from actors.realtime.publisher import Publisher
from observability.health import health_tree, live_feed_builders
from supervisor import SupervisorStatistics

log = structlog.get_logger(__name__)

CHANNEL: Final = "system:dashboard"
"""Whole snapshots, while someone of this process watches."""
SERIES_CHANNEL: Final = "system:dashboard.series"
"""Chart points in batches, always: what a new viewer backfills its charts from."""
MAX_CHILDREN_SHOWN: Final = 50


class GatewayFigures(Protocol):
    """What a snapshot reads of the WebSocket gateway's statistics.

    ``protocols.websocket.GatewayStatistics`` has these fields: the views sit
    below the wire (``protocols.app`` serves them), so they name the figures
    they read instead of importing it.
    """

    @property
    def open(self) -> int:
        """Connections being served now."""
        ...

    @property
    def peak_open(self) -> int:
        """The most ever served at once."""
        ...

    @property
    def refused(self) -> int:
        """Connections refused because the limit was reached."""
        ...


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the figures come from (each ``None`` when that part is not running)."""

    tree: Callable[[], SupervisorStatistics]
    realtime: Callable[[], RealtimeStatistics] | None = None
    gateway: Callable[[], GatewayFigures] | None = None
    feeds: FeedCounters | None = None
    rpc_tally: dict[str, tuple[int, float, int]] | None = None


class Snapshots:
    """Takes figures and snapshots; rates are over the time since the previous figures.

    Args:
        sources: the figures.
        clock: seconds, never going backwards (rates, uptime).
        wall_clock: epoch seconds (``at``).
    """

    def __init__(
        self,
        sources: Sources,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._sources = sources
        self._clock = clock
        self._wall_clock = wall_clock
        self._started = clock()
        self._last_time = self._started
        self._last: dict[str, float] = {}
        self._last_rpc: dict[str, tuple[int, float, int]] = {}
        self._last_pushes: dict[str, int] = {}

    def figures(self) -> dict[str, Any]:
        """A snapshot without the tree: cheap (no walk of the tree), and the rates' new start.

        Returns:
            The snapshot's ``at``, ``uptime_seconds``, ``rates``, ``latency_ms``,
            ``ws``, ``feeds`` (``builds`` only), ``realtime`` and ``rpc`` (see the
            module docstring); rates are per second since the previous call.
        """
        s = self._sources
        now = self._clock()
        elapsed = max(now - self._last_time, 1e-9)
        counters = {"events_in": 0.0, "deliveries_out": 0.0, "feed_builds": 0.0}
        figures: dict[str, Any] = {
            "at": self._wall_clock(),
            "uptime_seconds": round(now - self._started, 3),
        }
        if s.realtime is not None:
            r = s.realtime()
            counters["events_in"] = r.read
            counters["deliveries_out"] = r.delivered
            figures["latency_ms"] = r.latency_ms
            figures["realtime"] = {
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
            figures["presence"] = {
                "sets": r.presence_sets,
                "joins": r.presence_joins,
                "leaves": r.presence_leaves,
            }
            figures["subscriptions"] = r.subscriptions_by_kind
            pushes = {
                "pub": r.delivered,
                "gap": r.gaps,
                "unsubscribed": r.unsubscribed,
                "join": r.presence_joins,
                "leave": r.presence_leaves,
                "feed.stale": r.feed_stale,
            }
            figures["pushes"] = {
                kind: round((count - self._last_pushes.get(kind, count)) / elapsed, 2)
                for kind, count in pushes.items()
            }
            self._last_pushes = pushes
        if s.gateway is not None:
            g = s.gateway()
            figures["ws"] = {"open": g.open, "peak_open": g.peak_open, "refused": g.refused}
        if s.feeds is not None:
            counters["feed_builds"] = s.feeds.builds
            figures["feeds"] = {"builds": s.feeds.builds}
        rates = {
            name: round((value - self._last.get(name, value)) / elapsed, 2)
            for name, value in counters.items()
        }
        rpc, calls = self._rpc(elapsed)
        rates["rpc_calls"] = calls
        figures["rates"] = rates
        figures["rpc"] = rpc
        self._last, self._last_time = counters, now
        return figures

    def snapshot(self, figures: dict[str, Any]) -> dict[str, Any]:
        """``figures`` with the tree, the status and the live feed builders (walks the tree).

        Args:
            figures: from :meth:`figures`; not changed.
        """
        root = self._sources.tree()
        tree = _trim(health_tree(root))
        snapshot = {**figures, "status": tree["status"], "tree": tree}
        if "feeds" in figures:
            snapshot["feeds"] = {"live": live_feed_builders(root), **figures["feeds"]}
        return snapshot

    def take(self) -> dict[str, Any]:
        """One whole snapshot (see the module docstring), the rates' new start."""
        return self.snapshot(self.figures())

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


def chart_point(figures: dict[str, Any]) -> dict[str, float]:
    """What the charts draw of ``figures`` (:meth:`Snapshots.figures`): a point of the module
    docstring's shape; absent parts count 0."""
    latency = figures.get("latency_ms") or {}
    return {
        "at": figures["at"],
        **figures["rates"],
        "p50": latency.get("p50", 0.0),
        "p99": latency.get("p99", 0.0),
        "p99.9": latency.get("p99.9", 0.0),
        "ws_open": (figures.get("ws") or {}).get("open", 0),
    }


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
    """Snapshots and chart points published so far."""

    name: str
    state: str
    published: int
    """Snapshots published on :data:`CHANNEL`."""
    points: int
    """Chart points taken (published on :data:`SERIES_CHANNEL` in batches)."""


class DashboardReporter:
    """Takes a chart point every ``interval`` and publishes the dashboard's two channels
    (module docstring).

    Costs: per interval one :meth:`Snapshots.figures` (no tree walk) whether or not
    anyone watches, plus one tree walk and one encoded snapshot while someone does;
    per ``poll`` one look at the subscriber count (a dict lookup).

    Args:
        publisher: this process's publisher (its ``system:`` channels).
        snapshots: takes the figures and snapshots.
        interval: seconds between chart points (and snapshots).
        batch: chart points per publication on :data:`SERIES_CHANNEL`.
        poll: seconds between looks for a new viewer of :data:`CHANNEL`.

    Raises:
        ValueError: ``interval`` not positive, ``batch`` < 1, or ``poll`` not in
            (0, ``interval``].
    """

    name = "dashboard"

    def __init__(
        self,
        publisher: Publisher,
        snapshots: Snapshots,
        *,
        interval: float = 1.0,
        batch: int = 5,
        poll: float = 0.1,
    ) -> None:
        if not interval > 0 or batch < 1 or not 0 < poll <= interval:
            raise ValueError(
                f"need interval > 0, batch >= 1 and 0 < poll <= interval;"
                f" got {interval!r}, {batch!r}, {poll!r}"
            )
        self._publisher = publisher
        self._snapshots = snapshots
        self.interval = interval
        self.batch = batch
        self.poll = poll
        self._scope = trio.CancelScope()
        self._state = "new"
        self._figures: dict[str, Any] | None = None
        self._pending: list[dict[str, float]] = []
        self._watchers = 0
        self.published = 0
        self.points = 0

    async def run(
        self, *, task_status: trio.TaskStatus[DashboardReporter] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Report ready, then take a point every interval until stopped, the first at once."""
        self._scope = trio.CancelScope()
        self._state = "running"
        task_status.started(self)
        with self._scope:
            next_tick = trio.current_time()
            while True:
                now = trio.current_time()
                watchers = self._publisher.subscribers(CHANNEL)
                if now >= next_tick:
                    self._tick(watchers)
                    next_tick += self.interval
                    if next_tick <= now:  # fell behind (a long stall): no burst of ticks
                        next_tick = now + self.interval
                elif watchers > self._watchers and self._figures is not None:
                    self._publish_snapshot(self._figures)  # a new viewer: paint it now
                self._watchers = watchers
                await trio.sleep_until(min(next_tick, now + self.poll))
        self._state = "stopped"

    def _tick(self, watchers: int) -> None:
        """One interval: a chart point always, a snapshot if watched, a batch when full."""
        self._figures = self._snapshots.figures()
        self._pending.append(chart_point(self._figures))
        self.points += 1
        if watchers:
            self._publish_snapshot(self._figures)
        if len(self._pending) >= self.batch:
            self._publisher.publish(SERIES_CHANNEL, msgspec.json.encode({"points": self._pending}))
            self._pending = []

    def _publish_snapshot(self, figures: dict[str, Any]) -> None:
        snapshot = self._snapshots.snapshot(figures)
        snapshot["points"] = self._pending
        self._publisher.publish(CHANNEL, msgspec.json.encode(snapshot))
        self.published += 1

    def request_stop(self) -> None:
        """Stop publishing."""
        self._state = "stopping"
        self._scope.cancel()

    def statistics(self) -> ReporterStatistics:
        """A snapshot of the figures."""
        return ReporterStatistics(self.name, self._state, self.published, self.points)
