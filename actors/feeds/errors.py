"""The feed actors' error replies (each a :class:`~actors.runtime.Rejection`)::

    FeedRejection          base of the feed actors' replies
    ├── SnapshotExpired    a cursor names a ranked snapshot that is gone (JSON-RPC -32010)
    ├── BadCursor          a cursor made for another user (-32602)
    └── IndexUnavailable   the story index could not be loaded from the graph (-32001)

An unknown user is :class:`actors.social.NotFound` (-32004) and a graph
outage while reading the user's context is :class:`actors.social.GraphUnavailable`
(-32001), as in the social service.
"""

from __future__ import annotations

from actors.runtime import Rejection


class FeedRejection(Rejection):
    """Base class of the feed actors' error replies."""


class SnapshotExpired(FeedRejection):
    """The ranked snapshot a cursor names is no longer cached (its TTL passed).

    Attributes:
        snapshot: the snapshot id.
    """

    def __init__(self, snapshot: str) -> None:
        super().__init__(f"snapshot {snapshot!r} expired; start again without a cursor")
        self.snapshot = snapshot


class BadCursor(FeedRejection):
    """A cursor that does not belong to this user's feed."""


class IndexUnavailable(FeedRejection):
    """The story index is not loaded (the graph could not be read); retry later."""
