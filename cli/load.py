"""``starling load graph|stories|demo``: import real data into the graph store."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import click
import structlog
import trio
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from cli.common import import_rows, make_console, print_story_report, run_command, summary_table
from cli.options import backend_options
from datasets.demo import build_demo_world
from datasets.importers import Header, import_edge_list, read_edge_list
from datasets.stories import StoryFormat, read_stories
from datasets.story_import import import_stories
from settings import Settings
from stores.backends import (
    redact,
)

log = structlog.get_logger("starling")


@click.group("load")
def load_group() -> None:
    """Import real data into the graph store (stop a server using the same data directory).

    \b
    Examples:
      starling load demo --source ../shared/data
      starling load graph ../shared/data/soc-Slashdot0902.txt
      starling load stories ../shared/data/hacker_news.csv --format hn
    """


@load_group.command("graph")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@backend_options
@click.option("--undirected", is_flag=True, help="Store each edge in both directions.")
@click.option("--strict", is_flag=True, help="Stop at the first malformed line.")
@click.option("--if-empty", is_flag=True, help="Do nothing if the graph already has users.")
@click.option(
    "--header",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    show_default=True,
    help="Whether the first line is column names. auto: yes if they are names like "
    "'source target', or words above numeric ids; the summary says when it skipped one.",
)
def load_graph_command(
    file: Path,
    settings: Settings,
    debug: bool,
    undirected: bool,
    strict: bool,
    if_empty: bool,
    header: Header,
) -> None:
    """Import an edge list: users and FOLLOWS edges.

    One edge per line, source then target, separated by whitespace or a comma;
    '#' and '%' lines are comments; self-loops are skipped and counted; a line
    with one field or more than two (a weight column) is malformed. Loading the
    same file twice gives the same graph.

    \b
    Examples:
      starling load graph ../shared/data/soc-Slashdot0902.txt
      starling load graph follows.csv --header yes --strict
      starling load graph friends.txt --undirected --data-dir /var/lib/starling
    """
    run_command(
        debug,
        lambda: trio.run(
            functools.partial(load_graph, settings, file, undirected, strict, if_empty, header)
        ),
    )


async def load_graph(
    settings: Settings,
    file: Path,
    undirected: bool,
    strict: bool,
    if_empty: bool,
    header: Header = "auto",
) -> None:
    """Read ``file`` with a progress bar, bulk-import it, print a summary."""
    console = make_console(stderr=True)
    graph = await settings.open_graph()
    try:
        if if_empty and await graph.session().read("MATCH (u:User) RETURN u.id AS id LIMIT 1"):
            console.print(f"[green]graph already loaded[/] in {redact(settings.graph_url)}")
            return
        started = time.perf_counter()
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            size = (await trio.Path(file).stat()).st_size
            reading = progress.add_task(f"reading {file.name}", total=size)
            edges = await trio.to_thread.run_sync(
                functools.partial(
                    read_edge_list,
                    file,
                    undirected=undirected,
                    strict=strict,
                    header=header,
                    on_progress=lambda n: progress.advance(reading, n),
                )
            )
        with console.status(
            f"writing {edges.report.users:,} users and {len(edges.pairs):,} follows"
        ):
            result = await import_edge_list(graph, edges)
        report = edges.report
        rows: list[tuple[str, int | float]] = [("lines read", report.lines)]
        rows += import_rows((("users", result.users), ("follows", result.follows)))
        rows += [
            ("self-loops skipped", report.self_loops),
            ("duplicate edges skipped", report.duplicates),
            ("malformed lines skipped", report.malformed),
            ("seconds", round(time.perf_counter() - started, 1)),
        ]
        console.print(
            summary_table(
                f"{file.name} → {redact(settings.graph_url)}", rows, plain=not console.is_terminal
            )
        )
        if report.header is not None:
            number, text = report.header
            console.print(
                f"skipped line {number} as a header (--header {header}): {text!r}",
                markup=False,
            )
        for number, reason in report.examples:
            console.print(f"[yellow]{file}:{number}: {reason}[/]")
    finally:
        await graph.aclose()


@load_group.command("stories")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@backend_options
@click.option(
    "--format",
    "format_",
    type=click.Choice(["canonical", "hn", "medium", "reddit"]),
    default="canonical",
    show_default=True,
    help="canonical CSV, the Hacker News CSV, the Medium data-science CSV or the Reddit posts CSV.",
)
@click.option("--strict", is_flag=True, help="Stop at the first malformed row.")
def load_stories_command(
    file: Path,
    settings: Settings,
    debug: bool,
    format_: StoryFormat,
    strict: bool,
) -> None:
    """Import stories: posts, their authors, topics and publications.

    canonical: CSV with header id,author,title,tags,publication,published_at,
    reading_time,claps (tags separated by '|'). Every row is checked before
    anything is written; loading twice gives the same graph.

    \b
    Examples:
      starling load stories posts.csv
      starling load stories ../shared/data/hacker_news.csv --format hn
      starling load stories ../shared/data/medium_articles_datascience_2020.csv --format medium
      starling load stories ../shared/data/reddit_posts_au_2025.csv --format reddit
    """
    run_command(
        debug, lambda: trio.run(functools.partial(load_stories, settings, file, format_, strict))
    )


async def load_stories(settings: Settings, file: Path, format_: StoryFormat, strict: bool) -> None:
    """Read, check and import one story file, then print what was done."""
    console = make_console(stderr=True)
    started = time.perf_counter()
    graph = await settings.open_graph()
    try:
        with console.status(f"reading {file.name}"):
            stories, report = await trio.to_thread.run_sync(
                functools.partial(read_stories, file, format_, strict=strict)
            )
        with console.status(f"writing {len(stories):,} stories"):
            result = await import_stories(graph, stories)
    finally:
        await graph.aclose()
    print_story_report(console, file.name, report)
    rows = import_rows(
        (
            ("users", result.users),
            ("posts", result.posts),
            ("topics", result.topics),
            ("publications", result.publications),
            ("WROTE", result.wrote),
            ("TAGGED", result.tagged),
            ("PUBLISHED_IN", result.published_in),
        )
    )
    rows.append(("seconds", round(time.perf_counter() - started, 1)))
    console.print(
        summary_table(
            f"{file.name} → {redact(settings.graph_url)}", rows, plain=not console.is_terminal
        )
    )


@load_group.command("demo")
@backend_options
@click.option("--seed", default=42, show_default=True, help="Seed of every synthetic step.")
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("../shared/data"),
    show_default=True,
    help="Directory holding the real data sets.",
)
@click.option("--if-empty", is_flag=True, help="Do nothing if the graph already has posts.")
def load_demo_command(
    settings: Settings,
    debug: bool,
    seed: int,
    source: Path,
    if_empty: bool,
) -> None:
    """Build the demo world from the real data: Slashdot follows, HN, Medium and Reddit stories.

    Story authors are mapped onto graph users, and recommendations, reads and
    topic/publication follows are drawn from the stories' points and claps:
    those steps are synthetic and deterministic for a seed (docs/data.md).

    \b
    Examples:
      starling load demo
      starling load demo --seed 7 --data-dir /tmp/demo
    """
    run_command(
        debug, lambda: trio.run(functools.partial(load_demo, settings, source, seed, if_empty))
    )


async def load_demo(settings: Settings, source: Path, seed: int, if_empty: bool) -> None:
    """Build the demo world with a progress display, then print its summary."""
    console = make_console(stderr=True)
    started = time.perf_counter()
    graph = await settings.open_graph()
    try:
        if if_empty and await graph.session().read("MATCH (p:Post) RETURN p.id AS id LIMIT 1"):
            console.print(f"[green]demo world already loaded[/] in {redact(settings.graph_url)}")
            return
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as progress:
            current: list[TaskID] = []

            def on_step(what: str, count: int | None) -> None:
                if current:
                    progress.update(current[-1], completed=1, total=1)
                label = f"{what} ({count:,})" if count is not None else what
                current.append(progress.add_task(label, total=None))

            summary = await build_demo_world(graph, source, seed=seed, on_step=on_step)
            if current:
                progress.update(current[-1], completed=1, total=1)
    finally:
        await graph.aclose()
    print_story_report(console, "hacker_news.csv", summary.hn)
    print_story_report(console, "medium_articles_datascience_2020.csv", summary.medium)
    print_story_report(console, "reddit_posts_au_2025.csv", summary.reddit)
    rows = import_rows(summary.imports())
    rows += [
        ("self-loops skipped", summary.edges.self_loops),
        ("seconds", round(time.perf_counter() - started, 1)),
    ]
    console.print(
        summary_table(
            f"demo world (seed {seed}) → {redact(settings.graph_url)}",
            rows,
            plain=not console.is_terminal,
        )
    )


# -- status ---------------------------------------------------------------------
