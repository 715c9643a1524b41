"""``GET /ws``: the thin ASGI adapter around :class:`protocols.ws_session.Session`.

The protocol lives in the sans-I/O session; this module only moves frames
and time to it, one connection at a time, in three tasks::

    reader   websocket.receive() → session.receive_text / receive_bytes (now = time.time())
    writer   wait for on_ready → send every session.take_frame() as a TEXT frame,
             then session.close_reason(now) → websocket.close(code, reason)
    timer    sleep until session.deadline (epoch seconds) → session.close_reason(now)

Only the writer sends (Starlette refuses a send after the close, so the close
frame must come from the task that sends the others); the timer and the hub
decide closes in the session, whose ``on_ready`` wakes the writer. Once the
close frame is out, the client gets ``close_timeout`` seconds to answer it,
then the connection ends; whatever ends it, :meth:`Session.close` runs last
and leaves every channel in the hub.

Frames over ``limits.max_frame_bytes`` close with 1009. Hypercorn reads a
whole message into memory before the app sees it, up to its
``websocket_max_message_size`` (16 MiB by default) and closes with 1009
itself beyond that. So set it to ``limits.max_frame_bytes`` on the server's
config (``HttpServer(...).config.websocket_max_message_size``): then a
client cannot make the server buffer more than that per connection. Hypercorn
counts a text message in characters, not bytes, so the session's UTF-8 byte
check still catches a frame of multi-byte characters that hypercorn let
through; either way the client sees 1009.

Connections beyond ``max_connections`` are accepted and closed at once with
1013 "try again later" (RFC 6455 section 7.4.2 and the IANA close code
registry), so that the client reads a reason rather than an HTTP 403
(what closing before accepting gives with hypercorn).

Hypercorn answers the client's pings itself and hands the app neither pings
nor pongs, so only frames reset the idle clock: a client keeps an idle
connection open with the ``ping`` method (JSON-RPC), not a WebSocket ping.

A client that stops reading fills the socket buffers; hypercorn's send is
shielded from cancellation, so the writer waits there. The session still
refuses what overflows its outbox and decides 4008, the publisher drops it
from every channel at once, and the client reads the close (after what was
already in flight) as soon as it reads again. There is no ASGI call to abort
a connection; the kernel's TCP timeouts end one whose peer is gone.

Starlette on hypercorn's trio worker: Starlette's ``WebSocket`` is a state
machine over the ASGI ``receive``/``send`` callables, which hypercorn
implements with trio (a memory channel, its protocol's send). Nothing on
this path goes through anyio (Starlette uses it for thread pools and
``BaseHTTPMiddleware``, which lets WebSocket scopes pass), so the tasks
here are plain trio: nurseries, events, cancel scopes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Final

import trio
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from protocols.ws_session import DEFAULT_LIMITS, Hub, Limits, Session

SECONDS: Final = 1.0

CLOSE_TRY_AGAIN_LATER: Final = 1013
DEFAULT_MAX_CONNECTIONS: Final = 10_000
DEFAULT_CLOSE_TIMEOUT: Final = 5 * SECONDS


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    """A snapshot of a :class:`WebSocketGateway`.

    Attributes:
        open: connections being served now.
        peak_open: the most ever served at once.
        accepted: connections served since start.
        refused: connections closed with 1013 because ``max_connections`` were open.
        max_connections: the limit.
    """

    open: int
    peak_open: int
    accepted: int
    refused: int
    max_connections: int


class WebSocketGateway:
    """Serves the WebSocket protocol of :mod:`protocols.ws_session` to Starlette routes.

    One instance serves every connection; it keeps the connection count and
    its figures. Use it from the trio thread that runs the server.

    Args:
        hub: the publisher (:class:`actors.realtime.Publisher`), called synchronously.
        secret: the token secret (:func:`protocols.tokens.load_secret`).
        limits: the sessions' knobs (the frame size, the outbox, the timeouts).
        max_connections: most connections served at once; more are closed with 1013.
        close_timeout: seconds the client has to answer the server's close frame.

    Raises:
        ValueError: ``max_connections`` < 1 or ``close_timeout`` < 0.
    """

    def __init__(
        self,
        hub: Hub,
        secret: bytes,
        *,
        limits: Limits = DEFAULT_LIMITS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        if not close_timeout >= 0:
            raise ValueError(f"close_timeout must be >= 0 seconds, got {close_timeout!r}")
        self.hub = hub
        self.limits = limits
        self.max_connections = max_connections
        self.close_timeout = close_timeout
        self._secret = secret
        self._sessions: set[Session] = set()
        self._open = 0
        self._peak = 0
        self._accepted = 0
        self._refused = 0

    def route(self, path: str = "/ws") -> WebSocketRoute:
        """A Starlette route serving this gateway at ``path``."""
        return WebSocketRoute(path, self.serve, name="ws")

    async def serve(self, websocket: WebSocket) -> None:
        """Serve one connection until it closes (the Starlette endpoint)."""
        if self._open >= self.max_connections:
            self._refused += 1
            await websocket.accept()
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "try again later")
            return
        self._open += 1
        self._peak = max(self._peak, self._open)
        self._accepted += 1
        try:
            await websocket.accept()
            ready = _Ready()
            session = Session(
                self.hub,
                self._secret,
                time.time(),
                token=websocket.query_params.get("token"),
                limits=self.limits,
                on_ready=ready.set,
            )
            self._sessions.add(session)
            try:
                await _Connection(websocket, session, ready, self.close_timeout).run()
            finally:
                self._sessions.discard(session)
                session.close()
        finally:
            self._open -= 1

    def going_away(self) -> None:
        """Close every connection with 1001 "server shutting down" (call it when the server
        stops, so clients read a close instead of a dropped connection)."""
        for session in list(self._sessions):
            session.going_away()

    def statistics(self) -> GatewayStatistics:
        """A snapshot of the gateway's figures."""
        return GatewayStatistics(
            open=self._open,
            peak_open=self._peak,
            accepted=self._accepted,
            refused=self._refused,
            max_connections=self.max_connections,
        )


def websocket_route(
    hub: Hub,
    secret: bytes,
    *,
    limits: Limits = DEFAULT_LIMITS,
    path: str = "/ws",
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> WebSocketRoute:
    """A Starlette ``WebSocketRoute`` serving the WebSocket protocol at ``path``.

    A shortcut for ``WebSocketGateway(...).route(path)``; build the
    :class:`WebSocketGateway` yourself to read its :meth:`~WebSocketGateway.statistics`.
    Set the server's ``websocket_max_message_size`` to ``limits.max_frame_bytes``
    (module docstring).

    Args:
        hub: the publisher, called synchronously.
        secret: the token secret.
        limits: the sessions' knobs.
        path: where the route listens.
        max_connections: most connections at once; more are closed with 1013.
    """
    gateway = WebSocketGateway(hub, secret, limits=limits, max_connections=max_connections)
    return gateway.route(path)


class _Ready:
    """The session's ``on_ready``: a flag the writer waits on and clears."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Wait until set, then clear (``on_ready`` comes once per drain, after the clear)."""
        await self._event.wait()
        self._event = trio.Event()


class _Connection:
    """The reader, writer and timer of one accepted connection."""

    __slots__ = ("_close_timeout", "_ready", "_scope", "_session", "_timer", "_websocket")

    def __init__(
        self, websocket: WebSocket, session: Session, ready: _Ready, close_timeout: float
    ) -> None:
        self._websocket = websocket
        self._session = session
        self._ready = ready
        self._close_timeout = close_timeout
        self._scope = trio.CancelScope()
        self._timer = trio.CancelScope()

    async def run(self) -> None:
        """Serve until the client leaves, or the close frame is out and answered (or not)."""
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read)
                nursery.start_soon(self._time)
                if await self._write():
                    # The close frame is out: the reader ends all when the client answers.
                    await trio.sleep(self._close_timeout)
                self._scope.cancel()

    async def _read(self) -> None:
        session, websocket = self._session, self._websocket
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                self._scope.cancel()
                return
            now = time.time()
            text = message.get("text")
            if text is not None:
                session.receive_text(text, now)
            else:
                session.receive_bytes(message.get("bytes") or b"", now)
            # A frame may bring the deadline closer (a close decided, a shorter token).
            self._timer.deadline = min(self._timer.deadline, _trio_time(session.deadline))

    async def _write(self) -> bool:
        """Send frames until a close is decided; whether the close frame went out."""
        session, websocket = self._session, self._websocket
        try:
            while True:
                await self._ready.wait()
                while (frame := session.take_frame()) is not None:
                    await websocket.send_text(frame.decode())
                reason = session.close_reason(time.time())
                if reason is not None:
                    await websocket.close(*reason)
                    return True
        except WebSocketDisconnect:
            return False

    async def _time(self) -> None:
        session = self._session
        while session.close_reason(time.time()) is None:
            with trio.CancelScope(deadline=_trio_time(session.deadline)) as self._timer:
                await trio.sleep_forever()


def _trio_time(epoch_seconds: float) -> float:
    """The trio clock's reading when the wall clock shows ``epoch_seconds`` (±inf kept)."""
    if math.isinf(epoch_seconds):
        return epoch_seconds
    return trio.current_time() + (epoch_seconds - time.time())
