"""The event bus: per-kind subscriptions, backpressure or drops when full, statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import trio
import trio.testing

from actors.bus import BusStatistics, EventBus, Overflow, SubscriberStatistics


@dataclass(frozen=True, slots=True)
class Ping:
    kind: ClassVar[str] = "ping"
    n: int


@dataclass(frozen=True, slots=True)
class Pong:
    kind: ClassVar[str] = "pong"
    n: int


Event = Ping | Pong


async def test_subscribers_get_the_kinds_they_asked_for() -> None:
    """A subscription for some kinds gets only those; one without kinds gets every event, in order."""  # noqa: E501
    bus: EventBus[Event] = EventBus()
    everything = bus.subscribe("all", size=8)
    pings = bus.subscribe("pings", size=8, kinds={"ping"})

    for event in (Ping(1), Pong(2), Ping(3)):
        await bus.publish(event)

    assert [everything.receive_nowait() for _ in range(3)] == [Ping(1), Pong(2), Ping(3)]
    assert [pings.receive_nowait() for _ in range(2)] == [Ping(1), Ping(3)]
    with pytest.raises(trio.WouldBlock):
        pings.receive_nowait()


async def test_a_full_wait_subscriber_holds_the_publisher_back(nursery: trio.Nursery) -> None:
    """Publishing to a full WAIT subscriber waits until it takes an event; nothing is lost."""
    bus: EventBus[Event] = EventBus()
    slow = bus.subscribe("slow", size=1)
    published = []

    async def publish_two() -> None:
        for n in (1, 2):
            await bus.publish(Ping(n))
            published.append(n)

    nursery.start_soon(publish_two)
    await trio.testing.wait_all_tasks_blocked()
    assert published == [1]
    assert await slow.receive() == Ping(1)
    await trio.testing.wait_all_tasks_blocked()

    assert published == [1, 2]
    assert await slow.receive() == Ping(2)


async def test_a_full_drop_subscriber_loses_events_and_counts_them() -> None:
    """A full DROP subscriber misses events (counted) without delaying the publisher or others."""
    bus: EventBus[Event] = EventBus()
    lossy = bus.subscribe("dashboard", size=2, overflow=Overflow.DROP)
    steady = bus.subscribe("feed", size=8)

    with trio.fail_after(1):
        for n in range(5):
            await bus.publish(Ping(n))

    assert [lossy.receive_nowait() for _ in range(2)] == [Ping(0), Ping(1)]
    assert [steady.receive_nowait() for _ in range(5)] == [Ping(n) for n in range(5)]
    stats = lossy.statistics()
    assert (stats.delivered, stats.dropped, stats.peak) == (2, 3, 2)


async def test_closed_subscriptions_are_removed() -> None:
    """A subscriber that closes its subscription is dropped by the bus and never blocks it."""
    bus: EventBus[Event] = EventBus()
    with bus.subscribe("gone", size=1):
        pass
    kept = bus.subscribe("kept", size=4)

    with trio.fail_after(1):
        for n in range(3):
            await bus.publish(Pong(n))

    assert [s.name for s in bus.statistics().subscribers] == ["kept"]
    assert kept.statistics().delivered == 3


async def test_closing_the_bus_ends_every_subscription() -> None:
    """After close, subscribers read what was queued and then their iteration stops."""
    bus: EventBus[Event] = EventBus()
    subscription = bus.subscribe("reader", size=4)
    await bus.publish(Ping(1))

    bus.close()

    assert [event async for event in subscription] == [Ping(1)]
    with pytest.raises(trio.ClosedResourceError):
        await bus.publish(Ping(2))
    with pytest.raises(trio.ClosedResourceError):
        bus.subscribe("late", size=1)


async def test_statistics_count_by_kind_and_subscriber() -> None:
    """statistics() counts published events by kind and shows each subscriber's figures."""
    bus: EventBus[Event] = EventBus()
    bus.subscribe("pongs", size=3, kinds=["pong"], overflow=Overflow.DROP)
    await bus.publish(Ping(1))
    await bus.publish(Pong(2))
    await bus.publish(Ping(3))

    assert bus.statistics() == BusStatistics(
        published=3,
        by_kind=(("ping", 2), ("pong", 1)),
        subscribers=(
            SubscriberStatistics(
                name="pongs",
                kinds=("pong",),
                overflow="drop",
                size=3,
                used=1,
                peak=1,
                delivered=1,
                dropped=0,
            ),
        ),
    )


def test_subscriptions_are_bounded() -> None:
    """A subscription needs a finite size of at least one event."""
    bus: EventBus[Event] = EventBus()

    with pytest.raises(ValueError, match="size"):
        bus.subscribe("none", size=0)
    with pytest.raises(ValueError, match="size"):
        bus.subscribe("unbounded", size=float("inf"))  # type: ignore[arg-type]
