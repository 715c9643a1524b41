"""The audience: the social graph's say on realtime subscriptions, kept current.

Starling holds the graph and the realtime pipeline in one process tree, so a
channel can be defined by the graph. The audience is the part that knows both:

- **``following:<me>`` listeners.** Subscribing to ``following:<me>`` loads
  whom ``<me>`` follows into the :class:`~actors.realtime.following.FollowingIndex`
  that the transformers read, and keeps it there while ``<me>`` listens on any
  process and for ``grace`` seconds after (so a client that reconnects within the
  grace recovers exactly, with ``since``). Follows and unfollows update it at
  once, on every process.
- **Who may subscribe** (the WebSocket session's :class:`~protocols.websocket.session.Gate`):
  ``circle:<author>`` to the author's followers the author did not block; a
  ``post:`` channel to anyone but the users its author blocked.
- **Revocation.** An unfollow ends the follower's ``circle:<followee>``
  subscriptions (``unsubscribed``, reason ``"unfollowed"``); a block ends the
  blocked user's ``circle:<blocker>`` and their subscriptions to the blocker's
  posts (reason ``"blocked"``), on whichever process holds them.

Across processes (one Redis): every process holds the index of every listener
of the cluster. Domain events reach every process (this process's on the event
bus, the others' on the Pub/Sub topic :data:`~actors.social.events.SHARED_TOPIC`),
and listeners are announced on :data:`CONTROL_TOPIC`: each process repeats the
list of its listeners every ``heartbeat`` seconds, and a process that starts asks
the others for theirs (``hello``) before it reports ready, so its transformers
fan out to every listener from their first batch. A process that dies stops
announcing; its listeners leave the others' indexes after three heartbeats.

**Continuity of a ``following:`` channel.** Activities are fanned out only to
listeners, so while nobody listens to ``following:<me>`` its offsets do not
move although activities happen. The lease ``starling:following:lease:<me>``
(cache, ttl ``grace``) records that someone listened; when a subscription
finds no lease, the audience first puts a *break* in the channel (one offset
with no publication, :meth:`~actors.realtime.history.ChannelHistory.skip`), so a
``since`` from before the break answers ``recovered: false`` instead of
silently skipping what was not fanned out.

Cost: a subscribe to ``following:`` is one graph read (the followees) and two
cache operations, plus one sequencer call when a break is needed; an activity is
one dict lookup in the transformer plus one event per listening follower.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec
import structlog
import trio

from actors.bus import EventBus
from actors.realtime.channels import (
    CIRCLE_PREFIX,
    FOLLOWING_PREFIX,
    POST_PREFIX,
    GraphUnavailable,
)
from actors.realtime.following import FollowingIndex
from actors.realtime.publisher import Publisher
from actors.realtime.transform import Rendered
from actors.realtime.transformer import Fanout
from actors.runtime import ActorError, Rejection
from actors.social.events import (
    SHARED_TOPIC,
    Blocked,
    Followed,
    SocialEvent,
    Unblocked,
    Unfollowed,
    remote_event,
)
from actors.social.pool import ReaderPool
from stores.cache import Cache
from stores.errors import StoreError
from stores.pubsub import PubSub
from stores.sequence import Sequencer

log = structlog.get_logger(__name__)

SECONDS: Final = 1.0
CONTROL_TOPIC: Final = "starling:audience"
"""The Pub/Sub topic of listener announcements between processes (Redis only)."""
LEASE_PREFIX: Final = "starling:following:lease:"
"""Cache key prefix of a ``following:`` channel's lease (someone listened within grace)."""
REVOKED_UNFOLLOWED: Final = "unfollowed"
REVOKED_BLOCKED: Final = "blocked"
MAX_USERS_PER_READ: Final = 200
"""Listeners whose followees one graph read loads."""

FOLLOWEES = (
    "MATCH (a:User)-[:FOLLOWS]->(b:User) WHERE a.id IN $users RETURN a.id AS user, b.id AS id"
)
"""Whom each of ``$users`` follows. ``IN`` rather than ``UNWIND``: on Ladybug the UNWIND form
costs about 70 ms whatever the list (an index lookup per row is not planned), ``IN`` 4 ms for
one user and 67 ms for 200 (the demo world)."""
FOLLOWS = "MATCH (a:User {id: $user})-[:FOLLOWS]->(b:User {id: $author}) RETURN count(*) AS n"
BLOCKS = "MATCH (a:User)-[:BLOCKS]->(b:User) RETURN a.id AS blocker, b.id AS blocked"
AUTHOR = "MATCH (a:User)-[:WROTE]->(p:Post {id: $post}) RETURN a.id AS id"
POSTS_BY = "MATCH (a:User {id: $author})-[:WROTE]->(p:Post) WHERE p.id IN $posts RETURN p.id AS id"


class Sessions(Protocol):
    """The WebSocket sessions of this process, as the audience needs them
    (:class:`protocols.websocket.gateway.WebSocketGateway`)."""

    def subscriptions_of(self, user: str) -> set[str]:
        """The channels ``user``'s sessions here are subscribed to."""
        ...

    def revoke(self, user: str, channels: Collection[str], reason: str) -> int:
        """End ``user``'s subscriptions to ``channels`` here, with an ``unsubscribed`` push."""
        ...


@dataclass(frozen=True, slots=True)
class AudienceSettings:
    """The audience's knobs.

    Attributes:
        grace: seconds a ``following:`` listener stays in the index after its last
            subscription ended (recovery with ``since`` works within it).
        heartbeat: seconds between listener announcements to the other processes.
        settle: seconds a starting process waits for the others' listeners.
    """

    grace: float = 300 * SECONDS
    heartbeat: float = 5 * SECONDS
    settle: float = 0.3 * SECONDS

    def __post_init__(self) -> None:
        if not (self.grace > 0 and self.heartbeat > 0 and self.settle >= 0):
            raise ValueError("grace and heartbeat must be > 0 seconds, settle >= 0")


@dataclass(frozen=True, slots=True)
class AudienceStatistics:
    """Listeners (here, in the cluster), blocks held, checks, revocations, breaks."""

    name: str
    state: str
    listeners_local: int
    listeners: int
    blocks: int
    checks: int
    refused: int
    revoked: int
    breaks: int
    events: int


class _Registering:
    """One user's :meth:`Audience.listen` calls in flight: one at a time, and how many wait."""

    __slots__ = ("callers", "lock")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.callers = 0


class _Hello(msgspec.Struct, tag="hello", array_like=True):
    origin: str


class _Listeners(msgspec.Struct, tag="listeners", array_like=True):
    origin: str
    users: list[str]


_Control = _Hello | _Listeners
_encode = msgspec.msgpack.Encoder().encode
_decode_control = msgspec.msgpack.Decoder(_Control).decode


class Audience:
    """See the module docstring.

    Args:
        readers: graph reads (followees, follows, blocks, authors).
        publisher: this process's hub (who listens here).
        sequencer, fanout: to put a break in a ``following:`` channel.
        cache: the listeners' leases.
        bus: this process's domain events.
        pubsub: the other processes' events and listeners (``None``: one process).
        origin: this process's name on the Pub/Sub topics.
        settings: the knobs.
    """

    name = "audience"

    def __init__(
        self,
        readers: ReaderPool,
        publisher: Publisher,
        sequencer: Sequencer,
        fanout: Fanout,
        cache: Cache,
        bus: EventBus[SocialEvent],
        *,
        pubsub: PubSub | None,
        origin: str,
        settings: AudienceSettings | None = None,
    ) -> None:
        self.index = FollowingIndex()
        self.settings = settings or AudienceSettings()
        self._readers = readers
        self._publisher = publisher
        self._sequencer = sequencer
        self._fanout = fanout
        self._cache = cache
        self._bus = bus
        self._pubsub = pubsub
        self._origin = origin
        self._sessions: Sessions | None = None
        self._local: dict[str, float] = {}
        self._remote: dict[str, dict[str, float]] = {}
        self._blocked_by: dict[str, set[str]] = {}
        self._registering: dict[str, _Registering] = {}
        self._scope = trio.CancelScope()
        self._state = "new"
        self.checks = 0
        self.refused = 0
        self.revoked = 0
        self.breaks = 0
        self.events = 0

    def attach(self, sessions: Sessions) -> None:
        """Revoke subscriptions through ``sessions`` (the gateway, built after the audience)."""
        self._sessions = sessions

    # -- the Gate (protocols.websocket.session.Gate) -----------------------------------

    def needs_check(self, user: str, channel: str, /) -> bool:
        """Whether ``channel`` (allowed by the channel rules) waits for :meth:`check`:
        ``following:`` (to start the fan-out) and the ``post:`` channels of a user someone
        blocked. No I/O."""
        if channel.startswith(FOLLOWING_PREFIX):
            return True
        return channel.startswith(POST_PREFIX) and user in self._blocked_by

    async def check(self, user: str, channel: str, /) -> str | None:
        """``None`` if ``user`` may subscribe to ``channel``, else why not.

        Raises:
            GraphUnavailable: the graph's readers could not answer.
        """
        self.checks += 1
        try:
            reason = await self._check(user, channel)
        except (Rejection, ActorError, StoreError) as failure:
            raise GraphUnavailable(str(failure)) from failure
        if reason is not None:
            self.refused += 1
        return reason

    async def _check(self, user: str, channel: str) -> str | None:
        kind, _, id = channel.partition(":")
        if kind == "following":
            await self.listen(id)
            return None
        if kind == "circle":
            if id in self._blocked_by.get(user, ()):
                return REVOKED_BLOCKED
            rows = await self._readers.read(FOLLOWS, {"user": user, "author": id})
            return None if rows and int(rows[0]["n"]) > 0 else "not a follower"
        if kind == "post":
            blockers = self._blocked_by.get(user)
            if blockers:
                rows = await self._readers.read(AUTHOR, {"post": id})
                if rows and str(rows[0]["id"]) in blockers:
                    return REVOKED_BLOCKED
        return None

    # -- following: listeners ------------------------------------------------------------

    async def listen(self, user: str) -> None:
        """Make sure ``user``'s followees are in the index and their lease is held.

        Called before a ``following:<user>`` subscription registers with the hub.
        Puts a break in the channel first when no lease was held (module docstring).
        """
        # Held from the first await on: a heartbeat in between must not drop the user
        # from the index (it keeps the users of _local).
        new = user not in self._local
        self._local[user] = trio.current_time()
        registering = self._registering.get(user)
        if registering is None:
            registering = self._registering[user] = _Registering()
        registering.callers += 1
        try:
            async with registering.lock:
                if user not in self.index:
                    await self._load([user])
                lease = await self._cache.get(LEASE_PREFIX + user)
                if lease is None:
                    await self._break(FOLLOWING_PREFIX + user)
                await self._cache.set(LEASE_PREFIX + user, b"1", ttl=self.settings.grace)
                if new:
                    await self._announce([user])
        finally:
            registering.callers -= 1
            if not registering.callers:
                del self._registering[user]

    async def _break(self, channel: str) -> None:
        """Consume one offset of ``channel`` with no publication: its history restarts.

        Put into this process's hub directly (nothing of the channel is in flight:
        nobody listened), so the subscription that follows starts after the break;
        announced to the other processes like any batch.
        """
        ((offset, epoch),) = await self._sequencer.next_offsets([channel])
        self._publisher.put(channel, offset, epoch, b"")
        await self._fanout.announce([[Rendered(channel, offset, epoch, "", b"")]])
        self.breaks += 1

    async def _load(self, users: Iterable[str]) -> None:
        """Put ``users`` and whom they follow in the index (one read per 200 users)."""
        users = list(users)
        for start in range(0, len(users), MAX_USERS_PER_READ):
            chunk = users[start : start + MAX_USERS_PER_READ]
            rows = await self._readers.read(FOLLOWEES, {"users": chunk})
            followees: dict[str, list[str]] = {user: [] for user in chunk}
            for row in rows:
                followees[str(row["user"])].append(str(row["id"]))
            for user, names in followees.items():
                self.index.add(user, names)

    def _held(self, user: str, now: float) -> bool:
        """Whether some process (this one within grace, or another announcing) holds ``user``."""
        if user in self._local:
            return True
        origins = self._remote.get(user)
        return origins is not None and any(expiry > now for expiry in origins.values())

    async def _tick(self) -> None:
        """Every heartbeat: renew the leases of local listeners, let go of the ones past
        grace, forget dead processes' listeners, announce ours."""
        now = trio.current_time()
        grace = self.settings.grace
        listening = []
        for user, seen in list(self._local.items()):
            if self._publisher.subscribers(FOLLOWING_PREFIX + user):
                self._local[user] = now
                listening.append(user)
            elif now - seen > grace:
                del self._local[user]
        for user in list(self._remote):
            origins = self._remote[user]
            for origin, expiry in list(origins.items()):
                if expiry <= now:
                    del origins[origin]
            if not origins:
                del self._remote[user]
        for user in self.index.listeners:
            if not self._held(user, now):
                self.index.remove(user)
        try:
            for user in listening:
                await self._cache.set(LEASE_PREFIX + user, b"1", ttl=grace)
            await self._announce(list(self._local))
        except StoreError as outage:
            log.warning("listener leases not renewed", error=str(outage))

    async def _announce(self, users: list[str]) -> None:
        if self._pubsub is not None and users:
            await self._pubsub.publish(CONTROL_TOPIC, _encode(_Listeners(self._origin, users)))

    async def _control(self, message: _Control) -> None:
        if message.origin == self._origin:
            return
        if isinstance(message, _Hello):
            await self._announce(list(self._local))
            return
        expiry = trio.current_time() + 3 * self.settings.heartbeat
        new = [user for user in message.users if user not in self.index]
        for user in message.users:
            self._remote.setdefault(user, {})[message.origin] = expiry
        if new:
            try:
                await self._load(new)
            except (Rejection, ActorError, StoreError) as failure:
                # Not held yet: the next announcement (a heartbeat away) tries again.
                for user in new:
                    self._remote.pop(user, None)
                log.warning("listeners of another process not loaded", error=str(failure))

    # -- domain events -------------------------------------------------------------------

    async def apply(self, event: SocialEvent) -> None:
        """Follow a domain event: update the index and the blocks, revoke what it withdraws."""
        self.events += 1
        match event:
            case Followed(follower, followee):
                self.index.followed(follower, followee)
            case Unfollowed(follower, followee):
                self.index.unfollowed(follower, followee)
                self._revoke(follower, [CIRCLE_PREFIX + followee], REVOKED_UNFOLLOWED)
            case Blocked(blocker, blocked):
                self._blocked_by.setdefault(blocked, set()).add(blocker)
                channels = [CIRCLE_PREFIX + blocker]
                channels += await self._posts_by(blocker, blocked)
                self._revoke(blocked, channels, REVOKED_BLOCKED)
            case Unblocked(blocker, blocked):
                blockers = self._blocked_by.get(blocked)
                if blockers is not None:
                    blockers.discard(blocker)
                    if not blockers:
                        del self._blocked_by[blocked]

    async def _posts_by(self, author: str, user: str) -> list[str]:
        """``user``'s ``post:`` subscriptions here whose post ``author`` wrote."""
        if self._sessions is None:
            return []
        posts = [
            channel[len(POST_PREFIX) :]
            for channel in self._sessions.subscriptions_of(user)
            if channel.startswith(POST_PREFIX)
        ]
        if not posts:
            return []
        try:
            rows = await self._readers.read(POSTS_BY, {"author": author, "posts": posts})
        except (Rejection, ActorError, StoreError) as failure:
            log.warning("blocked user's post subscriptions not revoked", error=str(failure))
            return []
        return [POST_PREFIX + str(row["id"]) for row in rows]

    def _revoke(self, user: str, channels: Collection[str], reason: str) -> None:
        if self._sessions is not None and channels:
            self.revoked += self._sessions.revoke(user, channels, reason)

    # -- the task ------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Audience] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Load the blocks, learn the other processes' listeners, report ready, follow events."""
        self._scope = trio.CancelScope()
        kinds = {"followed", "unfollowed", "blocked", "unblocked"}
        with self._scope, self._bus.subscribe(self.name, size=256, kinds=kinds) as events:
            rows = await self._readers.read(BLOCKS, {})
            self._blocked_by.clear()
            for row in rows:
                self._blocked_by.setdefault(str(row["blocked"]), set()).add(str(row["blocker"]))
            async with trio.open_nursery() as nursery:
                if self._pubsub is not None:
                    await nursery.start(self._remote_events, self._pubsub)
                    await self._pubsub.publish(CONTROL_TOPIC, _encode(_Hello(self._origin)))
                    await trio.sleep(self.settings.settle)
                nursery.start_soon(self._heartbeat)
                self._state = "running"
                task_status.started(self)
                async for event in events:
                    await self.apply(event)
        self._state = "stopped"

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self.settings.heartbeat)
            await self._tick()

    async def _remote_events(
        self, pubsub: PubSub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with pubsub.subscribe(CONTROL_TOPIC, SHARED_TOPIC) as messages:
            task_status.started()
            async for message in messages:
                if message.topic != CONTROL_TOPIC:
                    event = remote_event(message.data, self._origin)
                    if event is not None:
                        await self.apply(event)
                    continue
                try:
                    control = _decode_control(message.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as bad:
                    log.warning("not an audience message; dropped", error=str(bad))
                    continue
                await self._control(control)

    def request_stop(self) -> None:
        """Stop following events (the index stays as it is)."""
        self._state = "stopping"
        self._scope.cancel()

    def statistics(self) -> AudienceStatistics:
        """A snapshot of the figures."""
        return AudienceStatistics(
            self.name,
            self._state,
            len(self._local),
            len(self.index),
            sum(len(blockers) for blockers in self._blocked_by.values()),
            self.checks,
            self.refused,
            self.revoked,
            self.breaks,
            self.events,
        )
