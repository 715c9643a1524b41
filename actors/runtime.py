"""The actor runtime: long-lived trio tasks with bounded mailboxes.

An :class:`Actor` is a trio task that receives messages one at a time from a
bounded mailbox (``trio.open_memory_channel(mailbox_size)``). It is started
with ``nursery.start(actor.run)``: its :meth:`Actor.on_start` runs first, and
an error there raises to whoever started it (OTP's synchronous
``start_link``); then it reports its :class:`ActorRef` and enters its receive
loop.

The :class:`ActorRef` is the actor's address, and it stays valid across
restarts (like a registered name in OTP): a supervisor that restarts the actor
re-binds the same ref to the new mailbox. It offers

- ``send(message)``: waits while the mailbox is full (backpressure);
- ``send_nowait(message)``: raises ``trio.WouldBlock`` when it is full (shed load);
- ``call(request)``: request/reply through a one-shot reply channel carried in
  the message; bound it with a cancel scope (``with trio.fail_after(…)``).

Errors, as httpx draws them::

    ActorError                 base of the runtime's errors
    ├── ActorUnavailable       the actor is not running (stopped, crashed, restarting)
    └── ActorCrashed           the actor crashed while handling this call

An exception raised by a handler that subclasses :class:`Rejection` is a
*reply*: it is re-raised in the caller and the actor keeps running (invalid
input is a reply, not a crash). Any other exception crashes the actor; the
caller of the message being handled gets :class:`ActorCrashed`, callers still
queued get :class:`ActorUnavailable`, and the supervisor decides what next.

Graceful stop (:meth:`Actor.request_stop`) closes the mailbox: messages
already queued are handled, then the actor exits. A supervisor bounds that
with the child's shutdown timeout and then cancels ("graceful always precedes
brutal").

Fault injection (:meth:`Actor.inject_crash`, what ``system.fault`` ``handler``
reaches through the supervisor): the actor raises the given error in the next
message it handles, as a handler with a bug would (the call gets
:class:`ActorCrashed`), or at once if it is waiting for a message.
"""

from __future__ import annotations

import contextlib
import enum
import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

MessageT = TypeVar("MessageT")

DEFAULT_MAILBOX_SIZE = 64


class ActorError(Exception):
    """Base class of the actor runtime's errors."""


class ActorUnavailable(ActorError):
    """The actor is not running: never started, stopped, crashed or restarting."""


class ActorCrashed(ActorError):
    """The actor crashed while handling this call; ``__cause__`` is the crash."""


class Rejection(Exception):
    """Base class of exceptions that are replies, not crashes.

    A handler raises a subclass (say, ``NotFound``) to answer a call with an
    error; the runtime re-raises it in the caller and keeps the actor running.
    """


class ActorState(enum.Enum):
    """Where an actor is in its life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    """A snapshot of an actor, as returned by :meth:`Actor.statistics`.

    Attributes:
        name: the actor's name.
        state: its :class:`ActorState` value.
        messages_handled: messages handled since the actor object was made (all incarnations).
        mailbox_used: messages waiting now.
        mailbox_size: the mailbox's capacity.
        mailbox_peak: most messages ever waiting at once.
        last_error: ``"Type: message"`` of the last crash, or ``None``.
    """

    name: str
    state: str
    messages_handled: int
    mailbox_used: int
    mailbox_size: int
    mailbox_peak: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Call(Generic[MessageT]):
    """A request envelope: the request and the one-shot channel for its reply."""

    request: MessageT
    reply_to: trio.MemorySendChannel[_Reply]


@dataclass(frozen=True, slots=True)
class _Reply:
    value: Any = None
    error: BaseException | None = None


class ActorRef(Generic[MessageT]):
    """The address of an actor; valid across the actor's restarts."""

    __slots__ = ("_actor",)

    def __init__(self, actor: Actor[MessageT]) -> None:
        self._actor = actor

    @property
    def name(self) -> str:
        """The actor's name."""
        return self._actor.name

    async def send(self, message: MessageT) -> None:
        """Put ``message`` in the mailbox, waiting while it is full (backpressure).

        Raises:
            ActorUnavailable: the actor is not running.
        """
        channel = self._actor._mailbox()
        try:
            await channel.send(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorUnavailable(self.name) from None
        self._actor._note_queued()

    def send_nowait(self, message: MessageT) -> None:
        """Put ``message`` in the mailbox without waiting.

        Raises:
            trio.WouldBlock: the mailbox is full; the caller should shed load.
            ActorUnavailable: the actor is not running.
        """
        channel = self._actor._mailbox()
        try:
            channel.send_nowait(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorUnavailable(self.name) from None
        self._actor._note_queued()

    async def call(self, request: MessageT) -> Any:
        """Send ``request`` and wait for the reply.

        Bound the wait with a cancel scope; cancelling abandons the reply.

        Returns:
            What the actor's :meth:`Actor.handle` returned.

        Raises:
            Rejection: the handler's error reply (re-raised as is).
            ActorCrashed: the actor crashed while handling it.
            ActorUnavailable: the actor is not running, or stopped before replying.
        """
        reply_send, reply_receive = trio.open_memory_channel[_Reply](1)
        with reply_receive:
            await self.send(Call(request, reply_send))  # type: ignore[arg-type]
            try:
                reply = await reply_receive.receive()
            except trio.EndOfChannel:
                raise ActorUnavailable(self.name) from None
        if reply.error is not None:
            raise reply.error
        return reply.value

    def statistics(self) -> ActorStatistics:
        """The actor's statistics snapshot."""
        return self._actor.statistics()

    def request_stop(self) -> None:
        """Ask the actor to stop gracefully (see :meth:`Actor.request_stop`)."""
        self._actor.request_stop()

    def inject_crash(self, error: Exception) -> None:
        """Make the actor crash with ``error`` (see :meth:`Actor.inject_crash`)."""
        self._actor.inject_crash(error)

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}>"


class Actor(Generic[MessageT]):
    """Base class of long-lived actors.

    Subclasses override :meth:`handle` and optionally :meth:`on_start` and
    :meth:`on_stop`. One actor object may be run many times in a row (each a
    restart); it keeps its :class:`ActorRef` and counters across runs.

    Args:
        name: unique within its supervisor; shown in health and metrics.
        mailbox_size: capacity of the bounded mailbox, in messages (>= 1).
        concurrency: messages handled at once (>= 1). With 1 (the default) the
            actor handles its messages one after another, in order; with more,
            each message is handled in a task of the actor's own nursery, up to
            ``concurrency`` at a time (a service fronting a pool of workers).
            A crash in any handler crashes the actor.
        idle_timeout: seconds without a message after which the actor stops
            gracefully, as if :meth:`request_stop` had been called (OTP's
            gen_server timeout used for idle expiry); ``None`` (the default)
            never. Messages already queued are still handled.
        max_batch: most calls answered by one :meth:`handle_batch` (>= 1; 1, the
            default, never batches). With more, a one-at-a-time actor that takes a
            call whose :meth:`batch_key` is not ``None`` also takes the calls queued
            right behind it with the same key (without waiting for more) and
            answers them together: "group commit" for requests that one query can
            answer as cheaply as one. Casts (``send``) are batched the same way,
            never mixed with calls: :meth:`handle_batch` gets the queued casts of one
            key and its outcomes are dropped. Order is kept: the first queued message
            with another key (or of the other kind) is handled next.

    Raises:
        ValueError: a mailbox size, concurrency or idle timeout out of range.
    """

    def __init__(
        self,
        name: str,
        *,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        concurrency: int = 1,
        idle_timeout: float | None = None,
        max_batch: int = 1,
    ) -> None:
        if mailbox_size < 1 or mailbox_size == math.inf:
            raise ValueError(f"mailbox_size must be a finite count >= 1, got {mailbox_size}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_batch < 1 or (max_batch > 1 and concurrency > 1):
            raise ValueError(f"max_batch must be >= 1, and 1 with concurrency > 1, got {max_batch}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds or None, got {idle_timeout}")
        self.name = name
        self.mailbox_size = mailbox_size
        self.concurrency = concurrency
        self.idle_timeout = idle_timeout
        self.max_batch = max_batch
        self._held: MessageT | None = None  # taken while batching, handled next
        self._idle_scope: trio.CancelScope | None = None
        self._active = 0  # handlers running (concurrency > 1): the idle countdown waits
        self.ref: ActorRef[MessageT] = ActorRef(self)
        self._send: trio.MemorySendChannel[MessageT] | None = None
        self._receive: trio.MemoryReceiveChannel[MessageT] | None = None
        self._state = ActorState.NEW
        self._handled = 0
        self._peak = 0
        self._last_error: str | None = None
        self._fault: Exception | None = None

    # -- hooks -------------------------------------------------------------

    async def on_start(self) -> None:
        """Initialise before the ref is handed out; an error here fails the start."""

    async def handle(self, message: MessageT) -> Any:
        """Handle one message; for a :class:`Call`, the return value is the reply.

        Raise a :class:`Rejection` to answer with an error; any other
        exception crashes the actor.
        """
        raise NotImplementedError

    def batch_key(self, request: MessageT) -> object | None:
        """The key under which calls (or casts) of ``request``'s kind may be handled together
        by :meth:`handle_batch`, or ``None`` (the default) to handle it alone."""
        return None

    async def handle_batch(self, requests: list[MessageT]) -> list[Any]:
        """Answer several calls (or take several casts) of one :meth:`batch_key` at once
        (``max_batch`` > 1).

        Returns:
            One outcome per request, in order: its reply, or a :class:`Rejection`
            instance to answer that one call with an error (ignored for casts).

        Any exception raised crashes the actor (every call of the batch gets
        :class:`ActorCrashed`).
        """
        raise NotImplementedError

    async def on_stop(self) -> None:
        """Clean up after the receive loop ends (normally or not). Runs shielded,
        so keep it short."""

    # -- lifecycle ---------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[ActorRef[MessageT]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run one incarnation of the actor: init, report the ref, receive until stopped.

        Raises:
            Exception: whatever :meth:`on_start` raised (before ``started``),
                or the crash of a handler.
        """
        send, receive = trio.open_memory_channel[MessageT](self.mailbox_size)
        self._state = ActorState.STARTING
        self._fault = None  # one injected into an earlier incarnation is gone with it
        try:
            await self.on_start()
            self._send, self._receive = send, receive
            self._state = ActorState.RUNNING
            task_status.started(self.ref)
            await self._receive_loop(receive)
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._state = ActorState.FAILED
            raise
        finally:
            send.close()
            self._fail_queued(receive)
            receive.close()
            if self._state is not ActorState.FAILED:
                self._state = ActorState.STOPPED
            with trio.CancelScope(shield=True):
                await self.on_stop()

    async def _next_message(self, receive: trio.MemoryReceiveChannel[MessageT]) -> list[MessageT]:
        """The next message as a one-item list; ``[]`` once the mailbox is closed and empty.

        After ``idle_timeout`` seconds without a message and without a handler
        running, the mailbox is closed (graceful stop): what is queued by then
        is still handed out.
        """
        while True:
            with trio.CancelScope() as self._idle_scope:
                self._arm_idle_timer()
                try:
                    return [await receive.receive()]
                except trio.EndOfChannel:
                    return []
                finally:
                    self._idle_scope = None
            self._raise_fault()
            self.request_stop()

    def _arm_idle_timer(self) -> None:
        """(Re)start the idle countdown, or hold it while handlers run."""
        scope = self._idle_scope
        if scope is None or self.idle_timeout is None:
            return
        if self._active:
            scope.deadline = math.inf
        else:
            scope.deadline = trio.current_time() + self.idle_timeout

    async def _receive_loop(self, receive: trio.MemoryReceiveChannel[MessageT]) -> None:
        if self.max_batch > 1:
            await self._batching_loop(receive)
            return
        if self.concurrency == 1:
            while message := await self._next_message(receive):
                await self._handle_one(message[0])
            return
        slots = trio.Semaphore(self.concurrency)
        try:
            async with trio.open_nursery() as handlers:
                while message := await self._next_message(receive):
                    await slots.acquire()
                    self._active += 1
                    handlers.start_soon(self._handle_in_slot, message[0], slots)
        except ExceptionGroup as group:
            # The first crash cancels the other handlers; report it alone, as
            # a one-at-a-time actor would.
            crashes = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
            if len(crashes) == 1:
                raise crashes[0] from None
            raise

    async def _batching_loop(self, receive: trio.MemoryReceiveChannel[MessageT]) -> None:
        """One message at a time, except calls of one batch key queued together."""
        while True:
            held, self._held = self._held, None
            if held is None:
                taken = await self._next_message(receive)
                if not taken:
                    return
                held = taken[0]
            is_call = isinstance(held, Call)
            key = self.batch_key(held.request if isinstance(held, Call) else held)
            if key is None:
                await self._handle_one(held)
                continue
            batch: list[Any] = [held]
            while len(batch) < self.max_batch:
                try:
                    queued = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                same_kind = isinstance(queued, Call) == is_call
                request = queued.request if isinstance(queued, Call) else queued
                if same_kind and self.batch_key(request) == key:
                    batch.append(queued)
                else:
                    self._held = queued
                    break
            if len(batch) == 1:
                await self._handle_one(held)
            elif is_call:
                await self._handle_calls(batch)
            else:
                self._raise_fault()
                await self.handle_batch(batch)
                self._handled += len(batch)

    async def _handle_calls(self, calls: list[Call[Any]]) -> None:
        """Answer ``calls`` with one :meth:`handle_batch`."""
        try:
            self._raise_fault()
            outcomes = await self.handle_batch([call.request for call in calls])
            if len(outcomes) != len(calls):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(calls)} calls")
        except Exception as exc:
            crashed = ActorCrashed(f"{self.name} crashed: {type(exc).__name__}: {exc}")
            crashed.__cause__ = exc
            for call in calls:
                with call.reply_to:
                    _reply(call, _Reply(error=crashed))
            raise
        for call, outcome in zip(calls, outcomes, strict=True):
            with call.reply_to:
                error = outcome if isinstance(outcome, Rejection) else None
                _reply(call, _Reply(error=error) if error else _Reply(value=outcome))
        self._handled += len(calls)

    async def _handle_in_slot(self, message: MessageT, slots: trio.Semaphore) -> None:
        try:
            await self._handle_one(message)
        finally:
            slots.release()
            self._active -= 1
            self._arm_idle_timer()

    async def _handle_one(self, message: MessageT) -> None:
        if isinstance(message, Call):
            await self._handle_call(message)
        else:
            self._raise_fault()
            await self.handle(message)
        self._handled += 1

    async def _handle_call(self, call: Call[Any]) -> None:
        with call.reply_to:
            try:
                self._raise_fault()
                value = await self.handle(call.request)
            except Rejection as rejection:
                _reply(call, _Reply(error=rejection))
            except Exception as exc:
                crashed = ActorCrashed(f"{self.name} crashed: {type(exc).__name__}: {exc}")
                crashed.__cause__ = exc
                _reply(call, _Reply(error=crashed))
                raise
            else:
                _reply(call, _Reply(value=value))

    def _fail_queued(self, receive: trio.MemoryReceiveChannel[MessageT]) -> None:
        """Close the reply channel of every call still queued: callers get ActorUnavailable."""
        held, self._held = self._held, None
        if isinstance(held, Call):
            held.reply_to.close()
        while True:
            try:
                message = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if isinstance(message, Call):
                message.reply_to.close()

    def inject_crash(self, error: Exception) -> None:
        """Crash with ``error`` in the next message handled (its caller gets
        :class:`ActorCrashed`), or at once if waiting for a message. For fault
        injection (:class:`supervisor.FaultTarget`); a restart forgets a fault
        that did not fire."""
        self._fault = error
        if self._idle_scope is not None:
            self._idle_scope.cancel()  # waiting for a message: raise now

    def _raise_fault(self) -> None:
        fault, self._fault = self._fault, None
        if fault is not None:
            raise fault

    def request_stop(self) -> None:
        """Close the mailbox: queued messages are handled, then the actor exits.

        Senders get :class:`ActorUnavailable` from then on. Idempotent.
        """
        if self._send is not None:
            if self._state is ActorState.RUNNING:
                self._state = ActorState.STOPPING
            self._send.close()

    # -- introspection -----------------------------------------------------

    def _mailbox(self) -> trio.MemorySendChannel[MessageT]:
        if self._send is None:
            raise ActorUnavailable(self.name)
        return self._send

    def _note_queued(self) -> None:
        if self._receive is not None:
            used = self._receive.statistics().current_buffer_used
            self._peak = max(self._peak, used)

    def statistics(self) -> ActorStatistics:
        """A frozen snapshot: state, messages handled, mailbox use and peak."""
        used = 0
        if self._receive is not None and self._state in (ActorState.RUNNING, ActorState.STOPPING):
            used = self._receive.statistics().current_buffer_used
        return ActorStatistics(
            name=self.name,
            state=self._state.value,
            messages_handled=self._handled,
            mailbox_used=used,
            mailbox_size=self.mailbox_size,
            mailbox_peak=self._peak,
            last_error=self._last_error,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self._state.value}>"


def _reply(call: Call[Any], reply: _Reply) -> None:
    # A closed reply channel means the caller gave up (cancelled): nobody is waiting.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        call.reply_to.send_nowait(reply)
