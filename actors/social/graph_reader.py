"""The graph reader: an actor that owns one graph session and runs read queries.

A pool of readers (:mod:`actors.social.pool`) serves the social service.
Each reader runs one query at a time in a worker thread under its backend's
limiter, so N readers bound the graph's read concurrency to N; the service
spreads the parts of a large read over several readers at once
(:mod:`actors.social.scatter`).

A reader knows no domain: it answers :class:`~actors.social.messages.Read`
with rows. A backend outage is answered with
:class:`~actors.social.errors.GraphUnavailable` (the reader keeps running, so
it serves again as soon as the backend is back); anything else that goes
wrong is a bug, and crashes the reader for its supervisor to restart.
"""

from __future__ import annotations

from typing import Any

from actors.runtime import Actor
from actors.social.errors import GraphUnavailable
from actors.social.messages import Read
from stores.errors import BackendUnavailable
from stores.graph import GraphSession, GraphStore, Row


class GraphReader(Actor[Any]):
    """Runs :class:`Read` queries on its own graph session.

    Args:
        name: e.g. ``"graph_reader-0"``.
        store: the graph port; a session is opened at each (re)start.
        mailbox_size: queued queries before senders wait.

    Raises (as replies):
        GraphUnavailable: the backend cannot be reached.
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

    async def handle(self, message: Any) -> list[Row]:
        assert self._session is not None
        if type(message) is not Read:
            raise TypeError(f"{self.name} cannot handle {type(message).__name__}")
        try:
            return await self._session.read(message.cypher, message.params)
        except BackendUnavailable as exc:
            raise GraphUnavailable(str(exc)) from exc
