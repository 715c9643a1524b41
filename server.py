"""Starling's composition root and command line.

``server.py`` is the one place that knows every concrete class: it reads the
settings, opens the backends, builds the supervision tree and serves the app::

    root                      one_for_one
    ├── stores                one_for_all   backend monitors (graph, cache/stream/pubsub)
    ├── social                one_for_one   graph_reader × N, graph_writer, social service
    ├── feeds                 rest_for_one  story index, feed builders, registry, events
    ├── realtime              rest_for_one  publisher, relay, transformers, nozzle, events
    ├── api                                 hypercorn (trio worker) serving the ASGI app
    │                                       (/rpc, /health, /metrics, /ws, /dashboard, /demo)
    └── dashboard                           a snapshot a second on system:dashboard

Settings come from the command line, then ``STARLING_*`` environment
variables, then the embedded defaults (Ladybug under the data directory,
in-process cache/stream/pubsub).
"""

from __future__ import annotations

import functools
import gc
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog
import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from actors.bus import EventBus
from actors.feeds import (
    FeedSettings,
    GraphContextSource,
    LinearScorer,
    PipelineParams,
    RemoteScorer,
    ScorerConfigError,
    feeds_subtree,
)
from actors.feeds.scorer import DEFAULT_REMOTE_TIMEOUT
from actors.monitor import BackendMonitor
from actors.realtime.pipeline import RealtimeSettings, default_consumer, realtime_subtree
from actors.social import GraphReader, GraphWriter, ReaderPool, SocialEvent, SocialService
from auth.tokens import load_secret
from datasets.demo import build_demo_world
from datasets.importers import MalformedInput, import_edge_list, read_edge_list
from datasets.stories import StoryFormat, StoryReport, read_stories
from datasets.story_import import import_stories
from observability.dashboard import DashboardReporter, Snapshots, Sources
from protocols.api import Services
from protocols.app import AppConfig, create_app
from protocols.http import HttpServer
from protocols.websocket import (
    DEFAULT_MAX_CONNECTIONS,
    Limits,
    WebSocketGateway,
    gap_frame,
    pub_frame,
)
from stores.backends import (
    DEFAULT_STREAM_MAX_LENGTH,
    KeyValueBackend,
    default_graph_url,
    open_graph,
    open_key_value,
    redact,
)
from stores.errors import StoreError
from stores.graph import GraphStore, ImportSummary
from supervisor import Backoff, ChildSpec, Strategy, Supervisor, SupervisorStatistics

log = structlog.get_logger("starling")

GC_THRESHOLDS = (20_000, 20, 100)
"""``gc.set_threshold`` while serving (CPython's defaults are 700, 10, 10)."""

SECONDS = 1.0
SHUTDOWN_GRACE = 10 * SECONDS
DEFAULT_DATA_DIR = Path("./starling-data")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs to reach the backends.

    Attributes:
        data_dir: where embedded data lives (the Ladybug graph, the token secret).
        graph_url: ``ladybug://PATH`` | ``neo4j://…`` | ``bolt://…``.
        redis_url: ``memory://`` | ``redis://…``.
        neo4j_user, neo4j_password: Neo4j credentials (``STARLING_NEO4J_USER`` /
            ``STARLING_NEO4J_PASSWORD``).
        api_key: bearer key for ``/rpc`` (``STARLING_API_KEY``); ``None``: loopback only.
    """

    data_dir: Path
    graph_url: str
    redis_url: str
    neo4j_user: str | None = None
    neo4j_password: str | None = None
    api_key: str | None = None

    @classmethod
    def resolve(
        cls, data_dir: Path | None, graph_url: str | None, redis_url: str | None
    ) -> Settings:
        """Flags first, then the environment, then the embedded defaults."""
        directory = Path(data_dir or os.environ.get("STARLING_DATA_DIR") or DEFAULT_DATA_DIR)
        return cls(
            data_dir=directory,
            graph_url=graph_url
            or os.environ.get("STARLING_GRAPH_URL")
            or default_graph_url(directory),
            redis_url=redis_url or os.environ.get("STARLING_REDIS_URL") or "memory://",
            neo4j_user=os.environ.get("STARLING_NEO4J_USER"),
            neo4j_password=os.environ.get("STARLING_NEO4J_PASSWORD"),
            api_key=os.environ.get("STARLING_API_KEY") or None,
        )

    async def open_graph(self, *, max_connections: int = 8) -> GraphStore:
        """Open the graph store, creating the data directory for the embedded one."""
        if self.graph_url.startswith("ladybug://"):
            self.data_dir.mkdir(parents=True, exist_ok=True)
        graph = await open_graph(
            self.graph_url,
            user=self.neo4j_user,
            password=self.neo4j_password,
            max_connections=max_connections,
        )
        await graph.ensure_schema()
        return graph


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """``starling serve`` options."""

    host: str = "127.0.0.1"
    port: int = 8080
    readers: int = 4
    max_body_bytes: int = 1 << 20
    monitor_interval: float = 5 * SECONDS
    feeds: FeedSettings = field(default_factory=FeedSettings)
    feed_weights: Path | None = None
    scorer_url: str | None = None
    scorer_timeout: float = DEFAULT_REMOTE_TIMEOUT
    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)
    ws_limits: Limits = field(default_factory=Limits)
    ws_max_connections: int = DEFAULT_MAX_CONNECTIONS
    stream_max_length: int = DEFAULT_STREAM_MAX_LENGTH


def build_tree(
    settings: Settings,
    options: ServeOptions,
    graph: GraphStore,
    key_value: KeyValueBackend,
    secret: bytes,
) -> Supervisor:
    """The supervision tree, with the HTTP server as its last child.

    Args:
        secret: the WebSocket token secret (:func:`auth.tokens.load_secret`).
    """
    stores = Supervisor(
        "stores",
        [
            ChildSpec(
                "graph",
                BackendMonitor(
                    redact(settings.graph_url), graph.ping, interval=options.monitor_interval
                ).run,
            ),
            ChildSpec(
                "cache",
                BackendMonitor(
                    key_value.url, key_value.ping, interval=options.monitor_interval
                ).run,
            ),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        intensity=20,
        period=60,
        backoff=Backoff(initial=0.5, factor=2, maximum=15),
    )
    bus: EventBus[SocialEvent] = EventBus()
    readers = [GraphReader(f"graph_reader-{i}", graph) for i in range(options.readers)]
    writer = GraphWriter(graph, bus)
    pool = ReaderPool([reader.ref for reader in readers])
    service = SocialService(pool, writer.ref, bus, dialect=graph.dialect)
    social = Supervisor(
        "social",
        [
            *(ChildSpec(reader.name, reader.run) for reader in readers),
            ChildSpec(writer.name, writer.run),
            ChildSpec(service.name, service.run),
        ],
        intensity=10,
        period=10,
        backoff=Backoff(initial=0.05, factor=2, maximum=5),
    )
    scorer = LinearScorer.from_file(options.feed_weights)
    remote = None
    if options.scorer_url is not None:
        remote = RemoteScorer(options.scorer_url, scorer, timeout=options.scorer_timeout)
    feeds, feeds_handle = feeds_subtree(
        store=graph,
        bus=bus,
        context=GraphContextSource(pool),
        cache=key_value.cache,
        settings=options.feeds,
        scorer=scorer,
        remote=remote,
        pubsub=key_value.pubsub if key_value.shared else None,
    )
    realtime, realtime_handle = realtime_subtree(
        stream=key_value.stream,
        pubsub=key_value.pubsub,
        sequencer=key_value.sequencer,
        cache=key_value.cache,
        shared=key_value.shared,
        settings=options.realtime,
        render=pub_frame,
        render_gap=gap_frame,
        bus=bus,
        readers=pool,
    )

    def tree() -> SupervisorStatistics:
        return root.statistics()

    services = Services(
        tree=tree,
        social=service.ref,
        bus=bus.statistics,
        feeds=feeds_handle,
        realtime=realtime_handle,
        restart=lambda path: root.restart_path(path),
    )
    gateway = WebSocketGateway(
        realtime_handle.publisher,
        secret,
        limits=options.ws_limits,
        max_connections=options.ws_max_connections,
    )
    app = create_app(
        services,
        AppConfig(api_key=settings.api_key, max_body_bytes=options.max_body_bytes),
        websocket=gateway,
        secret=secret,
    )
    reporter = DashboardReporter(
        realtime_handle.publisher,
        Snapshots(
            Sources(
                tree=tree,
                realtime=realtime_handle.statistics,
                gateway=gateway.statistics,
                feeds=feeds_handle.counters,
                rpc_tally=app.state.metrics.rpc_tally,
            )
        ),
    )
    http = HttpServer(app, host=options.host, port=options.port, websocket=gateway)
    root = Supervisor(
        "root",
        [
            ChildSpec.supervisor("stores", stores.run),
            ChildSpec.supervisor("social", social.run),
            ChildSpec.supervisor("feeds", feeds.run),
            ChildSpec.supervisor("realtime", realtime.run),
            ChildSpec("api", http.run, shutdown=5 * SECONDS),
            ChildSpec(reporter.name, reporter.run),
        ],
        intensity=3,
        period=30,
    )
    return root


async def serve(
    settings: Settings,
    options: ServeOptions,
    *,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the backends, run the tree until SIGINT/SIGTERM, then stop it in reverse.

    The shutdown is graceful (stop accepting, drain, stop children in reverse
    order) and bounded by :data:`SHUTDOWN_GRACE` seconds, then cancelled.
    """
    graph = await settings.open_graph(max_connections=options.readers + 2)
    key_value = open_key_value(settings.redis_url, stream_max_length=options.stream_max_length)
    try:
        secret = await trio.to_thread.run_sync(load_secret, settings.data_dir)
        root = build_tree(settings, options, graph, key_value, secret)
        if settings.api_key is None:
            log.warning("STARLING_API_KEY is not set: /rpc answers loopback clients only")
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def run_root(*, task_status: trio.TaskStatus[Supervisor]) -> None:
                    await root.run(task_status=task_status)
                    nursery.cancel_scope.cancel()  # the tree stopped: stop listening

                await nursery.start(run_root)
                log.info(
                    "starling is serving",
                    url=f"http://{options.host}:{options.port}",
                    graph=redact(settings.graph_url),
                    cache=key_value.url,
                )
                # What start-up built (modules, the tree, the backends) never becomes
                # garbage: out of the collector's sight, full collections are shorter.
                gc.freeze()
                # Fewer, larger young collections: a reconnect storm of 10,000 clients
                # ran 20 % faster (700/10/10 promoted each connection's objects early).
                gc.set_threshold(*GC_THRESHOLDS)
                task_status.started(root)
                async for signum in signals:
                    log.info("stopping", signal=signal.Signals(signum).name)
                    root.request_stop()
                    nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE
                    break
    finally:
        with trio.CancelScope(shield=True):
            await key_value.aclose()
            await graph.aclose()
    log.info("stopped")


# -- command line ------------------------------------------------------------


def configure_logging(debug: bool) -> None:
    """Human-readable logs on a terminal, JSON lines otherwise."""
    # The Neo4j driver logs each retry of a transaction as a warning; the
    # final failure reaches us as an exception and is reported once.
    logging.getLogger("neo4j").setLevel(logging.DEBUG if debug else logging.ERROR)
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
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


def backend_options(command: F) -> F:
    """``--data-dir``, ``--graph-url``, ``--redis-url`` and ``--debug``, on every command."""
    options = [
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Embedded data directory [env STARLING_DATA_DIR; default ./starling-data].",
        ),
        click.option(
            "--graph-url", help="ladybug://PATH | neo4j://… | bolt://… [env STARLING_GRAPH_URL]."
        ),
        click.option("--redis-url", help="memory:// | redis://… [env STARLING_REDIS_URL]."),
        click.option("--debug", is_flag=True, help="Show tracebacks and debug logs."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


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
        click.echo(f"error: {message} ({hint})", err=True)
        sys.exit(1)


@click.group()
def main() -> None:
    """Starling: a social graph, ranked feeds and realtime delivery in one trio server."""


@main.command("serve")
@backend_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option("--readers", default=4, show_default=True, help="Graph reader actors.")
@click.option(
    "--max-body-bytes", default=1 << 20, show_default=True, help="Largest /rpc request body."
)
@click.option(
    "--feed-ttl", default=600.0, show_default=True, help="Seconds a ranked feed is served/cached."
)
@click.option(
    "--feed-idle", default=300.0, show_default=True, help="Seconds before an idle feed actor stops."
)
@click.option("--feed-max-live", default=10_000, show_default=True, help="Most live feed actors.")
@click.option(
    "--feed-horizon-days",
    default=3650.0,
    show_default=True,
    help="Stories older than this never enter a feed (the demo's stories date from 2016-2020).",
)
@click.option(
    "--feed-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="STARLING_FEED_WEIGHTS",
    help="Scorer weights TOML [env STARLING_FEED_WEIGHTS; default: the packaged weights].",
)
@click.option(
    "--scorer-url",
    envvar="STARLING_SCORER_URL",
    help="A JSON-RPC model service to rank with, falling back to the weights "
    "[env STARLING_SCORER_URL].",
)
@click.option("--transformers", default=1, show_default=True, help="Realtime transformer actors.")
@click.option(
    "--history-size", default=100, show_default=True, help="Publications kept per channel."
)
@click.option(
    "--ws-max-connections", default=10_000, show_default=True, help="Most WebSocket clients."
)
@click.option(
    "--ws-max-outbox-bytes",
    default=1 << 20,
    show_default=True,
    help="Bytes queued for one WebSocket client before it is closed as slow (4008).",
)
@click.option(
    "--stream-max-length",
    default=DEFAULT_STREAM_MAX_LENGTH,
    show_default=True,
    envvar="STARLING_STREAM_MAX_LENGTH",
    help="Entries the event stream keeps when this process appends (XADD MAXLEN ~) "
    "[env STARLING_STREAM_MAX_LENGTH].",
)
@click.option(
    "--consumer",
    envvar="STARLING_CONSUMER",
    help="This process's name in the stream's consumer group "
    "[env STARLING_CONSUMER; default <hostname>-<pid>].",
)
def serve_command(
    data_dir: Path | None,
    graph_url: str | None,
    redis_url: str | None,
    debug: bool,
    host: str,
    port: int,
    readers: int,
    max_body_bytes: int,
    feed_ttl: float,
    feed_idle: float,
    feed_max_live: int,
    feed_horizon_days: float,
    feed_weights: Path | None,
    scorer_url: str | None,
    transformers: int,
    history_size: int,
    ws_max_connections: int,
    ws_max_outbox_bytes: int,
    stream_max_length: int,
    consumer: str | None,
) -> None:
    """Serve JSON-RPC, /health, /metrics and the WebSocket /ws until Ctrl-C.

    \b
    Examples:
      starling serve
      starling serve --port 9000 --data-dir /var/lib/starling
      STARLING_GRAPH_URL=bolt://localhost:7687 starling serve
      starling serve --feed-ttl 120 --scorer-url http://127.0.0.1:9000/score
    """
    settings = Settings.resolve(data_dir, graph_url, redis_url)
    try:
        feeds = FeedSettings(
            ttl=feed_ttl,
            idle_timeout=feed_idle,
            max_live=feed_max_live,
            params=PipelineParams(horizon_seconds=feed_horizon_days * 86_400),
        )
        realtime = RealtimeSettings(
            transformers=transformers,
            history_size=history_size,
            consumer=consumer or default_consumer(),
        )
        limits = Limits(max_outbox_bytes=ws_max_outbox_bytes)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    options = ServeOptions(
        host=host,
        port=port,
        readers=readers,
        max_body_bytes=max_body_bytes,
        feeds=feeds,
        feed_weights=feed_weights,
        scorer_url=scorer_url,
        realtime=realtime,
        ws_limits=limits,
        ws_max_connections=ws_max_connections,
        stream_max_length=stream_max_length,
    )
    run_command(debug, lambda: trio.run(functools.partial(serve, settings, options)))


@main.group("load")
def load_group() -> None:
    """Import real data into the graph store."""


@load_group.command("graph")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@backend_options
@click.option("--undirected", is_flag=True, help="Store each edge in both directions.")
@click.option("--strict", is_flag=True, help="Stop at the first malformed line.")
@click.option("--if-empty", is_flag=True, help="Do nothing if the graph already has users.")
def load_graph_command(
    file: Path,
    data_dir: Path | None,
    graph_url: str | None,
    redis_url: str | None,
    debug: bool,
    undirected: bool,
    strict: bool,
    if_empty: bool,
) -> None:
    """Import an edge list: users and FOLLOWS edges.

    One edge per line, source then target, separated by whitespace or a comma;
    '#' and '%' lines are comments; self-loops are skipped and counted.
    Loading the same file twice gives the same graph.

    \b
    Example:
      starling load graph ../shared/data/soc-Slashdot0902.txt
    """
    settings = Settings.resolve(data_dir, graph_url, redis_url)
    run_command(
        debug,
        lambda: trio.run(
            functools.partial(load_graph, settings, file, undirected, strict, if_empty)
        ),
    )


async def load_graph(
    settings: Settings, file: Path, undirected: bool, strict: bool, if_empty: bool
) -> None:
    """Read ``file`` with a progress bar, bulk-import it, print a summary."""
    console = Console(stderr=True)
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
        console.print(summary_table(f"{file.name} → {redact(settings.graph_url)}", rows))
        for number, reason in report.examples:
            console.print(f"[yellow]{file}:{number}: {reason}[/]")
    finally:
        await graph.aclose()


def summary_table(title: str, rows: list[tuple[str, int | float]]) -> Table:
    """A two-column table of counts for the end of a load."""
    table = Table(title=title)
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


@load_group.command("stories")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@backend_options
@click.option(
    "--format",
    "format_",
    type=click.Choice(["canonical", "hn", "medium"]),
    default="canonical",
    show_default=True,
    help="canonical CSV, the Hacker News CSV or the Medium data-science CSV.",
)
@click.option("--strict", is_flag=True, help="Stop at the first malformed row.")
def load_stories_command(
    file: Path,
    data_dir: Path | None,
    graph_url: str | None,
    redis_url: str | None,
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
    """
    settings = Settings.resolve(data_dir, graph_url, redis_url)
    run_command(
        debug, lambda: trio.run(functools.partial(load_stories, settings, file, format_, strict))
    )


async def load_stories(settings: Settings, file: Path, format_: StoryFormat, strict: bool) -> None:
    """Read, check and import one story file, then print what was done."""
    console = Console(stderr=True)
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
    console.print(summary_table(f"{file.name} → {redact(settings.graph_url)}", rows))


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
    data_dir: Path | None,
    graph_url: str | None,
    redis_url: str | None,
    debug: bool,
    seed: int,
    source: Path,
    if_empty: bool,
) -> None:
    """Build the demo world from the real data: Slashdot follows, HN and Medium stories.

    Story authors are mapped onto graph users, and recommendations, reads and
    topic/publication follows are drawn from the stories' points and claps:
    those steps are synthetic and deterministic for a seed (docs/data.md).

    \b
    Examples:
      starling load demo
      starling load demo --seed 7 --data-dir /tmp/demo
    """
    settings = Settings.resolve(data_dir, graph_url, redis_url)
    run_command(
        debug, lambda: trio.run(functools.partial(load_demo, settings, source, seed, if_empty))
    )


async def load_demo(settings: Settings, source: Path, seed: int, if_empty: bool) -> None:
    """Build the demo world with a progress display, then print its summary."""
    console = Console(stderr=True)
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
    rows = import_rows(summary.imports())
    rows += [
        ("self-loops skipped", summary.edges.self_loops),
        ("seconds", round(time.perf_counter() - started, 1)),
    ]
    console.print(summary_table(f"demo world (seed {seed}) → {redact(settings.graph_url)}", rows))


# -- status ---------------------------------------------------------------------


@main.command("status")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="Server URL.")
@click.option("--token", help="An operator token (`starling token ops --operator`).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the secret to mint an operator token is [env STARLING_DATA_DIR].",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
def status_command(url: str, token: str | None, data_dir: Path | None, debug: bool) -> None:
    """Show a running server's supervision tree and key rates.

    Reads one snapshot of the operator channel system:dashboard over the
    WebSocket (the figures the dashboard draws). Without --token, an
    operator token is minted with the local secret (same machine).

    \b
    Examples:
      starling status
      starling status --url http://10.0.0.5:8080 --token "$(cat ops.token)"
    """
    from auth.tokens import issue_token

    if token is None:
        secret = run_command(False, lambda: local_secret(data_dir))
        token = issue_token(secret, "status", ttl_seconds=300, operator=True)
    credentials = token
    snapshot = run_client_command(
        debug, lambda: trio.run(functools.partial(read_snapshot, url, credentials))
    )
    print_status(Console(), snapshot)


async def read_snapshot(url: str, token: str) -> dict[str, Any]:
    """The next snapshot published on ``system:dashboard``."""
    from client import tail

    got: list[dict[str, Any]] = []
    with trio.fail_after(15):
        await tail(
            url,
            token,
            ["system:dashboard"],
            got.append,
            limit=1,
            reconnect=False,
            on_status=lambda status: None,
        )
    return dict(got[0]["data"])


def print_status(console: Console, snapshot: dict[str, Any]) -> None:
    """The tree (states coloured) and a table of rates, from one dashboard snapshot."""
    from rich.tree import Tree

    colours = {"running": "green", "failed": "red", "restarting": "yellow", "starting": "yellow"}

    def label(node: dict[str, Any]) -> str:
        state = node["state"]
        text = f"[{colours.get(state, 'white')}]{state}[/] [bold]{node['id']}[/]"
        text += f" restarts {node.get('restarts_total', node.get('supervisor_restarts_total', 0))}"
        if node.get("mailbox_size"):
            text += (
                f" inbox {node['mailbox_used']}/{node['mailbox_size']} peak {node['mailbox_peak']}"
            )
        if node.get("last_error"):
            text += f" [red]{node['last_error']['type']}: {node['last_error']['message']}[/]"
        return text

    def add(branch: Tree, node: dict[str, Any]) -> None:
        for child in node.get("children", []):
            add(branch.add(label(child)), child)
        if node.get("more"):
            branch.add(f"… and {node['more']} more")

    root = snapshot["tree"]
    tree = Tree(
        f"{label(root)} — [bold]{snapshot['status']}[/], up {snapshot['uptime_seconds']:.0f} s"
    )
    add(tree, root)
    console.print(tree)
    table = Table(title="now")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in snapshot.get("rates", {}).items():
        table.add_row(f"{name.replace('_', ' ')} /s", f"{value:,.1f}")
    latency = snapshot.get("latency_ms", {})
    if latency:
        table.add_row(
            "latency p50 / p99 / p99.9 ms", " / ".join(f"{v:g}" for v in latency.values())
        )
    if "ws" in snapshot:
        table.add_row("WebSocket connections", f"{snapshot['ws']['open']:,}")
    if "feeds" in snapshot:
        table.add_row("live feed actors", f"{snapshot['feeds']['live']:,}")
    for row in snapshot.get("rpc", [])[:5]:
        mean = "—" if row["mean_ms"] is None else f"{row['mean_ms']:.2f} ms"
        table.add_row(f"rpc {row['method']}", f"{row['calls_per_second']:,.1f}/s, {mean}")
    console.print(table)


# -- the demo -----------------------------------------------------------------


@main.command("demo")
@backend_options
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("../shared/data"),
    show_default=True,
    help="Directory holding the real data sets.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--speed",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="How much faster than real time the Reddit threads are replayed.",
)
@click.option(
    "--max-gap",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Longest pause between replayed comments, in seconds.",
)
def demo_command(
    data_dir: Path | None,
    graph_url: str | None,
    redis_url: str | None,
    debug: bool,
    source: Path,
    host: str,
    port: int,
    speed: float,
    max_gap: float,
) -> None:
    """Load the demo world (once), serve it, replay real comments live, print what to try.

    Builds the demo world from --source into the embedded store if it is not
    there yet (about 25 s, with progress), starts the server, replays the real
    Reddit comment threads in the background as live comment events, and
    prints the dashboard URL, a token, curl calls and a tail command to paste.
    Ctrl-C stops everything.

    \b
    Examples:
      starling demo
      starling demo --port 9000 --speed 3600
    """
    settings = Settings.resolve(data_dir, graph_url, redis_url)
    options = ServeOptions(host=host, port=port)
    run_command(
        debug,
        lambda: trio.run(
            functools.partial(run_demo, settings, options, source, speed=speed, max_gap=max_gap)
        ),
    )


async def run_demo(
    settings: Settings, options: ServeOptions, source: Path, *, speed: float, max_gap: float
) -> None:
    """``starling demo``: load if empty, serve, replay in the background, print next steps."""
    from auth.tokens import issue_token
    from client.replay import replay
    from datasets.reddit import read_comments

    console = Console(stderr=True)
    await load_demo(settings, source, 42, True)
    comments = await trio.to_thread.run_sync(read_comments, source / "reddit_comments_au_2025.csv")
    secret = await trio.to_thread.run_sync(load_secret, settings.data_dir)
    url = f"http://{options.host}:{options.port}"
    async with trio.open_nursery() as nursery:

        async def run_server(*, task_status: trio.TaskStatus[Supervisor]) -> None:
            await serve(settings, options, task_status=task_status)
            nursery.cancel_scope.cancel()  # Ctrl-C stopped the server: stop the replay too

        await nursery.start(run_server)
        post = await demo_post(url)
        threads = Counter(comment.post for comment in comments)
        thread = threads.most_common(1)[0][0]
        print_next_steps(console, url, issue_token(secret, "0", ttl_seconds=86_400), post, thread)

        # Start at the busiest thread's first comment, so the printed tail shows it at once.
        first = next(i for i, comment in enumerate(comments) if comment.post == thread)
        passes = [comments[first:]]

        async def replay_comments_forever() -> None:
            while True:
                batch = passes.pop() if passes else comments
                summary = await replay(batch, url, speed=speed, max_gap=max_gap,
                                       api_key=settings.api_key)  # fmt: skip
                log.info("comment replay finished; starting over", sent=summary.sent,
                         failed=summary.failed)  # fmt: skip

        nursery.start_soon(replay_comments_forever)


async def demo_post(url: str) -> str:
    """A post in user 0's first feed page that friends recommended (for the printed examples)."""
    import httpx

    body = {"jsonrpc": "2.0", "id": 1, "method": "feed.get", "params": {"user": "0", "limit": 20}}
    async with httpx.AsyncClient(timeout=30) as client:
        reply = (await client.post(f"{url}/rpc", json=body)).json()
    items = reply.get("result", {}).get("items", [])
    for item in items:
        if any("friend" in reason for reason in item["reasons"]):
            return str(item["post"])
    return str(items[0]["post"]) if items else "hn:12224879"


def starling_invocation() -> str:
    """How a fresh shell in the current directory runs this ``starling``: ``starling`` when
    that is on ``PATH``, else the script's path (``.venv/bin/starling`` after ``make run``)."""
    script = Path(sys.executable).parent / "starling"
    on_path = shutil.which("starling")
    if not script.exists() or (on_path is not None and Path(on_path).resolve() == script.resolve()):
        return "starling"
    relative = os.path.relpath(script)
    return relative if relative.startswith(("/", ".")) else f"./{relative}"


def print_next_steps(console: Console, url: str, token: str, post: str, thread: str) -> None:
    """What to try next, every line ready to paste into a fresh shell here."""

    def call(method: str, params: dict[str, Any]) -> str:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
            separators=(",", ":"),
        )
        return f"curl -s -d '{body}' {url}/rpc"

    lines = [
        f"[bold green]Starling demo is running[/] on {url} (Ctrl-C stops it)",
        "",
        f"  dashboard     {url}/dashboard",
        f"  demo page     {url}/demo?user=0&post={thread}",
        f"  token (user 0, 24 h)  {token}",
        "",
        "  # user 0's ranked feed, with the reasons:",
        f"  {call('feed.get', {'user': '0', 'limit': 5})}",
        "  # which of the people user 0 follows recommended this post:",
        f"  {call('social.friends_who_recommended', {'user': '0', 'post': post})}",
        "  # whom user 0 might follow (friends of friends):",
        f"  {call('social.who_to_follow', {'user': '0', 'limit': 5})}",
        "  # the busiest Reddit thread, live as it is replayed:",
        f"  {starling_invocation()} tail post:{thread} --url {url}",
    ]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


# -- realtime clients: token, tail, replay -----------------------------------------


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

    directory = Settings.resolve(data_dir, None, None).data_dir
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


@main.command("token")
@click.argument("user")
@click.option(
    "--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Seconds valid."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the secret is [env STARLING_DATA_DIR; default ./starling-data].",
)
@click.option("--operator", is_flag=True, help="An operator's token: may read system: channels.")
def token_command(user: str, ttl: int, data_dir: Path | None, operator: bool) -> None:
    """Print a WebSocket token for USER, signed with the server's secret.

    The secret is STARLING_SECRET, else <data-dir>/secret (the server's own).
    Only the token goes to stdout.

    \b
    Examples:
      starling token alice
      starling token alice --ttl 600 --data-dir /var/lib/starling
      starling token ops --operator
    """
    from auth.tokens import USER_ID, issue_token

    if not USER_ID.fullmatch(user):
        raise LineError(f"user {user!r}: a user id is 1-64 of letters, digits and '_.:@-'")
    secret = run_command(False, lambda: local_secret(data_dir))
    click.echo(issue_token(secret, user, ttl_seconds=ttl, operator=operator))


@main.command("tail")
@click.argument("channels", nargs=-1, required=True, metavar="CHANNEL...")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="Server URL.")
@click.option("--token", help="A token (`starling token USER`) [default: one minted locally].")
@click.option(
    "--user",
    help="Whom the minted token names [default: the id of a user:<id> channel, else 'tail'].",
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N publications.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the secret to mint with is [env STARLING_DATA_DIR; default ./starling-data].",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
def tail_command(
    channels: tuple[str, ...],
    url: str,
    token: str | None,
    user: str | None,
    limit: int | None,
    data_dir: Path | None,
    debug: bool,
) -> None:
    """Print the publications of realtime channels as JSON lines, live.

    One line per publication on stdout, {"channel", "offset", "data"}; notes
    (subscribed, reconnecting, recovered) on stderr. Without --token, a token
    is minted with the local secret (STARLING_SECRET or <data-dir>/secret), so
    it works against a server on the same machine. When the server closes the
    connection (idle, restart, slow consumer) it reconnects and recovers what
    it missed. Ctrl-C stops it.

    \b
    Examples:
      starling tail post:1krq69r
      starling tail user:alice post:1krq69r --limit 10
      starling tail post:42 --url http://10.0.0.5:8080 --token "$(cat token)"
    """
    from actors.realtime import parse_channel
    from auth.tokens import USER_ID, issue_token
    from client import websocket_url

    try:
        websocket_url(url)
        parsed = [parse_channel(channel) for channel in channels]
    except ValueError as error:
        raise LineError(str(error)) from None
    credentials: str | Callable[[], str]
    if token is not None:
        credentials = token
    else:
        users = sorted({channel.id for channel in parsed if channel.kind == "user"})
        if user is None and len(users) > 1:
            raise LineError(f"a token names one user: not both user:{users[0]} and user:{users[1]}")
        name = user or (users[0] if users else "tail")
        if not USER_ID.fullmatch(name):
            raise LineError(f"--user {name!r}: a user id is 1-64 of letters, digits and '_.:@-'")
        if others := [other for other in users if other != name]:
            raise LineError(f"user:{others[0]} may be tailed by {others[0]} only, not {name}")
        secret = run_command(debug, lambda: local_secret(data_dir))
        # A fresh token per connection: a tail outlives any one token's hour.
        operator = any(channel.startswith("system:") for channel in channels)
        credentials = functools.partial(
            issue_token, secret, name, ttl_seconds=3600, operator=operator
        )
    run_client_command(
        debug,
        lambda: trio.run(
            functools.partial(tail_channels, url, credentials, list(channels), limit=limit)
        ),
    )


async def tail_channels(
    url: str, token: str | Callable[[], str], channels: list[str], *, limit: int | None
) -> None:
    """Follow ``channels``: JSON lines on stdout, notes on stderr (``starling tail``)."""
    import json

    from client import Gap, Reconnecting, Subscribed, TailStatus, tail, websocket_url

    def on_pub(publication: dict[str, Any]) -> None:
        try:
            click.echo(json.dumps(publication, ensure_ascii=False, separators=(",", ":")))
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and let the exit not flush.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)

    def on_status(status: TailStatus) -> None:
        match status:
            case Subscribed(channel, (offset, _), None, _, _):
                note = f"subscribed to {channel} at offset {offset}"
            case Subscribed(channel, (offset, _), True, missed, _):
                note = f"resubscribed to {channel}: {missed} missed publication(s) recovered"
            case Subscribed(channel, (offset, _), False, _, _):
                note = (
                    f"resubscribed to {channel}: what was published while disconnected could "
                    f"not be recovered (the server's history moved on); resuming at {offset}"
                )
            case Gap(channel, first, last):
                note = (
                    f"{channel}: publications {first}..{last} were lost before they reached the "
                    f"server (it said so); resuming after {last}"
                )
            case Reconnecting(None, reason, delay, attempt):
                note = f"cannot connect ({reason}); retrying in {delay:.1f} s (attempt {attempt})"
            case Reconnecting(code, reason, delay, _):
                note = f"connection closed ({code} {reason}); reconnecting in {delay:.1f} s"
        click.echo(f"tail: {note}", err=True)

    click.echo(f"tail: connecting to {websocket_url(url)}", err=True)
    await tail(url, token, channels, on_pub, limit=limit, on_status=on_status)


@main.group("replay")
def replay_group() -> None:
    """Replay real data as live events."""


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
@click.option(
    "--api-key",
    envvar="STARLING_API_KEY",
    help="The server's key [env STARLING_API_KEY]; none needed on loopback without one.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Replay only the first N comments.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
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

    console = Console(stderr=True)
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


@main.group("bench", cls=LazyGroup, lazy={"realtime": "bench.realtime:command"})
def bench_group() -> None:
    """Benchmarks: print a table and write JSON under bench/results/."""


@bench_group.command("social")
@backend_options
@click.option("--clients", default=8, show_default=True, help="Concurrent connections.")
@click.option("--seconds", default=5.0, show_default=True, help="Length of each run.")
@click.option("--runs", default=3, show_default=True, help="Runs per figure (medians).")
@click.option("--only", help="Only the rows whose method contains this text.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="JSON file.")
def bench_social_command(
    data_dir: Path | None,
    graph_url: str | None,
    redis_url: str | None,
    debug: bool,
    clients: int,
    seconds: float,
    runs: int,
    only: str | None,
    output: Path | None,
) -> None:
    """JSON-RPC latency and calls/s per social method, on the demo world (needs wrk).

    \b
    Examples:
      starling load demo && starling bench social
      starling bench social --only who_to_follow --runs 5
    """
    from bench.social import run

    settings = Settings.resolve(data_dir, graph_url, redis_url)
    run_command(
        debug,
        lambda: run(
            settings, clients=clients, seconds=seconds, runs=runs, only=only, output=output
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
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
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


if __name__ == "__main__":
    main()
