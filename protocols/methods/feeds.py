"""Feed methods (Rex: ranked feeds), each a small function over the feeds subtree.

::

    feed.get {user, limit=20, cursor=null}   → {items: [{post, score, reasons}…], next_cursor,
                                                snapshot, candidates, cached, built_ms}
                                                limit 1..100
    feed.invalidate {user}                   → {}

A page's ``next_cursor`` names the ranked snapshot and the position in it
(cursor kind ``f1``, :mod:`protocols.cursors`); -32010 when that snapshot
expired (ask again without a cursor). Over the WebSocket a user's token
reads and invalidates its own feed.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from actors.feeds import FeedPage, Feeds, GetFeed
from protocols.cursors import decode_cursor, encode_cursor, malformed
from protocols.jsonrpc import Access, Dispatcher, invalid_params
from protocols.methods.services import CallContext, Id, Services, answer, unavailable

FEED_POSITION = "f1"
"""The cursor kind of a feed page: ``(user, snapshot, position)``."""


class FeedParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, limit=20, cursor=null}`` (``feed.get``)."""

    user: Id
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    cursor: str | None = None


class FeedUserParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user}`` (``feed.invalidate``)."""

    user: Id


def feed_cursor(user: str, snapshot: str, position: int) -> str:
    """The cursor of the page at ``position`` of ``user``'s ranked ``snapshot``."""
    return encode_cursor(FEED_POSITION, user, snapshot, position)


def read_feed_cursor(cursor: str, user: str) -> tuple[str, int]:
    """``(snapshot, position)``: where in ``user``'s ranked snapshot a cursor's page starts.

    Raises:
        JsonRpcError: -32602 for a cursor this server did not make, or another user's.
    """
    owner, snapshot, position = decode_cursor(cursor, FEED_POSITION, 3)
    if not position.isdigit():
        raise malformed()
    if owner != user:
        raise invalid_params("the cursor is another user's")
    return snapshot, int(position)


def feed_page(user: str, page: FeedPage) -> dict[str, Any]:
    """The wire form of a page."""
    more = page.next_position
    return {
        "items": [
            {"post": item.post, "score": item.score, "reasons": list(item.reasons)}
            for item in page.items
        ],
        "next_cursor": None if more is None else feed_cursor(user, page.snapshot, more),
        "snapshot": page.snapshot,
        "candidates": page.candidates,
        "cached": page.cached,
        "built_ms": page.built_ms,
    }


class FeedMethods:
    """The handlers, over the feeds subtree of ``services``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def feeds(self) -> Feeds:
        if self.services.feeds is None:
            raise unavailable("no feeds")
        return self.services.feeds

    async def get(self, params: FeedParams, context: CallContext) -> dict[str, Any]:
        request = GetFeed(params.limit)
        if params.cursor is not None:
            snapshot, position = read_feed_cursor(params.cursor, params.user)
            request = GetFeed(params.limit, snapshot, position)
        feeds = self.feeds()
        page = await answer(self.services, lambda: feeds.page(params.user, request))
        return feed_page(params.user, page)

    async def invalidate(self, params: FeedUserParams, context: CallContext) -> dict[str, Any]:
        feeds = self.feeds()
        await answer(self.services, lambda: feeds.invalidate(params.user))
        return {}


def register(rpc: Dispatcher[CallContext], services: Services) -> None:
    """Add the feed methods to ``rpc``."""
    m = FeedMethods(services)
    rpc.add(
        "feed.get",
        FeedParams,
        m.get,
        description="a page of the user's ranked feed",
        access=Access.SELF,
        acting="user",
    )
    rpc.add(
        "feed.invalidate",
        FeedUserParams,
        m.invalidate,
        description="re-rank on next read",
        access=Access.SELF,
        acting="user",
    )
