"""The feed registry, the event router, and the feeds subtree that holds them.

The registry maps users to their live :class:`FeedBuilder`, starting one on
demand as a dynamic child of the ``feed_builders`` supervisor (transient: a
crash restarts that user's builder alone; an idle stop removes it). Past
``max_live`` builders it stops the least recently used one. It routes the
social events that concern a user to that user's live builder; for a user
without one it deletes the user's cached "latest" snapshot pointer, so a
builder started later never serves a ranking older than the event.

The event router is the feeds' subscription to the event bus: catalog events
go to the story index, user events to the registry (both with backpressure).

Subtree (``rest_for_one``: a restarted story index restarts what depends on it)::

    feeds
    ├── story_index        the columnar catalog
    ├── feed_builders      dynamic supervisor, one feed_builder per active user
    ├── feed_registry      user → builder, LRU cap, event routing
    └── feed_events        bus subscription → story_index / feed_registry
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from actors.bus import EventBus
from actors.feeds.builder import BuilderDeps, FeedBuilder, FeedCounters, FeedSettings
from actors.feeds.context import ContextSource
from actors.feeds.messages import BuilderStopped, GetFeed, Invalidate, LiveFeeds, Lookup
from actors.feeds.scorer import LinearScorer, RemoteScorer
from actors.feeds.snapshot import FeedPage, latest_key
from actors.feeds.story_index import INDEX_EVENTS, StoryIndex
from actors.runtime import Actor, ActorRef, ActorUnavailable
from actors.social.events import (
    SHARED_TOPIC,
    Blocked,
    Followed,
    Muted,
    PostRead,
    Published,
    SocialEvent,
    Unblocked,
    Unfollowed,
    Unmuted,
    encode_event,
    remote_event,
)
from stores.cache import Cache
from stores.errors import StoreError
from stores.graph import GraphStore
from stores.pubsub import PubSub
from supervisor import Backoff, ChildSpec, RestartType, Strategy, Supervisor

log = structlog.get_logger(__name__)

USER_EVENTS = (
    "followed",
    "unfollowed",
    "muted",
    "unmuted",
    "blocked",
    "unblocked",
    "read",
    "published",
)
"""The social event kinds routed to users' feed builders (a block to both of its users)."""


@dataclass(frozen=True, slots=True)
class InvalidateFeed:
    """``feed.invalidate``: forget ``user``'s ranked feed."""

    user: str


class FeedRegistry(Actor[Any]):
    """User → live feed builder (see the module docstring).

    Args:
        builders: the dynamic supervisor the builders run under.
        make_builder: makes a user's builder.
        cache: where cached snapshots live (to drop a non-live user's pointer).
        max_live: most live builders.

    Replies:
        the builder's ``ActorRef`` to :class:`Lookup`; ``int`` to :class:`LiveFeeds`.
    """

    def __init__(
        self,
        builders: Supervisor,
        make_builder: Callable[[str], FeedBuilder],
        cache: Cache,
        *,
        max_live: int,
        name: str = "feed_registry",
    ) -> None:
        super().__init__(name, mailbox_size=4096)
        self._builders = builders
        self._make_builder = make_builder
        self._cache = cache
        self.max_live = max_live
        self._live: OrderedDict[str, FeedBuilder] = OrderedDict()
        self._generation = 0
        self.evicted = 0
        self.overflowed = 0

    async def on_start(self) -> None:
        self._live.clear()  # a restarted registry starts with a fresh builders supervisor

    async def handle(self, message: Any) -> Any:
        match message:
            case Lookup(user):
                return await self._lookup(user)
            case BuilderStopped(user, builder):
                if self._live.get(user) is builder:
                    del self._live[user]
            case LiveFeeds():
                return len(self._live)
            case InvalidateFeed(user):
                await self._tell(user, Invalidate())
            case Followed(follower=user) | Unfollowed(follower=user):
                await self._tell(user, message)
            case Muted(user=user) | Unmuted(user=user) | PostRead(user=user):
                await self._tell(user, message)
            case (
                Blocked(blocker=blocker, blocked=blocked)
                | Unblocked(blocker=blocker, blocked=blocked)
            ):
                await self._tell(blocker, message)  # a block hides posts both ways
                await self._tell(blocked, message)
            case Published(followers=followers):
                for follower in followers:
                    builder = self._live.get(follower)
                    if builder is not None:
                        self._deliver(follower, builder, message)
            case _:
                raise TypeError(f"{self.name} cannot handle {type(message).__name__}")
        return None

    async def _lookup(self, user: str) -> ActorRef[Any]:
        builder = self._live.get(user)
        if builder is not None and builder.statistics().state == "running":
            self._live.move_to_end(user)
            return builder.ref
        self._live.pop(user, None)
        while len(self._live) >= self.max_live:
            _, oldest = self._live.popitem(last=False)
            oldest.request_stop()
            self.evicted += 1
        builder = self._make_builder(user)
        self._generation += 1
        spec = ChildSpec(
            f"{user}#{self._generation}", builder.run, restart=RestartType.TRANSIENT, shutdown=5
        )
        await self._builders.start_child(spec)
        self._live[user] = builder
        return builder.ref

    async def _tell(self, user: str, message: Any) -> None:
        builder = self._live.get(user)
        if builder is not None:
            self._deliver(user, builder, message)
            return
        try:
            await self._cache.delete(latest_key(user))
        except StoreError as exc:
            log.warning("cannot drop a cached feed pointer", user=user, error=str(exc))

    def _deliver(self, user: str, builder: FeedBuilder, message: Any) -> None:
        """Hand ``message`` to a builder; one that cannot take it is stopped, never waited on.

        A stopped builder's successor ranks afresh, so nothing is lost but work.
        """
        try:
            builder.ref.send_nowait(message)
        except (trio.WouldBlock, ActorUnavailable):
            self.overflowed += 1
            builder.request_stop()
            self._live.pop(user, None)


class FeedEventRouter:
    """Forwards the bus's feed-related events to the story index and the registry.

    With ``pubsub`` (several processes on one Redis), it also shares them: each
    event of this process's bus is published on :data:`SHARED_TOPIC`, and each
    event another process published there is routed here as if it were local,
    so every process's story index and feed builders follow every write
    (fire-and-forget: an event missed in a Redis outage is caught up by the
    snapshot TTL and the next restart's load). Only the feeds see remote
    events; the bus (and so the realtime bridge) sees only this process's.

    Args:
        bus: the social event bus.
        index: the story index's ref.
        registry: the registry's ref.
        size: the subscription's channel size, in events.
        pubsub: shares events with other processes when given.
        origin: this process's name on :data:`SHARED_TOPIC` (its own are skipped).
    """

    name = "feed_events"

    def __init__(
        self,
        bus: EventBus[SocialEvent],
        index: ActorRef[Any],
        registry: ActorRef[Any],
        *,
        size: int = 1024,
        pubsub: PubSub | None = None,
        origin: str = "",
    ) -> None:
        self._bus = bus
        self._index = index
        self._registry = registry
        self._size = size
        self._pubsub = pubsub
        self._origin = origin or secrets.token_hex(8)
        self._scope = trio.CancelScope()
        self.routed = 0
        self.shared = 0
        self.received = 0
        self.share_failures = 0

    def request_stop(self) -> None:
        """Stop routing (the supervisor's graceful stop): the subscription is closed."""
        self._scope.cancel()

    async def run(
        self, *, task_status: trio.TaskStatus[FeedEventRouter] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Subscribe, report ready, route until cancelled."""
        kinds = set(INDEX_EVENTS) | set(USER_EVENTS)
        self._scope = trio.CancelScope()
        with self._scope, self._bus.subscribe("feeds", size=self._size, kinds=kinds) as events:
            async with trio.open_nursery() as nursery:
                if self._pubsub is not None:
                    await nursery.start(self._receive_shared, self._pubsub)
                task_status.started(self)
                async for event in events:
                    await self._route(event)
                    if self._pubsub is not None:
                        await self._share(self._pubsub, event)

    async def _route(self, event: SocialEvent) -> None:
        if event.kind in INDEX_EVENTS:
            await self._index.send(event)
        if event.kind in USER_EVENTS:
            await self._registry.send(event)
        self.routed += 1

    async def _share(self, pubsub: PubSub, event: SocialEvent) -> None:
        try:
            await pubsub.publish(SHARED_TOPIC, encode_event(self._origin, event))
            self.shared += 1
        except StoreError as failure:
            self.share_failures += 1
            log.warning("feed event not shared", kind=event.kind, error=str(failure))

    async def _receive_shared(
        self, pubsub: PubSub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with pubsub.subscribe(SHARED_TOPIC) as messages:
            task_status.started()
            async for message in messages:
                event = remote_event(message.data, self._origin)
                if event is not None:
                    self.received += 1
                    await self._route(event)


@dataclass(frozen=True, slots=True)
class Feeds:
    """What the API needs of the feeds subtree.

    Attributes:
        registry: the feed registry's ref.
        index: the story index actor (statistics, tests).
        counters: the builders' shared figures.
        settings: the feed settings.
    """

    registry: ActorRef[Any]
    index: StoryIndex
    counters: FeedCounters
    settings: FeedSettings

    async def page(self, user: str, request: GetFeed) -> FeedPage:
        """A page of ``user``'s feed through their builder (started on demand).

        Raises:
            Rejection: the builder's error reply (NotFound, SnapshotExpired, …).
            ActorCrashed: the build crashed (the builder is restarted).
            ActorUnavailable: the feeds subtree is down.
        """
        for attempt in range(3):
            builder: ActorRef[Any] = await self.registry.call(Lookup(user))
            try:
                page: FeedPage = await builder.call(request)
                return page
            except ActorUnavailable:
                # it stopped (idle, evicted) between the lookup and the call
                if attempt == 2:
                    raise
                await trio.lowlevel.checkpoint()
        raise AssertionError("unreachable")

    async def invalidate(self, user: str) -> None:
        """Forget ``user``'s ranked feed (live or cached)."""
        await self.registry.call(InvalidateFeed(user))

    async def live(self) -> int:
        """How many feed builders are live."""
        count: int = await self.registry.call(LiveFeeds())
        return count


def feeds_subtree(
    *,
    store: GraphStore | None,
    bus: EventBus[SocialEvent],
    context: ContextSource,
    cache: Cache,
    settings: FeedSettings,
    scorer: LinearScorer,
    remote: RemoteScorer | None = None,
    index: StoryIndex | None = None,
    clock: Callable[[], float] = time.time,
    pubsub: PubSub | None = None,
    origin: str = "",
) -> tuple[Supervisor, Feeds]:
    """The ``feeds`` supervisor and the handle the API uses (see the module docstring).

    Args:
        store: the graph the story index loads from (``None`` with a prepared ``index``).
        index: a prepared story index (the benchmark's synthetic catalog).
        clock: epoch seconds now (ages, horizon, TTL of snapshots).
        pubsub: shares feed events with the other processes on one Redis
            (:class:`FeedEventRouter`); ``None`` in a single process.
    """
    index = index or StoryIndex(store, settings.params, clock=clock)
    counters = FeedCounters()
    limiter = trio.CapacityLimiter(settings.build_threads)
    builders = Supervisor(
        "feed_builders",
        intensity=100,
        period=10,
        max_children=2 * settings.max_live,
    )

    def make_builder(user: str) -> FeedBuilder:
        return FeedBuilder(user, deps)  # deps is bound below, before any lookup runs

    registry = FeedRegistry(builders, make_builder, cache, max_live=settings.max_live)
    deps = BuilderDeps(
        index=index.ref,
        context=context,
        scorer=scorer,
        cache=cache,
        settings=settings,
        limiter=limiter,
        counters=counters,
        remote=remote,
        registry=registry.ref,
        clock=clock,
    )
    router = FeedEventRouter(bus, index.ref, registry.ref, pubsub=pubsub, origin=origin)
    feeds = Supervisor(
        "feeds",
        [
            ChildSpec(index.name, index.run),
            ChildSpec.supervisor("feed_builders", builders.run),
            ChildSpec(registry.name, registry.run),
            ChildSpec(router.name, router.run),
        ],
        strategy=Strategy.REST_FOR_ONE,
        intensity=10,
        period=60,
        backoff=Backoff(initial=0.5, factor=2, maximum=15),
    )
    return feeds, Feeds(registry.ref, index, counters, settings)
