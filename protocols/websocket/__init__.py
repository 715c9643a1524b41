"""``GET /ws``: the WebSocket protocol (sans-I/O session), its frames, and the owned-socket edge.

- :mod:`protocols.websocket.codes` — the close codes (server, client and bench);
- :mod:`protocols.websocket.wire` — the wire structs (server and client);
- :mod:`protocols.websocket.session` — the protocol rules, sans I/O (:class:`Session`);
- :mod:`protocols.websocket.frames` — server frames built once and shared;
- :mod:`protocols.websocket.edge` — one connection's I/O on a socket the edge owns;
- :mod:`protocols.websocket.gateway` — admission, the shared flusher and timer, statistics.

The public names below are imported on first use (PEP 562), so that a client
importing the codes or the wire structs does not load the server side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protocols.websocket.codes import CLOSE_TRY_AGAIN_LATER
    from protocols.websocket.frames import (
        gap_frame,
        presence_frame,
        pub_frame,
        pub_notification,
        text_frame,
    )
    from protocols.websocket.gateway import (
        DEFAULT_MAX_CONNECTIONS,
        GatewayStatistics,
        WebSocketGateway,
    )
    from protocols.websocket.session import (
        DEFAULT_LIMITS,
        Hub,
        Limits,
        Session,
        SessionStatistics,
    )

_HOMES = {
    "CLOSE_TRY_AGAIN_LATER": "codes",
    "DEFAULT_LIMITS": "session",
    "DEFAULT_MAX_CONNECTIONS": "gateway",
    "GatewayStatistics": "gateway",
    "Hub": "session",
    "Limits": "session",
    "Session": "session",
    "SessionStatistics": "session",
    "WebSocketGateway": "gateway",
    "gap_frame": "frames",
    "presence_frame": "frames",
    "pub_frame": "frames",
    "pub_notification": "frames",
    "text_frame": "frames",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "CLOSE_TRY_AGAIN_LATER",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_CONNECTIONS",
    "GatewayStatistics",
    "Hub",
    "Limits",
    "Session",
    "SessionStatistics",
    "WebSocketGateway",
    "gap_frame",
    "presence_frame",
    "pub_frame",
    "pub_notification",
    "text_frame",
]
