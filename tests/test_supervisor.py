"""OTP supervisor semantics, each rule checked on trio's autojump clock."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import trio
import trio.testing

from supervisor import (
    Backoff,
    ChildSpec,
    ChildStartError,
    FaultKind,
    RestartType,
    Strategy,
    Supervisor,
    TooManyRestarts,
    leaked_tasks,
)


class Worker:
    """A child that logs its starts and stops and crashes or exits on command."""

    def __init__(
        self,
        name: str,
        log: list[tuple[str, str]],
        *,
        ignore_stop: bool = False,
        fail_start: bool = False,
    ) -> None:
        self.name = name
        self.log = log
        self.ignore_stop = ignore_stop
        self.fail_start = fail_start
        self._command: str | None = None
        self._wake = trio.Event()
        self.started = trio.Event()

    def spec(self, **kwargs: Any) -> ChildSpec:
        return ChildSpec(self.name, self.run, **kwargs)

    async def run(self, *, task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED) -> None:
        self.log.append(("start", self.name))
        if self.fail_start:
            raise OSError(f"{self.name} cannot start")
        self._command, self._wake = None, trio.Event()
        task_status.started(self)
        self.started.set()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                if self._command == "crash":
                    raise RuntimeError(f"{self.name} crashed")
                if self._command in ("exit", "stop"):
                    return
        finally:
            self.log.append(("stop", self.name))

    def _send(self, command: str) -> None:
        self._command = command
        self._wake.set()

    def crash(self) -> None:
        self._send("crash")

    def exit(self) -> None:
        self._send("exit")

    def request_stop(self) -> None:
        if not self.ignore_stop:
            self._send("stop")

    def statistics(self) -> dict[str, str]:
        return {"name": self.name}


def workers(log: list[tuple[str, str]], *names: str) -> list[Worker]:
    return [Worker(name, log) for name in names]


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def starts(*names: str) -> list[tuple[str, str]]:
    return [("start", name) for name in names]


def stops(*names: str) -> list[tuple[str, str]]:
    return [("stop", name) for name in names]


ALL_STRATEGIES = pytest.mark.parametrize("strategy", list(Strategy), ids=lambda s: s.value)


@ALL_STRATEGIES
async def test_children_start_in_order_and_stop_in_reverse(strategy: Strategy) -> None:
    """Under every strategy, static children start in spec order and a graceful stop stops them in exactly the reverse order."""  # noqa: E501
    log: list[tuple[str, str]] = []
    a, b, c = workers(log, "a", "b", "c")
    sup = Supervisor("root", [a.spec(), b.spec(), c.spec()], strategy=strategy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.request_stop()
    assert log == starts("a", "b", "c") + stops("c", "b", "a")
    assert sup.statistics().state == "stopped"


@ALL_STRATEGIES
async def test_a_tree_stops_depth_first_in_reverse(strategy: Strategy) -> None:
    """Under every strategy, a two-level tree starts depth first in spec order and stops in exactly the reverse order: the second subtree's children in reverse, then the first's."""  # noqa: E501
    log: list[tuple[str, str]] = []
    a, b, c, d = workers(log, "a", "b", "c", "d")
    first = Supervisor("first", [a.spec(), b.spec()], strategy=strategy)
    second = Supervisor("second", [c.spec(), d.spec()], strategy=strategy)
    root = Supervisor(
        "root",
        [ChildSpec.supervisor("first", first.run), ChildSpec.supervisor("second", second.run)],
        strategy=strategy,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        root.request_stop()
    assert log == starts("a", "b", "c", "d") + stops("d", "c", "b", "a")


@ALL_STRATEGIES
async def test_start_failure_stops_started_children_and_raises(strategy: Strategy) -> None:
    """Under every strategy, a child that fails to start makes the supervisor stop the ones started before it in exactly the reverse order, and raise."""  # noqa: E501
    log: list[tuple[str, str]] = []
    a, b = workers(log, "a", "b")
    c = Worker("c", log, fail_start=True)
    sup = Supervisor("root", [a.spec(), b.spec(), c.spec()], strategy=strategy)
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="c cannot start"):
            await nursery.start(sup.run)
    assert log == starts("a", "b", "c") + stops("b", "a")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, [("stop", "b"), ("start", "b")]),
        (
            Strategy.ONE_FOR_ALL,
            [("stop", "b"), ("stop", "c"), ("stop", "a"),
             ("start", "a"), ("start", "b"), ("start", "c")],
        ),
        (Strategy.REST_FOR_ONE, [("stop", "b"), ("stop", "c"), ("start", "b"), ("start", "c")]),
    ],
)  # fmt: skip
async def test_strategy_decides_which_siblings_restart(
    strategy: Strategy, expected: list[tuple[str, str]]
) -> None:
    """A crash of the middle child restarts exactly the children its strategy names (the others stopped in reverse, then started in order), and a later stop is still exactly the reverse of the spec order."""  # noqa: E501
    log: list[tuple[str, str]] = []
    a, b, c = workers(log, "a", "b", "c")
    sup = Supervisor("root", [a.spec(), b.spec(), c.spec()], strategy=strategy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        log.clear()
        b.crash()
        await settle()
        assert log == expected
        stats = sup.statistics()
        assert [child.state for child in stats.children] == ["running"] * 3
        assert stats.restarts_total == 1
        assert stats.last_error == "b: RuntimeError: b crashed"
        log.clear()
        sup.request_stop()
    assert log == stops("c", "b", "a")


@pytest.mark.parametrize(
    ("restart", "command", "restarted"),
    [
        (RestartType.PERMANENT, "exit", True),
        (RestartType.PERMANENT, "crash", True),
        (RestartType.TRANSIENT, "exit", False),
        (RestartType.TRANSIENT, "crash", True),
        (RestartType.TEMPORARY, "exit", False),
        (RestartType.TEMPORARY, "crash", False),
    ],
)
async def test_restart_type_decides_whether_a_child_restarts(
    restart: RestartType, command: str, restarted: bool
) -> None:
    """Permanent always restarts, transient only after a crash, temporary never (and is removed)."""
    log: list[tuple[str, str]] = []
    (a,) = workers(log, "a")
    sup = Supervisor("root", [a.spec(restart=restart)], intensity=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        getattr(a, command)()
        await settle()
        assert log.count(("start", "a")) == (2 if restarted else 1)
        ids = [child.id for child in sup.statistics().children]
        assert ids == ([] if restart is RestartType.TEMPORARY else ["a"])
        sup.request_stop()


@pytest.mark.parametrize(
    ("strategy", "restart"),
    [
        (Strategy.ONE_FOR_ONE, stops("b") + starts("b")),
        (Strategy.ONE_FOR_ALL, stops("b", "c", "a") + starts("a", "b", "c")),
        (Strategy.REST_FOR_ONE, stops("b", "c") + starts("b", "c")),
    ],
    ids=[strategy.value for strategy in Strategy],
)
async def test_intensity_exceeded_stops_children_and_escalates(
    autojump_clock: trio.testing.MockClock,
    strategy: Strategy,
    restart: list[tuple[str, str]],
) -> None:
    """Under every strategy, the restart that exceeds `intensity` within `period` is not made: the children still running stop in exactly the reverse of the spec order, and the supervisor raises."""  # noqa: E501
    log: list[tuple[str, str]] = []
    a, b, c = workers(log, "a", "b", "c")
    sup = Supervisor("root", [a.spec(), b.spec(), c.spec()], intensity=2, period=10,
                     strategy=strategy)  # fmt: skip
    escalated = pytest.RaisesExc(TooManyRestarts, match="more than 2 restarts in 10")
    with pytest.RaisesGroup(escalated) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            for _ in range(3):
                await trio.sleep(1)
                b.crash()
                await settle()
    assert isinstance(info.value.exceptions[0].__cause__, RuntimeError)
    # Two restarts as the strategy makes them; the third crash: b is down, c then a stop.
    assert log == starts("a", "b", "c") + restart * 2 + stops("b", "c", "a")
    assert sup.statistics().state == "failed"


async def test_restarts_outside_the_window_are_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Crashes spaced further apart than `period` never exceed the intensity."""
    log: list[tuple[str, str]] = []
    (a,) = workers(log, "a")
    sup = Supervisor("root", [a.spec()], intensity=1, period=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for _ in range(4):
            a.crash()
            await settle()
            await trio.sleep(6)
        stats = sup.statistics()
        assert (stats.restarts_total, stats.restarts_in_window, stats.state) == (4, 0, "running")
        sup.request_stop()


async def test_escalation_through_two_levels(autojump_clock: trio.testing.MockClock) -> None:
    """A leaf that keeps crashing exhausts its supervisor, then the parent's, which raises."""
    log: list[tuple[str, str]] = []
    leaf = Worker("leaf", log)
    middle = Supervisor("middle", [leaf.spec()], intensity=1, period=60)
    root = Supervisor("root", [ChildSpec.supervisor("middle", middle.run)], intensity=1, period=60)
    with pytest.RaisesGroup(pytest.RaisesExc(TooManyRestarts, match="'root'")) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            for _ in range(6):
                leaf.crash()
                await settle()
    cause = info.value.exceptions[0].__cause__
    assert isinstance(cause, TooManyRestarts)
    assert "'middle'" in str(cause)
    # middle restarted once by root; each middle incarnation restarted leaf once.
    assert log.count(("start", "leaf")) == 4


async def test_backoff_delays_restarts_exponentially(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With backoff, the n-th restart in a window waits initial * factor**(n-1) seconds."""
    log: list[tuple[str, str]] = []
    (a,) = workers(log, "a")
    backoff = Backoff(initial=1.0, factor=2.0, maximum=60.0, jitter=0.0)
    sup = Supervisor("root", [a.spec()], intensity=10, period=1000, backoff=backoff)
    started_at: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for _ in range(4):
            crashed_at = trio.current_time()
            a.started = trio.Event()
            a.crash()
            await a.started.wait()
            started_at.append(trio.current_time() - crashed_at)
        sup.request_stop()
    assert [round(delay) for delay in started_at] == [1, 2, 4, 8]


def test_backoff_jitter_stays_within_bounds() -> None:
    """Jitter only shortens the delay, by at most the jitter fraction, and honours the cap."""
    backoff = Backoff(initial=1.0, factor=3.0, maximum=5.0, jitter=0.5, rng=random.Random(7))
    for attempt in range(1, 10):
        base = min(5.0, 3.0 ** (attempt - 1))
        assert base * 0.5 <= backoff.delay(attempt) <= base


async def test_shutdown_timeout_cancels_a_child_that_ignores_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child that ignores request_stop is cancelled after exactly its shutdown timeout, and its elder sibling stops only after it, keeping the reverse order."""  # noqa: E501
    log: list[tuple[str, str]] = []
    stubborn = Worker("stubborn", log, ignore_stop=True)
    polite = Worker("polite", log)
    sup = Supervisor("root", [polite.spec(), stubborn.spec(shutdown=7.0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        begin = trio.current_time()
        sup.request_stop()
    assert trio.current_time() - begin == pytest.approx(7.0)
    assert log == starts("polite", "stubborn") + stops("stubborn", "polite")


async def test_brutal_kill_does_not_wait(autojump_clock: trio.testing.MockClock) -> None:
    """shutdown=0 cancels the child at once, without asking it."""
    log: list[tuple[str, str]] = []
    stubborn = Worker("stubborn", log, ignore_stop=True)
    sup = Supervisor("root", [stubborn.spec(shutdown=0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        begin = trio.current_time()
        sup.request_stop()
    assert trio.current_time() == begin


async def test_dynamic_children() -> None:
    """Dynamic children are added, restarted alone, capped by max_children and terminated; a stop stops them in exactly the reverse of the order they were added."""  # noqa: E501
    log: list[tuple[str, str]] = []
    sup = Supervisor("feeds", intensity=5, max_children=2)
    u1, u2, u3 = workers(log, "u1", "u2", "u3")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert await sup.start_child(u1.spec()) is u1
        await sup.start_child(u2.spec())
        with pytest.raises(ChildStartError, match="already has a child 'u1'"):
            await sup.start_child(Worker("u1", log).spec())
        with pytest.raises(ChildStartError, match="max_children=2"):
            await sup.start_child(u3.spec())
        u1.crash()
        await settle()
        assert log == starts("u1", "u2") + stops("u1") + starts("u1")  # u2 untouched
        await sup.terminate_child("u1")
        assert [child_id for child_id, _ in sup.which_children()] == ["u2"]
        await sup.start_child(u3.spec())
        with pytest.raises(KeyError):
            await sup.terminate_child("nobody")
        log.clear()
        sup.request_stop()
    assert log == stops("u3", "u2")
    with pytest.raises(ChildStartError, match="not running"):
        await sup.start_child(Worker("late", log).spec())


async def test_dynamic_transient_child_that_ends_normally_is_removed() -> None:
    """A dynamic transient child that exits normally is forgotten (its id is free again)."""
    log: list[tuple[str, str]] = []
    sup = Supervisor("feeds", intensity=5, max_children=1)
    (u1,) = workers(log, "u1")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child(u1.spec(restart=RestartType.TRANSIENT))
        u1.exit()
        await settle()
        assert sup.which_children() == []
        again = Worker("u1", log)
        await sup.start_child(again.spec(restart=RestartType.TRANSIENT))
        assert log.count(("start", "u1")) == 2
        sup.request_stop()


async def test_failed_dynamic_start_raises_to_the_caller() -> None:
    """A dynamic child that fails to start raises to start_child and is not added."""
    log: list[tuple[str, str]] = []
    sup = Supervisor("feeds")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(OSError, match="cannot start"):
            await sup.start_child(Worker("bad", log, fail_start=True).spec())
        assert sup.which_children() == []
        sup.request_stop()


async def test_statistics_describe_the_tree() -> None:
    """statistics() nests child supervisors and handles' statistics; health follows states."""
    log: list[tuple[str, str]] = []
    leaf = Worker("leaf", log)
    optional = Worker("optional", log)
    inner = Supervisor("inner", [leaf.spec(), optional.spec(restart=RestartType.TRANSIENT)])
    root = Supervisor("root", [ChildSpec.supervisor("inner", inner.run)])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        stats = root.statistics()
        assert stats.is_healthy()
        paths = [path for path, _ in stats.walk()]
        assert paths == ["inner", "inner/leaf", "inner/optional"]
        (inner_stats,) = stats.children
        assert inner_stats.kind == "supervisor"
        assert inner_stats.detail.children[0].detail == {"name": "leaf"}
        optional.exit()
        await settle()
        assert root.statistics().is_healthy(), "a transient child that exited normally is fine"
        root.request_stop()
    assert not root.statistics().is_healthy()


def test_child_spec_validation() -> None:
    """Child specs refuse empty ids and negative shutdowns; supervisors get infinite shutdown."""

    async def start(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    with pytest.raises(ValueError, match="non-empty id"):
        ChildSpec("", start)
    with pytest.raises(ValueError, match="shutdown"):
        ChildSpec("x", start, shutdown=-1)
    assert ChildSpec.supervisor("s", start).shutdown == math.inf
    with pytest.raises(ValueError, match="duplicate child ids"):
        Supervisor("root", [ChildSpec("x", start), ChildSpec("x", start)])


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, [("stop", "b"), ("start", "b")]),
        (
            Strategy.ONE_FOR_ALL,
            [("stop", "c"), ("stop", "b"), ("stop", "a"),
             ("start", "a"), ("start", "b"), ("start", "c")],
        ),
        (Strategy.REST_FOR_ONE, [("stop", "c"), ("stop", "b"), ("start", "b"), ("start", "c")]),
    ],
)  # fmt: skip
async def test_an_operator_restart_follows_the_strategy(
    strategy: Strategy, expected: list[tuple[str, str]]
) -> None:
    """``restart_path`` stops and starts the child and the siblings its strategy names;
    their restart counts go up, the intensity window does not, and no error is recorded."""
    log: list[tuple[str, str]] = []
    a, b, c = workers(log, "a", "b", "c")
    inner = Supervisor("inner", [a.spec(), b.spec(), c.spec()], strategy=strategy)
    root = Supervisor("root", [ChildSpec.supervisor("inner", inner.run)])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        log.clear()
        await root.restart_path("inner/b")
        assert log == expected
        stats = inner.statistics()
        assert [child.state for child in stats.children] == ["running"] * 3
        assert stats.children[1].restarts == 1
        assert (stats.restarts_in_window, stats.last_error) == (0, None)
        with pytest.raises(KeyError):
            await root.restart_path("inner/zed")
        with pytest.raises(KeyError):
            await root.restart_path("inner/a/deeper")
        root.request_stop()


class Host:
    """A child that runs given functions as tasks inside its own (as a server runs its
    requests), logs its starts and stops, and has ``request_restart`` besides
    ``request_stop``."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log
        self._stop = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[Host] = trio.TASK_STATUS_IGNORED) -> None:
        self.log.append(("start", "host"))
        self._stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(self)
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.log.append(("stop", "host"))

    def serve(self, request: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(request)

    def request_stop(self) -> None:
        self.log.append(("request_stop", "host"))
        self._stop.set()

    def request_restart(self) -> None:
        self.log.append(("request_restart", "host"))
        self._stop.set()


async def test_an_operator_restart_from_inside_the_child_waits_for_the_caller_to_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A restart asked by a task inside the child it restarts returns at once (scheduled),
    and the child is stopped (with ``request_restart``) only once that task has ended, so
    it can answer first; then the child starts again."""
    log: list[tuple[str, str]] = []
    host = Host(log)
    root = Supervisor("root", [ChildSpec("host", host.run)])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)

        async def request() -> None:
            scheduled = await root.restart_path("host")
            log.append(("answered", f"scheduled={scheduled}"))
            await trio.sleep(1)  # still replying
            log.append(("replied", "request"))

        host.serve(request)
        await settle()
        await trio.sleep(10)
        assert log == [
            ("start", "host"),
            ("answered", "scheduled=True"),
            ("replied", "request"),
            ("request_restart", "host"),
            ("stop", "host"),
            ("start", "host"),
        ]
        assert root.statistics().children[0].restarts == 1
        root.request_stop()
    assert log[-2:] == [("request_stop", "host"), ("stop", "host")]


async def test_an_operator_restart_survives_its_callers_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The supervisor's own task restarts the child: a caller that gives up half way (here
    while the child takes its shutdown time to stop) leaves it restarting, not stopped."""
    log: list[tuple[str, str]] = []
    slow = Worker("slow", log, ignore_stop=True)
    root = Supervisor("root", [slow.spec(shutdown=5)])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        with trio.move_on_after(1) as gave_up:
            await root.restart_path("slow")
        assert gave_up.cancelled_caught
        await trio.sleep(10)
        (child,) = root.statistics().children
        assert (child.state, child.restarts) == ("running", 1)
        assert log == [("start", "slow"), ("stop", "slow"), ("start", "slow")]
        root.request_stop()


@ALL_STRATEGIES
async def test_restarting_a_supervisor_in_place_restarts_every_child_in_order(
    strategy: Strategy,
) -> None:
    """``restart_path("")`` (the root's restart: ``system.restart {path: "root"}``) stops
    every child in reverse order and starts them again in order, whatever the strategy,
    without ending the supervisor."""
    log: list[tuple[str, str]] = []
    a, b, c = workers(log, "a", "b", "c")
    root = Supervisor("root", [a.spec(), b.spec(), c.spec()], strategy=strategy)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        log.clear()
        assert await root.restart_path("") is False
        assert log == [*stops("c", "b", "a"), *starts("a", "b", "c")]
        stats = root.statistics()
        assert stats.state == "running"
        assert [child.restarts for child in stats.children] == [1, 1, 1]
        root.request_stop()


async def test_a_start_fault_sends_an_operator_restart_through_the_restart_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A ``start`` fault fails the next start once: the operator's restart that meets it is
    taken over by the restart loop (backoff, one restart counted), the child runs again,
    and its last error is the injected fault."""
    log: list[tuple[str, str]] = []
    worker = Worker("w", log)
    root = Supervisor("root", [worker.spec()], intensity=3, backoff=Backoff(initial=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        assert await root.inject_fault("w", FaultKind.START) is False
        assert log == starts("w")  # armed: nothing happens until the next start
        assert await root.restart_path("w") is False
        stats = root.statistics()
        (child,) = stats.children
        assert (child.state, child.restarts, stats.restarts_in_window) == ("running", 2, 1)
        assert child.last_error == "InjectedFault: start fault injected into w"
        # The failed start ran nothing of the worker's: one stop, then one start.
        assert log == [*starts("w"), *stops("w"), *starts("w")]
        root.request_stop()


async def test_a_handler_fault_crashes_a_child_where_it_waits() -> None:
    """A ``handler`` fault in a child that cannot take it itself (no ``inject_crash``) ends
    its task as a crash with InjectedFault; its supervisor restarts it and counts it."""
    log: list[tuple[str, str]] = []
    worker = Worker("w", log)
    root = Supervisor("root", [worker.spec()], intensity=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        assert await root.inject_fault("w", FaultKind.HANDLER) is False
        await settle()
        stats = root.statistics()
        (child,) = stats.children
        assert (child.state, child.restarts, stats.restarts_in_window) == ("running", 1, 1)
        assert child.last_error == "InjectedFault: handler fault injected into w"
        assert stats.last_error == "w: InjectedFault: handler fault injected into w"
        root.request_stop()


async def test_a_handler_fault_goes_to_a_handle_that_takes_it() -> None:
    """A handle with ``inject_crash`` (an actor's ref) is given the fault to raise itself."""
    received: list[Exception] = []

    class Target:
        def inject_crash(self, error: Exception) -> None:
            received.append(error)

    async def start(*, task_status: trio.TaskStatus[Target]) -> None:
        task_status.started(Target())
        await trio.sleep_forever()

    root = Supervisor("root", [ChildSpec("t", start, shutdown=0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await root.inject_fault("t", FaultKind.HANDLER)
        assert [str(error) for error in received] == ["handler fault injected into t"]
        assert root.statistics().children[0].restarts == 0
        root.request_stop()


async def test_a_leaked_task_ends_with_the_incarnation_of_its_child() -> None:
    """A ``leak`` fault starts a task that never ends inside the child; the child's restart
    cancels it, and so does its final stop: no task is left behind."""
    log: list[tuple[str, str]] = []
    inner = Supervisor("inner", [Worker("w", log).spec()])
    root = Supervisor("root", [ChildSpec.supervisor("inner", inner.run)])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await root.inject_fault("inner/w", FaultKind.LEAK)
        await root.inject_fault("inner", FaultKind.LEAK)
        assert leaked_tasks() == 2
        await root.restart_path("inner/w")
        assert leaked_tasks() == 1
        await root.restart_path("inner")
        assert leaked_tasks() == 0
        await root.inject_fault("inner/w", FaultKind.LEAK)
        assert leaked_tasks() == 1
        root.request_stop()
    assert leaked_tasks() == 0


async def test_a_fault_needs_a_running_child_below_the_root() -> None:
    """An unknown path, or the root itself (``""``), is a KeyError; a child that does not
    run refuses a fault with ChildStartError."""
    log: list[tuple[str, str]] = []
    root = Supervisor("root", [Worker("w", log).spec()])
    with pytest.raises(ChildStartError):
        await root.inject_fault("w", FaultKind.HANDLER)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        for path in ("", "nothing", "w/deeper"):
            with pytest.raises(KeyError):
                await root.inject_fault(path, FaultKind.HANDLER)
        root.request_stop()


async def test_a_crash_inside_a_childs_own_nursery_is_reported_as_itself() -> None:
    """The error of a child that crashes inside nurseries of its own is recorded unwrapped
    (``RuntimeError: …``), not as the exception groups around it."""

    async def start(*, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            nursery.start_soon(trio.sleep_forever)
            raise RuntimeError("deep")

    root = Supervisor("root", [ChildSpec("deep", start, restart=RestartType.TEMPORARY)])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await settle()
        assert root.statistics().last_error == "deep: RuntimeError: deep"
        root.request_stop()
