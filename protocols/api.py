"""The JSON-RPC methods: wire params (msgspec structs), results, and their handlers.

Handlers reach the domain only through the actor references in
:class:`Services`; they translate the actors' replies and errors into
JSON-RPC results and error objects.

Application errors::

    -32001  service unavailable   the actor or backend behind the method is down
    -32002  timeout               no reply within the call timeout
    -32004  not found             an unknown id; data: {kind, id}
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import trio

from actors.runtime import ActorCrashed, ActorUnavailable
from actors.social import Counts, CountsResult, Following, NotFound, ReaderPool, UsersPage
from protocols.health import health_tree
from protocols.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    SERVICE_UNAVAILABLE,
    Dispatcher,
    JsonRpcError,
    NoParams,
    not_found,
)
from supervisor import SupervisorStatistics

TIMEOUT = -32002

Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")]
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class UserParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user}``."""

    user: Id


class FollowingParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{user, limit=100, cursor=null}``."""

    user: Id
    limit: Limit = 100
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the remote address, as seen by the server."""

    client: str


@dataclass(frozen=True, slots=True)
class Services:
    """What the API may reach: the tree's statistics and the actors' refs.

    Attributes:
        tree: returns the root supervisor's statistics.
        readers: the graph reader pool.
        call_timeout: seconds a method may wait for its actor's reply.
    """

    tree: Callable[[], SupervisorStatistics]
    readers: ReaderPool
    call_timeout: float = 10.0
    started_at: float = field(default_factory=time.time)


def encode_cursor(last: str | None) -> str | None:
    """An opaque page cursor naming the last id returned (``None``: no more pages)."""
    if last is None:
        return None
    return base64.urlsafe_b64encode(f"v1:{last}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str:
    """The id to continue after (``""`` for the first page).

    Raises:
        JsonRpcError: -32602 for a cursor this server did not make.
    """
    if cursor is None:
        return ""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith("v1:") or len(text) <= 3:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params", {"detail": "malformed cursor"})
    return text[3:]


async def call_actor(services: Services, call: Callable[[], Any]) -> Any:
    """Await ``call()`` under the call timeout, mapping runtime errors to JSON-RPC errors."""
    try:
        with trio.fail_after(services.call_timeout):
            return await call()
    except trio.TooSlowError:
        raise JsonRpcError(TIMEOUT, "timeout", {"timeout_seconds": services.call_timeout}) from None
    except NotFound as missing:
        raise not_found(missing.kind, missing.id) from None
    except ActorUnavailable as down:
        raise JsonRpcError(
            SERVICE_UNAVAILABLE, "service unavailable", {"detail": str(down)}
        ) from None
    except ActorCrashed as crash:
        cause = crash.__cause__
        detail = {"type": type(cause).__name__ if cause else "ActorCrashed"}
        if type(cause).__name__ == "BackendUnavailable":
            raise JsonRpcError(SERVICE_UNAVAILABLE, "backend unavailable", detail) from None
        raise JsonRpcError(INTERNAL_ERROR, "Internal error", detail) from None


def build_dispatcher(services: Services) -> Dispatcher[CallContext]:
    """The method table of ``POST /rpc``."""
    rpc: Dispatcher[CallContext] = Dispatcher()

    async def system_health(params: NoParams, context: CallContext) -> dict[str, Any]:
        return health_tree(services.tree())

    async def system_stats(params: NoParams, context: CallContext) -> dict[str, Any]:
        actors: dict[str, Any] = {}
        for path, child in services.tree().walk():
            entry: dict[str, Any] = {"state": child.state, "restarts": child.restarts}
            detail = child.detail
            if hasattr(detail, "messages_handled"):
                entry.update(
                    messages_handled=detail.messages_handled,
                    mailbox_used=detail.mailbox_used,
                    mailbox_peak=detail.mailbox_peak,
                    mailbox_size=detail.mailbox_size,
                )
            actors[path] = entry
        return {"uptime_seconds": round(time.time() - services.started_at, 3), "actors": actors}

    async def social_counts(params: UserParams, context: CallContext) -> dict[str, int]:
        result: CountsResult = await call_actor(
            services, lambda: services.readers.call(Counts(params.user))
        )
        return {"following": result.following, "followers": result.followers}

    async def social_following(params: FollowingParams, context: CallContext) -> dict[str, Any]:
        after = decode_cursor(params.cursor)
        request = Following(params.user, params.limit, after)
        page: UsersPage = await call_actor(services, lambda: services.readers.call(request))
        return {"users": list(page.users), "next_cursor": encode_cursor(page.last)}

    rpc.add("system.health", NoParams, system_health, description="the supervision tree")
    rpc.add("system.stats", NoParams, system_stats, description="per-actor figures")
    rpc.add("social.counts", UserParams, social_counts, description="following/followers")
    rpc.add(
        "social.following", FollowingParams, social_following, description="followed users, paged"
    )
    return rpc
