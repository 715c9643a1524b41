"""The social graph's domain events, published on the :mod:`actors.bus` after a write.

The graph writer publishes ``followed``, ``unfollowed``, ``recommended`` and
``unrecommended`` once a write that changed the graph has committed (a
repeated follow, which changes nothing, publishes nothing). The social
service publishes ``published`` while it fans a new post out to the author's
followers: one event per chunk of followers, so that each follower appears
in exactly one event (GoSocial's "Can I tell all my friends once I've
published something new?", https://medium.engineering/how-medium-goes-social-b7dbefa6d413).

Times are epoch seconds (ints), as stored in the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Followed:
    """``follower`` started following ``followee`` at ``at`` (epoch s)."""

    kind: ClassVar[str] = "followed"
    follower: str
    followee: str
    at: int


@dataclass(frozen=True, slots=True)
class Unfollowed:
    """``follower`` stopped following ``followee`` at ``at`` (epoch s)."""

    kind: ClassVar[str] = "unfollowed"
    follower: str
    followee: str
    at: int


@dataclass(frozen=True, slots=True)
class Recommended:
    """``user`` recommended ``post`` at ``at`` (epoch s)."""

    kind: ClassVar[str] = "recommended"
    user: str
    post: str
    at: int


@dataclass(frozen=True, slots=True)
class Unrecommended:
    """``user`` withdrew their recommendation of ``post`` at ``at`` (epoch s)."""

    kind: ClassVar[str] = "unrecommended"
    user: str
    post: str
    at: int


@dataclass(frozen=True, slots=True)
class Published:
    """One chunk of the fan-out of a new post to its author's followers.

    A post yields ``chunks`` events, numbered ``chunk = 0 .. chunks - 1``,
    whose ``followers`` are disjoint and together every follower of the
    author (each follower is in exactly one chunk). An author without
    followers still yields one event, with no followers.

    Attributes:
        post: the new post's id.
        author: its author's id.
        published_at: epoch seconds.
        followers: the follower ids of this chunk, ascending.
        chunk: this chunk's number.
        chunks: how many chunks the fan-out has.
    """

    kind: ClassVar[str] = "published"
    post: str
    author: str
    published_at: int
    followers: tuple[str, ...]
    chunk: int
    chunks: int


SocialEvent = Followed | Unfollowed | Recommended | Unrecommended | Published
"""Every event the social actors publish."""
