"""GoSocial's reads, each answered on one graph session by the reader that owns it.

The questions of "How Medium Goes Social"
(https://medium.engineering/how-medium-goes-social-b7dbefa6d413): "Have any
of my friends liked this post?" (:class:`FriendsWhoRecommended`), the
avatars under a post (:class:`Recommenders`), "How can I find new people to
follow?" (:class:`WhoToFollow`), and counts, neighbour pages and posts.

A :class:`~actors.social.graph_reader.GraphReader` answers each request with
:meth:`Reads.answer` on its own session, so a read crosses one mailbox. The
common path is one statement (:mod:`actors.social.queries`), fetched as a
:class:`~stores.graph.Table` whose columns come in the order the statement
returns them; the few follow-ups run on the same session: which id was
missing when a statement found nothing (``USER_EXISTS`` / ``POST_EXISTS``),
and who-to-follow's exact query when a tie straddles its window's cut.

Errors: :class:`~actors.social.errors.NotFound` for an unknown user or post;
the session's :class:`~stores.errors.BackendUnavailable` and
:class:`~stores.errors.QueryError` pass through (the reader turns the first
into ``GraphUnavailable`` and crashes on the second).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from actors.social import queries
from actors.social.errors import NotFound
from actors.social.messages import (
    Counts,
    CountsResult,
    FriendsWhoRecommended,
    GetPost,
    Neighbours,
    PostView,
    RankedUsers,
    Recommenders,
    Suggestion,
    UsersPage,
    WhoToFollow,
)
from stores.graph import GraphSession

READS = (Counts, Neighbours, Recommenders, FriendsWhoRecommended, WhoToFollow, GetPost)
"""The domain reads a reader answers (each on one session)."""


class Reads:
    """The domain reads, over whichever session a reader passes in.

    Args:
        dialect: the graph's dialect (``GraphStore.dialect``): picks
            who-to-follow's query forms.

    Raises:
        KeyError: an unknown dialect.
    """

    def __init__(self, dialect: str) -> None:
        self._who_to_follow_top, self._who_to_follow_exact = queries.WHO_TO_FOLLOW_BY_DIALECT[
            dialect
        ]
        self._handlers: dict[type, Callable[[GraphSession, Any], Awaitable[Any]]] = {
            Counts: self.counts,
            Neighbours: self.neighbours,
            Recommenders: self.recommenders,
            FriendsWhoRecommended: self.friends_who_recommended,
            WhoToFollow: self.who_to_follow,
            GetPost: self.get_post,
        }

    async def answer(self, session: GraphSession, request: Any) -> Any:
        """The reply to one of :data:`READS` (see :mod:`actors.social.messages`).

        Raises:
            NotFound: an unknown user or post.
            TypeError: ``request`` is not a domain read.
        """
        handler = self._handlers.get(type(request))
        if handler is None:
            raise TypeError(f"not a social read: {type(request).__name__}")
        return await handler(session, request)

    async def counts(self, session: GraphSession, request: Counts) -> CountsResult:
        """Followings and followers: one statement."""
        table = await session.fetch(queries.COUNTS, {"user": request.user})
        if not table.rows:
            raise NotFound("user", request.user)
        following, followers = table.rows[0]
        return CountsResult(int(following), int(followers))

    async def counts_many(
        self, session: GraphSession, requests: list[Counts]
    ) -> list[CountsResult | NotFound]:
        """The counts of several users in one statement (:data:`queries.COUNTS_MANY`):
        per request, its result or :class:`NotFound` (in request order)."""
        users = list(dict.fromkeys(request.user for request in requests))
        table = await session.fetch(queries.COUNTS_MANY, {"users": users})
        found = {
            str(id): CountsResult(int(following), int(followers))
            for id, following, followers in table.rows
        }
        return [found.get(request.user) or NotFound("user", request.user) for request in requests]

    async def neighbours(self, session: GraphSession, request: Neighbours) -> UsersPage:
        """A page of ids after ``request.after``, in one statement whatever its size.

        The split of large pages into key ranges read by several readers is
        the caller's (:func:`actors.social.scatter.read_page`).
        """
        user, limit = request.user, request.limit
        params = {"user": user, "after": request.after, "limit": limit + 1}
        table = await session.fetch(queries.PAGE[request.direction], params)
        if not table.rows:
            raise NotFound("user", user)
        ids = [row[0] for row in table.rows if row[0] is not None]
        return UsersPage(tuple(ids[:limit]), ids[limit - 1] if len(ids) > limit else None)

    async def recommenders(self, session: GraphSession, request: Recommenders) -> RankedUsers:
        """The most recent recommenders and their total: one statement (columns total, id, at)."""
        table = await session.fetch(
            queries.RECOMMENDERS, {"post": request.post, "limit": request.limit}
        )
        if not table.rows:
            raise NotFound("post", request.post)
        users = tuple(row[1] for row in table.rows if row[1] is not None)
        return RankedUsers(users, int(table.rows[0][0]))

    async def friends_who_recommended(
        self, session: GraphSession, request: FriendsWhoRecommended
    ) -> RankedUsers:
        """Followed users who recommended the post: one statement (columns id, at)."""
        user, post = request.user, request.post
        table = await session.fetch(queries.FRIENDS_WHO_RECOMMENDED, {"user": user, "post": post})
        if not table.rows:
            await _raise_missing(session, user=user, post=post)
        friends = [row[0] for row in table.rows if row[0] is not None]
        return RankedUsers(tuple(friends[: request.limit]), len(friends))

    async def who_to_follow(
        self, session: GraphSession, request: WhoToFollow
    ) -> tuple[Suggestion, ...]:
        """Suggestions from the top candidates by mutual count; the exact query if a tie is cut."""
        user, limit = request.user, request.limit
        window = 2 * limit + 10
        table = await session.fetch(self._who_to_follow_top, {"user": user, "window": window})
        if not table.rows:
            await _raise_missing(session, user=user)
            return ()
        decided = top_suggestions(table.rows, limit=limit, window=window)
        if decided is not None:
            return decided
        table = await session.fetch(self._who_to_follow_exact, {"user": user, "limit": limit})
        return tuple(Suggestion(id, int(mutual)) for id, mutual in table.rows)

    async def get_post(self, session: GraphSession, request: GetPost) -> PostView:
        """A post's fields and recommendation count: one statement (columns as PostView's)."""
        table = await session.fetch(queries.GET_POST, {"post": request.post})
        if not table.rows:
            raise NotFound("post", request.post)
        (id, author, title, url, tags, publication, published_at, reading_time, claps, count) = (
            table.rows[0]
        )
        return PostView(
            id=id,
            author=author,
            title=title,
            url=url,
            tags=tuple(tags or ()),
            publication=publication,
            published_at=published_at,
            reading_time=None if reading_time is None else float(reading_time),
            claps=claps,
            recommendations=int(count),
        )


async def _raise_missing(session: GraphSession, *, user: str = "", post: str = "") -> None:
    """Raise NotFound for ``user`` or ``post`` if unknown (checked in that order)."""
    if user and not (await session.fetch(queries.USER_EXISTS, {"id": user})).rows:
        raise NotFound("user", user)
    if post and not (await session.fetch(queries.POST_EXISTS, {"id": post})).rows:
        raise NotFound("post", post)


def top_suggestions(
    rows: Sequence[Sequence[Any]], *, limit: int, window: int
) -> tuple[Suggestion, ...] | None:
    """The first ``limit`` suggestions by mutual count desc then id asc, if ``rows`` decide them.

    Args:
        rows: ``(id, mutual)`` of the ``window`` candidates with the most
            mutual follows, where a tie at the cut may have been split anyhow.
        limit: suggestions wanted (< ``window``).
        window: how many candidates were asked for.

    Returns:
        The suggestions; ``None`` when ``rows`` is a full window whose
        smallest mutual count equals that of the ``limit``-th suggestion (a
        candidate left out with that count might sort before it by id).
    """
    ranked = sorted(
        (Suggestion(id, int(mutual)) for id, mutual in rows),
        key=lambda suggestion: (-suggestion.mutual, suggestion.user),
    )
    if len(ranked) >= window > limit and ranked[limit - 1].mutual <= ranked[-1].mutual:
        return None
    return tuple(ranked[:limit])
