"""System methods, for operators (over the WebSocket: operator and service tokens only).

::

    system.health {}     → the supervision tree (as GET /health)
    system.stats {}      → per-actor figures, bus, realtime
    system.restart {path} → {path, restarts}; path like "realtime/transformer-0";
                           restarts it and what its strategy restarts with it;
                           unknown path: -32004
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec

from observability.health import health_tree
from protocols.jsonrpc import Dispatcher, NoParams, not_found
from protocols.methods.services import CallContext, Services, unavailable
from supervisor import ChildStartError


class RestartParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{path}`` (``system.restart``): child ids joined by ``/`` below the root."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


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
        }
        if self.services.bus is not None:
            stats["bus"] = msgspec.to_builtins(self.services.bus())
        if self.services.realtime is not None:
            stats["realtime"] = msgspec.to_builtins(self.services.realtime.statistics())
        return stats

    async def restart(self, params: RestartParams, context: CallContext) -> dict[str, Any]:
        if self.services.restart is None:
            raise unavailable("no tree")
        try:
            await self.services.restart(params.path)
        except KeyError:
            raise not_found("child", params.path) from None
        except ChildStartError as refused:
            raise unavailable(str(refused)) from None
        restarts = next(
            (child.restarts for path, child in self.services.tree().walk() if path == params.path),
            0,
        )
        return {"path": params.path, "restarts": restarts}


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
