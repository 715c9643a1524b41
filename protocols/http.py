"""The ``api`` child: one listening port for HTTP (hypercorn) and ``/ws`` (the owned edge).

Starling accepts the connections itself and looks at the first bytes of
each without consuming them (``MSG_PEEK``)::

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

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from protocols.websocket.gateway import WebSocketGateway

SECONDS: Final = 1.0
BACKLOG: Final = 4096
"""Pending connections the kernel queues (capped by net.core.somaxconn): a reconnect
storm of thousands of clients must not meet SYN drops and their 1 s retransmits."""
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
        on_stop: called (synchronously) when the server is asked to stop, before
            hypercorn waits for open connections.
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
        on_stop: Callable[[], None] | None = None,
        websocket: WebSocketGateway | None = None,
        ws_path: str = "/ws",
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.websocket = websocket
        self._on_stop = on_stop
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

        async def handle(stream: trio.SocketStream) -> None:
            if self.websocket is not None and await self._is_upgrade(stream):
                await self.websocket.serve(stream)
            else:
                await TCPServer(app, config, context, state.copy(), stream).run()  # type: ignore[arg-type]

        async with trio.open_nursery() as outer:
            await outer.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            if self.websocket is not None:
                await outer.start(self.websocket.run)
            listeners = await trio.open_tcp_listeners(
                self.port, host=self.host, backlog=config.backlog
            )
            self.binds = tuple(_bind(listener.socket) for listener in listeners)
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(
                        functools.partial(
                            trio.serve_listeners, handle, listeners, handler_nursery=connections
                        )
                    )
                    task_status.started(self)
                    await self._shutdown.wait()
                    accepting.cancel_scope.cancel()
                await context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
            await lifespan.wait_for_shutdown()
            outer.cancel_scope.cancel()

    async def _is_upgrade(self, stream: trio.SocketStream) -> bool:
        """Whether the connection's first request is ``GET <ws_path>`` (peeked, not consumed)."""
        prefix = self._upgrade_prefix
        want = len(prefix) + 1
        with trio.move_on_after(PEEK_TIMEOUT):
            while True:
                try:
                    head = await stream.socket.recv(want, socket.MSG_PEEK)
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
        if self._on_stop is not None:
            self._on_stop()
        if self.websocket is not None:
            self.websocket.going_away()
        self._shutdown.set()

    def statistics(self) -> HttpStatistics:
        """Where the server listens."""
        return HttpStatistics(self.binds)


def _bind(sock: trio.socket.SocketType) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
