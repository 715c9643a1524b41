"""The nozzle: drains the event stream in batches as a member of the consumer group.

Disqus's realtime pipeline reads its queue in batches ("the nozzle"),
https://blog.disqus.com/scaling-realtime-at-disqus. Here the queue is the
stream ``starling:events`` (a Redis stream, or the in-process one), read with
``XREADGROUP`` in the group ``starling`` under this process's consumer name,
so several processes share the stream and each entry goes to one of them.

Each batch (up to ``batch`` entries, waiting at most ``block`` seconds) is
split by channel: a channel always goes to the same transformer
(:func:`transformer_index`, a CRC-32 of its name), so one transformer numbers
each channel's events, one batch after another, in stream order. Each part
travels as one message, with backpressure: when the transformers fall
behind, the nozzle stops reading and entries wait in the stream, not in
memory. Every ``reclaim_every`` seconds the nozzle also claims entries that
have been pending on any consumer for ``reclaim_idle`` seconds (a crashed
transformer's batch, a dead process's), so nothing read is ever lost: at
least once, duplicates possible.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from actors.realtime.streams import GROUP, STREAM
from actors.runtime import ActorRef
from stores.errors import BackendUnavailable
from stores.stream import Stream, StreamEntry

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Batch:
    """Stream entries for the transformer, oldest first."""

    entries: tuple[StreamEntry, ...]


def transformer_index(channel: str | None, transformers: int) -> int:
    """Which of ``transformers`` transformers numbers ``channel`` (entries without one: 0).

    CRC-32 of the UTF-8 name modulo the count: the same in every process and run.
    """
    if channel is None or transformers == 1:
        return 0
    # surrogatepass: a name that was not UTF-8 (poison) still goes to one of them.
    return zlib.crc32(channel.encode(errors="surrogatepass")) % transformers


@dataclass(frozen=True, slots=True)
class NozzleStatistics:
    """The nozzle's figures: entries read, of them reclaimed, and batches sent."""

    name: str
    state: str
    read: int
    reclaimed: int
    batches: int
    outages: int


class Nozzle:
    """Reads the stream and feeds the transformer (see the module docstring).

    Args:
        stream: the stream port.
        transformers: where batches go, a channel always to the same one (at least one).
        consumer: this process's name in the consumer group.
        batch: most entries per read.
        block: longest wait for a first entry, seconds.
        reclaim_idle: seconds an entry must have been pending before it is reclaimed.
        reclaim_every: seconds between reclaim passes.
        retry_after: seconds to wait after the backend failed.
        partition: the stream partition it reads (:meth:`stores.stream.Stream.partitions`;
            the whole stream by default).
        name: its name among its siblings (``nozzle``; ``nozzle-<i>`` per partition).

    Raises:
        ValueError: no transformer.
    """

    name = "nozzle"

    def __init__(
        self,
        stream: Stream,
        transformers: Sequence[ActorRef[Any]],
        *,
        consumer: str,
        batch: int = 256,
        block: float = 1.0,
        reclaim_idle: float = 30.0,
        reclaim_every: float = 10.0,
        retry_after: float = 1.0,
        partition: str = STREAM,
        name: str = "nozzle",
    ) -> None:
        if not transformers:
            raise ValueError("the nozzle needs at least one transformer")
        self._stream = stream
        self.partition = partition
        self.name = name
        self._transformers = tuple(transformers)
        self.consumer = consumer
        self.batch = batch
        self.block = block
        self.reclaim_idle = reclaim_idle
        self.reclaim_every = reclaim_every
        self.retry_after = retry_after
        self._scope = trio.CancelScope()
        self._state = "new"
        self.read = 0
        self.reclaimed = 0
        self.batches = 0
        self.outages = 0

    async def run(self, *, task_status: trio.TaskStatus[Nozzle] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the group, report ready, then read until stopped.

        Raises:
            stores.errors.BackendUnavailable: the stream cannot be reached at start.
        """
        await self._stream.ensure_group(self.partition, GROUP)
        self._scope = trio.CancelScope()
        self._state = "running"
        task_status.started(self)
        next_reclaim = trio.current_time() + self.reclaim_every
        with self._scope:
            while True:
                try:
                    if trio.current_time() >= next_reclaim:
                        next_reclaim = trio.current_time() + self.reclaim_every
                        await self._reclaim()
                    entries = await self._stream.read_group(
                        self.partition, GROUP, self.consumer, count=self.batch, block=self.block
                    )
                except BackendUnavailable as outage:
                    self.outages += 1
                    log.warning("event stream unavailable; retrying", error=str(outage))
                    await trio.sleep(self.retry_after)
                    continue
                if entries:
                    await self._hand_on(entries)
        self._state = "stopped"

    async def _reclaim(self) -> None:
        entries = await self._stream.reclaim(
            self.partition, GROUP, self.consumer, min_idle=self.reclaim_idle, count=self.batch
        )
        if entries:
            self.reclaimed += len(entries)
            log.info("reclaimed pending events", count=len(entries), consumer=self.consumer)
            await self._hand_on(entries)

    async def _hand_on(self, entries: list[StreamEntry]) -> None:
        self.read += len(entries)
        self.batches += 1
        transformers = self._transformers
        count = len(transformers)
        if count == 1:
            await transformers[0].send(Batch(tuple(entries)))
            return
        parts: list[list[StreamEntry]] = [[] for _ in range(count)]
        for entry in entries:
            parts[transformer_index(entry.fields.get("channel"), count)].append(entry)
        for transformer, part in zip(transformers, parts, strict=True):
            if part:
                await transformer.send(Batch(tuple(part)))

    def request_stop(self) -> None:
        """Stop reading (what was handed on stays with the transformer)."""
        self._state = "stopping"
        self._scope.cancel()

    def statistics(self) -> NozzleStatistics:
        """A snapshot of the figures."""
        return NozzleStatistics(
            self.name, self._state, self.read, self.reclaimed, self.batches, self.outages
        )
