"""WebSocket close codes of ``GET /ws``: one definition for the server, the client and the bench.

RFC 6455 section 7.4.1 and the IANA registry for 1000-1015; 4000-4999 are
Starling's own. The server sends all but 1006 (a client's name for a
connection that ended without a close frame) and 1011 (sent by proxies or
other servers; a client retries after it); 1012 when its listener restarts
(``system.restart`` of ``api``), as proxies and other servers do.
"""

from __future__ import annotations

from typing import Final

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
"""Idle past the limit, or the server is shutting down."""
CLOSE_IDLE: Final = CLOSE_GOING_AWAY
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_ABNORMAL: Final = 1006
"""Never sent: what a client reports when the connection ended without a close frame."""
CLOSE_INVALID_DATA: Final = 1007
"""A text message or a close reason that is not UTF-8 (wsproto's answer, like 1002 for
the other malformed frames: :mod:`protocols.websocket.edge`)."""
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012
"""The listener restarts (``system.restart`` of ``api`` or of the root): reconnect."""
CLOSE_TRY_AGAIN_LATER: Final = 1013
"""Over the connection limit."""
CLOSE_UNAUTHENTICATED: Final = 4001
CLOSE_TOKEN_EXPIRED: Final = 4003
CLOSE_SLOW_CONSUMER: Final = 4008
