"""Prometheus metrics: RPC calls and latency, and the supervision tree read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.feeds import FeedCounters
from actors.realtime.pipeline import RealtimeStatistics
from observability.health import live_feed_builders
from supervisor import SupervisorStatistics

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class TreeCollector(Collector):
    """Reads ``statistics()`` of the root supervisor at each scrape."""

    def __init__(self, tree: Callable[[], SupervisorStatistics]) -> None:
        self._tree = tree

    def collect(self) -> Iterator[Metric]:
        root = self._tree()
        restarts = CounterMetricFamily(
            "starling_child_restarts", "Restarts of a supervised child.", labels=["path"]
        )
        up = GaugeMetricFamily(
            "starling_child_up", "1 when the child is running, else 0.", labels=["path"]
        )
        used = GaugeMetricFamily(
            "starling_mailbox_used", "Messages waiting in an actor's mailbox.", labels=["path"]
        )
        peak = GaugeMetricFamily(
            "starling_mailbox_peak", "Most messages ever waiting in a mailbox.", labels=["path"]
        )
        window = GaugeMetricFamily(
            "starling_supervisor_restarts_in_window",
            "Restarts counted against a supervisor's intensity now.",
            labels=["path"],
        )
        window.add_metric([root.id], root.restarts_in_window)
        for path, child in root.walk(root.id):
            restarts.add_metric([path], child.restarts)
            up.add_metric([path], 1.0 if child.state == "running" else 0.0)
            if isinstance(child.detail, SupervisorStatistics):
                window.add_metric([path], child.detail.restarts_in_window)
            mailbox_used = getattr(child.detail, "mailbox_used", None)
            if mailbox_used is not None:
                used.add_metric([path], mailbox_used)
                peak.add_metric([path], child.detail.mailbox_peak)
        healthy = GaugeMetricFamily("starling_healthy", "1 when every permanent child runs.")
        healthy.add_metric([], 1.0 if root.is_healthy() else 0.0)
        yield from (restarts, up, used, peak, window, healthy)


class FeedCollector(Collector):
    """Reads the feed builders' shared :class:`~actors.feeds.FeedCounters` at each scrape."""

    def __init__(self, counters: FeedCounters, tree: Callable[[], SupervisorStatistics]) -> None:
        self._counters = counters
        self._tree = tree

    def collect(self) -> Iterator[Metric]:
        c = self._counters
        builds = CounterMetricFamily(
            "starling_feed_builds", "Feed rankings, by outcome.", labels=["outcome"]
        )
        builds.add_metric(["ok"], c.builds)
        builds.add_metric(["failed"], c.build_failures)
        reads = CounterMetricFamily(
            "starling_feed_reads", "feed.get pages, by how they were served.", labels=["served"]
        )
        reads.add_metric(["cached"], c.reads_cached)
        reads.add_metric(["built"], c.reads_built)
        waited = CounterMetricFamily(
            "starling_feed_single_flight_waits", "First pages that waited for a running build."
        )
        waited.add_metric([], c.waited)
        dropped = CounterMetricFamily(
            "starling_feed_validation_dropped", "Stale stories skipped by validation on read."
        )
        dropped.add_metric([], c.dropped)
        cache_errors = CounterMetricFamily(
            "starling_feed_cache_errors", "Feed cache reads or writes that failed."
        )
        cache_errors.add_metric([], c.cache_errors)
        steps = CounterMetricFamily(
            "starling_feed_step_seconds",
            "Seconds spent in each pipeline step, over all builds.",
            labels=["step"],
        )
        for step, ms in sorted(c.step_ms.items()):
            steps.add_metric([step], ms / 1000)
        live = GaugeMetricFamily("starling_feed_builders_live", "Feed builder actors running.")
        live.add_metric([], live_feed_builders(self._tree()))
        yield from (builds, reads, waited, dropped, cache_errors, steps, live)


class RealtimeCollector(Collector):
    """Reads the realtime pipeline's and the WebSocket gateway's figures at each scrape.

    Args:
        realtime: the pipeline's statistics (:meth:`actors.realtime.pipeline.Realtime.statistics`).
        connections: open WebSocket connections now, and refused ones so far.
    """

    def __init__(
        self,
        realtime: Callable[[], RealtimeStatistics],
        connections: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self._realtime = realtime
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        r = self._realtime()
        counters = {
            "starling_realtime_read": ("Stream entries read by this process's nozzle.", r.read),
            "starling_realtime_reclaimed": ("Pending entries reclaimed.", r.reclaimed),
            "starling_realtime_events": ("Valid events transformed here.", r.events),
            "starling_realtime_poison": ("Invalid events acknowledged and dropped.", r.poison),
            "starling_realtime_published": ("Events put into this process's histories.",
                                            r.published),
            "starling_realtime_deliveries": ("Publications accepted by local sessions.",
                                             r.delivered),
            "starling_realtime_slow_disconnects": ("Sessions closed 4008 (outbox full).",
                                                   r.slow_disconnects),
            "starling_realtime_reorder_gaps": ("Offset gaps skipped after the reorder wait.",
                                               r.reorder_gaps),
            "starling_realtime_gaps": ("Gaps subscribers were told of (gap notices).", r.gaps),
            "starling_realtime_missed": ("Publications lost before this process got them.",
                                         r.missed),
            "starling_realtime_relay_dropped": ("Pub/Sub batches the relay's buffer dropped.",
                                                r.relay_dropped),
        }  # fmt: skip
        for name, (help_text, value) in counters.items():
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family
        subscriptions = GaugeMetricFamily(
            "starling_realtime_subscriptions", "Local (session, channel) subscriptions."
        )
        subscriptions.add_metric([], r.subscribers)
        latency = GaugeMetricFamily(
            "starling_realtime_latency_ms",
            "Stream-to-publish latency over the last 10-20 s, milliseconds.",
            labels=["quantile"],
        )
        for quantile, ms in r.latency_ms.items():
            latency.add_metric([quantile], ms)
        yield from (subscriptions, latency)
        if self._connections is not None:
            open_now, refused = self._connections()
            connections = GaugeMetricFamily(
                "starling_ws_connections", "WebSocket connections open now."
            )
            connections.add_metric([], open_now)
            refused_total = CounterMetricFamily(
                "starling_ws_refused", "WebSocket connections closed 1013 (over the limit)."
            )
            refused_total.add_metric([], refused)
            yield from (connections, refused_total)


class RateLimitCollector(Collector):
    """Reads the rate limiter's figures at each scrape (:mod:`protocols.ratelimit`).

    Args:
        figures: requests refused over a rate since start, and buckets kept now (per
            token and per client address).
    """

    def __init__(self, figures: Callable[[], tuple[int, int]]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        limited, buckets = self._figures()
        refused = CounterMetricFamily(
            "starling_rate_limited", "Requests refused over a rate limit (/ws and /rpc)."
        )
        refused.add_metric([], limited)
        kept = GaugeMetricFamily(
            "starling_rate_limit_buckets", "Per-token and per-address rate-limit buckets kept."
        )
        kept.add_metric([], buckets)
        yield from (refused, kept)


class Metrics:
    """A registry of Starling's metrics (one per app, so tests do not share state)."""

    def __init__(
        self,
        tree: Callable[[], SupervisorStatistics],
        feeds: FeedCounters | None = None,
        realtime: RealtimeCollector | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.rpc_tally: dict[str, tuple[int, float, int]] = {}
        """method → (calls, seconds, calls not ok), since start (the dashboard's rates)."""
        self.rpc_calls = Counter(
            "starling_rpc_calls",
            "JSON-RPC calls by method and outcome (ok, app_error, error).",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.rpc_latency = Histogram(
            "starling_rpc_latency_seconds",
            "JSON-RPC handler latency in seconds.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_rejected = Counter(
            "starling_http_rejected",
            "HTTP requests refused before dispatch, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(TreeCollector(tree))
        if feeds is not None:
            self.registry.register(FeedCollector(feeds, tree))
        if realtime is not None:
            self.registry.register(realtime)

    def observe_call(self, method: str, seconds: float, outcome: str) -> None:
        """Record one JSON-RPC call."""
        self.rpc_calls.labels(method, outcome).inc()
        self.rpc_latency.labels(method).observe(seconds)
        calls, total, errors = self.rpc_tally.get(method, (0, 0.0, 0))
        self.rpc_tally[method] = (calls + 1, total + seconds, errors + (outcome != "ok"))
