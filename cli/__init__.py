"""Starling's command line: ``starling <command>``, one module per command group.

The commands compose the server (:mod:`server`), the client SDK
(:mod:`client`) and the data loaders (:mod:`datasets`); none of those imports
this package. ``starling bench`` registers from :mod:`bench.cli` when the
benchmarks are present (a source checkout: they are not in the wheel).
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from cli.demo import demo_command
from cli.load import load_group
from cli.replay import replay_group
from cli.serve import serve_command
from cli.status import status_command
from cli.tail import tail_command
from cli.token import token_command


@click.group()
def main() -> None:
    """Starling: a social graph, ranked feeds and realtime delivery in one trio server.

    \b
    Examples:
      starling demo --source ../shared/data
      starling serve --port 8080
      starling status
      starling tail post:1rt3kyh
    """


for command in (
    serve_command,
    load_group,
    status_command,
    demo_command,
    token_command,
    tail_command,
    replay_group,
):
    main.add_command(command)

BENCH_COMMANDS = "bench.cli"
"""Where ``starling bench`` comes from: looked up at run time, so that the CLI does not
depend on the benchmarks (they import the CLI's shared options, not the other way)."""

if importlib.util.find_spec(BENCH_COMMANDS.partition(".")[0]) is not None:
    main.add_command(importlib.import_module(BENCH_COMMANDS).bench_group)

__all__ = ["main"]
