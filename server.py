"""Starling's composition root: settings → stores → supervision tree → serve.

``server.py`` is the one place that knows every concrete class: given the
settings (:mod:`settings`), it opens the backends, builds the supervision tree
and serves the app. The command line (:mod:`cli`) calls :func:`serve`; nothing
else imports this module::

    root                      one_for_one
    ├── stores                one_for_all   backend monitors (graph, cache/stream/pubsub)
    ├── social                one_for_one   graph_reader × N, graph_writer (reads reach a reader
    │                                       directly through the Social handle)
    ├── feeds                 rest_for_one  story index, feed builders, registry, events
    ├── realtime              rest_for_one  publisher, relay, audience, transformers, nozzle,
    │                                       events, presence
    ├── api                                 hypercorn (trio worker) serving the ASGI app
    │                                       (/rpc, /health, /metrics, /ws, /dashboard, /demo)
    └── dashboard                           a snapshot a second on system:dashboard

Settings come from the command line's flags or their ``STARLING_*`` variables
(:mod:`cli.options`), then the embedded defaults (Ladybug under the data
directory, in-process cache/stream/pubsub).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable

import structlog
import trio

from actors.bus import EventBus
from actors.feeds import (
    GraphContextSource,
    LinearScorer,
    RemoteScorer,
    feeds_subtree,
)
from actors.monitor import BackendMonitor
from actors.realtime.pipeline import realtime_subtree
from actors.social import GraphReader, GraphWriter, ReaderPool, Social, SocialEvent
from auth.tokens import Keyring, load_keyring
from observability.dashboard import DashboardReporter, Snapshots, Sources
from protocols.app import AppConfig, create_app
from protocols.http import HttpServer
from protocols.methods import Services
from protocols.ratelimit import RateLimiter
from protocols.websocket import (
    WebSocketGateway,
    gap_frame,
    presence_frame,
    pub_frame,
)
from settings import ServeOptions, Settings
from stores.backends import (
    KeyValueBackend,
    open_key_value,
    redact,
)
from stores.graph import GraphStore
from supervisor import (
    Backoff,
    ChildSpec,
    FaultKind,
    Strategy,
    Supervisor,
    SupervisorStatistics,
)

log = structlog.get_logger("starling")


GC_THRESHOLDS = (20_000, 20, 100)
"""``gc.set_threshold`` while serving (CPython's defaults are 700, 10, 10)."""
MALLOC_ARENAS = 2
"""glibc malloc arenas a serving process may use (glibc's default: 8 per core)."""
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Let glibc's malloc use at most ``count`` arenas, unless ``MALLOC_ARENA_MAX`` is set;
    whether the limit was set (``False`` off glibc, or when the environment decides).

    Call it before threads start. The graph queries and feed builds run in worker
    threads, and glibc gives each thread that meets a locked arena one of its own, which
    keeps its own free space: under the soak's load the arenas held 16-46 MiB free
    (``mallinfo2``), with two 6-29 MiB.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return bool(libc.mallopt(_M_ARENA_MAX, count))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt arenas)
        return False


SECONDS = 1.0
SHUTDOWN_GRACE = 10 * SECONDS
"""Seconds a stop may take (stop accepting, drain, stop children in reverse) before it is
cancelled."""


def build_tree(
    settings: Settings,
    options: ServeOptions,
    graph: GraphStore,
    key_value: KeyValueBackend,
    secret: Keyring,
) -> Supervisor:
    """The supervision tree, with the HTTP server as its last child.

    Args:
        secret: the token secrets (:func:`auth.tokens.load_keyring`).
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
    pool = ReaderPool([reader.ref for reader in readers])
    writer = GraphWriter(graph, bus, readers=pool)
    social_handle = Social(pool, writer.ref)
    social = Supervisor(
        "social",
        [
            *(ChildSpec(reader.name, reader.run) for reader in readers),
            ChildSpec(writer.name, writer.run),
        ],
        intensity=10,
        period=10,
        backoff=Backoff(initial=0.05, factor=2, maximum=5),
    )
    origin = secrets.token_hex(8)  # this process on the Pub/Sub topics, for this life
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
        origin=origin,
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
        presence=key_value.presence,
        render_presence=presence_frame,
        bus=bus,
        readers=pool,
        origin=origin,
    )

    def tree() -> SupervisorStatistics:
        return root.statistics()

    def inject_fault(path: str, kind: FaultKind) -> Awaitable[bool]:
        return root.inject_fault(path, kind)

    services = Services(
        tree=tree,
        social=social_handle,
        bus=bus.statistics,
        feeds=feeds_handle,
        realtime=realtime_handle,
        restart=lambda path: root.restart_path(path),
        fault=inject_fault if options.fault_injection else None,
    )
    gateway = WebSocketGateway(
        realtime_handle.publisher,
        secret,
        limits=options.ws_limits,
        max_connections=options.ws_max_connections,
        handshake_timeout=options.ws_handshake_timeout,
        rate_limiter=RateLimiter(options.rate_limits),
    )
    if realtime_handle.audience is not None:
        gateway.attach_gate(realtime_handle.audience)
        realtime_handle.audience.attach(gateway)
    if realtime_handle.presence is not None:
        gateway.attach_presence(realtime_handle.presence)
    app = create_app(
        services,
        AppConfig(
            api_key=settings.api_key,
            max_body_bytes=options.max_body_bytes,
            body_timeout=options.body_timeout,
            health_access=options.health_access,
            metrics_access=options.metrics_access,
        ),
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
    http = HttpServer(
        app,
        host=options.host,
        port=options.port,
        websocket=gateway,
        first_bytes_timeout=options.first_bytes_timeout,
        keep_alive_timeout=options.keep_alive_timeout,
    )
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


def log_rotation(keyring: Keyring) -> None:
    """Say whether the previous token secret still verifies, and until when (never the
    secret itself)."""
    if keyring.previous is None:
        return
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(keyring.previous_until))
    if keyring.previous_until > time.time():
        log.info("the previous token secret verifies until its grace ends", until=until)
    else:
        log.warning(
            "the previous token secret's grace is over: unset STARLING_PREVIOUS_SECRET",
            ended=until,
        )


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
        secret = await trio.to_thread.run_sync(
            functools.partial(
                load_keyring, settings.data_dir, previous_until=options.previous_secret_until
            )
        )
        root = build_tree(settings, options, graph, key_value, secret)
        log_rotation(secret)
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
