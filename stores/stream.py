"""The stream port: an append-only log read by consumer groups (Redis Streams semantics).

Entry ids are ``"<milliseconds>-<sequence>"`` strings that increase within a
stream. A consumer group delivers each entry to one consumer; the entry stays
*pending* for that consumer until acknowledged, and pending entries idle for
longer than a bound can be reclaimed by another consumer (at-least-once
delivery). Source: the Redis Streams introduction, "Consumer groups" and
"Recovering from permanent failures".

Adapters: :class:`stores.memory.MemoryStream` and :class:`stores.redis.RedisStream`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry.

    Attributes:
        id: ``"<ms>-<seq>"``, increasing within its stream.
        fields: the entry's field/value pairs.
        deliveries: how many times it has been delivered to a consumer (1 on first read).
    """

    id: str
    fields: Mapping[str, str]
    deliveries: int = 1


class Stream(Protocol):
    """Append-only streams with consumer groups."""

    def partitions(self, stream: str) -> tuple[str, ...]:
        """The names of ``stream``'s partitions, each read on its own (``(stream,)`` unless a
        Redis Cluster splits it, :mod:`stores.partitions`). Each channel's entries are in one."""
        ...

    async def append(self, stream: str, fields: Mapping[str, str]) -> str:
        """Append an entry and return its id."""
        ...

    async def append_many(self, stream: str, entries: Sequence[Mapping[str, str]]) -> list[str]:
        """Append entries in order (one round trip); return their ids."""
        ...

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create consumer group ``group`` at the start of ``stream`` if missing
        (creating the stream too)."""
        ...

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int,
        block: float,
    ) -> list[StreamEntry]:
        """Read up to ``count`` new entries for ``consumer``, waiting at most ``block`` seconds.

        Returns an empty list when nothing arrived in time. The entries become
        pending for ``consumer`` until :meth:`ack`.

        Raises:
            stores.errors.QueryError: the group does not exist.
        """
        ...

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; return how many were pending."""
        ...

    async def reclaim(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        min_idle: float,
        count: int,
    ) -> list[StreamEntry]:
        """Move to ``consumer`` up to ``count`` entries pending on any consumer
        for at least ``min_idle`` seconds, and return them (XAUTOCLAIM)."""
        ...

    async def pending(self, stream: str, group: str) -> int:
        """Number of delivered but unacknowledged entries in ``group``."""
        ...

    async def length(self, stream: str) -> int:
        """Number of entries in ``stream`` (0 when it does not exist)."""
        ...


def check_count(count: int) -> None:
    """Raise ValueError unless ``count`` (entries per read) is >= 1; shared by the adapters."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
