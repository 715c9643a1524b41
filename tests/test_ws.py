"""``GET /ws`` end to end: real WebSocket clients, the real listener and edge, the real publisher.

Each test starts the ``api`` listener (``protocols.http.HttpServer``) on
127.0.0.1, port 0, with an empty Starlette app for HTTP and the WebSocket
gateway for ``/ws``, and a :class:`actors.realtime.Publisher` over a real
``Histories`` as the hub.
The session's clocks are the wall clock (token ``exp``), so the timeouts
tested here are real and short (auth timeout 0.5 s); every wait is bounded
by ``trio.fail_after``.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from starlette.applications import Starlette
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from actors.realtime import Histories, Publisher
from auth.tokens import issue_token
from protocols.http import HttpServer
from protocols.jsonrpc import FORBIDDEN, PARSE_ERROR, UNAUTHORIZED
from protocols.websocket import CLOSE_TRY_AGAIN_LATER, WebSocketGateway, pub_frame, text_frame
from protocols.websocket.codes import (
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNSUPPORTED_DATA,
)
from protocols.websocket.session import KiB, Limits

SECRET = b"x" * 32
LIMITS = Limits(auth_timeout=0.5, max_frame_bytes=2 * KiB)
TIMEOUT = 10.0
"""Seconds any one test may take."""


def make_publisher(*, size: int = 100) -> Publisher:
    epochs = (f"e{n}" for n in itertools.count(1))
    return Publisher(pub_frame, Histories(size=size, epochs=lambda _channel: next(epochs)))


@asynccontextmanager
async def serving(
    publisher: Publisher, *, limits: Limits = LIMITS, max_connections: int = 100
) -> AsyncIterator[tuple[str, WebSocketGateway]]:
    """Serve the WebSocket route only; yield ``ws://127.0.0.1:<port>/ws`` and its gateway."""
    gateway = WebSocketGateway(
        publisher, SECRET, limits=limits, max_connections=max_connections, close_timeout=1.0
    )
    server = HttpServer(
        Starlette(routes=[]), host="127.0.0.1", port=0, graceful_timeout=1.0, websocket=gateway
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server.binds[0].replace("http://", "ws://") + "/ws", gateway
        finally:
            server.request_stop()


def token(user: str = "alice") -> str:
    return issue_token(SECRET, user, ttl_seconds=3600)


_ids = itertools.count(1)


async def call(ws: WebSocketConnection, method: str, params: Any = None) -> dict[str, Any]:
    """Send one request and return its reply, the next frame (no ``pub`` is expected before it)."""
    id = next(_ids)
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        message["params"] = params
    await ws.send_message(json.dumps(message))
    reply = json.loads(await ws.get_message())
    assert isinstance(reply, dict), reply
    assert reply["id"] == id, reply
    return reply


async def result(ws: WebSocketConnection, method: str, params: Any = None) -> Any:
    reply = await call(ws, method, params)
    assert "error" not in reply, reply
    return reply["result"]


def pubs(frame: str | bytes) -> list[dict[str, Any]]:
    """The ``pub`` params in one frame: one notification per frame."""
    decoded = json.loads(frame)
    assert isinstance(decoded, dict), decoded
    assert decoded.get("method") == "pub", decoded
    return [decoded["params"]]


async def receive_pubs(ws: WebSocketConnection, count: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while len(received) < count:
        received += pubs(await ws.get_message())
    assert len(received) == count, received
    return received


async def read_until_closed(ws: WebSocketConnection) -> tuple[list[str | bytes], int, str | None]:
    """Every frame until the server closes, then its close code and reason."""
    frames: list[str | bytes] = []
    while True:
        try:
            frames.append(await ws.get_message())
        except ConnectionClosed as closed:
            reason = closed.reason
            break
    assert reason is not None
    return frames, reason.code, reason.reason


async def closed_with(ws: WebSocketConnection) -> tuple[int, str | None]:
    """Read until the server closes; its close code and reason."""
    _, code, reason = await read_until_closed(ws)
    return code, reason


async def test_subscriber_receives_publications_in_order_exactly_once() -> None:
    """A client authenticated by ``?token=`` gets each publication of its channel once, in order, and leaving unsubscribes it."""  # noqa: E501
    publisher = make_publisher()
    with trio.fail_after(TIMEOUT):
        async with serving(publisher) as (url, gateway):
            async with open_websocket_url(f"{url}?token={token()}") as ws:
                subscribed = await result(ws, "subscribe", {"channel": "post:1"})
                assert subscribed == {"channel": "post:1", "offset": 0, "epoch": "e1"}
                for n in range(3):
                    publisher.publish("post:1", json.dumps({"n": n}).encode())
                publisher.publish("post:2", b'{"elsewhere":true}')
                received = await receive_pubs(ws, 3)
                assert received == [
                    {"channel": "post:1", "offset": n + 1, "data": {"n": n}} for n in range(3)
                ]
                assert await result(ws, "ping") == {}  # nothing else came before the reply
                assert gateway.statistics().open == 1
            await trio.testing.wait_all_tasks_blocked(0.01)
            statistics = publisher.statistics()
            assert (statistics.subscribers, statistics.channels) == (0, 0)
            assert (statistics.published, statistics.delivered) == (4, 3)
            assert gateway.statistics().open == 0


async def test_put_keeps_sequencer_offsets_and_drops_duplicates() -> None:
    """``put`` delivers sequencer-numbered publications with their offsets and epoch, and a duplicate offset to nobody."""  # noqa: E501
    publisher = make_publisher()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(publisher) as (url, _),
            open_websocket_url(f"{url}?token={token()}") as ws,
        ):
            await result(ws, "subscribe", {"channel": "post:9"})
            assert publisher.put("post:9", 41, "seq", b'{"n":41}') is not None
            assert publisher.put("post:9", 42, "seq", b'{"n":42}') is not None
            assert publisher.put("post:9", 42, "seq", b'{"again":42}') is None
            assert [p["offset"] for p in await receive_pubs(ws, 2)] == [41, 42]
            assert await result(ws, "ping") == {}  # the duplicate never came
            history = await result(ws, "history", {"channel": "post:9"})
            assert (history["offset"], history["epoch"]) == (42, "seq")
            assert publisher.statistics().delivered == 2


async def test_connect_authenticates_as_first_request() -> None:
    """Without ``?token=``, a ``connect`` request authenticates the session and subscribing works."""  # noqa: E501
    publisher = make_publisher()
    with trio.fail_after(TIMEOUT):
        async with serving(publisher) as (url, _), open_websocket_url(url) as ws:
            connected = await result(ws, "connect", {"token": token("alice")})
            assert connected["user"] == "alice"
            await result(ws, "subscribe", {"channel": "user:alice"})
            publisher.publish("user:alice", b'{"hello":1}')
            assert await receive_pubs(ws, 1) == [
                {"channel": "user:alice", "offset": 1, "data": {"hello": 1}}
            ]


async def test_unauthenticated_client_is_refused_then_closed_4001() -> None:
    """Without a token, ``subscribe`` is refused and the auth timeout closes the socket with 4001."""  # noqa: E501
    publisher = make_publisher()
    with trio.fail_after(TIMEOUT):
        async with serving(publisher) as (url, _), open_websocket_url(url) as ws:
            reply = await call(ws, "subscribe", {"channel": "post:1"})
            assert reply["error"]["code"] == UNAUTHORIZED
            assert reply["error"]["data"] == {"reason": "not authenticated"}
            started = trio.current_time()
            assert await closed_with(ws) == (CLOSE_UNAUTHENTICATED, "authentication timeout")
            assert trio.current_time() - started < LIMITS.auth_timeout + 1.0
            assert publisher.statistics().subscribers == 0


async def test_invalid_query_token_closes_4001() -> None:
    """An invalid ``?token=`` closes the connection with 4001 at once."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(make_publisher()) as (url, _),
            open_websocket_url(f"{url}?token=not-a-token") as ws,
        ):
            assert await closed_with(ws) == (CLOSE_UNAUTHENTICATED, "invalid token")


async def test_session_closes_4003_when_its_token_expires() -> None:
    """A session authenticated by ``connect`` with a token about to expire is closed with 4003 at its ``exp``."""  # noqa: E501
    now = time.time()
    # ``exp`` is in whole seconds: pick a ttl that leaves 0.5 to 1 s.
    short = issue_token(SECRET, "alice", ttl_seconds=1 if now % 1 < 0.5 else 2, now=now)
    with trio.fail_after(TIMEOUT):
        async with serving(make_publisher()) as (url, _), open_websocket_url(url) as ws:
            assert (await result(ws, "connect", {"token": short}))["user"] == "alice"
            await result(ws, "subscribe", {"channel": "post:1"})
            assert await closed_with(ws) == (CLOSE_TOKEN_EXPIRED, "token expired")


async def test_another_users_channel_is_forbidden() -> None:
    """Alice may subscribe to ``user:alice`` but is refused ``user:bob``, and gets none of its publications."""  # noqa: E501
    publisher = make_publisher()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(publisher) as (url, _),
            open_websocket_url(f"{url}?token={token('alice')}") as ws,
        ):
            reply = await call(ws, "subscribe", {"channel": "user:bob"})
            assert reply["error"]["code"] == FORBIDDEN
            assert reply["error"]["message"] == "forbidden"
            assert reply["error"]["data"] == {"channel": "user:bob"}
            await result(ws, "subscribe", {"channel": "user:alice"})
            publisher.publish("user:bob", b'{"secret":1}')
            publisher.publish("user:alice", b'{"mine":1}')
            assert (await receive_pubs(ws, 1))[0]["data"] == {"mine": 1}


async def test_reconnect_recovers_missed_publications_until_the_ring_is_exceeded() -> None:
    """Subscribing with ``since`` recovers exactly what was missed, and says ``recovered: false`` once the history ring dropped some."""  # noqa: E501
    publisher = make_publisher(size=5)
    with trio.fail_after(TIMEOUT):
        async with serving(publisher) as (url, _):
            async with open_websocket_url(f"{url}?token={token()}") as ws:
                await result(ws, "subscribe", {"channel": "post:7"})
                publisher.publish("post:7", b'{"n":1}')
                publisher.publish("post:7", b'{"n":2}')
                last = (await receive_pubs(ws, 2))[-1]
            for n in range(3, 6):
                publisher.publish("post:7", b'{"n":%d}' % n)
            since = {"offset": last["offset"], "epoch": "e1"}
            async with open_websocket_url(f"{url}?token={token()}") as ws:
                recovered = await result(ws, "subscribe", {"channel": "post:7", "since": since})
                assert recovered == {
                    "channel": "post:7",
                    "offset": 5,
                    "epoch": "e1",
                    "recovered": True,
                    "publications": [{"offset": n, "data": {"n": n}} for n in range(3, 6)],
                }
                publisher.publish("post:7", b'{"n":6}')
                assert (await receive_pubs(ws, 1))[0]["offset"] == 6
            for n in range(7, 13):
                publisher.publish("post:7", b'{"n":%d}' % n)
            since = {"offset": 6, "epoch": "e1"}
            async with open_websocket_url(f"{url}?token={token()}") as ws:
                lost = await result(ws, "subscribe", {"channel": "post:7", "since": since})
                assert lost == {
                    "channel": "post:7",
                    "offset": 12,
                    "epoch": "e1",
                    "recovered": False,
                    "publications": [],
                }


async def test_malformed_json_gets_parse_error_and_connection_stays_usable() -> None:
    """A frame that is not JSON gets a -32700 reply and the next request is served."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(make_publisher()) as (url, _),
            open_websocket_url(f"{url}?token={token()}") as ws,
        ):
            await ws.send_message("{not json")
            reply = json.loads(await ws.get_message())
            assert reply["id"] is None
            assert reply["error"]["code"] == PARSE_ERROR
            assert await result(ws, "ping") == {}


async def test_slow_client_is_closed_4008_while_fast_client_gets_everything() -> None:
    """A client that stops reading is closed with 4008 once its outbox overflows; a fast one on the same channel misses nothing."""  # noqa: E501
    limits = Limits(auth_timeout=0.5, max_frame_bytes=2 * KiB, max_outbox_bytes=4 * KiB)
    burst = 3  # three ~1 KiB pushes fit in the 4 KiB outbox, a fourth would not
    pad = "x" * 1000
    publisher = make_publisher()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(publisher, limits=limits) as (url, _),
            open_websocket_url(f"{url}?token={token('slow')}") as slow,
            open_websocket_url(f"{url}?token={token('fast')}") as fast,
        ):
            await result(slow, "subscribe", {"channel": "post:1"})
            await result(fast, "subscribe", {"channel": "post:1"})
            # The slow client reads no more: the kernel's socket buffers fill (some 100 KiB
            # on loopback), then its session's outbox, while the fast one keeps up.
            received: list[dict[str, Any]] = []
            published = 0
            while publisher.statistics().slow_disconnects == 0:
                assert published < 100_000, "the slow client was never disconnected"
                for _ in range(burst):
                    published += 1
                    publisher.publish("post:1", json.dumps({"n": published, "pad": pad}).encode())
                received += await receive_pubs(fast, burst)
            assert [p["offset"] for p in received] == list(range(1, published + 1))
            assert [p["data"]["n"] for p in received] == list(range(1, published + 1))
            assert publisher.subscribers("post:1") == 1  # the slow one is gone
            publisher.publish("post:1", b'{"after":true}')
            assert (await receive_pubs(fast, 1))[0]["data"] == {"after": True}
            # The slow client reads again: what was in flight, in order, then the close.
            frames, code, reason = await read_until_closed(slow)
            assert (code, reason) == (CLOSE_SLOW_CONSUMER, "slow consumer")
            offsets = [p["offset"] for frame in frames for p in pubs(frame)]
            assert offsets == list(range(1, len(offsets) + 1))
            assert len(offsets) < published


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x" * (2 * KiB + 1), id="ascii"),
        # Under the limit in characters, over it in UTF-8 bytes.
        pytest.param("é" * (KiB + 1), id="multibyte"),
        pytest.param("x" * (1024 * KiB), id="1-MiB"),
    ],
)
async def test_oversize_frame_closes_1009(text: str) -> None:
    """A frame over max_frame_bytes UTF-8 bytes closes with 1009 "message too big"."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(make_publisher()) as (url, _),
            open_websocket_url(f"{url}?token={token()}") as ws,
        ):
            await ws.send_message(text)
            assert await closed_with(ws) == (CLOSE_TOO_BIG, "message too big")


async def test_binary_frame_closes_1003() -> None:
    """A binary frame closes the connection with 1003: the protocol speaks text only."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(make_publisher()) as (url, _),
            open_websocket_url(f"{url}?token={token()}") as ws,
        ):
            await ws.send_message(b"\x00\x01")
            assert await closed_with(ws) == (CLOSE_UNSUPPORTED_DATA, "binary frames not accepted")


async def test_connections_over_the_limit_are_closed_1013() -> None:
    """With max_connections open, a new connection is closed with 1013 at once, and served again once one leaves."""  # noqa: E501
    with trio.fail_after(TIMEOUT):
        async with serving(make_publisher(), max_connections=1) as (url, gateway):
            async with open_websocket_url(f"{url}?token={token()}") as first:
                assert await result(first, "ping") == {}
                async with open_websocket_url(f"{url}?token={token()}") as second:
                    assert await closed_with(second) == (CLOSE_TRY_AGAIN_LATER, "try again later")
            await trio.testing.wait_all_tasks_blocked(0.01)
            async with open_websocket_url(f"{url}?token={token()}") as third:
                assert await result(third, "ping") == {}
            statistics = gateway.statistics()
            assert (statistics.accepted, statistics.refused, statistics.peak_open) == (2, 1, 1)


# -- the owned-socket edge: bytes on the wire ------------------------------------------

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's sample key


def upgrade_request(url: str, *, path: str | None = None) -> bytes:
    """A WebSocket upgrade request for ``url`` (``ws://host:port/ws?…``), as bytes."""
    target = path or url.split("/", 3)[3]
    host = url.split("/")[2]
    return (
        f"GET /{target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def raw_connect(url: str, *, path: str | None = None) -> tuple[trio.SocketStream, bytes]:
    """Open a TCP connection, send the upgrade; the stream and the bytes read past the answer."""
    host, port = url.split("/")[2].split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(upgrade_request(url, path=path))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some()
        assert chunk, head
        head += chunk
    answer, rest = head.split(b"\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return stream, rest


def client_frame(
    payload: bytes, *, opcode: int = 0x1, fin: bool = True, mask: bool = True
) -> bytes:
    """A client frame (RFC 6455 section 5.2), masked with a fixed key unless ``mask`` is False."""
    length = len(payload)
    head = bytes((0x80 * fin | opcode,))
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes((bit | length,))
    elif length < 65_536:
        head += bytes((bit | 126,)) + length.to_bytes(2, "big")
    else:
        head += bytes((bit | 127,)) + length.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_exactly(stream: trio.SocketStream, count: int, buffered: bytes = b"") -> bytes:
    data = buffered
    while len(data) < count:
        chunk = await stream.receive_some()
        assert chunk, data
        data += chunk
    assert len(data) == count, (len(data), count)
    return data


async def test_subscribers_of_a_channel_receive_byte_identical_frames() -> None:
    """Three subscribers of one channel read the very same bytes: one frame per publication, built once."""  # noqa: E501
    publisher = make_publisher()
    with trio.fail_after(TIMEOUT):
        async with serving(publisher) as (url, _):
            streams = []
            for user in ("a", "b", "c"):
                stream, rest = await raw_connect(f"{url}?token={token(user)}")
                assert rest == b""
                subscribe = (
                    b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"channel":"post:1"}}'
                )
                await stream.send_all(client_frame(subscribe))
                streams.append(stream)
            replies = [
                b'{"jsonrpc":"2.0","result":{"channel":"post:1","offset":0,"epoch":"e1"},"id":1}'
            ]
            reply_frame = text_frame(replies[0])
            for stream in streams:
                assert await read_exactly(stream, len(reply_frame)) == reply_frame
            data = [json.dumps({"n": n, "text": "é" * n}).encode() for n in range(5)]
            for item in data:
                publisher.publish("post:1", item)
            expected = b"".join(pub_frame("post:1", n + 1, item) for n, item in enumerate(data))
            got = [await read_exactly(stream, len(expected)) for stream in streams]
            assert got == [expected] * 3
            for stream in streams:
                await stream.aclose()


async def test_messages_split_at_every_byte_are_assembled() -> None:
    """A request sent one byte per write, and one fragmented into continuation frames, are both answered."""  # noqa: E501
    with trio.fail_after(TIMEOUT):
        async with serving(make_publisher()) as (url, _):
            stream, _ = await raw_connect(f"{url}?token={token()}")
            request = client_frame(b'{"jsonrpc":"2.0","id":7,"method":"ping"}')
            for i in range(len(request)):
                await stream.send_all(request[i : i + 1])
            answer = b'{"jsonrpc":"2.0","result":{},"id":7}'
            assert (
                await read_exactly(stream, 2 + len(answer)) == bytes((0x81, len(answer))) + answer
            )
            first = client_frame(b'{"jsonrpc":"2.0",', fin=False)
            second = client_frame(b'"id":8,"method":"ping"}', opcode=0x0)
            await stream.send_all(first + second)
            answer = b'{"jsonrpc":"2.0","result":{},"id":8}'
            assert (
                await read_exactly(stream, 2 + len(answer)) == bytes((0x81, len(answer))) + answer
            )
            await stream.aclose()


async def test_ping_gets_pong_and_client_close_is_echoed() -> None:
    """A WebSocket ping is answered with a pong of the same payload; the client's close is echoed and the socket closes."""  # noqa: E501
    with trio.fail_after(TIMEOUT):
        async with serving(make_publisher()) as (url, gateway):
            stream, _ = await raw_connect(f"{url}?token={token()}")
            await stream.send_all(client_frame(b"hi", opcode=0x9))
            assert await read_exactly(stream, 4) == b"\x8a\x02hi"
            await stream.send_all(client_frame((1000).to_bytes(2, "big") + b"bye", opcode=0x8))
            echo = await read_exactly(stream, 7)
            assert echo[:2] == b"\x88\x05"
            assert (int.from_bytes(echo[2:4], "big"), echo[4:]) == (1000, b"bye")
            assert await stream.receive_some() == b""  # the server closed the TCP connection
            await trio.testing.wait_all_tasks_blocked(0.01)
            assert gateway.statistics().open == 0


async def test_an_unmasked_client_frame_closes_1002() -> None:
    """A client frame without a mask violates RFC 6455 section 5.1: the server closes 1002."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_publisher()) as (url, _):
            stream, _ = await raw_connect(f"{url}?token={token()}")
            await stream.send_all(
                client_frame(b'{"jsonrpc":"2.0","id":1,"method":"ping"}', mask=False)
            )
            close = b""
            while len(close) < 2 or len(close) < 2 + close[1]:
                close += await stream.receive_some()
            assert close[0] == 0x88
            assert int.from_bytes(close[2:4], "big") == 1002
            await stream.aclose()


async def test_http_and_a_bad_upgrade_share_the_port() -> None:
    """On the WebSocket port, HTTP requests reach the app (keep-alive), and ``GET /ws`` without an upgrade gets HTTP 400."""  # noqa: E501
    with trio.fail_after(TIMEOUT):
        async with serving(make_publisher()) as (url, _):
            base = url.replace("ws://", "http://").removesuffix("/ws")
            async with httpx.AsyncClient(base_url=base) as client:
                for _ in range(3):
                    assert (await client.get("/nothing-here")).status_code == 404
                assert (await client.get("/wsx")).status_code == 404
            host, port = base.split("/")[2].split(":")
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some()
            assert answer.startswith(b"HTTP/1.1 400"), answer
            await stream.aclose()


async def test_stopping_closes_every_connection_1001() -> None:
    """Stopping the server sends every WebSocket client a 1001 "server shutting down" close."""
    publisher = make_publisher()
    gateway = WebSocketGateway(publisher, SECRET, limits=LIMITS, close_timeout=1.0)
    server = HttpServer(
        Starlette(routes=[]), host="127.0.0.1", port=0, graceful_timeout=1.0, websocket=gateway
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            url = server.binds[0].replace("http://", "ws://") + "/ws"
            async with open_websocket_url(f"{url}?token={token()}") as ws:
                await result(ws, "subscribe", {"channel": "post:1"})
                server.request_stop()
                assert await closed_with(ws) == (1001, "server shutting down")


def _tasks() -> int:
    """Tasks alive in this trio run."""
    count, nurseries = 0, list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += 1
            nurseries += task.child_nurseries
    return count


async def test_ten_thousand_connections_leave_no_task_or_file_descriptor_behind() -> None:
    """10,000 WebSocket connections opened (1,000 at a time, each answered) and closed leave the gateway with no connection, task or descriptor."""  # noqa: E501
    publisher = make_publisher()
    with trio.fail_after(120):
        async with serving(publisher, max_connections=2_000) as (url, gateway):
            await trio.testing.wait_all_tasks_blocked(0.01)
            tasks, descriptors = _tasks(), len(os.listdir("/proc/self/fd"))
            ping = client_frame(b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
            answer = b'{"jsonrpc":"2.0","result":{},"id":1}'
            users = itertools.count()  # one user each: one user's 10,000 pings are rate limited

            async def one(streams: list[trio.SocketStream]) -> None:
                stream, rest = await raw_connect(f"{url}?token={token(f'u{next(users)}')}")
                await stream.send_all(ping)
                assert (
                    await read_exactly(stream, 2 + len(answer), rest)
                    == bytes((0x81, len(answer))) + answer
                )
                streams.append(stream)

            for _ in range(10):
                streams: list[trio.SocketStream] = []
                async with trio.open_nursery() as nursery:
                    for _ in range(1_000):
                        nursery.start_soon(one, streams)
                assert gateway.statistics().open == 1_000
                for stream in streams:
                    await stream.aclose()
                await trio.testing.wait_all_tasks_blocked(0.05)
                assert gateway.statistics().open == 0
            await trio.testing.wait_all_tasks_blocked(0.01)
            assert gateway.statistics().accepted == 10_000
            assert _tasks() == tasks
            # At most as many as before: an earlier test's socket may close meanwhile.
            assert len(os.listdir("/proc/self/fd")) <= descriptors
            assert publisher.statistics().subscribers == 0
