"""The JSON-RPC methods, as tables by domain: social, feeds, realtime, system.

Each domain module declares its params (msgspec structs), its handlers (one
small function per method) and who may call each over the WebSocket; the
handlers reach the domain only through the handles in :class:`Services`.
:func:`build_dispatcher` puts them in one :class:`~protocols.jsonrpc.Dispatcher`,
served by ``POST /rpc`` and, for services and users, on ``/ws``.
"""

from __future__ import annotations

from protocols.jsonrpc import Dispatcher
from protocols.methods import feeds, realtime, social, system
from protocols.methods.services import CallContext, Services, answer, ask

DOMAINS = (system, social, feeds, realtime)
"""The method tables, in the order the method list shows them."""


def build_dispatcher(services: Services) -> Dispatcher[CallContext]:
    """Every method, over ``services``."""
    rpc: Dispatcher[CallContext] = Dispatcher()
    for domain in DOMAINS:
        domain.register(rpc, services)
    return rpc


__all__ = ["CallContext", "Services", "answer", "ask", "build_dispatcher"]
