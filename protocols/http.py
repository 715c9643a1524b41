"""The ``api`` child: one listening port for HTTP (hypercorn) and ``/ws`` (the owned edge).

Starling accepts the connections itself — in batches: each time the
listening socket is readable, up to :data:`ACCEPT_BATCH` connections without
a checkpoint between them, so a reconnect storm of thousands of clients
empties the kernel's accept queue instead of overflowing it (each overflow is
a dropped SYN and a one-second retransmit for that client) — and reads the
first bytes of each (one ``recv``: usually the whole request), which then go
to whoever serves the connection::

    accept ─▶ "GET /ws " or "GET /ws?" ─▶ WebSocketGateway.serve (owns the socket)
           └▶ anything else             ─▶ read on to the end of the request's head, then
                                           hypercorn's HTTP/1.1 + h2c protocol (TCPServer),
                                           reading those bytes first

so HTTP keeps hypercorn (keep-alive, limits, the ASGI app) while WebSocket
frames never pass through ASGI. An HTTP connection ends as RFC 9112 asks
(:mod:`protocols.teardown`): ``Connection: close`` on a response that leaves
its request's body unread, and a lingering close. The WebSocket upgrade must be the first
request of its connection (every client opens a fresh one for it); a later
``GET /ws`` on a keep-alive connection reaches the ASGI app, which has no
such route (404).

This reuses hypercorn's worker pieces (``TCPServer``, ``WorkerContext``,
``Lifespan``: what ``hypercorn.trio.serve`` runs per listener), pinned to the
hypercorn versions in pyproject.toml. Shutdown is hypercorn's: stop
accepting, tell open HTTP connections to finish, give them
``graceful_timeout`` seconds; the gateway closes WebSockets with 1001.

Every stage of a connection has a deadline, so that a client that opens a
socket and sends nothing, or sends a byte a second (slowloris), holds a task
and a descriptor for a bounded time, never a core (docs/operations.md,
"Timeouts, rate limits and bounds")::

    first bytes      first_bytes_timeout (10 s) from the accept, until enough of the
                     request line came to tell /ws from HTTP; then closed, unanswered
    HTTP headers     keep_alive_timeout (5 s): the first request's head must be complete
                     within it of the first bytes (read here: a slowloris costs a recv per
                     segment, no hypercorn connection), a later one's within it of the
                     last response (hypercorn's idle limit)
    /rpc body        the app's body timeout (protocols.app)
    /ws upgrade      the gateway's handshake_timeout (10 s) from the hand-over
    /ws auth, idle   the session's auth_timeout (10 s) and idle_timeout (60 s)

A restart (the supervisor's, or an operator's ``system.restart``) keeps the
listening sockets: the next run serves the same port, and clients that
connect meanwhile wait in the kernel's backlog instead of being refused.
WebSockets are closed with 1012 "service restart" (:meth:`HttpServer.request_restart`).
The sockets are closed by :meth:`HttpServer.request_stop` (the final stop);
after a crash they are kept for the restart that follows.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from protocols.teardown import LingeringStream, close_unread, lingering
from protocols.websocket.codes import CLOSE_SERVICE_RESTART
from protocols.websocket.edge import receive
from protocols.websocket.gateway import WebSocketGateway

log = structlog.get_logger(__name__)

SECONDS: Final = 1.0
BACKLOG: Final = 65_535
"""Pending connections the kernel queues (capped by net.core.somaxconn): a reconnect
storm of thousands of clients must not meet SYN drops and their 1 s retransmits."""
_END_OF_HEAD: Final = re.compile(rb"\n\r?\n")
"""The blank line that ends a request's head (h11 accepts a bare LF too)."""
ACCEPT_BATCH: Final = 256
"""Most connections accepted per wake-up of the listening socket."""
DEFAULT_FIRST_BYTES_TIMEOUT: Final = 10 * SECONDS
"""Longest wait from the accept for enough of the request line to tell ``/ws`` from HTTP."""
DEFAULT_KEEP_ALIVE_TIMEOUT: Final = 5 * SECONDS
"""Hypercorn's idle limit: headers complete, or the next request begun, within it."""


@dataclass(frozen=True, slots=True)
class HttpStatistics:
    """Where the server listens (``["http://127.0.0.1:8080"]``), and the connections closed
    unanswered since start because their first bytes did not come within
    ``first_bytes_timeout``, or their first HTTP request's head within
    ``keep_alive_timeout``."""

    binds: tuple[str, ...]
    first_bytes_timeouts: int = 0
    header_timeouts: int = 0


class HttpServer:
    """Serves ``app`` (HTTP) and ``websocket`` (``/ws``) on ``host:port`` until asked to stop.

    Args:
        app: the ASGI app.
        host, port: where to listen (port 0: a free one; see ``binds``).
        graceful_timeout: seconds open requests get to finish on stop.
        websocket: the gateway that serves ``ws_path``; it runs with this
            server (its shared tasks live in this child) and is told
            ``going_away`` on stop. Without one, every request is HTTP.
        ws_path: the WebSocket path.
        first_bytes_timeout: seconds from the accept for enough of the first request line
            to tell ``ws_path`` from HTTP (with a ``websocket`` only); after it the
            connection is closed unanswered.
        keep_alive_timeout: seconds for a request's head to be complete: the first one's
            from its first bytes (the listener reads it), a later one's from the previous
            response (hypercorn's keep-alive timeout).

    Raises:
        ValueError: a timeout is not positive.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        graceful_timeout: float = 3 * SECONDS,
        websocket: WebSocketGateway | None = None,
        ws_path: str = "/ws",
        first_bytes_timeout: float = DEFAULT_FIRST_BYTES_TIMEOUT,
        keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT,
    ) -> None:
        if not (first_bytes_timeout > 0 and keep_alive_timeout > 0):
            raise ValueError(
                "first_bytes_timeout and keep_alive_timeout must be > 0 seconds, "
                f"got {first_bytes_timeout!r} and {keep_alive_timeout!r}"
            )
        self.app = app
        self.host = host
        self.port = port
        self.websocket = websocket
        self._upgrade_prefix = f"GET {ws_path}".encode()
        self.config = Config()
        self.config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        self.config.graceful_timeout = graceful_timeout
        self.config.keep_alive_timeout = keep_alive_timeout
        self.first_bytes_timeout = first_bytes_timeout
        self._first_bytes_timeouts = 0
        self._header_timeouts = 0
        self.config.backlog = BACKLOG
        self.config.accesslog = None
        self.config.errorlog = None
        self.binds: tuple[str, ...] = ()
        self._shutdown = trio.Event()
        self._listeners: list[socket.socket] = []
        self._port = port  # the port bound first (``port`` 0: the one the kernel chose)
        self._release = False  # close the listening sockets on the way out (a final stop)

    async def run(
        self, *, task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind (or take the sockets a restart kept), report ready, serve until
        :meth:`request_stop` or :meth:`request_restart`.

        Raises:
            OSError: the address cannot be bound (raised before ready).
        """
        self._shutdown = trio.Event()
        self._release = False
        config = self.config
        asgi: Any = close_unread(self.app)  # hypercorn types its ASGI scopes and events
        app = wrap_app(asgi, config.wsgi_max_body_size, "asgi")
        state: dict[str, Any] = {}
        lifespan = Lifespan(app, config, state)
        context = WorkerContext(None)

        async def handle(sock: socket.socket) -> None:
            head = b""
            if self.websocket is not None:
                try:
                    head = await self._request_head(sock)
                finally:
                    if not head:  # nothing in time, the client left, or the server stops
                        sock.close()
                if not head:
                    return
                if self._is_upgrade(head):
                    await self.websocket.serve(sock, head)
                    return
                try:
                    head = await self._http_head(sock, head)
                finally:
                    if not head:
                        sock.close()
                if not head:
                    return
            stream = lingering(sock)
            served = _Replayed(stream, head) if head else stream
            await TCPServer(app, config, context, state.copy(), served).run()  # type: ignore[arg-type]

        async with trio.open_nursery() as outer:
            await outer.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            if self.websocket is not None:
                await outer.start(self.websocket.run)
            if not self._listeners:
                self._listeners = await trio.to_thread.run_sync(
                    _listening_sockets, self.host, self._port, config.backlog
                )
            listeners = self._listeners
            self.binds = tuple(_bind(sock) for sock in listeners)
            self._port = int(listeners[0].getsockname()[1])
            try:
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as accepting:
                        for sock in listeners:
                            accepting.start_soon(_accept, sock, _contained(handle), connections)
                        task_status.started(self)
                        await self._shutdown.wait()
                        accepting.cancel_scope.cancel()
                    await context.terminated.set()
                    deadline = trio.current_time() + config.graceful_timeout
                    connections.cancel_scope.deadline = deadline
            finally:
                if self._release:
                    self._close_listeners()
            await lifespan.wait_for_shutdown()
            outer.cancel_scope.cancel()

    async def _request_head(self, sock: socket.socket) -> bytes:
        """The connection's first bytes (read: up to 64 KiB, as soon as they tell a
        ``GET <ws_path>`` upgrade from HTTP); ``b""`` when the client left, or had not
        sent that much within ``first_bytes_timeout``.

        One ``recv`` when the request line is there already (no timeout scope); else a
        wait for the socket per segment that arrives, never a poll.
        """
        try:
            head = receive(sock)
        except BlockingIOError:
            head = b""
        except OSError:
            return b""
        else:
            if not head:
                return b""  # the client closed before sending anything
        if self._told(head):
            return head
        with trio.move_on_after(self.first_bytes_timeout):
            while data := await _next_bytes(sock):
                head += data
                if self._told(head):
                    return head
            return b""
        self._first_bytes_timeouts += 1
        return b""

    async def _http_head(self, sock: socket.socket, head: bytes) -> bytes:
        """``head`` read on to the end of the first request's head (its blank line), or past
        hypercorn's limit on a head's size (hypercorn answers that); ``b""`` when the client
        left, or had not finished within ``keep_alive_timeout``.

        Usually ``head`` has it all already: one search, no timeout scope.
        """
        limit = self.config.h11_max_incomplete_size
        if _END_OF_HEAD.search(head) or len(head) > limit:
            return head
        with trio.move_on_after(self.config.keep_alive_timeout):
            while data := await _next_bytes(sock):
                searched = max(0, len(head) - 3)
                head += data
                if _END_OF_HEAD.search(head, searched) or len(head) > limit:
                    return head
            return b""
        self._header_timeouts += 1
        return b""

    def _told(self, head: bytes) -> bool:
        """Whether ``head`` is enough to say whether the request is the upgrade."""
        prefix = self._upgrade_prefix
        return len(head) > len(prefix) or not prefix.startswith(head)

    def _is_upgrade(self, head: bytes) -> bool:
        """Whether the connection's first request, starting with ``head``, is ``GET <ws_path>``."""
        prefix = self._upgrade_prefix
        return head.startswith(prefix) and head[len(prefix) : len(prefix) + 1] in (b" ", b"?")

    def request_stop(self) -> None:
        """Stop accepting and close the listening sockets, close WebSockets 1001, let open
        requests finish."""
        if self.websocket is not None:
            self.websocket.going_away()
        self._release = True
        self._shutdown.set()

    def request_restart(self) -> None:
        """Stop as for a restart: keep the listening sockets (the next :meth:`run` serves
        the same port; new connections wait in the backlog meanwhile), close WebSockets
        1012 "service restart" (clients reconnect at once), let open requests finish."""
        if self.websocket is not None:
            self.websocket.going_away(CLOSE_SERVICE_RESTART, "service restart")
        self._shutdown.set()

    def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        for sock in listeners:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    def statistics(self) -> HttpStatistics:
        """Where the server listens."""
        return HttpStatistics(self.binds, self._first_bytes_timeouts, self._header_timeouts)


def _contained(
    handle: Callable[[socket.socket], Awaitable[None]],
) -> Callable[[socket.socket], Awaitable[None]]:
    """``handle``, whose failure on one connection ends that connection alone (logged with
    its traceback) instead of every connection with the listener: a client that finds
    a bug must not be able to restart the ``api`` child, nor, four times in 30 s, end
    the process through the root's restart intensity."""

    async def contained(sock: socket.socket) -> None:
        try:
            await handle(sock)
        except Exception as error:
            log.error("a connection failed; closed", error=f"{type(error).__name__}: {error}",
                      exc_info=error)  # fmt: skip
            sock.close()

    return contained


def _bind(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking listening sockets on every address of ``host`` (one port for all: the
    first one bound when ``port`` is 0), like ``trio.open_tcp_listeners``.

    Raises:
        OSError: an address cannot be bound.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


_ACCEPT_RETRY: Final = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
"""Errors of accept() that a moment's wait may cure (out of descriptors or memory)."""


async def _accept(
    sock: socket.socket,
    handle: Callable[[socket.socket], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept connections on ``sock`` for ever, each served by ``handle`` in ``nursery``.

    Up to :data:`ACCEPT_BATCH` per wake-up with no checkpoint between them.
    """
    family, kind, proto = int(sock.family), int(sock.type), sock.proto
    while True:
        await trio.lowlevel.wait_readable(sock)
        for _ in range(ACCEPT_BATCH):
            try:
                # socket.accept() without its per-call enum conversions of family and
                # type (7 % of the server's CPU in a 10,000-client reconnect storm).
                fd, _address = sock._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno not in _ACCEPT_RETRY:
                    raise
                log.warning("accept failed; retrying in 0.1 s", error=str(error))
                await trio.sleep(0.1)
                break
            connection = socket.socket(family, kind, proto, fileno=fd)
            connection.setblocking(False)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(handle, connection)


class _Replayed:
    """A connection's stream for hypercorn whose first read returns what the listener read.

    What :class:`hypercorn.trio.tcp_server.TCPServer` uses of a stream: ``socket``,
    ``receive_some``, ``send_all``, ``send_eof``, ``aclose``; no ``do_handshake``, so it
    takes the stream as plain TCP.
    """

    def __init__(self, stream: LingeringStream, head: bytes) -> None:
        self._stream = stream
        self._head = head
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head:
            head, self._head = self._head, b""
            await trio.lowlevel.checkpoint()
            return head
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _next_bytes(sock: socket.socket) -> bytes:
    """The next bytes the client sends, once the socket has them; ``b""`` when it closed or
    the connection failed."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return receive(sock)
        except BlockingIOError:
            continue
        except OSError:
            return b""
