"""Rex's feed pipeline as pure, vectorized functions over a :class:`CatalogView`.

Rex (https://medium.engineering/rex-a-new-look-at-feeds-5e4d8ba1d4d5) builds a
feed in seven steps; the first five are here, with no I/O and no Python loop
per candidate (the only loop is :func:`diversify`'s, over the final list of at
most ``feed_size`` stories)::

    aggregate   candidate providers → candidates + which providers found each
    preprocess  filters: read, own, muted authors, past the horizon, deleted
    annotate    features gathered by index → float32[n, len(FEATURES)]
    rank        a Scorer (actors.feeds.scorer) → float32[n]
    postprocess top by score, dedupe by URL, diversify by author and publication

Steps 6 (cache) and 7 (validate on read) need the cache and the user's live
state, so they live in the feed builder actor.

Candidate providers are bit flags, so one story found by several providers is
one candidate that remembers all of them (its reasons). The graph-backed part
of the providers (whom the user follows, which topics and publications) is
fetched concurrently by the builder before :func:`aggregate` runs.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from actors.feeds.catalog import CatalogView

AUTHOR = 1
PUBLICATION = 2
TOPIC = 4
FRIENDS = 8
TRENDING = 16
PROVIDERS = {
    AUTHOR: "followed author",
    PUBLICATION: "followed publication",
    TOPIC: "followed topic",
    FRIENDS: "friends' recommendations",
    TRENDING: "trending",
}
"""Candidate providers: bit flag → name."""

FEATURES = (
    "log_age_hours",
    "log_engagement",
    "reading_time",
    "author_followed",
    "log_friends",
    "topic_overlap",
    "publication_followed",
    "trending",
)
"""The feature columns :func:`annotate` fills, in order."""

HOUR_SECONDS = 3600.0
DAY_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class PipelineParams:
    """Tuning of the pipeline.

    Attributes:
        horizon_seconds: stories older than this are filtered out.
        trending_count: stories the trending provider offers.
        trending_half_life_hours: the engagement half-life of the trending score.
        feed_size: most stories kept in a ranked feed.
        diversity_max: most stories of one author (or publication) ...
        diversity_window: ... in any window of this many consecutive positions.
        rerank_factor: postprocess looks at the best ``feed_size * rerank_factor``.
    """

    horizon_seconds: float = 3650 * DAY_SECONDS
    trending_count: int = 500
    trending_half_life_hours: float = 24.0
    feed_size: int = 500
    diversity_max: int = 2
    diversity_window: int = 10
    rerank_factor: int = 4

    def __post_init__(self) -> None:
        if self.horizon_seconds <= 0 or self.trending_half_life_hours <= 0:
            raise ValueError("horizon and half-life must be > 0")
        if min(self.trending_count, self.feed_size, self.rerank_factor) < 0:
            raise ValueError("counts must be >= 0")
        if not 1 <= self.diversity_max <= self.diversity_window:
            raise ValueError("need 1 <= diversity_max <= diversity_window")


@dataclass(frozen=True, slots=True)
class UserContext:
    """What a build knows of the user, as catalog indices (names not in the catalog dropped).

    Attributes:
        user: the user's id.
        user_row: the user's row in the user table, ``-1`` if absent.
        following: user rows of the followed users, ``int32[f]``.
        topics: topic indices followed, ``int32[t]``.
        publications: publication indices followed, ``int32[p]``.
        muted: user rows of muted authors, ``int32[m]``.
        read: story indices already read, ``int64[r]``.
    """

    user: str
    user_row: int
    following: npt.NDArray[np.int32]
    topics: npt.NDArray[np.int32]
    publications: npt.NDArray[np.int32]
    muted: npt.NDArray[np.int32]
    read: npt.NDArray[np.int64]

    @classmethod
    def resolve(
        cls,
        view: CatalogView,
        user: str,
        *,
        following: list[str],
        topics: list[str],
        publications: list[str],
        muted: list[str],
        read: list[str],
    ) -> UserContext:
        """Map names to the view's indices."""
        return cls(
            user=user,
            user_row=_row(view.user_index, user, view.users),
            following=_rows(view.user_index, following, view.users),
            topics=_rows(view.topic_index, topics, view.topics),
            publications=_rows(view.publication_index, publications, view.publications),
            muted=_rows(view.user_index, muted, view.users),
            read=_rows(view.post_index, read, view.size).astype(np.int64),
        )


def _row(index: dict[str, int], name: str, limit: int) -> int:
    row = index.get(name)
    return -1 if row is None or row >= limit else row


def _rows(index: dict[str, int], names: list[str], limit: int) -> npt.NDArray[np.int32]:
    rows = [row for row in map(index.get, names) if row is not None and row < limit]
    return np.asarray(rows, np.int32)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Candidate stories and what is known of each (all arrays length ``n``).

    Attributes:
        stories: story indices, ascending, ``int64[n]``.
        providers: bit flags of the providers that found each, ``uint8[n]``.
        friends: followed users who recommended each, ``int32[n]``.
        topic_hits: followed topics among each story's tags, ``int16[n]``.
    """

    stories: npt.NDArray[np.int64]
    providers: npt.NDArray[np.uint8]
    friends: npt.NDArray[np.int32]
    topic_hits: npt.NDArray[np.int16]

    def __len__(self) -> int:
        return len(self.stories)

    def take(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> Candidates:
        """The candidates selected by a mask or positions."""
        return Candidates(
            self.stories[keep], self.providers[keep], self.friends[keep], self.topic_hits[keep]
        )


def trending(view: CatalogView, now: float, params: PipelineParams) -> npt.NDArray[np.int64]:
    """The ``trending_count`` live stories with the best recency-weighted engagement.

    Score (in log space, so decades-old data never underflows):
    ``ln(log1p(claps + recommendations)) - ln 2 * age_hours / half_life``.

    Returns:
        Story indices, ``int64[≤ trending_count]``, best first.
    """
    if view.size == 0 or params.trending_count == 0:
        return np.zeros(0, np.int64)
    engagement = np.log1p(view.claps + view.recommendations.astype(np.int64))
    age_hours = np.maximum(now - view.published_at, 0) / HOUR_SECONDS
    with np.errstate(divide="ignore"):
        score = np.log(engagement) - (math.log(2) / params.trending_half_life_hours) * age_hours
    score[view.deleted | (engagement == 0)] = -np.inf
    count = min(params.trending_count, int(np.isfinite(score).sum()))
    if count == 0:
        return np.zeros(0, np.int64)
    best = np.argpartition(-score, count - 1)[:count]
    return best[np.argsort(-score[best], kind="stable")].astype(np.int64)


def aggregate(
    view: CatalogView,
    context: UserContext,
    trending_stories: npt.NDArray[np.int64],
) -> Candidates:
    """Step 1: run every candidate provider and merge what they found.

    Providers: stories by followed authors, in followed publications, tagged
    with followed topics, recommended by followed users, and trending.
    """
    flags = np.zeros(view.size, np.uint8)
    if len(context.following):
        followed = np.zeros(view.users, np.bool_)
        followed[context.following] = True
        flags |= followed[view.author].view(np.uint8) * np.uint8(AUTHOR)
        friends = view.friends_recommendations(context.following)
        flags |= (friends > 0).view(np.uint8) * np.uint8(FRIENDS)
    else:
        friends = np.zeros(view.size, np.int32)
    if len(context.publications):
        followed_publications = np.zeros(view.publications + 1, np.bool_)
        followed_publications[context.publications + 1] = True
        in_followed = followed_publications[view.publication + 1]
        flags |= in_followed.view(np.uint8) * np.uint8(PUBLICATION)
    topic_hits = view.tag_hits(context.topics)
    if len(context.topics):
        flags |= (topic_hits > 0).view(np.uint8) * np.uint8(TOPIC)
    if len(trending_stories):
        flags[trending_stories[trending_stories < view.size]] |= np.uint8(TRENDING)
    stories = np.flatnonzero(flags)
    return Candidates(stories, flags[stories], friends[stories], topic_hits[stories])


def preprocess(
    view: CatalogView,
    context: UserContext,
    candidates: Candidates,
    now: float,
    params: PipelineParams,
) -> Candidates:
    """Step 2: drop deleted, own, muted-author, already-read and too-old stories."""
    stories = candidates.stories
    authors = view.author[stories]
    keep = ~view.deleted[stories]
    keep &= view.published_at[stories] >= now - params.horizon_seconds
    if context.user_row >= 0:
        keep &= authors != context.user_row
    if len(context.muted):
        muted = np.zeros(view.users, np.bool_)
        muted[context.muted] = True
        keep &= ~muted[authors]
    if len(context.read):
        keep &= ~np.isin(stories, context.read)
    return candidates.take(keep)


def annotate(view: CatalogView, candidates: Candidates, now: float) -> npt.NDArray[np.float32]:
    """Step 3: the feature matrix, ``float32[n, len(FEATURES)]`` (column-major).

    Columns (see :data:`FEATURES`): log1p of the age in hours; log1p of claps +
    recommendations; reading time in minutes, capped at 60; 1 if the author is
    followed; log1p of the friends who recommended it; followed topics among
    its tags, capped at 3; 1 if its publication is followed; 1 if trending.
    """
    stories = candidates.stories
    flags = candidates.providers
    features = np.empty((len(stories), len(FEATURES)), np.float32, order="F")
    age_hours = np.maximum(now - view.published_at[stories], 0) / HOUR_SECONDS
    features[:, 0] = np.log1p(age_hours)
    features[:, 1] = np.log1p(view.claps[stories] + view.recommendations[stories])
    features[:, 2] = np.minimum(view.reading_time[stories], 60.0)
    features[:, 3] = (flags & AUTHOR) != 0
    features[:, 4] = np.log1p(candidates.friends)
    features[:, 5] = np.minimum(candidates.topic_hits, 3)
    features[:, 6] = (flags & PUBLICATION) != 0
    features[:, 7] = (flags & TRENDING) != 0
    return features


def best_first(scores: npt.NDArray[np.float32], limit: int) -> npt.NDArray[np.int64]:
    """Positions of the ``limit`` best scores, best first (ties: lower position first)."""
    count = min(limit, len(scores))
    if count == 0:
        return np.zeros(0, np.int64)
    if count < len(scores):
        kth = np.partition(scores, len(scores) - count)[len(scores) - count]
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)[: count - len(above)]
        top = np.sort(np.concatenate([above, ties]))
    else:
        top = np.arange(len(scores))
    return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)


def diversify(
    view: CatalogView,
    candidates: Candidates,
    order: npt.NDArray[np.int64],
    params: PipelineParams,
) -> list[int]:
    """Step 5: dedupe by URL and diversify, walking ``order`` (candidate positions, best first).

    Rule: in every window of ``diversity_window`` consecutive positions, at most
    ``diversity_max`` stories share an author, and at most ``diversity_max``
    share a publication. Greedy: each position takes the best story that keeps
    the rule; a story that does not fit waits (up to ``feed_size`` of them) and
    is tried first at the next positions. Of several stories with one URL only
    the best is kept (a waiting story whose URL was placed meanwhile is dropped
    when it is met). The loop runs over at most ``len(order)`` stories, never
    over all candidates.

    Waiting stories are kept per publication, best first, so a publication at
    its limit (often most of a feed's candidates come from one) is skipped as
    a whole instead of story by story; within an open publication only the
    stories of the few authors at their limit are passed over.

    Returns:
        Candidate positions in feed order, at most ``feed_size``.
    """
    stories = candidates.stories[order]
    authors = view.author[stories].tolist()
    publications = view.publication[stories].tolist()
    urls = view.url_key[stories].tolist()
    limit, window = params.diversity_max, params.diversity_window - 1
    recent: deque[int] = deque()
    author_count: Counter[int] = Counter()
    publication_count: Counter[int] = Counter()
    seen_urls: set[int] = set()
    waiting: dict[int, list[int]] = {}  # publication (-1: none) -> waiting positions, ascending
    waiting_count = 0
    placed: list[int] = []

    def fits(k: int) -> bool:
        publication = publications[k]
        return author_count[authors[k]] < limit and (
            publication < 0 or publication_count[publication] < limit
        )

    def place(k: int) -> None:
        placed.append(k)
        if urls[k]:
            seen_urls.add(urls[k])
        recent.append(k)
        author_count[authors[k]] += 1
        if publications[k] >= 0:
            publication_count[publications[k]] += 1
        if len(recent) > window:
            old = recent.popleft()
            author_count[authors[old]] -= 1
            if publications[old] >= 0:
                publication_count[publications[old]] -= 1

    def take_waiting() -> int:
        """The best waiting story that fits now (removed), or -1."""
        nonlocal waiting_count
        best, best_queue, best_index = -1, None, -1
        for publication in list(waiting):
            queue = waiting[publication]
            if publication >= 0 and publication_count[publication] >= limit:
                continue
            i = 0
            while i < len(queue):
                k = queue[i]
                if best >= 0 and k > best:
                    break
                if urls[k] and urls[k] in seen_urls:
                    del queue[i]  # a better story with this URL was placed meanwhile
                    waiting_count -= 1
                    continue
                if author_count[authors[k]] < limit:
                    best, best_queue, best_index = k, queue, i
                    break
                i += 1
            if not queue:
                del waiting[publication]
        if best_queue is not None:
            del best_queue[best_index]
            waiting_count -= 1
            if not best_queue:
                del waiting[publications[best] if publications[best] >= 0 else -1]
        return best

    next_k = 0
    while len(placed) < params.feed_size:
        chosen = take_waiting() if waiting else -1
        while chosen < 0 and next_k < len(stories):
            k, next_k = next_k, next_k + 1
            if urls[k] and urls[k] in seen_urls:
                continue
            if fits(k):
                chosen = k
            elif waiting_count < params.feed_size:
                waiting.setdefault(max(publications[k], -1), []).append(k)
                waiting_count += 1
        if chosen < 0:
            break
        place(chosen)
    return [int(order[k]) for k in placed]


@dataclass(frozen=True, slots=True)
class Ranked:
    """What steps 1-5 produce for one user.

    Attributes:
        candidates: the candidates after preprocessing.
        found: candidates the providers found (before preprocessing).
        positions: candidate positions in feed order (diversified), ≤ ``feed_size``.
        scores: the scorer's scores of all candidates, ``float32[len(candidates)]``.
        timings_ms: milliseconds per step: aggregate, preprocess, annotate, rank, postprocess.
    """

    candidates: Candidates
    found: int
    positions: list[int]
    scores: npt.NDArray[np.float32]
    timings_ms: dict[str, float]


def rank_feed(
    view: CatalogView,
    context: UserContext,
    trending_stories: npt.NDArray[np.int64],
    score: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    now: float,
    params: PipelineParams,
) -> Ranked:
    """Run steps 1-5 (blocking CPU work: call it in a worker thread).

    Args:
        score: the rank step, ``float32[n, len(FEATURES)] → float32[n]``.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter
    started = clock()
    found = aggregate(view, context, trending_stories)
    timings["aggregate"] = (clock() - started) * 1000
    started = clock()
    candidates = preprocess(view, context, found, now, params)
    timings["preprocess"] = (clock() - started) * 1000
    started = clock()
    features = annotate(view, candidates, now)
    timings["annotate"] = (clock() - started) * 1000
    started = clock()
    scores = score(features) if len(candidates) else np.zeros(0, np.float32)
    if scores.shape != (len(candidates),):
        raise ValueError(f"the scorer returned shape {scores.shape} for {len(candidates)} rows")
    scores = np.nan_to_num(scores, nan=-np.inf)  # a broken model's NaN ranks last
    timings["rank"] = (clock() - started) * 1000
    started = clock()
    order = best_first(scores, params.feed_size * params.rerank_factor)
    positions = diversify(view, candidates, order, params)
    timings["postprocess"] = (clock() - started) * 1000
    return Ranked(candidates, len(found), positions, scores, timings)
