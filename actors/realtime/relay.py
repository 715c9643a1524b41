"""The relay: other processes' rendered batches (Redis Pub/Sub) into this process's publisher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
import trio

from actors.realtime.streams import TOPIC
from actors.realtime.transform import decode_batch
from actors.realtime.transformer import Deliver
from actors.runtime import ActorRef
from stores.pubsub import PubSub

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RelayStatistics:
    """The relay's figures: batches and events passed on, messages that were not batches,
    and batches its subscription buffer dropped while the publisher was behind."""

    name: str
    state: str
    batches: int
    events: int
    malformed: int
    dropped: int = 0


class Relay:
    """Passes the rendered batches of every process (Redis Pub/Sub) to this process's publisher.

    Pub/Sub is fire-and-forget: when the publisher falls behind for long, the
    subscription's bounded buffer drops its oldest batches (and if Redis's
    own buffer for this subscriber overflows, Redis drops the connection and
    the relay restarts). Either way the publications lost are found by
    offset: the reorder buffer waits for them, then the publisher counts the
    gap and tells the channel's subscribers (:meth:`Publisher.put`). The
    batches dropped here are counted in :attr:`dropped`.

    Args:
        pubsub: the Pub/Sub port (Redis).
        publisher: the publisher actor.
    """

    name = "relay"

    def __init__(self, pubsub: PubSub, publisher: ActorRef[Any], origin: str) -> None:
        self._pubsub = pubsub
        self._publisher = publisher
        self._origin = origin
        self._scope = trio.CancelScope()
        self._state = "new"
        self.batches = 0
        self.events = 0
        self.malformed = 0
        self.dropped = 0
        self._dropped_before = 0

    async def run(self, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, report ready, relay until stopped."""
        self._scope = trio.CancelScope()
        with self._scope:
            async with self._pubsub.subscribe(TOPIC) as messages:
                self._state = "running"
                task_status.started(self)
                self._dropped_before = self.dropped
                async for message in messages:
                    self.dropped = self._dropped_before + messages.statistics().dropped
                    try:
                        origin, items = decode_batch(message.data)
                    except msgspec.DecodeError as error:
                        self.malformed += 1
                        log.warning("not a rendered batch; dropped", topic=TOPIC, error=str(error))
                        continue
                    if origin == self._origin:
                        continue  # this process's own batch: its transformer delivered it
                    await self._publisher.send(Deliver(tuple(items)))
                    self.batches += 1
                    self.events += len(items)
        self._state = "stopped"

    def request_stop(self) -> None:
        """Stop relaying."""
        self._state = "stopping"
        self._scope.cancel()

    def statistics(self) -> RelayStatistics:
        """A snapshot of the figures."""
        return RelayStatistics(
            self.name, self._state, self.batches, self.events, self.malformed, self.dropped
        )
