"""A small client of Starling: JSON-RPC over HTTP, a tail of realtime channels, the replayer.

Used by the command line (``starling tail``, ``starling replay``) and by the
benchmarks. It speaks the wire of :mod:`protocols.app` (``POST /rpc``) and of
:mod:`protocols.websocket.session` (``GET /ws``), and imports nothing of the
server but the wire definitions the two sides share (:mod:`protocols.websocket.codes`).
"""

from client.errors import (
    AuthError,
    ClientError,
    Closed,
    HttpError,
    ProtocolError,
    RpcError,
    Unreachable,
)
from client.http import Reply, open_client, rpc, rpc_batch
from client.tail import (
    Gap,
    Position,
    Reconnecting,
    Subscribed,
    TailResult,
    TailStatus,
    tail,
    websocket_url,
)

__all__ = [
    "AuthError",
    "ClientError",
    "Closed",
    "Gap",
    "HttpError",
    "Position",
    "ProtocolError",
    "Reconnecting",
    "Reply",
    "RpcError",
    "Subscribed",
    "TailResult",
    "TailStatus",
    "Unreachable",
    "open_client",
    "rpc",
    "rpc_batch",
    "tail",
    "websocket_url",
]
