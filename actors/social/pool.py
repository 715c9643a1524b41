"""A router over a pool of graph readers: each request goes to the least busy reader.

"Busy" is the number of this pool's requests a reader holds (queued or
running), counted by the pool itself: choosing costs a scan of N small ints,
not a statistics snapshot per reader. Ties go round-robin, so the parts of
a scatter/gather read issued together land on different readers.

The pool is no actor: :meth:`ReaderPool.call` runs in the caller's task and
puts the request straight into the chosen reader's mailbox.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from actors.runtime import ActorRef, ActorUnavailable
from actors.social.messages import Fetch, Read
from stores.graph import Row, Table


class ReaderPool:
    """Routes read requests to the reader with the fewest of them in hand.

    A reader that is down (restarting) refuses the call at once; the pool then
    tries the next one, so a read fails only when every reader is down.
    Reads are idempotent, so a retry on another reader is always safe.

    Args:
        readers: the readers' refs (valid across their restarts).

    Raises:
        ValueError: no readers.
    """

    def __init__(self, readers: Sequence[ActorRef[Any]]) -> None:
        if not readers:
            raise ValueError("a reader pool needs at least one reader")
        self.readers = tuple(readers)
        self._in_hand = [0] * len(self.readers)
        self._next = 0

    def __len__(self) -> int:
        return len(self.readers)

    async def call(self, request: Any) -> Any:
        """Send one read request (see :mod:`actors.social.messages`) to the least busy reader.

        Returns:
            The reader's reply.

        Raises:
            ActorUnavailable: no reader is running.
            ActorCrashed: the reader crashed on this request (a bug).
            Rejection: the reader's error reply (``NotFound``, ``GraphUnavailable``).
        """
        count = len(self.readers)
        start = self._next
        self._next = (start + 1) % count
        in_hand = self._in_hand
        order = sorted(range(count), key=lambda i: (in_hand[i], (i - start) % count))
        for index in order:
            in_hand[index] += 1
            try:
                return await self.readers[index].call(request)
            except ActorUnavailable:
                continue
            finally:
                in_hand[index] -= 1
        raise ActorUnavailable("every graph reader is down")

    async def read(self, cypher: str, params: Mapping[str, Any]) -> list[Row]:
        """Run one read query on the least busy reader; its rows as dicts.

        Raises:
            As :meth:`call`.
        """
        rows: list[Row] = await self.call(Read(cypher, params))
        return rows

    async def fetch(self, cypher: str, params: Mapping[str, Any]) -> Table:
        """Run one read query on the least busy reader; its rows as the driver gives them.

        Raises:
            As :meth:`call`.
        """
        table: Table = await self.call(Fetch(cypher, params))
        return table

    def in_hand(self) -> tuple[int, ...]:
        """Requests each reader holds for this pool now (queued or running)."""
        return tuple(self._in_hand)
