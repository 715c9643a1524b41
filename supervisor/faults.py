"""Fault injection: crash a child, fail its next start, or leak a task into it.

For operators and tests (``system.fault``, off unless the server runs with
``--fault-injection``). The hooks are the supervisor's, at the level of the
child spec, so that no child carries code of its own for them
(:meth:`supervisor.Supervisor.inject_fault`)::

    handler  the child raises InjectedFault. A child whose handle can take it
             (:class:`FaultTarget`, an actor's ref) raises in the message it
             handles next, at once if it waits for one: the call it handles gets
             the crash. Any other child (a run loop, a supervisor) raises where
             it waits now: its task is cancelled and its supervisor takes
             InjectedFault as the reason it ended (OTP's ``exit(Pid, kill)``).
    start    the child's next start raises InjectedFault, once, before it reports
             ready: its supervisor's restart, backoff and intensity take over.
    leak     a task that never ends is started inside the child's task; the
             child's next stop or restart cancels it (:func:`leaked_tasks` counts
             those alive).

Each is counted like the fault it stands for: a crash and a failed start count
against the supervisor's restart intensity, as a real one would.
"""

from __future__ import annotations

import enum
from typing import Final, Protocol

import trio

LEAKED_TASK: Final = "supervisor.faults.leaked"
"""The name of every task the ``leak`` fault starts."""


class FaultKind(enum.Enum):
    """What ``system.fault`` injects into a child."""

    HANDLER = "handler"
    """The child raises :class:`InjectedFault` in its next message handling or its run loop."""
    START = "start"
    """The child's next start raises :class:`InjectedFault`, once."""
    LEAK = "leak"
    """A task that never ends is started inside the child."""


class InjectedFault(Exception):
    """A fault injected on purpose (``system.fault``): a crash or a failed start, not a bug."""


class FaultTarget(Protocol):
    """A child handle that raises an injected fault in its own message handling."""

    def inject_crash(self, error: Exception) -> None:
        """Raise ``error`` in the next message handled (at once if waiting for one)."""


async def leaked() -> None:
    """The ``leak`` fault's task: waits until cancelled."""
    await trio.sleep_forever()


def leaked_tasks() -> int:
    """How many ``leak`` tasks run now in this trio run (the task tree walked from the root)."""
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        if task.name == LEAKED_TASK:
            count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count
