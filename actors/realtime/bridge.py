"""Domain events become realtime events: the bridge from the event bus to the stream.

The social graph's events (:mod:`actors.social.events`) are appended to the
stream ``starling:events`` as realtime events, so they reach WebSocket
clients through the same nozzle → transformer → publisher path as anything
else::

    followed     → user:<followee>  {"type": "notification", "kind": "followed", "user": follower}
    recommended  → post:<post>      {"type": "recommended", "user", "post", "title", "url"}
                 → user:<author>    {"type": "notification", "kind": "recommended", "user", "post"}
    published    → post:<post>      {"type": "published", "user": author, "post", "title", "url",
                                     "tags", "publication"}   once (with the first chunk)
                 → user:<follower>  {"type": "notification", "kind": "published", "user": author,
                                     "post"}   for each follower, from the fan-out chunks

Every data object also carries ``at`` (epoch seconds). The ``post:`` events
are activities: the transformer also fans them out to the ``following:``
channels of the actor's listening followers (:mod:`actors.realtime.following`),
with the post's display fields (title, url) read here once. The bridge subscribes
with backpressure (the stream must see every event); when the stream cannot
be reached the events of that moment are logged and counted as dropped,
never retried into a crash loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from actors.bus import EventBus
from actors.realtime.streams import STREAM
from actors.runtime import ActorUnavailable, Rejection
from actors.social.events import Followed, Published, Recommended, SocialEvent
from actors.social.pool import ReaderPool
from stores.errors import BackendUnavailable
from stores.stream import Stream

log = structlog.get_logger(__name__)

POST_FIELDS = (
    "MATCH (a:User)-[:WROTE]->(p:Post {id: $post}) RETURN a.id AS id, p.title AS title, "
    "p.url AS url"
)


@dataclass(frozen=True, slots=True)
class BridgeStatistics:
    """Events turned into stream entries, entries appended, and events dropped in outages."""

    name: str
    state: str
    events: int
    appended: int
    dropped: int


def event(channel: str, **data: Any) -> dict[str, str]:
    """A stream entry's fields for ``data`` on ``channel``."""
    return {"channel": channel, "data": json.dumps(data, separators=(",", ":"))}


class RealtimeBridge:
    """Appends the realtime events of each domain event to the stream.

    Args:
        bus: the social event bus.
        stream: the stream port.
        readers: to find a recommended post's author.
        size: the bus subscription's size, in events.
    """

    name = "realtime_events"

    def __init__(
        self,
        bus: EventBus[SocialEvent],
        stream: Stream,
        readers: ReaderPool,
        *,
        size: int = 1024,
    ) -> None:
        self._bus = bus
        self._stream = stream
        self._readers = readers
        self._size = size
        self._scope = trio.CancelScope()
        self._state = "new"
        self.events = 0
        self.appended = 0
        self.dropped = 0

    async def run(
        self, *, task_status: trio.TaskStatus[RealtimeBridge] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Subscribe, report ready, append until stopped."""
        kinds = {"followed", "recommended", "published"}
        self._scope = trio.CancelScope()
        with self._scope, self._bus.subscribe("realtime", size=self._size, kinds=kinds) as events:
            self._state = "running"
            task_status.started(self)
            async for domain_event in events:
                entries = await self.entries(domain_event)
                self.events += 1
                if not entries:
                    continue
                try:
                    await self._stream.append_many(STREAM, entries)
                except BackendUnavailable as outage:
                    self.dropped += 1
                    log.warning("realtime events dropped: stream unavailable", error=str(outage))
                    continue
                self.appended += len(entries)
        self._state = "stopped"

    async def entries(self, domain_event: SocialEvent) -> list[dict[str, str]]:
        """The stream entries of one domain event (see the module docstring)."""
        match domain_event:
            case Followed(follower, followee, at):
                return [
                    event(f"user:{followee}", type="notification", kind="followed",
                          user=follower, at=at)
                ]  # fmt: skip
            case Recommended(user, post, at):
                author, fields = await self._post_fields(post)
                entries = [
                    event(f"post:{post}", type="recommended", user=user, post=post, at=at,
                          **fields)
                ]  # fmt: skip
                if author is not None and author != user:
                    entries.append(
                        event(f"user:{author}", type="notification", kind="recommended",
                              user=user, post=post, at=at)
                    )  # fmt: skip
                return entries
            case Published(post=post, author=author, published_at=at, followers=followers):
                entries = []
                if domain_event.chunk == 0:
                    _, fields = await self._post_fields(post)
                    entries.append(
                        event(f"post:{post}", type="published", user=author, post=post, at=at,
                              tags=list(domain_event.tags), publication=domain_event.publication,
                              **fields)
                    )  # fmt: skip
                entries += [
                    event(f"user:{follower}", type="notification", kind="published",
                          user=author, post=post, at=at)
                    for follower in followers
                ]  # fmt: skip
                return entries
        return []

    async def _post_fields(self, post: str) -> tuple[str | None, dict[str, Any]]:
        """The post's author and display fields (``title``, ``url`` when set)."""
        try:
            rows = await self._readers.read(POST_FIELDS, {"post": post})
        except (Rejection, ActorUnavailable) as failure:
            log.warning("no fields for a post", post=post, error=str(failure))
            return None, {}
        if not rows:
            return None, {}
        row = rows[0]
        fields = {name: row[name] for name in ("title", "url") if row.get(name) is not None}
        return str(row["id"]), fields

    def request_stop(self) -> None:
        """Stop appending (events not yet read from the bus are dropped with the subscription)."""
        self._state = "stopping"
        self._scope.cancel()

    def statistics(self) -> BridgeStatistics:
        """A snapshot of the figures."""
        return BridgeStatistics(self.name, self._state, self.events, self.appended, self.dropped)
