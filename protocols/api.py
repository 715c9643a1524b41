"""The JSON-RPC methods: wire params (msgspec structs), results, and their handlers.

Handlers reach the domain only through the actor references in
:class:`Services`; they translate the actors' replies and errors into
JSON-RPC results and error objects.

Social methods (GoSocial; ids are 1-64 characters of ``[A-Za-z0-9_.:@-]``)::

    social.follow {follower, followee}                 → {created}
    social.unfollow {follower, followee}               → {removed}
    social.following {user, limit=100, cursor=null}    → {users, next_cursor}   limit 1..1000
    social.followers {user, limit=100, cursor=null}    → {users, next_cursor}   limit 1..1000
    social.counts {user}                               → {following, followers}
    social.recommend {user, post}                      → {created}
    social.unrecommend {user, post}                    → {removed}
    social.recommenders {post, limit=20}               → {users, total}         limit 1..100
    social.friends_who_recommended {user, post, limit=20} → {users, total}      limit 1..100
    social.who_to_follow {user, limit=10}              → {suggestions: [{user, mutual}…]}
                                                                                limit 1..100
    social.mute {user, author}                         → {created}
    social.unmute {user, author}                       → {removed}
    posts.publish {author, post: {id?, title, url?, tags?, publication?, reading_time?}}
                                                       → {post, followers_notified}
    posts.get {post}                                   → the post's fields + recommendations
    posts.read {user, post}                            → {created}
    posts.delete {post}                                → {deleted}

System methods (operators: ``/rpc`` takes the API key, or loopback clients without one)::

    system.health {}                                   → the supervision tree (as GET /health)
    system.stats {}                                    → per-actor figures, bus, realtime
    system.restart {path}                              → {path, restarts}; path like
                                                         "realtime/transformer-0"; restarts
                                                         it and what its strategy restarts
                                                         with it; unknown path: -32004

Feed methods (Rex)::

    feed.get {user, limit=20, cursor=null}             → {items: [{post, score, reasons}…],
                                                          next_cursor, snapshot, candidates,
                                                          cached, built_ms}       limit 1..100
    feed.invalidate {user}                             → {}

Realtime methods (Disqus; events enter the stream starling:events and reach
WebSocket subscribers of the channel, see actors/realtime/pipeline.py)::

    realtime.publish {channel, data}                   → {channel, offset, epoch}
    realtime.publish_many {events: [{channel, data}…]} → {published: [{channel, offset, epoch}…]}
                                                          data: a JSON object ≤ 64 KiB
    comments.add {user, post, text}                    → {channel, offset, epoch}
                                                          a ``comment`` event on post:<post>;
                                                          text 1..10,000 characters

Both return once the event is published (in this process's history, and
offered to the subscribers connected here); -32002 when that takes longer
than the publish timeout (the event is in the stream and will be published).

Application errors::

    -32001  service unavailable   the actor behind the method is down ("service
                                  unavailable") or the graph backend cannot be
                                  reached ("backend unavailable"); retry later
    -32002  timeout               no reply within the call timeout
    -32004  not found             an unknown user or post; data: {kind, id}
    -32602  invalid params        also: a malformed channel name, data not a JSON object
    -32009  already exists        posts.publish with a post id that is taken; data: {kind, id}
    -32010  snapshot expired      feed.get with a cursor whose ranked snapshot is gone; data:
                                  {snapshot}; ask again without a cursor

Following or muting yourself is an invalid param (-32602), as is any limit out of range.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import trio

from actors.bus import BusStatistics
from actors.feeds import BadCursor, Feeds, GetFeed, IndexUnavailable, SnapshotExpired
from actors.feeds import decode_cursor as decode_feed_cursor
from actors.feeds import encode_cursor as encode_feed_cursor
from actors.realtime.pipeline import InvalidEvent, PublishTimeout, Realtime, StreamUnavailable
from actors.realtime.receipts import Accepted
from actors.runtime import ActorCrashed, ActorRef, ActorUnavailable
from actors.social import (
    AlreadyExists,
    Counts,
    CountsResult,
    DeletePost,
    Direction,
    Follow,
    FriendsWhoRecommended,
    GetPost,
    GraphUnavailable,
    InvalidArgument,
    MarkRead,
    Mute,
    Neighbours,
    NotFound,
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
    UsersPage,
    WhoToFollow,
    WorkerCrashed,
    WorkerUnavailable,
)
from observability.health import health_tree
from protocols.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    SERVICE_UNAVAILABLE,
    Dispatcher,
    JsonRpcError,
    NoParams,
    not_found,
)
from supervisor import ChildStartError, SupervisorStatistics

TIMEOUT = -32002
ALREADY_EXISTS = -32009
SNAPSHOT_EXPIRED = -32010

Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")]
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]
SmallLimit = Annotated[int, msgspec.Meta(ge=1, le=100)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Tags = Annotated[list[Name], msgspec.Meta(max_length=20)]
Minutes = Annotated[float, msgspec.Meta(ge=0, le=10_000)]
ChannelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
CommentText = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]


class PublishEventParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{channel, data}`` (``realtime.publish``)."""

    channel: ChannelName
    data: dict[str, Any]


MAX_PUBLISH_MANY = 1_000
"""Most events in one ``realtime.publish_many`` call."""


class PublishManyParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{events: [{channel, data}…]}`` (``realtime.publish_many``), 1 to 1,000 events."""

    events: Annotated[
        list[PublishEventParams], msgspec.Meta(min_length=1, max_length=MAX_PUBLISH_MANY)
    ]


class RestartParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{path}`` (``system.restart``): child ids joined by ``/`` below the root."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class CommentParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, post, text}`` (``comments.add``)."""

    user: Id
    post: Id
    text: CommentText


class FeedParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, limit=20, cursor=null}`` (``feed.get``)."""

    user: Id
    limit: SmallLimit = 20
    cursor: str | None = None


class UserParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user}``."""

    user: Id


class FollowingParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, limit=100, cursor=null}`` (``social.following`` and ``social.followers``)."""

    user: Id
    limit: Limit = 100
    cursor: str | None = None


class FollowParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{follower, followee}``."""

    follower: Id
    followee: Id


class RecommendParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, post}``."""

    user: Id
    post: Id


class MuteParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, author}`` (``social.mute`` and ``social.unmute``)."""

    user: Id
    author: Id


class RecommendersParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{post, limit=20}``."""

    post: Id
    limit: SmallLimit = 20


class FriendsParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, post, limit=20}``."""

    user: Id
    post: Id
    limit: SmallLimit = 20


class WhoToFollowParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, limit=10}``."""

    user: Id
    limit: SmallLimit = 10


class PostParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A post to publish: ``{id?, title, url?, tags?, publication?, reading_time?}``.

    ``reading_time`` is in minutes; ``tags`` are topic names (at most 20,
    repeats ignored); an absent ``id`` is generated.
    """

    title: Title
    id: Id | None = None
    url: Url | None = None
    tags: Tags = []
    publication: Name | None = None
    reading_time: Minutes | None = None


class PublishParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{author, post: {...}}``."""

    author: Id
    post: PostParams


class GetPostParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{post}`` (``posts.get`` and ``posts.delete``)."""

    post: Id


class ReadParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, post}`` (``posts.read``)."""

    user: Id
    post: Id


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the remote address, as seen by the server."""

    client: str


@dataclass(frozen=True, slots=True)
class Services:
    """What the API may reach: the tree's statistics and the actors' refs.

    Attributes:
        tree: returns the root supervisor's statistics.
        social: the social service's ref.
        bus: returns the event bus's statistics (shown by ``system.stats``).
        feeds: the feeds subtree's handle (``None``: feed methods answer -32001).
        realtime: the realtime subtree's handle (``None``: realtime methods answer -32001).
        restart: restarts the child at a tree path (``Supervisor.restart_path`` of the
            root), for ``system.restart``; ``None``: -32001.
        call_timeout: seconds a method may wait for its actor's reply.
    """

    tree: Callable[[], SupervisorStatistics]
    social: ActorRef[Any]
    bus: Callable[[], BusStatistics] | None = None
    feeds: Feeds | None = None
    realtime: Realtime | None = None
    restart: Callable[[str], Awaitable[None]] | None = None
    call_timeout: float = 10.0
    started_at: float = field(default_factory=time.time)


def encode_cursor(last: str | None) -> str | None:
    """An opaque page cursor naming the last id returned (``None``: no more pages)."""
    if last is None:
        return None
    return base64.urlsafe_b64encode(f"v1:{last}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str:
    """The id to continue after (``""`` for the first page).

    Raises:
        JsonRpcError: -32602 for a cursor this server did not make.
    """
    if cursor is None:
        return ""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith("v1:") or len(text) <= 3:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params", {"detail": "malformed cursor"})
    return text[3:]


async def ask(services: Services, request: Any) -> Any:
    """Call the social service under the call timeout, mapping its errors to JSON-RPC errors.

    Raises:
        JsonRpcError: see the module docstring for the codes.
    """
    return await answer(services, lambda: services.social.call(request))


async def answer(services: Services, call: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``call()`` under the call timeout, mapping actor errors to JSON-RPC errors.

    Raises:
        JsonRpcError: see the module docstring for the codes.
    """
    try:
        with trio.fail_after(services.call_timeout):
            return await call()
    except trio.TooSlowError:
        raise JsonRpcError(TIMEOUT, "timeout", {"timeout_seconds": services.call_timeout}) from None
    except NotFound as missing:
        raise not_found(missing.kind, missing.id) from None
    except InvalidArgument as invalid:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params", {"detail": str(invalid)}) from None
    except AlreadyExists as taken:
        raise JsonRpcError(
            ALREADY_EXISTS, f"{taken.kind} already exists", {"kind": taken.kind, "id": taken.id}
        ) from None
    except SnapshotExpired as expired:
        raise JsonRpcError(
            SNAPSHOT_EXPIRED, "snapshot expired", {"snapshot": expired.snapshot}
        ) from None
    except BadCursor as bad:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params", {"detail": str(bad)}) from None
    except PublishTimeout as slow:
        raise JsonRpcError(TIMEOUT, "timeout", {"timeout_seconds": slow.seconds}) from None
    except InvalidEvent as invalid:
        data = {"detail": str(invalid), "index": invalid.index}
        raise JsonRpcError(INVALID_PARAMS, "Invalid params", data) from None
    except (GraphUnavailable, IndexUnavailable, StreamUnavailable) as outage:
        raise JsonRpcError(
            SERVICE_UNAVAILABLE, "backend unavailable", {"detail": str(outage)}
        ) from None
    except (WorkerUnavailable, ActorUnavailable) as down:
        raise JsonRpcError(
            SERVICE_UNAVAILABLE, "service unavailable", {"detail": str(down)}
        ) from None
    except (WorkerCrashed, ActorCrashed) as crash:
        raise JsonRpcError(INTERNAL_ERROR, "Internal error", {"type": _root_cause(crash)}) from None


def _root_cause(error: BaseException) -> str:
    """The type name of the innermost ``__cause__`` (the bug behind a crash)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return type(error).__name__


def _users_page(page: UsersPage) -> dict[str, Any]:
    return {"users": list(page.users), "next_cursor": encode_cursor(page.last)}


def _ranked(ranked: RankedUsers) -> dict[str, Any]:
    return {"users": list(ranked.users), "total": ranked.total}


def _post(view: PostView) -> dict[str, Any]:
    return {
        "id": view.id,
        "author": view.author,
        "title": view.title,
        "url": view.url,
        "tags": list(view.tags),
        "publication": view.publication,
        "published_at": view.published_at,
        "reading_time": view.reading_time,
        "claps": view.claps,
        "recommendations": view.recommendations,
    }


def _draft(post: PostParams) -> PostDraft:
    return PostDraft(
        title=post.title,
        id=post.id,
        url=post.url,
        tags=tuple(dict.fromkeys(post.tags)),
        publication=post.publication,
        reading_time=post.reading_time,
    )


def build_dispatcher(services: Services) -> Dispatcher[CallContext]:
    """The method table of ``POST /rpc``."""
    rpc: Dispatcher[CallContext] = Dispatcher()

    async def system_health(params: NoParams, context: CallContext) -> dict[str, Any]:
        return health_tree(services.tree())

    async def system_stats(params: NoParams, context: CallContext) -> dict[str, Any]:
        actors: dict[str, Any] = {}
        for path, child in services.tree().walk():
            entry: dict[str, Any] = {"state": child.state, "restarts": child.restarts}
            detail = child.detail
            if hasattr(detail, "messages_handled"):
                entry.update(
                    messages_handled=detail.messages_handled,
                    mailbox_used=detail.mailbox_used,
                    mailbox_peak=detail.mailbox_peak,
                    mailbox_size=detail.mailbox_size,
                )
            actors[path] = entry
        stats: dict[str, Any] = {
            "uptime_seconds": round(time.time() - services.started_at, 3),
            "actors": actors,
        }
        if services.bus is not None:
            stats["bus"] = msgspec.to_builtins(services.bus())
        if services.realtime is not None:
            stats["realtime"] = msgspec.to_builtins(services.realtime.statistics())
        return stats

    async def social_follow(params: FollowParams, context: CallContext) -> dict[str, bool]:
        return {"created": await ask(services, Follow(params.follower, params.followee))}

    async def social_unfollow(params: FollowParams, context: CallContext) -> dict[str, bool]:
        return {"removed": await ask(services, Unfollow(params.follower, params.followee))}

    def neighbours(direction: Direction) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def handler(params: FollowingParams, context: CallContext) -> dict[str, Any]:
            after = decode_cursor(params.cursor)
            request = Neighbours(params.user, direction, params.limit, after)
            page: UsersPage = await ask(services, request)
            return _users_page(page)

        return handler

    async def social_counts(params: UserParams, context: CallContext) -> dict[str, int]:
        result: CountsResult = await ask(services, Counts(params.user))
        return {"following": result.following, "followers": result.followers}

    async def social_recommend(params: RecommendParams, context: CallContext) -> dict[str, bool]:
        return {"created": await ask(services, Recommend(params.user, params.post))}

    async def social_unrecommend(params: RecommendParams, context: CallContext) -> dict[str, bool]:
        return {"removed": await ask(services, Unrecommend(params.user, params.post))}

    async def social_recommenders(
        params: RecommendersParams, context: CallContext
    ) -> dict[str, Any]:
        return _ranked(await ask(services, Recommenders(params.post, params.limit)))

    async def social_friends_who_recommended(
        params: FriendsParams, context: CallContext
    ) -> dict[str, Any]:
        request = FriendsWhoRecommended(params.user, params.post, params.limit)
        return _ranked(await ask(services, request))

    async def social_who_to_follow(
        params: WhoToFollowParams, context: CallContext
    ) -> dict[str, Any]:
        suggestions: tuple[Suggestion, ...] = await ask(
            services, WhoToFollow(params.user, params.limit)
        )
        return {"suggestions": [{"user": s.user, "mutual": s.mutual} for s in suggestions]}

    async def social_mute(params: MuteParams, context: CallContext) -> dict[str, bool]:
        return {"created": await ask(services, Mute(params.user, params.author))}

    async def social_unmute(params: MuteParams, context: CallContext) -> dict[str, bool]:
        return {"removed": await ask(services, Unmute(params.user, params.author))}

    async def posts_publish(params: PublishParams, context: CallContext) -> dict[str, Any]:
        result: PublishResult = await ask(services, Publish(params.author, _draft(params.post)))
        return {"post": result.post, "followers_notified": result.followers_notified}

    async def posts_get(params: GetPostParams, context: CallContext) -> dict[str, Any]:
        return _post(await ask(services, GetPost(params.post)))

    async def posts_read(params: ReadParams, context: CallContext) -> dict[str, bool]:
        return {"created": await ask(services, MarkRead(params.user, params.post))}

    async def posts_delete(params: GetPostParams, context: CallContext) -> dict[str, bool]:
        return {"deleted": await ask(services, DeletePost(params.post))}

    rpc.add("system.health", NoParams, system_health, description="the supervision tree")
    rpc.add("system.stats", NoParams, system_stats, description="per-actor figures")

    async def system_restart(params: RestartParams, context: CallContext) -> dict[str, Any]:
        if services.restart is None:
            raise JsonRpcError(SERVICE_UNAVAILABLE, "service unavailable", {"detail": "no tree"})
        try:
            await services.restart(params.path)
        except KeyError:
            raise not_found("child", params.path) from None
        except ChildStartError as refused:
            raise JsonRpcError(
                SERVICE_UNAVAILABLE, "service unavailable", {"detail": str(refused)}
            ) from None
        restarts = next(
            (child.restarts for path, child in services.tree().walk() if path == params.path), 0
        )
        return {"path": params.path, "restarts": restarts}

    rpc.add(
        "system.restart",
        RestartParams,
        system_restart,
        description="restart a child of the supervision tree (operators)",
    )
    rpc.add("social.follow", FollowParams, social_follow, description="follow a user")
    rpc.add("social.unfollow", FollowParams, social_unfollow, description="unfollow a user")
    rpc.add(
        "social.following",
        FollowingParams,
        neighbours("following"),
        description="followed users, paged",
    )
    rpc.add(
        "social.followers",
        FollowingParams,
        neighbours("followers"),
        description="followers, paged",
    )
    rpc.add("social.counts", UserParams, social_counts, description="following/followers")
    rpc.add("social.recommend", RecommendParams, social_recommend, description="recommend")
    rpc.add("social.unrecommend", RecommendParams, social_unrecommend, description="withdraw")
    rpc.add(
        "social.recommenders",
        RecommendersParams,
        social_recommenders,
        description="who recommended a post, most recent first",
    )
    rpc.add(
        "social.friends_who_recommended",
        FriendsParams,
        social_friends_who_recommended,
        description="followed users who recommended a post",
    )
    rpc.add(
        "social.who_to_follow",
        WhoToFollowParams,
        social_who_to_follow,
        description="friends of friends, by mutual follows",
    )
    rpc.add("social.mute", MuteParams, social_mute, description="hide an author's posts")
    rpc.add("social.unmute", MuteParams, social_unmute, description="show them again")
    rpc.add("posts.publish", PublishParams, posts_publish, description="publish and fan out")
    rpc.add("posts.get", GetPostParams, posts_get, description="a post and its recommendations")
    rpc.add("posts.read", ReadParams, posts_read, description="mark a post read")
    rpc.add("posts.delete", GetPostParams, posts_delete, description="delete a post and its edges")

    def feeds() -> Feeds:
        if services.feeds is None:
            raise JsonRpcError(SERVICE_UNAVAILABLE, "service unavailable", {"detail": "no feeds"})
        return services.feeds

    async def feed_get(params: FeedParams, context: CallContext) -> dict[str, Any]:
        request = GetFeed(params.limit)
        if params.cursor is not None:
            try:
                user, snapshot, position = decode_feed_cursor(params.cursor)
            except ValueError:
                raise JsonRpcError(
                    INVALID_PARAMS, "Invalid params", {"detail": "malformed cursor"}
                ) from None
            if user != params.user:
                raise JsonRpcError(
                    INVALID_PARAMS, "Invalid params", {"detail": "the cursor is another user's"}
                )
            request = GetFeed(params.limit, snapshot, position)
        page = await answer(services, lambda: feeds().page(params.user, request))
        return {
            "items": [
                {"post": item.post, "score": item.score, "reasons": list(item.reasons)}
                for item in page.items
            ],
            "next_cursor": None
            if page.next_position is None
            else encode_feed_cursor(params.user, page.snapshot, page.next_position),
            "snapshot": page.snapshot,
            "candidates": page.candidates,
            "cached": page.cached,
            "built_ms": page.built_ms,
        }

    async def feed_invalidate(params: UserParams, context: CallContext) -> dict[str, Any]:
        await answer(services, lambda: feeds().invalidate(params.user))
        return {}

    rpc.add("feed.get", FeedParams, feed_get, description="a page of the user's ranked feed")
    rpc.add("feed.invalidate", UserParams, feed_invalidate, description="re-rank on next read")

    def realtime() -> Realtime:
        if services.realtime is None:
            raise JsonRpcError(
                SERVICE_UNAVAILABLE, "service unavailable", {"detail": "no realtime pipeline"}
            )
        return services.realtime

    def _accepted(accepted: Accepted) -> dict[str, Any]:
        return {"channel": accepted.channel, "offset": accepted.offset, "epoch": accepted.epoch}

    async def realtime_publish(params: PublishEventParams, context: CallContext) -> dict[str, Any]:
        pipeline = realtime()
        accepted = await answer(services, lambda: pipeline.publish(params.channel, params.data))
        return _accepted(accepted)

    async def realtime_publish_many(
        params: PublishManyParams, context: CallContext
    ) -> dict[str, Any]:
        pipeline = realtime()
        events = [(event.channel, event.data) for event in params.events]
        published = await answer(services, lambda: pipeline.publish_many(events))
        return {"published": [_accepted(accepted) for accepted in published]}

    async def comments_add(params: CommentParams, context: CallContext) -> dict[str, Any]:
        pipeline = realtime()
        await ask(services, Counts(params.user))  # -32004 for an unknown user
        await ask(services, GetPost(params.post))  # -32004 for an unknown post
        data = {
            "type": "comment",
            "user": params.user,
            "post": params.post,
            "text": params.text,
            "at": time.time(),
        }
        channel = f"post:{params.post}"
        return _accepted(await answer(services, lambda: pipeline.publish(channel, data)))

    rpc.add(
        "realtime.publish",
        PublishEventParams,
        realtime_publish,
        description="publish an event on a channel",
    )
    rpc.add(
        "realtime.publish_many",
        PublishManyParams,
        realtime_publish_many,
        description="publish up to 1,000 events in one call, in order",
    )
    rpc.add("comments.add", CommentParams, comments_add, description="comment on a post, live")
    return rpc
