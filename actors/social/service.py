"""The social service (GoSocial): the social graph's operations, as one concurrent actor.

It answers the questions of "How Medium Goes Social"
(https://medium.engineering/how-medium-goes-social-b7dbefa6d413): "Have any
of my friends liked this post?" (:class:`FriendsWhoRecommended`), the
avatars under a post (:class:`Recommenders`), "Can I tell all my friends once
I've published something new?" (:class:`Publish`), "How can I find new
people to follow?" (:class:`WhoToFollow`), and follows, counts and
neighbour lists; and the writes a feed depends on: mutes, reads and deleting
a post.

Reads go to the pool of graph readers, large ones split into key ranges read
concurrently (:mod:`actors.social.scatter`); writes go to the one graph
writer. The service handles up to ``concurrency`` requests at once, each in
its own task, so a slow fan-out does not hold up a count.

Errors: the readers' and the writer's :class:`~actors.social.errors.SocialRejection`
replies pass through unchanged; a reader or the writer that is down or
crashed on the request becomes :class:`~actors.social.errors.WorkerUnavailable`
or :class:`~actors.social.errors.WorkerCrashed`, so the service itself never
crashes because another actor did.
"""

from __future__ import annotations

from typing import Any

from actors.bus import EventBus
from actors.runtime import Actor, ActorCrashed, ActorRef, ActorUnavailable
from actors.social import queries, scatter
from actors.social.errors import NotFound, WorkerCrashed, WorkerUnavailable
from actors.social.events import Published, SocialEvent
from actors.social.messages import (
    Counts,
    CountsResult,
    CreatePost,
    DeletePost,
    Follow,
    FriendsWhoRecommended,
    GetPost,
    MarkRead,
    Mute,
    Neighbours,
    PostCreated,
    PostDraft,
    PostView,
    Publish,
    PublishResult,
    RankedUsers,
    Recommend,
    Recommenders,
    Suggestion,
    Unfollow,
    Unmute,
    Unrecommend,
    WhoToFollow,
)
from actors.social.pool import ReaderPool
from stores.graph import Row

WRITES = (Follow, Unfollow, Recommend, Unrecommend, Mute, Unmute, MarkRead, DeletePost)
"""Requests forwarded to the graph writer as they are."""


class SocialService(Actor[Any]):
    """The social graph's operations over a reader pool and the writer.

    Args:
        readers: the graph reader pool.
        writer: the graph writer's ref.
        bus: where ``published`` events go.
        name: the actor's name.
        concurrency: requests handled at once.
        mailbox_size: requests queued before senders wait.
        page_chunk: ids per range query when a neighbour page is split.
        fanout_chunk: follower ids per ``published`` event.
        fanout_parallelism: most range queries of one fan-out in flight at once
            (default: the number of readers).

    Replies: see :mod:`actors.social.messages`.

    Raises (as replies):
        NotFound, InvalidArgument, AlreadyExists, GraphUnavailable: from the graph.
        WorkerUnavailable, WorkerCrashed: a reader or the writer failed.
    """

    def __init__(
        self,
        readers: ReaderPool,
        writer: ActorRef[Any],
        bus: EventBus[SocialEvent],
        *,
        name: str = "social",
        concurrency: int = 64,
        mailbox_size: int = 128,
        page_chunk: int = 250,
        fanout_chunk: int = 500,
        fanout_parallelism: int | None = None,
        dialect: str = "ladybug",
    ) -> None:
        super().__init__(name, mailbox_size=mailbox_size, concurrency=concurrency)
        if page_chunk < 1 or fanout_chunk < 1:
            raise ValueError("page_chunk and fanout_chunk must be >= 1")
        self._readers = readers
        self._who_to_follow_queries = queries.WHO_TO_FOLLOW_BY_DIALECT[dialect]
        self._writer = writer
        self._bus = bus
        self.page_chunk = page_chunk
        self.fanout_chunk = fanout_chunk
        self.fanout_parallelism = fanout_parallelism or len(readers)

    async def handle(self, message: Any) -> Any:
        try:
            return await self._dispatch(message)
        except ActorUnavailable as down:
            raise WorkerUnavailable(str(down)) from down
        except ActorCrashed as crash:
            raise WorkerCrashed(str(crash)) from crash

    async def _dispatch(self, message: Any) -> Any:
        if isinstance(message, WRITES):
            return await self._writer.call(message)
        match message:
            case Counts(user):
                rows = await self._read(queries.COUNTS, {"user": user})
                if not rows:
                    raise NotFound("user", user)
                return CountsResult(int(rows[0]["following"]), int(rows[0]["followers"]))
            case Neighbours(user, direction, limit, after):
                return await scatter.read_page(
                    self._readers,
                    user,
                    direction,
                    limit=limit,
                    after=after,
                    chunk=self.page_chunk,
                )
            case Recommenders(post, limit):
                rows = await self._read(queries.RECOMMENDERS, {"post": post, "limit": limit})
                if not rows:
                    raise NotFound("post", post)
                users = tuple(row["id"] for row in rows if row["id"] is not None)
                return RankedUsers(users, int(rows[0]["total"]))
            case FriendsWhoRecommended(user, post, limit):
                rows = await self._read(
                    queries.FRIENDS_WHO_RECOMMENDED, {"user": user, "post": post}
                )
                if not rows:
                    await self._raise_missing(user=user, post=post)
                friends = [row["id"] for row in rows if row["id"] is not None]
                return RankedUsers(tuple(friends[:limit]), len(friends))
            case WhoToFollow(user, limit):
                return await self._who_to_follow(user, limit)
            case Publish(author, draft):
                created: PostCreated = await self._writer.call(CreatePost(author, draft))
                notified = await self._fan_out(created, draft)
                return PublishResult(created.post, notified)
            case GetPost(post):
                rows = await self._read(queries.GET_POST, {"post": post})
                if not rows:
                    raise NotFound("post", post)
                return _post_view(rows[0])
        raise TypeError(f"{self.name} cannot handle {type(message).__name__}")

    async def _read(self, cypher: str, params: dict[str, Any]) -> list[Row]:
        return await self._readers.read(cypher, params)

    async def _raise_missing(self, *, user: str = "", post: str = "") -> None:
        """Raise NotFound for ``user`` or ``post`` if unknown (checked in that order)."""
        if user and not await self._read(queries.USER_EXISTS, {"id": user}):
            raise NotFound("user", user)
        if post and not await self._read(queries.POST_EXISTS, {"id": post}):
            raise NotFound("post", post)

    async def _who_to_follow(self, user: str, limit: int) -> tuple[Suggestion, ...]:
        """Suggestions from the top candidates by mutual count; exact query if a tie is cut."""
        window = 2 * limit + 10
        top, exact = self._who_to_follow_queries
        rows = await self._read(top, {"user": user, "window": window})
        if not rows:
            await self._raise_missing(user=user)
            return ()
        decided = top_suggestions(rows, limit=limit, window=window)
        if decided is not None:
            return decided
        rows = await self._read(exact, {"user": user, "limit": limit})
        return tuple(Suggestion(row["id"], int(row["mutual"])) for row in rows)

    async def _fan_out(self, created: PostCreated, draft: PostDraft) -> int:
        """Tell every follower of the author, one ``published`` event per range of followers.

        Each event carries the post's fields from ``draft`` (tags distinct, as
        the writer stores them).
        """
        tags = tuple(dict.fromkeys(draft.tags))

        async def deliver(chunk: int, chunks: int, followers: tuple[str, ...]) -> None:
            await self._bus.publish(
                Published(
                    created.post,
                    created.author,
                    created.published_at,
                    followers,
                    chunk,
                    chunks,
                    tags=tags,
                    publication=draft.publication,
                    reading_time=draft.reading_time,
                )
            )

        return await scatter.fan_out(
            self._readers,
            created.author,
            chunk=self.fanout_chunk,
            parallelism=self.fanout_parallelism,
            deliver=deliver,
        )


def top_suggestions(rows: list[Row], *, limit: int, window: int) -> tuple[Suggestion, ...] | None:
    """The first ``limit`` suggestions by mutual count desc then id asc, if ``rows`` decide them.

    Args:
        rows: ``{id, mutual}`` of the ``window`` candidates with the most
            mutual follows, where a tie at the cut may have been split anyhow.
        limit: suggestions wanted (< ``window``).
        window: how many candidates were asked for.

    Returns:
        The suggestions; ``None`` when ``rows`` is a full window whose
        smallest mutual count equals that of the ``limit``-th suggestion (a
        candidate left out with that count might sort before it by id).
    """
    ranked = sorted(
        (Suggestion(row["id"], int(row["mutual"])) for row in rows),
        key=lambda suggestion: (-suggestion.mutual, suggestion.user),
    )
    if len(ranked) >= window > limit and ranked[limit - 1].mutual <= ranked[-1].mutual:
        return None
    return tuple(ranked[:limit])


def _post_view(row: Row) -> PostView:
    reading_time = row["reading_time"]
    return PostView(
        id=row["id"],
        author=row["author"],
        title=row["title"],
        url=row["url"],
        tags=tuple(row["tags"] or ()),
        publication=row["publication"],
        published_at=row["published_at"],
        reading_time=None if reading_time is None else float(reading_time),
        claps=row["claps"],
        recommendations=int(row["recommendations"]),
    )
