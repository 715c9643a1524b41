"""In-process adapters of the cache, stream and pub/sub ports (the embedded default).

Everything lives in this process and runs on the trio loop, without threads.
The semantics follow Redis, so that the contract suite passes on both:

- :class:`MemoryCache`: expiry is checked on read and enforced on write (a
  heap of deadlines), measured on ``trio.current_time()``, so tests can drive
  it with the autojump clock; keys and bytes are bounded, the least recently
  used key going first.
- :class:`MemoryStream`: ids ``"<ms>-<seq>"`` from the wall clock that never go
  backwards; consumer groups with per-consumer pending entries, delivery counts
  and idle times (idle measured on ``trio.current_time()``); ``read_group``
  waits for an append on a :class:`trio.Event`, never by polling; optional
  approximate trimming like ``XADD MAXLEN ~``.
- :class:`MemoryPubSub`: each subscription has a bounded buffer that drops its
  oldest message when full (see :class:`Subscription`).
"""

from __future__ import annotations

import bisect
import heapq
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

import trio

from stores.errors import QueryError
from stores.pubsub import Message
from stores.sequence import NumberedEntry, channel_epoch, new_generation
from stores.stream import StreamEntry, check_count

DEFAULT_MAX_KEYS = 65_536
DEFAULT_MAX_BYTES = 256 << 20
DEFAULT_SUBSCRIPTION_BUFFER = 1024

StreamKey = tuple[int, int]
"""A parsed entry id: (milliseconds, sequence)."""

_ID_PATTERN = re.compile(r"(\d+)(?:-(\d+))?", re.ASCII)


class MemoryCache:
    """A bounded in-process cache whose keys expire on time, like Redis's.

    Expiry is checked on every read (an expired key is never returned) and
    enforced on every write: a heap of deadlines drops the keys whose time
    passed, so a key written once with a TTL and never read again (a feed
    snapshot, a lease, a claim) does not hold memory past its deadline. Times
    are ``trio.current_time()`` (the autojump clock drives it in tests).

    Args:
        max_keys: most keys held; storing one more evicts the least recently
            used key.
        max_bytes: most bytes of keys and values held (what ``len`` of each
            counts, not Python's overhead); storing past it evicts the least
            recently used keys, like Redis's ``maxmemory`` with ``allkeys-lru``.
            A value larger than this on its own is not stored.

    Raises:
        ValueError: ``max_keys`` or ``max_bytes`` < 1.
    """

    def __init__(
        self, *, max_keys: int = DEFAULT_MAX_KEYS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_keys < 1 or max_bytes < 1:
            raise ValueError(f"max_keys and max_bytes must be >= 1, got {max_keys}, {max_bytes}")
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._bytes = 0
        # key -> (value, deadline on trio.current_time() in seconds, or None)
        self._items: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        # (deadline, key) of every write with a TTL; an entry whose key was
        # rewritten or deleted since is stale and skipped when it comes up.
        self._deadlines: list[tuple[float, str]] = []

    @property
    def size(self) -> tuple[int, int]:
        """``(keys, bytes)`` held now, expired keys not yet dropped included."""
        return len(self._items), self._bytes

    def _lookup(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        value, deadline = item
        if deadline is not None and trio.current_time() >= deadline:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return value

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(key) + len(item[0])

    def _store(self, key: str, value: bytes, deadline: float | None) -> None:
        """Write one key, then drop what expired and what is over the bounds."""
        self._drop(key)
        size = len(key) + len(value)
        if size > self._max_bytes:
            return
        self._items[key] = (value, deadline)
        self._bytes += size
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, key))
        self._expire(trio.current_time())
        while len(self._items) > self._max_keys or self._bytes > self._max_bytes:
            oldest, (evicted, _) = self._items.popitem(last=False)
            self._bytes -= len(oldest) + len(evicted)

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, key = heapq.heappop(deadlines)
            item = self._items.get(key)
            if item is not None and item[1] == deadline:
                self._drop(key)
        # Rewrites leave stale entries behind: rebuild when they outnumber the keys.
        if len(deadlines) > 2 * len(self._items) + 1024:
            self._deadlines = [
                (deadline, key)
                for key, (_, deadline) in self._items.items()
                if deadline is not None
            ]
            heapq.heapify(self._deadlines)

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        await trio.lowlevel.checkpoint()
        return self._lookup(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return the values under ``keys``, in order, ``None`` for each miss."""
        await trio.lowlevel.checkpoint()
        return [self._lookup(key) for key in keys]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``.

        Args:
            key: the key.
            value: the value.
            ttl: time to live in seconds (``None``: no expiry). Must be > 0.

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        await trio.lowlevel.checkpoint()
        self._store(key, value, None if ttl is None else trio.current_time() + ttl)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed (an expired key did not)."""
        await trio.lowlevel.checkpoint()
        existed = self._lookup(key) is not None
        self._drop(key)
        return existed

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool:
        """Store ``value`` under ``key`` unless a live value is there; whether it stored it.

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        if ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        await trio.lowlevel.checkpoint()
        if self._lookup(key) is not None:
            return False
        self._store(key, value, trio.current_time() + ttl)
        return True


def parse_stream_id(entry_id: str) -> StreamKey:
    """Parse ``"<ms>-<seq>"`` (or ``"<ms>"``, meaning sequence 0).

    Raises:
        QueryError: not a stream id (Redis answers the same way).
    """
    match = _ID_PATTERN.fullmatch(entry_id)
    if match is None:
        raise QueryError(f"Invalid stream ID {entry_id!r}")
    return int(match[1]), int(match[2] or 0)


def _format_stream_id(key: StreamKey) -> str:
    return f"{key[0]}-{key[1]}"


@dataclass(slots=True)
class _Pending:
    """A delivered, unacknowledged entry (one row of a group's pending entries list)."""

    consumer: str
    delivered_at: float  # trio.current_time() of the last delivery, seconds
    deliveries: int


@dataclass(slots=True)
class _Group:
    last_delivered: StreamKey = (0, 0)
    # Keyed by entry id. Entries join in increasing id order (new deliveries only)
    # and reclaims update them in place, so iteration order is id order.
    pending: dict[StreamKey, _Pending] = field(default_factory=dict)


class _Log:
    """One stream: its entries in id order, its groups, and a wake-up for readers."""

    def __init__(self) -> None:
        self.keys: list[StreamKey] = []
        self.fields: dict[StreamKey, Mapping[str, str]] = {}
        self.groups: dict[str, _Group] = {}
        self.last: StreamKey = (0, 0)
        self.appended = trio.Event()

    def next_key(self) -> StreamKey:
        """A fresh id from the wall clock, greater than every id so far."""
        now_ms = int(time.time() * 1000)
        if now_ms > self.last[0]:
            return now_ms, 0
        return self.last[0], self.last[1] + 1

    def trim(self, max_length: int) -> None:
        """Drop the oldest entries once the log is a tenth (at least one) over ``max_length``.

        Trimming in batches keeps appends amortized O(1), like ``MAXLEN ~``.
        """
        if len(self.keys) <= max_length + max(1, max_length // 10):
            return
        excess = len(self.keys) - max_length
        for key in self.keys[:excess]:
            del self.fields[key]
        del self.keys[:excess]


class MemoryStream:
    """In-process streams with consumer groups (Redis Streams semantics).

    Args:
        max_length: approximate cap on the entries kept per stream (``None``:
            unbounded). A stream keeps at least ``max_length`` entries and at most
            a tenth more, like ``XADD MAXLEN ~``. Pending entries whose entry was
            trimmed are dropped when :meth:`reclaim` meets them, as in Redis 7.

    Raises:
        ValueError: ``max_length`` < 1.
    """

    def __init__(self, *, max_length: int | None = None) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self._max_length = max_length
        self._logs: dict[str, _Log] = {}

    def _group(self, stream: str, group: str) -> tuple[_Log, _Group]:
        log = self._logs.get(stream)
        state = None if log is None else log.groups.get(group)
        if log is None or state is None:
            raise QueryError(f"NOGROUP No such key {stream!r} or consumer group {group!r}")
        return log, state

    def partitions(self, stream: str) -> tuple[str, ...]:
        """``(stream,)``: an in-process stream is not split."""
        return (stream,)

    async def append(self, stream: str, fields: Mapping[str, str]) -> str:
        """Append an entry and return its id.

        Raises:
            ValueError: ``fields`` is empty.
        """
        if not fields:
            raise ValueError("a stream entry needs at least one field")
        await trio.lowlevel.checkpoint()
        return self.append_now(stream, [fields])[0]

    async def append_many(self, stream: str, entries: Sequence[Mapping[str, str]]) -> list[str]:
        """Append entries in order; return their ids.

        Raises:
            ValueError: an entry is empty.
        """
        if any(not fields for fields in entries):
            raise ValueError("a stream entry needs at least one field")
        await trio.lowlevel.checkpoint()
        return self.append_now(stream, entries)

    def append_now(self, stream: str, entries: Sequence[Mapping[str, str]]) -> list[str]:
        """Append entries in order, synchronously (no checkpoint); return their ids.

        What :meth:`append_many` does after its checkpoint; the in-process
        sequencer uses it to number and append in one step.
        """
        if not entries:
            return []
        log = self._logs.setdefault(stream, _Log())
        ids = []
        for fields in entries:
            key = log.next_key()
            log.keys.append(key)
            log.fields[key] = MappingProxyType(dict(fields))
            log.last = key
            ids.append(_format_stream_id(key))
        if self._max_length is not None:
            log.trim(self._max_length)
        log.appended.set()
        log.appended = trio.Event()
        return ids

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create consumer group ``group`` at the start of ``stream`` if missing
        (creating the stream too)."""
        await trio.lowlevel.checkpoint()
        self._logs.setdefault(stream, _Log()).groups.setdefault(group, _Group())

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
        await trio.lowlevel.checkpoint()
        log, state = self._group(stream, group)
        with trio.move_on_after(max(block, 0.0)):
            while not (entries := self._deliver(log, state, consumer, count)):
                await log.appended.wait()
            return entries
        return []

    @staticmethod
    def _deliver(log: _Log, state: _Group, consumer: str, count: int) -> list[StreamEntry]:
        """Hand the next ``count`` new entries to ``consumer`` (synchronous: all or nothing)."""
        start = bisect.bisect_right(log.keys, state.last_delivered)
        keys = log.keys[start : start + count]
        now = trio.current_time()
        for key in keys:
            state.pending[key] = _Pending(consumer, now, 1)
        if keys:
            state.last_delivered = keys[-1]
        return [StreamEntry(_format_stream_id(key), log.fields[key]) for key in keys]

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; return how many were pending (0 for a missing group).

        Raises:
            stores.errors.QueryError: an id is malformed.
        """
        keys = [parse_stream_id(entry_id) for entry_id in ids]
        await trio.lowlevel.checkpoint()
        log = self._logs.get(stream)
        state = None if log is None else log.groups.get(group)
        if state is None:
            return 0
        return sum(state.pending.pop(key, None) is not None for key in keys)

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

        Each returned entry has its delivery count incremented and its idle
        time reset. Pending entries whose entry was trimmed away are
        dropped from the group.

        Raises:
            ValueError: ``count`` < 1.
            stores.errors.QueryError: the group does not exist.
        """
        check_count(count)
        await trio.lowlevel.checkpoint()
        log, state = self._group(stream, group)
        now = trio.current_time()
        claimed: list[StreamEntry] = []
        trimmed: list[StreamKey] = []
        for key, pending in state.pending.items():
            if len(claimed) == count:
                break
            if now - pending.delivered_at < min_idle:
                continue
            fields = log.fields.get(key)
            if fields is None:
                trimmed.append(key)
                continue
            pending.consumer, pending.delivered_at = consumer, now
            pending.deliveries += 1
            claimed.append(StreamEntry(_format_stream_id(key), fields, pending.deliveries))
        for key in trimmed:
            del state.pending[key]
        return claimed

    async def pending(self, stream: str, group: str) -> int:
        """Number of delivered but unacknowledged entries in ``group``.

        Raises:
            stores.errors.QueryError: the group does not exist.
        """
        await trio.lowlevel.checkpoint()
        return len(self._group(stream, group)[1].pending)

    async def length(self, stream: str) -> int:
        """Number of entries in ``stream`` (0 when it does not exist)."""
        await trio.lowlevel.checkpoint()
        log = self._logs.get(stream)
        return 0 if log is None else len(log.keys)


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    """A snapshot of one subscription's buffer.

    Attributes:
        buffered: messages received and not yet read.
        dropped: oldest messages discarded because the buffer was full.
    """

    buffered: int
    dropped: int


class Subscription:
    """The receiving side of one subscription: an async iterator of messages.

    Messages wait in a bounded trio memory channel. When it is full,
    :meth:`deliver` drops the *oldest* buffered message to make room and counts
    the drop: pub/sub is fire-and-forget, so a slow reader loses old messages
    rather than slowing the publisher (the stream is the durable path).
    Iteration ends once the subscription is closed and the buffer drained, or
    raises the error it was closed with.

    Args:
        buffer_size: messages held for the reader, >= 1.

    Raises:
        ValueError: ``buffer_size`` < 1.
    """

    def __init__(self, buffer_size: int = DEFAULT_SUBSCRIPTION_BUFFER) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self._send, self._receive = trio.open_memory_channel[Message](buffer_size)
        self._dropped = 0
        self._closed = False
        self._error: BaseException | None = None

    def deliver(self, message: Message) -> None:
        """Buffer ``message``, dropping the oldest one if full; ignored once closed.

        Must be called from the trio thread (``trio.from_thread.run_sync`` elsewhere).
        """
        if self._closed:
            return
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            # Full, so no reader is waiting: make room at the old end.
            self._receive.receive_nowait()
            self._dropped += 1
            self._send.send_nowait(message)

    def close(self, error: BaseException | None = None) -> None:
        """End the subscription: the reader drains the buffer, then stops or gets ``error``."""
        if not self._closed:
            self._closed = True
            self._error = error
            self._send.close()

    def statistics(self) -> SubscriptionStatistics:
        """Return how many messages are buffered and how many were dropped."""
        buffered = self._receive.statistics().current_buffer_used
        return SubscriptionStatistics(buffered=buffered, dropped=self._dropped)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None


class MemoryPubSub:
    """In-process publish/subscribe.

    Args:
        buffer_size: messages buffered per subscription before the oldest is dropped.

    Raises:
        ValueError: ``buffer_size`` < 1.
    """

    def __init__(self, *, buffer_size: int = DEFAULT_SUBSCRIPTION_BUFFER) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self._buffer_size = buffer_size
        self._subscriptions: dict[str, set[Subscription]] = {}

    async def publish(self, topic: str, data: bytes) -> int:
        """Send ``data`` to the current subscribers of ``topic``; return how many got it."""
        await trio.lowlevel.checkpoint()
        subscriptions = self._subscriptions.get(topic, set())
        for subscription in subscriptions:
            subscription.deliver(Message(topic, data))
        return len(subscriptions)

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[Subscription]:
        """Subscribe to ``topics`` for the life of the context.

        The subscription is active on entry. Duplicate topics count once.

        Yields:
            A :class:`Subscription` whose iteration ends when the context exits.

        Raises:
            ValueError: no topics.
        """
        if not topics:
            raise ValueError("subscribe needs at least one topic")
        await trio.lowlevel.checkpoint()
        subscription = Subscription(self._buffer_size)
        unique = set(topics)
        for topic in unique:
            self._subscriptions.setdefault(topic, set()).add(subscription)
        try:
            yield subscription
        finally:
            for topic in unique:
                subscribers = self._subscriptions[topic]
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[topic]
            subscription.close()


class MemorySequencer:
    """Per-channel offsets in this process (one generation per process life).

    Args:
        stream: the in-process stream :meth:`append_numbered` appends to.
    """

    def __init__(self, stream: MemoryStream | None = None) -> None:
        self._offsets: dict[str, int] = {}
        self._generation = new_generation()
        self._stream = stream

    async def next_offsets(self, channels: Sequence[str]) -> list[tuple[int, str]]:
        """See :class:`stores.sequence.Sequencer`."""
        await trio.lowlevel.checkpoint()
        result = []
        for channel in channels:
            offset = self._offsets.get(channel, 0) + 1
            self._offsets[channel] = offset
            result.append((offset, self.epoch(channel)))
        return result

    async def append_numbered(
        self, stream: str, events: Sequence[tuple[str, bytes]]
    ) -> list[NumberedEntry]:
        """See :class:`stores.sequence.Sequencer`: numbering and appending with no
        checkpoint between them."""
        if self._stream is None:
            raise RuntimeError("this sequencer was built without a stream")
        await trio.lowlevel.checkpoint()
        numbered = []
        entries = []
        for channel, data in events:
            offset = self._offsets.get(channel, 0) + 1
            self._offsets[channel] = offset
            numbered.append((channel, offset))
            entries.append(
                {
                    "channel": channel,
                    "data": data.decode(),
                    "offset": str(offset),
                    "gen": self._generation,
                }
            )
        ids = self._stream.append_now(stream, entries)
        return [
            NumberedEntry(entry, offset, self.epoch(channel))
            for entry, (channel, offset) in zip(ids, numbered, strict=True)
        ]

    async def refresh(self) -> str:
        """See :class:`stores.sequence.Sequencer`."""
        await trio.lowlevel.checkpoint()
        return self._generation

    def epoch(self, channel: str) -> str:
        """See :class:`stores.sequence.Sequencer`."""
        return channel_epoch(self._generation, channel)
