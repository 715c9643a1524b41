"""The dashboard's reporter on a real publisher, on trio's virtual clock: a chart point every
interval whether or not anyone watches, batched on the series channel; whole snapshots only
for viewers, the first one at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import trio

from actors.realtime.history import Histories
from actors.realtime.publisher import Publisher
from observability.dashboard import (
    CHANNEL,
    SERIES_CHANNEL,
    DashboardReporter,
    Snapshots,
    Sources,
)
from supervisor import SupervisorStatistics

EPOCH_SECONDS = 1_800_000_000.0
"""The wall clock at virtual time 0."""


@dataclass(eq=False)
class Viewer:
    """A session that takes every publication offered to it (hashed by identity, as sessions)."""

    received: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)

    def offer(self, channel: str, offset: int, frame: bytes, /) -> bool:
        self.received.append((channel, offset, msgspec.json.decode(frame)))
        return True

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset()

    def statistics(self) -> Any:
        return SimpleNamespace(close=None)


def root() -> SupervisorStatistics:
    return SupervisorStatistics("root", "running", "one_for_one", 3, 30.0, 0, 0, None, ())


def reporter(publisher: Publisher) -> DashboardReporter:
    snapshots = Snapshots(
        Sources(tree=root),
        clock=trio.current_time,
        wall_clock=lambda: EPOCH_SECONDS + trio.current_time(),
    )
    return DashboardReporter(publisher, snapshots, interval=1.0, batch=5, poll=0.1)


def new_publisher() -> Publisher:
    return Publisher(lambda channel, offset, data: data, Histories(size=100))


def series(publisher: Publisher) -> list[dict[str, Any]]:
    """Every point the series channel's history holds, oldest first."""
    return [
        point
        for publication in publisher.latest(SERIES_CHANNEL, 100)
        for point in msgspec.json.decode(publication.data)["points"]
    ]


async def test_points_are_taken_every_interval_and_batched_with_nobody_watching(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With nobody subscribed, the reporter takes a point every interval (the first at once),
    publishes them five at a time on the series channel, and publishes no snapshot."""
    publisher = new_publisher()
    async with trio.open_nursery() as nursery:
        dashboard = await nursery.start(reporter(publisher).run)
        await trio.sleep(12.5)
        dashboard.request_stop()
    assert [point["at"] - EPOCH_SECONDS for point in series(publisher)] == list(range(10))
    assert publisher.position(SERIES_CHANNEL).offset == 2
    assert publisher.position(CHANNEL).offset == 0
    assert dashboard.statistics().points == 13


async def test_a_new_viewer_gets_a_snapshot_at_once_with_the_points_not_yet_batched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A viewer who subscribes between two intervals gets a whole snapshot within the poll
    (0.1 s), not at the next interval; it repeats the last interval's figures, and its points
    together with the series' history are every point taken, each once."""
    publisher = new_publisher()
    viewer = Viewer()
    async with trio.open_nursery() as nursery:
        dashboard = await nursery.start(reporter(publisher).run)
        await trio.sleep(7.3)  # points at 0 … 7: a batch of five, three pending
        publisher.subscribe(viewer, CHANNEL)
        await trio.sleep(0.11)
        snapshots = [data for channel, _, data in viewer.received if channel == CHANNEL]
        assert len(snapshots) == 1
        dashboard.request_stop()
    (snapshot,) = snapshots
    assert snapshot["tree"]["id"] == "root"
    assert snapshot["status"] == "ok"
    assert snapshot["at"] == EPOCH_SECONDS + 7
    taken = [point["at"] for point in series(publisher) + snapshot["points"]]
    assert taken == [EPOCH_SECONDS + t for t in range(8)]


async def test_a_watched_reporter_publishes_a_snapshot_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While a viewer stays subscribed it gets one snapshot per interval, with rates over the
    whole interval; when it leaves and another arrives, that one gets a snapshot at once."""
    publisher = new_publisher()
    viewer, later = Viewer(), Viewer()
    async with trio.open_nursery() as nursery:
        dashboard = await nursery.start(reporter(publisher).run)
        publisher.subscribe(viewer, CHANNEL)
        await trio.sleep(3.05)  # the welcome, then the intervals at 1, 2 and 3
        publisher.unsubscribe(viewer, CHANNEL)
        await trio.sleep(1.5)
        publisher.subscribe(later, CHANNEL)
        await trio.sleep(0.1)
        dashboard.request_stop()
    ats = [data["at"] - EPOCH_SECONDS for _, _, data in viewer.received]
    assert ats == [0, 1, 2, 3]
    assert [data["at"] - EPOCH_SECONDS for _, _, data in later.received] == [4]


def test_nonsense_timing_is_refused() -> None:
    """A poll longer than the interval, a zero interval or an empty batch is a ValueError."""
    publisher = new_publisher()
    snapshots = Snapshots(Sources(tree=root))
    for knobs in ({"poll": 2.0}, {"interval": 0.0}, {"batch": 0}):
        with pytest.raises(ValueError, match="need interval > 0"):
            DashboardReporter(publisher, snapshots, **knobs)  # type: ignore[arg-type]


def test_snapshots_show_subscriptions_by_kind_and_pushes_per_second_by_kind() -> None:
    """The figures carry the realtime subscriptions per channel kind as they are and each
    push kind (pub, gap, unsubscribed, join, leave, feed.stale) as a rate since the last
    figures."""
    from actors.realtime.pipeline import RealtimeStatistics

    now = [0.0]
    counts = {"delivered": 0, "unsubscribed": 0, "joins": 0, "stale": 0}

    def realtime() -> RealtimeStatistics:
        return RealtimeStatistics(
            read=0, reclaimed=0, events=0, poison=0, published=0,
            delivered=counts["delivered"], slow_disconnects=0, reorder_gaps=0, gaps=0,
            missed=0, relay_dropped=0, duplicates=0, channels=2, subscribers=3,
            latency_ms={}, presence_sets=1, presence_joins=counts["joins"],
            subscriptions_by_kind={"following": 2, "post": 1},
            unsubscribed=counts["unsubscribed"], feed_stale=counts["stale"],
        )  # fmt: skip

    snapshots = Snapshots(
        Sources(tree=root, realtime=realtime), clock=lambda: now[0], wall_clock=lambda: 0.0
    )
    snapshots.figures()
    now[0] = 2.0
    counts.update(delivered=100, unsubscribed=2, joins=4, stale=1)

    figures = snapshots.figures()

    assert figures["subscriptions"] == {"following": 2, "post": 1}
    assert figures["pushes"] == {
        "pub": 50.0, "gap": 0.0, "unsubscribed": 1.0, "join": 2.0, "leave": 0.0,
        "feed.stale": 0.5,
    }  # fmt: skip
    assert figures["presence"]["sets"] == 1
