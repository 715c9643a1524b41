"""Redis Cluster as the cache, stream, pub/sub and presence backend.

``redis+cluster://[user:password@]host1:port1,host2:port2,…[?partitions=N]`` names a
cluster by some of its nodes (any reachable one tells the rest); ``rediss+cluster://``
uses TLS. The adapters of :mod:`stores.redis` and :mod:`stores.redis_presence` run on
it unchanged, with three differences that :class:`RedisClusterBackend` carries:

- the realtime hot path (:mod:`stores.resp`, on the trio thread) is routed by key:
  :class:`ClusterRouter` keeps the slot → master map (``CLUSTER SLOTS``) and one
  connection pool per master, follows ``MOVED`` and ``ASK`` redirections, and reloads
  the map when a node fails or redirects;
- the event stream, its offsets and generations are split into ``N`` partitions
  (:mod:`stores.partitions`, default :data:`DEFAULT_PARTITIONS`), each in one slot;
- Pub/Sub is sharded (``SPUBLISH``/``SSUBSCRIBE``, Redis >= 7): a topic lives on
  the master of its slot, not broadcast over the cluster bus.

Everything else (the cache, consumer-group administration, presence) goes through
redis-py's :class:`redis.cluster.RedisCluster` in worker threads, which follows
redirections and failovers itself.

Failover: when a master dies, its slots are unavailable until the cluster promotes
a replica (``cluster-node-timeout`` plus an election, about 1-3 s). Commands of
those slots fail with :class:`~stores.errors.BackendUnavailable` meanwhile (the
nozzle and the relay retry; ``/health`` shows the backend degraded, naming the
master); every failure marks the map stale, and the next command reloads it from
any live node. Replication is asynchronous: writes the dead master acknowledged
but had not sent to its replica are lost. Starling makes that loss visible:
the sequencer starts a new generation on a partition that moved
(:class:`stores.redis.RedisSequencer`), so its channels change epoch and a client
recovering from before gets ``recovered: false`` (docs/operations.md, "Redis Cluster").

Sources: the Redis Cluster specification (redirection, ``MOVED``/``ASK``, failover),
redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec; sharded Pub/Sub,
redis.io/docs/latest/develop/interact/pubsub (Redis 7.0).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import trio
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from stores.errors import BackendUnavailable, ConfigError
from stores.partitions import Partitions, key_slot_of
from stores.redis import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_SUBSCRIPTIONS,
    HEALTH_CHECK_INTERVAL,
    MAX_BLOCK,
    SOCKET_CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    RedisBackend,
    translated,
)
from stores.resp import Command, Endpoint, RespConnection, RespError, RespPool, check

CLUSTER_SCHEMES = {"redis+cluster", "rediss+cluster"}
DEFAULT_PARTITIONS = 3
"""Stream partitions on a cluster: one per master of a 3-master cluster. Each partition is
one more nozzle read per batch and one more acknowledgement round trip, so more partitions
than masters cost server CPU (12 partitions: +56 % per event at 5,000 events/s, 3: +32 %;
docs/benchmarks.md); set ``?partitions=`` to the number of masters."""
REFRESH_INTERVAL = 0.25
"""Seconds between two reloads of the slot map (a burst of failures reloads it once)."""
SLOTS = 16_384
T = TypeVar("T")
REDIRECTS = 3
"""Redirections a command follows before it gives up (a slot still moving)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A master of the cluster: where it is and its node id."""

    host: str
    port: int
    id: str

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterUrl:
    """What a ``redis+cluster://`` URL says."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool
    partitions: int


def parse_cluster_url(url: str) -> ClusterUrl:
    """Read ``redis+cluster://[user:password@]host:port,host:port,…[?partitions=N]``.

    Raises:
        ConfigError: no node, a port that is not a number, a database other than 0
            (a cluster has only database 0), or a bad ``partitions``.
    """
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ConfigError(f"not a Redis Cluster URL: {parts.scheme}://")
    user_info, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if user_info:
        name, colon, secret = user_info.partition(":")
        username = unquote(name) or None
        password = unquote(secret) if colon else None
    seeds = []
    for item in filter(None, hosts.split(",")):
        host, colon, port = item.rpartition(":")
        if not colon or not port.isdigit():
            raise ConfigError(f"a Redis Cluster node needs host:port, got {item!r}")
        seeds.append((host.strip("[]"), int(port)))
    if not seeds:
        raise ConfigError("a Redis Cluster URL names at least one node: redis+cluster://host:port")
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError("a Redis Cluster has only database 0")
    query = parse_qs(parts.query)
    if "password" in query:
        password = query["password"][-1]
    raw = query.get("partitions", [str(DEFAULT_PARTITIONS)])[-1]
    if not raw.isdigit() or not 1 <= int(raw) <= SLOTS:
        raise ConfigError(f"partitions must be a number from 1 to {SLOTS}, got {raw!r}")
    return ClusterUrl(tuple(seeds), username, password, parts.scheme.startswith("rediss"), int(raw))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ClusterRouter:
    """Commands on the trio thread, each sent to the master of its key's slot.

    Args:
        seeds: nodes to ask for the slot map first.
        template: login, TLS and timeouts for every node (its host and port are replaced).
        size: connections per master.
    """

    def __init__(self, seeds: Sequence[tuple[str, int]], template: Endpoint, *, size: int) -> None:
        self.seeds = list(seeds)
        """The nodes named by the URL."""
        self._template = template
        self._size = size
        self._slots: list[Node | None] = [None] * SLOTS
        self._pools: dict[tuple[str, int], RespPool] = {}
        self._stale = True
        self._loaded_at = -float("inf")
        self._lock = trio.Lock()
        self.reloads = 0
        """Times the slot map was loaded."""

    def endpoint(self, node: Node) -> Endpoint:
        """The endpoint of ``node``."""
        return dataclasses.replace(self._template, host=node.host, port=node.port, db=0)

    def _pool(self, node: Node) -> RespPool:
        pool = self._pools.get((node.host, node.port))
        if pool is None:
            pool = RespPool(self.endpoint(node), size=self._size)
            self._pools[node.host, node.port] = pool
        return pool

    def mark_stale(self) -> None:
        """Reload the slot map before the next command."""
        self._stale = True

    def masters(self) -> list[Node]:
        """The masters of the map last loaded, each once, in slot order."""
        return list(dict.fromkeys(node for node in self._slots if node is not None))

    async def node(self, key: str) -> Node:
        """The master that serves ``key``'s slot (the map reloaded first if it is stale).

        Raises:
            stores.errors.BackendUnavailable: no node answers, or none serves the slot.
        """
        if self._stale:
            await self.reload()
        node = self._slots[key_slot_of(key)]
        if node is None:
            raise BackendUnavailable(f"no Redis Cluster master serves the slot of {key!r}")
        return node

    async def execute(
        self, commands: Sequence[Command], *, key: str, extra_wait: float = 0.0
    ) -> list[Any]:
        """Send ``commands`` (their keys in ``key``'s slot) to that slot's master; their replies.

        Follows ``MOVED`` (reload the map, send again) and ``ASK`` (send to the named node
        after ``ASKING``) up to :data:`REDIRECTS` times.

        Raises:
            stores.errors.BackendUnavailable: the master cannot be reached (the map is
                reloaded on the next call), or the slot kept moving.
        """
        node = await self.node(key)
        asking = False
        for _ in range(REDIRECTS + 1):
            pool = self._pool(node)
            batch = [("ASKING",), *commands] if asking else commands
            try:
                replies = await pool.execute(batch, extra_wait=extra_wait)
            except BackendUnavailable as exc:
                self._stale = True
                raise BackendUnavailable(f"Redis Cluster master {node.address}: {exc}") from exc
            if asking:
                replies = replies[1:]
            redirect = _redirect(replies)
            if redirect is None:
                return replies
            kind, host, port = redirect
            if kind == "MOVED":
                self._stale = True
                await self.reload()
                node = await self.node(key)
                asking = False
            else:
                node = Node(host, port, "")
                asking = True
        raise BackendUnavailable(f"the slot of {key!r} kept moving ({REDIRECTS} redirections)")

    async def execute_many(
        self, groups: Sequence[tuple[str, Sequence[Command]]]
    ) -> list[list[Any]]:
        """Several pipelines, each ``(key, commands)`` in ``key``'s slot: the pipelines of one
        master go out together, one round trip per master (keys of different slots may share
        a pipeline, not a command). A pipeline answered with a redirection is sent again alone
        (:meth:`execute`). Each pipeline's replies, in order.

        Raises:
            stores.errors.BackendUnavailable: a master cannot be reached.
        """
        if self._stale:
            await self.reload()
        by_node: dict[Node, list[int]] = {}
        for position, (key, _) in enumerate(groups):
            node = self._slots[key_slot_of(key)]
            if node is None:
                raise BackendUnavailable(f"no Redis Cluster master serves the slot of {key!r}")
            by_node.setdefault(node, []).append(position)
        results: list[list[Any]] = [[] for _ in groups]
        again = []
        for node, positions in by_node.items():
            flat = [command for p in positions for command in groups[p][1]]
            try:
                replies = await self._pool(node).execute(flat)
            except BackendUnavailable as exc:
                self._stale = True
                raise BackendUnavailable(f"Redis Cluster master {node.address}: {exc}") from exc
            start = 0
            for position in positions:
                count = len(groups[position][1])
                results[position] = replies[start : start + count]
                start += count
                if _redirect(results[position]) is not None:
                    again.append(position)
        for position in again:
            key, commands = groups[position]
            results[position] = await self.execute(commands, key=key)
        return results

    async def execute_on_masters(self, commands: Sequence[Command]) -> list[list[Any]]:
        """Send ``commands`` to every master; each one's replies.

        Raises:
            stores.errors.BackendUnavailable: a master cannot be reached.
        """
        if self._stale:
            await self.reload()
        results = []
        for node in self.masters():
            try:
                results.append(await self._pool(node).execute(commands))
            except BackendUnavailable as exc:
                self._stale = True
                raise BackendUnavailable(f"Redis Cluster master {node.address}: {exc}") from exc
        return results

    async def reload(self) -> None:
        """Load the slot map (``CLUSTER SLOTS``) from the first node that answers, at most once
        per :data:`REFRESH_INTERVAL` seconds.

        Raises:
            stores.errors.BackendUnavailable: no known node answers.
        """
        async with self._lock:
            if not self._stale and trio.current_time() - self._loaded_at < REFRESH_INTERVAL:
                return
            wait = self._loaded_at + REFRESH_INTERVAL - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            known = [(n.host, n.port) for n in self.masters()]
            errors = []
            for host, port in dict.fromkeys([*known, *self.seeds]):
                endpoint = dataclasses.replace(self._template, host=host, port=port, db=0)
                try:
                    connection = await RespConnection.open(endpoint)
                    try:
                        (reply,) = await connection.execute([("CLUSTER", "SLOTS")])
                    finally:
                        await connection.aclose()
                    self._load(check(reply), host)
                    return
                except BackendUnavailable as exc:
                    errors.append(f"{host}:{port}: {exc}")
                finally:
                    self._loaded_at = trio.current_time()
            raise BackendUnavailable("no Redis Cluster node answered: " + "; ".join(errors))

    def _load(self, reply: list[Any], asked: str) -> None:
        slots: list[Node | None] = [None] * SLOTS
        for start, end, master, *_replicas in reply:
            host = _text(master[0]) or asked  # "" (or "?"): the node that was asked
            node = Node(asked if host == "?" else host, int(master[1]), _text(master[2]))
            slots[int(start) : int(end) + 1] = [node] * (int(end) - int(start) + 1)
        self._slots = slots
        self._stale = False
        self.reloads += 1

    async def aclose(self) -> None:
        """Close every pool's idle connections."""
        for pool in self._pools.values():
            await pool.aclose()


def _redirect(replies: Sequence[Any]) -> tuple[str, str, int] | None:
    """The first ``MOVED``/``ASK`` redirection among ``replies``: kind, host, port."""
    for reply in replies:
        if isinstance(reply, RespError):
            text = str(reply)
            if text.startswith(("MOVED ", "ASK ")):
                kind, _slot, address = text.split(" ", 2)
                host, _, port = address.rpartition(":")
                return kind, host.strip("[]"), int(port)
    return None


def _raise_down(replies: Sequence[Any]) -> None:
    """Raise BackendUnavailable for a ``CLUSTERDOWN``/``TRYAGAIN`` reply among ``replies``."""
    for reply in replies:
        if isinstance(reply, RespError) and str(reply).startswith(("CLUSTERDOWN", "TRYAGAIN")):
            raise BackendUnavailable(f"Redis Cluster: {reply}")


class RedisClusterBackend(RedisBackend):
    """A Redis Cluster: redis-py's cluster client for worker threads, a
    :class:`ClusterRouter` for the trio thread, partitioned streams and sharded Pub/Sub.

    Build it with :meth:`from_cluster_url`; close it with :meth:`aclose`.
    """

    def __init__(
        self,
        connect: Callable[[], RedisCluster],
        router: ClusterRouter,
        *,
        partitions: int,
        max_connections: int,
        max_subscriptions: int,
        socket_timeout: float,
    ) -> None:
        # Not RedisBackend.__init__: there is no single pool; the attributes it sets are set here.
        self._connect = connect
        self._cluster: RedisCluster | None = None
        self._cluster_lock = threading.Lock()
        self.router = router
        self.socket_timeout = socket_timeout
        self.max_block = min(socket_timeout / 2, MAX_BLOCK)
        self.limiter = trio.CapacityLimiter(max_connections)
        self.subscription_slots = trio.Semaphore(max_subscriptions)
        self.endpoint = router.endpoint(Node(*router.seeds[0], ""))
        self.partitions = Partitions(partitions)
        self.cluster = True

    @classmethod
    def from_cluster_url(
        cls,
        url: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
        socket_timeout: float = SOCKET_TIMEOUT,
        socket_connect_timeout: float = SOCKET_CONNECT_TIMEOUT,
    ) -> RedisClusterBackend:
        """Open a backend on a ``redis+cluster://`` URL (:func:`parse_cluster_url`); no
        connection is made until the first command.

        Args:
            max_connections: connections per master, for each of the two clients.

        Raises:
            stores.errors.ConfigError: the URL cannot be used.
        """
        if max_connections < 1 or max_subscriptions < 1:
            raise ConfigError("max_connections and max_subscriptions must be >= 1")
        parsed = parse_cluster_url(url)
        template = Endpoint(
            host=parsed.seeds[0][0],
            port=parsed.seeds[0][1],
            tls=parsed.tls,
            username=parsed.username,
            password=parsed.password,
            socket_timeout=socket_timeout,
            connect_timeout=socket_connect_timeout,
        )
        nodes = [ClusterNode(host, port) for host, port in parsed.seeds]  # type: ignore[no-untyped-call]
        connect = functools.partial(
            RedisCluster,
            startup_nodes=nodes,
            username=parsed.username,
            password=parsed.password,
            ssl=parsed.tls,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            max_connections=max_connections,
            require_full_coverage=False,
            protocol=2,
        )
        router = ClusterRouter(parsed.seeds, template, size=max_connections)
        return cls(
            connect,
            router,
            partitions=parsed.partitions,
            max_connections=max_connections,
            max_subscriptions=max_subscriptions,
            socket_timeout=socket_timeout,
        )

    async def run(self, work: Callable[[redis.Redis], T]) -> T:
        """See :meth:`RedisBackend.run`: ``work`` gets redis-py's cluster client (the same
        commands, routed by key), made in the first call (it connects at once, so not on the
        trio thread).

        Raises:
            stores.errors.BackendUnavailable: no node can be reached, or one timed out.
            stores.errors.QueryError: the cluster rejected a command.
        """
        return await trio.to_thread.run_sync(self._in_thread, work, limiter=self.limiter)

    def _in_thread(self, work: Callable[[redis.Redis], T]) -> T:
        with self._cluster_lock:
            if self._cluster is None:
                try:
                    self._cluster = self._connect()
                except (redis.RedisError, RedisClusterException) as exc:
                    raise BackendUnavailable(f"Redis Cluster: {exc}") from exc
        return translated(work, cast("redis.Redis", self._cluster))  # same commands, by key

    async def execute(
        self, commands: Sequence[Command], *, key: str, extra_wait: float = 0.0
    ) -> list[Any]:
        """See :meth:`RedisBackend.execute`: routed to the master of ``key``'s slot."""
        replies = await self.router.execute(commands, key=key, extra_wait=extra_wait)
        _raise_down(replies)
        return replies

    async def execute_many(
        self, groups: Sequence[tuple[str, Sequence[Command]]]
    ) -> list[list[Any]]:
        """See :meth:`RedisBackend.execute_many`: one round trip per master."""
        results = await self.router.execute_many(groups)
        for replies in results:
            _raise_down(replies)
        return results

    async def execute_on_masters(self, commands: Sequence[Command]) -> list[list[Any]]:
        """See :meth:`RedisBackend.execute_on_masters`."""
        return await self.router.execute_on_masters(commands)

    async def node_of(self, key: str) -> str:
        """The id of the master that serves ``key`` (the slot map loaded first if stale)."""
        return (await self.router.node(key)).id

    async def subscription_endpoints(
        self, topics: Sequence[str]
    ) -> list[tuple[Endpoint, list[str]]]:
        """Each master with the topics whose slots it serves.

        Raises:
            stores.errors.BackendUnavailable: no node answers, or a topic's slot has no master.
        """
        grouped: dict[Node, list[str]] = {}
        for topic in topics:
            grouped.setdefault(await self.router.node(topic), []).append(topic)
        return [(self.router.endpoint(node), some) for node, some in grouped.items()]

    async def ping(self) -> None:
        """Check every master answers ``PING`` and the cluster says ``cluster_state:ok``.

        Raises:
            stores.errors.BackendUnavailable: naming the master that does not, or the state.
        """
        for replies in await self.execute_on_masters([("PING",), ("CLUSTER", "INFO")]):
            check(replies[0])
            info = _text(check(replies[1]))
            if "cluster_state:ok" not in info:
                state = next((x for x in info.split() if x.startswith("cluster_state:")), "?")
                self.router.mark_stale()
                raise BackendUnavailable(f"Redis Cluster is not ok ({state.strip()})")

    async def aclose(self) -> None:
        """Close both clients' connections (idempotent)."""
        await self.router.aclose()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await trio.to_thread.run_sync(cluster.close, limiter=self.limiter)
