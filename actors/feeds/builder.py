"""The feed builder: one actor per active user, ranking, caching and validating that user's feed.

A builder answers :class:`GetFeed` (pages) and :class:`Invalidate`, and takes
the social events that concern its user from the registry:

- ``followed`` (by the user), ``unmuted``, ``unblocked`` (either way),
  ``published`` (by someone the user follows): the feed is *stale*; the next
  first page ranks it afresh;
- ``unfollowed``, ``muted``, ``read`` (by the user), ``blocked`` (either way:
  the other user's stories go as a muted author's do): noted against each
  held snapshot, so that *validation* drops the affected stories on every
  read without a rebuild (Rex's step 7);
- stories deleted anywhere are dropped by validation too (the catalog's flag).

Single flight: concurrent first pages while a build runs wait for that build
(one build, however many callers). Builds run in worker threads under a
shared ``CapacityLimiter`` (one per core by default), so a million-candidate
ranking never blocks the trio loop. The builder stops after ``idle_timeout``
seconds without a message and tells the registry.

Rex's cache step: each snapshot is stored in the cache backend with the TTL
(and the user's newest snapshot id beside it), so a builder started later, in
this process or another one sharing Redis, serves it without ranking again;
cursors of a snapshot keep working until its TTL passes, then
:class:`SnapshotExpired`.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import structlog
import trio

from actors.feeds.catalog import CatalogView
from actors.feeds.context import ContextSource, RawContext
from actors.feeds.errors import BadCursor, SnapshotExpired
from actors.feeds.messages import BuilderStopped, GetFeed, GetView, Invalidate
from actors.feeds.pipeline import PipelineParams, Ranked, UserContext, rank_feed
from actors.feeds.scorer import LinearScorer, RemoteScorer
from actors.feeds.snapshot import (
    FeedPage,
    FeedSnapshot,
    count_fresh,
    cut_page,
    decode_snapshot,
    encode_snapshot,
    latest_key,
    reasons_for,
    snapshot_key,
)
from actors.runtime import Actor, ActorRef, ActorUnavailable
from actors.social.errors import NotFound
from actors.social.events import (
    Blocked,
    Followed,
    Muted,
    PostRead,
    Published,
    Unblocked,
    Unfollowed,
    Unmuted,
)
from actors.social.scatter import run_all
from stores.cache import Cache
from stores.errors import StoreError

log = structlog.get_logger(__name__)

SECONDS = 1.0
MINUTES = 60 * SECONDS


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """How feeds are built and kept.

    Attributes:
        ttl: seconds a ranked snapshot is served and cached (Rex: minutes).
        idle_timeout: seconds without a request before a builder stops.
        max_live: most live builders; starting one more stops the least recently used.
        min_fresh: a first page re-ranks when fewer stories than this, and fewer
            than half of the snapshot, survive validation.
        build_threads: builds running at once (worker threads).
        keep_snapshots: snapshots a builder holds in memory for cursors.
        params: the pipeline's parameters.
    """

    ttl: float = 10 * MINUTES
    idle_timeout: float = 5 * MINUTES
    max_live: int = 10_000
    min_fresh: int = 50
    build_threads: int = 2
    keep_snapshots: int = 4
    params: PipelineParams = field(default_factory=PipelineParams)

    def __post_init__(self) -> None:
        if self.ttl <= 0 or self.idle_timeout <= 0:
            raise ValueError("ttl and idle_timeout must be > 0 seconds")
        if min(self.max_live, self.build_threads, self.keep_snapshots) < 1 or self.min_fresh < 0:
            raise ValueError("max_live, build_threads and keep_snapshots must be >= 1")


@dataclass
class FeedCounters:
    """Figures shared by every builder (read by /metrics and the benchmark).

    Attributes:
        builds: rankings completed.
        build_failures: rankings that failed.
        reads_cached: pages served from an existing snapshot.
        reads_built: pages whose call ranked the feed (or waited for that ranking).
        waited: first pages that waited for a build already running (single flight).
        dropped: stale stories skipped by validation.
        cache_errors: cache writes or reads that failed (the feed is served anyway).
        step_ms: total milliseconds per pipeline step, over all builds.
    """

    builds: int = 0
    build_failures: int = 0
    reads_cached: int = 0
    reads_built: int = 0
    waited: int = 0
    dropped: int = 0
    cache_errors: int = 0
    step_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BuilderDeps:
    """What every builder shares.

    Attributes:
        index: the story index's ref.
        context: where user contexts come from.
        scorer: the local scorer (the default, and the remote scorer's fallback).
        cache: the cache backend for snapshots.
        settings: :class:`FeedSettings`.
        limiter: bounds concurrent builds (``settings.build_threads``).
        counters: shared :class:`FeedCounters`.
        remote: a remote scorer, or ``None``.
        registry: told when a builder stops, or ``None``.
        clock: epoch seconds now.
    """

    index: ActorRef[Any]
    context: ContextSource
    scorer: LinearScorer
    cache: Cache
    settings: FeedSettings
    limiter: trio.CapacityLimiter
    counters: FeedCounters
    remote: RemoteScorer | None = None
    registry: ActorRef[Any] | None = None
    clock: Callable[[], float] = time.time


@dataclass
class _Changes:
    """What happened to the user since a snapshot was ranked (for validation)."""

    unfollowed: set[str] = field(default_factory=set)
    muted: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)


class FeedBuilder(Actor[Any]):
    """One user's feed (see the module docstring).

    Args:
        user: whose feed.
        deps: the shared :class:`BuilderDeps`.

    Replies:
        :class:`FeedPage` to :class:`GetFeed`; ``None`` to :class:`Invalidate`.

    Raises (as replies):
        NotFound: no such user.
        SnapshotExpired: a cursor's snapshot is gone.
        BadCursor: a cursor of another user's feed.
        GraphUnavailable, IndexUnavailable: the graph cannot be read.
    """

    def __init__(self, user: str, deps: BuilderDeps) -> None:
        super().__init__(
            f"feed_builder:{user}",
            mailbox_size=64,
            concurrency=16,
            idle_timeout=deps.settings.idle_timeout,
        )
        self.user = user
        self.builds = 0
        self._deps = deps
        self._snapshots: OrderedDict[str, tuple[FeedSnapshot, _Changes]] = OrderedDict()
        self._current: str | None = None
        self._stale = False
        self._building: trio.Event | None = None
        self._build_error: BaseException | None = None
        self._build_changes: _Changes | None = None
        self._view: CatalogView | None = None

    async def on_stop(self) -> None:
        registry = self._deps.registry
        if registry is not None:
            # the registry is full or stopping: it prunes stopped builders on lookup anyway
            with contextlib.suppress(trio.WouldBlock, ActorUnavailable):
                registry.send_nowait(BuilderStopped(self.user, self))

    async def handle(self, message: Any) -> Any:
        match message:
            case GetFeed(limit, None):
                return await self._first_page(limit)
            case GetFeed(limit, str(snapshot), position):
                return await self._page(snapshot, position, limit)
            case Invalidate() | Followed() | Unmuted() | Unblocked() | Published():
                self._stale = True
            case Unfollowed(followee=author):
                self._note(lambda changes: changes.unfollowed.add(author))
            case Muted(author=author):
                self._note(lambda changes: changes.muted.add(author))
            case Blocked(blocker=blocker, blocked=blocked):
                other = blocked if blocker == self.user else blocker
                self._note(lambda changes: changes.muted.add(other))
            case PostRead(post=post):
                self._note(lambda changes: changes.read.add(post))
            case _:
                raise TypeError(f"{self.name} cannot handle {type(message).__name__}")
        return None

    # -- reads -----------------------------------------------------------------

    async def _first_page(self, limit: int) -> FeedPage:
        counters = self._deps.counters
        entry = await self._usable_snapshot()
        if entry is not None:
            counters.reads_cached += 1
            return self._cut(entry, 0, limit, cached=True)
        if self._building is not None:
            counters.waited += 1
            await self._building.wait()
            if self._build_error is not None:
                raise self._build_error
        else:
            await self._build_once()
        counters.reads_built += 1
        assert self._current is not None
        return self._cut(self._snapshots[self._current], 0, limit, cached=False)

    async def _page(self, snapshot: str, position: int, limit: int) -> FeedPage:
        entry = self._snapshots.get(snapshot)
        if entry is None:
            loaded = await self._cached_snapshot(snapshot)
            if loaded is None:
                raise SnapshotExpired(snapshot)
            if loaded.user != self.user:
                raise BadCursor("this cursor belongs to another user's feed")
            entry = self._hold(loaded, _Changes())
        self._deps.counters.reads_cached += 1
        return self._cut(entry, position, limit, cached=True)

    def _cut(
        self, entry: tuple[FeedSnapshot, _Changes], start: int, limit: int, *, cached: bool
    ) -> FeedPage:
        snapshot, changes = entry
        page = cut_page(snapshot, start, limit, stale=self._stale_test(changes), cached=cached)
        self._deps.counters.dropped += page.dropped
        return page

    def _stale_test(self, changes: _Changes) -> Callable[[str, str], bool]:
        view = self._view
        unfollowed, muted, read = changes.unfollowed, changes.muted, changes.read

        def stale(post: str, author: str) -> bool:
            if author in unfollowed or author in muted or post in read:
                return True
            if view is None:
                return False
            story = view.post_index.get(post)
            return story is None or bool(view.deleted[story])

        return stale

    async def _usable_snapshot(self) -> tuple[FeedSnapshot, _Changes] | None:
        """The current snapshot if it may serve a first page; ``None`` when a build is due."""
        if self._stale:
            return None
        if self._current is None:
            loaded = await self._latest_cached()
            if loaded is None:
                return None
            if self._view is None:
                self._view = (await self._deps.index.call(GetView()))[0]
            self._hold(loaded, _Changes())
            self._current = loaded.id
        entry = self._snapshots.get(self._current)
        if entry is None:
            return None
        snapshot, changes = entry
        if self._deps.clock() - snapshot.built_at >= self._deps.settings.ttl:
            return None
        fresh = count_fresh(snapshot, self._stale_test(changes))
        if fresh < self._deps.settings.min_fresh and fresh < len(snapshot) / 2:
            return None
        return entry

    # -- validation notes ------------------------------------------------------

    def _note(self, change: Callable[[_Changes], None]) -> None:
        for _, changes in self._snapshots.values():
            change(changes)
        if self._build_changes is not None:
            change(self._build_changes)

    def _hold(self, snapshot: FeedSnapshot, changes: _Changes) -> tuple[FeedSnapshot, _Changes]:
        entry = (snapshot, changes)
        self._snapshots[snapshot.id] = entry
        self._snapshots.move_to_end(snapshot.id)
        while len(self._snapshots) > self._deps.settings.keep_snapshots:
            self._snapshots.popitem(last=False)
        return entry

    # -- building --------------------------------------------------------------

    async def _build_once(self) -> None:
        """Rank the feed; concurrent first pages wait on ``_building`` (single flight)."""
        done = self._building = trio.Event()
        self._build_error = None
        self._build_changes = _Changes()
        self._stale = False
        try:
            snapshot = await self._build()
        except BaseException as error:
            self._build_error = error
            self._deps.counters.build_failures += 1
            if isinstance(error, NotFound) and not self._snapshots:
                self.request_stop()  # no such user: do not keep an actor for them
            raise
        else:
            self._hold(snapshot, self._build_changes)
            self._current = snapshot.id
        finally:
            self._build_changes = None
            self._building = None
            done.set()

    async def _build(self) -> FeedSnapshot:
        deps = self._deps
        started = time.perf_counter()
        parts: dict[str, Any] = {}

        async def fetch_view() -> None:
            parts["view"] = await deps.index.call(GetView())

        async def fetch_context() -> None:
            parts["context"] = await deps.context.load(self.user)

        await run_all([fetch_view, fetch_context])
        view, trending = parts["view"]
        raw: RawContext = parts["context"]
        self._view = view
        now = deps.clock()
        context = raw.resolve(view, self.user)
        score = self._score_function()
        ranked, reasons = await trio.to_thread.run_sync(
            _rank_and_explain,
            view,
            context,
            trending,
            score,
            now,
            deps.settings.params,
            limiter=deps.limiter,
        )
        stories = ranked.candidates.stories[ranked.positions]
        authors = view.author[stories].tolist()
        snapshot = FeedSnapshot(
            id=secrets.token_hex(8),
            user=self.user,
            built_at=now,
            built_ms=0.0,
            candidates=ranked.found,
            posts=[view.post_ids[s] for s in stories.tolist()],
            authors=[view.user_ids[a] for a in authors],
            scores=ranked.scores[ranked.positions].astype(float).tolist(),
            reasons=reasons,
        )
        cache_started = time.perf_counter()
        built_ms = (cache_started - started) * 1000
        snapshot = msgspec.structs.replace(snapshot, built_ms=round(built_ms, 3))
        await self._store(snapshot)
        timings = dict(ranked.timings_ms, cache=(time.perf_counter() - cache_started) * 1000)
        self.builds += 1
        deps.counters.builds += 1
        for step, ms in timings.items():
            deps.counters.step_ms[step] = deps.counters.step_ms.get(step, 0.0) + ms
        log.debug("feed ranked", user=self.user, candidates=ranked.found, built_ms=built_ms)
        return snapshot

    def _score_function(self) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
        remote = self._deps.remote
        if remote is None:
            return self._deps.scorer.score

        def score_remotely(features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            # called in the worker thread: the HTTP exchange runs back on the trio loop
            return trio.from_thread.run(remote.score, features)

        return score_remotely

    async def _store(self, snapshot: FeedSnapshot) -> None:
        """Rex's cache step; a cache outage is logged and counted, never fatal."""
        cache, ttl = self._deps.cache, self._deps.settings.ttl
        try:
            data = encode_snapshot(snapshot)
            await cache.set(snapshot_key(self.user, snapshot.id), data, ttl=ttl)
            await cache.set(latest_key(self.user), snapshot.id.encode(), ttl=ttl)
        except StoreError as exc:
            self._deps.counters.cache_errors += 1
            log.warning("cannot cache a feed snapshot", user=self.user, error=str(exc))

    async def _cached_snapshot(self, snapshot: str) -> FeedSnapshot | None:
        try:
            data = await self._deps.cache.get(snapshot_key(self.user, snapshot))
        except StoreError as exc:
            self._deps.counters.cache_errors += 1
            log.warning("cannot read a feed snapshot", user=self.user, error=str(exc))
            return None
        if data is None:
            return None
        try:
            return decode_snapshot(data)
        except msgspec.DecodeError:
            return None

    async def _latest_cached(self) -> FeedSnapshot | None:
        try:
            latest = await self._deps.cache.get(latest_key(self.user))
        except StoreError as exc:
            self._deps.counters.cache_errors += 1
            log.warning("cannot read the latest feed snapshot", user=self.user, error=str(exc))
            return None
        if latest is None:
            return None
        return await self._cached_snapshot(latest.decode())


def _rank_and_explain(
    view: CatalogView,
    context: UserContext,
    trending: npt.NDArray[np.int64],
    score: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    now: float,
    params: PipelineParams,
) -> tuple[Ranked, list[list[str]]]:
    ranked = rank_feed(view, context, trending, score, now, params)
    started = time.perf_counter()
    reasons = reasons_for(view, ranked.candidates, ranked.positions, context.topics)
    ranked.timings_ms["postprocess"] += (time.perf_counter() - started) * 1000
    return ranked, reasons
