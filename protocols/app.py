"""The ASGI app: ``POST /rpc``, ``GET /health``, ``GET /metrics``, ``GET /dashboard`` (the
operators' live page) and ``GET /demo`` (the end-user page). ``GET /ws`` is not
here: the listener hands it to the WebSocket edge (:mod:`protocols.http`).

``POST /rpc`` is a plain ASGI callable (:class:`RpcEndpoint`) ahead of
Starlette's router, which serves the rest; the JSON-RPC core is
:mod:`protocols.jsonrpc` and the methods :mod:`protocols.methods`; the domain
is reached only through the :class:`~protocols.methods.Services` given.

Who gets through which door (:class:`Gate`; docs/operations.md, "Security"):

- ``/rpc``: ``Authorization: Bearer <API key>`` (compared in constant time), or
  ``Bearer <token>`` (:mod:`auth.tokens`; each method then checks its
  :class:`~protocols.jsonrpc.Access`, as on ``/ws``); without a bearer, a
  loopback client when no API key is set. Otherwise 401 (a key is set, or the
  token is bad) or 403, with a -32003 body.
- ``/dashboard/token`` and ``/demo/token`` mint tokens: the API key when one is
  set, else loopback clients only; never a token.
- ``/health`` and ``/metrics``: :class:`RouteAccess` (``--health-access``,
  ``--metrics-access``): open by default, or loopback-or-key, or key only.
- ``/dashboard``, ``/demo``, ``/static``: static files, open.

A request that carries a proxy's header (``Forwarded``, ``X-Forwarded-For``,
``X-Real-IP``) is never taken for a loopback client: behind a proxy on the same
machine, every client would otherwise look local. ``/ws`` authenticates each
connection with its own token (:mod:`protocols.websocket.session`), not the
API key. The pages are static files (``protocols/static/``, no build step).

No reply and no log line names a secret, a key or a token.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from auth.tokens import (
    USER_ID,
    Keyring,
    TokenExpired,
    TokenInvalid,
    issue_token,
    keyring_of,
    verify_token,
)
from observability.health import health_tree
from observability.metrics import Metrics, RateLimitCollector, RealtimeCollector
from protocols.jsonrpc import (
    INVALID_REQUEST,
    UNAUTHORIZED,
    Caller,
    Dispatcher,
    JsonRpcError,
    encode,
    error_reply,
    rate_limited,
)
from protocols.methods import CallContext, Services, build_dispatcher
from protocols.ratelimit import RateLimiter, retry_after_ms
from protocols.websocket import WebSocketGateway

MIB = 1 << 20
JSON = "application/json"
SECONDS = 1.0
DEFAULT_BODY_TIMEOUT = 30 * SECONDS
"""Longest wait for a ``/rpc`` body to arrive whole (a client that trickles it gets 408)."""


class RouteAccess(enum.Enum):
    """Who may read ``/health`` or ``/metrics`` (``--health-access``, ``--metrics-access``).

    OPEN: anyone (a load balancer's health check, a Prometheus without credentials).
    LOOPBACK: a loopback client not behind a proxy, or the API key.
    KEY: the API key only (one must be set).
    """

    OPEN = "open"
    LOOPBACK = "loopback"
    KEY = "key"


@dataclass(frozen=True, slots=True)
class AppConfig:
    """HTTP settings.

    Attributes:
        api_key: the bearer key for ``/rpc``; ``None`` allows loopback clients only.
            Never shown in a ``repr``.
        max_body_bytes: largest accepted request body, in bytes.
        body_timeout: seconds a ``/rpc`` body may take to arrive whole, from the end of
            its headers (408 and the connection closed after it).
        health_access: who may read ``/health``.
        metrics_access: who may read ``/metrics``.

    Raises:
        ValueError: an access is :attr:`RouteAccess.KEY` but no API key is set.
    """

    api_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = 1 * MIB
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    health_access: RouteAccess = RouteAccess.OPEN
    metrics_access: RouteAccess = RouteAccess.OPEN

    def __post_init__(self) -> None:
        for route, access in (("health", self.health_access), ("metrics", self.metrics_access)):
            if access is RouteAccess.KEY and not self.api_key:
                raise ValueError(
                    f"--{route}-access key needs an API key (--api-key, STARLING_API_KEY)"
                )


PROXY_HEADERS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})
"""Headers a proxy adds (RFC 7239 and the common ones): their request came through one, so
its loopback peer address says nothing of the client."""


def proxied(header_names: Iterable[bytes]) -> bool:
    """Whether a request with these (lower-case) header names came through a proxy."""
    return any(name in PROXY_HEADERS for name in header_names)


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


KEY_REQUIRED = Refusal(401, "unauthorized", "bearer key required", "unauthorized")
LOOPBACK_ONLY = Refusal(403, "forbidden", "no API key set: loopback clients only", "forbidden")
TOKEN_EXPIRED = Refusal(401, "unauthorized", "bearer token expired", "unauthorized")
TOKEN_INVALID = Refusal(401, "unauthorized", "bearer token invalid", "unauthorized")


class Gate:
    """Who the HTTP doors let through: the API key, loopback clients, bearer tokens.

    Refusals name no key and no token: ``data.detail`` is one of four fixed sentences.

    Args:
        api_key: the bearer key (compared in constant time); ``None``: loopback only.
        keyring: verifies bearer tokens on ``/rpc`` (:meth:`admit`); ``None``: none accepted.
    """

    def __init__(self, api_key: str | None, keyring: Keyring | None = None) -> None:
        self._expected = f"Bearer {api_key}".encode() if api_key else None
        self._keyring = keyring

    def _has_key(self, authorization: bytes) -> bool:
        return self._expected is not None and hmac.compare_digest(authorization, self._expected)

    def check(
        self, authorization: bytes, client: str | None, *, proxied: bool = False
    ) -> Refusal | None:
        """The key-or-loopback rule (the page token routes, ``/rpc`` without a token): with an
        API key set, the key; without, a loopback client not behind a proxy. ``None`` when
        let through, else why not."""
        if self._expected is not None:
            return None if self._has_key(authorization) else KEY_REQUIRED
        if is_loopback(client) and not proxied:
            return None
        return LOOPBACK_ONLY

    def allows(
        self,
        access: RouteAccess,
        authorization: bytes,
        client: str | None,
        *,
        proxied: bool = False,
    ) -> Refusal | None:
        """Whether ``/health`` or ``/metrics`` under ``access`` answers this request."""
        if access is RouteAccess.OPEN or self._has_key(authorization):
            return None
        if access is RouteAccess.LOOPBACK and is_loopback(client) and not proxied:
            return None
        return KEY_REQUIRED if access is RouteAccess.KEY else LOOPBACK_ONLY

    def admit(
        self,
        authorization: bytes,
        client: str | None,
        *,
        proxied: bool = False,
        now: float | None = None,
    ) -> Caller | Refusal | None:
        """Who calls ``/rpc``.

        Args:
            authorization: the ``Authorization`` header's value (``b""`` when absent).
            client: the peer's address.
            proxied: the request carries a proxy's header (:func:`proxied`).
            now: epoch seconds, for the token's ``exp``; defaults to ``time.time()``.

        Returns:
            ``None``: the API key, or a trusted loopback client (every method); a
            :class:`~protocols.jsonrpc.Caller`: a valid bearer token (each method checks its
            access); a :class:`Refusal`: a bad token (401), else as :meth:`check`.
        """
        if self._has_key(authorization):
            return None
        scheme, _, credentials = authorization.partition(b" ")
        if self._keyring is not None and scheme == b"Bearer" and credentials.count(b".") == 2:
            try:
                token = credentials.decode("ascii")
                claims = verify_token(self._keyring, token, now=time.time() if now is None else now)
            except TokenExpired:
                return TOKEN_EXPIRED
            except (TokenInvalid, UnicodeDecodeError):
                return TOKEN_INVALID
            return Caller(claims.user, privileged=claims.operator or claims.service)
        return self.check(authorization, client, proxied=proxied)


def error_body(refusal_or_detail: Refusal | str, code: int = INVALID_REQUEST) -> bytes:
    """The JSON-RPC error body of an HTTP-level refusal (``id`` null): -32003 for 401/403,
    ``code`` (-32600 by default) for the rest; ``data.detail`` says why."""
    if isinstance(refusal_or_detail, Refusal):
        message, detail = refusal_or_detail.message, refusal_or_detail.detail
        code = UNAUTHORIZED if refusal_or_detail.status in (401, 403) else code
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
    dispatch, two ASGI sends (and one HMAC for a bearer token). Refusals: 401/403
    (:meth:`Gate.admit`), 405 for
    another method (``Allow: POST``), 413 for a body over ``max_body_bytes``
    (declared or actual; the connection is then closed, ``Connection: close``,
    since the rest of the body is not read); 408 for a body not whole within
    ``body_timeout`` (closed too); 429 over the caller's rate, with a -32011
    body, ``data.retry_after_ms`` and ``Retry-After`` (the connection stays
    open); 204 when nothing is to be answered (notifications only).

    Args:
        dispatcher: the methods.
        gate: who may call.
        max_body_bytes: largest accepted body, in bytes.
        metrics: counts the refusals.
        body_timeout: seconds the body may take to arrive whole.
        rate_limiter: a bearer token's requests take from its user's bucket (the one its
            ``/ws`` connections share), the API key's and loopback's from their client
            address's (:mod:`protocols.ratelimit`); ``None``: no limit. One request (a
            batch too) is one unit.
    """

    def __init__(
        self,
        dispatcher: Dispatcher[CallContext],
        gate: Gate,
        max_body_bytes: int,
        metrics: Metrics,
        *,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.gate = gate
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.body_timeout = body_timeout
        self.rate_limiter = rate_limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _respond(send, 405, error_body("POST only"), [(b"allow", b"POST")])
            return
        authorization = b""
        declared = None
        via_proxy = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                declared = value
            elif name in PROXY_HEADERS:
                via_proxy = True
        client = scope.get("client")
        host = client[0] if client else None
        caller = self.gate.admit(authorization, host, proxied=via_proxy)
        if isinstance(caller, Refusal):
            self.metrics.http_rejected.labels(caller.reason).inc()
            await _respond(send, caller.status, error_body(caller))
            return
        limit = self.max_body_bytes
        body = None
        if declared is None or not declared.isdigit() or int(declared) <= limit:
            with trio.move_on_after(self.body_timeout) as reading:
                body = await _read_body(receive, limit)
            if reading.cancelled_caught:
                self.metrics.http_rejected.labels("body_timeout").inc()
                detail = f"body not received within {self.body_timeout:g} s"
                await _respond(send, 408, error_body(detail), [(b"connection", b"close")])
                return
        if body is None:
            self.metrics.http_rejected.labels("too_large").inc()
            detail = f"body exceeds the limit of {limit} bytes"
            await _respond(send, 413, error_body(detail), [(b"connection", b"close")])
            return
        if self.rate_limiter is not None:
            now = time.time()  # the sessions' clock: a token's bucket is shared with /ws
            wait = (
                self.rate_limiter.admit(now, None, caller.user, privileged=caller.privileged)
                if caller is not None
                else self.rate_limiter.admit_client(now, host or "")
            )
            if wait:
                self.metrics.http_rejected.labels("rate_limited").inc()
                milliseconds = retry_after_ms(wait)
                body = encode(error_reply(None, rate_limited(milliseconds)))
                retry = b"%d" % -(-milliseconds // 1000)
                await _respond(send, 429, body, [(b"retry-after", retry)])
                return
        reply = await self.dispatcher.handle(body, CallContext(client=host or ""), caller=caller)
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


def page_routes(
    secret: bytes | Keyring, refuse: Callable[[Request], Response | None]
) -> list[BaseRoute]:
    """``/dashboard``, ``/demo``, their token routes and ``/static``.

    Args:
        secret: signs the pages' WebSocket tokens (a keyring's current secret).
        refuse: the key-or-loopback rule (:meth:`Gate.check`); the token routes answer
            only whom it lets through, never a bearer token.
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
    secret: bytes | Keyring | None = None,
    rate_limiter: RateLimiter | None = None,
) -> App:
    """Build the ASGI app over ``services``.

    Args:
        websocket: the WebSocket gateway whose figures ``/metrics`` reports (it
            serves ``GET /ws`` beside the app, :class:`protocols.http.HttpServer`).
        rate_limiter: the buckets of ``POST /rpc`` (:class:`RpcEndpoint`); ``None``: the
            gateway's, so that a token has one budget on both doors (none without one).
        secret: the token secret, or the secrets of a rotation; when given, the pages and
            their token routes are served and ``/rpc`` takes bearer tokens.
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
    if rate_limiter is None and websocket is not None:
        rate_limiter = websocket.rate_limiter
    if rate_limiter is not None:
        limiter = rate_limiter

        def rate_figures() -> tuple[int, int]:
            figures = limiter.statistics()
            return figures.limited, figures.tracked_tokens + figures.tracked_clients

        metrics.registry.register(RateLimitCollector(rate_figures))
    dispatcher = build_dispatcher(services)
    dispatcher.on_call = metrics.observe_call
    if websocket is not None:
        websocket.attach_rpc(dispatcher, CallContext)
    keyring = keyring_of(secret) if secret is not None else None
    gate = Gate(config.api_key, keyring)

    def refused(refusal: Refusal | None) -> Response | None:
        if refusal is None:
            return None
        metrics.http_rejected.labels(refusal.reason).inc()
        return Response(error_body(refusal), status_code=refusal.status, media_type=JSON)

    def asked(request: Request) -> tuple[bytes, str | None, bool]:
        """The request's ``Authorization``, peer address, and whether a proxy sent it."""
        client = request.client.host if request.client else None
        names = (name for name, _ in request.headers.raw)
        return request.headers.get("authorization", "").encode(), client, proxied(names)

    def refuse(request: Request) -> Response | None:
        authorization, client, via_proxy = asked(request)
        return refused(gate.check(authorization, client, proxied=via_proxy))

    def closed_to(access: RouteAccess, request: Request) -> Response | None:
        authorization, client, via_proxy = asked(request)
        return refused(gate.allows(access, authorization, client, proxied=via_proxy))

    async def health(request: Request) -> Response:
        if (refusal := closed_to(config.health_access, request)) is not None:
            return refusal
        tree = health_tree(services.tree())
        status = 200 if tree["status"] == "ok" else 503
        return Response(msgspec.json.encode(tree), status_code=status, media_type=JSON)

    async def prometheus(request: Request) -> Response:
        if (refusal := closed_to(config.metrics_access, request)) is not None:
            return refusal
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    if keyring is not None:
        routes += page_routes(keyring, refuse)
    router = Starlette(routes=routes)
    router.state.metrics = metrics
    rpc = RpcEndpoint(
        dispatcher,
        gate,
        config.max_body_bytes,
        metrics,
        body_timeout=config.body_timeout,
        rate_limiter=rate_limiter,
    )
    return App(router, rpc)
