"""Redis adapters of the cache, stream and pub/sub ports (redis-py, blocking driver).

The realtime hot path — the stream's ``XADD``/``XREADGROUP``/``XACK``, the
sequencer's transaction, ``PUBLISH`` and Pub/Sub subscriptions — runs on the
trio thread over :mod:`stores.resp` (RESP on trio sockets, hiredis's parser):
no thread hop per command. Everything else uses redis-py in worker threads.

Threading rules for redis-py (DESIGN.md, "Backends"):

- Every driver call is one unit of work: one ``trio.to_thread.run_sync`` call
  under :attr:`RedisBackend.limiter`, a ``CapacityLimiter`` as large as the
  connection pool, so a worker thread always finds a free connection.
  Pipelines are created, executed and closed inside that one call.
- Socket timeouts bound every call. A cancelled redis-py caller waits for its
  command to finish (at most the socket timeout) so that no connection is
  left mid-reply; a cancelled :mod:`stores.resp` exchange closes its
  connection instead. A blocking ``XREADGROUP`` blocks server-side for at
  most :attr:`RedisBackend.max_block` per call (1 s, and at most half the
  socket timeout); longer waits are a loop of such calls.
- A subscription owns a connection of its own (not one of the pool's), one
  of :attr:`RedisBackend.subscription_slots`: subscribers never starve the
  commands of the shared pool.
- Replies have redis-py's RESP2 shapes (``protocol=2``) with ``bytes``
  values; stream field names and values are decoded as UTF-8 here, bytes that
  are not UTF-8 as lone surrogates (``surrogateescape``: the entry reaches its
  reader, which refuses it, instead of failing the read of its batch).
- Driver errors are translated: connection errors and timeouts become
  :class:`~stores.errors.BackendUnavailable`, rejected commands (``NOGROUP``,
  a bad id) :class:`~stores.errors.QueryError`.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar, cast

import redis
import trio
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisClusterUnreachableError
from redis.retry import Retry

from stores.errors import BackendUnavailable, ConfigError, QueryError, StoreError
from stores.memory import DEFAULT_SUBSCRIPTION_BUFFER, Subscription
from stores.partitions import Partitions
from stores.pubsub import Message
from stores.resp import Command, Endpoint, RespConnection, RespError, RespPool, check
from stores.sequence import (
    GENERATION_KEY,
    OFFSETS_KEY,
    NumberedEntry,
    channel_epoch,
    new_generation,
)
from stores.stream import StreamEntry, check_count

DEFAULT_MAX_CONNECTIONS = 16
DEFAULT_MAX_SUBSCRIPTIONS = 64
SOCKET_TIMEOUT = 5.0  # seconds, for any reply
SOCKET_CONNECT_TIMEOUT = 2.0  # seconds
MAX_BLOCK = 1.0  # seconds one XREADGROUP may block: how long a cancelled reader waits at most
HEALTH_CHECK_INTERVAL = 30  # seconds a pooled connection may idle before a PING on reuse
SUBSCRIPTION_POLL = 0.2  # seconds a subscription thread waits for a message between stop checks
SUBSCRIPTION_BATCH = 256  # most messages handed to trio in one hop
PARTITION_POLL = 0.01  # seconds between polls of a partitioned stream read by its own name

T = TypeVar("T")


def _store_error(exc: redis.RedisError) -> StoreError:
    """The port's error for a driver error."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return BackendUnavailable(str(exc))
    if isinstance(exc, (redis.ResponseError, redis.DataError)):
        return QueryError(str(exc))
    return StoreError(f"{type(exc).__name__}: {exc}")


def translated(work: Callable[[redis.Redis], T], client: redis.Redis) -> T:
    """``work(client)`` with the driver's errors as the port's (:func:`_store_error`)."""
    try:
        return work(client)
    except redis.RedisError as exc:
        raise _store_error(exc) from exc
    except RedisClusterUnreachableError as exc:
        raise BackendUnavailable(f"Redis Cluster: {exc}") from exc
    except RedisClusterException as exc:  # not a RedisError: the cluster client's own
        raise StoreError(f"Redis Cluster: {exc}") from exc


class RedisBackend:
    """One Redis server: a connection pool and the limiter sized to it.

    Build it with :meth:`from_url`; close it with :meth:`aclose`.

    Args:
        pool: the shared connection pool; its ``max_connections`` sizes
            :attr:`limiter`, and its ``socket_timeout`` must be set.
        max_subscriptions: most concurrent subscriptions (each holds one
            thread and one connection of its own); more wait for a slot.

    Raises:
        stores.errors.ConfigError: the pool has no connection cap or no socket
            timeout, or asks for RESP3.
    """

    def __init__(
        self, pool: redis.ConnectionPool, *, max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    ) -> None:
        options = pool.connection_kwargs
        socket_timeout = options.get("socket_timeout")
        if not isinstance(socket_timeout, (int, float)) or socket_timeout <= 0:
            raise ConfigError(f"Redis needs a positive socket_timeout, got {socket_timeout!r}")
        if options.get("protocol") not in (None, 2, "2"):
            raise ConfigError("Redis adapters parse RESP2 replies; drop protocol=3 from the URL")
        if pool.max_connections >= 2**31:
            raise ConfigError("the Redis connection pool needs max_connections")
        self.pool = pool
        self.socket_timeout = float(socket_timeout)
        self.max_block = min(self.socket_timeout / 2, MAX_BLOCK)
        """Longest server-side block of one XREADGROUP, in seconds."""
        self.limiter = trio.CapacityLimiter(pool.max_connections)
        self.subscription_slots = trio.Semaphore(max_subscriptions)
        """One per open subscription (each has its own connection)."""
        self._client = redis.Redis(connection_pool=pool)
        self.endpoint = _endpoint(pool)
        self.resp = RespPool(self.endpoint, size=pool.max_connections)
        """Connections on the trio thread, for the realtime hot path (:mod:`stores.resp`)."""
        self.partitions = Partitions(1)
        """How streams are split (one partition: plain keys; see :mod:`stores.partitions`)."""
        self.cluster = False
        """Whether this is a Redis Cluster: Pub/Sub is sharded (``SPUBLISH``/``SSUBSCRIBE``)
        and multi-key reads are split by slot."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
        socket_timeout: float = SOCKET_TIMEOUT,
        socket_connect_timeout: float = SOCKET_CONNECT_TIMEOUT,
        health_check_interval: int = HEALTH_CHECK_INTERVAL,
    ) -> RedisBackend:
        """Open a backend on ``redis://`` (or ``rediss://``, ``unix://``) ``url``.

        No connection is made until the first command. Query parameters of
        ``url`` override the keyword arguments.

        Args:
            url: the server, e.g. ``redis://localhost:6379/0``.
            max_connections: pool size, and so the most concurrent commands.
            max_subscriptions: most concurrent subscriptions.
            socket_timeout: seconds to wait for any reply.
            socket_connect_timeout: seconds to wait for a connection.
            health_check_interval: seconds a connection may idle before it is
                checked with a PING on reuse.

        Raises:
            stores.errors.ConfigError: ``url`` or a setting cannot be used.
        """
        if max_connections < 1 or max_subscriptions < 1:
            raise ConfigError("max_connections and max_subscriptions must be >= 1")
        try:
            pool = redis.ConnectionPool.from_url(
                url,
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                health_check_interval=health_check_interval,
                protocol=2,
                # One immediate retry on a dropped connection (a pooled socket the
                # server closed); timeouts are not retried, so none is doubled.
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            )
        except ValueError as exc:
            raise ConfigError(f"unusable Redis URL: {exc}") from exc
        return cls(pool, max_subscriptions=max_subscriptions)

    async def run(self, work: Callable[[redis.Redis], T]) -> T:
        """Run ``work(client)`` as one unit of work in a worker thread under :attr:`limiter`.

        ``work`` must not let driver objects (pipelines, PubSub) escape.

        Raises:
            stores.errors.BackendUnavailable: the server cannot be reached or timed out.
            stores.errors.QueryError: the server rejected a command.
        """
        return await trio.to_thread.run_sync(translated, work, self._client, limiter=self.limiter)

    async def execute(
        self, commands: Sequence[Command], *, key: str, extra_wait: float = 0.0
    ) -> list[Any]:
        """Send ``commands`` (a pipeline whose keys share ``key``'s slot) on the trio thread;
        their replies in order, error replies in place (:meth:`stores.resp.RespPool.execute`).

        On one server ``key`` only documents the pipeline; a cluster routes by it.

        Raises:
            stores.errors.BackendUnavailable: the server cannot be reached or timed out.
        """
        return await self.resp.execute(commands, extra_wait=extra_wait)

    async def execute_many(
        self, groups: Sequence[tuple[str, Sequence[Command]]]
    ) -> list[list[Any]]:
        """Several pipelines, each ``(key, commands)`` with its keys in ``key``'s slot, in as
        few round trips as the servers allow (one here; one per master on a cluster); each
        pipeline's replies, in order.

        Raises:
            stores.errors.BackendUnavailable: a server cannot be reached or timed out.
        """
        replies = await self.resp.execute([c for _, commands in groups for c in commands])
        results, start = [], 0
        for _, commands in groups:
            results.append(replies[start : start + len(commands)])
            start += len(commands)
        return results

    async def execute_on_masters(self, commands: Sequence[Command]) -> list[list[Any]]:
        """Send ``commands`` to every master (one here) and return each one's replies.

        Raises:
            stores.errors.BackendUnavailable: a server cannot be reached or timed out.
        """
        return [await self.resp.execute(commands)]

    async def node_of(self, key: str) -> str:
        """The id of the node that serves ``key`` ("" on one server: nothing to check)."""
        await trio.lowlevel.checkpoint()
        return ""

    async def subscription_endpoints(
        self, topics: Sequence[str]
    ) -> list[tuple[Endpoint, list[str]]]:
        """Where to subscribe to ``topics``: each server with its topics (one here)."""
        await trio.lowlevel.checkpoint()
        return [(self.endpoint, list(topics))]

    async def ping(self) -> None:
        """Check the server answers.

        Raises:
            stores.errors.BackendUnavailable: it does not.
        """
        await self.run(lambda client: client.ping())

    async def aclose(self) -> None:
        """Close the pool's connections (idempotent)."""
        await self.resp.aclose()
        await trio.to_thread.run_sync(self.pool.disconnect, limiter=self.limiter)


def _endpoint(pool: redis.ConnectionPool) -> Endpoint:
    """The server of a redis-py pool, for :mod:`stores.resp`."""
    options = pool.connection_kwargs
    return Endpoint(
        host=options.get("host", "localhost"),
        port=int(options.get("port", 6379)),
        path=options.get("path"),
        tls=issubclass(pool.connection_class, redis.SSLConnection),
        db=int(options.get("db", 0) or 0),
        username=options.get("username"),
        password=options.get("password"),
        socket_timeout=float(options["socket_timeout"]),
        connect_timeout=float(options.get("socket_connect_timeout") or options["socket_timeout"]),
    )


class RedisCache:
    """The cache port on Redis strings (``GET``/``MGET``/``SET PX``/``SET NX PX``/``DEL``)."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        return await self._backend.run(lambda client: cast("bytes | None", client.get(key)))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return the values under ``keys``, in order, ``None`` for each miss."""
        if not keys:
            await trio.lowlevel.checkpoint()
            return []
        if self._backend.cluster:  # one MGET per slot (redis-py's cluster client splits them)
            return await self._backend.run(
                lambda client: cast("list[bytes | None]", client.mget_nonatomic(keys))  # type: ignore[attr-defined]
            )
        return await self._backend.run(lambda client: cast("list[bytes | None]", client.mget(keys)))

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``.

        Args:
            key: the key.
            value: the value.
            ttl: time to live in seconds (``None``: no expiry), rounded up to
                whole milliseconds. Must be > 0.

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        px = None if ttl is None else math.ceil(ttl * 1000)
        await self._backend.run(lambda client: client.set(key, value, px=px))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        removed: int = await self._backend.run(lambda client: client.delete(key))
        return removed == 1

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool:
        """Store ``value`` under ``key`` unless it is held (``SET NX PX``); whether it stored it.

        Args:
            ttl: time to live in seconds, rounded up to whole milliseconds. Must be > 0.

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        if ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        px = math.ceil(ttl * 1000)
        stored = await self._backend.run(lambda client: client.set(key, value, nx=True, px=px))
        return bool(stored)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(value: bytes | str) -> str:
    """A stream field's name or value; bytes that are not UTF-8 as lone surrogates."""
    return value.decode(errors="surrogateescape") if isinstance(value, bytes) else value


def _flat_entry(entry_id: str, fields: list[bytes]) -> StreamEntry:
    """A stream entry from a raw RESP reply: its id and ``[name, value, name, value, …]``."""
    values = iter(fields)
    decoded = {_field(name): _field(value) for name, value in zip(values, values, strict=True)}
    return StreamEntry(entry_id, decoded, 1)


def _entry(
    entry_id: bytes | str, fields: Mapping[bytes, bytes], deliveries: int = 1
) -> StreamEntry:
    decoded = {_field(name): _field(value) for name, value in fields.items()}
    return StreamEntry(_text(entry_id), decoded, deliveries)


class RedisStream:
    """The stream port on Redis Streams.

    On a Redis Cluster a stream is split into partitions (:mod:`stores.partitions`):
    an entry goes to the partition of its ``channel`` field (entries without one to
    partition 0), its id carries the partition (``"<ms>-<seq>@<i>"``), and
    :meth:`partitions` names the keys a reader reads one by one. Reading a
    partitioned stream by its own name polls every partition (every
    :data:`PARTITION_POLL` seconds while waiting); the nozzle reads each partition
    instead, blocking.

    Args:
        backend: the server (or cluster).
        max_length: approximate cap on entries per stream (``XADD MAXLEN ~``;
            ``None``: unbounded), per partition.
    """

    def __init__(self, backend: RedisBackend, *, max_length: int | None = None) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self._backend = backend
        self._max_length = max_length
        self._partitions = backend.partitions

    def partitions(self, stream: str) -> tuple[str, ...]:
        """The keys that hold ``stream``'s entries, one per partition (``(stream,)`` on one
        server)."""
        return self._partitions.keys(stream)

    def _where(self, stream: str) -> tuple[str, int | None]:
        """``stream`` as a key and the partition it is (``None``: the whole logical stream,
        or the only partition)."""
        return stream, self._partitions.index_of_key(stream)

    async def append(self, stream: str, fields: Mapping[str, str]) -> str:
        """Append an entry and return its id.

        Raises:
            ValueError: ``fields`` is empty.
        """
        (entry_id,) = await self.append_many(stream, [fields])
        return entry_id

    def _xadd(self, stream: str, fields: Mapping[str, str]) -> Command:
        command: list[bytes | str | int] = ["XADD", stream]
        if self._max_length is not None:
            command += ["MAXLEN", "~", self._max_length]
        command.append("*")
        for name, value in fields.items():
            command += [name, value]
        return command

    async def append_many(self, stream: str, entries: Sequence[Mapping[str, str]]) -> list[str]:
        """Append entries in order, in one pipeline per partition; return their ids.

        Raises:
            ValueError: an entry is empty.
        """
        if any(not fields for fields in entries):
            raise ValueError("a stream entry needs at least one field")
        if not entries:
            await trio.lowlevel.checkpoint()
            return []
        partitions = self._partitions
        _, fixed = self._where(stream)
        if partitions.count == 1 or fixed is not None:
            index = fixed or 0
            replies = await self._backend.execute(
                [self._xadd(stream, f) for f in entries], key=stream
            )
            return [partitions.qualify(_text(check(i)), index) for i in replies]
        parts: dict[int, list[int]] = {}
        for position, fields in enumerate(entries):
            parts.setdefault(partitions.of(fields.get("channel")), []).append(position)
        ids: list[str] = [""] * len(entries)
        groups = []
        for index, positions in parts.items():
            key = partitions.key(stream, index)
            groups.append((key, [self._xadd(key, entries[p]) for p in positions]))
        for (index, positions), replies in zip(
            parts.items(), await self._backend.execute_many(groups), strict=True
        ):
            for position, reply in zip(positions, replies, strict=True):
                ids[position] = partitions.qualify(_text(check(reply)), index)
        return ids

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create consumer group ``group`` at the start of ``stream`` (of each of its
        partitions) if missing, creating the stream too: ``XGROUP CREATE … 0 MKSTREAM``,
        ignoring ``BUSYGROUP``."""
        _, fixed = self._where(stream)
        keys = (stream,) if fixed is not None else self.partitions(stream)

        def create(client: redis.Redis) -> None:
            for key in keys:
                try:
                    client.xgroup_create(key, group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if not str(exc).startswith("BUSYGROUP"):
                        raise

        await self._backend.run(create)

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int,
        block: float,
    ) -> list[StreamEntry]:
        """Read up to ``count`` new entries for ``consumer``, waiting at most ``block`` seconds.

        Waits longer than :attr:`RedisBackend.max_block` are split into several
        ``XREADGROUP … BLOCK`` calls, each bounded by the socket timeout. A
        partitioned stream read by its own name is polled (up to ``count`` entries
        of each partition per read).

        Args:
            stream: the stream name, or one partition's key (:meth:`partitions`).
            group: an existing consumer group.
            consumer: the reader's name within the group.
            count: most entries returned, >= 1.
            block: longest wait in seconds for a first entry; <= 0 does not wait.

        Returns:
            The entries, oldest first within a partition, each with ``deliveries == 1``;
            empty when nothing arrived in time. They are pending for ``consumer`` until
            :meth:`ack`.

        Raises:
            ValueError: ``count`` < 1.
            stores.errors.QueryError: the group does not exist.
        """
        check_count(count)
        _, fixed = self._where(stream)
        if self._partitions.count > 1 and fixed is None:
            return await self._poll(stream, group, consumer, count=count, block=block)
        deadline = trio.current_time() + block
        while True:
            wait = min(deadline - trio.current_time(), self._backend.max_block)
            block_ms = int(wait * 1000) if wait >= 0.001 else None  # None: don't block
            entries = await self._read(stream, fixed or 0, group, consumer, count, block_ms)
            if entries or block_ms is None:
                return entries

    async def _read(
        self, key: str, index: int, group: str, consumer: str, count: int, block_ms: int | None
    ) -> list[StreamEntry]:
        command: list[bytes | str | int] = ["XREADGROUP", "GROUP", group, consumer]
        command += ["COUNT", count]
        if block_ms is not None:
            command += ["BLOCK", block_ms]
        command += ["STREAMS", key, ">"]
        (reply,) = await self._backend.execute(
            [command], key=key, extra_wait=(block_ms or 0) / 1000
        )
        qualify = self._partitions.qualify
        return [
            _flat_entry(qualify(entry_id.decode(), index), fields)
            for _name, items in check(reply) or ()
            for entry_id, fields in items
            if fields is not None
        ]

    async def _poll(
        self, stream: str, group: str, consumer: str, *, count: int, block: float
    ) -> list[StreamEntry]:
        deadline = trio.current_time() + block
        while True:
            entries = []
            for index, key in enumerate(self.partitions(stream)):
                entries += await self._read(key, index, group, consumer, count, None)
            if entries or trio.current_time() >= deadline:
                return entries
            await trio.sleep(min(PARTITION_POLL, max(0.0, deadline - trio.current_time())))

    def _by_partition(self, stream: str, ids: Sequence[str]) -> dict[str, list[str]]:
        """Redis's own ids grouped by the key of their partition."""
        _, fixed = self._where(stream)
        grouped: dict[str, list[str]] = {}
        for entry_id in ids:
            index, raw = self._partitions.split(entry_id)
            key = stream if fixed is not None else self._partitions.key(stream, index)
            grouped.setdefault(key, []).append(raw)
        return grouped

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; return how many were pending (0 for a missing group).

        Raises:
            stores.errors.QueryError: an id is malformed.
        """
        if not ids:
            await trio.lowlevel.checkpoint()
            return 0
        try:
            grouped = self._by_partition(stream, ids)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        replies = await self._backend.execute_many(
            [(key, [["XACK", key, group, *raw]]) for key, raw in grouped.items()]
        )
        acked = sum(int(check(reply)) for (reply,) in replies)
        return acked

    async def reclaim(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        min_idle: float,
        count: int,
    ) -> list[StreamEntry]:
        """Move to ``consumer`` up to ``count`` entries pending on any consumer
        for at least ``min_idle`` seconds, and return them (XAUTOCLAIM), from ``stream``
        (each of its partitions when it has several and is named by its own name).

        The delivery counts come from ``XPENDING`` in one pipeline after the
        claim, in the same unit of work.

        Raises:
            ValueError: ``count`` < 1.
            stores.errors.QueryError: the group does not exist.
        """
        check_count(count)
        min_idle_ms = max(0, math.ceil(min_idle * 1000))
        _, fixed = self._where(stream)
        keys = (
            [(stream, fixed or 0)]
            if fixed is not None or self._partitions.count == 1
            else list(zip(self.partitions(stream), range(self._partitions.count), strict=True))
        )
        qualify = self._partitions.qualify

        def claim(client: redis.Redis) -> list[StreamEntry]:
            found: list[StreamEntry] = []
            for key, index in keys:
                _cursor, claimed, _deleted = client.xautoclaim(
                    key, group, consumer, min_idle_ms, count=count
                )
                claimed = [(i, f) for i, f in claimed if f is not None]  # Redis < 7: trimmed
                if not claimed:
                    continue
                with client.pipeline(transaction=False) as pipe:
                    for entry_id, _fields in claimed:
                        pipe.xpending_range(key, group, entry_id, entry_id, 1, consumer)
                    replies = pipe.execute()
                deliveries = {
                    row["message_id"]: row["times_delivered"] for r in replies for row in r
                }
                # An entry acknowledged between the two commands has no row left; a
                # claimed entry has been delivered at least twice.
                found += [
                    _entry(qualify(_text(i), index), f, deliveries.get(i, 2)) for i, f in claimed
                ]
            return found

        return await self._backend.run(claim)

    async def pending(self, stream: str, group: str) -> int:
        """Number of delivered but unacknowledged entries in ``group`` (``XPENDING`` summary,
        summed over the partitions).

        Raises:
            stores.errors.QueryError: the group does not exist.
        """
        _, fixed = self._where(stream)
        keys = (stream,) if fixed is not None else self.partitions(stream)

        def count(client: redis.Redis) -> int:
            return sum(int(client.xpending(key, group)["pending"]) for key in keys)

        return await self._backend.run(count)

    async def length(self, stream: str) -> int:
        """Number of entries in ``stream`` (0 when it does not exist), over its partitions."""
        _, fixed = self._where(stream)
        keys = (stream,) if fixed is not None else self.partitions(stream)

        def length(client: redis.Redis) -> int:
            return sum(int(client.xlen(key)) for key in keys)

        return await self._backend.run(length)


def _reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the one real exception a nursery wrapped (else the first Cancelled, else the group).

    The same unwrapping as ``trio.as_safe_channel``: a context manager that
    opens a nursery should raise what its body raised, not a group.
    """
    errors = [exc for exc in group.exceptions if not isinstance(exc, trio.Cancelled)]
    if len(errors) > 1:
        raise group
    error = errors[0] if errors else group.exceptions[0]
    context = error.__context__
    try:
        raise error
    finally:
        error.__context__ = context
        del error, context


async def _confirm(connection: RespConnection, kind: bytes, topics: Sequence[str]) -> None:
    """Read replies until Redis confirmed ``kind`` (``subscribe``/``unsubscribe``) of every topic;
    messages that arrive meanwhile are dropped (only used at the start and the end)."""
    waiting = {topic.encode() for topic in topics}
    while waiting:
        reply = await connection.receive()
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == kind:
            waiting.discard(reply[1])
        elif isinstance(reply, RespError):
            raise QueryError(str(reply))


class RedisPubSub:
    """The pub/sub port on Redis Pub/Sub (on a Redis Cluster: sharded Pub/Sub, ``SPUBLISH`` and
    ``SSUBSCRIBE``, Redis >= 7, so a topic's messages cross only the master of its slot).

    Args:
        backend: the server.
        buffer_size: messages buffered per subscription before the oldest is
            dropped (see :class:`stores.memory.Subscription`).
    """

    def __init__(
        self, backend: RedisBackend, *, buffer_size: int = DEFAULT_SUBSCRIPTION_BUFFER
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self._backend = backend
        self._buffer_size = buffer_size
        self._prefix = "S" if backend.cluster else ""

    async def publish(self, topic: str, data: bytes) -> int:
        """Send ``data`` to the current subscribers of ``topic``; return how many
        connections got it, across processes."""
        (receivers,) = await self._backend.execute(
            [(f"{self._prefix}PUBLISH", topic, data)], key=topic
        )
        return int(check(receivers))

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[Subscription]:
        """Subscribe to ``topics`` for the life of the context.

        Entry returns once Redis has confirmed every ``SUBSCRIBE`` (``SSUBSCRIBE``:
        one connection per master that serves a topic); it waits for a slot of
        :attr:`RedisBackend.subscription_slots` first.

        Yields:
            A :class:`~stores.memory.Subscription`. Its iteration ends when
            the context exits, or raises
            :class:`~stores.errors.BackendUnavailable` if a connection is lost (or,
            sharded, a topic's slot moved to another master).

        Raises:
            ValueError: no topics.
            stores.errors.BackendUnavailable: Redis cannot be reached or did not
                confirm in time.
        """
        if not topics:
            raise ValueError("subscribe needs at least one topic")
        unique = tuple(dict.fromkeys(topics))
        subscription = Subscription(self._buffer_size)
        kind = self._prefix.lower().encode()
        async with self._backend.subscription_slots, contextlib.AsyncExitStack() as stack:
            connections = []
            for endpoint, some in await self._backend.subscription_endpoints(unique):
                connection = await self._open(endpoint, some, kind)
                stack.push_async_callback(_unsubscribe, connection, some, kind)
                connections.append(connection)
            try:
                async with trio.open_nursery() as nursery:
                    for connection in connections:
                        nursery.start_soon(_listen, connection, subscription, kind)
                    try:
                        yield subscription
                    finally:
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                _reraise_single(group)
            finally:
                subscription.close()

    async def _open(self, endpoint: Endpoint, topics: Sequence[str], kind: bytes) -> RespConnection:
        """A connection subscribed to ``topics`` (confirmed)."""
        connection = await RespConnection.open(endpoint)
        command = f"{self._prefix}SUBSCRIBE"
        try:
            with trio.fail_after(endpoint.socket_timeout):
                # Sharded: one command per topic (the topics of one command share a slot).
                commands = [(command, t) for t in topics] if kind else [(command, *topics)]
                await connection.send(commands)
                await _confirm(connection, kind + b"subscribe", topics)
        except trio.TooSlowError:
            await connection.aclose()
            raise BackendUnavailable(
                f"{command} not confirmed within {endpoint.socket_timeout} s"
            ) from None
        except BaseException:
            await connection.aclose()
            raise
        return connection


async def _listen(connection: RespConnection, subscription: Subscription, kind: bytes) -> None:
    """Hand every message of ``connection`` to ``subscription`` until cancelled or it fails."""
    message_kind = kind + b"message"
    moved_kind = b"sunsubscribe"
    try:
        while True:
            reply = await connection.receive()
            if isinstance(reply, list) and len(reply) == 3:
                if reply[0] == message_kind:
                    subscription.deliver(Message(reply[1].decode(), reply[2]))
                elif reply[0] == moved_kind:
                    # Redis unsubscribes a sharded topic whose slot moved to another master.
                    raise BackendUnavailable(f"the slot of topic {reply[1].decode()!r} moved")
    except BackendUnavailable as exc:
        subscription.close(exc)


async def _unsubscribe(connection: RespConnection, topics: Sequence[str], kind: bytes) -> None:
    """Unsubscribe and wait (at most the socket timeout) for Redis to confirm, so that a
    publish made after the subscription's context exits reaches no one; then close."""
    command = "SUNSUBSCRIBE" if kind else "UNSUBSCRIBE"
    with trio.CancelScope(shield=True), trio.move_on_after(connection.socket_timeout):
        if not connection.broken:
            try:
                commands = [(command, t) for t in topics] if kind else [(command, *topics)]
                await connection.send(commands)
                await _confirm(connection, kind + b"unsubscribe", topics)
            except (BackendUnavailable, QueryError):
                pass
    await connection.aclose()


FUNCTIONS = """#!lua name=starling

-- A partition whose keys are now on another node than the one that numbered its events
-- last (a failover: the promoted replica may lack the last writes of its master, offsets
-- included) starts a new generation with its offsets back at 0, so no offset is handed out
-- twice in one epoch. node: the caller's id of the node it called.
local function check_master(offsets, generation_key, master_key, node, fresh)
  if redis.call('GET', master_key) ~= node then
    redis.call('SET', master_key, node)
    redis.call('SET', generation_key, fresh)
    redis.call('DEL', offsets)
  end
end

-- starling_publish: number events per channel and append them to the stream, atomically.
-- KEYS: the stream, the offsets hash, the generation key[, the master key (cluster)].
-- ARGV: max stream length ("" for none), a fresh generation (kept if none is set),
--       [the node id, with a master key,] then channel, data, channel, data, ...
-- Returns: the generation, then entry id and offset of each event, in order.
local function starling_publish(keys, args)
  local stream, offsets, generation_key = keys[1], keys[2], keys[3]
  local first = 3
  if #keys > 3 then
    check_master(offsets, generation_key, keys[4], args[3], args[2])
    first = 4
  end
  redis.call('SET', generation_key, args[2], 'NX')
  local generation = redis.call('GET', generation_key)
  local result = {generation}
  for i = first, #args, 2 do
    local channel = args[i]
    local offset = redis.call('HINCRBY', offsets, channel, 1)
    local id
    if args[1] == '' then
      id = redis.call('XADD', stream, '*', 'channel', channel, 'data', args[i + 1],
                      'offset', offset, 'gen', generation)
    else
      id = redis.call('XADD', stream, 'MAXLEN', '~', args[1], '*', 'channel', channel,
                      'data', args[i + 1], 'offset', offset, 'gen', generation)
    end
    result[#result + 1] = id
    result[#result + 1] = offset
  end
  return result
end

-- starling_number: the next offsets of channels, without appending.
-- KEYS: the offsets hash, the generation key[, the master key (cluster)].
-- ARGV: a fresh generation, [the node id, with a master key,] then channel, count, ...
-- Returns: the generation, then each channel's new top offset, in order.
local function starling_number(keys, args)
  local offsets, generation_key = keys[1], keys[2]
  local first = 2
  if #keys > 2 then
    check_master(offsets, generation_key, keys[3], args[2], args[1])
    first = 3
  end
  redis.call('SET', generation_key, args[1], 'NX')
  local result = {redis.call('GET', generation_key)}
  for i = first, #args, 2 do
    result[#result + 1] = redis.call('HINCRBY', offsets, args[i], args[i + 1])
  end
  return result
end

redis.register_function('starling_publish', starling_publish)
redis.register_function('starling_number', starling_number)
"""
"""The Redis Function library ``starling`` (Redis >= 7), loaded on every master by every
process at start (:meth:`RedisSequencer.refresh`) and again if a ``FCALL`` finds it missing
(a flushed Redis, a new master).

Producers outside Starling that want their events ordered across processes call
``FCALL starling_publish 3 starling:events starling:offsets starling:generation
"" <any string> <channel> <data> …`` instead of a bare ``XADD`` (docs/operations.md); on a
Redis Cluster with the keys of the channel's partition (:mod:`stores.partitions`)."""

MASTER_KEY = "starling:master"
"""The key (per partition, Redis Cluster only) naming the node that numbered events last."""


class RedisSequencer:
    """Per-channel offsets in Redis, shared by every process (one Function call per partition).

    ``starling_number`` (:data:`FUNCTIONS`) sets the generation if there is none, reads it
    and adds each channel's count to its offset, atomically, so the offsets and the
    generation their epochs derive from are read together. A channel's events of one
    call get consecutive offsets, in the order given.

    On a Redis Cluster each partition (:mod:`stores.partitions`) has its own offsets and
    generation, in its slot, and every call names the node it was routed to: the first
    call that reaches a partition on another node than the last one (a replica promoted
    after its master failed) starts a new generation there, so the channels of that
    partition change epoch (their offsets start again at 1), and a client that asks to
    recover from before gets ``recovered: false`` instead of offsets that may have been
    handed out twice.
    """

    def __init__(
        self,
        backend: RedisBackend,
        *,
        offsets_key: str = OFFSETS_KEY,
        generation_key: str = GENERATION_KEY,
        max_length: int | None = None,
    ) -> None:
        self._backend = backend
        self._max_length = max_length
        self._partitions = backend.partitions
        self._offsets_keys = self._partitions.keys(offsets_key)
        self._generation_keys = self._partitions.keys(generation_key)
        self._master_keys = self._partitions.keys(MASTER_KEY)
        self._generations: list[str | None] = [None] * self._partitions.count

    def _keys(self, index: int, *first: str) -> list[bytes | str | int]:
        """The keys of a Function call on partition ``index`` (after ``first``), with their
        count in front; and on a cluster the master key."""
        keys = [*first, self._offsets_keys[index], self._generation_keys[index]]
        if self._partitions.count > 1:
            keys.append(self._master_keys[index])
        return [len(keys), *keys]

    async def _node(self, index: int) -> list[bytes | str | int]:
        """The node id argument of a call on partition ``index`` (cluster only)."""
        if self._partitions.count == 1:
            return []
        return [await self._backend.node_of(self._offsets_keys[index])]

    async def _calls(self, calls: list[tuple[int, list[bytes | str | int]]]) -> list[list[Any]]:
        """``FCALL`` each ``(partition, call)``, all in one round trip per master; a call that
        finds the library missing loads it there and runs again. Their values, in order."""
        keys = [self._offsets_keys[index] for index, _ in calls]
        replies = await self._backend.execute_many(
            [(key, [call]) for key, (_, call) in zip(keys, calls, strict=True)]
        )
        results = []
        for key, (index, call), (reply,) in zip(keys, calls, replies, strict=True):
            if isinstance(reply, RespError) and "Function not found" in str(reply):
                load = ("FUNCTION", "LOAD", "REPLACE", FUNCTIONS)
                loaded, reply = await self._backend.execute([load, call], key=key)
                check(loaded)
            values: list[Any] = check(reply)
            self._generations[index] = _text(values[0])
            results.append(values)
        return results

    def _by_partition(self, channels: Sequence[str]) -> dict[int, list[int]]:
        parts: dict[int, list[int]] = {}
        for position, channel in enumerate(channels):
            parts.setdefault(self._partitions.of(channel), []).append(position)
        return parts

    async def next_offsets(self, channels: Sequence[str]) -> list[tuple[int, str]]:
        """See :class:`stores.sequence.Sequencer`."""
        if not channels:
            await trio.lowlevel.checkpoint()
            return []
        numbered: list[tuple[int, str]] = [(0, "")] * len(channels)
        parts = self._by_partition(channels)
        counted = []
        calls = []
        for index, positions in parts.items():
            counts = Counter(channels[p] for p in positions)
            call: list[bytes | str | int] = ["FCALL", "starling_number", *self._keys(index)]
            call += [new_generation(), *(await self._node(index))]
            for channel, count in counts.items():
                call += [channel, count]
            counted.append((positions, counts))
            calls.append((index, call))
        for (positions, counts), values in zip(counted, await self._calls(calls), strict=True):
            generation = _text(values[0])
            # The first offset of each channel's run: its new top minus its count, plus one.
            following = {}
            epochs = {}
            for (channel, count), top in zip(counts.items(), values[1:], strict=True):
                following[channel] = int(top) - count + 1
                epochs[channel] = channel_epoch(generation, channel)
            for position in positions:
                channel = channels[position]
                offset = following[channel]
                following[channel] = offset + 1
                numbered[position] = (offset, epochs[channel])
        return numbered

    async def append_numbered(
        self, stream: str, events: Sequence[tuple[str, bytes]]
    ) -> list[NumberedEntry]:
        """See :class:`stores.sequence.Sequencer`: one ``FCALL starling_publish`` per partition
        (the library :data:`FUNCTIONS`, loaded on first use), so numbering and ``XADD`` are one
        atomic step in Redis. On a cluster the entry ids carry their partition."""
        if not events:
            await trio.lowlevel.checkpoint()
            return []
        numbered: list[NumberedEntry | None] = [None] * len(events)
        max_length = "" if self._max_length is None else self._max_length
        partitions = self._partitions
        parts = self._by_partition([c for c, _ in events])
        calls = []
        for index, positions in parts.items():
            call: list[bytes | str | int] = ["FCALL", "starling_publish"]
            call += self._keys(index, partitions.key(stream, index))
            call += [max_length, new_generation(), *(await self._node(index))]
            for position in positions:
                call += events[position]
            calls.append((index, call))
        for (index, positions), values in zip(parts.items(), await self._calls(calls), strict=True):
            generation = _text(values[0])
            epochs: dict[str, str] = {}
            for position, entry, offset in zip(positions, values[1::2], values[2::2], strict=True):
                channel = events[position][0]
                epoch = epochs.get(channel) or epochs.setdefault(
                    channel, channel_epoch(generation, channel)
                )
                numbered[position] = NumberedEntry(
                    partitions.qualify(_text(entry), index), int(offset), epoch
                )
        return [entry for entry in numbered if entry is not None]

    async def refresh(self) -> str:
        """See :class:`stores.sequence.Sequencer`. Also loads (replaces) the Function library
        :data:`FUNCTIONS` on every master, so producers outside Starling may
        ``FCALL starling_publish`` as soon as a process has started. Returns the generation
        of the first partition (each partition has its own on a cluster)."""
        for replies in await self._backend.execute_on_masters(
            [("FUNCTION", "LOAD", "REPLACE", FUNCTIONS)]
        ):
            check(replies[0])
        calls = []
        for index in range(self._partitions.count):
            call: list[bytes | str | int] = ["FCALL", "starling_number", *self._keys(index)]
            calls.append((index, [*call, new_generation(), *(await self._node(index))]))
        await self._calls(calls)
        first = self._generations[0]
        assert first is not None
        return first

    def epoch(self, channel: str) -> str:
        """See :class:`stores.sequence.Sequencer`."""
        generation = self._generations[self._partitions.of(channel)]
        if generation is None:
            raise RuntimeError("no generation read yet: await refresh() first")
        return channel_epoch(generation, channel)
