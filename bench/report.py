"""Benchmark output: a rich table on the terminal and a JSON file with the machine.

Every benchmark prints its table and writes ``bench/results/<name>.json``
(or ``--output``) with the rows, the command line and the machine, so the
README can quote figures with the command that produced them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def print_table(
    title: str, rows: Sequence[Mapping[str, Any]], console: Console | None = None
) -> None:
    """Print ``rows`` (dicts with the same keys) as a table."""
    console = console or Console(width=200)
    table = Table(title=title)
    if not rows:
        console.print(f"{title}: no rows")
        return
    for column in rows[0]:
        table.add_column(
            column, justify="left" if column in ("method", "case", "what") else "right"
        )
    for row in rows:
        table.add_row(*(_cell(value) for value in row.values()))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
    output: Path | None = None,
) -> Path:
    """Write the rows, the command and the machine to ``output``.

    The default path is ``bench/results/NAME.json``.
    """
    path = output or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **(extra or {}),
        "rows": list(rows),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
