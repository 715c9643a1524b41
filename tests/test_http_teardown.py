"""How the listener ends an HTTP/1.1 connection after refusing a body (protocols/teardown.py).

A client that sends two requests on one keep-alive connection, the first one
refused before its body was read (413 over ``--max-body-bytes``, 404, 405),
either reads ``Connection: close`` and then a clean end of the connection, or
gets its second request answered; it never meets a connection closed without
notice, and its body is read to the end rather than cut by a reset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from protocols.teardown import close_unread, has_body
from tests.in_process import serving

LIMIT = 1000
"""The server's --max-body-bytes in these tests."""
BIG = 4 << 20
"""A body far over the limit and over the kernel's socket buffers: it cannot have arrived
whole when the server answers."""
SECOND = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"


def request(method: str, path: str, body: bytes, *headers: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n".encode()
    return head + b"".join(header + b"\r\n" for header in headers) + b"\r\n"


async def read_response(sock: trio.socket.SocketType, buffer: bytes) -> tuple[Any, bytes]:
    """``((status line, headers), rest)`` of the next response; ``(None, b"")`` at the end
    of the connection."""
    while b"\r\n\r\n" not in buffer:
        data = await sock.recv(1 << 16)
        if not data:
            return None, b""
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        data = await sock.recv(1 << 16)
        assert data, "the connection ended inside a response"
        rest += data
    return (status.decode(), headers), rest[length:]


async def two_requests(port: int, head: bytes, body: bytes) -> tuple[str, bool, str]:
    """Send ``head`` and ``body`` (while reading the answer), then :data:`SECOND` on the same
    connection; the first status, whether it said ``Connection: close``, and what came of
    the second (its status line, or ``"end"`` when the connection ended cleanly)."""
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port))

        async def send_first() -> None:
            view = memoryview(head + body)
            while view:
                view = view[await sock.send(view[: 1 << 16]) :]  # a reset fails the test

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_first)
            first, rest = await read_response(sock, b"")
        assert first is not None, "no answer to the first request"
        closes = first[1].get(b"connection") == b"close"
        try:
            await sock.send(SECOND)
        except BrokenPipeError:
            return first[0], closes, "end"  # closed after the answer, as it said
        second, _ = await read_response(sock, rest)
        return first[0], closes, "end" if second is None else second[0]


REFUSED = [
    pytest.param(request("POST", "/rpc", b"x" * BIG), b"x" * BIG, "413", id="rpc-over-limit"),
    pytest.param(
        request("POST", "/rpc", b"x" * BIG, b"Transfer-Encoding: chunked").replace(
            f"Content-Length: {BIG}\r\n".encode(), b""
        ),
        b"%x\r\n" % BIG + b"x" * BIG + b"\r\n0\r\n\r\n",
        "413",
        id="rpc-chunked-over-limit",
    ),
    pytest.param(request("POST", "/health", b"x" * BIG), b"x" * BIG, "405", id="health-post"),
    pytest.param(request("GET", "/rpc", b"x" * BIG), b"x" * BIG, "405", id="rpc-get-body"),
    pytest.param(request("POST", "/nowhere", b"x" * BIG), b"x" * BIG, "404", id="no-route"),
    pytest.param(request("POST", "/health", b"x" * 10), b"x" * 10, "405", id="small-body"),
]


@pytest.mark.parametrize(("head", "body", "status"), REFUSED)
async def test_a_refused_body_closes_with_notice_or_keeps_serving(
    tmp_path: Path, head: bytes, body: bytes, status: str
) -> None:
    """After a request refused before its body was read, the answer says ``Connection:
    close`` and the connection then ends cleanly (the whole body was read and dropped,
    no reset), or the next request on the connection is answered."""
    async with serving(tmp_path, max_body_bytes=LIMIT) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with trio.fail_after(30):
            first, closes, second = await two_requests(port, head, body)
    assert first.startswith(f"HTTP/1.1 {status}"), first
    if closes:
        assert second == "end"
    else:
        assert second.startswith("HTTP/1.1 200"), second


async def test_keep_alive_serves_requests_one_after_another(tmp_path: Path) -> None:
    """A request whose body is read whole keeps its connection: the next one is answered."""
    body = b'{"jsonrpc":"2.0","id":1,"method":"system.health"}'
    async with serving(tmp_path, max_body_bytes=LIMIT) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with trio.fail_after(30):
            first, closes, second = await two_requests(
                port, request("POST", "/rpc", body, b"Content-Type: application/json"), body
            )
    assert (first, closes) == ("HTTP/1.1 200 ", False)
    assert second.startswith("HTTP/1.1 200"), second


def test_a_body_is_a_transfer_encoding_or_a_length_other_than_zero() -> None:
    """``has_body`` follows RFC 9112 section 6.3 on the (lower-case) header names."""
    assert has_body([(b"content-length", b"12")])
    assert has_body([(b"transfer-encoding", b"chunked")])
    assert not has_body([(b"content-length", b"0")])
    assert not has_body([(b"host", b"t")])


async def refuse_unread(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that answers 405 without reading the body."""
    await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"GET")]})
    await send({"type": "http.response.body", "body": b""})


async def answer_read(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that reads the whole body, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("app", "headers", "closes"),
    [
        (refuse_unread, [(b"content-length", b"5")], True),
        (refuse_unread, [], False),
        (answer_read, [(b"content-length", b"5")], False),
    ],
    ids=["unread-body", "no-body", "body-read"],
)
async def test_close_unread_adds_connection_close_only_before_the_body_is_read(
    app: Any, headers: list[tuple[bytes, bytes]], closes: bool
) -> None:
    """``close_unread`` adds ``Connection: close`` to a response that starts while the
    request's body is still unread, and to no other."""
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": b"12", "more_body": True},
              {"type": "http.request", "body": b"345", "more_body": False}]  # fmt: skip

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await close_unread(app)(scope, receive, send)
    assert ((b"connection", b"close") in sent[0]["headers"]) is closes
