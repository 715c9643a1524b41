"""``GET /ws``: the gateway that admits WebSocket connections and runs the edge's shared tasks.

The HTTP listener (:class:`protocols.http.HttpServer`) hands the gateway
every connection whose first request is ``GET /ws``; the gateway owns the
socket from then on (:mod:`protocols.websocket.edge`)::

    listener ─ GET /ws … ─▶ WebSocketGateway.serve(stream)
                             handshake (wsproto), admission (max_connections → 1013),
                             Session + Connection, then the connection's reader
    gateway tasks (run)      flusher   writes every connection that got output since the
                                       last pass: one system call each, after the publisher's
                                       batch (the publisher marks, the flusher writes)
                             timer     one deadline heap for every connection's auth, token
                                       and idle limits and close timeouts (no task per timer)
                             drains    one task per connection whose socket is full, only
                                       while it is full
                             calls     one task per client frame that calls a method of the
                                       shared dispatcher (:meth:`attach_rpc`), or waits for
                                       the gate (:meth:`attach_gate`) or a presence read
                                       (:meth:`attach_presence`)

Connections beyond ``max_connections`` get the handshake and then close
1013 "try again later" (RFC 6455 section 7.4.2, the IANA close code
registry), so that the client reads a reason rather than an HTTP error.
A handshake must complete within ``handshake_timeout`` seconds; a request
that is not a WebSocket upgrade gets HTTP 400 (wsproto's answer).

permessage-deflate is not offered (compressing a shared frame per
connection would cost what the edge saves) and TLS terminates at a proxy in
front (docs/operations.md): the edge speaks plain ``ws://``.

Stopping: :meth:`WebSocketGateway.going_away` closes every connection with
1001 "server shutting down" (1012 "service restart" when the listener is
restarted), after what each has queued; when :meth:`run` ends, connections
still open are ended.
"""

from __future__ import annotations

import heapq
import itertools
import math
import socket
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import structlog
import trio
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from actors.realtime.channels import GraphUnavailable
from actors.realtime.presence import PresenceUnavailable
from auth.tokens import Keyring
from protocols.jsonrpc import Dispatcher
from protocols.ratelimit import RateLimiter
from protocols.websocket.codes import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER
from protocols.websocket.edge import Connection, receive
from protocols.websocket.session import (
    DEFAULT_LIMITS,
    Call,
    Deferred,
    Gate,
    Hub,
    Limits,
    PendingCalls,
    Presence,
    Session,
)

log = structlog.get_logger(__name__)

SECONDS: Final = 1.0

DEFAULT_MAX_CONNECTIONS: Final = 10_000
DEFAULT_CLOSE_TIMEOUT: Final = 5 * SECONDS
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10 * SECONDS


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    """A snapshot of a :class:`WebSocketGateway`.

    Attributes:
        open: connections being served now.
        peak_open: the most ever served at once.
        accepted: connections served since start.
        refused: connections closed with 1013 because ``max_connections`` were open.
        max_connections: the limit.
        writes: socket writes (``send``/``sendmsg`` calls) since start.
        draining: connections whose socket is full now (a drain task waits on each).
        handshake_failures: upgrade requests refused or not completed in time.
        calls: JSON-RPC calls of the shared dispatcher answered on ``/ws`` since start.
    """

    open: int
    peak_open: int
    accepted: int
    refused: int
    max_connections: int
    writes: int = 0
    draining: int = 0
    handshake_failures: int = 0
    calls: int = 0


class WebSocketGateway:
    """Serves the WebSocket protocol of :mod:`protocols.websocket.session` on owned sockets.

    One instance serves every connection. :meth:`run` must be running (the
    ``api`` child runs it beside the listener) for :meth:`serve` to serve.
    Use it from the trio thread that runs the server.

    Args:
        hub: the publisher (:class:`actors.realtime.Publisher`), called synchronously.
        secret: the token secret (:func:`auth.tokens.load_secret`), or the secrets of a
            rotation (:func:`auth.tokens.load_keyring`).
        limits: the sessions' knobs (the frame size, the outbox, the timeouts).
        max_connections: most connections served at once; more are closed with 1013.
        close_timeout: seconds the client has to answer the server's close frame.
        handshake_timeout: seconds a client has to complete its upgrade request, from when
            the listener hands the connection over (its first bytes read).
        rate_limiter: the buckets every session's requests take from
            (:mod:`protocols.ratelimit`), shared with ``POST /rpc``; ``None``: one of its
            own with the default rates.

    Raises:
        ValueError: ``max_connections`` < 1, or a timeout not positive.
    """

    def __init__(
        self,
        hub: Hub,
        secret: bytes | Keyring,
        *,
        limits: Limits = DEFAULT_LIMITS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        if not (close_timeout > 0 and handshake_timeout > 0):
            raise ValueError(
                f"close_timeout and handshake_timeout must be > 0 seconds, "
                f"got {close_timeout!r} and {handshake_timeout!r}"
            )
        self.hub = hub
        self.limits = limits
        self.max_connections = max_connections
        self.close_timeout = close_timeout
        self.handshake_timeout = handshake_timeout
        self.rate_limiter = RateLimiter() if rate_limiter is None else rate_limiter
        self._secret = secret
        self._connections: set[Connection] = set()
        self._dirty: list[Connection] = []
        self._flush_wanted = trio.Event()
        self._deadlines: list[tuple[float, int, Connection]] = []
        self._sequence = itertools.count()
        self._timer = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._peak = 0
        self._accepted = 0
        self._refused = 0
        self._handshake_failures = 0
        self._draining = 0
        #: Socket writes since start (the connections count them).
        self.writes = 0
        self._rpc: Dispatcher[Any] | None = None
        self._rpc_context: Callable[[str], Any] = str
        self._gate: Gate | None = None
        self._presence: Presence | None = None
        self._calls = 0

    def attach_rpc(self, dispatcher: Dispatcher[Any], context: Callable[[str], Any]) -> None:
        """Serve ``dispatcher``'s methods on ``/ws`` too (JSON-RPC for services and users).

        Args:
            dispatcher: the methods of ``POST /rpc``; a session checks who may call
                each (:meth:`protocols.jsonrpc.Method.permits`).
            context: builds a handler's context from the client's address.
        """
        self._rpc = dispatcher
        self._rpc_context = context

    def attach_gate(self, gate: Gate) -> None:
        """Let ``gate`` (the graph) rule on ``circle:``, ``following:`` and blocked users'
        ``post:`` subscriptions of the sessions opened from now on."""
        self._gate = gate

    def attach_presence(self, presence: Presence) -> None:
        """Serve ``subscribe {presence: true}``, ``presence`` and ``presence_stats`` with
        ``presence`` (the tracker) to the sessions opened from now on."""
        self._presence = presence

    def run_calls(self, connection: Connection, pending: PendingCalls) -> None:
        """Run the calls of one client frame in a task; the reply is queued when they end."""
        if self._nursery is None:
            connection.calls_done(len(pending.calls))
            return
        self._nursery.start_soon(self._run_calls, connection, pending)

    async def _run_calls(self, connection: Connection, pending: PendingCalls) -> None:
        calls = pending.calls
        replies: dict[int, dict[str, Any] | None] = {}
        verdicts: dict[int, str | Exception | None] = {}
        reads: dict[int, Mapping[str, int]] = {}
        try:
            if len(calls) == 1:
                await self._run_one(connection, *calls[0], replies, verdicts, reads)
            else:
                async with trio.open_nursery() as nursery:
                    for index, call in calls:
                        nursery.start_soon(
                            self._run_one, connection, index, call, replies, verdicts, reads
                        )
            connection.session.complete(pending, replies, verdicts, reads)
        finally:
            self._calls += len(calls)
            connection.calls_done(len(calls))

    async def _run_one(
        self,
        connection: Connection,
        index: int,
        call: Call | Deferred,
        replies: dict[int, dict[str, Any] | None],
        verdicts: dict[int, str | Exception | None],
        reads: dict[int, Mapping[str, int]],
    ) -> None:
        """Run one call, or make one :class:`Deferred`'s checks: the gate's first, then, if
        it allowed, the presence load or read."""
        if isinstance(call, Call):
            assert self._rpc is not None  # a session makes Calls only with the dispatcher
            replies[index] = await self._rpc.reply(
                call.method, call.params, call.request, connection.context
            )
            return
        user = connection.session.user
        assert user is not None  # a session defers only once authenticated
        if call.gate:
            assert self._gate is not None  # a session asks for the gate only with one
            try:
                verdict = verdicts[index] = await self._gate.check(user, call.channel)
            except GraphUnavailable as outage:
                verdicts[index] = outage
                return
            except Exception:  # a bug in the gate must not end the gateway's other connections
                log.exception("subscription check failed", channel=call.channel)
                verdicts[index] = GraphUnavailable("the subscription could not be checked")
                return
            if verdict is not None:
                return
        if call.presence is None:
            return
        presence = self._presence
        assert presence is not None  # a session asks for presence only with one
        if call.presence == "load":
            await presence.load(call.channel)
            return
        try:
            reads[index] = await presence.read(call.channel)
        except PresenceUnavailable as outage:
            verdicts[index] = outage

    # -- the server's side of subscriptions ---------------------------------------------

    def subscriptions_of(self, user: str) -> set[str]:
        """The channels ``user``'s sessions on this process are subscribed to.

        O(connections): for permission changes, which are rare (not a hot path).
        """
        channels: set[str] = set()
        for connection in self._connections:
            session = connection.session
            if session.user == user:
                channels |= session.subscriptions
        return channels

    def revoke(self, user: str, channels: Collection[str], reason: str) -> int:
        """End ``user``'s subscriptions to ``channels`` on this process, each with an
        ``unsubscribed {channel, reason}`` push; how many ended. O(connections)."""
        ended = 0
        for connection in list(self._connections):
            session = connection.session
            if session.user != user:
                continue
            for channel in channels:
                ended += session.revoke(channel, reason)
        return ended

    # -- the gateway's own tasks ------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[WebSocketGateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the flusher, the timer and the drains until cancelled; then end every connection."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._flush_wanted = trio.Event()
                nursery.start_soon(self._flusher)
                nursery.start_soon(self._time)
                task_status.started(self)
        finally:
            self._nursery = None
            for connection in list(self._connections):
                connection.abort()

    async def _flusher(self) -> None:
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted = trio.Event()
            dirty, self._dirty = self._dirty, []
            for connection in dirty:
                connection.flush()

    async def _time(self) -> None:
        heap = self._deadlines
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._timer:
                await trio.sleep_forever()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                at, _, connection = heapq.heappop(heap)
                if connection.dead or at != connection.scheduled:
                    continue  # ended, or a later entry replaced this one
                connection.scheduled = math.inf
                connection.on_deadline()
                self.schedule(connection)

    # -- called by the connections ------------------------------------------------------

    def mark_dirty(self, connection: Connection) -> None:
        """Write ``connection`` at the flusher's next pass (after the current batch)."""
        self._dirty.append(connection)
        self._flush_wanted.set()

    def schedule(self, connection: Connection) -> None:
        """Make sure the timer wakes by ``connection``'s deadline (one heap entry each)."""
        if connection.dead:
            return
        at = connection.deadline()
        if at < connection.scheduled:
            connection.scheduled = at
            heapq.heappush(self._deadlines, (at, next(self._sequence), connection))
            if at < self._timer.deadline:
                self._timer.deadline = at
        elif len(self._deadlines) > 4 * len(self._connections) + 64:
            self._compact()

    def drain(self, connection: Connection) -> None:
        """Start a task that writes ``connection``'s outbox as its socket takes it."""
        if self._nursery is None:
            connection.abort()
            return
        self._nursery.start_soon(self._drain, connection)

    async def _drain(self, connection: Connection) -> None:
        self._draining += 1
        try:
            await connection.drain()
        finally:
            self._draining -= 1

    def _compact(self) -> None:
        """Drop the heap entries of ended connections (they are skipped anyway)."""
        self._deadlines = [e for e in self._deadlines if not e[2].dead and e[0] == e[2].scheduled]
        heapq.heapify(self._deadlines)

    # -- connections ------------------------------------------------------------------

    async def serve(self, sock: socket.socket, head: bytes = b"") -> None:
        """Serve one connection whose first request is ``GET /ws …``, until it ends.

        Args:
            sock: the accepted connection, non-blocking; the edge owns it from
                now on and always closes it.
            head: what the listener already read of it (the request's first bytes).
        """
        try:
            await self._serve(sock, head)
        finally:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _serve(self, sock: socket.socket, head: bytes) -> None:
        handshake = H11Handshake(ConnectionType.SERVER)
        request = await self._receive_request(sock, handshake, head)
        if request is None:
            self._handshake_failures += 1
            return
        accept = handshake.send(AcceptConnection())
        parser = handshake.connection
        assert parser is not None  # set by the accept
        if self._nursery is None or len(self._connections) >= self.max_connections:
            self._refused += 1
            goodbye = parser.send(CloseConnection(CLOSE_TRY_AGAIN_LATER, "try again later"))
            await _send_all(sock, accept + goodbye)
            return
        await _send_all(sock, accept)
        connection = Connection(sock, parser, self)
        if self._rpc is not None:
            connection.context = self._rpc_context(_peer(sock))
        query = parse_qs(urlsplit(request.target).query)
        tokens = query.get("token")
        connection.session = Session(
            self.hub,
            self._secret,
            time.time(),
            token=tokens[0] if tokens else None,
            limits=self.limits,
            on_ready=connection.mark_dirty,
            rpc=self._rpc,
            gate=self._gate,
            presence=self._presence,
            rate_limiter=self.rate_limiter,
        )
        self._connections.add(connection)
        self._accepted += 1
        self._peak = max(self._peak, len(self._connections))
        try:
            await connection.read_until_closed()
        finally:
            connection.dead = True
            self._connections.discard(connection)
            connection.session.close()

    async def _receive_request(
        self, sock: socket.socket, handshake: H11Handshake, head: bytes = b""
    ) -> Request | None:
        """The upgrade request, or ``None`` after answering a bad one (or timing out).

        The request is usually all in ``head`` already (the listener read it): then no
        timeout scope is set up. Otherwise the rest must come within ``handshake_timeout``.
        """
        outcome = await self._feed(sock, handshake, head or None)
        if not isinstance(outcome, _More):
            return outcome
        with trio.move_on_after(self.handshake_timeout):
            while isinstance(outcome := await self._feed(sock, handshake), _More):
                await trio.lowlevel.wait_readable(sock)
            return outcome
        return None

    async def _feed(
        self, sock: socket.socket, handshake: H11Handshake, data: bytes | None = None
    ) -> Request | _More | None:
        """Read what is there (or take ``data``, read already) into ``handshake``: the request,
        ``None`` (refused, or the client left), or :data:`_MORE` (incomplete: wait for the
        socket)."""
        if data is None:
            try:
                data = receive(sock)
            except BlockingIOError:
                return _MORE
            except OSError:
                return None
        try:
            handshake.receive_data(data or None)
            for event in handshake.events():
                if isinstance(event, Request):
                    return event
        except RemoteProtocolError as error:
            hint = error.event_hint
            if isinstance(hint, RejectConnection):
                await _send_all(sock, handshake.send(hint))
            return None
        return _MORE if data else None

    def going_away(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down"
    ) -> None:
        """Close every connection with ``code`` (1001 "server shutting down" by default;
        1012 "service restart" when the listener restarts), so clients read a close
        instead of a dropped connection.

        What each connection has queued is written first, as far as its socket takes it
        without waiting (the reply to the call that stopped the server, say); the rest is
        dropped. One non-blocking write per connection.
        """
        for connection in list(self._connections):
            connection.flush()
            connection.session.going_away(code, reason)

    def statistics(self) -> GatewayStatistics:
        """A snapshot of the gateway's figures."""
        return GatewayStatistics(
            open=len(self._connections),
            peak_open=self._peak,
            accepted=self._accepted,
            refused=self._refused,
            max_connections=self.max_connections,
            writes=self.writes,
            draining=self._draining,
            handshake_failures=self._handshake_failures,
            calls=self._calls,
        )


class _More:
    """The handshake needs more bytes (:data:`_MORE`)."""


_MORE: Final = _More()


async def _send_all(sock: socket.socket, data: bytes) -> None:
    """Write ``data`` (a handshake answer: small), waiting for the socket when it is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
        except OSError:
            return


def _peer(sock: socket.socket) -> str:
    """The client's address, ``""`` when the socket cannot say."""
    try:
        address = sock.getpeername()
    except OSError:
        return ""
    return str(address[0]) if isinstance(address, tuple) else str(address)
