"""A tail of realtime channels over the WebSocket (``GET /ws``), reconnecting with ``since``.

Tail::

    result = await tail("http://127.0.0.1:8080", token, ["post:1"], print, limit=10)

:func:`tail` subscribes to each channel and calls ``on_pub({channel, offset,
data})`` for every publication, oldest first, at most once per offset. It
keeps the session alive with a JSON-RPC ``ping`` every ``ping_interval``
seconds (the server closes a session it heard nothing from for 60 s, and
only client frames count). When the server closes the connection with a
code a retry may cure (1001 idle or going away, 1011, 1012, 1013 try again
later, 4008 slow consumer) or the connection drops (1006, no answer to a
ping within ``ping_timeout``), it reconnects after a backoff and subscribes
again with ``since`` = the last position seen on each channel: the server
then sends what was missed (``recovered: true``, delivered in order before
anything newer) or says it cannot (``recovered: false``: its history moved
on, or its epoch changed; the client should reload from the application).
Each (re)subscription is reported to ``on_status`` as :class:`Subscribed`.

Close codes: RFC 6455 section 7.4 and the IANA registry; 4000-4999 are
Starling's (:mod:`protocols.websocket.codes`, one definition for both sides).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec
import structlog
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from client.errors import AuthError, Closed, HttpError, ProtocolError, RpcError, Unreachable
from client.http import decoder, encoder, request
from protocols.websocket.codes import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_SERVICE_RESTART,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHENTICATED,
)
from protocols.websocket.wire import GapNotice, Pub, SubscribeResult
from supervisor.backoff import Backoff

log = structlog.get_logger(__name__)

SECONDS: Final = 1.0
MiB: Final = 1024 * 1024


RETRY_CODES: Final = frozenset(
    {
        CLOSE_GOING_AWAY,
        CLOSE_ABNORMAL,
        CLOSE_INTERNAL_ERROR,
        CLOSE_SERVICE_RESTART,
        CLOSE_TRY_AGAIN_LATER,
        CLOSE_SLOW_CONSUMER,
    }
)
"""Close codes after which :func:`tail` reconnects (when ``reconnect=True``)."""

DEFAULT_BACKOFF: Final = Backoff(initial=0.5 * SECONDS, factor=2.0, maximum=10 * SECONDS)
"""Reconnect delays: 0.5 s, 1 s, 2 s … up to 10 s, less up to 20 % of jitter."""
DEFAULT_PING_INTERVAL: Final = 20 * SECONDS
"""Well under the server's 60 s idle timeout (``protocols.websocket.session.Limits``)."""
DEFAULT_PING_TIMEOUT: Final = 10 * SECONDS
DEFAULT_CONNECT_TIMEOUT: Final = 10 * SECONDS
MAX_FRAME_BYTES: Final = 16 * MiB
"""Largest server frame accepted: a full recovery (100 × 64 KiB) or 64 coalesced pubs fit."""
_CLOSE_TIMEOUT: Final = 2 * SECONDS


class Position(NamedTuple):
    """The last publication seen on a channel: what :func:`tail` resubscribes ``since``.

    Attributes:
        offset: its offset (0: nothing yet).
        epoch: the channel's epoch then.
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A channel was (re)subscribed.

    Attributes:
        channel: the channel.
        position: where it stands now, after any recovered publications.
        recovered: ``None`` when subscribed without ``since``; else whether the
            server gave every publication missed since it (``False``: some may be lost).
        missed: recovered publications, given to ``on_pub`` right after this status
            (those already seen left out).
        reconnects: reconnections so far (0 on the first connection).
    """

    channel: str
    position: Position
    recovered: bool | None
    missed: int
    reconnects: int


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The connection ended, or could not be made; the next attempt is in ``delay`` seconds.

    Attributes:
        code: the close code (1006: dropped without a close frame), or ``None``
            when the connection could not be made.
        reason: the close reason, or what failed.
        delay: seconds until the next attempt.
        attempt: consecutive failed attempts so far (1 after the first).
    """

    code: int | None
    reason: str
    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class Gap:
    """The server said publications ``first..last`` of ``channel`` will never arrive
    (lost on the way to it: a ``gap`` notice); the subscription goes on after ``last``.

    Attributes:
        channel: the channel.
        first, last: the offsets lost, inclusive.
    """

    channel: str
    first: int
    last: int


TailStatus = Subscribed | Reconnecting | Gap


@dataclass(frozen=True, slots=True)
class TailResult:
    """What a finished :func:`tail` saw.

    Attributes:
        received: publications given to ``on_pub``.
        duplicates: publications left out because their offset was already seen.
        reconnects: successful reconnections.
        positions: the last position seen on each channel (to tail again ``since``).
    """

    received: int
    duplicates: int
    reconnects: int
    positions: dict[str, Position] = field(default_factory=dict)


def websocket_url(url: str) -> str:
    """The ``ws://``/``wss://`` URL of ``/ws`` for a server's base URL (``http://host:port``)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"expected an http://, https://, ws:// or wss:// URL, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class _Done(Exception):
    """The tail reached its limit (raised inside the read loop, caught by :func:`tail`)."""


class _Dropped(Exception):
    """The connection ended without a usable close: no reply to a ping, or a broken socket."""


async def tail(
    url: str,
    token: str | Callable[[], str],
    channels: Sequence[str],
    on_pub: Callable[[dict[str, Any]], None],
    *,
    since: Mapping[str, Position] | None = None,
    limit: int | None = None,
    reconnect: bool = True,
    max_attempts: int | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    ping_interval: float = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    on_status: Callable[[TailStatus], None] | None = None,
) -> TailResult:
    """Follow ``channels`` over ``GET /ws`` and give each publication to ``on_pub``.

    Runs until ``limit`` publications were delivered, forever without one
    (cancel it to stop: it closes the connection with 1000). See the module
    docstring for reconnection and recovery.

    Args:
        url: the server's base URL (``http://127.0.0.1:8080``) or its ``ws://…/ws`` URL.
        token: a token (:func:`auth.tokens.issue_token`), or a function returning
            a fresh one, called for each connection: then a session closed at its
            token's expiry (4003) reconnects with a new token instead of failing.
        channels: ``post:<id>`` / ``user:<id>`` names, at most the server's 100.
        on_pub: called with ``{"channel", "offset", "data"}`` for every publication, in
            offset order per channel, never twice for one offset; ``data`` is the
            published object as the server rendered it (with ``author`` when it names a
            ``user``).
        since: per channel, the position to resume after on the first connection.
        limit: stop after this many publications (recovered ones included).
        reconnect: reconnect after a close a retry may cure (:data:`RETRY_CODES`).
        max_attempts: consecutive failed reconnection attempts before giving up
            (:class:`Unreachable`); ``None``: never give up. The first connection is
            never retried.
        backoff: delays between attempts, in seconds.
        ping_interval: seconds between the client's ``ping`` requests.
        ping_timeout: seconds without any frame after a ``ping`` before the connection
            is taken for dead (and reconnected).
        connect_timeout: seconds to connect and complete the handshake.
        on_status: told of each (re)subscription and each reconnection; default: logged.

    Returns:
        What was seen, once ``limit`` publications were delivered.

    Raises:
        Unreachable: the first connection failed, or ``max_attempts`` reconnections did.
        HttpError: the server refused the WebSocket handshake (e.g. 404: not a Starling).
        AuthError: the token is invalid (4001) or expired (4003, with a fixed token).
        Closed: any other close, without ``reconnect`` or with a code no retry cures.
        RpcError: a ``subscribe`` was refused (-32602 malformed channel, -32003 another
            user's channel, -32005 too many subscriptions).
        ValueError: no channels, ``limit`` < 1, or ``url`` is not an http(s)/ws(s) URL.
    """
    if not channels:
        raise ValueError("tail needs at least one channel")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    if not (ping_interval > 0 and ping_timeout > 0 and connect_timeout > 0):
        raise ValueError("ping_interval, ping_timeout and connect_timeout must be > 0 seconds")
    follower = _Tail(
        websocket_url(url),
        token,
        list(dict.fromkeys(channels)),
        on_pub,
        since=dict(since or {}),
        limit=limit,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        on_status=on_status or _log_status,
    )
    attempt = 0
    while True:
        code: int | None
        try:
            return await follower.connect(connect_timeout)
        except ConnectionRejected as rejected:
            error = HttpError(rejected.status_code, _body_text(rejected.body), url=follower.url)
            if rejected.status_code < 500 or not follower.ever_began:
                raise error from None
            code, reason = None, str(error)  # a proxy's 502/503 while the server restarts
        except HandshakeError as failed:
            if follower.began:  # closing a connection that stopped answering timed out
                code, reason = CLOSE_ABNORMAL, "connection lost"
            elif not follower.ever_began:
                raise Unreachable(follower.url, _why(failed)) from None
            else:
                code, reason = None, _why(failed)
        except ConnectionClosed as closed:
            code, reason = _close_of(closed)
            expired = code == CLOSE_TOKEN_EXPIRED
            if code == CLOSE_UNAUTHENTICATED or (expired and not callable(token)):
                raise AuthError(code, reason) from None
            if code not in RETRY_CODES and not expired:
                raise Closed(code, reason) from None
        except _Dropped as dropped:
            code, reason = CLOSE_ABNORMAL, str(dropped)
        if not reconnect:
            if code is None:
                raise Unreachable(follower.url, reason)
            raise Closed(code, reason)
        if follower.subscribed_all:
            attempt = 0  # that connection worked: start the backoff over
        attempt += 1
        if max_attempts is not None and attempt > max_attempts:
            raise Unreachable(follower.url, f"gave up after {max_attempts} attempts: {reason}")
        delay = backoff.delay(attempt)
        follower.on_status(Reconnecting(code, reason, delay, attempt))
        await trio.sleep(delay)


class _Tail:
    """What :func:`tail` keeps across connections, and the work of one connection."""

    def __init__(
        self,
        url: str,
        token: str | Callable[[], str],
        channels: list[str],
        on_pub: Callable[[dict[str, Any]], None],
        *,
        since: dict[str, Position],
        limit: int | None,
        ping_interval: float,
        ping_timeout: float,
        on_status: Callable[[TailStatus], None],
    ) -> None:
        self.url = url
        self.on_status = on_status
        self._token = token
        self._channels = channels
        self._on_pub = on_pub
        self._positions = since
        self._limit = limit
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ids = itertools.count(1)
        self._received = 0
        self._duplicates = 0
        self._reconnects = 0
        #: The current connection's handshake succeeded; one ever did.
        self.began = self.ever_began = False
        #: Every channel of the current connection was subscribed.
        self.subscribed_all = False
        #: The current connection's pending subscribes: request id → channel.
        self._pending: dict[int, str] = {}

    async def connect(self, connect_timeout: float) -> TailResult:
        """One connection: subscribe, then read until the limit; raises how else it ended."""
        token = self._token() if callable(self._token) else self._token
        self.began = self.subscribed_all = False
        self._pending = {}
        async with open_websocket_url(
            f"{self.url}?token={quote(token, safe='')}",
            max_message_size=MAX_FRAME_BYTES,
            connect_timeout=connect_timeout,
            disconnect_timeout=_CLOSE_TIMEOUT,
        ) as ws:
            if self.ever_began:
                self._reconnects += 1
            self.began = self.ever_began = True
            with contextlib.suppress(_Done):
                await self._serve(ws)
        return TailResult(self._received, self._duplicates, self._reconnects, dict(self._positions))

    async def _serve(self, ws: WebSocketConnection) -> None:
        """Subscribe every channel, then read and ping until :class:`_Done` or the end."""
        for channel in self._channels:
            params: dict[str, Any] = {"channel": channel}
            if (position := self._positions.get(channel)) is not None:
                params["since"] = {"offset": position.offset, "epoch": position.epoch}
            id = next(self._ids)
            self._pending[id] = channel
            await ws.send_message(encoder.encode(request(id, "subscribe", params)).decode())
        next_ping = trio.current_time() + self._ping_interval
        dead_at = math.inf  # no frame at all since the last ping by then: a dead connection
        while True:
            with trio.move_on_at(min(next_ping, dead_at)) as waiting:
                message = await ws.get_message()
            if not waiting.cancelled_caught:
                dead_at = math.inf
                self._receive(message)
                continue
            now = trio.current_time()
            if now >= dead_at:
                raise _Dropped(f"no reply to a ping within {self._ping_timeout} s")
            ping = request(next(self._ids), "ping", None)
            await ws.send_message(encoder.encode(ping).decode())
            next_ping = now + self._ping_interval
            if dead_at == math.inf:  # counted from the first ping nothing answered
                dead_at = now + self._ping_timeout

    def _receive(self, message: str | bytes) -> None:
        try:
            frame = decoder.decode(message)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"the server sent a frame that is not JSON: {exc}") from None
        for item in frame if isinstance(frame, list) else [frame]:
            if not isinstance(item, dict):
                raise ProtocolError(f"unexpected frame item: {item!r:.200}")
            if item.get("method") == "pub":
                self._publication(item.get("params"))
            elif item.get("method") == "gap":
                self._gap(item.get("params"))
            elif "id" in item:
                self._reply(item)
            # Other notifications: none is defined; a newer server may send some.

    def _reply(self, reply: dict[str, Any]) -> None:
        id = reply["id"]
        channel = self._pending.pop(id, None) if isinstance(id, int) else None
        if "error" in reply:
            what = f"subscribe {channel}" if channel is not None else "request"
            raise RpcError.from_object(reply["error"], what=what)
        if channel is None:
            return  # a ping's {}
        try:
            result = msgspec.convert(reply.get("result"), SubscribeResult[Any])
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"subscribe {channel}: malformed result: {exc}") from None
        previous = self._positions.get(channel)
        recovered = None if previous is None else bool(result.recovered)
        publications = result.publications if isinstance(result.publications, list) else []
        missed = [p for p in publications if previous is None or p.offset > previous.offset]
        if not self._pending:
            self.subscribed_all = True
        position = Position(result.offset, result.epoch)
        self.on_status(Subscribed(channel, position, recovered, len(missed), self._reconnects))
        for publication in missed:
            self._deliver(channel, publication.offset, publication.data)
        # Recovered: the publications reach the reply's offset. Not: resume from it.
        self._positions[channel] = position

    def _publication(self, params: Any) -> None:
        try:
            pub = msgspec.convert(params, Pub[Any])
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"malformed pub: {exc}") from None
        if pub.channel not in self._positions:
            raise ProtocolError(f"a pub on a channel not subscribed: {pub.channel!r:.80}")
        self._deliver(pub.channel, pub.offset, pub.data)

    def _gap(self, params: Any) -> None:
        try:
            gap = msgspec.convert(params, GapNotice)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"malformed gap: {exc}") from None
        position = self._positions.get(gap.channel)
        if position is None:
            raise ProtocolError(f"a gap on a channel not subscribed: {gap.channel!r:.80}")
        if gap.last > position.offset:
            self._positions[gap.channel] = Position(gap.last, gap.epoch)
            self.on_status(Gap(gap.channel, gap.first, gap.last))

    def _deliver(self, channel: str, offset: int, data: Any) -> bool:
        """Give one publication to ``on_pub`` unless already seen; :class:`_Done` at the limit."""
        position = self._positions[channel]
        if offset <= position.offset:
            self._duplicates += 1
            return False
        self._positions[channel] = Position(offset, position.epoch)
        self._on_pub({"channel": channel, "offset": offset, "data": data})
        self._received += 1
        if self._limit is not None and self._received >= self._limit:
            raise _Done
        return True


def _close_of(closed: ConnectionClosed) -> tuple[int, str]:
    reason = closed.reason
    if reason is None:
        return CLOSE_ABNORMAL, "connection lost"
    return int(reason.code), reason.reason or reason.name.lower().replace("_", " ")


def _why(error: HandshakeError) -> str:
    """What failed under a handshake error: the innermost OS error's words if any."""
    cause: BaseException | None = error.__cause__ or error
    described = str(cause) or type(cause).__name__
    while cause is not None:
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
            continue
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__
    return described


def _body_text(body: bytes | None) -> str:
    return " ".join((body or b"").decode("utf-8", "replace").split())[:200]


def _log_status(status: TailStatus) -> None:
    match status:
        case Subscribed():
            log.info(
                "subscribed",
                channel=status.channel,
                offset=status.position.offset,
                epoch=status.position.epoch,
                recovered=status.recovered,
                missed=status.missed,
            )
        case Reconnecting():
            log.warning(
                "reconnecting",
                code=status.code,
                reason=status.reason,
                delay=round(status.delay, 2),
                attempt=status.attempt,
            )
