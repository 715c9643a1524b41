"""The ``api`` child: one listening port for HTTP (hypercorn) and ``/ws`` (the owned edge).

Starling accepts the connections itself — in batches: each time the
listening socket is readable, up to :data:`ACCEPT_BATCH` connections without
a checkpoint between them, so a reconnect storm of thousands of clients
empties the kernel's accept queue instead of overflowing it (each overflow is
a dropped SYN and a one-second retransmit for that client) — and looks at the
first bytes of each without consuming them (``MSG_PEEK``)::

    accept ─▶ "GET /ws " or "GET /ws?" ─▶ WebSocketGateway.serve (owns the socket)
           └▶ anything else             ─▶ hypercorn's HTTP/1.1 + h2c protocol (TCPServer)

so HTTP keeps hypercorn (keep-alive, limits, the ASGI app) while WebSocket
frames never pass through ASGI. The WebSocket upgrade must be the first
request of its connection (every client opens a fresh one for it); a later
``GET /ws`` on a keep-alive connection reaches the ASGI app, which has no
such route (404).

This reuses hypercorn's worker pieces (``TCPServer``, ``WorkerContext``,
``Lifespan``: what ``hypercorn.trio.serve`` runs per listener), pinned to the
hypercorn versions in pyproject.toml. Shutdown is hypercorn's: stop
accepting, tell open HTTP connections to finish, give them
``graceful_timeout`` seconds; the gateway closes WebSockets with 1001.
"""

from __future__ import annotations

import errno
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

from protocols.websocket.gateway import WebSocketGateway

log = structlog.get_logger(__name__)

SECONDS: Final = 1.0
BACKLOG: Final = 65_535
"""Pending connections the kernel queues (capped by net.core.somaxconn): a reconnect
storm of thousands of clients must not meet SYN drops and their 1 s retransmits."""
ACCEPT_BATCH: Final = 256
"""Most connections accepted per wake-up of the listening socket."""
PEEK_TIMEOUT: Final = 10 * SECONDS
"""Longest wait for a connection's first bytes before hypercorn takes it as HTTP."""
_PEEK_PAUSE: Final = 0.005
"""Seconds between peeks while only part of the request line has arrived."""


@dataclass(frozen=True, slots=True)
class HttpStatistics:
    """Where the server listens (``["http://127.0.0.1:8080"]``)."""

    binds: tuple[str, ...]


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
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.websocket = websocket
        self._upgrade_prefix = f"GET {ws_path}".encode()
        self.config = Config()
        self.config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        self.config.graceful_timeout = graceful_timeout
        self.config.backlog = BACKLOG
        self.config.accesslog = None
        self.config.errorlog = None
        self.binds: tuple[str, ...] = ()
        self._shutdown = trio.Event()

    async def run(
        self, *, task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, report ready, serve until :meth:`request_stop`.

        Raises:
            OSError: the address cannot be bound (raised before ready).
        """
        self._shutdown = trio.Event()
        config = self.config
        app = wrap_app(self.app, config.wsgi_max_body_size, "asgi")
        state: dict[str, Any] = {}
        lifespan = Lifespan(app, config, state)
        context = WorkerContext(None)

        async def handle(sock: socket.socket) -> None:
            if self.websocket is not None and await self._is_upgrade(sock):
                await self.websocket.serve(sock)
                return
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            await TCPServer(app, config, context, state.copy(), stream).run()  # type: ignore[arg-type]

        async with trio.open_nursery() as outer:
            await outer.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            if self.websocket is not None:
                await outer.start(self.websocket.run)
            listeners = await trio.to_thread.run_sync(
                _listening_sockets, self.host, self.port, config.backlog
            )
            self.binds = tuple(_bind(sock) for sock in listeners)
            try:
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as accepting:
                        for sock in listeners:
                            accepting.start_soon(_accept, sock, handle, connections)
                        task_status.started(self)
                        await self._shutdown.wait()
                        accepting.cancel_scope.cancel()
                    await context.terminated.set()
                    deadline = trio.current_time() + config.graceful_timeout
                    connections.cancel_scope.deadline = deadline
            finally:
                for sock in listeners:
                    trio.lowlevel.notify_closing(sock)
                    sock.close()
            await lifespan.wait_for_shutdown()
            outer.cancel_scope.cancel()

    async def _is_upgrade(self, sock: socket.socket) -> bool:
        """Whether the connection's first request is ``GET <ws_path>`` (peeked, not consumed)."""
        prefix = self._upgrade_prefix
        want = len(prefix) + 1
        try:  # the request line is usually there already: no timeout scope needed
            head = sock.recv(want, socket.MSG_PEEK)
        except OSError:
            head = b""
        if len(head) >= want:
            return head.startswith(prefix) and head[-1:] in (b" ", b"?")
        with trio.move_on_after(PEEK_TIMEOUT):
            while True:
                try:
                    head = sock.recv(want, socket.MSG_PEEK)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                    continue
                except OSError:
                    return False
                if len(head) >= want:
                    return head.startswith(prefix) and head[-1:] in (b" ", b"?")
                if not head or not prefix.startswith(head):
                    return False
                await trio.sleep(_PEEK_PAUSE)  # part of the request line: wait for the rest
        return False

    def request_stop(self) -> None:
        """Stop accepting, close WebSockets 1001, let open requests finish."""
        if self.websocket is not None:
            self.websocket.going_away()
        self._shutdown.set()

    def statistics(self) -> HttpStatistics:
        """Where the server listens."""
        return HttpStatistics(self.binds)


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
