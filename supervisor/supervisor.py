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
is called, it gets ``shutdown`` seconds to return, then its cancel scope is
cancelled.

Source: Erlang/OTP Design Principles, "Supervisor Behaviour".
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from supervisor.backoff import Backoff
from supervisor.spec import ChildSpec, RestartType, Strategy
from supervisor.statistics import ChildStatistics, SupervisorStatistics

log = structlog.get_logger(__name__)


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
        if failure is not None:
            self._state = _State.FAILED
            raise failure
        self._state = _State.STOPPED

    def _reset(self) -> None:
        """Forget the last run, as a restarted OTP supervisor starts afresh."""
        self._children = [child for child in self._children if not child.dynamic]
        self._restart_times.clear()
        self._exits.clear()
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

    async def restart_child(self, id: str) -> None:
        """Restart the running child ``id`` now, as its strategy would after a crash.

        The operator's restart: the child is stopped gracefully and started
        again, with the siblings its strategy restarts with it (``rest_for_one``:
        the children after it; ``one_for_all``: all of them), in order. Each
        restarted child's restart count goes up; the supervisor's intensity
        window does not (an operator's act is not a failure). Returns once
        they run again.

        Raises:
            KeyError: no such child.
            ChildStartError: the supervisor or the child is not running.
            Exception: a child's start failure (the supervisor's own restart
                loop does not take over: the caller sees it).
        """
        child = self._find(id)
        if self._state is not _State.RUNNING or self._stop_requested:
            raise ChildStartError(f"supervisor {self.id!r} is not running")
        if child.state != "running":
            raise ChildStartError(f"child {id!r} of {self.id!r} is {child.state}, not running")
        group = self._restart_group(child)
        log.info("restarting on request", supervisor=self.id, child=id,
                 group=[c.spec.id for c in group])  # fmt: skip
        for member in reversed(group):
            await self._stop_child(member)
        for member in group:
            member.restarts += 1
            await self._start(member)

    async def restart_path(self, path: str) -> None:
        """:meth:`restart_child` of the child at ``path`` below this supervisor.

        Args:
            path: child ids joined with ``/``, as in :meth:`SupervisorStatistics.walk`,
                e.g. ``"realtime/transformer-0"``.

        Raises:
            KeyError: no child at ``path`` (or a step of it is not a supervisor).
            ChildStartError: see :meth:`restart_child`.
        """
        *parents, last = path.split("/")
        supervisor: Supervisor = self
        for step in parents:
            handle = supervisor._find(step).handle
            if not isinstance(handle, Supervisor):
                raise KeyError(path)
            supervisor = handle
        await supervisor.restart_child(last)

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
        try:
            with trio.CancelScope() as scope:
                child.scope = scope
                try:
                    await child.spec.start(task_status=_StartedRelay(task_status, child))
                except Exception as exc:
                    error = exc
                    if not child.started:
                        raise
        finally:
            child.handle = None
            child.scope = None
            if error is not None:
                child.last_error = _describe(error)
            child.state = "failed" if error is not None else "stopped"
            child.done.set()
        if child.started and not child.stop_requested:
            self._exits.append(_Exit(child, incarnation, error))
            self._wakeup.set()

    async def _stop_child(self, child: _Child) -> None:
        """Graceful, then brutal: ``request_stop()``, wait ``shutdown`` s, cancel."""
        if child.done.is_set() or child.scope is None:
            return
        child.stop_requested = True
        child.state = "stopping"
        stop = getattr(child.handle, "request_stop", None)
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
            while self._exits and not self._stop_requested:
                exit_ = self._exits.popleft()
                if exit_.incarnation != exit_.child.incarnation:
                    continue  # already restarted, e.g. by a one_for_all restart
                with trio.CancelScope() as self._restart_scope:
                    try:
                        await self._on_exit(exit_)
                    except TooManyRestarts as escalation:
                        return escalation
                self._restart_scope = None
        return None

    async def _on_exit(self, exit_: _Exit) -> None:
        child, error = exit_.child, exit_.error
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
                await self._stop_child(sibling)
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
                    await self._stop_child(started)
                error = start_error

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
