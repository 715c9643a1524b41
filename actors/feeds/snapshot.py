"""Ranked feed snapshots: what the *cache* step stores and the *validate* step reads.

A snapshot is one ranking of one user's feed: the stories in order with their
scores and reasons. Pages are cut from one snapshot (a cursor names it and a
position in it), so paging never shows a story twice or skips one because
the ranking changed meanwhile. Snapshots are stored in the cache backend
(msgspec MessagePack, TTL) under ``starling:feed:{<user>}:<snapshot>``, and the
user's newest snapshot id under ``starling:feed:{<user>}:latest`` (the braces: a Redis
Cluster hash tag, so a user's keys share a slot).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt

from actors.feeds.catalog import CatalogView
from actors.feeds.pipeline import AUTHOR, FRIENDS, PUBLICATION, TOPIC, TRENDING, Candidates

KEY_PREFIX = "starling:feed:"


class FeedSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """One ranked feed (parallel lists, feed order).

    Attributes:
        id: the snapshot id (random, 16 hex digits).
        user: whose feed.
        built_at: epoch seconds when it was ranked.
        built_ms: how long the build took, milliseconds.
        candidates: candidate stories the providers found.
        posts: post ids.
        authors: their authors' user ids.
        scores: the scorer's scores.
        reasons: human-readable reasons per story.
    """

    id: str
    user: str
    built_at: float
    built_ms: float
    candidates: int
    posts: list[str]
    authors: list[str]
    scores: list[float]
    reasons: list[list[str]]

    def __len__(self) -> int:
        return len(self.posts)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(FeedSnapshot)


def encode_snapshot(snapshot: FeedSnapshot) -> bytes:
    """The cache's bytes for ``snapshot``."""
    return _encoder.encode(snapshot)


def decode_snapshot(data: bytes) -> FeedSnapshot:
    """The snapshot from the cache's bytes.

    Raises:
        msgspec.DecodeError: not a snapshot (a foreign or older value).
    """
    return _decoder.decode(data)


def snapshot_key(user: str, snapshot: str) -> str:
    """The cache key of one snapshot."""
    return f"{KEY_PREFIX}{{{user}}}:{snapshot}"


def latest_key(user: str) -> str:
    """The cache key holding the id of the user's newest snapshot."""
    return f"{KEY_PREFIX}{{{user}}}:latest"


def reasons_for(
    view: CatalogView,
    candidates: Candidates,
    positions: list[int],
    followed_topics: npt.NDArray[np.int32],
) -> list[list[str]]:
    """Human-readable reasons of the chosen candidates (a loop over the feed, not the candidates).

    ``"followed author"``, ``"3 friends recommended"``, ``"topic: machine learning"``
    (the first of its tags the user follows), ``"publication: Towards Data Science"``,
    ``"trending"``.
    """
    topics = set(followed_topics.tolist())
    reasons: list[list[str]] = []
    for position in positions:
        story = int(candidates.stories[position])
        flags = int(candidates.providers[position])
        why: list[str] = []
        if flags & AUTHOR:
            why.append("followed author")
        if flags & FRIENDS:
            friends = int(candidates.friends[position])
            why.append(f"{friends} friend{'s' if friends != 1 else ''} recommended")
        if flags & TOPIC:
            start, end = view.tag_offsets[story], view.tag_offsets[story + 1]
            first = next(t for t in view.tag_values[start:end].tolist() if t in topics)
            why.append(f"topic: {view.topic_names[first]}")
        if flags & PUBLICATION:
            why.append(f"publication: {view.publication_names[view.publication[story]]}")
        if flags & TRENDING:
            why.append("trending")
        reasons.append(why)
    return reasons


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One story of a page."""

    post: str
    score: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FeedPage:
    """A page of a feed, the reply to ``GetFeed``.

    Attributes:
        items: the stories of this page, best first.
        next_position: where the next page starts in the snapshot, ``None`` at the end.
        snapshot: the snapshot id.
        candidates: candidate stories the snapshot's build considered.
        cached: served from an existing snapshot (``False``: ranked for this call).
        built_ms: the snapshot's build time, milliseconds.
        dropped: stale stories skipped by validation on this page.
    """

    items: tuple[FeedItem, ...]
    next_position: int | None
    snapshot: str
    candidates: int
    cached: bool
    built_ms: float
    dropped: int


def cut_page(
    snapshot: FeedSnapshot,
    start: int,
    limit: int,
    *,
    stale: Callable[[str, str], bool],
    cached: bool,
) -> FeedPage:
    """Step 7 (validate) and paging: the next ``limit`` stories from ``start`` that are not stale.

    Args:
        snapshot: the ranked feed.
        start: position to start at.
        limit: stories wanted.
        stale: ``stale(post, author)`` is true for a story that must no longer show.
        cached: passed through to the page.
    """
    items: list[FeedItem] = []
    dropped = 0
    position = start
    while position < len(snapshot) and len(items) < limit:
        post, author = snapshot.posts[position], snapshot.authors[position]
        if stale(post, author):
            dropped += 1
        else:
            items.append(
                FeedItem(post, snapshot.scores[position], tuple(snapshot.reasons[position]))
            )
        position += 1
    return FeedPage(
        items=tuple(items),
        next_position=position if position < len(snapshot) else None,
        snapshot=snapshot.id,
        candidates=snapshot.candidates,
        cached=cached,
        built_ms=snapshot.built_ms,
        dropped=dropped,
    )


def count_fresh(snapshot: FeedSnapshot, stale: Callable[[str, str], bool]) -> int:
    """How many stories of the snapshot are not stale."""
    pairs = zip(snapshot.posts, snapshot.authors, strict=True)
    return sum(not stale(post, author) for post, author in pairs)
