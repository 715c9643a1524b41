"""What the methods may reach (:class:`Services`), who calls (:class:`CallContext`), and how
the actors' errors become JSON-RPC errors (:func:`answer`), for every domain's table."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import msgspec
import trio

from actors.bus import BusStatistics
from actors.feeds import BadCursor, Feeds, IndexUnavailable, SnapshotExpired
from actors.ids import ID
from actors.realtime.pipeline import InvalidEvent, PublishTimeout, Realtime, StreamUnavailable
from actors.runtime import ActorCrashed, ActorUnavailable
from actors.social import (
    AlreadyExists,
    BlockedError,
    GraphUnavailable,
    InvalidArgument,
    NotFound,
    WorkerCrashed,
    WorkerUnavailable,
)
from protocols.jsonrpc import (
    ALREADY_EXISTS,
    FORBIDDEN,
    INTERNAL_ERROR,
    SERVICE_UNAVAILABLE,
    SNAPSHOT_EXPIRED,
    TIMEOUT,
    JsonRpcError,
    invalid_params,
    not_found,
)
from supervisor import FaultKind, SupervisorStatistics

Id = Annotated[str, msgspec.Meta(pattern=f"^{ID.pattern}$")]
"""A user, post, topic or publication id: the one id rule (:mod:`actors.ids`)."""


class SocialCalls(Protocol):
    """The social graph as the methods see it: ``call(request)`` → the reply, or an error
    of :mod:`actors.social.errors` (an :class:`~actors.runtime.ActorRef` qualifies)."""

    async def call(self, request: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the remote address, as seen by the server."""

    client: str


@dataclass(frozen=True, slots=True)
class Services:
    """What the API may reach: the tree's statistics and the domain's handles.

    Attributes:
        tree: returns the root supervisor's statistics.
        social: the social graph's handle (``call(request)``).
        bus: returns the event bus's statistics (shown by ``system.stats``).
        feeds: the feeds subtree's handle (``None``: feed methods answer -32001).
        realtime: the realtime subtree's handle (``None``: realtime methods answer -32001).
        restart: restarts the child at a tree path (``Supervisor.restart_path`` of the
            root; ``""``: every child of the root) and says whether it only scheduled
            it (it stops the caller), for ``system.restart``; ``None``: -32001.
        fault: injects a fault into the child at a tree path (``Supervisor.inject_fault``
            of the root), for ``system.fault``; ``None``: fault injection is off (-32003).
        call_timeout: seconds a method may wait for its actor's reply.
        started_at: when the server started, epoch seconds.
    """

    tree: Callable[[], SupervisorStatistics]
    social: SocialCalls
    bus: Callable[[], BusStatistics] | None = None
    feeds: Feeds | None = None
    realtime: Realtime | None = None
    restart: Callable[[str], Awaitable[bool]] | None = None
    fault: Callable[[str, FaultKind], Awaitable[bool]] | None = None
    call_timeout: float = 10.0
    started_at: float = field(default_factory=time.time)


def unavailable(detail: str) -> JsonRpcError:
    """``-32001 service unavailable`` with ``data.detail``."""
    return JsonRpcError(SERVICE_UNAVAILABLE, "service unavailable", {"detail": detail})


async def ask(services: Services, request: Any) -> Any:
    """Call the social graph under the call timeout, mapping its errors to JSON-RPC errors.

    Raises:
        JsonRpcError: see :func:`answer`.
    """
    return await answer(services, lambda: services.social.call(request))


async def answer(services: Services, call: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``call()`` under the call timeout, mapping the domain's errors to JSON-RPC errors.

    Raises:
        JsonRpcError: -32002 past the timeout; -32004 not found; -32602 invalid
            argument, bad cursor or invalid event (``data.index``); -32003 a follow
            across a block (``data.reason``: ``"blocked"``); -32009 already
            exists; -32010 snapshot expired; -32001 a backend (``backend unavailable``)
            or an actor (``service unavailable``) down; -32603 an actor crashed
            on the request (``data.type``: the bug's type).
    """
    try:
        with trio.fail_after(services.call_timeout):
            return await call()
    except trio.TooSlowError:
        raise JsonRpcError(TIMEOUT, "timeout", {"timeout_seconds": services.call_timeout}) from None
    except NotFound as missing:
        raise not_found(missing.kind, missing.id) from None
    except (InvalidArgument, BadCursor) as invalid:
        raise invalid_params(str(invalid)) from None
    except BlockedError:
        raise JsonRpcError(FORBIDDEN, "forbidden", {"reason": "blocked"}) from None
    except AlreadyExists as taken:
        raise JsonRpcError(
            ALREADY_EXISTS, f"{taken.kind} already exists", {"kind": taken.kind, "id": taken.id}
        ) from None
    except SnapshotExpired as expired:
        raise JsonRpcError(
            SNAPSHOT_EXPIRED, "snapshot expired", {"snapshot": expired.snapshot}
        ) from None
    except PublishTimeout as slow:
        raise JsonRpcError(TIMEOUT, "timeout", {"timeout_seconds": slow.seconds}) from None
    except InvalidEvent as invalid:
        raise invalid_params(str(invalid), index=invalid.index) from None
    except (GraphUnavailable, IndexUnavailable, StreamUnavailable) as outage:
        raise JsonRpcError(
            SERVICE_UNAVAILABLE, "backend unavailable", {"detail": str(outage)}
        ) from None
    except (WorkerUnavailable, ActorUnavailable) as down:
        raise unavailable(str(down)) from None
    except (WorkerCrashed, ActorCrashed) as crash:
        raise JsonRpcError(INTERNAL_ERROR, "Internal error", {"type": _root_cause(crash)}) from None


def _root_cause(error: BaseException) -> str:
    """The type name of the innermost ``__cause__`` (the bug behind a crash)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return type(error).__name__
