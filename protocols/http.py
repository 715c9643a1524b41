"""The HTTP server child: hypercorn's trio worker serving the ASGI app."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class HttpStatistics:
    """Where the server listens (``["http://127.0.0.1:8080"]``)."""

    binds: tuple[str, ...]


class HttpServer:
    """Serves ``app`` on ``host:port`` until asked to stop.

    Args:
        graceful_timeout: seconds open requests get to finish on stop.
        on_stop: called (synchronously) when the server is asked to stop, before
            hypercorn waits for open connections: the WebSocket gateway's
            ``going_away``, so long-lived connections close instead of waiting
            out ``graceful_timeout``.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        graceful_timeout: float = 3 * SECONDS,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self._on_stop = on_stop
        self.config = Config()
        self.config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        self.config.graceful_timeout = graceful_timeout
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
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(
                    serve, self.app, self.config, shutdown_trigger=self._shutdown.wait
                )
            )
            self.binds = tuple(binds)
            task_status.started(self)

    def request_stop(self) -> None:
        """Stop accepting, let open requests finish (up to ``graceful_timeout``)."""
        if self._on_stop is not None:
            self._on_stop()
        self._shutdown.set()

    def statistics(self) -> HttpStatistics:
        """Where the server listens."""
        return HttpStatistics(self.binds)
