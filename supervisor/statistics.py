"""Frozen snapshots of a supervision tree, for health endpoints and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ChildStatistics:
    """One child of a supervisor.

    Attributes:
        id: the child spec's id.
        kind: ``"worker"`` or ``"supervisor"``.
        restart: ``"permanent"``, ``"transient"`` or ``"temporary"``.
        state: ``"starting" | "running" | "restarting" | "stopping" | "stopped" | "failed"``.
        restarts: times this child was restarted, in total.
        last_error: ``"Type: message"`` of its last abnormal exit, or ``None``.
        detail: the handle's own ``statistics()`` (an actor's, or a nested
            :class:`SupervisorStatistics`), or ``None``.
    """

    id: str
    kind: str
    restart: str
    state: str
    restarts: int
    last_error: str | None
    detail: Any = None


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A supervisor and, recursively, its children.

    Attributes:
        id: the supervisor's id.
        state: ``"starting" | "running" | "stopping" | "stopped" | "failed"``.
        strategy: its restart strategy's name.
        intensity: restarts allowed within ``period``.
        period: the intensity window, in seconds.
        restarts_in_window: restarts counted in the current window.
        restarts_total: restarts since it started.
        last_error: ``"Type: message"`` of the last child failure it saw, or ``None``.
        children: its children, in start order.
    """

    id: str
    state: str
    strategy: str
    intensity: int
    period: float
    restarts_in_window: int
    restarts_total: int
    last_error: str | None
    children: tuple[ChildStatistics, ...]

    def is_healthy(self) -> bool:
        """Whether this supervisor runs and every permanent child runs, recursively."""
        if self.state != "running":
            return False
        for child in self.children:
            if child.restart == "permanent" and child.state != "running":
                return False
            if isinstance(child.detail, SupervisorStatistics) and not child.detail.is_healthy():
                return False
        return True

    def walk(self, path: str = "") -> Iterator[tuple[str, ChildStatistics]]:
        """Yield ``(path, child)`` for every child in the tree, depth first.

        Paths join ids with ``/``, starting below this supervisor, e.g.
        ``"social/graph_reader-0"``.
        """
        for child in self.children:
            child_path = f"{path}/{child.id}" if path else child.id
            yield child_path, child
            if isinstance(child.detail, SupervisorStatistics):
                yield from child.detail.walk(child_path)
