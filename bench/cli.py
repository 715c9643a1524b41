"""``starling bench``: the benchmarks' commands, registered by :mod:`cli` from a source checkout."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
import structlog
from rich.console import Console

from cli.common import run_command
from cli.options import backend_options, debug_option
from settings import Settings

log = structlog.get_logger("starling")


class LazyGroup(click.Group):
    """A group whose commands in ``lazy`` (name → ``"module:attribute"``) are imported
    only when listed or run, so that other commands do not pay for their imports."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    "bench",
    cls=LazyGroup,
    lazy={
        "realtime": "bench.realtime:command",
        "soak": "bench.soak:command",
        "exhaustion": "bench.exhaustion:command",
        "simulate-cluster": "bench.simulate_cluster:command",
    },
)
def bench_group() -> None:
    """Benchmarks: print a table and write JSON under bench/results/.

    \b
    Examples:
      starling bench social --runs 3
      starling bench feeds --source ../shared/data
      starling bench realtime --clients native --knee --repeat 3
      starling bench soak --minutes 30
      starling bench exhaustion --runs 3
    """


@bench_group.command("social")
@backend_options
@click.option("--clients", default=8, show_default=True, help="Concurrent connections.")
@click.option("--seconds", default=5.0, show_default=True, help="Length of each run.")
@click.option("--runs", default=3, show_default=True, help="Runs per figure (medians).")
@click.option("--only", help="Only the rows whose method contains this text.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="JSON file.")
@click.option("--readers", default=4, show_default=True, help="The server's graph readers.")
def bench_social_command(
    settings: Settings,
    debug: bool,
    clients: int,
    seconds: float,
    runs: int,
    only: str | None,
    output: Path | None,
    readers: int,
) -> None:
    """JSON-RPC latency and calls/s per social method, on the demo world (needs wrk).

    \b
    Examples:
      starling load demo && starling bench social
      starling bench social --only who_to_follow --runs 5
    """
    from bench.social import run

    run_command(
        debug,
        lambda: run(
            settings,
            clients=clients,
            seconds=seconds,
            runs=runs,
            only=only,
            output=output,
            readers=readers,
        ),
    )


@bench_group.command("feeds")
@click.option(
    "--sizes",
    default="100k,300k,1M",
    show_default=True,
    help="Candidate counts of the measured users (comma-separated; k and M suffixes).",
)
@click.option("--stories", default=1_200_000, show_default=True, help="Catalog size.")
@click.option("--repeat", default=15, show_default=True, help="Cold builds per size.")
@click.option("--warm-reads", default=2000, show_default=True, help="Warm reads per size.")
@click.option("--parallel", default=50, show_default=True, help="Users built at once.")
@click.option("--idle-builders", default=2000, show_default=True, help="For the memory figure.")
@click.option("--seed", default=42, show_default=True, help="Seed of every synthetic draw.")
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("../shared/data"),
    show_default=True,
    help="Directory holding the real story files.",
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="JSON file.")
@debug_option
def bench_feeds_command(
    sizes: str,
    stories: int,
    repeat: int,
    warm_reads: int,
    parallel: int,
    idle_builders: int,
    seed: int,
    source: Path,
    output: Path | None,
    debug: bool,
) -> None:
    """Ranked feeds vs their budgets (cold build, warm read, idle builder), on a SYNTHETIC catalog.

    The catalog and users are drawn from the real HN and Medium stories (seeded).

    \b
    Examples:
      starling bench feeds
      starling bench feeds --sizes 100k --stories 200000 --repeat 5
    """
    from bench.feeds import Inputs, parse_sizes, run

    try:
        inputs = Inputs(
            sizes=parse_sizes(sizes),
            stories=stories,
            repeat=repeat,
            warm_reads=warm_reads,
            parallel=parallel,
            idle_builders=idle_builders,
            seed=seed,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    console = Console(width=200)
    run_command(debug, lambda: run(inputs, source=source, output=output, console=console))
