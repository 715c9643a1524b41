"""The ASGI app: ``POST /rpc``, ``GET /health``, ``GET /metrics``, ``GET /ws`` (WebSocket).

Routing is Starlette's; the JSON-RPC codec is :mod:`protocols.jsonrpc`; the
domain is reached only through the :class:`~protocols.api.Services` given.

Access to ``/rpc``: with an API key configured, ``Authorization: Bearer
<key>`` (compared in constant time; 401 otherwise); without one, loopback
clients only (403 otherwise). ``/ws`` authenticates each connection with
its own token (:mod:`protocols.ws_session`), not the API key.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from protocols.api import CallContext, Services, build_dispatcher
from protocols.health import health_tree
from protocols.jsonrpc import INVALID_REQUEST, JsonRpcError, encode
from protocols.metrics import Metrics, RealtimeCollector
from protocols.ws import WebSocketGateway

MIB = 1 << 20
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class AppConfig:
    """HTTP settings.

    Attributes:
        api_key: the bearer key for ``/rpc``; ``None`` allows loopback clients only.
        max_body_bytes: largest accepted request body, in bytes.
    """

    api_key: str | None = None
    max_body_bytes: int = 1 * MIB


class BodyTooLarge(Exception):
    """The request body exceeds ``max_body_bytes``."""


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8 or ::1)."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_response(status: int, code: int, message: str, detail: str) -> Response:
    body = {"jsonrpc": "2.0", "error": JsonRpcError(code, message, {"detail": detail}).to_object(),
            "id": None}  # fmt: skip
    return Response(encode(body), status_code=status, media_type=JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it exceeds ``limit`` bytes.

    Raises:
        BodyTooLarge: declared or actual length over the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    services: Services,
    config: AppConfig | None = None,
    *,
    websocket: WebSocketGateway | None = None,
) -> Starlette:
    """Build the ASGI app over ``services``; ``websocket`` serves ``GET /ws`` when given."""
    config = config or AppConfig()
    realtime = None
    if services.realtime is not None:
        gateway = websocket

        def connections() -> tuple[int, int]:
            figures = gateway.statistics() if gateway is not None else None
            return (figures.open, figures.refused) if figures is not None else (0, 0)

        realtime = RealtimeCollector(services.realtime.statistics, connections)
    metrics = Metrics(services.tree, services.feeds.counters if services.feeds else None, realtime)
    dispatcher = build_dispatcher(services)
    dispatcher.on_call = metrics.observe_call
    expected = f"Bearer {config.api_key}".encode() if config.api_key else None

    def refuse(request: Request) -> Response | None:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                metrics.http_rejected.labels("unauthorized").inc()
                return _error_response(401, INVALID_REQUEST, "Unauthorized", "bearer key required")
            return None
        client = request.client.host if request.client else None
        if not is_loopback(client):
            metrics.http_rejected.labels("forbidden").inc()
            return _error_response(
                403, INVALID_REQUEST, "Forbidden", "no API key set: loopback clients only"
            )
        return None

    async def rpc(request: Request) -> Response:
        if (refusal := refuse(request)) is not None:
            return refusal
        try:
            body = await read_body(request, config.max_body_bytes)
        except BodyTooLarge:
            metrics.http_rejected.labels("too_large").inc()
            return _error_response(
                413,
                INVALID_REQUEST,
                "Invalid Request",
                f"body exceeds the limit of {config.max_body_bytes} bytes",
            )
        context = CallContext(client=request.client.host if request.client else "")
        reply = await dispatcher.handle(body, context)
        if reply is None:
            return Response(status_code=204)
        return Response(reply, media_type=JSON)

    async def health(request: Request) -> Response:
        tree = health_tree(services.tree())
        status = 200 if tree["status"] == "ok" else 503
        return Response(msgspec.json.encode(tree), status_code=status, media_type=JSON)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/rpc", rpc, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    if websocket is not None:
        routes.append(websocket.route("/ws"))
    return Starlette(routes=routes)
