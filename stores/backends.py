"""Choosing backends by URL.

- graph: ``ladybug://PATH`` (the embedded default) → :class:`stores.ladybug.LadybugGraph`;
  ``neo4j://…``, ``bolt://…`` (and their ``+s`` forms) → :class:`stores.neo4j.Neo4jGraph`.
- cache, stream, pub/sub, presence: ``memory://`` (the in-process default) →
  :mod:`stores.memory` and :class:`stores.presence.MemoryPresence`; ``redis://…``,
  ``rediss://…``, ``unix://…`` → :mod:`stores.redis` and :mod:`stores.redis_presence`;
  ``redis+cluster://host:port,host:port,…`` (``rediss+cluster://``) → the same adapters on a
  Redis Cluster (:mod:`stores.redis_cluster`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus, urlsplit

from stores.cache import Cache
from stores.errors import ConfigError
from stores.graph import GraphStore
from stores.presence import PresenceStore
from stores.pubsub import PubSub
from stores.sequence import Sequencer
from stores.stream import Stream

if TYPE_CHECKING:
    from stores.redis import RedisBackend

NEO4J_SCHEMES = {"neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"}
REDIS_SCHEMES = {"redis", "rediss", "unix"}
REDIS_CLUSTER_SCHEMES = {"redis+cluster", "rediss+cluster"}


SECRET_QUERY_KEYS = ("password", "passwd", "secret", "token")
"""A query parameter whose name contains one of these holds a secret (redis-py reads
``?password=``)."""


def redact(url: str) -> str:
    """``url`` without its secrets, for logs, errors and health output.

    The password of the user info becomes ``***`` (``redis://user:***@host:6379/0``), and so
    does the value of every query parameter named like a secret (:data:`SECRET_QUERY_KEYS`);
    the rest stays as written (host, port, IPv6 brackets). Never raises: a URL that does not
    parse keeps its scheme only (``redis://***``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, separator, _ = url.partition("://")
        return f"{scheme}://***" if separator else "***"
    user_info, at, host = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in user_info:
        netloc = f"{user_info.partition(':')[0]}:***@{host}"
    query = "&".join(
        f"{name}=***"
        if any(key in unquote_plus(name).lower() for key in SECRET_QUERY_KEYS)
        else item
        for item in parts.query.split("&")
        for name in (item.partition("=")[0],)
    )
    if netloc == parts.netloc and query == parts.query:
        return url
    # Joined by hand: urlunsplit drops the empty authority of unix:///path.
    head = f"{parts.scheme}://" if "://" in url else (f"{parts.scheme}:" if parts.scheme else "")
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{head}{netloc}{parts.path}{tail}"


def default_graph_url(data_dir: Path) -> str:
    """The embedded default: a Ladybug database under the data directory."""
    return f"ladybug://{(data_dir / 'graph').resolve()}"


async def open_graph(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    max_connections: int = 8,
) -> GraphStore:
    """Open the graph store named by ``url``.

    Raises:
        ConfigError: an unknown scheme or an unusable URL.
        stores.errors.StoreError: the database cannot be opened.
    """
    scheme = urlsplit(url).scheme
    if scheme == "ladybug":
        from stores.ladybug import LadybugGraph

        path = url.removeprefix("ladybug://")
        if not path:
            raise ConfigError("ladybug:// needs a path, e.g. ladybug:///var/lib/starling/graph")
        return await LadybugGraph.open(Path(path), max_threads=max_connections)
    if scheme in NEO4J_SCHEMES:
        from stores.neo4j import Neo4jGraph

        return await Neo4jGraph.open(
            url, user=user, password=password, max_connections=max_connections
        )
    raise ConfigError(
        f"unknown graph URL scheme {scheme!r} in {redact(url)!r}: "
        "use ladybug://PATH, neo4j://HOST or bolt://HOST"
    )


@dataclass(frozen=True, slots=True)
class KeyValueBackend:
    """The cache, stream, pub/sub and presence ports on one backend, and how to check and
    close it."""

    url: str
    cache: Cache
    stream: Stream
    pubsub: PubSub
    sequencer: Sequencer
    ping: Callable[[], Awaitable[None]]
    aclose: Callable[[], Awaitable[None]]
    presence: PresenceStore

    @property
    def shared(self) -> bool:
        """Whether other processes can share this backend (Redis), i.e. scale out."""
        return not self.url.startswith("memory:")


def open_redis(url: str, *, max_connections: int = 16) -> RedisBackend:
    """The Redis backend of a ``redis://`` (``rediss://``, ``unix://``) or ``redis+cluster://``
    URL (no I/O yet).

    Raises:
        ConfigError: an unusable URL.
    """
    from stores.redis import RedisBackend

    if urlsplit(url).scheme in REDIS_CLUSTER_SCHEMES:
        from stores.redis_cluster import RedisClusterBackend

        return RedisClusterBackend.from_cluster_url(url, max_connections=max_connections)
    return RedisBackend.from_url(url, max_connections=max_connections)


async def _nothing() -> None:
    return None


DEFAULT_STREAM_MAX_LENGTH = 1_000_000
"""Entries a stream keeps (approximately) before the oldest are trimmed by appends."""


def open_key_value(
    url: str,
    *,
    max_connections: int = 16,
    stream_max_length: int | None = DEFAULT_STREAM_MAX_LENGTH,
) -> KeyValueBackend:
    """Open the cache/stream/pubsub backend named by ``url`` (no I/O yet).

    Args:
        url: ``memory://`` or ``redis://…``.
        max_connections: Redis connections in the pool.
        stream_max_length: entries a stream keeps, approximately, when this
            process appends (``XADD MAXLEN ~``); ``None`` never trims. An entry
            trimmed before it was read is lost: size it above the backlog the
            pipeline may fall behind by (1,000,000 is 50 s at 20,000 events/s).

    Raises:
        ConfigError: an unknown scheme or an unusable URL.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from stores.memory import MemoryCache, MemoryPubSub, MemorySequencer, MemoryStream
        from stores.presence import MemoryPresence

        stream = MemoryStream(max_length=stream_max_length)
        return KeyValueBackend(
            url,
            MemoryCache(),
            stream,
            MemoryPubSub(),
            MemorySequencer(stream),
            _nothing,
            _nothing,
            MemoryPresence(),
        )
    if scheme in REDIS_SCHEMES or scheme in REDIS_CLUSTER_SCHEMES:
        from stores.redis import (
            RedisCache,
            RedisPubSub,
            RedisSequencer,
            RedisStream,
        )
        from stores.redis_presence import RedisPresence

        backend = open_redis(url, max_connections=max_connections)
        return KeyValueBackend(
            redact(url),
            RedisCache(backend),
            RedisStream(backend, max_length=stream_max_length),
            RedisPubSub(backend),
            RedisSequencer(backend, max_length=stream_max_length),
            backend.ping,
            backend.aclose,
            RedisPresence(backend),
        )
    raise ConfigError(
        f"unknown cache URL scheme {scheme!r} in {redact(url)!r}: use memory://, redis://HOST or redis+cluster://HOST:PORT,…"
    )
