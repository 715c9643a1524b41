"""Blocking clients of a live in-process server, for fuzz cases run in a worker thread.

Not a test module. A live fuzz test serves the whole server on the test's trio thread
(:func:`tests.in_process.serving`) and runs hypothesis in a worker thread
(``trio.to_thread.run_sync``), whose cases speak to it over real sockets with these
blocking clients: ``POST /rpc`` (:func:`post`), raw HTTP bytes (:func:`raw_http`) and
raw WebSocket frames (:class:`RawWebSocket`, frames built by :func:`client_frame`).
:func:`tree_problems` reads ``system.health`` afterwards: a fuzzed server has restarted
nothing.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from wsproto.frame_protocol import FrameProtocol, Opcode

SOCKET_TIMEOUT: Final = 10.0
"""Seconds any one blocking read or write may take before the case fails."""

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's sample key
_MASK = b"\x37\xfa\x21\x3d"


def address(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``http://host:port``."""
    host, port = url.split("/")[2].rsplit(":", 1)
    return host.strip("[]"), int(port)


# -- HTTP ------------------------------------------------------------------------------


def post(client: httpx.Client, payload: bytes) -> tuple[int, bytes]:
    """``POST /rpc`` with ``payload``; the status and the body."""
    response = client.post("/rpc", content=payload, headers={"content-type": "application/json"})
    return response.status_code, response.content


def raw_http(url: str, data: bytes, *, responses: int = 1) -> bytes:
    """Send ``data`` on a fresh connection and end the sending side; read until the server
    closes or ``responses`` complete responses came (hypercorn keeps a connection open
    after a complete request, half-closed or not, for its keep-alive timeout)."""
    with socket.create_connection(address(url), timeout=SOCKET_TIMEOUT) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before it read everything: read that
        received = b""
        while _complete(received) < responses:
            try:
                chunk = sock.recv(65_536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


def _complete(data: bytes) -> int:
    """How many whole final HTTP/1.1 responses with a ``content-length`` ``data`` holds."""
    count = 0
    while data.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in data:
        head, rest = data.split(b"\r\n\r\n", 1)
        length = re.search(rb"(?im)^content-length: *(\d+)\r?$", head)
        if length is None:
            return count  # read to the end
        size = int(length.group(1))
        if len(rest) < size:
            return count
        data = rest[size:]
        count += not head.startswith(b"HTTP/1.1 1")  # 100 Continue is not final
    return count


def tree_problems(client: httpx.Client) -> list[str]:
    """What ``system.health`` shows wrong: a node not running or restarted, a degraded root."""
    reply = json.loads(post(client, b'{"jsonrpc":"2.0","id":1,"method":"system.health"}')[1])
    root = reply["result"]
    problems = [] if root["status"] == "ok" else [f"status {root['status']}"]
    problems += [f"root restarts {root['supervisor_restarts_total']}"] * bool(
        root["supervisor_restarts_total"]
    )

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("state") != "running":
            problems.append(f"{path}: {node.get('state')}")
        if node.get("restarts_total") or node.get("supervisor_restarts_total"):
            problems.append(f"{path}: restarted ({node.get('last_error')})")
        for child in node.get("children", ()):
            walk(child, f"{path}/{child['id']}")

    walk(root, root["id"])
    return problems


def rss_bytes() -> int:
    """This process's resident set size, in bytes (``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- WebSocket ------------------------------------------------------------------------------


def client_frame(
    payload: bytes,
    *,
    opcode: int = 0x1,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: str = "minimal",
) -> bytes:
    """A client frame as RFC 6455 section 5.2 draws it, rules broken on request.

    Args:
        opcode: 4 bits, reserved ones included.
        rsv: the three reserved bits (0-7).
        mask: masked, as a client must; ``False`` breaks section 5.1.
        length: ``minimal``, or ``16``/``64`` to use a longer length form than needed.
    """
    size = len(payload)
    head = bytes(((0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF),))
    bit = 0x80 if mask else 0
    if length == "64" or (length == "minimal" and size >= 65_536):
        head += bytes((bit | 127,)) + size.to_bytes(8, "big")
    elif length == "16" or size >= 126:
        head += bytes((bit | 126,)) + size.to_bytes(2, "big")
    else:
        head += bytes((bit | size,))
    if not mask:
        return head + payload
    return head + _MASK + masked(payload)


def masked(payload: bytes) -> bytes:
    """``payload`` as :func:`client_frame` masks it (one fixed key)."""
    return bytes(b ^ _MASK[i % 4] for i, b in enumerate(payload))


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    """A close frame's payload: the code (2 bytes) and the reason, or nothing."""
    return b"" if code is None else code.to_bytes(2, "big") + reason


SENTINEL: Final = b"fuzz-sentinel"
"""The payload of the ping a case ends with: its pong says everything before was read."""


@dataclass
class Outcome:
    """What the server sent on a connection: text messages, pongs, its close frame."""

    messages: list[str] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    close: tuple[int, str] | None = None
    """The server's close frame ``(code, reason)`` (1005 for an empty one)."""
    ended: bool = False
    """The server closed the TCP connection."""


class RawWebSocket:
    """A blocking WebSocket client that writes whatever bytes it is given and parses the
    server's frames with wsproto (which fails the case if the server breaks RFC 6455)."""

    def __init__(self, url: str, query: str = "", *, receive_buffer: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(SOCKET_TIMEOUT)
        self.sock.connect(address(url))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host = url.split("/")[2]
        self.sock.sendall(
            f"GET /ws{query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, head
            head += chunk
        answer, rest = head.split(b"\r\n\r\n", 1)
        assert answer.startswith(b"HTTP/1.1 101 "), answer
        self.parser = FrameProtocol(client=True, extensions=[])
        self.outcome = Outcome()
        self._parts: list[str] = []
        self._feed(rest)

    def send(self, data: bytes) -> bool:
        """Write ``data``; ``False`` if the server had closed the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def _feed(self, data: bytes) -> None:
        self.parser.receive_bytes(data)
        for frame in self.parser.received_frames():
            assert self.outcome.close is None, ("a frame after the close frame", frame)
            if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.CONTINUATION:
                assert isinstance(frame.payload, str)
                self._parts.append(frame.payload)
                if frame.message_finished:
                    self.outcome.messages.append("".join(self._parts))
                    self._parts.clear()
            elif frame.opcode is Opcode.PONG:
                assert isinstance(frame.payload, bytes | bytearray)
                self.outcome.pongs.append(bytes(frame.payload))
            elif frame.opcode is Opcode.CLOSE:
                assert isinstance(frame.payload, tuple)
                code, reason = frame.payload
                self.outcome.close = (int(code), str(reason))
            else:
                raise AssertionError(f"the server sent a {frame.opcode!r} frame")

    def read_until(self, done: Any) -> Outcome:
        """Read the server's frames until ``done(outcome)`` or the connection ends."""
        while not done(self.outcome) and not self.outcome.ended:
            try:
                chunk = self.sock.recv(65_536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.outcome.ended = True
                break
            self._feed(chunk)
        return self.outcome

    def finish(self) -> Outcome:
        """Send the sentinel ping and read until its pong or the server's close frame; answer
        that close (RFC 6455 section 5.5.1) and read until the server ends the connection."""
        if self.outcome.close is None:
            self.send(client_frame(SENTINEL, opcode=0x9))  # if the server closed, read why
            self.read_until(lambda outcome: SENTINEL in outcome.pongs or outcome.close)
        if self.outcome.close is not None and not self.outcome.ended:
            code = self.outcome.close[0]
            self.send(client_frame(close_payload(None if code == 1005 else code), opcode=0x8))
            self.read_until(lambda outcome: False)
        self.sock.close()
        return self.outcome

    def close(self) -> None:
        self.sock.close()
