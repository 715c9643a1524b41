"""What a command needs to reach the backends, and what ``starling serve`` runs with.

Values come from the command line (flags, or their ``STARLING_*`` environment
variables, declared once as the click options of :mod:`cli.options`), then the
embedded defaults: Ladybug under the data directory, in-process cache/stream/pubsub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from actors.feeds import FeedSettings
from actors.feeds.scorer import DEFAULT_REMOTE_TIMEOUT
from actors.realtime.pipeline import RealtimeSettings
from protocols.app import DEFAULT_BODY_TIMEOUT, RouteAccess
from protocols.http import DEFAULT_FIRST_BYTES_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT
from protocols.ratelimit import DEFAULT_RATE_LIMITS, RateLimits
from protocols.websocket.gateway import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS
from protocols.websocket.session import Limits
from stores.backends import DEFAULT_STREAM_MAX_LENGTH, default_graph_url, open_graph
from stores.graph import GraphStore

SECONDS = 1.0
DEFAULT_DATA_DIR = Path("./starling-data")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs to reach the backends.

    Attributes:
        data_dir: where embedded data lives (the Ladybug graph, the token secret).
        graph_url: ``ladybug://PATH`` | ``neo4j://…`` | ``bolt://…``.
        redis_url: ``memory://`` | ``redis://…``.
        neo4j_user, neo4j_password: Neo4j credentials.
        api_key: bearer key for ``/rpc``; ``None``: loopback only.

    The password, the key and the URLs (which may hold a password) never show in a ``repr``.
    """

    data_dir: Path
    graph_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    neo4j_user: str | None = None
    neo4j_password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def resolve(
        cls,
        data_dir: Path | None,
        graph_url: str | None,
        redis_url: str | None,
        *,
        neo4j_user: str | None = None,
        neo4j_password: str | None = None,
        api_key: str | None = None,
    ) -> Settings:
        """The values given (by flags or their variables, :mod:`cli.options`), then the
        embedded defaults: ``./starling-data``, Ladybug in it, ``memory://``."""
        directory = Path(data_dir or DEFAULT_DATA_DIR)
        return cls(
            data_dir=directory,
            graph_url=graph_url or default_graph_url(directory),
            redis_url=redis_url or "memory://",
            neo4j_user=neo4j_user,
            neo4j_password=neo4j_password,
            api_key=api_key or None,
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
    """``starling serve`` options.

    Attributes:
        fault_injection: answer ``system.fault`` (``--fault-injection``; off: -32003).
        previous_secret_until: epoch seconds until which the previous token secret
            (``STARLING_PREVIOUS_SECRET``) still verifies (:func:`auth.tokens.load_keyring`).
        health_access, metrics_access: who may read ``/health`` and ``/metrics``.
        first_bytes_timeout: seconds from the accept for a request's first bytes
            (:class:`protocols.http.HttpServer`).
        keep_alive_timeout: seconds for an HTTP request's head (the first from its first
            bytes, later ones from the previous response: hypercorn's idle limit).
        body_timeout: seconds for a ``/rpc`` body (:class:`protocols.app.AppConfig`).
        ws_handshake_timeout: seconds for a ``/ws`` upgrade request, from the hand-over.
        rate_limits: the rates per role (:mod:`protocols.ratelimit`).
    """

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
    first_bytes_timeout: float = DEFAULT_FIRST_BYTES_TIMEOUT
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    ws_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS
    fault_injection: bool = False
    previous_secret_until: float | None = None
    health_access: RouteAccess = RouteAccess.OPEN
    metrics_access: RouteAccess = RouteAccess.OPEN
