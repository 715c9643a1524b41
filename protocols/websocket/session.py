"""The WebSocket client protocol, sans I/O: one :class:`Session` per connection.

The session is the whole protocol of ``GET /ws`` without the socket: it reads
the client's text frames, answers them, queues the publications the hub
offers it, and says which frame to write next and when to close. It never
blocks, starts no task and reads no clock: every time is a ``now`` float
passed in, in seconds since the epoch (``time.time()``, the clock of a
token's ``exp``). A trio adapter around it is a reader, a writer and a timer
(sketch at the end). The same split as hypercorn's protocol classes and
wsproto: protocol logic here, I/O at the edge.

Wire: JSON-RPC 2.0 both ways, one UTF-8 JSON text per frame (spec
jsonrpc.org/specification; batches as in its section 6).

Client requests::

    connect      {token}                       → {user, expires_at}
    subscribe    {channel, since?, presence?}  → {channel, offset, epoch, recovered?, publications?}
    unsubscribe  {channel}                     → {}
    history      {channel, since?, limit?}     → {publications, offset, epoch}
    presence     {channel}                     → {users: [{user, connections}], total}
    presence_stats {channel}                   → {users, connections}
    ping         {}                            → {}

    since = {offset, epoch}; publications = [{offset, data}], oldest first;
    limit = 1..100, default 100 (a channel keeps its last 100 publications,
    actors.realtime.history.DEFAULT_SIZE)

- Until a token authenticated the session (``?token=`` given to the
  constructor, or ``connect``), only ``connect`` and ``ping`` are served.
  ``connect`` on an authenticated session refreshes it with a newer token of
  the same user (the new ``exp`` counts).
- ``subscribe`` with ``since`` (the offset and epoch of the last publication
  the client saw) recovers what it missed: ``recovered: true`` and exactly
  the missed publications, or ``recovered: false`` and none (the client then
  reloads from the application). Centrifugo's recovery model, see
  :mod:`actors.realtime.history`. Its reply always precedes the channel's
  first ``pub``. Subscribing again to a subscribed channel changes nothing:
  the reply gives the offset of the newest publication of that channel
  queued for the socket, all of which precede the reply on the wire; with
  ``since`` it recovers the publications after ``since`` up to that offset
  (the client asked for them again), and the ``pub`` frames after the reply
  continue from there: nothing missed, nothing pushed twice.
- ``history`` with ``since`` gives the first ``limit`` publications after
  it (page forward from the last offset received); without, the newest
  ``limit``. Channel permissions are those of ``subscribe``; being
  subscribed is not needed.
- ``unsubscribe`` of a channel not subscribed is ``{}`` too. Publications of
  the channel queued before the request still go out, ahead of its reply;
  none after it.
- Params by name (an object) or by position (an array); unknown fields are
  refused. Requests without ``id`` are notifications: served, never answered.
- Graph-ruled channels (:mod:`actors.realtime.channels`): ``subscribe`` and
  ``history`` of a ``circle:<author>`` channel (its author's followers only), of
  ``following:<me>`` (the server starts fanning activities out to it) and of
  a ``post:`` channel when the user was blocked by someone wait for the
  :class:`Gate` (a graph read) before they run; the reply still precedes the
  channel's first ``pub``. When the graph withdraws a permission later (an
  unfollow, a block), the server ends the subscription with an
  ``unsubscribed`` push (:meth:`Session.revoke`).
- Presence (:class:`Presence`, :mod:`actors.realtime.presence`): ``subscribe``
  with ``presence: true`` counts the connection in the channel's presence and
  sends the session the channel's ``join {channel, user, connections}`` and
  ``leave {channel, user, connections: 0}`` pushes: a user joins with their
  first connection there (on any process) and leaves with their last, so
  several tabs make one join and one leave; count changes between are not
  pushed. The subscriber's own join comes after its ``subscribe`` reply; it
  never gets its own leave. The presence ends with the subscription
  (``unsubscribe``, revocation, close). Subscribing again to a subscribed
  channel changes nothing, presence included. On a channel not yet known to
  this process, the subscription waits for a read of the other processes'
  presence first (a new subscriber is not told as joins of who was there).
- ``presence`` lists the users present (user id order, at most 1,000, with
  ``total``), ``presence_stats`` counts them; their permissions are those of
  ``subscribe`` (the :class:`Gate` for ``circle:``). They wait for a presence
  read; a session that is a presence subscriber of the channel gets the state
  after every ``join``/``leave`` queued before the reply.

Server pushes: ``{"jsonrpc":"2.0","method":"pub","params":{"channel","offset","data"}}``,
one text frame per publication; ``gap {channel, first, last, epoch}`` (publications
lost before they reached this process); ``unsubscribed {channel, reason}`` (the
server ended a subscription: ``"unfollowed"``, ``"blocked"``); ``join`` and ``leave``
``{channel, user, connections}`` (presence, above). A ``pub``'s
``data`` is a JSON object rendered once by the transformer; the publisher
builds the whole frame once (:func:`protocols.websocket.frames.pub_frame`) and
offers the same bytes to every subscriber, so the session queues them as they are. Frames waiting
together leave in one write (several frames, one system call).

Error replies (``error.code``; ``data`` is always an object)::

    -32700  Parse error             the frame is not JSON; the session stays open
    -32600  Invalid Request         not a request object, empty batch, batch too long
    -32601  Method not found        data.method
    -32602  Invalid params          missing/ill-typed/unknown field, malformed channel
                                    name, limit outside 1..100; data.detail
    -32003  unauthorized            connect: token expired or invalid; any method but
                                    connect/ping before authentication; data.reason
    -32001  service unavailable     the graph could not check a graph-ruled channel, or
                                    the presence store could not be read
                                    (data.channel, data.detail)
    -32003  forbidden               another user's ``user:``/``following:`` channel
                                    (data.channel), a ``circle:`` of someone the user
                                    does not follow or who blocked them (data.reason), or a
                                    refresh token naming another user
    -32005  too many subscriptions  data.limit
    -32006  unrecoverable position  history since a position the channel no longer
                                    holds; data = the channel's current {offset, epoch}
    -32011  rate limited            over the connection's or the token's rate
                                    (:mod:`protocols.ratelimit`); data.retry_after_ms;
                                    a notification over it is not run

Close codes (RFC 6455 section 7.4; 4000-4999 are ours)::

    1000  closed                    :meth:`Session.close` (the connection ended)
    1001  idle                      nothing heard for more than idle_timeout
    1001  server shutting down      :meth:`Session.going_away` (the server stops)
    1012  service restart           :meth:`Session.going_away` (the listener restarts)
    1003  binary frames not accepted
    1009  message too big           a text frame over max_frame_bytes
    4001  authentication timeout    no successful auth within auth_timeout
    4001  invalid token             the ``?token=`` is invalid
    4003  token expired             now >= the token's exp (``?token=``, connect or refresh)
    4008  slow consumer             the outbox would exceed max_outbox_bytes

Outbox: the session's output is wire bytes (whole WebSocket frames), in the
order they were produced: replies, pushes, and the control frames the edge
queues (pong, close). The edge asks :meth:`Session.data_to_send`, writes what
the socket takes and reports it with :meth:`Session.sent`, so a partial write
resumes exactly where it stopped. The outbox is bounded in bytes: what would
overflow it is refused, and the session closes with 4008: the client
reconnects and recovers with ``since``. It never blocks the hub and never
drops a publication silently. Once a close is decided, the frames not yet
begun are dropped (a frame already partly written is finished, so the close
frame that follows stays readable) and only control frames are queued. Keep
``max_outbox_bytes`` above the largest reply (a full ``history``: 100 × the
largest payload).

Adapter sketch (the owned-socket edge, :mod:`protocols.websocket.edge`)::

    session = Session(hub, secret, time.time(), token=token, on_ready=mark_dirty)
    reader:  for each client text message: session.receive_text(m, time.time())
             (binary: receive_bytes; ping/pong: touch, and queue_control(pong))
    flush:   n = sock.sendmsg(session.data_to_send()); session.sent(n)
             (the rest waits for the socket to be writable)
    timer:   at session.deadline (wall clock), check close_reason
    close:   once close_reason is decided, queue_control(close frame), flush, wait
             for the client's close, close the socket
    finally: session.close()                                # leaves every channel in the hub
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, Protocol

import msgspec

from actors.realtime import Position, Publication, Recovery, parse_channel
from actors.realtime.channels import Access, subscribe_access
from auth.tokens import Claims, Keyring, TokenExpired, TokenInvalid, verify_token
from protocols.jsonrpc import (
    FORBIDDEN,
    MAX_BATCH,
    METHOD_NOT_FOUND,
    SERVICE_UNAVAILABLE,
    TOO_MANY_SUBSCRIPTIONS,
    UNAUTHORIZED,
    UNRECOVERABLE_POSITION,
    JsonRpcError,
    Malformed,
    Method,
    MethodTable,
    NoParams,
    Request,
    check_request,
    decode_payload,
    decode_request,
    encode,
    error_reply,
    invalid_params,
    invalid_request,
    rate_limited,
    result_reply,
)
from protocols.ratelimit import RateLimiter, TokenBucket, retry_after_ms
from protocols.websocket.codes import (
    CLOSE_IDLE,
    CLOSE_NORMAL,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNSUPPORTED_DATA,
)
from protocols.websocket.frames import text_frame, unsubscribed_frame
from protocols.websocket.wire import (
    MAX_PRESENCE_USERS,
    ConnectParams,
    ConnectResult,
    Empty,
    HistoryParams,
    HistoryResult,
    PresenceParams,
    PresenceResult,
    PresenceStatsResult,
    PresenceUser,
    PublicationOut,
    Since,
    SubscribeParams,
    SubscribeResult,
    UnsubscribeParams,
)

SECONDS: Final = 1.0
KiB: Final = 1024
MiB: Final = 1024 * KiB


@dataclass(frozen=True, slots=True)
class Limits:
    """A session's tuning knobs; one instance is shared by every session.

    Attributes:
        auth_timeout: seconds a session may stay unauthenticated (close 4001).
        idle_timeout: seconds without a frame or a pong before close 1001.
        max_frame_bytes: largest client text frame, in UTF-8 bytes (close 1009).
        max_outbox_bytes: most bytes of replies and pushes waiting for the socket
            (close 4008).
        max_subscriptions: most channels subscribed at once (error -32005).
        max_batch_requests: most requests in one client batch (error -32600).
        max_calls_in_flight: most calls of the shared dispatcher running at once for
            one connection; the edge stops reading the client's frames at the limit.

    Raises:
        ValueError: a knob is not positive.
    """

    auth_timeout: float = 10 * SECONDS
    idle_timeout: float = 60 * SECONDS
    max_frame_bytes: int = 64 * KiB
    max_outbox_bytes: int = 1 * MiB
    max_subscriptions: int = 100
    max_batch_requests: int = MAX_BATCH
    max_calls_in_flight: int = 64

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"{field.name} must be > 0, got {value!r}")


DEFAULT_LIMITS: Final = Limits()


class Hub(Protocol):
    """What a session needs from the publisher; called synchronously, never awaited.

    Contract: the hub offers a channel's publications to a subscribed session
    (:meth:`Session.offer`) in offset order, each exactly once, and only those
    appended after :meth:`subscribe` returned: appending to the history and
    offering to the subscribers happen in one step, with no checkpoint between.
    ``subscribe`` is idempotent.
    """

    def subscribe(self, session: Session, channel: str, /) -> Position:
        """Start offering ``channel``'s new publications to ``session``; its position now."""

    def unsubscribe(self, session: Session, channel: str, /) -> None:
        """Stop offering ``channel`` to ``session`` (no error if it was not subscribed)."""

    def position(self, channel: str, /) -> Position:
        """The channel's top offset and epoch."""

    def since(self, channel: str, offset: int, epoch: str, /) -> Recovery:
        """What a client that last saw ``offset`` in ``epoch`` missed (``Histories.since``)."""

    def latest(self, channel: str, limit: int, /) -> Sequence[Publication]:
        """The newest ``limit`` publications, oldest first (``Histories.latest``)."""


class Gate(Protocol):
    """The graph's say on subscriptions (``circle:`` followers, blocks, ``following:``).

    :class:`actors.realtime.audience.Audience` is the one Starling uses.
    """

    def needs_check(self, user: str, channel: str, /) -> bool:
        """Whether subscribing ``user`` to ``channel`` (allowed by the channel rules) must
        wait for :meth:`check`; no I/O."""

    async def check(self, user: str, channel: str, /) -> str | None:
        """``None`` if ``user`` may subscribe to ``channel`` now, else the reason refused.

        Raises:
            actors.realtime.audience.GraphUnavailable: the graph cannot tell now.
        """


class Presence(Protocol):
    """Who is on a channel (:class:`actors.realtime.presence.PresenceTracker`); the session
    calls the synchronous methods while it answers, the edge awaits the others.

    Contract: :meth:`enter` and :meth:`exit` are idempotent per (session, channel);
    the tracker pushes ``join``/``leave`` frames through :meth:`Session.notify`
    synchronously, in the order the changes happen, so what :meth:`view` returns is
    what the pushes queued so far told.
    """

    def needs_load(self, channel: str, /) -> bool:
        """Whether a presence subscription to ``channel`` must wait for :meth:`load`."""

    async def load(self, channel: str, /) -> None:
        """Learn ``channel``'s members on the other processes (never raises)."""

    async def read(self, channel: str, /) -> Mapping[str, int]:
        """``channel``'s users → connections, over every process.

        Raises:
            actors.realtime.presence.PresenceUnavailable: the store cannot be read.
        """

    def view(self, channel: str, /) -> Mapping[str, int] | None:
        """``channel``'s users → connections as this process's subscribers were told, or
        ``None`` when it does not track the channel; no I/O."""

    def enter(self, session: Session, channel: str, /) -> None:
        """``session`` subscribed to ``channel`` with presence."""

    def exit(self, session: Session, channel: str, /) -> None:
        """``session``'s presence subscription to ``channel`` ended."""


_EMPTY = Empty()
_OPEN_METHODS = frozenset({"connect", "ping"})
"""What an unauthenticated session may call."""
_GATED = frozenset({"subscribe", "history", "presence", "presence_stats"})
"""The session's methods whose channel the :class:`Gate` may have to check first."""
_PRESENCE_READS = frozenset({"presence", "presence_stats"})
"""The session's methods that wait for a presence read."""

PresenceWork = Literal["load", "read"]
"""What a :class:`Deferred` needs of the :class:`Presence` before it runs: ``"load"``
(``subscribe`` with presence: :meth:`Presence.load`) or ``"read"`` (``presence``,
``presence_stats``: :meth:`Presence.read`)."""


@dataclass(frozen=True, slots=True)
class Call:
    """A request for a method of the shared dispatcher (``POST /rpc``'s), decoded and
    permitted: the edge runs it (:meth:`protocols.jsonrpc.Dispatcher.reply`)."""

    request: Request
    method: Method[Any]
    params: Any


@dataclass(frozen=True, slots=True)
class Deferred:
    """A method that waits for I/O before it runs: the :class:`Gate` (``gate``: the edge
    awaits ``gate.check(user, channel)``), then, if allowed, the :class:`Presence`
    (``presence``: ``load`` or ``read`` of the channel). The edge hands the verdict and
    what was read to :meth:`Session.complete`, which runs the method then, with no
    checkpoint before its reply is queued."""

    request: Request
    channel: str
    params: Any
    handler: Callable[..., msgspec.Struct]
    gate: bool = True
    presence: PresenceWork | None = None


Slot = dict[str, Any] | Call | Deferred | None
"""One request's outcome in a frame: its reply, a call still to run, or nothing (a
notification)."""


@dataclass(frozen=True, slots=True)
class PendingCalls:
    """A frame that holds calls to run: its slots in order, and whether it was a batch.

    The edge runs every :class:`Call` of :attr:`slots` and hands the replies back to
    :meth:`Session.complete`, which queues one reply frame (an array for a batch).
    """

    slots: tuple[Slot, ...]
    batch: bool

    @property
    def calls(self) -> list[tuple[int, Call | Deferred]]:
        """The calls to run and the checks to make, with their slot index."""
        return [
            (index, slot)
            for index, slot in enumerate(self.slots)
            if isinstance(slot, Call | Deferred)
        ]


class _Subscription:
    """One subscribed channel and how far its publications got."""

    __slots__ = ("channel", "delivered", "epoch", "presence")

    def __init__(self, channel: str, position: Position, *, presence: bool = False) -> None:
        self.channel = channel
        self.epoch = position.epoch
        #: Offset of the newest publication queued for the socket, or the subscribe position.
        self.delivered = position.offset
        #: Subscribed with ``presence: true``: in the channel's presence, gets join/leave.
        self.presence = presence


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """A snapshot of one session.

    Attributes:
        user: the authenticated user, or ``None``.
        subscriptions: channels subscribed.
        pending_frames: frames (or the rest of one) waiting for the socket.
        pending_bytes: their size, in bytes.
        peak_pending_bytes: the most bytes that ever waited.
        frames_queued: frames queued since the start (replies, pushes, control).
        pushes_queued: ``pub`` frames queued since the start.
        close: the close decided, ``(code, reason)``, or ``None``.
    """

    user: str | None
    subscriptions: int
    pending_frames: int
    pending_bytes: int
    peak_pending_bytes: int
    frames_queued: int
    pushes_queued: int
    close: tuple[int, str] | None


def _too_big(text: str, limit: int) -> bool:
    """Whether ``text`` is over ``limit`` UTF-8 bytes; encodes only if its length cannot tell."""
    length = len(text)
    if length > limit:
        return True
    if length * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _publications(publications: Sequence[Publication]) -> list[PublicationOut[msgspec.Raw]]:
    return [PublicationOut(p.offset, msgspec.Raw(p.data)) for p in publications]


class Session:
    """One WebSocket connection's protocol state (module docstring: the protocol).

    Not thread-safe; the adapter and the hub call it from one trio thread.

    Args:
        hub: the publisher side (:class:`Hub`), called synchronously.
        secret: the token secret (:func:`auth.tokens.load_secret`), or the secrets of a
            rotation (:func:`auth.tokens.load_keyring`).
        now: the connection time, epoch seconds; starts the auth and idle clocks.
        token: the ``?token=`` of the upgrade request, if any. Expired: the
            session starts closed with 4003; invalid: 4001.
        limits: the tuning knobs.
        on_ready: called when output appears in an empty outbox or a close is
            decided: once until the outbox is empty again (:meth:`sent`
            consumed everything). It must not call back into the session (the
            edge marks the connection for its next flush).
        rpc: the shared dispatcher's methods, served on this connection too.
        gate: the graph's say on graph-ruled channels (:class:`Gate`).
        rate_limiter: the server's buckets (:class:`protocols.ratelimit.RateLimiter`): every
            request takes a token from this connection's bucket and, once authenticated,
            from its user's; over either, -32011. ``None``: no limit.
        presence: who is on a channel (:class:`Presence`); without it, ``presence: true``
            and the presence methods answer -32001.
    """

    __slots__ = (
        "_bucket",
        "_calls",
        "_close",
        "_entering",
        "_expires_at",
        "_frames_queued",
        "_gate",
        "_hub",
        "_last_seen",
        "_limiter",
        "_limits",
        "_on_ready",
        "_opened_at",
        "_operator",
        "_out",
        "_out_sent",
        "_peak_bytes",
        "_pending_bytes",
        "_presence",
        "_privileged",
        "_pushes_queued",
        "_rpc",
        "_secret",
        "_signalled",
        "_subscriptions",
        "_user",
    )

    def __init__(
        self,
        hub: Hub,
        secret: bytes | Keyring,
        now: float,
        *,
        token: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
        on_ready: Callable[[], None] | None = None,
        rpc: MethodTable[Any] | None = None,
        gate: Gate | None = None,
        presence: Presence | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._hub = hub
        self._limiter = rate_limiter
        self._bucket: TokenBucket | None = None
        if rate_limiter is not None:
            self._bucket = rate_limiter.connection_bucket(now, privileged=False)
        self._gate = gate
        self._presence = presence
        #: Channels subscribed with presence whose entering waits for the reply to be queued.
        self._entering: list[str] = []
        self._rpc = rpc
        self._calls: list[PendingCalls] = []
        self._secret = secret
        self._limits = limits
        self._on_ready = on_ready
        self._opened_at = now
        self._last_seen = now
        self._user: str | None = None
        self._expires_at: int | None = None
        self._operator = False
        self._privileged = False
        self._subscriptions: dict[str, _Subscription] = {}
        self._out: deque[bytes] = deque()
        self._out_sent = 0
        self._pending_bytes = 0
        self._peak_bytes = 0
        self._frames_queued = 0
        self._pushes_queued = 0
        self._signalled = False
        self._close: tuple[int, str] | None = None
        if token is not None:
            try:
                claims = verify_token(secret, token, now=now)
            except TokenExpired:
                self._decide_close(CLOSE_TOKEN_EXPIRED, "token expired")
            except TokenInvalid:
                self._decide_close(CLOSE_UNAUTHENTICATED, "invalid token")
            else:
                self._authenticate(claims, now)

    # -- state ------------------------------------------------------------------

    @property
    def user(self) -> str | None:
        """The authenticated user id, or ``None`` before authentication."""
        return self._user

    @property
    def expires_at(self) -> int | None:
        """When the token stops being valid (its ``exp``, epoch seconds), or ``None``."""
        return self._expires_at

    @property
    def subscriptions(self) -> frozenset[str]:
        """The channels subscribed now."""
        return frozenset(self._subscriptions)

    @property
    def limits(self) -> Limits:
        """The session's knobs."""
        return self._limits

    @property
    def closing(self) -> tuple[int, str] | None:
        """The close decided so far, ``(code, reason)``, or ``None`` (time rules not checked)."""
        return self._close

    @property
    def pending_bytes(self) -> int:
        """Bytes of the outbox not yet written to the socket."""
        return self._pending_bytes

    @property
    def deadline(self) -> float:
        """The earliest time (epoch seconds) at which :meth:`close_reason` may close on its own.

        The auth timeout before authentication, the token's expiry after, the
        idle limit always; ``-inf`` once a close is decided. The adapter
        sleeps until then and asks :meth:`close_reason` again (the deadline
        moves as frames arrive).
        """
        if self._close is not None:
            return -math.inf
        limits = self._limits
        idle = math.nextafter(self._last_seen + limits.idle_timeout, math.inf)
        if self._user is None:
            return min(idle, self._opened_at + limits.auth_timeout)
        return idle if self._expires_at is None else min(idle, self._expires_at)

    def close_reason(self, now: float) -> tuple[int, str] | None:
        """Whether to close the connection, and with which code and reason.

        Checks the time rules at ``now`` (auth timeout, token expiry, idle)
        and returns a close decided earlier (slow consumer, frame too big,
        binary frame, invalid ``?token=``). Once it returns a reason, it
        always returns that reason.

        Args:
            now: epoch seconds.

        Returns:
            ``(code, reason)`` (module docstring: the table), or ``None`` to stay open.
        """
        if self._close is None:
            limits = self._limits
            if self._user is None:
                if now >= self._opened_at + limits.auth_timeout:
                    self._decide_close(CLOSE_UNAUTHENTICATED, "authentication timeout")
            elif self._expires_at is not None and now >= self._expires_at:
                self._decide_close(CLOSE_TOKEN_EXPIRED, "token expired")
            if self._close is None and now > self._last_seen + limits.idle_timeout:
                self._decide_close(CLOSE_IDLE, "idle")
        return self._close

    def statistics(self) -> SessionStatistics:
        """A snapshot of the session's figures."""
        return SessionStatistics(
            user=self._user,
            subscriptions=len(self._subscriptions),
            pending_frames=len(self._out),
            pending_bytes=self._pending_bytes,
            peak_pending_bytes=self._peak_bytes,
            frames_queued=self._frames_queued,
            pushes_queued=self._pushes_queued,
            close=self._close,
        )

    # -- input --------------------------------------------------------------------

    def touch(self, now: float) -> None:
        """The peer showed it is alive without a message (a pong): reset the idle clock."""
        self._last_seen = max(self._last_seen, now)

    def receive_text(self, text: str, now: float) -> None:
        """Handle one client text frame: a request, a notification or a batch.

        Replies are queued in the outbox. Malformed input gets an
        error reply; a frame over ``max_frame_bytes`` closes with 1009.
        Ignored once a close is decided.

        Args:
            text: the frame's text.
            now: when it arrived, epoch seconds.
        """
        self._receive_text(text, now)
        if self._entering:
            self._enter_presence()

    def _receive_text(self, text: str, now: float) -> None:
        """:meth:`receive_text`, but for the presence subscriptions to enter."""
        self.touch(now)
        if self.close_reason(now) is not None:
            return
        if _too_big(text, self._limits.max_frame_bytes):
            self._decide_close(CLOSE_TOO_BIG, "message too big")
            return
        try:
            message = decode_payload(text)
        except Malformed as malformed:
            self._queue_reply(encode(malformed.reply))
            return
        if isinstance(message, Request):
            slot = self._answer(message, now)
            if isinstance(slot, Call | Deferred):
                self._calls.append(PendingCalls((slot,), batch=False))
            elif slot is not None:
                self._queue_reply(encode(slot))
            return
        limit = self._limits.max_batch_requests
        if not message or len(message) > limit:
            detail = (
                "empty batch"
                if not message
                else f"batch of {len(message)} requests exceeds the limit of {limit}"
            )
            self._queue_reply(encode(invalid_request(None, detail)))
            return
        slots: list[Slot] = []
        for raw in message:
            try:
                slots.append(self._answer(decode_request(raw), now))
            except Malformed as malformed:
                slots.append(malformed.reply)
        if any(isinstance(slot, Call | Deferred) for slot in slots):
            self._calls.append(PendingCalls(tuple(slots), batch=True))
            return
        replies = [slot for slot in slots if slot is not None]
        if replies:
            self._queue_reply(encode(replies))

    @property
    def calls_waiting(self) -> bool:
        """Whether frames with calls wait for :meth:`take_calls`."""
        return bool(self._calls)

    def take_calls(self) -> list[PendingCalls]:
        """The frames whose calls the edge must run now (each once), oldest first."""
        calls, self._calls = self._calls, []
        return calls

    def complete(
        self,
        pending: PendingCalls,
        replies: dict[int, dict[str, Any] | None],
        verdicts: dict[int, str | Exception | None] | None = None,
        reads: dict[int, Mapping[str, int]] | None = None,
    ) -> None:
        """Queue the reply frame of ``pending`` once its calls ran (``replies`` by slot index)
        and its checks were made (``verdicts`` by slot index: ``None`` allowed, a reason
        refused, an exception: the graph or the presence store could not tell), with what
        the presence reads found (``reads`` by slot index: users → connections).

        The :class:`Deferred` methods run here, so a ``subscribe`` registers with the
        hub and its reply is queued in one step (its presence enters right after the
        reply). Nothing runs and nothing is queued once a close is decided (the client
        reconnects and asks again).
        """
        if self._close is not None:
            return
        verdicts = verdicts or {}
        reads = reads or {}
        slots = [
            replies.get(index)
            if isinstance(slot, Call)
            else self._finish(slot, verdicts.get(index), reads.get(index))
            if isinstance(slot, Deferred)
            else slot
            for index, slot in enumerate(pending.slots)
        ]
        answered = [slot for slot in slots if slot is not None]
        if answered:
            self._queue_reply(encode(answered if pending.batch else answered[0]))
        if self._entering:
            self._enter_presence()

    def receive_bytes(self, data: bytes, now: float) -> None:
        """Handle a binary frame: the protocol has none, so close with 1003."""
        self.touch(now)
        if self.close_reason(now) is None:
            self._decide_close(CLOSE_UNSUPPORTED_DATA, "binary frames not accepted")

    def offer(self, channel: str, offset: int, frame: bytes) -> bool:
        """Queue one publication of a subscribed channel (called by the hub).

        Never blocks. Cost: a dict lookup and a deque append; the frame is
        the publisher's shared bytes, not copied. If the outbox would go over
        ``max_outbox_bytes``, the publication is refused and the session
        decides to close with 4008.

        Args:
            channel: the channel name.
            offset: the publication's offset in the channel.
            frame: the publication's whole WebSocket frame
                (:func:`protocols.websocket.frames.pub_frame`), shared by every subscriber.

        Returns:
            ``True`` if queued; ``False`` if the session is closing, is not
            subscribed to ``channel``, or has just become a slow consumer.
        """
        if self._close is not None:
            return False
        subscription = self._subscriptions.get(channel)
        if subscription is None:
            return False
        # _queue inlined: this runs once per delivery.
        pending = self._pending_bytes + len(frame)
        if pending > self._limits.max_outbox_bytes:
            self._decide_close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return False
        self._pending_bytes = pending
        if pending > self._peak_bytes:
            self._peak_bytes = pending
        self._out.append(frame)
        self._frames_queued += 1
        self._pushes_queued += 1
        subscription.delivered = offset
        if not self._signalled:
            self._signalled = True
            if self._on_ready is not None:
                self._on_ready()
        return True

    def notify(self, channel: str, frame: bytes) -> bool:
        """Queue a push about a subscribed ``channel`` (a ``join``/``leave`` frame, built once
        by the presence tracker and shared by the channel's presence subscribers).

        Returns:
            ``True`` if queued; ``False`` if the session is closing, is not subscribed to
            ``channel``, or has just become a slow consumer (close 4008).
        """
        if self._close is not None or channel not in self._subscriptions:
            return False
        return self._queue(frame)

    def queue_control(self, frame: bytes) -> None:
        """Queue a control frame built by the edge (a pong, the close frame), even when closing.

        Not counted against ``max_outbox_bytes`` (they are a few bytes, and
        the close frame must get out).
        """
        self._pending_bytes += len(frame)
        self._out.append(frame)
        self._frames_queued += 1
        self._wake()

    # -- output -------------------------------------------------------------------

    def data_to_send(self, max_frames: int = 1024) -> list[bytes | memoryview]:
        """The outbox's head, oldest first, for one vectored write (``socket.sendmsg``).

        The first item starts where the last write stopped. At most
        ``max_frames`` items (the kernel's IOV_MAX is 1024). Report what the
        socket took with :meth:`sent`.
        """
        out = self._out
        if not out:
            return []
        if len(out) <= max_frames:
            chunks: list[bytes | memoryview] = list(out)
        else:
            chunks = [out[i] for i in range(max_frames)]
        if self._out_sent:
            chunks[0] = memoryview(chunks[0])[self._out_sent :]
        return chunks

    def sent(self, count: int) -> None:
        """The socket took ``count`` bytes of :meth:`data_to_send`: drop them from the outbox.

        Once the outbox is empty, the next output calls ``on_ready`` again.
        """
        if count <= 0:
            return
        self._pending_bytes -= count
        out = self._out
        count += self._out_sent
        while out and count >= len(out[0]):
            count -= len(out.popleft())
        self._out_sent = count
        if not out:
            self._signalled = False

    def revoke(self, channel: str, reason: str) -> bool:
        """End the subscription to ``channel`` from the server side (permission withdrawn).

        Leaves the channel in the hub (and its presence) and queues an ``unsubscribed`` push
        (:func:`protocols.websocket.frames.unsubscribed_frame`); publications of the
        channel queued before it still go out, none after.

        Returns:
            Whether the session was subscribed.
        """
        subscription = self._subscriptions.pop(channel, None)
        if subscription is None:
            return False
        self._hub.unsubscribe(self, channel)
        if subscription.presence:
            self._exit_presence(channel)
        if self._close is None:
            self._queue(unsubscribed_frame(channel, reason))
        return True

    def fail(self, code: int, reason: str) -> None:
        """The edge found the connection unusable (1002 a malformed frame, 1009 a message too
        big while it was assembled): close with ``code``. Nothing if a close was decided."""
        self._decide_close(code, reason)

    def going_away(self, code: int = CLOSE_IDLE, reason: str = "server shutting down") -> None:
        """The server is stopping: close 1001 "server shutting down", or as given (1012
        "service restart": the listener restarts); the client reconnects, here or
        elsewhere, and recovers with ``since``. Nothing if a close was decided already."""
        self._decide_close(code, reason)

    def close(self) -> None:
        """The connection ended: leave every channel in the hub and drop the outbox.

        Decides close 1000 unless a close was decided already, without calling
        ``on_ready`` (the writer is gone). Idempotent.
        """
        self._decide_close(CLOSE_NORMAL, "closed", wake=False)
        for channel, subscription in list(self._subscriptions.items()):
            del self._subscriptions[channel]
            self._hub.unsubscribe(self, channel)
            if subscription.presence:
                self._exit_presence(channel)

    # -- internals ----------------------------------------------------------------

    def _enter_presence(self) -> None:
        """Enter the presence of the channels subscribed with it by the requests just
        answered: after their replies, so a subscriber's own join follows its reply."""
        entering, self._entering = self._entering, []
        presence = self._presence
        if presence is None or self._close is not None:
            return
        for channel in entering:
            subscription = self._subscriptions.get(channel)
            if subscription is not None and subscription.presence:
                presence.enter(self, channel)

    def _exit_presence(self, channel: str) -> None:
        if self._presence is not None:
            self._presence.exit(self, channel)

    def _wake(self) -> None:
        if not self._signalled:
            self._signalled = True
            if self._on_ready is not None:
                self._on_ready()

    def _decide_close(self, code: int, reason: str, *, wake: bool = True) -> None:
        if self._close is not None:
            return
        self._close = (code, reason)
        out = self._out
        # Frames not yet begun go; one partly written is finished first.
        while len(out) > (1 if self._out_sent else 0):
            self._pending_bytes -= len(out.pop())
        if not out:
            self._signalled = False
        if wake:
            self._wake()

    def _admit(self, size: int) -> bool:
        """Count ``size`` more bytes in the outbox, or close 4008 if they do not fit."""
        pending = self._pending_bytes + size
        if pending > self._limits.max_outbox_bytes:
            self._decide_close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return False
        self._pending_bytes = pending
        self._peak_bytes = max(self._peak_bytes, pending)
        return True

    def _queue(self, frame: bytes) -> bool:
        """Queue a data frame if it fits, or close 4008."""
        if not self._admit(len(frame)):
            return False
        self._out.append(frame)
        self._frames_queued += 1
        self._wake()
        return True

    def _queue_reply(self, message: bytes) -> None:
        self._queue(text_frame(message))

    def _answer(self, request: Request, now: float) -> Slot:
        """One request's outcome: its reply, a :class:`Call` for the edge, or ``None``."""
        try:
            check_request(request)
        except Malformed as malformed:
            return malformed.reply
        try:
            if self._limiter is not None:
                wait = self._limiter.admit(
                    now, self._bucket, self._user, privileged=self._privileged
                )
                if wait:
                    raise rate_limited(retry_after_ms(wait))
            local = _LOCAL.get(request.method)
            if local is None:
                return self._rpc_call(request)
            if self._user is None and request.method not in _OPEN_METHODS:
                raise JsonRpcError(UNAUTHORIZED, "unauthorized", {"reason": "not authenticated"})
            params = local.decode(request.params)
            if request.method in _GATED:
                gate = self._asks_gate(params.channel)
                work = self._presence_work(request.method, params)
                if gate or work is not None:
                    return Deferred(
                        request, params.channel, params, local.handler, gate=gate, presence=work
                    )
            result = local.handler(self, params, now)
        except JsonRpcError as error:
            return None if request.notification else error_reply(request.reply_id, error)
        return None if request.notification else result_reply(request.reply_id, result)

    def _rpc_call(self, request: Request) -> Call:
        """A method of the shared dispatcher, decoded and permitted for this token.

        Raises:
            JsonRpcError: -32601 unknown; -32003 not authenticated, or not this token's
                to call (``data.reason``); -32600/-32602 malformed params.
        """
        method = self._rpc.get(request.method) if self._rpc is not None else None
        if method is None:
            raise JsonRpcError(METHOD_NOT_FOUND, "Method not found", {"method": request.method})
        if self._user is None:
            raise JsonRpcError(UNAUTHORIZED, "unauthorized", {"reason": "not authenticated"})
        params = method.decode(request.params)
        refused = method.refusal(self._user, params, privileged=self._privileged)
        if refused is not None:
            raise refused
        return Call(request, method, params)

    def _connect_method(self, params: ConnectParams, now: float) -> ConnectResult:
        return self._connect(params, now)

    def _subscribe_method(
        self, params: SubscribeParams, now: float, *, checked: bool = False
    ) -> SubscribeResult[msgspec.Raw]:
        return self._subscribe(params, checked=checked)

    def _unsubscribe_method(self, params: UnsubscribeParams, now: float) -> Empty:
        return self._unsubscribe(params)

    def _history_method(
        self, params: HistoryParams, now: float, *, checked: bool = False
    ) -> HistoryResult[msgspec.Raw]:
        return self._history(params, checked=checked)

    def _ping_method(self, params: NoParams, now: float) -> Empty:
        return _EMPTY

    def _connect(self, params: ConnectParams, now: float) -> ConnectResult:
        try:
            claims = verify_token(self._secret, params.token, now=now)
        except TokenExpired:
            raise JsonRpcError(UNAUTHORIZED, "unauthorized", {"reason": "token expired"}) from None
        except TokenInvalid as exc:
            data = {"reason": "token invalid", "detail": str(exc)}
            raise JsonRpcError(UNAUTHORIZED, "unauthorized", data) from None
        if self._user is not None and claims.user != self._user:
            raise JsonRpcError(FORBIDDEN, "forbidden", {"reason": "token names another user"})
        self._authenticate(claims, now)
        return ConnectResult(claims.user, claims.expires_at)

    def _authenticate(self, claims: Claims, now: float) -> None:
        privileged = claims.operator or claims.service
        if self._limiter is not None and privileged and not self._privileged:
            self._bucket = self._limiter.connection_bucket(now, privileged=True)
        self._user, self._expires_at = claims.user, claims.expires_at
        self._operator = claims.operator
        self._privileged = privileged

    def _access(self, name: str) -> Access:
        """What the channel rules say about the user reading ``name``.

        Raises:
            JsonRpcError: -32602 a malformed name; -32003 never this user's channel.
        """
        try:
            channel = parse_channel(name)
        except ValueError as exc:
            raise invalid_params(str(exc)) from None
        if self._user is None:
            raise JsonRpcError(FORBIDDEN, "forbidden", {"channel": name})
        access = subscribe_access(channel, self._user, operator=self._operator)
        if access is Access.REFUSED or (access is Access.ASK_GRAPH and self._gate is None):
            raise JsonRpcError(FORBIDDEN, "forbidden", {"channel": name})
        return access

    def _asks_gate(self, name: str) -> bool:
        """Whether reading ``name`` waits for the gate (raises as :meth:`_access`)."""
        access = self._access(name)
        if access is Access.ASK_GRAPH:
            return True
        gate, user = self._gate, self._user
        return gate is not None and user is not None and gate.needs_check(user, name)

    def _permitted(self, name: str) -> str:
        """``name`` if the channel rules let the user read it without the graph (a
        :class:`Deferred` that the gate allowed skips this); the error reply otherwise."""
        if self._access(name) is not Access.ALLOWED:
            raise JsonRpcError(FORBIDDEN, "forbidden", {"channel": name})
        return name

    def _presence_work(self, method: str, params: Any) -> PresenceWork | None:
        """What ``method`` needs of the presence before it runs, if anything.

        Raises:
            JsonRpcError: -32001 presence asked of a session without a :class:`Presence`.
        """
        if method in _PRESENCE_READS or (method == "subscribe" and params.presence):
            presence = self._presence
            if presence is None:
                data = {"channel": params.channel, "detail": "presence is not available"}
                raise JsonRpcError(SERVICE_UNAVAILABLE, "service unavailable", data)
            if method in _PRESENCE_READS:
                return "read"
            if params.channel not in self._subscriptions and presence.needs_load(params.channel):
                return "load"
        return None

    def _finish(
        self,
        slot: Deferred,
        verdict: str | Exception | None,
        read: Mapping[str, int] | None = None,
    ) -> dict[str, Any] | None:
        """The reply of a :class:`Deferred` method given the gate's verdict (or the presence
        store's failure) and the presence read; runs it if allowed."""
        request = slot.request
        try:
            if isinstance(verdict, Exception):
                data = {"channel": slot.channel, "detail": str(verdict)}
                raise JsonRpcError(SERVICE_UNAVAILABLE, "service unavailable", data)
            if verdict is not None:
                data = {"channel": slot.channel, "reason": verdict}
                raise JsonRpcError(FORBIDDEN, "forbidden", data)
            if slot.presence == "read":
                result = slot.handler(self, slot.params, self._present(slot.channel, read))
            else:
                result = slot.handler(self, slot.params, math.nan, checked=True)
        except JsonRpcError as error:
            return None if request.notification else error_reply(request.reply_id, error)
        return None if request.notification else result_reply(request.reply_id, result)

    def _subscribe(
        self, params: SubscribeParams, *, checked: bool = False
    ) -> SubscribeResult[msgspec.Raw]:
        channel = params.channel if checked else self._permitted(params.channel)
        since = params.since
        subscription = self._subscriptions.get(channel)
        if subscription is not None:
            return self._resubscribe(subscription, since)
        limit = self._limits.max_subscriptions
        if len(self._subscriptions) >= limit:
            raise JsonRpcError(TOO_MANY_SUBSCRIPTIONS, "too many subscriptions", {"limit": limit})
        position = self._hub.subscribe(self, channel)
        self._subscriptions[channel] = _Subscription(channel, position, presence=params.presence)
        if params.presence:
            self._entering.append(channel)  # after the reply (_enter_presence)
        if since is None:
            return SubscribeResult(channel, position.offset, position.epoch)
        recovery = self._hub.since(channel, since.offset, since.epoch)
        return SubscribeResult(
            channel,
            position.offset,
            position.epoch,
            recovered=recovery.recovered,
            publications=_publications(recovery.publications),
        )

    def _resubscribe(
        self, subscription: _Subscription, since: Since | None
    ) -> SubscribeResult[msgspec.Raw]:
        """The idempotent reply: the position queued ahead of it, recovery up to it."""
        channel, delivered, epoch = subscription.channel, subscription.delivered, subscription.epoch
        if since is None:
            return SubscribeResult(channel, delivered, epoch)
        missed: Sequence[Publication] = ()
        recovered = False
        if since.epoch == epoch and since.offset <= delivered:
            recovery = self._hub.since(channel, since.offset, since.epoch)
            recovered = recovery.recovered and recovery.epoch == epoch
            if recovered:
                missed = [p for p in recovery.publications if p.offset <= delivered]
        return SubscribeResult(
            channel, delivered, epoch, recovered=recovered, publications=_publications(missed)
        )

    def _unsubscribe(self, params: UnsubscribeParams) -> Empty:
        try:
            parse_channel(params.channel)
        except ValueError as exc:
            raise invalid_params(str(exc)) from None
        subscription = self._subscriptions.pop(params.channel, None)
        if subscription is None:
            return _EMPTY
        self._hub.unsubscribe(self, params.channel)
        if subscription.presence:
            self._exit_presence(params.channel)
        return _EMPTY

    def _present(self, channel: str, read: Mapping[str, int] | None) -> Mapping[str, int]:
        """``channel``'s users → connections: as this process's presence subscribers were told
        when it tracks the channel (consistent with the pushes queued before), else ``read``.

        Raises:
            JsonRpcError: -32001 nothing was read.
        """
        view = self._presence.view(channel) if self._presence is not None else None
        if view is not None:
            return view
        if read is None:
            data = {"channel": channel, "detail": "presence was not read"}
            raise JsonRpcError(SERVICE_UNAVAILABLE, "service unavailable", data)
        return read

    def _presence_method(self, params: PresenceParams, users: Mapping[str, int]) -> PresenceResult:
        listed = heapq.nsmallest(MAX_PRESENCE_USERS, users.items())
        return PresenceResult([PresenceUser(u, n) for u, n in listed], len(users))

    def _presence_stats_method(
        self, params: PresenceParams, users: Mapping[str, int]
    ) -> PresenceStatsResult:
        return PresenceStatsResult(len(users), sum(users.values()))

    def _history(
        self, params: HistoryParams, *, checked: bool = False
    ) -> HistoryResult[msgspec.Raw]:
        channel = params.channel if checked else self._permitted(params.channel)
        since = params.since
        if since is None:
            position = self._hub.position(channel)
            latest = self._hub.latest(channel, params.limit)
            return HistoryResult(_publications(latest), position.offset, position.epoch)
        recovery = self._hub.since(channel, since.offset, since.epoch)
        if not recovery.recovered:
            data = {"channel": channel, "offset": recovery.offset, "epoch": recovery.epoch}
            raise JsonRpcError(UNRECOVERABLE_POSITION, "unrecoverable position", data)
        page = recovery.publications[: params.limit]
        return HistoryResult(_publications(page), recovery.offset, recovery.epoch)


_LOCAL: Final[MethodTable[Callable[..., msgspec.Struct]]] = MethodTable()
"""The session's own methods; every other method goes to the shared dispatcher."""
_LOCAL.add("connect", ConnectParams, Session._connect_method)
_LOCAL.add("subscribe", SubscribeParams, Session._subscribe_method)
_LOCAL.add("unsubscribe", UnsubscribeParams, Session._unsubscribe_method)
_LOCAL.add("history", HistoryParams, Session._history_method)
_LOCAL.add("presence", PresenceParams, Session._presence_method)
_LOCAL.add("presence_stats", PresenceParams, Session._presence_stats_method)
_LOCAL.add("ping", NoParams, Session._ping_method)
