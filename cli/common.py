"""What every command shares: logging, the backend flags, turning failures into one line."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import structlog
from rich import box
from rich.console import Console
from rich.table import Table

from actors.feeds import (
    ScorerConfigError,
)
from auth.tokens import load_secret
from datasets.importers import MalformedInput
from datasets.stories import StoryReport
from settings import Settings
from stores.errors import StoreError
from stores.graph import ImportSummary

log = structlog.get_logger("starling")


def configure_logging(debug: bool) -> None:
    """Human-readable logs on a terminal, JSON lines otherwise."""
    # The Neo4j driver logs each retry of a transaction as a warning; the
    # final failure reaches us as an exception and is reported once.
    logging.getLogger("neo4j").setLevel(logging.DEBUG if debug else logging.ERROR)
    # Tracebacks without the frames' local variables: they hold secrets, keys and tokens.
    renderer: Any = (
        structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
        )
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info if not sys.stderr.isatty() else lambda *a: a[2],
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if debug else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def run_command(debug: bool, main: Callable[[], Any]) -> Any:
    """Run ``main`` and turn expected failures into one clear line (traceback with --debug)."""
    configure_logging(debug)
    try:
        return main()
    except (StoreError, MalformedInput, ScorerConfigError, OSError, ValueError) as error:
        if debug:
            raise
        hint = {
            "ScorerConfigError": "fix the weights file (see actors/feeds/weights.toml)",
            "BackendUnavailable": "is the backend running and the URL right?",
            "QueryError": "run with --debug for the query and traceback",
            "ConfigError": "see `starling --help` for the URL forms",
            "MalformedInput": "fix the line, or drop --strict to skip malformed lines",
            "ValueError": "check the value named above (flags and STARLING_* variables)",
        }.get(type(error).__name__, "run with --debug for details")
        message = " ".join(str(error).split())  # one line, whatever the driver said
        holder = LOCK_HOLDER.search(message)
        if holder is not None:
            hint = lock_hint(int(holder.group(1)))
        click.echo(f"error: {message} ({hint})", err=True)
        sys.exit(1)


LOCK_HOLDER = re.compile(r"Lock is held by PID (\d+)")
"""How Ladybug names the process that holds an embedded graph."""


def lock_hint(pid: int) -> str:
    """What to do when process ``pid`` holds the embedded graph: name it, say the ways out."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        command = ""
    who = f"process {pid}" + (f" (`{command}`)" if command else "")
    return (
        f"the data directory is held by {who}: stop that server first, or give this "
        "command another --data-dir; a running server takes new follows through "
        "social.follow on /rpc"
    )


def make_console(*, stderr: bool = False) -> Console:
    """A rich console: colours, live bars and box tables on a terminal; off one (a pipe, a
    file, CI), plain output: no colour, no wrapping of long lines (paths stay whole)."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, soft_wrap=True, no_color=True, highlight=False, emoji=False)


def summary_table(title: str, rows: list[tuple[str, int | float]], *, plain: bool = False) -> Table:
    """A two-column table of counts for the end of a load (ASCII lines when ``plain``)."""
    table = Table(title=title, box=box.ASCII if plain else box.HEAVY_HEAD)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in rows:
        table.add_row(label, f"{value:,}")
    return table


def import_rows(imports: tuple[tuple[str, ImportSummary], ...]) -> list[tuple[str, int | float]]:
    """``created`` / ``already present`` rows for each kind of import."""
    rows: list[tuple[str, int | float]] = []
    for label, summary in imports:
        rows += [
            (f"{label} created", summary.created),
            (f"{label} already present", summary.existing),
        ]
    return rows


def print_story_report(console: Console, name: str, report: StoryReport) -> None:
    """The reader's counts, its documented adjustments and malformed examples."""
    console.print(
        f"{name}: {report.rows:,} rows, {report.kept:,} stories kept, "
        f"{report.duplicates:,} duplicates and {report.malformed:,} malformed rows skipped"
    )
    for what, count in report.notes:
        console.print(f"  note: {what}: {count:,}")
    for number, reason in report.examples:
        console.print(f"  [yellow]line {number}: {reason}[/]")


def starling_invocation() -> str:
    """How a fresh shell in the current directory runs this ``starling``: ``starling`` when
    that is on ``PATH``, else the script's path (``.venv/bin/starling`` after ``make run``)."""
    script = Path(sys.executable).parent / "starling"
    on_path = shutil.which("starling")
    if not script.exists() or (on_path is not None and Path(on_path).resolve() == script.resolve()):
        return "starling"
    relative = os.path.relpath(script)
    return relative if relative.startswith(("/", ".")) else f"./{relative}"


class LineError(click.ClickException):
    """A command-line error shown as one line, ``error: <message>`` (exit 2: a usage error)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def run_client_command(debug: bool, main: Callable[[], Any]) -> Any:
    """:func:`run_command` for the realtime clients: their errors in one line, Ctrl-C clean."""
    from client import ClientError
    from datasets.reddit import CommentFileError

    def guarded() -> Any:
        try:
            return main()
        except (ClientError, CommentFileError) as error:
            if debug:
                raise
            click.echo(f"error: {' '.join(str(error).split())} ({error.hint})", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(0)  # Ctrl-C is how a tail ends: the connection was closed cleanly

    return run_command(debug, guarded)


def local_secret(data_dir: Path | None) -> bytes:
    """The token secret a server on this machine uses: STARLING_SECRET, else ``<data dir>/secret``.

    The file is created if missing, and then a note on stderr says so: only a
    server using that data dir will accept tokens signed with it.

    Raises:
        LineError: the secret is empty.
        OSError: the secret file cannot be read or created.
    """
    from auth.tokens import SECRET_ENV, SECRET_FILE

    directory = Settings.resolve(data_dir, None, None).data_dir  # the default when None
    created = os.environ.get(SECRET_ENV) is None and not (directory / SECRET_FILE).exists()
    try:
        secret = load_secret(directory)
    except ValueError as error:
        raise LineError(str(error)) from None
    if created:
        click.echo(
            f"note: created a new secret in {directory / SECRET_FILE}: only a server "
            f"with --data-dir {directory} (or the same STARLING_SECRET) accepts its tokens",
            err=True,
        )
    return secret
