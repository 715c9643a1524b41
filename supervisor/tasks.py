"""Where a task runs in trio's task tree, and waiting for a task to end.

A supervisor carries out an operator's act (restart a child, crash it) in its
own task. When the task that asks runs *inside* what the act stops (the HTTP
request that restarts ``api`` runs in ``api``'s task), waiting for the act
would wait for its own end; the supervisor runs the act once the asking task
has ended instead, so that it can answer first (:func:`runs_inside`,
:func:`wait_ended`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

import trio
from trio.lowlevel import Task


def ancestors(task: Task) -> Iterator[Task]:
    """``task``, then the task that runs its nursery, and so on up to the root task."""
    current: Task | None = task
    while current is not None:
        yield current
        nursery = current.parent_nursery
        current = nursery.parent_task if nursery is not None else None


def runs_inside(task: Task, tasks: Collection[Task | None]) -> bool:
    """Whether ``task`` is one of ``tasks`` or runs below one of them (cancelling that one
    would cancel ``task``)."""
    wanted = {id(candidate) for candidate in tasks if candidate is not None}
    return any(id(ancestor) in wanted for ancestor in ancestors(task))


def is_running(task: Task) -> bool:
    """Whether ``task`` has not ended (the root task always runs)."""
    nursery = task.parent_nursery
    return nursery is None or task in nursery.child_tasks


class _Exited(trio.abc.Instrument):
    """Sets ``event`` when ``task`` exits (trio calls ``task_exited`` for every task)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.event = trio.Event()

    def task_exited(self, task: Task) -> None:
        if task is self.task:
            self.event.set()


async def wait_ended(task: Task) -> None:
    """Return once ``task`` has ended, and after the tasks its end woke have run once
    (the parent that was waiting for it, say, to send the reply it computed).

    Bound it with a cancel scope: a task may never end.
    """
    watch = _Exited(task)
    trio.lowlevel.add_instrument(watch)
    try:
        if is_running(task):
            await watch.event.wait()
    finally:
        trio.lowlevel.remove_instrument(watch)
    # Woken in the same batch as the tasks the exit woke: let them run first.
    await trio.lowlevel.cancel_shielded_checkpoint()
