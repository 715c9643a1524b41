"""Receipts: where each published event landed, for the producers waiting on it.

``realtime.publish`` and ``realtime.publish_many`` append events to the stream
and wait until this process's publisher has put them; the publisher records a
receipt per event (:meth:`Receipts.record`), the producer waits on its entry id
(:meth:`Receipts.wait`). Trio thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import trio

from actors.realtime.transform import Rendered


@dataclass(frozen=True, slots=True)
class Accepted:
    """Where a published event landed.

    Attributes:
        channel: its channel.
        offset: its offset in the channel.
        epoch: the channel's epoch.
        entry: its stream entry id.
    """

    channel: str
    offset: int
    epoch: str
    entry: str


class Receipts:
    """Stream entry id → where the publisher put it, for producers waiting on their event.

    Keeps the last ``keep`` receipts, so a producer that starts waiting after
    its event was already published still finds it. Trio thread only.
    """

    def __init__(self, keep: int = 65_536) -> None:
        self._keep = keep
        self._done: OrderedDict[str, Rendered] = OrderedDict()
        self._waiting: dict[str, trio.Event] = {}

    def record(self, item: Rendered) -> None:
        """Note that ``item`` was published (the first time only)."""
        if item.entry in self._done:
            return
        self._done[item.entry] = item
        if len(self._done) > self._keep:
            self._done.popitem(last=False)
        waiting = self._waiting.pop(item.entry, None)
        if waiting is not None:
            waiting.set()

    async def wait(self, entry: str) -> Accepted:
        """Wait until ``entry`` is published; cancel from outside to give up."""
        while (item := self._done.get(entry)) is None:
            event = self._waiting.setdefault(entry, trio.Event())
            try:
                await event.wait()
            finally:
                if not event.is_set():
                    self._waiting.pop(entry, None)
        return Accepted(item.channel, item.offset, item.epoch, item.entry)
