"""The graph reader: an actor that owns one graph session and answers read queries.

A pool of readers (see :mod:`actors.social.pool`) serves the social
service; each runs one query at a time in a worker thread under its
backend's limiter, so N readers bound the graph's concurrency to N.
"""

from __future__ import annotations

from typing import Any

from actors.runtime import Actor
from actors.social import queries
from actors.social.messages import Counts, CountsResult, Following, NotFound, UsersPage
from stores.graph import GraphSession, GraphStore

ReaderMessage = Counts | Following


class GraphReader(Actor[Any]):
    """Answers :class:`Counts` and :class:`Following` from the graph.

    Args:
        name: e.g. ``"graph_reader-0"``.
        store: the graph port; a session is opened at each (re)start.
        mailbox_size: queued queries before senders wait.

    Raises (as replies):
        NotFound: the user is not in the graph.
    """

    def __init__(self, name: str, store: GraphStore, *, mailbox_size: int = 32) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        self._store = store
        self._session: GraphSession | None = None

    async def on_start(self) -> None:
        self._session = self._store.session()

    async def on_stop(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    async def handle(self, message: Any) -> Any:
        assert self._session is not None
        match message:
            case Counts(user):
                rows = await self._session.read(queries.COUNTS, {"user": user})
                if not rows:
                    raise NotFound("user", user)
                return CountsResult(int(rows[0]["following"]), int(rows[0]["followers"]))
            case Following(user, limit, after):
                rows = await self._session.read(
                    queries.FOLLOWING_PAGE, {"user": user, "after": after, "limit": limit + 1}
                )
                if not rows and not await self._session.read(queries.USER_EXISTS, {"user": user}):
                    raise NotFound("user", user)
                ids = tuple(str(row["id"]) for row in rows[:limit])
                last = ids[-1] if len(rows) > limit else None
                return UsersPage(ids, last)
        raise TypeError(f"{self.name} cannot handle {type(message).__name__}")
