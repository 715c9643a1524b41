"""The graph reader: an actor that owns one graph session and answers the social reads on it.

As GoSocial's readers did, a reader answers a whole read itself: a
:class:`~actors.social.messages.Counts`, a neighbour page, who-to-follow …
(:mod:`actors.social.reads`) arrive in its mailbox and leave as the reply, so
a social read crosses one mailbox and one reply channel. It also runs raw
queries for the other actors: :class:`~actors.social.messages.Read` (rows as
dicts) and :class:`~actors.social.messages.Fetch` (a
:class:`~stores.graph.Table`), the parts of a scatter/gather read among them
(:mod:`actors.social.scatter`).

A pool of readers (:mod:`actors.social.pool`) spreads the requests. Each
reader runs one query at a time in a worker thread under its backend's
limiter, so N readers bound the graph's read concurrency to N. The
``Counts`` waiting in a reader's mailbox when it takes one are answered
together by one statement (up to :data:`MAX_COUNTS_BATCH`; the runtime's
``max_batch``): under load, a count costs a fraction of a query.

A backend outage is answered with
:class:`~actors.social.errors.GraphUnavailable` (the reader keeps running, so
it serves again as soon as the backend is back), an unknown id with
:class:`~actors.social.errors.NotFound`; anything else that goes wrong (a
query the backend rejects, a message it does not know) is a bug, and crashes
the reader for its supervisor to restart.
"""

from __future__ import annotations

from typing import Any

from actors.runtime import Actor
from actors.social.errors import GraphUnavailable
from actors.social.messages import Counts, Fetch, Read
from actors.social.reads import Reads
from stores.errors import BackendUnavailable
from stores.graph import GraphSession, GraphStore

MAX_COUNTS_BATCH = 64
"""Most ``Counts`` one statement answers (measured on Ladybug: 182 µs for one user,
55 µs per user by 8, 17.5 µs by 32)."""


class GraphReader(Actor[Any]):
    """Answers the social reads, :class:`Read` and :class:`Fetch` on its own graph session.

    Args:
        name: e.g. ``"graph_reader-0"``.
        store: the graph port; a session is opened at each (re)start.
        mailbox_size: queued requests before senders wait.

    Replies: see :mod:`actors.social.messages`.

    Raises (as replies):
        NotFound: an unknown user or post.
        GraphUnavailable: the backend cannot be reached.
    """

    def __init__(self, name: str, store: GraphStore, *, mailbox_size: int = 32) -> None:
        super().__init__(name, mailbox_size=mailbox_size, max_batch=MAX_COUNTS_BATCH)
        self._store = store
        self._session: GraphSession | None = None
        self._reads: Reads | None = None

    async def on_start(self) -> None:
        self._reads = Reads(self._store.dialect)
        self._session = self._store.session()

    async def on_stop(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def batch_key(self, request: Any) -> object | None:
        return Counts if type(request) is Counts else None

    async def handle_batch(self, requests: list[Any]) -> list[Any]:
        session, reads = self._session, self._reads
        assert session is not None
        assert reads is not None
        try:
            return list(await reads.counts_many(session, requests))
        except BackendUnavailable as exc:
            return [GraphUnavailable(str(exc)) for _ in requests]

    async def handle(self, message: Any) -> Any:
        session, reads = self._session, self._reads
        assert session is not None
        assert reads is not None
        try:
            kind = type(message)
            if kind is Read:
                return await session.read(message.cypher, message.params)
            if kind is Fetch:
                return await session.fetch(message.cypher, message.params)
            return await reads.answer(session, message)
        except BackendUnavailable as exc:
            raise GraphUnavailable(str(exc)) from exc
