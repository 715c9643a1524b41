"""A router over a pool of graph readers: each query goes to the least busy reader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.runtime import ActorRef, ActorUnavailable


class ReaderPool:
    """Routes calls to the reader whose mailbox holds the fewest messages.

    Readers that are down (restarting) are skipped; if all are down the call
    raises :class:`~actors.runtime.ActorUnavailable`.
    """

    def __init__(self, readers: Sequence[ActorRef[Any]]) -> None:
        if not readers:
            raise ValueError("a reader pool needs at least one reader")
        self.readers = tuple(readers)
        self._next = 0

    async def call(self, request: Any) -> Any:
        """Send ``request`` to the least busy running reader and return its reply.

        Raises:
            ActorUnavailable: no reader is running.
            Rejection: the reader's error reply (e.g. NotFound).
        """
        count = len(self.readers)
        candidates = [self.readers[(self._next + i) % count] for i in range(count)]
        self._next = (self._next + 1) % count
        running = [ref for ref in candidates if ref.statistics().state == "running"]
        if not running:
            raise ActorUnavailable("every graph reader is down")
        best = min(running, key=lambda ref: ref.statistics().mailbox_used)
        return await best.call(request)
