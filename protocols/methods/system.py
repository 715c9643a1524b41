"""System methods, for operators (over the WebSocket: operator and service tokens only).

::

    system.health {}     → the supervision tree (as GET /health)
    system.stats {}      → per-actor figures, trio tasks living, bus, realtime
    system.restart {path} → {path, restarts, scheduled}; path like "realtime/transformer-0";
                           restarts it and what its strategy restarts with it;
                           "root": every child of the root, in place; unknown
                           path: -32004. scheduled: the restart stops the
                           server answering (api, root), so it begins once
                           the reply is sent
    system.fault {path, kind} → {path, kind}; kind "handler" | "start" | "leak"
                           (supervisor.faults); only with --fault-injection
                           (else -32003, data.reason); the root: -32602
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Final

import msgspec
import trio

from observability.health import health_tree
from protocols.jsonrpc import (
    FORBIDDEN,
    Dispatcher,
    JsonRpcError,
    NoParams,
    invalid_params,
    not_found,
)
from protocols.methods.services import CallContext, Services, unavailable
from supervisor import ChildStartError, FaultKind

FAULTS_OFF: Final = (
    "fault injection is off: start the server with `starling serve --fault-injection` "
    "(or STARLING_FAULT_INJECTION=1)"
)


class RestartParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{path}`` (``system.restart``): child ids joined by ``/`` below the root, or the
    root's id (``"root"``) for the whole tree."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class FaultParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{path, kind}`` (``system.fault``): a child's path, as for ``system.restart``, and
    ``"handler"``, ``"start"`` or ``"leak"``."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    kind: FaultKind


class SystemMethods:
    """The handlers, over the supervision tree of ``services``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def health(self, params: NoParams, context: CallContext) -> dict[str, Any]:
        return health_tree(self.services.tree())

    async def stats(self, params: NoParams, context: CallContext) -> dict[str, Any]:
        actors: dict[str, Any] = {}
        for path, child in self.services.tree().walk():
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
        stats: dict[str, Any] = {
            "uptime_seconds": round(time.time() - self.services.started_at, 3),
            "actors": actors,
            "tasks": trio.lowlevel.current_statistics().tasks_living,
        }
        if self.services.bus is not None:
            stats["bus"] = msgspec.to_builtins(self.services.bus())
        if self.services.realtime is not None:
            stats["realtime"] = msgspec.to_builtins(self.services.realtime.statistics())
        return stats

    async def restart(self, params: RestartParams, context: CallContext) -> dict[str, Any]:
        """Restart the child at ``path`` (the root's id: every child of the root, in
        place). ``restarts``: its restart count as of the reply (the root: its
        ``restarts_total``); ``scheduled``: the restart begins once this call has
        answered (it stops what serves the call: ``api``, the root)."""
        if self.services.restart is None:
            raise unavailable("no tree")
        root = self.services.tree()
        whole = params.path == root.id
        try:
            scheduled = await self.services.restart("" if whole else params.path)
        except KeyError:
            raise not_found("child", params.path) from None
        except ChildStartError as refused:
            raise unavailable(str(refused)) from None
        tree = self.services.tree()
        restarts = tree.restarts_total if whole else next(
            (child.restarts for path, child in tree.walk() if path == params.path), 0
        )  # fmt: skip
        return {"path": params.path, "restarts": restarts, "scheduled": scheduled}

    async def fault(self, params: FaultParams, context: CallContext) -> dict[str, Any]:
        """Inject a fault into the child at ``path`` (:mod:`supervisor.faults`)."""
        if self.services.fault is None:
            raise JsonRpcError(FORBIDDEN, "forbidden", {"reason": FAULTS_OFF})
        if params.path == self.services.tree().id:
            raise invalid_params("the root has no supervisor to answer a fault: name a child")
        try:
            await self.services.fault(params.path, params.kind)
        except KeyError:
            raise not_found("child", params.path) from None
        except ChildStartError as refused:
            raise unavailable(str(refused)) from None
        return {"path": params.path, "kind": params.kind.value}


def register(rpc: Dispatcher[CallContext], services: Services) -> None:
    """Add the system methods to ``rpc`` (operators only, on every transport)."""
    m = SystemMethods(services)
    rpc.add("system.health", NoParams, m.health, description="the supervision tree")
    rpc.add("system.stats", NoParams, m.stats, description="per-actor figures")
    rpc.add(
        "system.restart",
        RestartParams,
        m.restart,
        description="restart a child of the supervision tree (operators)",
    )
    rpc.add(
        "system.fault",
        FaultParams,
        m.fault,
        description="inject a fault into a child (operators; --fault-injection only)",
    )
