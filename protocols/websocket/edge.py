"""One WebSocket connection on a socket the edge owns: handshake, reads, writes, close.

After the HTTP upgrade nothing stands between the session and the socket:
no ASGI, no lock, no cancel scope per frame. The pieces::

    handshake   wsproto's H11Handshake (RFC 6455 section 4.2), then its frame
                parser (wsproto.connection.Connection) for the client's frames
    reader      the connection's task: wait_readable → recv → wsproto events →
                Session.receive_text / touch; answers pings; replies are written
                before it reads again
    calls       JSON-RPC methods of the shared dispatcher (a service's pipelined
                calls): each frame's calls run in a task of the gateway; the reply
                is queued when they end; the reader stops reading while
                ``max_calls_in_flight`` are running (backpressure on the client)
    flush       synchronous: one non-blocking send (one frame) or sendmsg (several)
                of Session.data_to_send(); Session.sent(n) keeps the rest
    drain       only while the socket refused bytes: a task of the gateway that
                waits on trio.lowlevel.wait_writable and writes the rest; gone once
                the outbox is empty
    close       the close frame (wsproto) after the last frame begun; then the client
                has close_timeout seconds to answer before the socket is closed

Costs: a delivery is one ``Session.offer`` (a deque append of the publisher's
shared frame); a connection costs one system call per gateway flush (at most
one per publisher batch), whatever number of frames waited; an idle
connection is one reader task blocked in ``wait_readable`` plus its session.

Client frames are bounded: a message over ``max_frame_bytes`` characters
closes 1009 before it is assembled (the session checks the exact UTF-8 size
too); a malformed frame (unmasked, a reserved opcode, a control frame over 125
bytes …) closes 1002, a text or close reason that is not UTF-8 1007 (RFC 6455
section 7.4.1: wsproto's parser answers both, as the client's close). Binary
messages close 1003 (the session's rule).
"""

from __future__ import annotations

import math
import socket
import time
from typing import Final, Protocol

import trio
from wsproto.connection import Connection as FrameParser
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from protocols.websocket.codes import (
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_BIG,
)
from protocols.websocket.session import PendingCalls, Session

KiB: Final = 1024
RECEIVE_BYTES: Final = 64 * KiB
"""Most bytes read from the socket at once."""

_receive_buffer = bytearray(RECEIVE_BYTES)
_received = memoryview(_receive_buffer)


def receive(sock: socket.socket) -> bytes:
    """What ``sock`` has (at most :data:`RECEIVE_BYTES`), or ``b""`` at its end.

    Reads into one buffer shared by every connection (the trio thread only, copied out
    before any other read) rather than ``sock.recv(64 KiB)``: that allocates 64 KiB from
    malloc for every read and shrinks it to what came, and the remainders left between
    longer-lived allocations fragmented the heap by ~10 MiB a minute under the soak's
    churn (in use flat, free growing; ``mallinfo2``).

    Raises:
        BlockingIOError: nothing to read yet.
        OSError: the connection failed.
    """
    size = sock.recv_into(_receive_buffer)
    return _received[:size].tobytes()


IOV_MAX: Final = 1024
"""Most buffers in one ``sendmsg`` (Linux's ``IOV_MAX``)."""


class Gateway(Protocol):
    """What a connection asks of the gateway that serves it
    (:class:`protocols.websocket.gateway.WebSocketGateway`)."""

    close_timeout: float
    writes: int

    def mark_dirty(self, connection: Connection) -> None:
        """Write ``connection`` at the next flush."""

    def schedule(self, connection: Connection) -> None:
        """Put ``connection``'s next deadline in the timer's heap."""

    def drain(self, connection: Connection) -> None:
        """Start a task writing the rest of ``connection``'s outbox as the socket takes it."""

    def run_calls(self, connection: Connection, pending: PendingCalls) -> None:
        """Run the calls of one of ``connection``'s frames in a task of the gateway."""


class Connection:
    """The I/O of one upgraded connection; its protocol state is the :class:`Session`.

    Built by the gateway after the handshake; ``session`` is set right after
    (its ``on_ready`` is :meth:`mark_dirty`). Methods run on the trio thread.
    """

    __slots__ = (
        "_close_deadline",
        "_close_sent",
        "_draining",
        "_gateway",
        "_message",
        "_message_size",
        "_parser",
        "_room",
        "calls_in_flight",
        "context",
        "dead",
        "scheduled",
        "scope",
        "session",
        "sock",
    )

    def __init__(self, sock: socket.socket, parser: FrameParser, gateway: Gateway):
        self.sock = sock
        self._parser = parser
        self._gateway = gateway
        self.session: Session
        self.scope = trio.CancelScope()
        #: The trio time of this connection's entry in the gateway's deadline heap.
        self.scheduled = math.inf
        self.dead = False
        self._draining = False
        self._close_sent = False
        self._close_deadline = math.inf
        self._message: list[str] = []
        self._message_size = 0
        #: Calls of this connection running in the gateway; the reader waits at the limit.
        self.calls_in_flight = 0
        self._room = trio.Event()
        #: What the dispatcher's handlers get as their context (who calls).
        self.context: object = None

    # -- reading --------------------------------------------------------------------

    async def read_until_closed(self) -> None:
        """Read and answer the client until the close handshake ends or the peer goes.

        (A client sends nothing after its upgrade request before the answer,
        RFC 6455 section 4.1, so the reading starts from the socket.)
        """
        sock = self.sock
        with self.scope:
            self._input(b"")
            while not self.dead:
                while self.calls_in_flight >= self.session.limits.max_calls_in_flight:
                    self._room = trio.Event()
                    await self._room.wait()
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = receive(sock)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data:
                    return  # the peer closed its side (or reset)
                self._input(data)

    def _input(self, data: bytes) -> None:
        """Feed client bytes to the parser and the session, then write what they produced."""
        if data:
            self._parser.receive_data(data)
        now = time.time()
        session = self.session
        try:
            for event in self._parser.events():
                if isinstance(event, TextMessage):
                    self._text(event, now)
                elif isinstance(event, BytesMessage):
                    if event.message_finished:
                        session.receive_bytes(b"", now)
                elif isinstance(event, Ping):
                    session.touch(now)
                    self._pong(event)
                elif isinstance(event, Pong):
                    session.touch(now)
                elif isinstance(event, CloseConnection):
                    self._peer_closed(event)
                    return
        except RemoteProtocolError as error:
            session.fail(CLOSE_PROTOCOL_ERROR, _reason(str(error)))
        if session.calls_waiting:
            for pending in session.take_calls():
                self.calls_in_flight += len(pending.calls)
                self._gateway.run_calls(self, pending)
        self.flush()
        self._gateway.schedule(self)

    def _text(self, event: TextMessage, now: float) -> None:
        session = self.session
        if session.closing is not None:
            return
        if event.message_finished and not self._message:
            session.receive_text(event.data, now)
            return
        self._message.append(event.data)
        self._message_size += len(event.data)
        if self._message_size > session.limits.max_frame_bytes:
            self._message.clear()
            session.fail(CLOSE_TOO_BIG, "message too big")
        elif event.message_finished:
            text = "".join(self._message)
            self._message.clear()
            self._message_size = 0
            session.receive_text(text, now)

    def _pong(self, ping: Ping) -> None:
        """Answer ``ping``; none once our close frame is out (RFC 6455 section 5.5.1: wsproto
        refuses it). Pongs count against the outbox like replies: a client that pings
        without reading its pongs is a slow consumer (4008), not a buffer without bound."""
        session = self.session
        if self._close_sent:
            return
        if session.pending_bytes > session.limits.max_outbox_bytes:
            session.fail(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        session.queue_control(self._parser.send(ping.response()))

    def _peer_closed(self, event: CloseConnection) -> None:
        """The client sent its close frame, or sent what the parser refused: answer it (unless
        ours crossed it) and end.

        The parser reports a refused frame as a close event while the connection is still
        open. A text that is not UTF-8 gets a fixed reason: the decoder's own names byte
        positions within whatever piece the socket read, which change with the TCP segments.
        """
        if event.code == CLOSE_INVALID_DATA and self._parser.state is ConnectionState.OPEN:
            what = (
                "close reason"
                if (event.reason or "").startswith("Error decoding CLOSE")
                else "text"
            )
            event = CloseConnection(CLOSE_INVALID_DATA, f"{what} is not valid UTF-8")
        if not self._close_sent:
            self._close_sent = True
            self.session.queue_control(self._parser.send(event.response()))
        self._write()
        self.dead = True

    def calls_done(self, count: int) -> None:
        """``count`` calls ended: let the reader read again below the limit."""
        self.calls_in_flight -= count
        if self.calls_in_flight < self.session.limits.max_calls_in_flight:
            self._room.set()

    # -- writing --------------------------------------------------------------------

    def mark_dirty(self) -> None:
        """The session has output: write it at the gateway's next flush (its ``on_ready``)."""
        self._gateway.mark_dirty(self)

    def flush(self) -> None:
        """Write what the session queued, without blocking; a drain task takes the rest.

        Queues the close frame first when the session decided to close.
        """
        if self.dead or self._draining:
            return
        session = self.session
        if session.closing is not None and not self._close_sent:
            self._send_close(*session.closing)
        self._write()
        if session.pending_bytes and not self.dead:
            self._draining = True
            self._gateway.drain(self)

    def _send_close(self, code: int, reason: str) -> None:
        self._close_sent = True
        self.session.queue_control(self._parser.send(CloseConnection(code, reason)))
        self._close_deadline = trio.current_time() + self._gateway.close_timeout
        self._gateway.schedule(self)

    def _write(self) -> None:
        """One non-blocking write of the outbox's head; what the socket took leaves it."""
        chunks = self.session.data_to_send(IOV_MAX)
        if not chunks:
            return
        try:
            sock = self.sock
            count = sock.send(chunks[0]) if len(chunks) == 1 else sock.sendmsg(chunks)
        except BlockingIOError:
            count = 0
        except OSError:
            self.abort()  # reset by the peer, or the socket is gone
            return
        self._gateway.writes += 1
        self.session.sent(count)

    async def drain(self) -> None:
        """Write the outbox as the socket takes it (the gateway runs this in its own task)."""
        try:
            while not self.dead and self.session.pending_bytes:
                await trio.lowlevel.wait_writable(self.sock)
                self._write()
                session = self.session
                if session.closing is not None and not self._close_sent:
                    self._send_close(*session.closing)
        except (trio.ClosedResourceError, OSError):
            pass
        finally:
            self._draining = False

    # -- time -----------------------------------------------------------------------

    def deadline(self) -> float:
        """The next trio time at which :meth:`on_deadline` has something to check."""
        if self._close_sent:
            return self._close_deadline
        at = self.session.deadline
        if math.isinf(at):
            return at if at > 0 else trio.current_time()
        return trio.current_time() + (at - time.time())

    def on_deadline(self) -> None:
        """A deadline passed: close a session whose time ran out; end a close not answered."""
        if self._close_sent:
            if trio.current_time() >= self._close_deadline:
                self.abort()
            return
        if self.session.close_reason(time.time()) is not None:
            self.flush()

    def abort(self) -> None:
        """End the connection now (its reader closes the socket)."""
        self.dead = True
        self.scope.cancel()


def _reason(text: str) -> str:
    """A close reason within the 123 bytes RFC 6455 section 5.5 allows."""
    return text.encode()[:120].decode(errors="ignore")
