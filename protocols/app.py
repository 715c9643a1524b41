"""The ASGI app: ``POST /rpc``, ``GET /health``, ``GET /metrics``, ``GET /dashboard`` (the
operators' live page) and ``GET /demo`` (the end-user page). ``GET /ws`` is not
here: the listener hands it to the WebSocket edge (:mod:`protocols.http`).

``POST /rpc`` is a plain ASGI callable (:class:`RpcEndpoint`) ahead of
Starlette's router, which serves the rest; the JSON-RPC core is
:mod:`protocols.jsonrpc` and the methods :mod:`protocols.methods`; the domain
is reached only through the :class:`~protocols.methods.Services` given.

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
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from protocols.jsonrpc import INVALID_REQUEST, Dispatcher, JsonRpcError, encode
from protocols.methods import CallContext, Services, build_dispatcher
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


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8 or ::1)."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: its HTTP status, the error's message and detail."""

    status: int
    message: str
    detail: str
    reason: str
    """The ``starling_http_rejected_total`` label."""


class Gate:
    """Who ``/rpc`` and the page-token routes answer: the API key, or loopback clients.

    Args:
        api_key: the bearer key (compared in constant time); ``None``: loopback only.
    """

    def __init__(self, api_key: str | None) -> None:
        self._expected = f"Bearer {api_key}".encode() if api_key else None

    def check(self, authorization: bytes, client: str | None) -> Refusal | None:
        """``None`` when let through, else why not."""
        if self._expected is not None:
            if hmac.compare_digest(authorization, self._expected):
                return None
            return Refusal(401, "Unauthorized", "bearer key required", "unauthorized")
        if is_loopback(client):
            return None
        return Refusal(403, "Forbidden", "no API key set: loopback clients only", "forbidden")


def error_body(refusal_or_detail: Refusal | str, code: int = INVALID_REQUEST) -> bytes:
    """The JSON-RPC error body of an HTTP-level refusal (``id`` null)."""
    if isinstance(refusal_or_detail, Refusal):
        message, detail = refusal_or_detail.message, refusal_or_detail.detail
    else:
        message, detail = "Invalid Request", refusal_or_detail
    error = JsonRpcError(code, message, {"detail": detail})
    return encode({"jsonrpc": "2.0", "error": error.to_object(), "id": None})


def _error_response(status: int, code: int, message: str, detail: str) -> Response:
    return Response(
        error_body(Refusal(status, message, detail, ""), code), status_code=status, media_type=JSON
    )


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RpcEndpoint:
    """``POST /rpc`` as a plain ASGI callable: access, body, dispatch, one response.

    Costs per request: one header scan, the body's chunks joined once, one
    dispatch, two ASGI sends. Refusals: 401/403 (:class:`Gate`), 405 for
    another method (``Allow: POST``), 413 for a body over ``max_body_bytes``
    (declared or actual; the connection is then closed, ``Connection: close``,
    since the rest of the body is not read); 204 when nothing is to be
    answered (notifications only).

    Args:
        dispatcher: the methods.
        gate: who may call.
        max_body_bytes: largest accepted body, in bytes.
        metrics: counts the refusals.
    """

    def __init__(
        self,
        dispatcher: Dispatcher[CallContext],
        gate: Gate,
        max_body_bytes: int,
        metrics: Metrics,
    ) -> None:
        self.dispatcher = dispatcher
        self.gate = gate
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _respond(send, 405, error_body("POST only"), [(b"allow", b"POST")])
            return
        authorization = b""
        declared = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                declared = value
        client = scope.get("client")
        host = client[0] if client else None
        refusal = self.gate.check(authorization, host)
        if refusal is not None:
            self.metrics.http_rejected.labels(refusal.reason).inc()
            await _respond(send, refusal.status, error_body(refusal))
            return
        limit = self.max_body_bytes
        body = None
        if declared is None or not declared.isdigit() or int(declared) <= limit:
            body = await _read_body(receive, limit)
        if body is None:
            self.metrics.http_rejected.labels("too_large").inc()
            detail = f"body exceeds the limit of {limit} bytes"
            await _respond(send, 413, error_body(detail), [(b"connection", b"close")])
            return
        reply = await self.dispatcher.handle(body, CallContext(client=host or ""))
        if reply is None:
            await _respond(send, 204, b"")
        else:
            await _respond(send, 200, reply)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or ``None`` as soon as it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away: answer what came
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [(b"content-length", b"%d" % len(body)), *(headers or [])]
    if body:
        head.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class App:
    """The ASGI app: ``/rpc`` to its endpoint, everything else to Starlette's router.

    Attributes:
        router: the Starlette app (``/health``, ``/metrics``, the pages, lifespan).
        rpc: the ``/rpc`` endpoint.
        state: the router's state (``state.metrics``).
    """

    def __init__(self, router: Starlette, rpc: RpcEndpoint) -> None:
        self.router = router
        self.rpc = rpc
        self.state = router.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/rpc":
            await self.rpc(scope, receive, send)
        else:
            await self.router(scope, receive, send)


STATIC = Path(__file__).parent / "static"
TOKEN_TTL_SECONDS = 3600


def page_routes(secret: bytes, refuse: Callable[[Request], Response | None]) -> list[BaseRoute]:
    """``/dashboard``, ``/demo``, their token routes and ``/static``.

    Args:
        secret: signs the pages' WebSocket tokens.
        refuse: the ``/rpc`` access rule (:class:`Gate`); the token routes answer only
            whom it lets through.
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
) -> App:
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
    if websocket is not None:
        websocket.attach_rpc(dispatcher, CallContext)
    gate = Gate(config.api_key)

    def refuse(request: Request) -> Response | None:
        client = request.client.host if request.client else None
        refusal = gate.check(request.headers.get("authorization", "").encode(), client)
        if refusal is None:
            return None
        metrics.http_rejected.labels(refusal.reason).inc()
        return Response(error_body(refusal), status_code=refusal.status, media_type=JSON)

    async def health(request: Request) -> Response:
        tree = health_tree(services.tree())
        status = 200 if tree["status"] == "ok" else 503
        return Response(msgspec.json.encode(tree), status_code=status, media_type=JSON)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    if secret is not None:
        routes += page_routes(secret, refuse)
    router = Starlette(routes=routes)
    router.state.metrics = metrics
    return App(router, RpcEndpoint(dispatcher, gate, config.max_body_bytes, metrics))
