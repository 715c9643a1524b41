"""Resource exhaustion: connections that hold a socket and do nothing useful are closed on
their timeouts, while a normal client is served.

Each test opens :data:`COUNT` connections of one kind against the real listener
(:class:`protocols.http.HttpServer`: hypercorn for HTTP, the WebSocket gateway for
``/ws``) with short timeouts (:data:`TIMEOUT` seconds each), then, while they are all
still open, has a normal client make WebSocket pings and HTTP requests, and finally
waits for every one of them to be closed by the server. The kinds: a TCP connection
that sends nothing; HTTP headers sent a byte every :data:`TRICKLE` seconds (slowloris)
to an HTTP route and to ``/ws``; a completed WebSocket handshake that never
authenticates. The timeouts are real (the sockets are real): each test takes a few
seconds, and ``benchmark exhaustion`` (bench/exhaustion.py) measures the same at 5,000
connections with the normal client's latency.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from trio_websocket import ConnectionClosed, open_websocket_url

from actors.realtime import Histories, Publisher
from auth.tokens import issue_token
from protocols.http import HttpServer
from protocols.websocket import WebSocketGateway, pub_frame
from protocols.websocket.codes import CLOSE_UNAUTHENTICATED
from protocols.websocket.session import Limits

SECRET = b"e" * 32
COUNT = 300
"""Connections of each kind (the benchmark holds 5,000)."""
TIMEOUT = 2.0
"""Seconds of every timeout under test: first bytes, headers, handshake, authentication."""
TRICKLE = 0.1
"""Seconds between two bytes of a slowloris client (ten times a byte a second, so that a
short timeout still sees several bytes)."""
CHECKS = 5
"""Round trips of the normal client (WebSocket pings and HTTP requests, each)."""
LIMIT = 60.0
"""Seconds any one test may take."""

HTTP_HEAD = b"GET /ok HTTP/1.1\r\nHost: starling.test\r\nUser-Agent: slowloris\r\n" * 10
WS_HEAD = (
    b"GET /ws HTTP/1.1\r\nHost: starling.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
) * 4
"""Request heads that never end (no blank line) and take longer than a timeout to trickle."""


@dataclass
class Target:
    """The server under test: its base URL, listener and gateway."""

    url: str
    http: HttpServer
    gateway: WebSocketGateway

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)


@dataclass
class Held:
    """One attacking connection: when it began to connect (before the server's clocks for
    it start) and when it was closed, in trio time, and what the server sent it (a close
    code for a WebSocket)."""

    opened: float = math.nan
    closed: float = math.nan
    received: bytes = b""
    code: int | None = None
    reason: str | None = None

    @property
    def lasted(self) -> float:
        return self.closed - self.opened


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@asynccontextmanager
async def guarded() -> AsyncIterator[Target]:
    """The listener and the gateway on 127.0.0.1:0, every timeout :data:`TIMEOUT` seconds."""
    epochs = (f"e{n}" for n in itertools.count(1))
    publisher = Publisher(pub_frame, Histories(size=10, epochs=lambda _channel: next(epochs)))
    gateway = WebSocketGateway(
        publisher,
        SECRET,
        limits=Limits(auth_timeout=TIMEOUT),
        max_connections=2 * COUNT,
        close_timeout=1.0,
        handshake_timeout=TIMEOUT,
    )
    http = HttpServer(
        Starlette(routes=[Route("/ok", _ok)]),
        host="127.0.0.1",
        port=0,
        graceful_timeout=1.0,
        websocket=gateway,
        first_bytes_timeout=TIMEOUT,
        keep_alive_timeout=TIMEOUT,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(http.run)
        try:
            yield Target(http.binds[0], http, gateway)
        finally:
            http.request_stop()


async def normal_client(target: Target) -> int:
    """:data:`CHECKS` WebSocket pings (with a token) and HTTP requests; how many succeeded."""
    token = issue_token(SECRET, "alice", ttl_seconds=3600)
    answered = 0
    async with open_websocket_url(f"{target.ws_url}?token={token}") as ws:
        for n in range(CHECKS):
            await ws.send_message(f'{{"jsonrpc":"2.0","id":{n},"method":"ping"}}')
            answered += await ws.get_message() == f'{{"jsonrpc":"2.0","result":{{}},"id":{n}}}'
    async with httpx.AsyncClient(base_url=target.url) as client:
        for _ in range(CHECKS):
            answered += (await client.get("/ok")).text == "ok"
    return answered


async def _until_closed(stream: trio.SocketStream, held: Held) -> None:
    """Read until the server closes (or resets) the connection; keep what it sent."""
    while True:
        try:
            data = await stream.receive_some()
        except trio.BrokenResourceError:
            data = b""
        if not data:
            held.closed = trio.current_time()
            return
        held.received += data


async def silent(target: Target, held: Held, opened: trio.Event) -> None:
    """Open a TCP connection and send nothing."""
    held.opened = trio.current_time()
    stream = await trio.open_tcp_stream(*target.address)
    opened.set()
    async with stream:
        await _until_closed(stream, held)


def slowloris(head: bytes) -> Callable[[Target, Held, trio.Event], Awaitable[None]]:
    """A client that sends ``head`` a byte every :data:`TRICKLE` seconds until closed."""

    async def attack(target: Target, held: Held, opened: trio.Event) -> None:
        held.opened = trio.current_time()
        stream = await trio.open_tcp_stream(*target.address)
        opened.set()

        async def trickle() -> None:
            for byte in head:
                try:
                    await stream.send_all(bytes((byte,)))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                await trio.sleep(TRICKLE)

        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            await _until_closed(stream, held)
            nursery.cancel_scope.cancel()

    return attack


async def unauthenticated(target: Target, held: Held, opened: trio.Event) -> None:
    """Complete the WebSocket handshake, then never authenticate."""
    held.opened = trio.current_time()
    async with open_websocket_url(target.ws_url) as ws:
        opened.set()
        try:
            await ws.get_message()
        except ConnectionClosed as closed:
            held.closed = trio.current_time()
            if closed.reason is not None:
                held.code, held.reason = closed.reason.code, closed.reason.reason


async def attack_while_serving(
    target: Target, attack: Callable[[Target, Held, trio.Event], Awaitable[None]]
) -> tuple[list[Held], int, int]:
    """Hold :data:`COUNT` connections of ``attack``; once all are open, run the normal client.

    Returns:
        The attackers, how many of the normal client's round trips succeeded, and how many
        attackers were still open when it finished.
    """
    held = [Held() for _ in range(COUNT)]
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            opened = [trio.Event() for _ in held]
            for one, event in zip(held, opened, strict=True):
                nursery.start_soon(attack, target, one, event)
            for event in opened:
                await event.wait()
            answered = await normal_client(target)
            still_open = sum(math.isnan(one.closed) for one in held)
    return held, answered, still_open


async def test_silent_connections_are_closed_at_the_first_bytes_timeout() -> None:
    """300 TCP connections that send nothing do not stop a normal client's pings and HTTP
    requests, and each is closed unanswered once the first-bytes timeout has passed."""
    async with guarded() as target:
        held, answered, still_open = await attack_while_serving(target, silent)
        assert (answered, still_open) == (2 * CHECKS, COUNT)
        assert all(one.lasted >= TIMEOUT and one.received == b"" for one in held)
        assert target.http.statistics().first_bytes_timeouts == COUNT


async def test_http_slowloris_is_closed_at_the_header_timeout() -> None:
    """300 clients trickling an HTTP request's headers a byte at a time do not stop a normal
    client, and each is closed unanswered by the header timeout (``keep_alive_timeout``),
    not by the first-bytes rule (their first bytes came in time)."""
    async with guarded() as target:
        held, answered, still_open = await attack_while_serving(target, slowloris(HTTP_HEAD))
        assert (answered, still_open) == (2 * CHECKS, COUNT)
        assert all(one.lasted >= TIMEOUT and one.received == b"" for one in held)
        statistics = target.http.statistics()
        assert (statistics.first_bytes_timeouts, statistics.header_timeouts) == (0, COUNT)


async def test_websocket_slowloris_is_closed_at_the_handshake_timeout() -> None:
    """300 clients trickling a ``/ws`` upgrade request a byte at a time do not stop a normal
    client, and each is closed unanswered after the gateway's handshake timeout, counted
    as a handshake failure."""
    async with guarded() as target:
        held, answered, still_open = await attack_while_serving(target, slowloris(WS_HEAD))
        assert (answered, still_open) == (2 * CHECKS, COUNT)
        assert all(one.lasted >= TIMEOUT and one.received == b"" for one in held)
        statistics = target.gateway.statistics()
        assert (statistics.handshake_failures, statistics.accepted) == (COUNT, 1)


async def test_unauthenticated_websockets_are_closed_4001_at_the_auth_timeout() -> None:
    """300 WebSockets that complete the handshake and never authenticate do not stop a
    normal client, and each is closed 4001 "authentication timeout" once the auth timeout
    has passed."""
    async with guarded() as target:
        held, answered, still_open = await attack_while_serving(target, unauthenticated)
        assert (answered, still_open) == (2 * CHECKS, COUNT)
        assert {(one.code, one.reason) for one in held} == {
            (CLOSE_UNAUTHENTICATED, "authentication timeout")
        }
        assert all(one.lasted >= TIMEOUT for one in held)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert target.gateway.statistics().open == 0
