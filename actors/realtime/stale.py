"""The ``feed.stale`` notifier: domain events → coalesced freshness notices on ``user:<id>``.

A child of the ``realtime`` subtree. It reads the posts and recommendations
of this process (its event bus) and of every other process (Pub/Sub
:data:`~actors.social.events.SHARED_TOPIC`, Redis only), finds which users
connected *to this process* the event concerns, and lets the
:class:`~actors.realtime.freshness.FreshnessCoalescer` decide when each is
told::

    published (each chunk)   followers of the chunk         → "followed_author"
    published (chunk 0)      followers of one of its tags   → "followed_topic"
                             followers of its publication   → "followed_publication"
    recommended              followers of the recommender   → "friends_recommended"
                             (not the post's author, nor who already read it)

Never the post's author. "Connected" is a local subscriber of ``user:<id>``
(:meth:`Publisher.subscribers`): a chunk's followers are checked one by one,
and the graph is asked only about the users with a local ``user:``
subscription (``WHERE u.id IN $users``; no query when there are none), once
per post.

A notice is appended to the stream numbered
(:meth:`stores.sequence.Sequencer.append_numbered`, as ``realtime.publish``
does), so every process delivers it with the channel's offsets. Before
that, the process claims the user's window cluster-wide
(:meth:`stores.cache.Cache.add` of ``starling:stale:<user>``, holding the
posts it tells, for a little less than the window): a user connected to two
processes is told once. The loser drops the posts the winner told and
keeps the rest for its next window's end; a user who left by then is
forgotten.

Cost per event: one ``subscribers`` lookup per chunk follower, at most two
graph reads per post (one per recommendation), one claim per notice, one
append per event or window end (all its notices). Best effort: the bus
subscription drops events when this actor is behind (it never slows the
graph writer), and an outage of the cache or stream drops the notices of
that moment (counted, logged).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import structlog
import trio

from actors.bus import EventBus, Overflow, Subscription
from actors.realtime.channels import USER_PREFIX
from actors.realtime.freshness import (
    FOLLOWED_AUTHOR,
    FOLLOWED_PUBLICATION,
    FOLLOWED_TOPIC,
    FRIENDS_RECOMMENDED,
    FreshnessCoalescer,
    Notice,
)
from actors.realtime.publisher import Publisher
from actors.realtime.streams import STREAM
from actors.runtime import ActorUnavailable, Rejection
from actors.social.events import (
    SHARED_TOPIC,
    Published,
    Recommended,
    SocialEvent,
    remote_event,
)
from stores.cache import Cache
from stores.errors import StoreError
from stores.graph import Row
from stores.pubsub import PubSub
from stores.sequence import Sequencer

log = structlog.get_logger(__name__)

_encode = msgspec.json.Encoder().encode
_decode_posts = msgspec.json.Decoder(list[str]).decode

CLAIM_PREFIX = "starling:stale:"
"""Cache keys of the users' windows: ``starling:stale:<user>`` → the posts told (JSON)."""
CLAIM_SHARE = 0.9
"""A claim is held this share of the window: it has lapsed when this process's next
window ends, whatever the round trips to the cache took."""

TOPIC_FOLLOWERS = """
MATCH (u:User)-[:FOLLOWS_TOPIC]->(t:Topic)
WHERE u.id IN $users AND t.name IN $tags
RETURN DISTINCT u.id AS id
"""
PUBLICATION_FOLLOWERS = """
MATCH (u:User)-[:FOLLOWS_PUBLICATION]->(:Publication {name: $publication})
WHERE u.id IN $users
RETURN u.id AS id
"""
RECOMMENDER_FOLLOWERS = """
MATCH (u:User)-[:FOLLOWS]->(:User {id: $recommender})
WHERE u.id IN $users AND u.id <> $recommender
  AND NOT EXISTS { MATCH (u)-[:WROTE]->(:Post {id: $post}) }
  AND NOT EXISTS { MATCH (u)-[:READ]->(:Post {id: $post}) }
RETURN u.id AS id
"""


def claim_key(user: str) -> str:
    """The cache key of ``user``'s window claim."""
    return CLAIM_PREFIX + user


class GraphReads(Protocol):
    """What the notifier needs of the graph (:class:`actors.social.ReaderPool` is one)."""

    async def read(self, cypher: str, params: Mapping[str, Any]) -> list[Row]:
        """Rows of one read query.

        Raises:
            Rejection, ActorUnavailable: the read failed.
        """
        ...


@dataclass(frozen=True, slots=True)
class StaleStatistics:
    """The notifier's figures.

    Attributes:
        events: posts and recommendations handled (local and remote).
        received: of those, from other processes.
        sent: notices appended to the stream.
        coalesced: triggers folded into a later notice (or already told).
        claims_lost: notices another process sent for the window.
        failed: notices dropped because the cache or the stream failed.
        waiting: users with a notice due at their window's end.
    """

    name: str
    state: str
    events: int
    received: int
    sent: int
    coalesced: int
    claims_lost: int
    failed: int
    waiting: int


class StaleNotifier:
    """Tells connected users their feed went stale (see the module docstring).

    Args:
        bus: the social event bus.
        publisher: this process's hub (who is connected).
        sequencer: numbers and appends the notices.
        cache: holds the window claims (shared by the processes of one backend).
        readers: the graph's readers.
        window: seconds between two notices to one user, > 0.
        pubsub: the other processes' events, when the backend is shared.
        origin: this process on :data:`SHARED_TOPIC` (its own messages are skipped).
        size: the inbox's capacity, in events.
    """

    name = "feed_stale"

    def __init__(
        self,
        bus: EventBus[SocialEvent],
        publisher: Publisher,
        sequencer: Sequencer,
        cache: Cache,
        readers: GraphReads,
        *,
        window: float,
        pubsub: PubSub | None = None,
        origin: str = "",
        size: int = 1024,
    ) -> None:
        self._bus = bus
        self._publisher = publisher
        self._sequencer = sequencer
        self._cache = cache
        self._readers = readers
        self._coalescer = FreshnessCoalescer(window)
        self._claim_ttl = window * CLAIM_SHARE
        self._pubsub = pubsub
        self._origin = origin
        self._size = size
        self._scope = trio.CancelScope()
        self._state = "new"
        self.events = 0
        self.received = 0
        self.sent = 0
        self.coalesced = 0
        self.claims_lost = 0
        self.failed = 0

    async def run(
        self, *, task_status: trio.TaskStatus[StaleNotifier] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Subscribe (bus, and Pub/Sub when shared), report ready, notify until stopped."""
        self._scope = trio.CancelScope()
        self._coalescer = FreshnessCoalescer(self._coalescer.window)  # a restart starts afresh
        send, inbox = trio.open_memory_channel[SocialEvent](self._size)
        kinds = {"published", "recommended"}
        subscription = self._bus.subscribe(
            self.name, size=self._size, kinds=kinds, overflow=Overflow.DROP
        )
        with self._scope, inbox, subscription as local:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward, local, send.clone())
                if self._pubsub is not None:
                    await nursery.start(self._receive_shared, self._pubsub, send.clone())
                send.close()
                self._state = "running"
                task_status.started(self)
                await self._serve(inbox)
                nursery.cancel_scope.cancel()
        self._state = "stopped"

    def request_stop(self) -> None:
        """Stop (held notices are dropped: they only said "refresh")."""
        self._state = "stopping"
        self._scope.cancel()

    def statistics(self) -> StaleStatistics:
        """A snapshot of the figures (O(1))."""
        return StaleStatistics(
            self.name,
            self._state,
            self.events,
            self.received,
            self.sent,
            self.coalesced,
            self.claims_lost,
            self.failed,
            self._coalescer.waiting,
        )

    # -- the loop -----------------------------------------------------------------

    async def _serve(self, inbox: trio.MemoryReceiveChannel[SocialEvent]) -> None:
        """One event or one window's end at a time, so the coalescer has one user."""
        while True:
            deadline = self._coalescer.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline) as waiting:
                try:
                    event = await inbox.receive()
                except trio.EndOfChannel:
                    return
            if waiting.cancelled_caught:
                await self._send(self._coalescer.due(trio.current_time()))
            else:
                await self._handle(event)

    async def _handle(self, event: SocialEvent) -> None:
        if not isinstance(event, Published | Recommended):
            return
        self.events += 1
        post = event.post
        audience = await self.audience(event)
        now = trio.current_time()
        notices = []
        for user, reasons in audience.items():
            notice = self._coalescer.note(user, post, reasons, now)
            if notice is None:
                self.coalesced += 1
            else:
                notices.append(notice)
        await self._send(notices)

    async def audience(self, event: SocialEvent) -> dict[str, list[str]]:
        """The connected users ``event`` makes stale, each with its reasons, in order.

        See the module docstring; a failed graph read leaves its reason out (logged).
        """
        reasons: dict[str, list[str]] = {}

        def add(users: Iterable[str], reason: str, author: str | None) -> None:
            for user in users:
                if user != author:
                    reasons.setdefault(user, []).append(reason)

        match event:
            case Published(author=author, followers=followers, chunk=chunk):
                params: dict[str, Any]
                subscribers = self._publisher.subscribers
                connected = [f for f in followers if subscribers(USER_PREFIX + f)]
                add(connected, FOLLOWED_AUTHOR, author)
                users = self._connected() if chunk == 0 else []
                if users and event.tags:
                    params = {"users": users, "tags": list(event.tags)}
                    add(await self._ids(TOPIC_FOLLOWERS, params), FOLLOWED_TOPIC, author)
                if users and event.publication:
                    params = {"users": users, "publication": event.publication}
                    found = await self._ids(PUBLICATION_FOLLOWERS, params)
                    add(found, FOLLOWED_PUBLICATION, author)
            case Recommended(user=recommender, post=post):
                users = [user for user in self._connected() if user != recommender]
                if users:
                    found = await self._ids(
                        RECOMMENDER_FOLLOWERS,
                        {"users": users, "recommender": recommender, "post": post},
                    )
                    add(found, FRIENDS_RECOMMENDED, None)  # the query leaves the author out
        return reasons

    def _connected(self) -> list[str]:
        """The users with a local ``user:`` subscription (O(subscribed channels))."""
        start = len(USER_PREFIX)
        return [channel[start:] for channel in self._publisher.subscribed_channels(USER_PREFIX)]

    async def _ids(self, cypher: str, params: Mapping[str, Any]) -> list[str]:
        try:
            rows = await self._readers.read(cypher, params)
        except (Rejection, ActorUnavailable) as failure:
            log.warning("feed.stale: a graph read failed; reason skipped", error=str(failure))
            return []
        return [str(row["id"]) for row in rows]

    # -- sending ------------------------------------------------------------------

    async def _send(self, notices: Sequence[Notice]) -> None:
        """Claim each connected user's window, then append the notices won in one step."""
        won: list[tuple[str, bytes]] = []
        for notice in notices:
            channel = USER_PREFIX + notice.user
            if not self._publisher.subscribers(channel):
                self._coalescer.forget(notice.user)
                continue
            key = claim_key(notice.user)
            try:
                if await self._cache.add(key, _encode(notice.posts), ttl=self._claim_ttl):
                    won.append((channel, _encode(notice.data())))
                    continue
                held = await self._cache.get(key)
            except StoreError as outage:
                self.failed += 1
                log.warning("feed.stale: no claim", user=notice.user, error=str(outage))
                continue
            self.claims_lost += 1
            self._coalescer.lost(notice, _told(held), trio.current_time())
        if not won:
            return
        try:
            await self._sequencer.append_numbered(STREAM, won)
        except StoreError as outage:
            self.failed += len(won)
            log.warning("feed.stale: notices dropped", count=len(won), error=str(outage))
            return
        self.sent += len(won)

    # -- the sources --------------------------------------------------------------

    async def _forward(
        self, local: Subscription[SocialEvent], send: trio.MemorySendChannel[SocialEvent]
    ) -> None:
        with send:
            async for event in local:
                await send.send(event)

    async def _receive_shared(
        self,
        pubsub: PubSub,
        send: trio.MemorySendChannel[SocialEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        kinds = (Published, Recommended)
        with send:
            async with pubsub.subscribe(SHARED_TOPIC) as messages:
                task_status.started()
                async for message in messages:
                    event = remote_event(message.data, self._origin)
                    if isinstance(event, kinds):
                        self.received += 1
                        await send.send(event)


def _told(held: bytes | None) -> list[str]:
    """The posts a claim's value names (none when it lapsed or is not ours)."""
    if held is None:
        return []
    try:
        return _decode_posts(held)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []
