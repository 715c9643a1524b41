"""The graph writer: the one actor through which every write to the graph goes.

One writer handling one message at a time makes each write's "check, then
act" safe without locks (a follow knows whether it created the edge; a post
id is taken or not), matches the backends (Ladybug runs one write
transaction at a time; GoSocial queued its writes to the Neo4j master), and
orders the domain events it publishes as the writes were committed.

After a write that changed the graph, the writer publishes its event
(``followed``, ``unfollowed``, ``recommended``, ``unrecommended``, ``muted``,
``unmuted``, ``blocked``, ``unblocked``, ``read``, ``deleted``) on the event
bus; a write that changed nothing publishes nothing. Publishing waits for
subscribers that asked for backpressure (see :mod:`actors.bus`).

A block removes the follows between its two users, both ways, in the same
statement, and publishes an ``unfollowed`` for each follow it removed before
its ``blocked``, so a consumer of follows alone stays right; a follow across
a block (either way) is refused with :class:`~actors.social.errors.BlockedError`.

Publishing a post ("Can I tell all my friends once I've published something
new?", https://medium.engineering/how-medium-goes-social-b7dbefa6d413) is the
writer's too: it writes the post, then fans it out, reading the author's
followers in key ranges on the reader pool (:func:`actors.social.scatter.fan_out`)
and publishing one ``published`` event per range, before it takes its next
message. Two things need that, and no other actor gives them: the fan-out
finishes even when the caller stops waiting (a cancelled call abandons its
reply, not the work), and a post's ``published`` events come before any
later write's event, so a ``deleted`` never overtakes the fan-out of its
post. The cost: other writes wait for the fan-out, one range read per
``fanout_chunk`` followers, ``fanout_parallelism`` at a time.

Each write is a single Cypher statement, hence a single transaction. When it
finds nothing to act on, a second (read) query tells which id was unknown (a
delete names one post only, so it needs none); for a follow between known
users, nothing to act on means a block.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from actors.bus import EventBus
from actors.runtime import Actor, ActorCrashed, ActorUnavailable
from actors.social import queries, scatter
from actors.social.errors import (
    AlreadyExists,
    BlockedError,
    GraphUnavailable,
    InvalidArgument,
    NotFound,
    WorkerCrashed,
    WorkerUnavailable,
)
from actors.social.events import (
    Blocked,
    Followed,
    Muted,
    PostDeleted,
    PostRead,
    Published,
    Recommended,
    SocialEvent,
    Unblocked,
    Unfollowed,
    Unmuted,
    Unrecommended,
)
from actors.social.messages import (
    Block,
    CreatePost,
    DeletePost,
    Follow,
    MarkRead,
    Mute,
    PostCreated,
    PostDraft,
    Publish,
    PublishResult,
    Recommend,
    Unblock,
    Unfollow,
    Unmute,
    Unrecommend,
)
from actors.social.pool import ReaderPool
from stores.errors import BackendUnavailable
from stores.graph import GraphSession, GraphStore, Row


def epoch_seconds() -> int:
    """The current time as whole epoch seconds (the graph's time unit)."""
    return int(time.time())


def new_post_id() -> str:
    """A fresh post id: 32 hex digits (a random UUID)."""
    return uuid.uuid4().hex


class GraphWriter(Actor[Any]):
    """Writes follows, recommendations, mutes, blocks, reads and posts, and publishes their events.

    Args:
        store: the graph port; a session is opened at each (re)start.
        bus: where the domain events go.
        readers: the reader pool a post's fan-out reads the followers on.
        name: the actor's name.
        mailbox_size: queued writes before senders wait.
        clock: returns the time to stamp, in epoch seconds.
        new_id: makes an id for a post submitted without one.
        fanout_chunk: follower ids per ``published`` event.
        fanout_parallelism: most range queries of one fan-out in flight at
            once (default: the number of readers).

    Replies:
        ``bool`` to :class:`Follow`, :class:`Unfollow`, :class:`Recommend`,
        :class:`Unrecommend`, :class:`Mute`, :class:`Unmute`, :class:`Block`,
        :class:`Unblock`, :class:`MarkRead` and :class:`DeletePost` (whether
        the graph changed; always ``True`` for a delete, which either deletes
        or is NotFound);
        :class:`PostCreated` to :class:`CreatePost`; :class:`PublishResult`
        to :class:`Publish`.

    Raises (as replies):
        NotFound: a user or post is not in the graph.
        InvalidArgument: a user following, muting or blocking themself.
        BlockedError: a follow between two users one of whom blocks the other.
        AlreadyExists: the post id is taken.
        GraphUnavailable: the backend cannot be reached.
        WorkerUnavailable, WorkerCrashed: a reader failed during a fan-out
            (the post is written; its fan-out stopped part-way).

    Raises:
        ValueError: ``fanout_chunk`` < 1.
    """

    def __init__(
        self,
        store: GraphStore,
        bus: EventBus[SocialEvent],
        *,
        readers: ReaderPool,
        name: str = "graph_writer",
        mailbox_size: int = 64,
        clock: Callable[[], int] = epoch_seconds,
        new_id: Callable[[], str] = new_post_id,
        fanout_chunk: int = 500,
        fanout_parallelism: int | None = None,
    ) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        if fanout_chunk < 1:
            raise ValueError("fanout_chunk must be >= 1")
        self._store = store
        self._bus = bus
        self._readers = readers
        self._clock = clock
        self._new_id = new_id
        self.fanout_chunk = fanout_chunk
        self.fanout_parallelism = fanout_parallelism or len(readers)
        self._session: GraphSession | None = None

    async def on_start(self) -> None:
        self._session = self._store.session()

    async def on_stop(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    async def handle(self, message: Any) -> Any:
        try:
            return await self._write(message)
        except BackendUnavailable as exc:
            raise GraphUnavailable(str(exc)) from exc
        except ActorUnavailable as down:  # a reader, during a fan-out
            raise WorkerUnavailable(str(down)) from down
        except ActorCrashed as crash:
            raise WorkerCrashed(str(crash)) from crash

    async def _write(self, message: Any) -> Any:
        match message:
            case Follow(follower, followee):
                if follower == followee:
                    raise InvalidArgument("a user cannot follow themself")
                at = self._clock()
                params = {"follower": follower, "followee": followee}
                rows = await self._run(queries.FOLLOW, params)
                if not rows:
                    await self._raise_missing((follower, followee), "")
                    raise BlockedError(follower, followee)
                if rows[0]["changed"]:
                    await self._bus.publish(Followed(follower, followee, at))
                    return True
                return False
            case Unfollow(follower, followee):
                at = self._clock()
                params = {"follower": follower, "followee": followee}
                if await self._changed(queries.UNFOLLOW, params, users=(follower, followee)):
                    await self._bus.publish(Unfollowed(follower, followee, at))
                    return True
                return False
            case Recommend(user, post):
                at = self._clock()
                stamped = {"user": user, "post": post, "at": at}
                if await self._changed(queries.RECOMMEND, stamped, users=(user,), post=post):
                    await self._bus.publish(Recommended(user, post, at))
                    return True
                return False
            case Unrecommend(user, post):
                at = self._clock()
                params = {"user": user, "post": post}
                if await self._changed(queries.UNRECOMMEND, params, users=(user,), post=post):
                    await self._bus.publish(Unrecommended(user, post, at))
                    return True
                return False
            case Mute(user, author):
                if user == author:
                    raise InvalidArgument("a user cannot mute themself")
                at = self._clock()
                stamped = {"user": user, "author": author, "at": at}
                if await self._changed(queries.MUTE, stamped, users=(user, author)):
                    await self._bus.publish(Muted(user, author, at))
                    return True
                return False
            case Unmute(user, author):
                at = self._clock()
                params = {"user": user, "author": author}
                if await self._changed(queries.UNMUTE, params, users=(user, author)):
                    await self._bus.publish(Unmuted(user, author, at))
                    return True
                return False
            case Block(blocker, blocked):
                return await self._block(blocker, blocked)
            case Unblock(blocker, blocked):
                at = self._clock()
                params = {"blocker": blocker, "blocked": blocked}
                if await self._changed(queries.UNBLOCK, params, users=(blocker, blocked)):
                    await self._bus.publish(Unblocked(blocker, blocked, at))
                    return True
                return False
            case MarkRead(user, post):
                at = self._clock()
                stamped = {"user": user, "post": post, "at": at}
                if await self._changed(queries.MARK_READ, stamped, users=(user,), post=post):
                    await self._bus.publish(PostRead(user, post, at))
                    return True
                return False
            case DeletePost(post):
                at = self._clock()
                rows = await self._run(queries.DELETE_POST, {"post": post})
                if not rows:
                    raise NotFound("post", post)
                await self._bus.publish(PostDeleted(post, rows[0]["author"], at))
                return True
            case CreatePost(author, draft):
                return await self._create_post(author, draft)
            case Publish(author, draft):
                created = await self._create_post(author, draft)
                notified = await self._fan_out(created, draft)
                return PublishResult(created.post, notified)
        raise TypeError(f"{self.name} cannot handle {type(message).__name__}")

    async def _changed(
        self, cypher: str, params: Mapping[str, object], *, users: tuple[str, ...], post: str = ""
    ) -> bool:
        """Run an edge write; ``changed`` from its row, or NotFound when it had none."""
        rows = await self._run(cypher, params)
        if not rows:
            await self._raise_missing(users, post)
        return bool(rows[0]["changed"])

    async def _block(self, blocker: str, blocked: str) -> bool:
        """Write the block and drop the follows between the two; publish what changed.

        The events come in the order a reader of permissions needs:
        ``blocked`` if the block is new (so the realtime audience ends the blocked
        user's subscriptions as *blocked*, not as a mere unfollow), then an
        ``unfollowed`` per follow removed (``blocker`` → ``blocked`` first). A
        repeated block finds no follow to remove (a follow across a block is
        refused) and publishes nothing.
        """
        if blocker == blocked:
            raise InvalidArgument("a user cannot block themself")
        at = self._clock()
        params = {"blocker": blocker, "blocked": blocked, "at": at}
        rows = await self._run(queries.BLOCK, params)
        if not rows:
            await self._raise_missing((blocker, blocked), "")
        row = rows[0]
        if row["changed"]:
            await self._bus.publish(Blocked(blocker, blocked, at))
        if row["unfollowed"]:
            await self._bus.publish(Unfollowed(blocker, blocked, at))
        if row["unfollowed_back"]:
            await self._bus.publish(Unfollowed(blocked, blocker, at))
        return bool(row["changed"])

    async def _create_post(self, author: str, draft: PostDraft) -> PostCreated:
        post = draft.id if draft.id is not None else self._new_id()
        published_at = self._clock()
        tags = list(dict.fromkeys(draft.tags))
        params: dict[str, Any] = {
            "id": post,
            "author": author,
            "title": draft.title,
            "published_at": published_at,
        }
        optional = {
            "url": draft.url,
            "publication": draft.publication,
            "reading_time": draft.reading_time,
        }
        params.update({name: value for name, value in optional.items() if value is not None})
        if tags:
            params["tags"] = tags
        present = frozenset(name for name, value in optional.items() if value is not None)
        rows = await self._run(queries.create_post(present, tags=bool(tags)), params)
        if not rows:
            await self._raise_missing((author,), "")
            raise AlreadyExists("post", post)
        return PostCreated(post, author, published_at)

    async def _fan_out(self, created: PostCreated, draft: PostDraft) -> int:
        """Tell every follower of the author, one ``published`` event per range of followers.

        Each event carries the post's fields from ``draft`` (tags distinct, as
        :meth:`_create_post` stores them).

        Returns:
            How many followers were told.
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

    async def _raise_missing(self, users: tuple[str, ...], post: str) -> None:
        """Raise NotFound for the first unknown id among ``users`` and ``post``."""
        for user in users:
            if not await self._session_read(queries.USER_EXISTS, {"id": user}):
                raise NotFound("user", user)
        if post and not await self._session_read(queries.POST_EXISTS, {"id": post}):
            raise NotFound("post", post)

    async def _run(self, cypher: str, params: Mapping[str, object]) -> list[Row]:
        assert self._session is not None
        return await self._session.write(cypher, params)

    async def _session_read(self, cypher: str, params: dict[str, Any]) -> list[Row]:
        assert self._session is not None
        return await self._session.read(cypher, params)
