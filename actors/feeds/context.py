"""Where a feed build learns about its user: followed users, topics, publications, mutes, reads.

:class:`GraphContextSource` reads them from the graph through the reader
pool, the six queries at once (they are independent; on a pool of N readers
they run N at a time). Any other :class:`ContextSource` (the benchmark's
synthetic users) plugs in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import trio

from actors.feeds import queries
from actors.social.errors import NotFound
from actors.social.pool import ReaderPool


@dataclass(frozen=True, slots=True)
class RawContext:
    """A user's context as ids and names (see :class:`actors.feeds.pipeline.UserContext`)."""

    following: list[str]
    topics: list[str]
    publications: list[str]
    muted: list[str]
    read: list[str]


class ContextSource(Protocol):
    """Loads a user's :class:`RawContext`."""

    async def load(self, user: str) -> RawContext:
        """Return the context of ``user``.

        Raises:
            NotFound: no such user.
            GraphUnavailable: the graph cannot be read.
        """
        ...


def first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf exception of a (nested) exception group: the concurrent reads all
    fail for the same reason (an outage), so one is reported, as a single read would."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class GraphContextSource:
    """Reads the context from the graph, one concurrent read per part.

    Args:
        pool: the graph reader pool.
    """

    def __init__(self, pool: ReaderPool) -> None:
        self._pool = pool

    async def load(self, user: str) -> RawContext:
        """See :meth:`ContextSource.load`."""
        parts: dict[str, list[str]] = {}

        async def read(name: str, cypher: str) -> None:
            rows: list[Any] = await self._pool.read(cypher, {"user": user})
            parts[name] = [row["id"] for row in rows]

        try:
            async with trio.open_nursery() as nursery:
                for name, cypher in queries.USER_CONTEXT.items():
                    nursery.start_soon(read, name, cypher)
        except ExceptionGroup as group:
            raise first_error(group) from None
        if not parts["user"]:
            raise NotFound("user", user)
        return RawContext(
            following=parts["following"],
            topics=parts["topics"],
            publications=parts["publications"],
            muted=parts["muted"],
            read=parts["read"],
        )
