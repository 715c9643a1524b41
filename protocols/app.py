"""The ASGI app: ``POST /rpc``, ``GET /health``, ``GET /metrics``, ``GET /dashboard`` (the
operators' live page) and ``GET /demo`` (the end-user page). ``GET /ws`` is not
here: the listener hands it to the WebSocket edge (:mod:`protocols.http`).

Routing is Starlette's; the JSON-RPC codec is :mod:`protocols.jsonrpc`; the
domain is reached only through the :class:`~protocols.api.Services` given.

Access to ``/rpc``: with an API key configured, ``Authorization: Bearer
<key>`` (compared in constant time; 401 otherwise); without one, loopback
clients only (403 otherwise). ``/ws`` authenticates each connection with
its own token (:mod:`protocols.websocket.session`), not the API key. The pages are
static files (``protocols/static/``, no build step); they get their
WebSocket tokens from ``GET /dashboard/token`` (an operator's) and
``GET /demo/token?user=`` (a user's), which answer whoever ``/rpc`` answers.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from auth.tokens import USER_ID, issue_token
from observability.health import health_tree
from observability.metrics import Metrics, RealtimeCollector
from protocols.api import CallContext, Services, build_dispatcher
from protocols.jsonrpc import INVALID_REQUEST, JsonRpcError, encode
from protocols.websocket import WebSocketGateway

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


STATIC = Path(__file__).parent / "static"
TOKEN_TTL_SECONDS = 3600


def page_routes(secret: bytes, refuse: Callable[[Request], Response | None]) -> list[BaseRoute]:
    """``/dashboard``, ``/demo``, their token routes and ``/static``.

    Args:
        secret: signs the pages' WebSocket tokens.
        refuse: the ``/rpc`` access rule (API key or loopback); the token routes
            answer only whom it lets through.
    """

    async def dashboard_page(request: Request) -> Response:
        return FileResponse(STATIC / "dashboard.html")

    async def demo_page(request: Request) -> Response:
        return FileResponse(STATIC / "demo.html")

    async def dashboard_token(request: Request) -> Response:
        if (refusal := refuse(request)) is not None:
            return refusal
        token = issue_token(secret, "dashboard", ttl_seconds=TOKEN_TTL_SECONDS, operator=True)
        return Response(encode({"token": token}), media_type=JSON)

    async def demo_token(request: Request) -> Response:
        if (refusal := refuse(request)) is not None:
            return refusal
        user = request.query_params.get("user", "")
        if not USER_ID.fullmatch(user):
            return _error_response(
                400, INVALID_REQUEST, "Invalid Request", "user: 1-64 of letters, digits, '_.:@-'"
            )
        token = issue_token(secret, user, ttl_seconds=TOKEN_TTL_SECONDS)
        return Response(encode({"token": token}), media_type=JSON)

    return [
        Route("/dashboard", dashboard_page, methods=["GET"]),
        Route("/dashboard/token", dashboard_token, methods=["GET"]),
        Route("/demo", demo_page, methods=["GET"]),
        Route("/demo/token", demo_token, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def create_app(
    services: Services,
    config: AppConfig | None = None,
    *,
    websocket: WebSocketGateway | None = None,
    secret: bytes | None = None,
) -> Starlette:
    """Build the ASGI app over ``services``.

    Args:
        websocket: the WebSocket gateway whose figures ``/metrics`` reports (it
            serves ``GET /ws`` beside the app, :class:`protocols.http.HttpServer`).
        secret: the token secret; when given, the pages and their token routes are served.
    """
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
    if secret is not None:
        routes += page_routes(secret, refuse)
    app = Starlette(routes=routes)
    app.state.metrics = metrics
    return app
