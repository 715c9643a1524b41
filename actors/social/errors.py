"""The social actors' error replies: each is a :class:`~actors.runtime.Rejection`.

A rejection is re-raised in the caller and leaves the actor running (invalid
input and a backend outage are replies, not crashes)::

    SocialRejection             base of the social actors' replies
    ├── NotFound                an unknown user or post (JSON-RPC -32004)
    ├── InvalidArgument         a request the graph must refuse, e.g. following yourself (-32602)
    ├── AlreadyExists           a post id that is taken (-32009)
    ├── BlockedError            a follow between two users one of whom blocks the other
    │                           (-32003 "forbidden", data.reason "blocked")
    ├── GraphUnavailable        the graph backend cannot be reached (-32001)
    └── WorkerFailed            a graph reader or the writer did not answer
        ├── WorkerUnavailable   it is down or restarting (-32001)
        └── WorkerCrashed       it crashed on this request, a bug (-32603)

``GraphUnavailable`` is what keeps a backend outage from crash-looping the
readers and the writer into escalation: they answer each request with it and
keep running, so the server recovers by itself when the backend returns. The
``stores`` monitors report the outage in ``/health`` meanwhile.
"""

from __future__ import annotations

from actors.runtime import Rejection


class SocialRejection(Rejection):
    """Base class of the social actors' error replies."""


class NotFound(SocialRejection):
    """An id that is not in the graph.

    Attributes:
        kind: ``"user"`` or ``"post"``.
        id: the id asked for.
    """

    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"{kind} {id!r} not found")
        self.kind = kind
        self.id = id


class InvalidArgument(SocialRejection):
    """A well-formed request that the graph refuses (e.g. following yourself)."""


class AlreadyExists(SocialRejection):
    """An id that is already taken (a post published twice).

    Attributes:
        kind: ``"post"``.
        id: the id.
    """

    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"{kind} {id!r} already exists")
        self.kind = kind
        self.id = id


class BlockedError(SocialRejection):
    """A follow refused: ``follower`` blocks ``followee``, or ``followee`` blocks ``follower``.

    The message does not say which of the two blocks the other.

    Attributes:
        follower: who asked to follow.
        followee: whom they asked to follow.
    """

    def __init__(self, follower: str, followee: str) -> None:
        super().__init__(f"{follower!r} cannot follow {followee!r}: a block stands between them")
        self.follower = follower
        self.followee = followee


class GraphUnavailable(SocialRejection):
    """The graph backend cannot be reached (``stores.errors.BackendUnavailable``)."""


class WorkerFailed(SocialRejection):
    """A graph reader or the writer did not answer; ``__cause__`` is the runtime error."""


class WorkerUnavailable(WorkerFailed):
    """Every graph reader, or the writer, is down or restarting."""


class WorkerCrashed(WorkerFailed):
    """A graph reader or the writer crashed on this request (a bug; it is restarted)."""
