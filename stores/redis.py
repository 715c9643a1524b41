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

import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar, cast

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from stores.errors import BackendUnavailable, ConfigError, QueryError, StoreError
from stores.memory import DEFAULT_SUBSCRIPTION_BUFFER, Subscription
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

T = TypeVar("T")


def _store_error(exc: redis.RedisError) -> StoreError:
    """The port's error for a driver error."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return BackendUnavailable(str(exc))
    if isinstance(exc, (redis.ResponseError, redis.DataError)):
        return QueryError(str(exc))
    return StoreError(f"{type(exc).__name__}: {exc}")


def _translated(work: Callable[[redis.Redis], T], client: redis.Redis) -> T:
    try:
        return work(client)
    except redis.RedisError as exc:
        raise _store_error(exc) from exc


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
        return await trio.to_thread.run_sync(_translated, work, self._client, limiter=self.limiter)

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


def _flat_entry(entry_id: bytes, fields: list[bytes]) -> StreamEntry:
    """A stream entry from a raw RESP reply: its id and ``[name, value, name, value, …]``."""
    values = iter(fields)
    decoded = {_field(name): _field(value) for name, value in zip(values, values, strict=True)}
    return StreamEntry(entry_id.decode(), decoded, 1)


def _entry(entry_id: bytes, fields: Mapping[bytes, bytes], deliveries: int = 1) -> StreamEntry:
    decoded = {_field(name): _field(value) for name, value in fields.items()}
    return StreamEntry(_text(entry_id), decoded, deliveries)


class RedisStream:
    """The stream port on Redis Streams.

    Args:
        backend: the server.
        max_length: approximate cap on entries per stream (``XADD MAXLEN ~``;
            ``None``: unbounded).
    """

    def __init__(self, backend: RedisBackend, *, max_length: int | None = None) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self._backend = backend
        self._max_length = max_length

    async def append(self, stream: str, fields: Mapping[str, str]) -> str:
        """Append an entry and return its id.

        Raises:
            ValueError: ``fields`` is empty.
        """
        if not fields:
            raise ValueError("a stream entry needs at least one field")
        (entry_id,) = await self._backend.resp.execute([self._xadd(stream, fields)])
        return _text(check(entry_id))

    def _xadd(self, stream: str, fields: Mapping[str, str]) -> Command:
        command: list[bytes | str | int] = ["XADD", stream]
        if self._max_length is not None:
            command += ["MAXLEN", "~", self._max_length]
        command.append("*")
        for name, value in fields.items():
            command += [name, value]
        return command

    async def append_many(self, stream: str, entries: Sequence[Mapping[str, str]]) -> list[str]:
        """Append entries in order, in one pipeline; return their ids.

        Raises:
            ValueError: an entry is empty.
        """
        if any(not fields for fields in entries):
            raise ValueError("a stream entry needs at least one field")
        if not entries:
            await trio.lowlevel.checkpoint()
            return []
        replies = await self._backend.resp.execute([self._xadd(stream, f) for f in entries])
        return [_text(check(entry_id)) for entry_id in replies]

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create consumer group ``group`` at the start of ``stream`` if missing
        (creating the stream too): ``XGROUP CREATE … 0 MKSTREAM``, ignoring ``BUSYGROUP``."""

        def create(client: redis.Redis) -> None:
            try:
                client.xgroup_create(stream, group, id="0", mkstream=True)
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
        ``XREADGROUP … BLOCK`` calls, each bounded by the socket timeout.

        Args:
            stream: the stream name.
            group: an existing consumer group.
            consumer: the reader's name within the group.
            count: most entries returned, >= 1.
            block: longest wait in seconds for a first entry; <= 0 does not wait.

        Returns:
            The entries, oldest first, each with ``deliveries == 1``; empty when
            nothing arrived in time. They are pending for ``consumer`` until :meth:`ack`.

        Raises:
            ValueError: ``count`` < 1.
            stores.errors.QueryError: the group does not exist.
        """
        check_count(count)
        deadline = trio.current_time() + block
        while True:
            wait = min(deadline - trio.current_time(), self._backend.max_block)
            command: list[bytes | str | int] = ["XREADGROUP", "GROUP", group, consumer]
            command += ["COUNT", count]
            block_ms = int(wait * 1000) if wait >= 0.001 else None  # None: don't block
            if block_ms is not None:
                command += ["BLOCK", block_ms]
            command += ["STREAMS", stream, ">"]
            (reply,) = await self._backend.resp.execute(
                [command], extra_wait=(block_ms or 0) / 1000
            )
            entries = [
                _flat_entry(entry_id, fields)
                for _name, items in check(reply) or ()
                for entry_id, fields in items
                if fields is not None
            ]
            if entries or block_ms is None:
                return entries

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; return how many were pending (0 for a missing group).

        Raises:
            stores.errors.QueryError: an id is malformed.
        """
        if not ids:
            await trio.lowlevel.checkpoint()
            return 0
        (acked,) = await self._backend.resp.execute([["XACK", stream, group, *ids]])
        return int(check(acked))

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
        for at least ``min_idle`` seconds, and return them (XAUTOCLAIM).

        The delivery counts come from ``XPENDING`` in one pipeline after the
        claim, in the same unit of work.

        Raises:
            ValueError: ``count`` < 1.
            stores.errors.QueryError: the group does not exist.
        """
        check_count(count)
        min_idle_ms = max(0, math.ceil(min_idle * 1000))

        def claim(client: redis.Redis) -> list[StreamEntry]:
            _cursor, claimed, _deleted = client.xautoclaim(
                stream, group, consumer, min_idle_ms, count=count
            )
            claimed = [(i, f) for i, f in claimed if f is not None]  # Redis < 7: trimmed
            if not claimed:
                return []
            with client.pipeline(transaction=False) as pipe:
                for entry_id, _fields in claimed:
                    pipe.xpending_range(stream, group, entry_id, entry_id, 1, consumer)
                replies = pipe.execute()
            deliveries = {row["message_id"]: row["times_delivered"] for r in replies for row in r}
            # An entry acknowledged between the two commands has no row left; a
            # claimed entry has been delivered at least twice.
            return [_entry(i, f, deliveries.get(i, 2)) for i, f in claimed]

        return await self._backend.run(claim)

    async def pending(self, stream: str, group: str) -> int:
        """Number of delivered but unacknowledged entries in ``group`` (``XPENDING`` summary).

        Raises:
            stores.errors.QueryError: the group does not exist.
        """
        summary: dict[str, Any] = await self._backend.run(
            lambda client: client.xpending(stream, group)
        )
        return int(summary["pending"])

    async def length(self, stream: str) -> int:
        """Number of entries in ``stream`` (0 when it does not exist)."""
        length: int = await self._backend.run(lambda client: client.xlen(stream))
        return length


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
    """The pub/sub port on Redis Pub/Sub.

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

    async def publish(self, topic: str, data: bytes) -> int:
        """Send ``data`` to the current subscribers of ``topic``; return how many
        connections got it, across processes."""
        (receivers,) = await self._backend.resp.execute([("PUBLISH", topic, data)])
        return int(check(receivers))

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[Subscription]:
        """Subscribe to ``topics`` for the life of the context.

        Entry returns once Redis has confirmed every ``SUBSCRIBE``; it waits
        for a slot of :attr:`RedisBackend.subscription_slots` first. Exit
        stops the subscription thread within :data:`SUBSCRIPTION_POLL` seconds.

        Yields:
            A :class:`~stores.memory.Subscription`. Its iteration ends when
            the context exits, or raises
            :class:`~stores.errors.BackendUnavailable` if the connection is lost.

        Raises:
            ValueError: no topics.
            stores.errors.BackendUnavailable: Redis cannot be reached or did not
                confirm in time.
        """
        if not topics:
            raise ValueError("subscribe needs at least one topic")
        unique = tuple(dict.fromkeys(topics))
        subscription = Subscription(self._buffer_size)
        endpoint = self._backend.endpoint
        async with self._backend.subscription_slots:
            connection = await RespConnection.open(endpoint)
            try:
                with trio.fail_after(endpoint.socket_timeout):
                    await connection.send([("SUBSCRIBE", *unique)])
                    await _confirm(connection, b"subscribe", unique)
            except trio.TooSlowError:
                await connection.aclose()
                raise BackendUnavailable(
                    f"SUBSCRIBE not confirmed within {endpoint.socket_timeout} s"
                ) from None
            except BaseException:
                await connection.aclose()
                raise
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_listen, connection, subscription)
                    try:
                        yield subscription
                    finally:
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                _reraise_single(group)
            finally:
                subscription.close()
                await _unsubscribe(connection, unique)


async def _listen(connection: RespConnection, subscription: Subscription) -> None:
    """Hand every message of ``connection`` to ``subscription`` until cancelled or it fails."""
    message_kind = b"message"
    try:
        while True:
            reply = await connection.receive()
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == message_kind:
                subscription.deliver(Message(reply[1].decode(), reply[2]))
    except BackendUnavailable as exc:
        subscription.close(exc)


async def _unsubscribe(connection: RespConnection, topics: Sequence[str]) -> None:
    """Unsubscribe and wait (at most the socket timeout) for Redis to confirm, so that a
    publish made after the subscription's context exits reaches no one; then close."""
    with trio.CancelScope(shield=True), trio.move_on_after(connection.socket_timeout):
        if not connection.broken:
            try:
                await connection.send([("UNSUBSCRIBE", *topics)])
                await _confirm(connection, b"unsubscribe", topics)
            except (BackendUnavailable, QueryError):
                pass
    await connection.aclose()


FUNCTIONS = """#!lua name=starling

-- starling_publish: number events per channel and append them to the stream, atomically.
-- KEYS: the stream, the offsets hash, the generation key.
-- ARGV: max stream length ("" for none), a fresh generation (kept if none is set),
--       then channel, data, channel, data, ...
-- Returns: the generation, then entry id and offset of each event, in order.
local function starling_publish(keys, args)
  local stream, offsets, generation_key = keys[1], keys[2], keys[3]
  redis.call('SET', generation_key, args[2], 'NX')
  local generation = redis.call('GET', generation_key)
  local result = {generation}
  for i = 3, #args, 2 do
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

redis.register_function('starling_publish', starling_publish)
"""
"""The Redis Function library ``starling`` (Redis >= 7), loaded by every process at start
(:meth:`RedisSequencer.refresh`) and again if a ``FCALL`` finds it missing (a flushed Redis).

Producers outside Starling that want their events ordered across processes call
``FCALL starling_publish 3 starling:events starling:offsets starling:generation
"" <any string> <channel> <data> …`` instead of a bare ``XADD`` (docs/operations.md)."""


class RedisSequencer:
    """Per-channel offsets in Redis, shared by every process (one transaction per call).

    ``SET starling:generation <new> NX``, ``GET starling:generation`` and one
    ``HINCRBY starling:offsets <channel> <count>`` per distinct channel of
    the call, in one ``MULTI`` transaction, so the offsets and the generation
    their epochs derive from are read together. A channel's events of one
    call get consecutive offsets, in the order given.
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
        self._offsets_key = offsets_key
        self._generation_key = generation_key
        self._generation: str | None = None

    async def next_offsets(self, channels: Sequence[str]) -> list[tuple[int, str]]:
        """See :class:`stores.sequence.Sequencer`."""
        if not channels:
            await trio.lowlevel.checkpoint()
            return []

        counts = Counter(channels)

        commands: list[Command] = [
            ("MULTI",),
            ("SET", self._generation_key, new_generation(), "NX"),
            ("GET", self._generation_key),
        ]
        commands += [("HINCRBY", self._offsets_key, c, n) for c, n in counts.items()]
        commands.append(("EXEC",))
        replies = check((await self._backend.resp.execute(commands))[-1])
        for reply in replies:
            check(reply)
        generation, tops = _text(replies[1]), [int(top) for top in replies[2:]]
        self._generation = generation
        # The first offset of each channel's run: its new top minus its count, plus one.
        following = {}
        epochs = {}
        for (channel, count), top in zip(counts.items(), tops, strict=True):
            following[channel] = top - count + 1
            epochs[channel] = channel_epoch(generation, channel)
        numbered = []
        for channel in channels:
            offset = following[channel]
            following[channel] = offset + 1
            numbered.append((offset, epochs[channel]))
        return numbered

    async def append_numbered(
        self, stream: str, events: Sequence[tuple[str, bytes]]
    ) -> list[NumberedEntry]:
        """See :class:`stores.sequence.Sequencer`: one ``FCALL starling_publish`` (the
        library :data:`FUNCTIONS`, loaded on first use), so numbering and ``XADD`` are one
        atomic step in Redis."""
        if not events:
            await trio.lowlevel.checkpoint()
            return []
        call: list[bytes | str | int] = [
            "FCALL", "starling_publish", 3, stream, self._offsets_key, self._generation_key,
            "" if self._max_length is None else self._max_length, new_generation(),
        ]  # fmt: skip
        for channel, data in events:
            call += [channel, data]
        (reply,) = await self._backend.resp.execute([call])
        if isinstance(reply, RespError) and "Function not found" in str(reply):
            load = ("FUNCTION", "LOAD", "REPLACE", FUNCTIONS)
            loaded, reply = await self._backend.resp.execute([load, call])
            check(loaded)
        values = check(reply)
        generation = self._generation = _text(values[0])
        numbered = []
        epochs: dict[str, str] = {}
        for (channel, _), entry, offset in zip(events, values[1::2], values[2::2], strict=True):
            epoch = epochs.get(channel) or epochs.setdefault(
                channel, channel_epoch(generation, channel)
            )
            numbered.append(NumberedEntry(_text(entry), int(offset), epoch))
        return numbered

    async def refresh(self) -> str:
        """See :class:`stores.sequence.Sequencer`. Also loads (replaces) the Function library
        :data:`FUNCTIONS`, so producers outside Starling may ``FCALL starling_publish`` as
        soon as a process has started."""
        replies = await self._backend.resp.execute(
            [
                ("FUNCTION", "LOAD", "REPLACE", FUNCTIONS),
                ("MULTI",),
                ("SET", self._generation_key, new_generation(), "NX"),
                ("GET", self._generation_key),
                ("EXEC",),
            ]
        )
        check(replies[0])
        self._generation = _text(check(replies[-1])[1])
        return self._generation

    def epoch(self, channel: str) -> str:
        """See :class:`stores.sequence.Sequencer`."""
        if self._generation is None:
            raise RuntimeError("no generation read yet: await refresh() first")
        return channel_epoch(self._generation, channel)
