"""The actor runtime: start, mailbox, send/call, rejection vs crash, graceful stop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, ActorCrashed, ActorRef, ActorUnavailable, Rejection


class Invalid(Rejection):
    pass


@dataclass(frozen=True)
class Add:
    n: int


@dataclass(frozen=True)
class Boom:
    pass


@dataclass(frozen=True)
class Refuse:
    pass


@dataclass(frozen=True)
class Wait:
    event: trio.Event


class Counter(Actor[Any]):
    def __init__(self, *, mailbox_size: int = 4, fail_start: bool = False) -> None:
        super().__init__("counter", mailbox_size=mailbox_size)
        self.total = 0
        self.fail_start = fail_start
        self.stopped = 0

    async def on_start(self) -> None:
        if self.fail_start:
            raise OSError("cannot open the store")

    async def handle(self, message: Any) -> Any:
        match message:
            case Add(n):
                self.total += n
                return self.total
            case Boom():
                raise RuntimeError("boom")
            case Refuse():
                raise Invalid("bad input")
            case Wait(event):
                await event.wait()
                return "waited"

    async def on_stop(self) -> None:
        self.stopped += 1


async def test_call_returns_the_handlers_value() -> None:
    """A call is answered with what the handler returned."""
    async with trio.open_nursery() as nursery:
        ref: ActorRef[Any] = await nursery.start(Counter().run)
        assert await ref.call(Add(2)) == 2
        assert await ref.call(Add(3)) == 5
        ref.request_stop()


async def test_failed_init_raises_to_the_starter() -> None:
    """An error in on_start raises out of nursery.start and the ref is never handed out."""
    actor = Counter(fail_start=True)
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="cannot open the store"):
            await nursery.start(actor.run)
    with pytest.raises(ActorUnavailable):
        actor.ref.send_nowait(Add(1))


async def test_rejection_is_a_reply_and_the_actor_keeps_running() -> None:
    """A Rejection raised by the handler reaches the caller and the actor stays up."""
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(Counter().run)
        with pytest.raises(Invalid, match="bad input"):
            await ref.call(Refuse())
        assert await ref.call(Add(1)) == 1
        assert ref.statistics().state == "running"
        ref.request_stop()


async def test_crash_fails_the_call_and_the_actor() -> None:
    """Any other exception fails the pending call with ActorCrashed and crashes the actor."""
    actor = Counter()
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="boom")):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(actor.run)
            with pytest.raises(ActorCrashed) as info:
                await ref.call(Boom())
            assert isinstance(info.value.__cause__, RuntimeError)
    stats = actor.statistics()
    assert stats.state == "failed"
    assert stats.last_error == "RuntimeError: boom"
    assert actor.stopped == 1


async def test_send_nowait_sheds_load_when_the_mailbox_is_full() -> None:
    """send_nowait raises WouldBlock once the bounded mailbox is full, and the peak is recorded."""
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(Counter(mailbox_size=2).run)
        gate = trio.Event()
        await ref.send(Wait(gate))
        await trio.testing.wait_all_tasks_blocked()
        ref.send_nowait(Add(1))
        ref.send_nowait(Add(1))
        with pytest.raises(trio.WouldBlock):
            ref.send_nowait(Add(1))
        stats = ref.statistics()
        assert (stats.mailbox_used, stats.mailbox_size, stats.mailbox_peak) == (2, 2, 2)
        gate.set()
        assert await ref.call(Add(0)) == 2
        ref.request_stop()


async def test_send_waits_while_the_mailbox_is_full() -> None:
    """send blocks (backpressure) until the actor makes room."""
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(Counter(mailbox_size=1).run)
        gate = trio.Event()
        await ref.send(Wait(gate))
        await trio.testing.wait_all_tasks_blocked()
        await ref.send(Add(1))
        sent = trio.Event()

        async def sender() -> None:
            await ref.send(Add(1))
            sent.set()

        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        gate.set()
        await sent.wait()
        ref.request_stop()


async def test_graceful_stop_drains_queued_messages() -> None:
    """request_stop lets queued messages be handled, then the actor exits and refuses sends."""
    actor = Counter(mailbox_size=8)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        for _ in range(5):
            ref.send_nowait(Add(1))
        ref.request_stop()
    assert actor.total == 5
    assert actor.statistics().state == "stopped"
    assert actor.statistics().messages_handled == 5
    with pytest.raises(ActorUnavailable):
        await ref.send(Add(1))


async def test_calls_queued_behind_a_crash_get_unavailable() -> None:
    """Callers still queued when the actor crashes get ActorUnavailable, not a hang."""
    actor = Counter(mailbox_size=8)
    outcomes: list[str] = []

    async def caller(ref: ActorRef[Any]) -> None:
        try:
            await ref.call(Add(1))
        except ActorUnavailable:
            outcomes.append("unavailable")

    with pytest.RaisesGroup(RuntimeError):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(actor.run)
            gate = trio.Event()
            await ref.send(Wait(gate))
            await ref.send(Boom())
            async with trio.open_nursery() as callers:
                callers.start_soon(caller, ref)
                callers.start_soon(caller, ref)
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
    assert outcomes == ["unavailable", "unavailable"]


async def test_the_ref_survives_a_restart() -> None:
    """Running the same actor again re-binds its ref to the new mailbox."""
    actor = Counter()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        await ref.call(Add(1))
        ref.request_stop()
    async with trio.open_nursery() as nursery:
        again = await nursery.start(actor.run)
        assert again is ref
        assert await ref.call(Add(1)) == 2
        ref.request_stop()


def test_mailbox_must_be_bounded() -> None:
    """An unbounded or empty mailbox is refused."""
    with pytest.raises(ValueError, match="mailbox_size"):
        Counter(mailbox_size=0)


class Slow(Actor[Any]):
    def __init__(self, concurrency: int) -> None:
        super().__init__("slow", mailbox_size=8, concurrency=concurrency)
        self.running = 0
        self.peak = 0

    async def handle(self, message: Any) -> Any:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await trio.sleep(1)
        self.running -= 1
        if message == "boom":
            raise RuntimeError("boom")
        return message


async def test_concurrency_bounds_handlers_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With concurrency=3, up to three messages are handled at once, never more."""
    actor = Slow(concurrency=3)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        began = trio.current_time()
        async with trio.open_nursery() as callers:
            for i in range(6):
                callers.start_soon(ref.call, i)
        assert trio.current_time() - began == pytest.approx(2.0)
        assert actor.peak == 3
        ref.request_stop()


async def test_a_concurrent_handler_crash_crashes_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A crash in one of several concurrent handlers fails its call and crashes the actor."""
    actor = Slow(concurrency=2)
    with pytest.RaisesGroup(RuntimeError):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(actor.run)
            with pytest.raises(ActorCrashed):
                await ref.call("boom")
    assert actor.statistics().state == "failed"


class Sleepy(Actor[Any]):
    def __init__(self, idle_timeout: float) -> None:
        super().__init__("sleepy", idle_timeout=idle_timeout)
        self.seen: list[int] = []

    async def handle(self, message: Any) -> Any:
        self.seen.append(message)
        return message


async def test_idle_timeout_stops_after_quiet_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An actor with idle_timeout stops gracefully after that long without a message, not before."""
    actor = Sleepy(idle_timeout=300)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        started = trio.current_time()
        await trio.sleep(200)
        assert await ref.call(1) == 1  # a message resets the idle time
        await trio.sleep(250)
        assert actor.statistics().state == "running"
    # the nursery exits only once the actor stopped by itself
    assert actor.statistics().state == "stopped"
    assert trio.current_time() - started == pytest.approx(500)
    with pytest.raises(ActorUnavailable):
        await ref.call(2)


def test_idle_timeout_must_be_positive() -> None:
    """A zero or negative idle timeout is refused at construction."""
    with pytest.raises(ValueError, match="idle_timeout"):
        Sleepy(idle_timeout=0)


class Patient(Actor[Any]):
    def __init__(self) -> None:
        super().__init__("patient", idle_timeout=10, concurrency=4)

    async def handle(self, message: Any) -> Any:
        await trio.sleep(message)
        return message


async def test_idle_countdown_waits_for_running_handlers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With concurrency > 1 the idle time counts from the end of the last handler, not its start."""
    actor = Patient()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        started = trio.current_time()
        assert await ref.call(25) == 25  # longer than the idle timeout, and not cut short
        assert actor.statistics().state == "running"
    assert trio.current_time() - started == pytest.approx(35)


# -- batched calls (max_batch) ----------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """Keeps the squarer busy until its gate opens."""


@dataclass(frozen=True)
class Square:
    n: int


class Squarer(Actor[Any]):
    """Answers Square calls in batches; anything else alone; logs what it handled."""

    def __init__(self) -> None:
        super().__init__("squarer", mailbox_size=16, max_batch=3)
        self.log: list[Any] = []
        self.gate = trio.Event()

    def batch_key(self, request: Any) -> object | None:
        return Square if isinstance(request, Square) else None

    async def handle_batch(self, requests: list[Any]) -> list[Any]:
        self.log.append(tuple(r.n for r in requests))
        if any(r.n == 13 for r in requests):
            raise ZeroDivisionError("unlucky")
        return [Invalid("negative") if r.n < 0 else r.n * r.n for r in requests]

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Hold):
            await self.gate.wait()
            return "waited"
        if isinstance(message, Square):
            self.log.append(message.n)
            return message.n * message.n
        self.log.append(message)
        return message


async def test_calls_queued_together_are_answered_by_one_batch_in_order() -> None:
    """Square calls queued behind a busy actor are answered together, at most max_batch per
    batch, each with its own reply or rejection; a message of another kind ends the batch and
    is handled next, in mailbox order."""
    actor = Squarer()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        replies: dict[Any, Any] = {}

        async def ask(request: Any) -> None:
            try:
                replies[request] = await ref.call(request)
            except Invalid as rejected:
                replies[request] = rejected

        nursery.start_soon(ask, Hold())
        await trio.testing.wait_all_tasks_blocked()
        for request in [Square(1), Square(-2), Square(3), Square(4), "other", Square(5)]:
            nursery.start_soon(ask, request)
            await trio.testing.wait_all_tasks_blocked()
        actor.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        ref.request_stop()

    assert actor.log == [(1, -2, 3), 4, "other", 5]
    assert [replies[Square(n)] for n in (1, 3, 4, 5)] == [1, 9, 16, 25]
    assert isinstance(replies[Square(-2)], Invalid)
    assert actor.statistics().messages_handled == 7


async def test_casts_queued_together_are_taken_by_one_batch_never_mixed_with_calls() -> None:
    """Square casts queued behind a busy actor are taken together (max_batch at a time); a
    Square call between them is not mixed into the casts' batch, and order is kept."""
    actor = Squarer()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        replies: list[Any] = []

        async def ask(request: Any) -> None:
            replies.append(await ref.call(request))

        nursery.start_soon(ask, Hold())
        await trio.testing.wait_all_tasks_blocked()
        for n in (1, 2, 3, 4):
            await ref.send(Square(n))
        nursery.start_soon(ask, Square(5))
        await trio.testing.wait_all_tasks_blocked()
        await ref.send(Square(6))
        actor.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        ref.request_stop()

    assert actor.log == [(1, 2, 3), 4, 5, 6]
    assert replies == ["waited", 25]
    assert actor.statistics().messages_handled == 7


async def crash_a_batch(actor: Squarer, outcomes: list[BaseException]) -> None:
    """Queue Square(12) and Square(13) behind a busy squarer; 13 crashes its batch."""
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)

        async def ask(request: Any) -> None:
            try:
                await ref.call(request)
            except (ActorCrashed, ActorUnavailable) as error:
                outcomes.append(error)

        nursery.start_soon(ask, Hold())
        await trio.testing.wait_all_tasks_blocked()
        for n in (12, 13):
            nursery.start_soon(ask, Square(n))
            await trio.testing.wait_all_tasks_blocked()
        actor.gate.set()


async def test_a_crash_in_a_batch_fails_every_call_of_it() -> None:
    """A handle_batch that raises crashes the actor, and each call of the batch gets
    ActorCrashed (none hangs)."""
    actor = Squarer()
    outcomes: list[BaseException] = []
    with pytest.raises(ExceptionGroup) as crash:
        await crash_a_batch(actor, outcomes)
    assert crash.value.subgroup(ZeroDivisionError) is not None
    assert [type(error) for error in outcomes] == [ActorCrashed, ActorCrashed]


def test_batching_is_for_one_at_a_time_actors() -> None:
    """max_batch must be >= 1, and cannot be combined with concurrency > 1."""
    with pytest.raises(ValueError, match="max_batch"):
        Actor("x", max_batch=0)
    with pytest.raises(ValueError, match="max_batch"):
        Actor("x", max_batch=4, concurrency=2)


async def test_an_injected_crash_fails_the_call_being_handled_next() -> None:
    """``inject_crash`` on a busy actor makes the next message it handles raise: that call
    gets ActorCrashed caused by the injected error, and the actor fails with it."""
    actor = Counter()
    release = trio.Event()
    crashes: list[ActorCrashed] = []

    async def add() -> None:
        try:
            await ref.call(Add(1))
        except ActorCrashed as crashed:
            crashes.append(crashed)

    with pytest.RaisesGroup(pytest.RaisesExc(LookupError, match="injected")):
        async with trio.open_nursery() as nursery:
            ref: ActorRef[Any] = await nursery.start(actor.run)
            nursery.start_soon(ref.call, Wait(release))
            await trio.testing.wait_all_tasks_blocked()
            ref.inject_crash(LookupError("injected"))
            nursery.start_soon(add)
            await trio.testing.wait_all_tasks_blocked()
            assert actor.statistics().state == "running"  # busy: the fault waits its turn
            release.set()
    (crashed,) = crashes
    assert isinstance(crashed.__cause__, LookupError)
    assert actor.statistics().last_error == "LookupError: injected"


async def test_a_restart_forgets_an_injected_crash_that_did_not_fire() -> None:
    """A fault injected into an actor that stops before handling another message is gone
    with that incarnation: the next one answers."""
    actor = Counter()
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        ref: ActorRef[Any] = await nursery.start(actor.run)
        nursery.start_soon(ref.call, Wait(release))
        await trio.testing.wait_all_tasks_blocked()
        ref.inject_crash(LookupError("never"))
        ref.request_stop()
        release.set()
    assert actor.statistics().state == "stopped"
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        assert await ref.call(Add(2)) == 2
        ref.request_stop()


async def test_an_idle_actor_crashes_at_once_on_an_injected_crash() -> None:
    """An actor waiting for a message raises the injected error at once, in its receive loop."""
    actor = Counter()
    with pytest.RaisesGroup(pytest.RaisesExc(LookupError, match="idle")):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            actor.inject_crash(LookupError("idle"))
    assert actor.statistics().state == "failed"
