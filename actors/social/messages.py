"""Messages to and from the social actors (frozen: never mutated in flight).

Requests are sent with ``ActorRef.call``; each names its reply type. Ids are
opaque strings (the JSON-RPC boundary checks their shape), times are epoch
seconds.

- to a graph reader (through :class:`~actors.social.pool.ReaderPool`): the
  reads :class:`Counts`, :class:`Neighbours`, :class:`Recommenders`,
  :class:`FriendsWhoRecommended`, :class:`WhoToFollow`, :class:`GetPost`,
  each answered with its reply type below, and the raw queries :class:`Read`
  → ``list[Row]`` and :class:`Fetch` → :class:`~stores.graph.Table`;
- to the graph writer: :class:`Follow`, :class:`Unfollow`, :class:`Recommend`,
  :class:`Unrecommend`, :class:`Mute`, :class:`Unmute`, :class:`Block`,
  :class:`Unblock`, :class:`MarkRead`, :class:`DeletePost` → ``bool`` (whether
  the graph changed);
  :class:`CreatePost` → :class:`PostCreated`; :class:`Publish` →
  :class:`PublishResult`.

:class:`~actors.social.handle.Social` takes every request above but
:class:`Read`, :class:`Fetch` and :class:`CreatePost`, and sends it to the one
actor that answers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["following", "followers", "blocking"]
"""Which neighbours of ``user``: ``following``, the users ``user`` follows; ``followers``,
the users who follow ``user``; ``blocking``, the users ``user`` blocks."""


# -- to a graph reader ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    """Run one read query; the reply is its rows (``list[dict[str, Any]]``)."""

    cypher: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Run one read query; the reply is a :class:`~stores.graph.Table` (rows as value lists)."""

    cypher: str
    params: Mapping[str, Any]


# -- writes (to the writer) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Follow:
    """``follower`` follows ``followee``; reply ``True`` if the edge is new."""

    follower: str
    followee: str


@dataclass(frozen=True, slots=True)
class Unfollow:
    """``follower`` stops following ``followee``; reply ``True`` if an edge was removed."""

    follower: str
    followee: str


@dataclass(frozen=True, slots=True)
class Recommend:
    """``user`` recommends ``post``; reply ``True`` if the recommendation is new."""

    user: str
    post: str


@dataclass(frozen=True, slots=True)
class Unrecommend:
    """``user`` withdraws their recommendation of ``post``; reply ``True`` if one was removed."""

    user: str
    post: str


@dataclass(frozen=True, slots=True)
class Mute:
    """``user`` mutes ``author`` (hides their posts); reply ``True`` if the mute is new."""

    user: str
    author: str


@dataclass(frozen=True, slots=True)
class Unmute:
    """``user`` unmutes ``author``; reply ``True`` if a mute was removed."""

    user: str
    author: str


@dataclass(frozen=True, slots=True)
class Block:
    """``blocker`` blocks ``blocked`` and the follows between them go, both ways.

    Reply ``True`` if the block is new.
    """

    blocker: str
    blocked: str


@dataclass(frozen=True, slots=True)
class Unblock:
    """``blocker`` lifts their block of ``blocked``; reply ``True`` if a block was removed."""

    blocker: str
    blocked: str


@dataclass(frozen=True, slots=True)
class MarkRead:
    """``user`` read ``post``; reply ``True`` the first time (a repeated read changes nothing)."""

    user: str
    post: str


@dataclass(frozen=True, slots=True)
class DeletePost:
    """Delete ``post`` and every edge it has; reply ``True`` (an unknown post is NotFound)."""

    post: str


@dataclass(frozen=True, slots=True)
class PostDraft:
    """A post as its author submits it.

    Attributes:
        id: the post id, or ``None`` to have one generated.
        title: the title.
        url: where the post lives, if anywhere.
        tags: topic names, distinct, in the author's order.
        publication: the publication's name, if any.
        reading_time: minutes.
    """

    title: str
    id: str | None = None
    url: str | None = None
    tags: tuple[str, ...] = ()
    publication: str | None = None
    reading_time: float | None = None


@dataclass(frozen=True, slots=True)
class CreatePost:
    """Write ``draft`` as a post by ``author`` (to the writer); reply :class:`PostCreated`."""

    author: str
    draft: PostDraft


@dataclass(frozen=True, slots=True)
class PostCreated:
    """Reply to :class:`CreatePost`: the post's id and its ``published_at`` (epoch s)."""

    post: str
    author: str
    published_at: int


# -- reads (to a reader) and publishing (to the writer) --------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """How many users ``user`` follows and how many follow them; reply :class:`CountsResult`."""

    user: str


@dataclass(frozen=True, slots=True)
class CountsResult:
    """Reply to :class:`Counts`."""

    following: int
    followers: int


@dataclass(frozen=True, slots=True)
class Neighbours:
    """A page of ``user``'s followings, followers or blocked users, by id; reply :class:`UsersPage`.

    ``after`` is exclusive; ``""`` starts at the beginning.
    """

    user: str
    direction: Direction
    limit: int
    after: str = ""


@dataclass(frozen=True, slots=True)
class UsersPage:
    """A page of user ids, ascending; ``last`` is the id to continue after, ``None`` at the end."""

    users: tuple[str, ...]
    last: str | None


@dataclass(frozen=True, slots=True)
class Recommenders:
    """Who recommended ``post``, most recent first; reply :class:`RankedUsers`."""

    post: str
    limit: int


@dataclass(frozen=True, slots=True)
class FriendsWhoRecommended:
    """The users ``user`` follows who recommended ``post``, most recent first; reply :class:`RankedUsers`."""  # noqa: E501

    user: str
    post: str
    limit: int


@dataclass(frozen=True, slots=True)
class RankedUsers:
    """Up to ``limit`` user ids in order, and how many there are in all."""

    users: tuple[str, ...]
    total: int


@dataclass(frozen=True, slots=True)
class WhoToFollow:
    """Suggested users for ``user``; reply ``tuple[Suggestion, ...]``."""

    user: str
    limit: int


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A user to follow and how many of the users one follows already follow them."""

    user: str
    mutual: int


@dataclass(frozen=True, slots=True)
class Publish:
    """Write a post and tell the author's followers; reply :class:`PublishResult`."""

    author: str
    draft: PostDraft


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Reply to :class:`Publish`: the post id and how many followers were notified."""

    post: str
    followers_notified: int


@dataclass(frozen=True, slots=True)
class GetPost:
    """A post's fields and recommendation count; reply :class:`PostView`."""

    post: str


@dataclass(frozen=True, slots=True)
class PostView:
    """A stored post (``None`` for the fields it does not have).

    Attributes:
        published_at: epoch seconds.
        reading_time: minutes.
        recommendations: how many users recommended it.
    """

    id: str
    author: str | None
    title: str | None
    url: str | None
    tags: tuple[str, ...]
    publication: str | None
    published_at: int | None
    reading_time: float | None
    claps: int | None
    recommendations: int
