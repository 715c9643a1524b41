"""Realtime methods (Disqus): events into the stream ``starling:events``, out to subscribers.

::

    realtime.publish {channel, data}                   → {channel, offset, epoch}
    realtime.publish_many {events: [{channel, data}…]} → {published: [{channel, offset, epoch}…]}
                                                          1..1,000 events, all or none;
                                                          data: a JSON object ≤ 64 KiB
    comments.add {user, post, text}                    → {channel, offset, epoch}
                                                          a ``comment`` event on post:<post>;
                                                          text 1..10,000 characters

Each returns once its events are published (in this process's history, and
offered to the subscribers connected here); -32002 when that takes longer
than the publish timeout (the events are in the stream and will be
published). See :mod:`actors.realtime.pipeline`. Over the WebSocket,
publishing on any channel is for operators and services; a user's token may
add its own comments.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec

from actors.realtime.pipeline import Realtime
from actors.realtime.receipts import Accepted
from actors.social import Counts, GetPost
from protocols.jsonrpc import Access, Dispatcher
from protocols.methods.services import CallContext, Id, Services, answer, ask, unavailable

MAX_PUBLISH_MANY = 1_000
"""Most events in one ``realtime.publish_many`` call."""

ChannelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
CommentText = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]


class PublishEventParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{channel, data}`` (``realtime.publish``)."""

    channel: ChannelName
    data: dict[str, Any]


class PublishManyParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{events: [{channel, data}…]}`` (``realtime.publish_many``), 1 to 1,000 events."""

    events: Annotated[
        list[PublishEventParams], msgspec.Meta(min_length=1, max_length=MAX_PUBLISH_MANY)
    ]


class CommentParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, post, text}`` (``comments.add``)."""

    user: Id
    post: Id
    text: CommentText


def accepted(where: Accepted) -> dict[str, Any]:
    """``{channel, offset, epoch}``."""
    return {"channel": where.channel, "offset": where.offset, "epoch": where.epoch}


class RealtimeMethods:
    """The handlers, over the realtime pipeline of ``services``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def pipeline(self) -> Realtime:
        if self.services.realtime is None:
            raise unavailable("no realtime pipeline")
        return self.services.realtime

    async def publish(self, params: PublishEventParams, context: CallContext) -> dict[str, Any]:
        pipeline = self.pipeline()
        where = await answer(self.services, lambda: pipeline.publish(params.channel, params.data))
        return accepted(where)

    async def publish_many(self, params: PublishManyParams, context: CallContext) -> dict[str, Any]:
        pipeline = self.pipeline()
        events = [(event.channel, event.data) for event in params.events]
        published = await answer(self.services, lambda: pipeline.publish_many(events))
        return {"published": [accepted(where) for where in published]}

    async def add_comment(self, params: CommentParams, context: CallContext) -> dict[str, Any]:
        pipeline = self.pipeline()
        await ask(self.services, Counts(params.user))  # -32004 for an unknown user
        await ask(self.services, GetPost(params.post))  # -32004 for an unknown post
        data = {
            "type": "comment",
            "user": params.user,
            "post": params.post,
            "text": params.text,
            "at": time.time(),
        }
        channel = f"post:{params.post}"
        return accepted(await answer(self.services, lambda: pipeline.publish(channel, data)))


def register(rpc: Dispatcher[CallContext], services: Services) -> None:
    """Add the realtime methods to ``rpc``."""
    m = RealtimeMethods(services)
    rpc.add(
        "realtime.publish",
        PublishEventParams,
        m.publish,
        description="publish an event on a channel",
    )
    rpc.add(
        "realtime.publish_many",
        PublishManyParams,
        m.publish_many,
        description="publish up to 1,000 events in one call, in order",
    )
    rpc.add(
        "comments.add",
        CommentParams,
        m.add_comment,
        description="comment on a post, live",
        access=Access.SELF,
        acting="user",
    )
