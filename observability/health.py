"""The supervision tree as JSON for ``GET /health`` (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

from supervisor import ChildStatistics, SupervisorStatistics


def _detail(detail: Any) -> dict[str, Any]:
    if detail is None:
        return {}
    if dataclasses.is_dataclass(detail) and not isinstance(detail, type):
        fields = dataclasses.asdict(detail)
    elif isinstance(detail, dict):
        fields = dict(detail)
    else:
        return {}
    fields.pop("name", None)
    fields.pop("state", None)
    fields.pop("last_error", None)
    return fields


def child_node(child: ChildStatistics) -> dict[str, Any]:
    """One node: id, kind, state, restarts, last error, and the handle's own figures."""
    node: dict[str, Any] = {
        "id": child.id,
        "kind": child.kind,
        "restart": child.restart,
        "state": child.state,
        "restarts_total": child.restarts,
        "last_error": _error(child.last_error),
    }
    if isinstance(child.detail, SupervisorStatistics):
        node.update(supervisor_fields(child.detail))
        node["children"] = [child_node(grandchild) for grandchild in child.detail.children]
    else:
        node.update(_detail(child.detail))
    return node


def supervisor_fields(stats: SupervisorStatistics) -> dict[str, Any]:
    """A supervisor's own fields (strategy, intensity, restarts in window)."""
    return {
        "strategy": stats.strategy,
        "intensity": stats.intensity,
        "period_seconds": stats.period,
        "restarts_in_window": stats.restarts_in_window,
        "supervisor_restarts_total": stats.restarts_total,
        "supervisor_last_error": _error(stats.last_error),
    }


def health_tree(root: SupervisorStatistics) -> dict[str, Any]:
    """The whole tree, with ``status`` ``"ok"`` or ``"degraded"`` at the top."""
    return {
        "status": "ok" if root.is_healthy() else "degraded",
        "id": root.id,
        "kind": "supervisor",
        "state": root.state,
        **supervisor_fields(root),
        "children": [child_node(child) for child in root.children],
    }


def _error(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    type_, _, message = text.partition(": ")
    return {"type": type_, "message": message}


def live_feed_builders(root: SupervisorStatistics) -> int:
    """How many feed builder actors run now (the dynamic children of ``feed_builders``)."""
    return sum(1 for path, _ in root.walk() if "/feed_builders/" in path)
