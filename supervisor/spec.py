"""Child specifications, restart types and strategies (Erlang/OTP semantics).

Source: Erlang/OTP Design Principles, "Supervisor Behaviour"
(``system/doc/design_principles/sup_princ.md``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

SECONDS = 1.0

#: ``start(task_status=...)``: runs the child; calls ``task_status.started(handle)``
#: once it is ready. Raising before ``started`` fails the start.
StartFunction = Callable[..., Awaitable[Any]]


class RestartType(enum.Enum):
    """When a terminated child is restarted (OTP ``restart``)."""

    PERMANENT = "permanent"
    """Always restarted."""
    TRANSIENT = "transient"
    """Restarted only if it terminated abnormally (raised)."""
    TEMPORARY = "temporary"
    """Never restarted; removed from the supervisor when it terminates."""


class Strategy(enum.Enum):
    """What else a supervisor restarts when one child terminates (OTP restart strategy)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the terminated child."""
    ONE_FOR_ALL = "one_for_all"
    """All children: the others are stopped (reverse order), then all are started (in order)."""
    REST_FOR_ONE = "rest_for_one"
    """The terminated child and the children started after it."""


class ChildKind(enum.Enum):
    """OTP child type: a worker, or a supervisor (gets an infinite shutdown by default)."""

    WORKER = "worker"
    SUPERVISOR = "supervisor"


class Stoppable(Protocol):
    """A child handle that can be asked to stop gracefully.

    A handle may also have ``request_restart()``: the supervisor calls it instead
    of ``request_stop()`` when the child is stopped to be started again (a
    listener keeps its socket, tells its clients to come back).
    """

    def request_stop(self) -> None:
        """Begin a graceful stop; the child's task should return soon after."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child.

    Attributes:
        id: unique among the supervisor's children.
        start: ``async def start(*, task_status)``; ``task_status.started(handle)``
            reports the child ready. The handle may have ``request_stop()``
            (graceful stop), ``request_restart()`` (graceful stop before a
            restart), ``inject_crash(error)`` (:class:`~supervisor.faults.FaultTarget`)
            and ``statistics()`` (shown in the health tree).
        restart: :class:`RestartType`.
        shutdown: seconds the child gets to stop after ``request_stop()``
            before it is cancelled; 0 cancels at once ("brutal_kill");
            ``math.inf`` waits for ever (the default for supervisors).
        kind: worker or supervisor.
    """

    id: str
    start: StartFunction
    restart: RestartType = RestartType.PERMANENT
    shutdown: float = 5 * SECONDS
    kind: ChildKind = ChildKind.WORKER

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a child spec needs a non-empty id")
        if self.shutdown < 0:
            raise ValueError(f"shutdown must be >= 0 seconds, got {self.shutdown}")

    @classmethod
    def supervisor(cls, id: str, start: StartFunction, **kwargs: Any) -> ChildSpec:
        """A spec for a child supervisor: infinite shutdown unless given."""
        kwargs.setdefault("shutdown", math.inf)
        return cls(id, start, kind=ChildKind.SUPERVISOR, **kwargs)


TaskStatus = trio.TaskStatus[Any]
