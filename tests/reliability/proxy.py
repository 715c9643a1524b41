"""A loopback TCP proxy the reliability tests put between Starling and a backend.

Two ways to break the link, as the network breaks it:

* :meth:`TcpProxy.cut` closes the listener and every relayed connection: the
  backend looks stopped (connections refused), as in ``tests/test_social_outage.py``;
  :meth:`TcpProxy.run` again listens on the same port.
* :meth:`TcpProxy.stall` is a partition: connections stay open but no byte
  crosses either way and new connections hang after the TCP handshake, until
  :meth:`TcpProxy.heal`; then what was written meanwhile is delivered, as TCP
  delivers a partition's retransmissions (a client that gave up and closed still
  has its last command delivered late).

Not a test module: the reliability tests and ``tests/test_social_outage.py`` import it
from here.
"""

from __future__ import annotations

import trio

__all__ = ["TcpProxy"]

CHUNK = 65536
"""Most bytes relayed at once."""


class TcpProxy:
    """Relays loopback TCP connections to ``target_port`` until cut.

    Args:
        target_port: where the real server listens.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._flowing = trio.Event()
        self._flowing.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen (on the same port as before, if any) and relay until :meth:`cut`."""
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        try:
            with self._scope:
                listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
                self.port = listeners[0].socket.getsockname()[1]
                async with trio.open_nursery() as nursery:
                    await nursery.start(trio.serve_listeners, self._relay, listeners)
                    task_status.started()
        finally:
            self._stopped.set()

    async def cut(self) -> None:
        """Close the listener and every relayed connection (connections refused)."""
        self._scope.cancel()
        await self._stopped.wait()

    def stall(self) -> None:
        """Stop every byte, both ways, on every connection, old and new (a partition)."""
        self._flowing = trio.Event()

    def heal(self) -> None:
        """End a :meth:`stall`: what waited is delivered, in order."""
        self._flowing.set()

    async def _relay(self, client: trio.SocketStream) -> None:
        await self._flowing.wait()
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()  # the backend is down: refuse as it would
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server)
            nursery.start_soon(self._pump, server, client)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while data := await source.receive_some(CHUNK):
                await self._flowing.wait()
                await sink.send_all(data)
            await self._flowing.wait()
            await sink.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # One side went away: close both, as a dropped connection does.
            await source.aclose()
            await sink.aclose()
