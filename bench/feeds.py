"""Ranked feeds benchmark: Rex's budgets on a SYNTHETIC catalog drawn from the real stories.

Run it as ``starling bench feeds`` (or ``make bench-feeds``). The budgets of
the ranked-feeds issue:

- a cold build ranks 1,000,000 candidates for one user in <= 250 ms (p50);
- a warm read (a first page served from the ranked snapshot) takes <= 2 ms (p50);
- an idle feed builder actor costs <= 50 KB (its feed excluded).

Steps:

1. a SYNTHETIC catalog of ``stories`` stories (1.2M by default), drawn with
   ``numpy.random.default_rng(seed)`` from the real Hacker News and Medium
   stories (``datasets.stories``): each synthetic story copies the claps or
   points, reading time, tag list and publication of a real story drawn at
   random, and its date plus a uniform jitter within a day; authors are
   ``stories / 50`` users with Zipf popularity whose exponent is fitted so
   that the top 1% of authors write the share of stories they write in the
   real files; recommendations follow the demo world's rule
   (``datasets.demo.recommenders_wanted``: one per 4 HN points, one per 50
   claps), by readers drawn uniformly from ``stories / 10`` reader users. It
   goes in through the bulk path (``Catalog.add_columns`` and
   ``Catalog.load_recommendation_indices``);
2. one SYNTHETIC user per size whose context makes ``aggregate`` find that
   many candidates (±5%; the exact count is reported): a few small topics and
   publications, some followed readers (friends' recommendations), then
   followed authors until the count is reached (authors partition the
   stories, so the count is exact without ranking);
3. cold builds and warm reads through the real actors (``feeds_subtree`` with
   a prepared ``StoryIndex``, ``MemoryCache``, ``LinearScorer``):
   ``Feeds.page(user, GetFeed(20))`` after ``Feeds.invalidate(user)`` (cold),
   and again without (warm); per-step times from ``FeedCounters.step_ms``;
   and the pure pipeline (``rank_feed`` + ``reasons_for``, what the builder's
   worker thread runs) called directly, for comparison;
4. throughput: ``parallel`` distinct users of ~100k candidates, all cold, at
   once through ``Feeds.page`` (the builds share ``build_threads`` threads);
5. memory: ``idle_builders`` builders started through the registry
   (``Lookup``, no feed built), measured with ``tracemalloc``;
6. a table per part, and ``bench/results/feeds.json`` (or ``--output``).

The clock is fixed an hour after the newest story, so no candidate falls past
the horizon (the pipeline ranks every one), and the story index's trending
list is computed once (it is a shared, periodic cost; its time is reported).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import statistics
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import trio
import trio.testing
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from actors.bus import EventBus
from actors.feeds import (
    Catalog,
    CatalogView,
    Feeds,
    FeedSettings,
    GetFeed,
    LinearScorer,
    Lookup,
    PipelineParams,
    RawContext,
    StoryIndex,
    UserContext,
    aggregate,
    feeds_subtree,
    rank_feed,
    trending,
)
from actors.feeds.snapshot import reasons_for
from actors.social.errors import NotFound
from actors.social.events import SocialEvent
from bench.report import print_table, write_json
from datasets.demo import FILES, recommenders_wanted
from datasets.stories import Story, read_stories
from stores.memory import MemoryCache

LABEL = "SYNTHETIC"
"""How every figure of this benchmark is labelled: the catalog and users are drawn, not real."""

SIZES = (100_000, 300_000, 1_000_000)
"""Candidate counts of the measured users."""
STORIES = 1_200_000
"""Stories in the catalog (larger than the biggest size)."""
STORIES_PER_AUTHOR = 50
STORIES_PER_READER = 10
"""Reader users (who recommend, and write nothing) per story."""
DAY_SECONDS = 86_400
HOUR_SECONDS = 3_600
TOLERANCE = 0.05
"""A user's candidate count may miss its target by this share."""
SIDE_SHARE = 0.02
"""Each followed topic or publication finds at most this share of the target."""
SIDE_FOLLOWS = 3
"""Topics and publications a user follows (each)."""
FRIENDS_SHARE = 0.05
"""Followed readers are chosen to recommend about this share of the target ..."""
MAX_FRIENDS = 500
"""... but a user follows at most this many readers."""
AUTHOR_FILL_SHARE = 0.01
"""The last followed authors, that top the count up, each find at most this share of it."""
READ_STORIES = 100
MUTED_AUTHORS = 3
PAGE = 20
"""Stories per page (``GetFeed(20)``)."""

COLD_BUDGET_MS = 250.0
COLD_BUDGET_CANDIDATES = 1_000_000
WARM_BUDGET_MS = 2.0
IDLE_BUILDER_BUDGET_KB = 50.0

IntArray = npt.NDArray[np.int64]


# -- progress ------------------------------------------------------------------------


class Steps(Protocol):
    """Told what the benchmark does now (``total``: how many units, ``None`` for a spinner)."""

    def step(self, what: str, total: int | None = None) -> None: ...

    def advance(self) -> None: ...


class QuietSteps:
    """Steps that show nothing (tests)."""

    def step(self, what: str, total: int | None = None) -> None:
        pass

    def advance(self) -> None:
        pass


class RichSteps:
    """Steps as rich progress lines on stderr, one per step, with a bar where counted."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._current: TaskID | None = None

    def step(self, what: str, total: int | None = None) -> None:
        self._finish()
        self._current = self._progress.add_task(what, total=total)

    def advance(self) -> None:
        if self._current is not None:
            self._progress.advance(self._current)

    def _finish(self) -> None:
        if self._current is not None:
            task = self._progress.tasks[self._current]
            total = task.total if task.total is not None else 1
            self._progress.update(self._current, total=total, completed=total)

    @classmethod
    @contextlib.contextmanager
    def on(cls, console: Console) -> Iterator[RichSteps]:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            steps = cls(progress)
            yield steps
            steps._finish()


# -- 1. the synthetic catalog --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RealStories:
    """The real stories' columns the synthetic ones are drawn from (``m`` stories).

    Attributes:
        claps: HN points or Medium claps, ``int64[m]``.
        reading_time: minutes, ``0`` when unknown (every HN story), ``float32[m]``.
        published_at: epoch seconds, ``int64[m]``.
        recommenders: recommendations the demo world gives each, ``int64[m]``.
        tags: each story's tag tuple.
        publications: each story's publication or ``None``.
        top_author_share: share of the stories written by the top 1% of
            named authors (Medium's publication stand-ins left out).
        files: ``{file name: stories kept}``.
    """

    claps: IntArray
    reading_time: npt.NDArray[np.float32]
    published_at: IntArray
    recommenders: IntArray
    tags: list[tuple[str, ...]]
    publications: list[str | None]
    top_author_share: float
    files: dict[str, int]

    def __len__(self) -> int:
        return len(self.claps)


def read_real(source: Path) -> RealStories:
    """Read the real Hacker News and Medium files of ``source`` (see :data:`datasets.demo.FILES`).

    Raises:
        OSError: a file cannot be read.
        MalformedInput: a file lacks its header.
    """
    hn, _ = read_stories(source / FILES["hn"], "hn")
    medium, _ = read_stories(source / FILES["medium"], "medium")
    stories: list[Story] = [s for s in [*hn, *medium] if s.published_at is not None]
    per_author = Counter(s.author for s in stories if not s.author.startswith("md:pub:"))
    counts = sorted(per_author.values(), reverse=True)
    top = sum(counts[: max(1, len(counts) // 100)]) / max(1, sum(counts))
    return RealStories(
        claps=np.array([s.claps for s in stories], np.int64),
        reading_time=np.array([s.reading_time or 0.0 for s in stories], np.float32),
        published_at=np.array([s.published_at for s in stories], np.int64),
        recommenders=np.array([recommenders_wanted(s) for s in stories], np.int64),
        tags=[s.tags for s in stories],
        publications=[s.publication for s in stories],
        top_author_share=top,
        files={FILES["hn"]: len(hn), FILES["medium"]: len(medium)},
    )


def fit_zipf_exponent(top_share: float, authors: int) -> float:
    """The exponent ``s`` of ``P(rank r) ∝ r^-s`` over ``authors`` whose top 1% hold ``top_share``.

    Bisection on ``s`` in ``[0, 4]`` (the share grows with ``s``); ``0`` when
    even uniform popularity gives the top 1% more than ``top_share``.
    """
    ranks = np.arange(1, authors + 1, dtype=np.float64)
    top = max(1, authors // 100)
    low, high = 0.0, 4.0
    for _ in range(50):
        middle = (low + high) / 2
        weights = ranks**-middle
        if weights[:top].sum() / weights.sum() < top_share:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True, slots=True)
class SyntheticWorld:
    """The SYNTHETIC catalog and what the users are drawn from.

    User rows ``0 .. authors - 1`` are the authors (``syn:author:<rank>``, by
    popularity), the next ``readers`` rows the readers (``syn:reader:<i>``).

    Attributes:
        catalog: the catalog the story index serves.
        now: the benchmark's clock, epoch seconds (an hour after the newest story).
        authors: author users.
        readers: reader users.
        recommendations: distinct recommendation edges.
        zipf_exponent: the authors' popularity exponent.
        seconds: how long each phase took: ``draw`` (numpy), ``add_columns``
            and ``load_recommendation_indices`` (the catalog's bulk path).
    """

    catalog: Catalog
    now: float
    authors: int
    readers: int
    recommendations: int
    zipf_exponent: float
    seconds: dict[str, float]


def build_world(real: RealStories, stories: int, seed: int, steps: Steps) -> SyntheticWorld:
    """Draw ``stories`` SYNTHETIC stories from ``real`` (see the module docstring) and load them.

    Vectorized draws; the Python loops are the catalog's own interning.
    """
    clock = time.perf_counter
    started = clock()
    rng = np.random.default_rng(seed)
    authors, readers = max(1, stories // STORIES_PER_AUTHOR), max(1, stories // STORIES_PER_READER)
    steps.step(f"drawing {stories:,} {LABEL} stories from {len(real):,} real ones")
    template = rng.integers(0, len(real), stories)
    exponent = fit_zipf_exponent(real.top_author_share, authors)
    popularity = np.arange(1, authors + 1, dtype=np.float64) ** -exponent
    author = rng.choice(authors, size=stories, p=popularity / popularity.sum())
    published_at = real.published_at[template] + rng.integers(0, DAY_SECONDS, stories)
    posts = np.repeat(np.arange(stories, dtype=np.int64), real.recommenders[template])
    users = authors + rng.integers(0, readers, len(posts))
    catalog = Catalog()
    author_names = [f"syn:author:{i}" for i in range(authors)]
    for name in author_names:
        catalog.users.intern(name)  # rows in popularity order; readers after them
    for i in range(readers):
        catalog.users.intern(f"syn:reader:{i}")
    seconds = {"draw": clock() - started}
    steps.step(f"loading the {LABEL} catalog (Catalog.add_columns)")
    started = clock()
    picks = template.tolist()
    catalog.add_columns(
        ids=[f"syn:{i}" for i in range(stories)],
        authors=[author_names[a] for a in author.tolist()],
        published_at=published_at,
        tags=[real.tags[t] for t in picks],
        publications=[real.publications[t] for t in picks],
        reading_time=real.reading_time[template],
        claps=real.claps[template],
        url_keys=np.arange(1, stories + 1, dtype=np.int64),
    )
    seconds["add_columns"] = clock() - started
    steps.step(f"loading {len(posts):,} {LABEL} recommendations (load_recommendation_indices)")
    started = clock()
    kept = catalog.load_recommendation_indices(users, posts)
    seconds["load_recommendation_indices"] = clock() - started
    return SyntheticWorld(
        catalog=catalog,
        now=float(published_at.max() + HOUR_SECONDS),
        authors=authors,
        readers=readers,
        recommendations=kept,
        zipf_exponent=exponent,
        seconds=seconds,
    )


# -- 2. synthetic users --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntheticUser:
    """A SYNTHETIC user drawn for a candidate count.

    Attributes:
        name: the user id (not in the catalog: the user wrote nothing).
        target: the candidate count wanted.
        candidates: the count ``aggregate`` finds (exact).
        context: what the context source answers.
        authors: followed authors; ``friends``: followed readers.
    """

    name: str
    target: int
    candidates: int
    context: RawContext
    authors: int
    friends: int


def _small(counts: IntArray, limit: int, rng: np.random.Generator, size: int) -> IntArray:
    """Up to ``size`` random indices whose count is in ``1 .. limit``."""
    eligible = np.flatnonzero((counts > 0) & (counts <= limit))
    return rng.choice(eligible, size=min(size, len(eligible)), replace=False).astype(np.int64)


def make_user(
    world: SyntheticWorld,
    view: CatalogView,
    trending_stories: IntArray,
    target: int,
    rng: np.random.Generator,
    name: str,
) -> SyntheticUser:
    """A user whose context makes :func:`aggregate` find ``target`` candidates (±5%).

    First the side providers, kept small: :data:`SIDE_FOLLOWS` topics and
    publications each finding at most :data:`SIDE_SHARE` of the target, and
    enough readers to recommend about :data:`FRIENDS_SHARE` of it; trending
    comes with every user. Then authors in a random order while the count
    stays within the target, then, from the rest, authors who each add at
    most :data:`AUTHOR_FILL_SHARE` of it (so the count ends within 1%).
    Authors write disjoint stories, so the count adds up exactly.

    Raises:
        ValueError: the target cannot be reached within :data:`TOLERANCE`.
    """
    side_limit = max(1, int(target * SIDE_SHARE))
    topics = _small(
        np.bincount(view.tag_values, minlength=view.topics), side_limit, rng, SIDE_FOLLOWS
    )
    in_publication = view.publication[view.publication >= 0]
    per_publication = np.bincount(in_publication, minlength=view.publications)
    publications = _small(per_publication, side_limit, rng, SIDE_FOLLOWS)
    per_reader = max(1.0, world.recommendations / world.readers)
    friend_count = int(min(MAX_FRIENDS, world.readers, max(1, target * FRIENDS_SHARE / per_reader)))
    friends = world.authors + rng.choice(world.readers, friend_count, replace=False)
    side = UserContext(
        user=name,
        user_row=-1,
        following=friends.astype(np.int32),
        topics=topics.astype(np.int32),
        publications=publications.astype(np.int32),
        muted=np.zeros(0, np.int32),
        read=np.zeros(0, np.int64),
    )
    found = np.zeros(view.size, np.bool_)
    found[aggregate(view, side, trending_stories).stories] = True
    remaining = target - int(found.sum())
    if remaining < 0:
        raise ValueError(f"the side providers alone find more than {target:,} candidates")
    extra = np.bincount(view.author[~found], minlength=world.authors)[: world.authors]
    order = rng.permutation(world.authors)
    prefix = np.cumsum(extra[order])
    take = int(np.searchsorted(prefix, remaining, side="right"))
    chosen = order[:take].tolist()
    remaining -= int(prefix[take - 1]) if take else 0
    rest = order[take:]
    rest = rest[(extra[rest] > 0) & (extra[rest] <= max(1, int(target * AUTHOR_FILL_SHARE)))]
    filled = np.cumsum(extra[rest])
    take = int(np.searchsorted(filled, remaining, side="right"))
    chosen.extend(rest[:take].tolist())
    remaining -= int(filled[take - 1]) if take else 0
    candidates = target - remaining
    if abs(candidates - target) > TOLERANCE * target:
        raise ValueError(f"cannot draw a user with {target:,} candidates (got {candidates:,})")
    found[np.isin(view.author, chosen)] = True
    others = np.setdiff1d(np.arange(world.authors), chosen)
    muted = rng.choice(others, min(MUTED_AUTHORS, len(others)), replace=False)
    read = rng.choice(np.flatnonzero(found), min(READ_STORIES, candidates), replace=False)
    user_ids, post_ids = view.user_ids, view.post_ids
    context = RawContext(
        following=[user_ids[row] for row in [*chosen, *friends.tolist()]],
        topics=[view.topic_names[t] for t in topics.tolist()],
        publications=[view.publication_names[p] for p in publications.tolist()],
        muted=[user_ids[row] for row in muted.tolist()],
        read=[post_ids[story] for story in read.tolist()],
    )
    return SyntheticUser(name, target, candidates, context, len(chosen), friend_count)


class SyntheticContexts:
    """A :class:`~actors.feeds.ContextSource` answering the SYNTHETIC users' contexts."""

    def __init__(self, users: Sequence[SyntheticUser]) -> None:
        self._contexts = {user.name: user.context for user in users}

    async def load(self, user: str) -> RawContext:
        """See :meth:`actors.feeds.ContextSource.load`."""
        await trio.lowlevel.checkpoint()
        context = self._contexts.get(user)
        if context is None:
            raise NotFound("user", user)
        return context


# -- 3. the pure pipeline ------------------------------------------------------------


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    """``{"p50": …, "p99": …, "mean": …}`` of ``values_ms`` (numpy's linear interpolation)."""
    values = np.asarray(values_ms, np.float64)
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "mean": float(values.mean())}


def time_pipeline(
    view: CatalogView,
    context: UserContext,
    trending_stories: IntArray,
    scorer: LinearScorer,
    now: float,
    params: PipelineParams,
    repeat: int,
) -> list[float]:
    """Milliseconds of each ``rank_feed`` + ``reasons_for`` (what the builder's thread runs)."""
    timings: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        ranked = rank_feed(view, context, trending_stories, scorer.score, now, params)
        reasons_for(view, ranked.candidates, ranked.positions, context.topics)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


# -- 3-5. through the actors ---------------------------------------------------------


class BenchmarkError(RuntimeError):
    """The actors answered something other than what was measured (a wrong page or count)."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchmarkError(message)


async def _settle() -> None:
    """Wait until every actor has handled what it was sent (the invalidations)."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.001)


async def measure_user(
    feeds: Feeds, user: SyntheticUser, *, repeat: int, warm_reads: int, steps: Steps
) -> dict[str, Any]:
    """Cold builds (after ``invalidate``) and warm reads of one user's first page.

    Raises:
        BenchmarkError: a page was not what was asked (cached when cold, or
            the build's candidate count differs from the user's).
    """
    page = await feeds.page(user.name, GetFeed(PAGE))  # starts the builder; not timed
    _check(page.candidates == user.candidates, f"{page.candidates} != {user.candidates}")
    counters = feeds.counters
    builds, before = counters.builds, dict(counters.step_ms)
    cold: list[float] = []
    steps.step(f"cold builds, {user.candidates:,} candidates", repeat)
    for _ in range(repeat):
        await feeds.invalidate(user.name)
        await _settle()
        started = time.perf_counter()
        page = await feeds.page(user.name, GetFeed(PAGE))
        cold.append((time.perf_counter() - started) * 1000)
        _check(not page.cached and len(page.items) == PAGE, "a cold page was cached or short")
        steps.advance()
    built = counters.builds - builds
    step_ms = {k: (v - before.get(k, 0.0)) / built for k, v in counters.step_ms.items()}
    warm: list[float] = []
    steps.step(f"warm reads, {user.candidates:,} candidates", warm_reads)
    for _ in range(warm_reads):
        started = time.perf_counter()
        page = await feeds.page(user.name, GetFeed(PAGE))
        warm.append((time.perf_counter() - started) * 1000)
        _check(page.cached and len(page.items) == PAGE, "a warm page was ranked or short")
        steps.advance()
    return {"cold_ms": percentiles(cold), "warm_ms": percentiles(warm), "steps_ms": step_ms}


async def measure_crowd(
    feeds: Feeds, crowd: Sequence[SyntheticUser], *, rounds: int, steps: Steps
) -> dict[str, Any]:
    """Wall time of ``len(crowd)`` cold first pages at once; a first, untimed round starts them."""
    walls: list[float] = []

    async def first_page(user: SyntheticUser) -> None:
        page = await feeds.page(user.name, GetFeed(PAGE))
        ok = not page.cached and page.candidates == user.candidates
        _check(ok, f"{user.name}: cached or {page.candidates} != {user.candidates} candidates")

    steps.step(f"{len(crowd)} users at once, all cold", rounds + 1)
    for round in range(rounds + 1):
        for user in crowd:
            await feeds.invalidate(user.name)
        await _settle()
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for user in crowd:
                nursery.start_soon(first_page, user)
        if round:
            walls.append(time.perf_counter() - started)
        steps.advance()
    wall = statistics.median(walls)
    return {
        "users": len(crowd),
        "candidates_each": [user.candidates for user in crowd],
        "build_threads": feeds.settings.build_threads,
        "rounds": rounds,
        "wall_s": wall,
        "wall_s_each_round": walls,
        "builds_per_s": len(crowd) / wall,
    }


async def measure_idle_builders(feeds: Feeds, count: int, *, steps: Steps) -> dict[str, Any]:
    """Bytes ``tracemalloc`` sees allocated per builder started by a registry ``Lookup``.

    Counts the actor object, its mailbox, its task and nursery, the
    supervisor's child record and the registry's entry (the user id itself
    comes with the request, so it is made before tracing starts).
    """
    names = [f"syn:idle:{i}" for i in range(count)]
    live = await feeds.live()
    steps.step(f"{count:,} idle builders (tracemalloc)", count)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for name in names:
            await feeds.registry.call(Lookup(name))
            steps.advance()
        await _settle()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    started = await feeds.live() - live
    _check(started == count, f"{started} builders started for {count} lookups")
    per_builder = (after - before) / count
    return {
        "builders": count,
        "bytes_per_builder": per_builder,
        "kb_per_builder": per_builder / 1024,
    }


async def measure_actors(
    world: SyntheticWorld,
    users: Sequence[SyntheticUser],
    crowd: Sequence[SyntheticUser],
    *,
    repeat: int,
    warm_reads: int,
    rounds: int,
    idle_builders: int,
    steps: Steps,
) -> dict[str, Any]:
    """Run the feeds subtree over the SYNTHETIC catalog and measure parts 3-5."""
    params = PipelineParams()
    settings = FeedSettings(
        idle_timeout=24 * HOUR_SECONDS,  # nothing expires during the run
        max_live=max(10_000, len(users) + len(crowd) + idle_builders + 1),
        params=params,
    )
    index = StoryIndex(
        None,
        params,
        catalog=world.catalog,
        trending_every=24 * HOUR_SECONDS,  # computed once: a shared cost, timed apart
        clock=lambda: world.now,
    )
    supervisor, feeds = feeds_subtree(
        store=None,
        bus=EventBus[SocialEvent](),
        context=SyntheticContexts([*users, *crowd]),
        cache=MemoryCache(),
        settings=settings,
        scorer=LinearScorer.from_file(),
        index=index,
        clock=lambda: world.now,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        try:
            sizes = [
                await measure_user(feeds, user, repeat=repeat, warm_reads=warm_reads, steps=steps)
                for user in users
            ]
            crowd_figures = await measure_crowd(feeds, crowd, rounds=rounds, steps=steps)
            memory = await measure_idle_builders(feeds, idle_builders, steps=steps)
        finally:
            supervisor.request_stop()
    return {"sizes": sizes, "throughput": crowd_figures, "memory": memory}


# -- 6. the whole run and its report -------------------------------------------------


def _verdict(what: str, limit: float, unit: str, measured: float) -> dict[str, Any]:
    gap = measured - limit
    return {
        "budget": what,
        "limit": limit,
        "unit": unit,
        "measured": measured,
        "met": measured <= limit,
        "gap": gap,
        "gap_pct": 100 * gap / limit,
    }


@dataclass(frozen=True, slots=True)
class Inputs:
    """What one run measures.

    Attributes:
        sizes: candidate counts of the measured users.
        stories: SYNTHETIC stories in the catalog (more than every size).
        repeat: cold builds per size (and pure pipeline runs, trending passes).
        warm_reads: warm reads per size.
        parallel: users built at once for the throughput, ...
        parallel_size: ... of this many candidates each.
        rounds: timed throughput rounds (median wall time).
        idle_builders: builders started for the memory figure.
        seed: the seed of every draw.
    """

    sizes: tuple[int, ...] = SIZES
    stories: int = STORIES
    repeat: int = 15
    warm_reads: int = 2000
    parallel: int = 50
    parallel_size: int = 100_000
    rounds: int = 3
    idle_builders: int = 2000
    seed: int = 42

    def __post_init__(self) -> None:
        largest = max([*self.sizes, self.parallel_size])
        if largest * (1 + TOLERANCE) >= self.stories:
            raise ValueError(
                f"{self.stories:,} stories cannot hold a user with {largest:,} candidates"
            )
        counts = (self.repeat, self.warm_reads, self.parallel, self.rounds, self.idle_builders)
        if not self.sizes or min(counts) < 1:
            raise ValueError("sizes must be given; repeat, reads, users and builders >= 1")


def run(
    inputs: Inputs, *, source: Path, output: Path | None = None, console: Console | None = None
) -> Path:
    """Run the benchmark (see the module docstring); print the tables; return the JSON path.

    Args:
        inputs: what to measure.
        source: the directory holding the real story files.
        output: the JSON file (default ``bench/results/feeds.json``).
        console: where progress and tables go; ``None``: quiet.

    Raises:
        OSError, MalformedInput: the real files cannot be read.
        ValueError: a user's candidate count cannot be drawn.
    """
    with contextlib.ExitStack() as stack:
        steps: Steps = QuietSteps()
        if console is not None:
            steps = stack.enter_context(RichSteps.on(console))
        steps.step(f"reading the real stories from {source}")
        real = read_real(source)
        world = build_world(real, inputs.stories, inputs.seed, steps)
        figures = measure(world, inputs, steps)
    document = report(real, world, inputs, figures, source=source)
    rows = document.pop("rows")
    if console is not None:
        print_report(console, document, rows)
    return write_json("feeds", rows, document, output)


def measure(world: SyntheticWorld, inputs: Inputs, steps: Steps) -> dict[str, Any]:
    """Draw the users, time trending and the pure pipeline, then measure through the actors."""
    params = PipelineParams()
    view = world.catalog.view()
    steps.step("trending: the story index's shared pass over the catalog", inputs.repeat)
    trending_ms: list[float] = []
    for _ in range(inputs.repeat):
        started = time.perf_counter()
        hot = trending(view, world.now, params)
        trending_ms.append((time.perf_counter() - started) * 1000)
        steps.advance()
    rng = np.random.default_rng([inputs.seed, 1])
    steps.step(f"drawing the {LABEL} users", len(inputs.sizes) + inputs.parallel)
    users: list[SyntheticUser] = []
    for target in [*inputs.sizes, *[inputs.parallel_size] * inputs.parallel]:
        name = f"syn:user:{len(users)}"
        users.append(make_user(world, view, hot, target, rng, name))
        steps.advance()
    measured, crowd = users[: len(inputs.sizes)], users[len(inputs.sizes) :]
    scorer = LinearScorer.from_file()
    pipeline: list[dict[str, float]] = []
    for user in measured:
        steps.step(f"pure pipeline, {user.candidates:,} candidates")
        raw = user.context
        context = raw.resolve(view, user.name)
        timings = time_pipeline(view, context, hot, scorer, world.now, params, inputs.repeat)
        pipeline.append(percentiles(timings))
    actors = trio.run(
        functools.partial(
            measure_actors,
            world,
            measured,
            crowd,
            repeat=inputs.repeat,
            warm_reads=inputs.warm_reads,
            rounds=inputs.rounds,
            idle_builders=inputs.idle_builders,
            steps=steps,
        )
    )
    return {
        "trending_ms": percentiles(trending_ms),
        "users": measured,
        "pipeline_ms": pipeline,
        **actors,
    }


STEPS = ("aggregate", "preprocess", "annotate", "rank", "postprocess", "cache")
"""The builder's timed steps (``FeedCounters.step_ms``)."""


def report(
    real: RealStories,
    world: SyntheticWorld,
    inputs: Inputs,
    figures: dict[str, Any],
    *,
    source: Path,
) -> dict[str, Any]:
    """The JSON document: inputs, catalog, users, every figure, budgets (``rows``: one per size)."""
    view = world.catalog.view()
    users: list[SyntheticUser] = figures["users"]
    rows: list[dict[str, Any]] = []
    steps_ms: list[dict[str, Any]] = []
    for user, sizes, pipeline in zip(users, figures["sizes"], figures["pipeline_ms"], strict=True):
        rows.append(
            {
                "what": f"{LABEL} user, target {user.target:,}",
                "candidates": user.candidates,
                "cold_p50_ms": sizes["cold_ms"]["p50"],
                "cold_p99_ms": sizes["cold_ms"]["p99"],
                "pipeline_p50_ms": pipeline["p50"],
                "pipeline_p99_ms": pipeline["p99"],
                "warm_p50_ms": sizes["warm_ms"]["p50"],
                "warm_p99_ms": sizes["warm_ms"]["p99"],
            }
        )
        measured = {step: sizes["steps_ms"].get(step, 0.0) for step in STEPS}
        total = sum(measured.values())
        steps_ms.append(
            {
                "what": f"{user.candidates:,} candidates",
                **measured,
                "sum": total,
                "outside_pipeline": sizes["cold_ms"]["mean"] - total,
            }
        )
    largest = max(rows, key=lambda row: int(row["candidates"]))
    memory = figures["memory"]
    budgets = [
        _verdict(
            f"cold build p50, {largest['candidates']:,} candidates "
            f"(budget at {COLD_BUDGET_CANDIDATES:,}), through the actors",
            COLD_BUDGET_MS,
            "ms",
            largest["cold_p50_ms"],
        ),
        _verdict(
            "warm read p50, worst size", WARM_BUDGET_MS, "ms", max(r["warm_p50_ms"] for r in rows)
        ),
        _verdict(
            "memory per idle feed builder", IDLE_BUILDER_BUDGET_KB, "KB", memory["kb_per_builder"]
        ),
    ]
    return {
        "label": LABEL,
        "data": (
            f"{LABEL} catalog and users drawn (numpy default_rng({inputs.seed})) from the real "
            "Hacker News and Medium stories: claps/points, reading time, tags, publication and "
            "date (+ jitter within a day) of a random real story; Zipf author popularity fitted "
            "to the real top-1% author share; recommendations per the demo world's rule by "
            "uniform reader users (bench/feeds.py)"
        ),
        "seed": inputs.seed,
        "inputs": {
            "source": str(source),
            "files": real.files,
            "real_stories": len(real),
            **{k: v for k, v in _fields(inputs).items() if k != "seed"},
            "page": PAGE,
            "pipeline": _fields(PipelineParams()),
            "build_threads": figures["throughput"]["build_threads"],
        },
        "catalog": {
            "stories": len(world.catalog),
            "authors": world.authors,
            "readers": world.readers,
            "recommendations": world.recommendations,
            "topics": view.topics,
            "publications": view.publications,
            "zipf_exponent": world.zipf_exponent,
            "real_top_author_share": real.top_author_share,
            "now": world.now,
            "build_s": sum(world.seconds.values()),
            "build_s_by_phase": world.seconds,
        },
        "users": [
            {
                "target": user.target,
                "candidates": user.candidates,
                "off_target_pct": 100 * (user.candidates - user.target) / user.target,
                "followed_authors": user.authors,
                "followed_readers": user.friends,
                "topics": len(user.context.topics),
                "publications": len(user.context.publications),
                "muted": len(user.context.muted),
                "read": len(user.context.read),
            }
            for user in users
        ],
        "trending_ms": figures["trending_ms"],
        "steps_ms": steps_ms,
        "throughput": figures["throughput"],
        "memory": memory,
        "budgets": budgets,
        "rows": rows,
    }


def _fields(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


def print_report(console: Console, document: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The tables: sizes, steps, throughput and memory, budgets."""
    catalog, seed = document["catalog"], document["seed"]
    title = (
        f"ranked feeds, {LABEL} catalog of {catalog['stories']:,} stories (seed {seed}); "
        f"cold: p50/p99 of {document['inputs']['repeat']}, warm: of "
        f"{document['inputs']['warm_reads']}"
    )
    print_table(title, rows, console)
    print_table(
        "cold build, mean ms per step (FeedCounters.step_ms / builds); outside = mean - sum",
        document["steps_ms"],
        console,
    )
    crowd, memory = document["throughput"], document["memory"]
    print_table(
        f"throughput, memory and the rest ({LABEL})",
        [
            {
                "what": f"{crowd['users']} users x ~{min(crowd['candidates_each']):,}+ "
                f"candidates, all cold, {crowd['build_threads']} build threads",
                "value": crowd["builds_per_s"],
                "unit": f"builds/s (wall {crowd['wall_s']:.2f} s, median of {crowd['rounds']})",
            },
            {
                "what": f"idle feed builder ({memory['builders']:,} started by Lookup)",
                "value": memory["kb_per_builder"],
                "unit": "KB each (tracemalloc)",
            },
            {
                "what": f"{LABEL} catalog build: draw, add_columns, load_recommendation_indices",
                "value": catalog["build_s"],
                "unit": "s ("
                + ", ".join(f"{v:.1f}" for v in catalog["build_s_by_phase"].values())
                + f"; {catalog['recommendations']:,} recommendations)",
            },
            {
                "what": "trending pass over the catalog (story index, shared)",
                "value": document["trending_ms"]["p50"],
                "unit": "ms p50",
            },
        ],
        console,
    )
    print_table(
        "budgets",
        [
            {
                "what": budget["budget"],
                "budget": f"<= {budget['limit']:g} {budget['unit']}",
                "measured": budget["measured"],
                "met": "met" if budget["met"] else "MISSED",
                "gap": f"{budget['gap']:+.2f} {budget['unit']} ({budget['gap_pct']:+.0f}%)",
            }
            for budget in document["budgets"]
        ],
        console,
    )


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"100k,300k,1M"`` or ``"100000,300000"`` → candidate counts.

    Raises:
        ValueError: not a comma-separated list of counts >= 1.
    """
    sizes: list[int] = []
    for part in text.replace("_", "").split(","):
        item = part.strip().lower()
        scale = {"k": 1_000, "m": 1_000_000}.get(item[-1:], 1)
        number = int(float(item[:-1] if scale > 1 else item) * scale)
        if number < 1:
            raise ValueError(f"a size must be >= 1, got {part!r}")
        sizes.append(number)
    return tuple(sizes)


if __name__ == "__main__":
    run(Inputs(), source=Path("../shared/data"), console=Console(width=200))
