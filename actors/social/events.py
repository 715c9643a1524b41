"""The social graph's domain events, published on the :mod:`actors.bus` after a write.

The graph writer publishes ``followed``, ``unfollowed``, ``recommended``,
``unrecommended``, ``muted``, ``unmuted``, ``blocked``, ``unblocked``, ``read``
and ``deleted`` once a write that changed the graph has committed (a repeated
follow, which changes nothing, publishes nothing). A block removes the follows
between the two users in both directions: it publishes ``blocked``, then an
``unfollowed`` for each follow it removed, so that a consumer of follows alone
stays right and a consumer of permissions learns of the block first. It
publishes ``published`` while it fans a new post out to the author's followers,
before its next write: one event per chunk of followers, so that each follower
appears in exactly one event (GoSocial's
"Can I tell all my friends once I've published something new?",
https://medium.engineering/how-medium-goes-social-b7dbefa6d413). A
``published`` event carries the post's tags, publication and reading time,
and ``deleted`` its author, so that a feed can index or drop a post without
reading the graph (the preprocess filters of the feed pipeline: already
read, muted, deleted).

Times are epoch seconds (ints), as stored in the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, get_args

import msgspec
import structlog

log = structlog.get_logger(__name__)


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
class Muted:
    """``user`` muted ``author`` (hid their posts from ``user``'s feeds) at ``at`` (epoch s)."""

    kind: ClassVar[str] = "muted"
    user: str
    author: str
    at: int


@dataclass(frozen=True, slots=True)
class Unmuted:
    """``user`` unmuted ``author`` at ``at`` (epoch s)."""

    kind: ClassVar[str] = "unmuted"
    user: str
    author: str
    at: int


@dataclass(frozen=True, slots=True)
class Blocked:
    """``blocker`` blocked ``blocked`` at ``at`` (epoch s).

    Neither may follow the other while the block stands, and each one's posts
    leave the other's feeds. The follows the block removed are published as
    :class:`Unfollowed` right after it.
    """

    kind: ClassVar[str] = "blocked"
    blocker: str
    blocked: str
    at: int


@dataclass(frozen=True, slots=True)
class Unblocked:
    """``blocker`` lifted their block of ``blocked`` at ``at`` (epoch s); no follow comes back."""

    kind: ClassVar[str] = "unblocked"
    blocker: str
    blocked: str
    at: int


@dataclass(frozen=True, slots=True)
class PostRead:
    """``user`` read ``post`` for the first time at ``at`` (epoch s)."""

    kind: ClassVar[str] = "read"
    user: str
    post: str
    at: int


@dataclass(frozen=True, slots=True)
class PostDeleted:
    """``post``, written by ``author``, was deleted with its edges at ``at`` (epoch s)."""

    kind: ClassVar[str] = "deleted"
    post: str
    author: str
    at: int


@dataclass(frozen=True, slots=True)
class Published:
    """One chunk of the fan-out of a new post to its author's followers.

    A post yields ``chunks`` events, numbered ``chunk = 0 .. chunks - 1``,
    whose ``followers`` are disjoint and together every follower of the
    author (each follower is in exactly one chunk). An author without
    followers still yields one event, with no followers. Every chunk carries
    the post's fields as written, so a consumer can index the post from any
    one of them without reading the graph.

    Attributes:
        post: the new post's id.
        author: its author's id.
        published_at: epoch seconds.
        followers: the follower ids of this chunk, ascending.
        chunk: this chunk's number.
        chunks: how many chunks the fan-out has.
        tags: the post's topic names, distinct, in the author's order.
        publication: the publication's name, if any.
        reading_time: minutes, if given.
    """

    kind: ClassVar[str] = "published"
    post: str
    author: str
    published_at: int
    followers: tuple[str, ...]
    chunk: int
    chunks: int
    tags: tuple[str, ...] = ()
    publication: str | None = None
    reading_time: float | None = None


SocialEvent = (
    Followed
    | Unfollowed
    | Recommended
    | Unrecommended
    | Muted
    | Unmuted
    | Blocked
    | Unblocked
    | PostRead
    | PostDeleted
    | Published
)
"""Every event the social actors publish."""


SHARED_TOPIC = "starling:feed-events"
"""The Pub/Sub topic domain events cross processes by (Redis only): the feeds' router
publishes its process's events there; the feeds and the realtime audience of every other
process read them."""


def _event_types() -> dict[str, type[Any]]:
    return {cls.__name__: cls for cls in get_args(SocialEvent)}


def encode_event(origin: str, event: SocialEvent) -> bytes:
    """A domain event as a Pub/Sub message: msgpack ``[origin, type name, fields]``."""
    return msgspec.msgpack.encode([origin, type(event).__name__, msgspec.to_builtins(event)])


def decode_event(data: bytes) -> tuple[str, SocialEvent]:
    """``(origin, event)`` from :func:`encode_event`'s bytes.

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: not an event.
        KeyError: an unknown event type.
    """
    origin, name, fields = msgspec.msgpack.decode(data, type=tuple[str, str, dict[str, Any]])
    event: SocialEvent = msgspec.convert(fields, type=_event_types()[name])
    return origin, event


def remote_event(data: bytes, origin: str) -> SocialEvent | None:
    """The event another process shared on :data:`SHARED_TOPIC`, or ``None``.

    ``None`` for this process's own (``origin``: it saw it on its bus already) and
    for a message that is not an event (logged and dropped: Pub/Sub is shared).
    """
    try:
        sender, event = decode_event(data)
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as bad:
        log.warning("not a domain event; dropped", topic=SHARED_TOPIC, error=str(bad))
        return None
    return None if sender == origin else event
