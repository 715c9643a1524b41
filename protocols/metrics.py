"""Prometheus metrics: RPC calls and latency, and the supervision tree read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.feeds import FeedCounters
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
        live.add_metric(
            [], sum(1 for path, _ in self._tree().walk("root") if "/feed_builders/" in path)
        )
        yield from (builds, reads, waited, dropped, cache_errors, steps, live)


class Metrics:
    """A registry of Starling's metrics (one per app, so tests do not share state)."""

    def __init__(
        self,
        tree: Callable[[], SupervisorStatistics],
        feeds: FeedCounters | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
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

    def observe_call(self, method: str, seconds: float, outcome: str) -> None:
        """Record one JSON-RPC call."""
        self.rpc_calls.labels(method, outcome).inc()
        self.rpc_latency.labels(method).observe(seconds)
