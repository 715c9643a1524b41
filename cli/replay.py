"""``starling replay comments``: replay real Reddit threads as live events."""

from __future__ import annotations

import functools
from pathlib import Path

import click
import structlog
import trio
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cli.common import make_console, run_client_command
from cli.options import api_key_option, debug_option

log = structlog.get_logger("starling")


@click.group("replay")
def replay_group() -> None:
    """Replay real data as live events, timed as they were written.

    \b
    Examples:
      starling replay comments ../shared/data/reddit_comments_au_2025.csv
      starling replay comments ../shared/data/reddit_comments_au_2025.csv --speed 600 --limit 200
    """


@replay_group.command("comments")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="Server URL.")
@click.option(
    "--speed",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Times faster than the threads were written: 60 plays an hour in a minute.",
)
@click.option(
    "--max-gap",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Longest pause, in seconds once sped up: longer quiet spells are cut to it.",
)
@api_key_option
@click.option("--limit", type=click.IntRange(min=1), help="Replay only the first N comments.")
@debug_option
def replay_comments_command(
    file: Path,
    url: str,
    speed: float,
    max_gap: float,
    api_key: str | None,
    limit: int | None,
    debug: bool,
) -> None:
    """Replay Reddit comment threads as live comment events on post:<id> channels.

    Each comment of FILE (the columns of reddit_comments_au_2025.csv) is
    published with realtime.publish on post:<post_id>, oldest first, with the
    threads' own timing sped up by --speed; quiet spells longer than
    --max-gap seconds are shortened to it (the file spans a year). At the
    defaults the whole file takes about three hours. Malformed rows are
    skipped and counted.

    \b
    Examples:
      starling replay comments ../shared/data/reddit_comments_au_2025.csv
      starling replay comments ../shared/data/reddit_comments_au_2025.csv --speed 3600 --limit 500
      starling tail post:1krq69r     # meanwhile, in another terminal
    """
    run_client_command(
        debug,
        lambda: trio.run(
            functools.partial(
                replay_comments, file, url, speed=speed, max_gap=max_gap, api_key=api_key,
                limit=limit,
            )
        ),
    )  # fmt: skip


async def replay_comments(
    file: Path, url: str, *, speed: float, max_gap: float, api_key: str | None, limit: int | None
) -> None:
    """Read ``file``, replay it with a progress bar, print a summary (``starling replay``)."""
    from rich.progress import MofNCompleteColumn

    from client.replay import replay
    from datasets.reddit import read_comment_file

    console = make_console(stderr=True)
    with console.status(f"reading {file.name}"):
        comments, report = await trio.to_thread.run_sync(read_comment_file, file)
    comments = comments[:limit]
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"replaying {file.name} at ×{speed:g}", total=len(comments))

        def on_progress(sent: int, failed: int) -> None:
            progress.update(task, completed=sent + failed)

        summary = await replay(
            comments, url, speed=speed, max_gap=max_gap, api_key=api_key, on_progress=on_progress
        )

    def say(text: str, style: str | None = None) -> None:
        # The file's text is data, not rich markup; one line each, unwrapped.
        console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    for line, reason in report.examples:
        say(f"{file}:{line}: {reason}", "yellow")
    for comment, error in summary.errors:
        say(f"comment {comment}: {error}", "yellow")
    say(
        f"replayed {file.name}: {summary.sent:,} sent, {summary.failed:,} failed, "
        f"on {summary.channels:,} channels in {summary.seconds:.1f} s "
        f"({summary.batches:,} batches); {report.malformed:,} malformed rows skipped"
    )
