"""Social methods (GoSocial: "How Medium Goes Social"), each a small function over the graph.

::

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
    social.block {user, blocked}                       → {created}
    social.unblock {user, blocked}                     → {removed}
    social.blocking {user, limit=100, cursor=null}     → {users, next_cursor}   limit 1..1000
    posts.publish {author, post: {id?, title, url?, tags?, publication?, reading_time?}}
                                                       → {post, followers_notified}
    posts.get {post}                                   → the post's fields + recommendations
    posts.read {user, post}                            → {created}
    posts.delete {post}                                → {deleted}

Ids follow the one id rule (:mod:`actors.ids`). Following, muting or blocking
yourself is an invalid param (-32602), as is any limit out of range; a follow
across a block (either way) is -32003 "forbidden" with ``data.reason``
``"blocked"``. Over the WebSocket, a user's token may call the methods that act
for that user (``follower``, ``user`` or ``author`` = the token's user, which
includes ``social.blocking``: who one blocks is one's own business) and the
public reads; ``posts.delete`` is for operators and services.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from actors.social import (
    Block,
    Counts,
    CountsResult,
    DeletePost,
    Direction,
    Follow,
    FriendsWhoRecommended,
    GetPost,
    MarkRead,
    Mute,
    Neighbours,
    PostDraft,
    PostView,
    Publish,
    PublishResult,
    RankedUsers,
    Recommend,
    Recommenders,
    Suggestion,
    Unblock,
    Unfollow,
    Unmute,
    Unrecommend,
    UsersPage,
    WhoToFollow,
)
from protocols.cursors import decode_cursor, encode_cursor
from protocols.jsonrpc import Access, Dispatcher
from protocols.methods.services import CallContext, Id, Services, ask

Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]
SmallLimit = Annotated[int, msgspec.Meta(ge=1, le=100)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Tags = Annotated[list[Name], msgspec.Meta(max_length=20)]
Minutes = Annotated[float, msgspec.Meta(ge=0, le=10_000)]

USERS_AFTER = "u1"
"""The cursor kind of a page of users: the last id returned."""


class UserParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user}``."""

    user: Id


class FollowingParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, limit=100, cursor=null}`` (``social.following``, ``.followers``, ``.blocking``)."""

    user: Id
    limit: Limit = 100
    cursor: str | None = None


class FollowParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{follower, followee}``."""

    follower: Id
    followee: Id


class RecommendParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, post}`` (``social.recommend``, ``social.unrecommend``, ``posts.read``)."""

    user: Id
    post: Id


class MuteParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, author}`` (``social.mute`` and ``social.unmute``)."""

    user: Id
    author: Id


class BlockParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, blocked}``: ``user`` blocks (``social.block``) or unblocks ``blocked``."""

    user: Id
    blocked: Id


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


class PostIdParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{post}`` (``posts.get`` and ``posts.delete``)."""

    post: Id


def users_page(page: UsersPage) -> dict[str, Any]:
    """``{users, next_cursor}``; ``next_cursor`` is ``null`` on the last page."""
    after = None if page.last is None else encode_cursor(USERS_AFTER, page.last)
    return {"users": list(page.users), "next_cursor": after}


def after(cursor: str | None) -> str:
    """The id a page continues after (``""`` for the first page).

    Raises:
        JsonRpcError: -32602 for a cursor this server did not make.
    """
    return "" if cursor is None else decode_cursor(cursor, USERS_AFTER, 1)[0]


def ranked(users: RankedUsers) -> dict[str, Any]:
    """``{users, total}``."""
    return {"users": list(users.users), "total": users.total}


def post_view(view: PostView) -> dict[str, Any]:
    """A post's fields and its recommendation count."""
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


def draft(post: PostParams) -> PostDraft:
    """The domain's draft of a post to publish (tags deduplicated, in order)."""
    return PostDraft(
        title=post.title,
        id=post.id,
        url=post.url,
        tags=tuple(dict.fromkeys(post.tags)),
        publication=post.publication,
        reading_time=post.reading_time,
    )


class SocialMethods:
    """The handlers, over the social graph of ``services``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def follow(self, params: FollowParams, context: CallContext) -> dict[str, bool]:
        return {"created": await ask(self.services, Follow(params.follower, params.followee))}

    async def unfollow(self, params: FollowParams, context: CallContext) -> dict[str, bool]:
        return {"removed": await ask(self.services, Unfollow(params.follower, params.followee))}

    async def following(self, params: FollowingParams, context: CallContext) -> dict[str, Any]:
        return await self._neighbours(params, "following")

    async def followers(self, params: FollowingParams, context: CallContext) -> dict[str, Any]:
        return await self._neighbours(params, "followers")

    async def _neighbours(self, params: FollowingParams, direction: Direction) -> dict[str, Any]:
        request = Neighbours(params.user, direction, params.limit, after(params.cursor))
        return users_page(await ask(self.services, request))

    async def counts(self, params: UserParams, context: CallContext) -> dict[str, int]:
        result: CountsResult = await ask(self.services, Counts(params.user))
        return {"following": result.following, "followers": result.followers}

    async def recommend(self, params: RecommendParams, context: CallContext) -> dict[str, bool]:
        return {"created": await ask(self.services, Recommend(params.user, params.post))}

    async def unrecommend(self, params: RecommendParams, context: CallContext) -> dict[str, bool]:
        return {"removed": await ask(self.services, Unrecommend(params.user, params.post))}

    async def recommenders(
        self, params: RecommendersParams, context: CallContext
    ) -> dict[str, Any]:
        return ranked(await ask(self.services, Recommenders(params.post, params.limit)))

    async def friends_who_recommended(
        self, params: FriendsParams, context: CallContext
    ) -> dict[str, Any]:
        request = FriendsWhoRecommended(params.user, params.post, params.limit)
        return ranked(await ask(self.services, request))

    async def who_to_follow(
        self, params: WhoToFollowParams, context: CallContext
    ) -> dict[str, Any]:
        request = WhoToFollow(params.user, params.limit)
        suggestions: tuple[Suggestion, ...] = await ask(self.services, request)
        return {"suggestions": [{"user": s.user, "mutual": s.mutual} for s in suggestions]}

    async def mute(self, params: MuteParams, context: CallContext) -> dict[str, bool]:
        return {"created": await ask(self.services, Mute(params.user, params.author))}

    async def unmute(self, params: MuteParams, context: CallContext) -> dict[str, bool]:
        return {"removed": await ask(self.services, Unmute(params.user, params.author))}

    async def block(self, params: BlockParams, context: CallContext) -> dict[str, bool]:
        return {"created": await ask(self.services, Block(params.user, params.blocked))}

    async def unblock(self, params: BlockParams, context: CallContext) -> dict[str, bool]:
        return {"removed": await ask(self.services, Unblock(params.user, params.blocked))}

    async def blocking(self, params: FollowingParams, context: CallContext) -> dict[str, Any]:
        return await self._neighbours(params, "blocking")

    async def publish(self, params: PublishParams, context: CallContext) -> dict[str, Any]:
        request = Publish(params.author, draft(params.post))
        result: PublishResult = await ask(self.services, request)
        return {"post": result.post, "followers_notified": result.followers_notified}

    async def get(self, params: PostIdParams, context: CallContext) -> dict[str, Any]:
        return post_view(await ask(self.services, GetPost(params.post)))

    async def read(self, params: RecommendParams, context: CallContext) -> dict[str, bool]:
        return {"created": await ask(self.services, MarkRead(params.user, params.post))}

    async def delete(self, params: PostIdParams, context: CallContext) -> dict[str, bool]:
        return {"deleted": await ask(self.services, DeletePost(params.post))}


def register(rpc: Dispatcher[CallContext], services: Services) -> None:
    """Add the social and post methods to ``rpc``."""
    m = SocialMethods(services)
    mine = Access.SELF
    public = Access.USERS
    rpc.add(
        "social.follow",
        FollowParams,
        m.follow,
        description="follow a user",
        access=mine,
        acting="follower",
    )
    rpc.add(
        "social.unfollow",
        FollowParams,
        m.unfollow,
        description="unfollow a user",
        access=mine,
        acting="follower",
    )
    rpc.add(
        "social.following",
        FollowingParams,
        m.following,
        description="followed users, paged",
        access=public,
    )
    rpc.add(
        "social.followers",
        FollowingParams,
        m.followers,
        description="followers, paged",
        access=public,
    )
    rpc.add("social.counts", UserParams, m.counts, description="following/followers", access=public)
    rpc.add(
        "social.recommend",
        RecommendParams,
        m.recommend,
        description="recommend",
        access=mine,
        acting="user",
    )
    rpc.add(
        "social.unrecommend",
        RecommendParams,
        m.unrecommend,
        description="withdraw",
        access=mine,
        acting="user",
    )
    rpc.add(
        "social.recommenders",
        RecommendersParams,
        m.recommenders,
        description="who recommended a post, most recent first",
        access=public,
    )
    rpc.add(
        "social.friends_who_recommended",
        FriendsParams,
        m.friends_who_recommended,
        description="followed users who recommended a post",
        access=mine,
        acting="user",
    )
    rpc.add(
        "social.who_to_follow",
        WhoToFollowParams,
        m.who_to_follow,
        description="friends of friends, by mutual follows",
        access=mine,
        acting="user",
    )
    rpc.add(
        "social.mute",
        MuteParams,
        m.mute,
        description="hide an author's posts",
        access=mine,
        acting="user",
    )
    rpc.add(
        "social.unmute",
        MuteParams,
        m.unmute,
        description="show them again",
        access=mine,
        acting="user",
    )
    rpc.add(
        "social.block",
        BlockParams,
        m.block,
        description="block a user: no follows either way, no posts in either's feed",
        access=mine,
        acting="user",
    )
    rpc.add(
        "social.unblock",
        BlockParams,
        m.unblock,
        description="lift a block (follows stay removed)",
        access=mine,
        acting="user",
    )
    rpc.add(
        "social.blocking",
        FollowingParams,
        m.blocking,
        description="blocked users, paged",
        access=mine,
        acting="user",
    )
    rpc.add(
        "posts.publish",
        PublishParams,
        m.publish,
        description="publish and fan out",
        access=mine,
        acting="author",
    )
    rpc.add(
        "posts.get",
        PostIdParams,
        m.get,
        description="a post and its recommendations",
        access=public,
    )
    rpc.add(
        "posts.read",
        RecommendParams,
        m.read,
        description="mark a post read",
        access=mine,
        acting="user",
    )
    rpc.add("posts.delete", PostIdParams, m.delete, description="delete a post and its edges")
