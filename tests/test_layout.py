"""Dependency rules lint-imports cannot see (.importlinter checks the packages; these check
the two top-level modules and what importing the client SDK loads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {
    "actors", "auth", "bench", "cli", "client", "datasets", "observability", "protocols",
    "server", "settings", "stores", "supervisor",
}  # fmt: skip


def imported(module: Path) -> set[str]:
    """The top-level names of ours that ``module`` imports (anywhere in the file)."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & OURS


def test_the_composition_root_imports_no_entry_point() -> None:
    """server.py composes the domain; it imports neither the CLI, the client, nor bench."""
    assert imported(ROOT / "server.py") & {"cli", "client", "bench", "datasets"} == set()


def test_settings_import_only_what_they_configure() -> None:
    """settings.py imports no entry point and not the composition root."""
    forbidden = {"server", "cli", "client", "bench", "datasets", "observability"}
    assert imported(ROOT / "settings.py") & forbidden == set()


def test_the_client_sdk_loads_no_server_side_module() -> None:
    """``import client`` loads only the wire definitions it shares (no actor, store, app)."""
    probe = (
        "import sys, client; print(' '.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('actors', 'stores', 'observability', 'auth', 'datasets', "
        "'starlette', 'numpy') or m in ('protocols.app', 'protocols.methods', "
        "'protocols.websocket.session', 'protocols.websocket.gateway'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert loaded.stdout.split() == []
