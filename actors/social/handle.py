"""The social graph's handle: each request straight to the one actor that answers it.

:class:`Social` is a plain object, not an actor: :meth:`Social.call` runs in
the caller's task (a JSON-RPC method, a WebSocket session) and puts the
request in one mailbox.

- A read (:data:`~actors.social.reads.READS`) goes to the least busy
  ``graph_reader`` (:class:`~actors.social.pool.ReaderPool`), which runs it
  on the graph session it owns and replies: one mailbox and one reply channel
  per read, as GoSocial's readers did. A neighbour page larger than
  ``page_chunk`` is the exception: it is split into key ranges read by
  several readers at once (:func:`actors.social.scatter.read_page`).
- A write, and :class:`~actors.social.messages.Publish`, goes to the
  ``graph_writer``, which also runs a post's fan-out (see
  :mod:`actors.social.graph_writer` for why).

Errors: the actors' :class:`~actors.social.errors.SocialRejection` replies
pass through unchanged (``NotFound``, ``InvalidArgument``, ``BlockedError``,
``AlreadyExists``, ``GraphUnavailable``); a reader or the writer that is down, or crashed on the
request, becomes :class:`~actors.social.errors.WorkerUnavailable` or
:class:`~actors.social.errors.WorkerCrashed`. A call never waits for a dead
actor: a restarting one refuses at once, and a crash answers the call in
flight (:mod:`actors.runtime`); bound the wait for a live one with a cancel
scope, as the JSON-RPC layer does.
"""

from __future__ import annotations

from typing import Any

from actors.runtime import ActorCrashed, ActorRef, ActorUnavailable
from actors.social import scatter
from actors.social.errors import WorkerCrashed, WorkerUnavailable
from actors.social.messages import (
    Block,
    DeletePost,
    Follow,
    MarkRead,
    Mute,
    Neighbours,
    Publish,
    Recommend,
    Unblock,
    Unfollow,
    Unmute,
    Unrecommend,
)
from actors.social.pool import ReaderPool
from actors.social.reads import READS

WRITES = (
    Follow,
    Unfollow,
    Recommend,
    Unrecommend,
    Mute,
    Unmute,
    Block,
    Unblock,
    MarkRead,
    DeletePost,
    Publish,
)
"""Requests the graph writer answers."""


class Social:
    """Calls the social graph: reads on the reader pool, writes on the writer.

    Args:
        readers: the graph reader pool.
        writer: the graph writer's ref.
        page_chunk: ids per range query when a neighbour page is split
            (pages of at most this many ids are one reader's single query).

    Raises:
        ValueError: ``page_chunk`` < 1.
    """

    def __init__(
        self, readers: ReaderPool, writer: ActorRef[Any], *, page_chunk: int = 250
    ) -> None:
        if page_chunk < 1:
            raise ValueError("page_chunk must be >= 1")
        self.readers = readers
        self.writer = writer
        self.page_chunk = page_chunk
        self._routes: dict[type, bool] = {kind: True for kind in READS}
        self._routes.update((kind, False) for kind in WRITES)

    async def call(self, request: Any) -> Any:
        """The reply to ``request`` (a read or write of :mod:`actors.social.messages`).

        Returns:
            The reply type the request names.

        Raises:
            NotFound, InvalidArgument, BlockedError, AlreadyExists, GraphUnavailable: from
                the graph.
            WorkerUnavailable: every reader (for a read) or the writer is down.
            WorkerCrashed: the actor crashed on this request (a bug; it is restarted).
            TypeError: ``request`` is not a social request.
        """
        read = self._routes.get(type(request))
        if read is None:
            raise TypeError(f"not a social request: {type(request).__name__}")
        try:
            if not read:
                return await self.writer.call(request)
            if type(request) is Neighbours and request.limit > self.page_chunk:
                return await scatter.read_page(
                    self.readers,
                    request.user,
                    request.direction,
                    limit=request.limit,
                    after=request.after,
                    chunk=self.page_chunk,
                )
            return await self.readers.call(request)
        except ActorUnavailable as down:
            raise WorkerUnavailable(str(down)) from down
        except ActorCrashed as crash:
            raise WorkerCrashed(str(crash)) from crash
