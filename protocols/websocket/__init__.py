"""``GET /ws``: the WebSocket protocol (sans-I/O session), its frames, and the owned-socket edge.

- :mod:`protocols.websocket.codes` — the close codes (server, client and bench);
- :mod:`protocols.websocket.session` — the protocol rules, sans I/O (:class:`Session`);
- :mod:`protocols.websocket.frames` — server frames built once and shared;
- :mod:`protocols.websocket.edge` — one connection's I/O on a socket the edge owns;
- :mod:`protocols.websocket.gateway` — admission, the shared flusher and timer, statistics.
"""

from protocols.websocket.codes import CLOSE_TRY_AGAIN_LATER
from protocols.websocket.frames import gap_frame, pub_frame, pub_notification, text_frame
from protocols.websocket.gateway import (
    DEFAULT_MAX_CONNECTIONS,
    GatewayStatistics,
    WebSocketGateway,
)
from protocols.websocket.session import DEFAULT_LIMITS, Hub, Limits, Session, SessionStatistics

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
    "pub_frame",
    "pub_notification",
    "text_frame",
]
