"""Where a feed build learns about its user: followed users, topics, publications, mutes,
blocks, reads.

:class:`GraphContextSource` reads them from the graph through the reader
pool, the seven queries at once (they are independent; on a pool of N readers
they run N at a time). A block hides posts both ways, so the users a user
blocks and the users who block them are filtered as muted authors are. Any
other :class:`ContextSource` (the benchmark's synthetic users) plugs in the
same way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors.feeds import queries
from actors.feeds.catalog import CatalogView
from actors.feeds.pipeline import UserContext
from actors.social.errors import NotFound
from actors.social.pool import ReaderPool
from actors.social.scatter import run_all


@dataclass(frozen=True, slots=True)
class RawContext:
    """A user's context as ids and names (see :class:`actors.feeds.pipeline.UserContext`).

    Attributes:
        blocked: the users the user blocks or is blocked by; their posts are
            filtered as a muted author's are.
    """

    following: list[str]
    topics: list[str]
    publications: list[str]
    muted: list[str]
    read: list[str]
    blocked: list[str] = field(default_factory=list)

    def resolve(self, view: CatalogView, user: str) -> UserContext:
        """This context as the view's indices (see :meth:`UserContext.resolve`)."""
        return UserContext.resolve(
            view,
            user,
            following=self.following,
            topics=self.topics,
            publications=self.publications,
            muted=[*self.muted, *self.blocked],
            read=self.read,
        )


class ContextSource(Protocol):
    """Loads a user's :class:`RawContext`."""

    async def load(self, user: str) -> RawContext:
        """Return the context of ``user``.

        Raises:
            NotFound: no such user.
            GraphUnavailable: the graph cannot be read.
        """
        ...


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

        await run_all(
            functools.partial(read, name, cypher) for name, cypher in queries.USER_CONTEXT.items()
        )
        if not parts["user"]:
            raise NotFound("user", user)
        return RawContext(
            following=parts["following"],
            topics=parts["topics"],
            publications=parts["publications"],
            muted=parts["muted"],
            read=parts["read"],
            blocked=parts["blocked"],
        )
