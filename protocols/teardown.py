"""How an HTTP/1.1 connection ends after a response: ``Connection: close`` when the request's
body was not read, and a lingering close (RFC 9112 section 9.6, "Tear-down").

A response that starts before the app has read its request's body (a refusal:
401, 403, 404, 405, 413 …) leaves the rest of the body on the wire, so hypercorn
cannot reuse the connection and closes it. Unless the response says so, a
keep-alive client sends its next request on that connection and fails at
random (whether the body had arrived whole by then decided). :func:`close_unread`
adds ``Connection: close`` to such a response.

Closing at once would still hurt the client: data of its that arrives after the
close (the rest of a large body) makes the kernel answer with a reset, which
fails the client's write before it reads the response, and may destroy the
response in flight. :class:`LingeringStream` closes in stages, as the RFC says:
a half-close (``send_eof``), then the client's data read and dropped until it
closes too, for at most :data:`LINGER_SECONDS` and :data:`LINGER_BYTES`, then
the close.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import trio

SECONDS: Final = 1.0
LINGER_SECONDS: Final = 2 * SECONDS
"""Longest a closing connection keeps reading (and dropping) what the client still sends."""
LINGER_BYTES: Final = 16 << 20
"""Most bytes a closing connection reads and drops."""
CLOSE: Final = (b"connection", b"close")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request with these (lower-case named) headers carries a body (RFC 9112
    section 6.3: a ``Transfer-Encoding``, or a ``Content-Length`` other than 0)."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def close_unread(app: App) -> App:
    """``app``, whose responses say ``Connection: close`` when they start before the request's
    body has been read to its end.

    Costs, for a request with a body: two closures and one test per ``send``; a copy of the
    header list for a response that refuses an unread body.
    """

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope["headers"]):
            await app(scope, receive, send)
            return
        read = False  # the body's last chunk has reached the app

        async def receiving() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                read = True
            return message

        async def sending(message: Message) -> None:
            if not read and message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, CLOSE]}
            await send(message)

        await app(scope, receiving, sending)

    return asgi


class LingeringStream(trio.abc.HalfCloseableStream):
    """A connection's socket stream for hypercorn that closes in stages (RFC 9112 section 9.6).

    After :meth:`send_eof` (hypercorn half-closes after the last response), what the
    client still sends is read and dropped until it closes its side, for at most
    :data:`LINGER_SECONDS` and :data:`LINGER_BYTES`; then :meth:`aclose` closes. The
    task that reads the connection (hypercorn's, the one that runs it) does the
    draining: an :meth:`aclose` from another task (the response's) after a half-close
    leaves the close to the reader's own :meth:`aclose`, which hypercorn makes when its
    reads end (:meth:`receive_some` returns ``b""`` once the lingering is over). A
    close without a half-close (an idle keep-alive connection) is immediate.

    Args:
        stream: the connection's :class:`trio.SocketStream`; made in the task that will
            read it (hypercorn's ``TCPServer.run``).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._reader = trio.lowlevel.current_task()  # the task that reads the connection
        self._linger_until: float | None = None  # set by the half-close
        self._drained = 0

    @property
    def socket(self) -> trio.socket.SocketType:
        """The connection's socket (hypercorn reads its addresses)."""
        return self._stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Half-close: the client reads the end of our data; we keep reading until it closes."""
        if self._linger_until is None:
            self._linger_until = trio.current_time() + LINGER_SECONDS
            await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """The next bytes; once half-closed, ``b""`` when the lingering is over."""
        if self._linger_until is None:
            return await self._stream.receive_some(max_bytes)
        return await self._drain_some(max_bytes)

    async def aclose(self) -> None:
        """Close; after a half-close, linger first (in the reader's task)."""
        if self._linger_until is not None and self._reader is not trio.lowlevel.current_task():
            return  # the reader drains, then closes
        try:
            if self._linger_until is not None:
                while await self._drain_some(1 << 16):
                    pass
        finally:
            await self._stream.aclose()

    async def _drain_some(self, max_bytes: int | None) -> bytes | bytearray:
        """What the client sends while the lingering lasts; ``b""`` once it is over."""
        assert self._linger_until is not None
        if self._drained >= LINGER_BYTES:
            return b""
        data: bytes | bytearray = b""
        with trio.move_on_at(self._linger_until):
            try:
                data = await self._stream.receive_some(max_bytes)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
        self._drained += len(data)
        return data


def lingering(sock: socket.socket) -> LingeringStream:
    """A :class:`LingeringStream` over an accepted, non-blocking socket, read by this task."""
    return LingeringStream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
