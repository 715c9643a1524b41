"""A router over a pool of graph readers: each query goes to the least busy reader.

"Busy" is the number of this pool's queries a reader holds (queued or
running), counted by the pool itself: choosing costs a scan of N small ints,
not a statistics snapshot per reader. Ties go round-robin, so the parts of
a scatter/gather read issued together land on different readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.runtime import ActorRef, ActorUnavailable
from actors.social.messages import Read
from stores.graph import Row


class ReaderPool:
    """Routes :class:`Read` calls to the reader with the fewest of them in hand.

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

    async def read(self, cypher: str, params: dict[str, Any]) -> list[Row]:
        """Run one read query on the least busy running reader.

        Raises:
            ActorUnavailable: no reader is running.
            ActorCrashed: the reader crashed on this query (a bug).
            Rejection: the reader's error reply (``GraphUnavailable``).
        """
        count = len(self.readers)
        start = self._next
        self._next = (start + 1) % count
        order = sorted(range(count), key=lambda i: (self._in_hand[i], (i - start) % count))
        request = Read(cypher, params)
        for index in order:
            self._in_hand[index] += 1
            try:
                rows: list[Row] = await self.readers[index].call(request)
                return rows
            except ActorUnavailable:
                continue
            finally:
                self._in_hand[index] -= 1
        raise ActorUnavailable("every graph reader is down")

    def in_hand(self) -> tuple[int, ...]:
        """Queries each reader holds for this pool now (queued or running)."""
        return tuple(self._in_hand)
