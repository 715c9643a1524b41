"""An Erlang/OTP-style supervisor over trio.

A :class:`Supervisor` starts its children in order, each with
``nursery.start`` (a child that fails to start raises to the supervisor,
which stops the children already started, in reverse, and raises in turn).
When a child terminates, its :class:`~supervisor.spec.RestartType` decides
whether it is restarted and the :class:`~supervisor.spec.Strategy` decides
which siblings restart with it. Restarts are counted per supervisor: more
than ``intensity`` restarts within ``period`` seconds and the supervisor
stops all its children (reverse order) and raises :class:`TooManyRestarts`
to its parent (escalation). Children added at run time with
:meth:`Supervisor.start_child` are dynamic (OTP's ``simple_one_for_one``
use: one actor per user).

Stopping a child is "graceful, then brutal": its handle's ``request_stop()``
(``request_restart()``, if it has one, when it is stopped to be started again)
is called, it gets ``shutdown`` seconds to return, then its cancel scope is
cancelled. Each child runs in a nursery of its own that only the supervisor
uses (the ``leak`` fault's tasks live there): a child that ends leaves no task
behind.

An operator's acts (:meth:`Supervisor.restart_path`,
:meth:`Supervisor.inject_fault`) are carried out by the supervisor's own
task, one at a time between its restarts, so that the caller's cancellation
cannot leave one half done. When the caller runs inside what an act stops
(the HTTP request that restarts the ``api`` child runs in that child), the
act waits for the caller's task to end, so the caller answers first
(:mod:`supervisor.tasks`).

Source: Erlang/OTP Design Principles, "Supervisor Behaviour".
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
import trio
from trio.lowlevel import Task

from supervisor.backoff import Backoff
from supervisor.faults import LEAKED_TASK, FaultKind, InjectedFault, leaked
from supervisor.spec import ChildSpec, RestartType, Strategy
from supervisor.statistics import ChildStatistics, SupervisorStatistics
from supervisor.tasks import runs_inside, wait_ended

log = structlog.get_logger(__name__)

SECONDS: Final = 1.0
CALLER_GRACE: Final = 5 * SECONDS
"""Longest wait for a caller that runs inside what its act stops to end (having
answered) before the act goes ahead anyway."""


class SupervisorError(Exception):
    """Base class of supervisor errors."""


class TooManyRestarts(SupervisorError):
    """Restart intensity exceeded; the supervisor stopped its children and gave up.

    ``__cause__`` is the last child failure, if the last exit was abnormal.
    """


class ChildStartError(SupervisorError):
    """A dynamic child could not be added (duplicate id, limit reached, not running)."""


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    dynamic: bool = False
    handle: Any = None
    started: bool = False
    scope: trio.CancelScope | None = None
    done: trio.Event = field(default_factory=trio.Event)
    incarnation: int = 0
    state: str = "new"
    stop_requested: bool = False
    restarts: int = 0
    last_error: str | None = None
    task: Task | None = None
    """The task that runs it (from its start to its end)."""
    tasks: trio.Nursery | None = None
    """Its own nursery, the supervisor's only: where injected leaks run."""
    crash: Exception | None = None
    """An injected crash: why its cancelled task ended."""
    fail_start: Exception | None = None
    """An injected start failure, raised by its next start."""


@dataclass(eq=False)
class _Request:
    """An operator's act, carried out by the supervisor's own task.

    Attributes:
        act: what to do.
        after: a task to let end first (the caller, when it runs inside what the act stops).
        error: what the caller gets; cleared once the act is done.
    """

    act: Callable[[], Awaitable[None]]
    after: Task | None
    error: Exception | None
    done: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True, slots=True)
class _Exit:
    child: _Child
    incarnation: int
    error: Exception | None


class _StartedRelay:
    """Wraps the starter's task status to learn the child's handle."""

    def __init__(self, inner: trio.TaskStatus[Any], child: _Child) -> None:
        self._inner = inner
        self._child = child

    def started(self, value: Any = None) -> None:
        self._child.handle = value
        self._child.started = True
        self._inner.started(value)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _only(group: ExceptionGroup[Exception]) -> Exception:
    """The one exception inside ``group`` and the groups of one it nests (a nursery wraps
    even one, and a child may run nurseries of its own), else the group of several."""
    error: Exception = group
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


class Supervisor:
    """Starts, watches, restarts and stops a list of children.

    Args:
        id: the supervisor's name in the tree.
        children: static children, started in this order, stopped in reverse.
        strategy: the restart strategy (dynamic children need ``ONE_FOR_ONE``).
        intensity: restarts allowed within ``period`` (OTP ``MaxR``, default 1).
        period: the intensity window in seconds (OTP ``MaxT``, default 5).
        backoff: delay before each restart; ``None`` restarts at once (OTP).
        max_children: cap on dynamic children (``None``: no cap).

    Raises:
        ValueError: duplicate child ids, bad intensity or period.
    """

    def __init__(
        self,
        id: str,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 1,
        period: float = 5.0,
        backoff: Backoff | None = None,
        max_children: int | None = None,
    ) -> None:
        ids = [spec.id for spec in children]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate child ids in supervisor {id!r}: {ids}")
        if intensity < 0 or period <= 0:
            raise ValueError("intensity must be >= 0 and period > 0 seconds")
        self.id = id
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.backoff = backoff
        self.max_children = max_children
        self._children: list[_Child] = [_Child(spec) for spec in children]
        self._state = _State.NEW
        self._nursery: trio.Nursery | None = None
        self._restart_times: deque[float] = deque()
        self._restarts_total = 0
        self._last_error: str | None = None
        self._exits: deque[_Exit] = deque()
        self._wakeup = trio.Event()
        self._stop_requested = False
        self._restart_scope: trio.CancelScope | None = None
        self._requests: deque[_Request] = deque()

    # -- public API ----------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order, report ready, then supervise until stopped.

        Raises:
            Exception: a static child's start failure (the started ones are stopped first).
            TooManyRestarts: restart intensity exceeded (all children stopped first).
        """
        failure: Exception | None = None  # raised outside the nursery, so never wrapped
        self._reset()
        self._state = _State.STARTING
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    for child in list(self._children):
                        await self._start(child)
                except Exception as start_error:
                    failure = start_error
                    await self._stop_all()
                else:
                    self._state = _State.RUNNING
                    task_status.started(self)
                    log.debug("supervisor started", supervisor=self.id)
                    failure = await self._supervise()
                    self._state = _State.STOPPING
                    await self._stop_all()
        except BaseException:
            self._state = _State.FAILED
            raise
        finally:
            self._nursery = None
            self._drop_requests()
        if failure is not None:
            self._state = _State.FAILED
            raise failure
        self._state = _State.STOPPED

    def _reset(self) -> None:
        """Forget the last run, as a restarted OTP supervisor starts afresh."""
        self._children = [child for child in self._children if not child.dynamic]
        self._restart_times.clear()
        self._exits.clear()
        self._drop_requests()
        self._wakeup = trio.Event()
        self._stop_requested = False
        self._restart_scope = None

    def request_stop(self) -> None:
        """Stop gracefully: no more restarts; children stop in reverse order. Idempotent."""
        self._stop_requested = True
        if self._restart_scope is not None:
            self._restart_scope.cancel()
        self._wakeup.set()

    async def start_child(self, spec: ChildSpec) -> Any:
        """Add and start a dynamic child; return its handle.

        Raises:
            ChildStartError: not running, duplicate id, or ``max_children`` reached.
            Exception: the child's own start failure (it is not added).
        """
        if self._state is not _State.RUNNING or self._stop_requested:
            raise ChildStartError(f"supervisor {self.id!r} is not running")
        if any(child.spec.id == spec.id for child in self._children):
            raise ChildStartError(f"supervisor {self.id!r} already has a child {spec.id!r}")
        dynamic = [child for child in self._children if child.dynamic]
        if self.max_children is not None and len(dynamic) >= self.max_children:
            raise ChildStartError(
                f"supervisor {self.id!r} has reached max_children={self.max_children}"
            )
        child = _Child(spec, dynamic=True)
        self._children.append(child)
        try:
            await self._start(child)
        except BaseException:
            self._children.remove(child)
            raise
        return child.handle

    async def terminate_child(self, id: str) -> None:
        """Stop the dynamic or static child ``id`` gracefully and remove it.

        Raises:
            KeyError: no such child.
        """
        child = self._find(id)
        await self._stop_child(child)
        if child in self._children:
            self._children.remove(child)

    async def restart_child(self, id: str) -> bool:
        """Restart the running child ``id``, as its strategy would after a crash.

        The operator's restart: the child is stopped gracefully and started
        again, with the siblings its strategy restarts with it (``rest_for_one``:
        the children after it; ``one_for_all``: all of them), in order. Each
        restarted child's restart count goes up; the supervisor's intensity
        window does not (an operator's act is not a failure). If a start fails,
        the supervisor's restart loop takes over as after a crash (backoff,
        intensity). The supervisor's own task does it: cancelling the caller
        does not stop it half way.

        Returns:
            ``False`` once the children run again; ``True`` at once when the
            caller runs inside what restarts (say, a request served by the
            child being restarted): the restart then begins when the caller's
            task has ended (at most :data:`CALLER_GRACE` seconds later), so
            that the caller can answer first.

        Raises:
            KeyError: no such child.
            ChildStartError: the supervisor or the child is not running, or the
                supervisor stopped or gave up (too many restarts) first.
        """
        child = self._find(id)
        self._check_running(child)
        incarnation = child.incarnation
        group = self._restart_group(child)
        return await self._ask(lambda: self._restart_on_request(child, incarnation), group)

    async def restart_children(self) -> bool:
        """Restart every static child in place: all stopped (reverse order), then started
        (in order), whatever the strategy; what restarting this supervisor means to an
        operator, without ending its own task (the root's restart: the process, the
        port and the statistics stay). As :meth:`restart_child` otherwise.

        Raises:
            ChildStartError: the supervisor is not running, or it stopped or gave up first.
        """
        self._check_running(None)
        static = [child for child in self._children if not child.dynamic]
        return await self._ask(lambda: self._restart_in_place(static), static)

    async def restart_path(self, path: str) -> bool:
        """:meth:`restart_child` of the child at ``path`` below this supervisor.

        Args:
            path: child ids joined with ``/``, as in :meth:`SupervisorStatistics.walk`,
                e.g. ``"realtime/transformer-0"``; ``""``: this supervisor itself
                (:meth:`restart_children`).

        Raises:
            KeyError: no child at ``path`` (or a step of it is not a supervisor).
            ChildStartError: see :meth:`restart_child`.
        """
        if not path:
            return await self.restart_children()
        supervisor, child = self._locate(path)
        return await supervisor.restart_child(child.spec.id)

    async def inject_fault(self, path: str, kind: FaultKind) -> bool:
        """Inject a fault into the running child at ``path`` (:mod:`supervisor.faults`).

        ``HANDLER``: a handle with ``inject_crash`` (an actor's ref) raises
        :class:`~supervisor.faults.InjectedFault` in its next message handling;
        any other child's task is cancelled and its supervisor takes the fault
        as the reason it ended. ``START``: its next start raises it, once.
        ``LEAK``: a task that never ends starts inside it.

        Returns:
            ``True`` when the crash waits for the caller's task to end (the caller
            runs inside the child), else ``False``: the fault is in place.

        Raises:
            KeyError: no child at ``path`` (``""`` included: the root has no parent
                to answer its crash).
            ChildStartError: the child or its supervisor is not running.
        """
        supervisor, child = self._locate(path)
        return await supervisor._inject(child, kind, path)

    def which_children(self) -> list[tuple[str, Any]]:
        """``(id, handle)`` of every child, in start order (handle ``None`` if not running)."""
        return [(child.spec.id, child.handle) for child in self._children]

    def statistics(self) -> SupervisorStatistics:
        """A frozen snapshot of this supervisor and, recursively, its children."""
        self._forget_old_restarts()
        return SupervisorStatistics(
            id=self.id,
            state=self._state.value,
            strategy=self.strategy.value,
            intensity=self.intensity,
            period=self.period,
            restarts_in_window=len(self._restart_times),
            restarts_total=self._restarts_total,
            last_error=self._last_error,
            children=tuple(self._child_statistics(child) for child in self._children),
        )

    # -- an operator's acts ---------------------------------------------------

    def _locate(self, path: str) -> tuple[Supervisor, _Child]:
        *parents, last = path.split("/")
        supervisor: Supervisor = self
        for step in parents:
            handle = supervisor._find(step).handle
            if not isinstance(handle, Supervisor):
                raise KeyError(path)
            supervisor = handle
        return supervisor, supervisor._find(last)

    def _check_running(self, child: _Child | None) -> None:
        if self._state is not _State.RUNNING or self._stop_requested:
            raise ChildStartError(f"supervisor {self.id!r} is not running")
        if child is not None and child.state != "running":
            raise ChildStartError(
                f"child {child.spec.id!r} of {self.id!r} is {child.state}, not running"
            )

    async def _ask(self, act: Callable[[], Awaitable[None]], stops: Sequence[_Child]) -> bool:
        """Have the supervisor's task do ``act``; wait for it unless the caller runs inside
        one of ``stops`` (then return ``True`` at once: it waits for the caller to end)."""
        caller = trio.lowlevel.current_task()
        inside = runs_inside(caller, [child.task for child in stops])
        stopped = ChildStartError(f"supervisor {self.id!r} stopped before it was done")
        request = _Request(act, caller if inside else None, stopped)
        self._requests.append(request)
        self._wakeup.set()
        if inside:
            return True
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return False

    async def _carry_out(self, request: _Request) -> None:
        try:
            if request.after is not None:
                with trio.move_on_after(CALLER_GRACE):
                    await wait_ended(request.after)
            await request.act()
        except TooManyRestarts as gave_up:
            request.error = ChildStartError(f"supervisor {self.id!r} gave up: {gave_up}")
            raise
        else:
            request.error = None
        finally:
            request.done.set()

    def _drop_requests(self) -> None:
        """Wake whoever waits for an act that will not be done (their error says why)."""
        while self._requests:
            self._requests.popleft().done.set()

    async def _restart_on_request(self, child: _Child, incarnation: int) -> None:
        if child.incarnation != incarnation or child.state != "running":
            return  # it ended, or was restarted, since: it is fresh already
        if child not in self._children:
            return
        await self._restart_in_place(self._restart_group(child))

    async def _restart_in_place(self, group: list[_Child]) -> None:
        log.info("restarting on request", supervisor=self.id,
                 group=[child.spec.id for child in group])  # fmt: skip
        for member in reversed(group):
            await self._stop_child(member, restarting=True)
        try:
            for member in group:
                member.restarts += 1
                await self._start(member)
        except Exception as start_error:
            # As after a crash: stop what did start, then the restart loop (backoff, intensity).
            self._last_error = f"{member.spec.id}: {_describe(start_error)}"
            log.error("restart on request failed", supervisor=self.id, child=member.spec.id,
                      error=_describe(start_error))  # fmt: skip
            for started in reversed(group):
                await self._stop_child(started, restarting=True)
            await self._restart(group, start_error)

    async def _inject(self, child: _Child, kind: FaultKind, path: str) -> bool:
        self._check_running(child)
        error = InjectedFault(f"{kind.value} fault injected into {path}")
        log.warning("injecting a fault", supervisor=self.id, child=child.spec.id, kind=kind.value)
        if kind is FaultKind.START:
            child.fail_start = error
            return False
        if kind is FaultKind.LEAK:
            assert child.tasks is not None  # a running child has its nursery
            child.tasks.start_soon(leaked, name=LEAKED_TASK)
            return False
        inject = getattr(child.handle, "inject_crash", None)
        if callable(inject):
            inject(error)
            return False
        incarnation = child.incarnation
        return await self._ask(lambda: self._crash(child, incarnation, error), [child])

    async def _crash(self, child: _Child, incarnation: int, error: Exception) -> None:
        """End the child's task as if it had raised ``error`` where it waits now."""
        if child.incarnation == incarnation and child.scope is not None and child.started:
            child.crash = error
            child.scope.cancel()

    # -- starting and stopping children --------------------------------------

    async def _start(self, child: _Child) -> None:
        assert self._nursery is not None
        child.incarnation += 1
        child.done = trio.Event()
        child.started = False
        child.stop_requested = False
        child.state = "starting"
        await self._nursery.start(self._run_child, child, child.incarnation)
        child.state = "running"

    async def _run_child(
        self, child: _Child, incarnation: int, *, task_status: trio.TaskStatus[Any]
    ) -> None:
        error: Exception | None = None
        child.task = trio.lowlevel.current_task()
        try:
            with trio.CancelScope() as scope:
                child.scope = scope
                try:
                    await self._run_spec(child, task_status)
                except Exception as exc:
                    error = exc
                    if not child.started:
                        raise
            if error is None and scope.cancelled_caught and child.crash is not None:
                error = child.crash  # an injected crash: its task was cancelled
        finally:
            child.handle = None
            child.scope = None
            child.tasks = None
            child.task = None
            child.crash = None
            if error is not None:
                child.last_error = _describe(error)
            child.state = "failed" if error is not None else "stopped"
            child.done.set()
        if child.started and not child.stop_requested:
            self._exits.append(_Exit(child, incarnation, error))
            self._wakeup.set()

    async def _run_spec(self, child: _Child, task_status: trio.TaskStatus[Any]) -> None:
        """The child's start function in a nursery of its own (:attr:`_Child.tasks`); what
        is left there when it returns is cancelled. Raises what the child raised."""
        try:
            async with trio.open_nursery() as tasks:
                child.tasks = tasks
                fault, child.fail_start = child.fail_start, None
                if fault is not None:
                    raise fault
                await child.spec.start(task_status=_StartedRelay(task_status, child))
                if tasks.child_tasks:
                    log.warning("cancelling the tasks a child left behind", supervisor=self.id,
                                child=child.spec.id, tasks=len(tasks.child_tasks))  # fmt: skip
                tasks.cancel_scope.cancel()
        except ExceptionGroup as group:
            error = _only(group)
            if error is group:
                raise
            raise error from error.__cause__  # its own cause kept, the wrapping dropped

    async def _stop_child(self, child: _Child, *, restarting: bool = False) -> None:
        """Graceful, then brutal: ``request_stop()``, wait ``shutdown`` s, cancel.

        ``restarting``: it will be started again; ``request_restart()`` is called
        instead if the handle has it (a server keeps its port, tells clients to
        come back).
        """
        if child.done.is_set() or child.scope is None:
            return
        child.stop_requested = True
        child.state = "stopping"
        stop = getattr(child.handle, "request_stop", None)
        if restarting:
            stop = getattr(child.handle, "request_restart", stop)
        if child.spec.shutdown > 0 and callable(stop):
            stop()
            with trio.move_on_after(child.spec.shutdown):
                await child.done.wait()
        if not child.done.is_set() and child.scope is not None:
            log.warning(
                "child ignored the stop request; cancelling",
                supervisor=self.id,
                child=child.spec.id,
                shutdown_seconds=child.spec.shutdown,
            )
            child.scope.cancel()
        await child.done.wait()
        child.state = "stopped"

    async def _stop_all(self) -> None:
        for child in reversed(list(self._children)):
            await self._stop_child(child)

    # -- supervision ---------------------------------------------------------

    async def _supervise(self) -> TooManyRestarts | None:
        while not self._stop_requested:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while (self._exits or self._requests) and not self._stop_requested:
                with trio.CancelScope() as self._restart_scope:
                    try:
                        if self._exits:
                            await self._on_exit(self._exits.popleft())
                        else:
                            await self._carry_out(self._requests.popleft())
                    except TooManyRestarts as escalation:
                        return escalation
                self._restart_scope = None
        return None

    async def _on_exit(self, exit_: _Exit) -> None:
        child, error = exit_.child, exit_.error
        if exit_.incarnation != child.incarnation:
            return  # already restarted, e.g. by a one_for_all restart
        if error is not None:
            self._last_error = f"{child.spec.id}: {_describe(error)}"
            log.error(
                "child crashed",
                supervisor=self.id,
                child=child.spec.id,
                error=_describe(error),
                exc_info=error,
            )
        restart = child.spec.restart
        if restart is RestartType.TEMPORARY or (restart is RestartType.TRANSIENT and not error):
            # A temporary child is forgotten; so is a dynamic child that ends
            # normally (OTP's simple_one_for_one deletes its ended children).
            if restart is RestartType.TEMPORARY or child.dynamic:
                self._children.remove(child)
            return
        group = self._restart_group(child)
        for sibling in reversed(group):
            if sibling is not child:
                await self._stop_child(sibling, restarting=True)
        await self._restart(group, error)

    def _restart_group(self, child: _Child) -> list[_Child]:
        if self.strategy is Strategy.ONE_FOR_ONE or child.dynamic:
            return [child]
        static = [c for c in self._children if not c.dynamic]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return static
        return static[static.index(child) :]

    async def _restart(self, group: list[_Child], error: Exception | None) -> None:
        """Restart ``group`` in order, counting each attempt against the intensity."""
        while True:
            group = await self._absorb_exits(group)
            self._count_restart(error)
            for child in group:
                child.state = "restarting"
            if self.backoff is not None:
                await trio.sleep(self.backoff.delay(len(self._restart_times)))
            try:
                for child in group:
                    child.restarts += 1
                    await self._start(child)
                return
            except Exception as start_error:
                # A failed restart counts as another restart (OTP); stop the part
                # of the group that did start, then try the whole group again.
                log.error("restart failed", supervisor=self.id, error=_describe(start_error))
                for child in group:
                    child.last_error = child.last_error or _describe(start_error)
                for started in reversed(group):
                    await self._stop_child(started, restarting=True)
                error = start_error

    async def _absorb_exits(self, group: list[_Child]) -> list[_Child]:
        """``group`` joined by the restart groups of the children whose exit waits in the
        queue (in start order), the running ones among them stopped first.

        A child that crashed while another's restart backs off (a backend outage
        fails several at once) is restarted with that group, not after it with a
        longer backoff of its own; its queued exit is then stale and skipped.
        """
        members = set(group)
        for exit_ in self._exits:
            child = exit_.child
            if exit_.incarnation != child.incarnation or child in members:
                continue
            restart = child.spec.restart
            if restart is RestartType.TEMPORARY or (
                restart is RestartType.TRANSIENT and exit_.error is None
            ):
                continue  # _on_exit forgets it
            if exit_.error is not None:
                self._last_error = f"{child.spec.id}: {_describe(exit_.error)}"
                log.error("child crashed", supervisor=self.id, child=child.spec.id,
                          error=_describe(exit_.error), exc_info=exit_.error)  # fmt: skip
            members.update(self._restart_group(child))
        if len(members) == len(group):
            return group
        joined = [child for child in self._children if child in members]
        for child in reversed(joined):
            if child not in group:
                await self._stop_child(child, restarting=True)
        return joined

    def _count_restart(self, error: Exception | None) -> None:
        now = trio.current_time()
        self._restart_times.append(now)
        self._restarts_total += 1
        self._forget_old_restarts(now)
        if len(self._restart_times) > self.intensity:
            log.error(
                "restart intensity exceeded; escalating",
                supervisor=self.id,
                intensity=self.intensity,
                period_seconds=self.period,
            )
            raise TooManyRestarts(
                f"supervisor {self.id!r}: more than {self.intensity} restarts in "
                f"{self.period} s; last error: {self._last_error}"
            ) from error

    def _forget_old_restarts(self, now: float | None = None) -> None:
        try:
            now = trio.current_time() if now is None else now
        except RuntimeError:  # statistics() read outside trio
            return
        while self._restart_times and self._restart_times[0] <= now - self.period:
            self._restart_times.popleft()

    # -- helpers -------------------------------------------------------------

    def _find(self, id: str) -> _Child:
        for child in self._children:
            if child.spec.id == id:
                return child
        raise KeyError(id)

    def _child_statistics(self, child: _Child) -> ChildStatistics:
        detail = None
        statistics = getattr(child.handle, "statistics", None)
        if callable(statistics):
            detail = statistics()
        return ChildStatistics(
            id=child.spec.id,
            kind=child.spec.kind.value,
            restart=child.spec.restart.value,
            state=child.state,
            restarts=child.restarts,
            last_error=child.last_error,
            detail=detail,
        )

    def __repr__(self) -> str:
        return f"<Supervisor {self.id} {self._state.value} {len(self._children)} children>"
