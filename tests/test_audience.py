"""The audience actor on trio's virtual clock, with in-memory stores and a scripted graph:
listeners stay in the fan-out index however slow their first graph read, and leave it only
after the grace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio

from actors.bus import EventBus
from actors.realtime.audience import FOLLOWEES, Audience, AudienceSettings
from actors.realtime.channels import GraphUnavailable
from actors.realtime.history import Histories
from actors.realtime.publisher import Publisher
from actors.realtime.transform import Rendered
from actors.runtime import ActorCrashed
from actors.social.events import SocialEvent
from stores.memory import MemoryCache, MemorySequencer

GRACE = 60.0
HEARTBEAT = 5.0


class SlowGraph:
    """Answers the followees read after ``delay`` seconds; every other read at once, empty."""

    def __init__(self, follows: dict[str, list[str]], delay: float) -> None:
        self.follows = follows
        self.delay = delay

    async def read(self, cypher: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        if cypher != FOLLOWEES:
            await trio.lowlevel.checkpoint()
            return []
        await trio.sleep(self.delay)
        return [{"user": u, "id": f} for u in params["users"] for f in self.follows.get(u, [])]


class SlowCache(MemoryCache):
    """The in-memory cache, whose reads take ``delay`` seconds (a far Redis)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def get(self, key: str) -> bytes | None:
        await trio.sleep(self.delay)
        return await super().get(key)


class NoFanout:
    async def deliver(self, batch: list[Rendered]) -> None:
        await trio.lowlevel.checkpoint()

    async def announce(self, batches: list[list[Rendered]]) -> None:
        await trio.lowlevel.checkpoint()


def audience(graph: SlowGraph, publisher: Publisher, cache: MemoryCache | None = None) -> Audience:
    bus: EventBus[SocialEvent] = EventBus()
    return Audience(
        graph,  # type: ignore[arg-type]  # the reads the audience makes, scripted
        publisher,
        MemorySequencer(),
        NoFanout(),
        cache or MemoryCache(),
        bus,
        pubsub=None,
        origin="test",
        settings=AudienceSettings(grace=GRACE, heartbeat=HEARTBEAT),
    )


async def test_a_listener_whose_first_read_outlasts_heartbeats_stays_in_the_index(
    autojump_clock: trio.abc.Clock,
) -> None:
    """listen() whose graph read and lease read each take 12 s (heartbeats run meanwhile)
    leaves the user in the index with its followees, and past further heartbeats."""
    publisher = Publisher(lambda channel, offset, data: data, Histories())
    graph = SlowGraph({"me": ["a", "b"]}, delay=12.0)
    subject = audience(graph, publisher, SlowCache(delay=12.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(subject.run)
        await subject.listen("me")
        await trio.sleep(3 * HEARTBEAT)
        held = subject.index.followees("me")
        nursery.cancel_scope.cancel()

    assert held == frozenset({"a", "b"})
    assert sorted(subject.index.audience("a")) == ["me"]


async def test_a_listener_leaves_the_index_after_the_grace_without_subscribers(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A user who listened but has no following: subscription here is dropped from the index
    once the grace has passed, not before."""
    publisher = Publisher(lambda channel, offset, data: data, Histories())
    subject = audience(SlowGraph({"me": ["a"]}, delay=0.0), publisher)
    async with trio.open_nursery() as nursery:
        await nursery.start(subject.run)
        await subject.listen("me")
        await trio.sleep(GRACE - 2 * HEARTBEAT)
        within = "me" in subject.index
        await trio.sleep(4 * HEARTBEAT)
        after = "me" in subject.index
        nursery.cancel_scope.cancel()

    assert (within, after) == (True, False)


class CrashingGraph:
    """Every read fails as a reader that crashed on it would."""

    async def read(self, cypher: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        raise ActorCrashed("graph_reader-0 crashed")


async def test_a_reader_crash_during_a_check_is_graph_unavailable() -> None:
    """A circle: check whose graph read crashes its reader raises GraphUnavailable (the
    session answers -32001), never the crash itself (which would end the gateway's task)."""
    publisher = Publisher(lambda channel, offset, data: data, Histories())
    subject = audience(SlowGraph({}, delay=0.0), publisher)
    subject._readers = CrashingGraph()  # type: ignore[assignment]  # after start-up reads

    with pytest.raises(GraphUnavailable):
        await subject.check("me", "circle:someone")
