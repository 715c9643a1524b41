"""The command line as a whole: every command listed with one line, every command's
--help with examples, and ``starling status`` against a running server."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import trio
from click.testing import CliRunner

from cli import main
from tests.in_process import invoke_in_thread, serving

COMMANDS = ["bench", "demo", "load", "replay", "serve", "status", "tail", "token"]


def pages(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every help page: the group's own, then each command's (groups recursively)."""
    found = [prefix]
    context = click.Context(group)
    for name in group.list_commands(context):  # lazy commands (bench realtime) included
        command = group.get_command(context, name)
        assert command is not None
        if isinstance(command, click.Group):
            found += pages(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def test_help_lists_every_command_with_one_line() -> None:
    """``starling --help`` names every command, each with a one-line summary."""
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1].splitlines()
    names = [line.split()[0] for line in listed if line.strip()]
    assert names == COMMANDS
    assert all(len(line.split()) > 1 for line in listed if line.strip())


@pytest.mark.parametrize("path", pages(main), ids=lambda path: " ".join(("starling", *path)))
def test_every_help_page_has_examples(path: tuple[str, ...]) -> None:
    """Every --help page (``starling``, each group, each command) explains it and shows at
    least one example."""
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, result.output
    assert "starling " in result.output.split("Example")[1]


async def test_status_shows_the_tree_and_rates(tmp_path: Path) -> None:
    """`starling status` prints the supervision tree (every subtree running) and the rates,
    from one system:dashboard snapshot read with a locally minted operator token."""
    with trio.fail_after(30):
        async with serving(tmp_path) as server:
            result = await invoke_in_thread(
                CliRunner(), ["status", "--url", server.url, "--data-dir", str(tmp_path)]
            )
    assert result.exit_code == 0, result.output
    for name in ("stores", "social", "feeds", "realtime", "transformer-0", "api"):
        assert f"running {name}" in result.output
    assert "events in /s" in result.output
    assert "Traceback" not in result.output
