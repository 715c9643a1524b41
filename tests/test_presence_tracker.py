"""The presence tracker (:class:`actors.realtime.presence.PresenceTracker`) across processes,
in one trio run: two trackers with their own origins share one in-process presence store
and one Pub/Sub, as two ``starling serve`` processes share a Redis.

On the autojump clock, so the expiry rules are checked to the second without waiting.
The members are plain objects that record the pushes they get (the tracker's side of a
WebSocket session), but for the last test, which drives a real sans-I/O session the way
the gateway does; the real sockets are in tests/test_presence.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from actors.realtime.presence import PresenceSettings, PresenceTracker
from actors.realtime.publisher import Publisher
from auth.tokens import issue_token
from protocols.websocket.frames import presence_frame, pub_frame
from protocols.websocket.session import Deferred, Session
from stores.memory import MemoryPubSub
from stores.presence import MemoryPresence

EXPIRY = 15.0
CHANNEL = "post:p"


def decoded(frame: bytes) -> Any:
    """The JSON message of a server's text frame (unmasked, RFC 6455 section 5.2)."""
    length = frame[1] & 0x7F
    return json.loads(frame[2 if length < 126 else 4 if length == 126 else 10 :])


class Tab:
    """One connection of ``user`` subscribed to a channel with presence."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.pushes: list[tuple[str, str, int]] = []
        self.refuse = False
        self._arrived = trio.Event()

    def notify(self, channel: str, frame: bytes) -> bool:
        if self.refuse:
            return False
        message = decoded(frame)
        params = message["params"]
        self.pushes.append((message["method"], params["user"], params["connections"]))
        self._arrived.set()
        self._arrived = trio.Event()
        return True

    async def pushed(self, count: int) -> float:
        """Wait until ``count`` pushes arrived in all; the trio time then."""
        with trio.fail_after(120):
            while len(self.pushes) < count:
                await self._arrived.wait()
        return trio.current_time()


@asynccontextmanager
async def two_processes() -> AsyncIterator[tuple[PresenceTracker, PresenceTracker, Any]]:
    """Trackers "a" and "b" on a shared store and Pub/Sub, running; and b's cancel scope
    (cancelling it is b dying: no last write)."""
    store, pubsub = MemoryPresence(), MemoryPubSub()
    settings = PresenceSettings(expiry=EXPIRY)
    a = PresenceTracker(store, presence_frame, pubsub=pubsub, origin="a", settings=settings)
    b = PresenceTracker(store, presence_frame, pubsub=pubsub, origin="b", settings=settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        b_scope = trio.CancelScope()

        async def run_b(*, task_status: trio.TaskStatus[PresenceTracker]) -> None:
            with b_scope:
                await b.run(task_status=task_status)

        await nursery.start(run_b)
        yield a, b, b_scope
        nursery.cancel_scope.cancel()


async def test_a_join_and_a_leave_on_another_process_reach_the_subscribers_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """User 1's two tabs on process b make one join and, once both closed, one leave on
    process a's subscriber, in order, without waiting for a store read."""
    async with two_processes() as (a, b, _):
        watcher = Tab("w")
        assert a.needs_load(CHANNEL)
        await a.load(CHANNEL)
        a.enter(watcher, CHANNEL)
        first, second = Tab("1"), Tab("1")
        await b.load(CHANNEL)
        b.enter(first, CHANNEL)
        b.enter(second, CHANNEL)
        start = trio.current_time()
        await watcher.pushed(2)
        b.exit(first, CHANNEL)
        b.exit(second, CHANNEL)
        await watcher.pushed(3)
        elapsed = trio.current_time() - start
        stats = a.statistics()

    assert watcher.pushes == [("join", "w", 1), ("join", "1", 2), ("leave", "1", 0)]
    assert ("join", "1", 1) in first.pushes  # its own join, on its own process
    assert ("join", "1", 1) not in second.pushes  # the second tab made no join
    assert elapsed < a.settings.interval  # the announcements, not a read
    assert (stats.joins, stats.leaves, stats.join_pushes, stats.leave_pushes) == (2, 1, 2, 1)


async def test_a_new_subscriber_is_not_told_who_was_already_there_as_joins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A subscriber entering a channel where process b already has user 1 gets only its own
    join; ``read`` and ``view`` show user 1."""
    async with two_processes() as (a, b, _):
        await b.load(CHANNEL)
        b.enter(Tab("1"), CHANNEL)
        await trio.testing.wait_all_tasks_blocked()  # b wrote the store
        assert b.statistics().writes == 1
        assert await a.read(CHANNEL) == {"1": 1}  # a store read: a does not track it yet
        watcher = Tab("w")
        await a.load(CHANNEL)
        a.enter(watcher, CHANNEL)

        assert watcher.pushes == [("join", "w", 1)]
        assert a.view(CHANNEL) == {"1": 1, "w": 1}


async def test_the_users_of_a_process_that_died_leave_within_the_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When process b dies (no last write), user 1 leaves a's subscriber after b's entries
    expire: more than ttl - interval and at most expiry seconds after the death."""
    async with two_processes() as (a, b, b_scope):
        watcher = Tab("w")
        await a.load(CHANNEL)
        a.enter(watcher, CHANNEL)
        await b.load(CHANNEL)
        b.enter(Tab("1"), CHANNEL)
        await watcher.pushed(2)
        await trio.sleep(7.3)  # some refreshes of b's entries happen
        b_scope.cancel()
        died = trio.current_time()
        left = await watcher.pushed(3)
        stats = a.statistics()

    settings = a.settings
    assert watcher.pushes[-1] == ("leave", "1", 0)
    assert settings.ttl - settings.interval < left - died <= EXPIRY
    assert stats.expired == 1
    assert a.view(CHANNEL) == {"w": 1}


async def test_a_subscriber_that_refuses_a_push_leaves_the_presence_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A subscriber whose outbox refuses a push (it is closing) is dropped from the channel's
    presence then and there: the others get its user's leave."""
    async with two_processes() as (a, _, _):
        closing, other = Tab("1"), Tab("2")
        await a.load(CHANNEL)
        a.enter(closing, CHANNEL)
        a.enter(other, CHANNEL)
        closing.refuse = True
        a.enter(Tab("3"), CHANNEL)

        assert other.pushes == [("join", "2", 1), ("join", "3", 1), ("leave", "1", 0)]
        assert a.statistics().members == 2


async def test_a_process_that_stops_cleanly_takes_its_users_away_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stopping process writes its last changes before it returns: its users' leaves reach
    the others at once, not after the expiry."""
    store, pubsub = MemoryPresence(), MemoryPubSub()
    a = PresenceTracker(store, presence_frame, pubsub=pubsub, origin="a")
    b = PresenceTracker(store, presence_frame, pubsub=pubsub, origin="b")
    watcher, tab = Tab("w"), Tab("1")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await a.load(CHANNEL)
        a.enter(watcher, CHANNEL)
        await b.load(CHANNEL)
        b.enter(tab, CHANNEL)
        await watcher.pushed(2)
        b.exit(tab, CHANNEL)  # the connections close first (the api child stops first)
        b.request_stop()
        start = trio.current_time()
        elapsed = await watcher.pushed(3) - start
        nursery.cancel_scope.cancel()

    assert watcher.pushes[-1] == ("leave", "1", 0)
    assert elapsed < 1.0
    assert await store.read([CHANNEL]) == [{"a": {"w": 1}}]


def read_frames(session: Session) -> list[dict[str, Any]]:
    """The JSON messages waiting in ``session``'s outbox, oldest first (now taken out)."""
    messages = []
    chunks = session.data_to_send()
    for chunk in chunks:
        messages.append(decoded(bytes(chunk)))
    session.sent(sum(len(chunk) for chunk in chunks))
    return messages


async def test_a_session_waits_for_the_load_and_gets_its_reply_before_its_join(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session's subscribe with presence on a channel this process does not know yet is a
    Deferred that waits for the load, and once completed its reply precedes its own join;
    presence then is a Deferred read whose reply holds every process's users."""
    secret = b"s" * 32
    async with two_processes() as (a, b, _):
        await b.load(CHANNEL)
        b.enter(Tab("1"), CHANNEL)
        await trio.testing.wait_all_tasks_blocked()  # b wrote the store
        hub = Publisher(pub_frame)
        session = Session(hub, secret, time.time(), token=issue_token(secret, "w"), presence=a)
        request = {"method": "subscribe", "params": {"channel": CHANNEL, "presence": True}}
        session.receive_text(json.dumps({"jsonrpc": "2.0", "id": 1, **request}), time.time())
        (pending,) = session.take_calls()
        ((_, deferred),) = pending.calls
        assert isinstance(deferred, Deferred)
        assert (deferred.gate, deferred.presence) == (False, "load")
        assert read_frames(session) == []
        await a.load(CHANNEL)
        session.complete(pending, {})
        subscribed = read_frames(session)
        ask = {"jsonrpc": "2.0", "id": 2, "method": "presence", "params": {"channel": CHANNEL}}
        session.receive_text(json.dumps(ask), time.time())
        (pending,) = session.take_calls()
        session.complete(pending, {}, {}, {0: await a.read(CHANNEL)})
        (listed,) = read_frames(session)
        session.close()
        exited = a.statistics()

    assert [message.get("id", message.get("method")) for message in subscribed] == [1, "join"]
    assert subscribed[1]["params"] == {"channel": CHANNEL, "user": "w", "connections": 1}
    assert listed["result"] == {
        "users": [{"user": "1", "connections": 1}, {"user": "w", "connections": 1}],
        "total": 2,
    }
    assert (exited.members, exited.sets) == (0, 0)
