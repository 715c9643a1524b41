"""``starling serve``: run the server until Ctrl-C."""

from __future__ import annotations

import functools
from pathlib import Path

import click
import structlog
import trio

from actors.feeds import (
    FeedSettings,
    PipelineParams,
)
from actors.realtime.pipeline import RealtimeSettings, default_consumer
from cli.common import run_command
from cli.guards import Guards, guard_options
from cli.options import backend_options, previous_secret_until_option
from protocols.app import AppConfig, RouteAccess
from protocols.websocket import (
    Limits,
)
from server import limit_malloc_arenas, serve
from settings import ServeOptions, Settings
from stores.backends import (
    DEFAULT_STREAM_MAX_LENGTH,
)

log = structlog.get_logger("starling")


@click.command("serve")
@backend_options(api_key=True)
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
    help="Stories older than this never enter a feed (a live site would use days; "
    "`starling demo` serves its 2015-2026 stories with no horizon).",
)
@click.option(
    "--feed-stale-window",
    default=5.0,
    show_default=True,
    envvar="STARLING_FEED_STALE_WINDOW",
    show_envvar=True,
    help="Seconds between two feed.stale notices to one connected user.",
)
@click.option(
    "--feed-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="STARLING_FEED_WEIGHTS",
    show_envvar=True,
    help="Scorer weights TOML [default: the packaged weights].",
)
@click.option(
    "--scorer-url",
    envvar="STARLING_SCORER_URL",
    show_envvar=True,
    help="A JSON-RPC model service to rank with, falling back to the weights.",
)
@click.option("--transformers", default=1, show_default=True, help="Realtime transformer actors.")
@click.option(
    "--history-size", default=100, show_default=True, help="Publications kept per channel."
)
@click.option(
    "--following-grace",
    default=300.0,
    show_default=True,
    help="Seconds a following: channel keeps being fanned out to after its last subscriber "
    "left (a reconnect within it recovers exactly with since).",
)
@click.option(
    "--reorder-wait",
    default=0.5,
    show_default=True,
    help="Seconds a publication that arrived before an earlier one of its channel (from "
    "another process) waits for it; past it the gap is skipped and told with a gap notice.",
)
@click.option(
    "--monitor-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between two health checks of each backend (/health shows one that fails "
    "as degraded until it answers again).",
)
@click.option(
    "--presence-expiry",
    default=15.0,
    show_default=True,
    help="Seconds after which the users of a process that died have left every channel's "
    "presence (its entries in Redis expire).",
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
    show_envvar=True,
    help="Entries the event stream keeps when this process appends (XADD MAXLEN ~).",
)
@click.option(
    "--consumer",
    envvar="STARLING_CONSUMER",
    show_envvar=True,
    help="This process's name in the stream's consumer group [default <hostname>-<pid>].",
)
@previous_secret_until_option
@click.option(
    "--health-access",
    type=click.Choice([access.value for access in RouteAccess]),
    default=RouteAccess.OPEN.value,
    show_default=True,
    help="Who may read /health: anyone, loopback clients (or the API key), the API key only.",
)
@click.option(
    "--metrics-access",
    type=click.Choice([access.value for access in RouteAccess]),
    default=RouteAccess.OPEN.value,
    show_default=True,
    help="Who may read /metrics: anyone, loopback clients (or the API key), the API key only.",
)
@click.option(
    "--fault-injection",
    is_flag=True,
    envvar="STARLING_FAULT_INJECTION",
    show_envvar=True,
    help="Answer system.fault: operators may crash a child, fail its next start or leak a "
    "task into it (tests, drills; never in production).",
)
@guard_options
def serve_command(
    settings: Settings,
    debug: bool,
    host: str,
    port: int,
    readers: int,
    max_body_bytes: int,
    feed_ttl: float,
    feed_idle: float,
    feed_max_live: int,
    feed_horizon_days: float,
    feed_stale_window: float,
    feed_weights: Path | None,
    scorer_url: str | None,
    transformers: int,
    history_size: int,
    following_grace: float,
    reorder_wait: float,
    monitor_interval: float,
    presence_expiry: float,
    ws_max_connections: int,
    ws_max_outbox_bytes: int,
    stream_max_length: int,
    consumer: str | None,
    guards: Guards,
    previous_secret_until: float | None,
    health_access: str,
    metrics_access: str,
    fault_injection: bool,
) -> None:
    """Serve JSON-RPC, /health, /metrics and the WebSocket /ws until Ctrl-C.

    \b
    Examples:
      starling serve
      starling serve --port 9000 --data-dir /var/lib/starling
      STARLING_GRAPH_URL=bolt://localhost:7687 starling serve
      starling serve --feed-ttl 120 --scorer-url http://127.0.0.1:9000/score
    """
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
            following_grace=following_grace,
            reorder_wait=reorder_wait,
            presence_expiry=presence_expiry,
            feed_stale_window=feed_stale_window,
            consumer=consumer or default_consumer(),
        )
        limits = Limits(max_outbox_bytes=ws_max_outbox_bytes)
        doors = AppConfig(  # checked here, before the backends open
            api_key=settings.api_key,
            health_access=RouteAccess(health_access),
            metrics_access=RouteAccess(metrics_access),
        )
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
        fault_injection=fault_injection,
        monitor_interval=monitor_interval,
        previous_secret_until=previous_secret_until,
        health_access=doors.health_access,
        metrics_access=doors.metrics_access,
    )
    try:
        options = guards.apply(options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    limit_malloc_arenas()
    run_command(debug, lambda: trio.run(functools.partial(serve, settings, options)))
