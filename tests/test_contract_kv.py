"""The cache, stream and pub/sub contract, run on every backend: in-process and a real Redis.

Timing: the in-process backend measures TTLs, idle times and blocking reads on
trio's clock, so it runs on the autojump clock (the ``clock`` fixture). Redis
measures them on the server's wall clock, so its cases wait for real, briefly
(a few tenths of a second at most). Each Redis test works under its own
uuid-named keys and streams and flushes nothing.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from stores.backends import open_redis
from stores.cache import Cache
from stores.errors import BackendUnavailable, QueryError
from stores.memory import MemoryCache, MemoryPubSub, MemorySequencer, MemoryStream, Subscription
from stores.pubsub import Message, PubSub
from stores.redis import RedisBackend, RedisCache, RedisPubSub, RedisSequencer, RedisStream
from stores.sequence import Sequencer
from stores.stream import Stream

WAIT = 0.2  # seconds a test lets pass for a 0.05–0.1 s TTL, block or idle bound


@dataclass(frozen=True)
class Backend:
    """One backend's adapters, plus factories for the tuned variants."""

    cache: Cache
    stream: Stream
    pubsub: PubSub
    stream_with_max_length: Callable[[int], Stream]
    pubsub_with_buffer: Callable[[int], PubSub]
    sequencer: Sequencer


@pytest.fixture
async def kv(redis_or_none: str | None) -> AsyncIterator[Backend]:
    """The adapters of the backend under test."""
    if redis_or_none is None:
        yield Backend(
            MemoryCache(),
            MemoryStream(),
            MemoryPubSub(),
            lambda max_length: MemoryStream(max_length=max_length),
            lambda buffer_size: MemoryPubSub(buffer_size=buffer_size),
            MemorySequencer(),
        )
        return
    backend = open_redis(redis_or_none, max_connections=4)
    try:
        yield Backend(
            RedisCache(backend),
            RedisStream(backend),
            RedisPubSub(backend),
            lambda max_length: RedisStream(backend, max_length=max_length),
            lambda buffer_size: RedisPubSub(backend, buffer_size=buffer_size),
            RedisSequencer(backend),
        )
    finally:
        await backend.aclose()


@pytest.fixture
def name() -> str:
    """A key, stream or topic name no other test uses."""
    return f"starling-test:{uuid.uuid4().hex}"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.partition("@")[0].split("-")  # "@<partition>" on a Redis Cluster
    return int(ms), int(seq)


# --- cache -------------------------------------------------------------------


async def test_get_returns_what_set_stored(kv: Backend, name: str) -> None:
    """A stored value is read back byte for byte, a later set replaces it, a missing key is None."""
    await kv.cache.set(name, b"\x00first")
    assert await kv.cache.get(name) == b"\x00first"
    await kv.cache.set(name, b"second")
    assert await kv.cache.get(name) == b"second"
    assert await kv.cache.get(name + ":missing") is None


async def test_delete_reports_whether_the_key_existed(kv: Backend, name: str) -> None:
    """Delete removes the key and returns True, and False when there was nothing to remove."""
    await kv.cache.set(name, b"v")
    assert await kv.cache.delete(name) is True
    assert await kv.cache.get(name) is None
    assert await kv.cache.delete(name) is False


async def test_get_many_keeps_order_and_marks_misses(kv: Backend, name: str) -> None:
    """get_many answers in the order asked, with None for each missing key, and [] for no keys."""
    await kv.cache.set(f"{name}:a", b"A")
    await kv.cache.set(f"{name}:c", b"C")
    keys = [f"{name}:c", f"{name}:b", f"{name}:a"]
    assert await kv.cache.get_many(keys) == [b"C", None, b"A"]
    assert await kv.cache.get_many([]) == []


async def test_ttl_expires_the_key(
    kv: Backend, name: str, clock: trio.testing.MockClock | None
) -> None:
    """A key set with a TTL is readable until the TTL passes and gone after; one without stays."""
    await kv.cache.set(f"{name}:short", b"v", ttl=0.05)
    await kv.cache.set(f"{name}:forever", b"v")
    assert await kv.cache.get(f"{name}:short") == b"v"
    await trio.sleep(WAIT)
    assert await kv.cache.get_many([f"{name}:short", f"{name}:forever"]) == [None, b"v"]


async def test_add_stores_only_when_the_key_is_free(
    kv: Backend, name: str, clock: trio.testing.MockClock | None
) -> None:
    """add stores and returns True on a free key, returns False and keeps the value on a held
    one, and may claim the key again once its TTL has passed."""
    assert await kv.cache.add(name, b"first", ttl=0.05) is True
    assert await kv.cache.add(name, b"second", ttl=0.05) is False
    assert await kv.cache.get(name) == b"first"
    await trio.sleep(WAIT)
    assert await kv.cache.add(name, b"third", ttl=10) is True
    assert await kv.cache.get(name) == b"third"
    await kv.cache.set(f"{name}:plain", b"v")
    assert await kv.cache.add(f"{name}:plain", b"w", ttl=10) is False
    with pytest.raises(ValueError, match="ttl"):
        await kv.cache.add(f"{name}:bad", b"v", ttl=0)
    assert await kv.cache.get(f"{name}:bad") is None


@pytest.mark.parametrize("ttl", [0, -1.0])
async def test_non_positive_ttl_is_rejected(kv: Backend, name: str, ttl: float) -> None:
    """A TTL of zero or less raises ValueError and stores nothing."""
    with pytest.raises(ValueError, match="ttl"):
        await kv.cache.set(name, b"v", ttl=ttl)
    assert await kv.cache.get(name) is None


async def test_memory_cache_drops_expired_keys_nobody_reads_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """In-process only: keys written with a TTL and never read again (feed snapshots, leases)
    leave the cache once their time has passed and the next write comes, so memory follows
    what is live, not everything ever written (Redis expires them actively too)."""
    cache = MemoryCache()
    value = b"x" * 1000
    for n in range(1_000):
        await cache.set(f"snapshot:{n}", value, ttl=10)
        await trio.sleep(0.1)  # 100 s of writes at 10 a second: ~100 live at a time
    keys, held = cache.size
    assert 99 <= keys <= 101, keys
    assert held == sum(len(f"snapshot:{n}") + len(value) for n in range(1_000 - keys, 1_000))
    await cache.set("snapshot:0", value, ttl=1)  # rewritten: its old deadline no longer counts
    await trio.sleep(11)  # past every deadline
    await cache.set("last", b"v")
    assert cache.size == (1, len("last") + 1)
    assert await cache.get("snapshot:999") is None


async def test_memory_cache_holds_at_most_max_bytes_evicting_the_least_recently_used() -> None:
    """In-process only: past ``max_bytes`` of keys and values the least recently used keys
    go first; a value larger than the whole bound is not stored; bad bounds raise."""
    cache = MemoryCache(max_bytes=3_000)
    for key in ("a", "b", "c"):
        await cache.set(key, b"v" * 999)  # 1,000 bytes each with the key
    assert await cache.get("a") is not None  # a is now the most recently used
    await cache.set("d", b"v" * 999)
    assert await cache.get_many(["a", "b", "c", "d"]) == [b"v" * 999, None, b"v" * 999, b"v" * 999]
    assert cache.size == (3, 3_000)
    await cache.set("huge", b"v" * 3_000)
    assert await cache.get("huge") is None
    assert cache.size == (3, 3_000)
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryCache(max_bytes=0)


# --- stream ------------------------------------------------------------------


async def test_append_returns_increasing_ids(kv: Backend, name: str) -> None:
    """Appended entries get "<ms>-<seq>" ids from the current time, strictly increasing."""
    ids = [await kv.stream.append(name, {"n": str(n)}) for n in range(20)]
    assert all(re.fullmatch(r"\d+-\d+(@\d+)?", entry_id) for entry_id in ids)  # @: partition
    keys = [_id_key(entry_id) for entry_id in ids]
    assert keys == sorted(set(keys))
    assert abs(keys[0][0] - time.time() * 1000) < 60_000
    assert await kv.stream.length(name) == 20


async def test_length_of_a_missing_stream_is_zero(kv: Backend, name: str) -> None:
    """A stream that was never written has length 0."""
    assert await kv.stream.length(name) == 0


async def test_ensure_group_is_idempotent(kv: Backend, name: str) -> None:
    """ensure_group creates the (empty) stream and group, and a second call changes nothing."""
    await kv.stream.ensure_group(name, "g")
    await kv.stream.append(name, {"n": "0"})
    await kv.stream.ensure_group(name, "g")
    assert await kv.stream.length(name) == 1
    assert await kv.stream.pending(name, "g") == 0
    assert len(await kv.stream.read_group(name, "g", "c", count=10, block=0)) == 1


async def test_read_group_delivers_each_entry_once_per_group(kv: Backend, name: str) -> None:
    """Each group, even one created after the appends, reads every entry once, in order."""
    ids = [await kv.stream.append(name, {"n": str(n), "kind": "post"}) for n in range(3)]
    for group in ("g1", "g2"):
        await kv.stream.ensure_group(name, group)
        entries = await kv.stream.read_group(name, group, "c", count=10, block=0)
        assert [entry.id for entry in entries] == ids
        assert [dict(entry.fields) for entry in entries] == [
            {"n": str(n), "kind": "post"} for n in range(3)
        ]
        assert all(entry.deliveries == 1 for entry in entries)
        assert await kv.stream.read_group(name, group, "c", count=10, block=0) == []


async def test_consumers_of_a_group_split_the_entries(kv: Backend, name: str) -> None:
    """Two consumers of one group get disjoint entries that together are the whole stream."""
    await kv.stream.ensure_group(name, "g")
    ids = [await kv.stream.append(name, {"n": str(n)}) for n in range(4)]
    first = await kv.stream.read_group(name, "g", "c1", count=2, block=0)
    second = await kv.stream.read_group(name, "g", "c2", count=2, block=0)
    assert [entry.id for entry in first + second] == ids


async def test_read_group_times_out_with_nothing(
    kv: Backend, name: str, clock: trio.testing.MockClock | None
) -> None:
    """A blocking read on a stream with nothing new returns [] once ``block`` has passed."""
    await kv.stream.ensure_group(name, "g")
    with trio.fail_after(5):
        start = trio.current_time()
        assert await kv.stream.read_group(name, "g", "c", count=1, block=0.1) == []
    assert trio.current_time() - start >= 0.09


async def test_blocked_read_group_wakes_on_append(
    kv: Backend, name: str, clock: trio.testing.MockClock | None
) -> None:
    """A reader blocked in read_group gets an entry appended while it waits."""
    await kv.stream.ensure_group(name, "g")
    received = []

    async def read() -> None:
        received.extend(await kv.stream.read_group(name, "g", "c", count=10, block=2))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            await kv.stream.append(name, {"n": "late"})
    assert [dict(entry.fields) for entry in received] == [{"n": "late"}]


async def test_ack_reduces_pending(kv: Backend, name: str) -> None:
    """Read entries stay pending until acknowledged; ack counts only those still pending."""
    await kv.stream.ensure_group(name, "g")
    for n in range(3):
        await kv.stream.append(name, {"n": str(n)})
    entries = await kv.stream.read_group(name, "g", "c", count=10, block=0)
    assert await kv.stream.pending(name, "g") == 3
    assert await kv.stream.ack(name, "g", [entries[0].id, entries[1].id]) == 2
    assert await kv.stream.pending(name, "g") == 1
    assert await kv.stream.ack(name, "g", [entries[0].id]) == 0
    assert await kv.stream.ack(name, "g", []) == 0


async def test_reclaim_moves_idle_entries_to_another_consumer(
    kv: Backend, name: str, clock: trio.testing.MockClock | None
) -> None:
    """Entries idle for min_idle move to the claimer, delivered once more, with idle reset."""
    await kv.stream.ensure_group(name, "g")
    for n in range(3):
        await kv.stream.append(name, {"n": str(n)})
    read = await kv.stream.read_group(name, "g", "dead", count=2, block=0)
    assert await kv.stream.reclaim(name, "g", "alive", min_idle=0.1, count=10) == []
    await trio.sleep(WAIT)
    claimed = await kv.stream.reclaim(name, "g", "alive", min_idle=0.1, count=10)
    assert [(entry.id, dict(entry.fields)) for entry in claimed] == [
        (entry.id, dict(entry.fields)) for entry in read
    ]
    assert [entry.deliveries for entry in claimed] == [2, 2]
    assert await kv.stream.reclaim(name, "g", "other", min_idle=0.1, count=10) == []
    assert await kv.stream.pending(name, "g") == 2
    assert await kv.stream.ack(name, "g", [entry.id for entry in claimed]) == 2


async def test_reclaim_takes_at_most_count(
    kv: Backend, name: str, clock: trio.testing.MockClock | None
) -> None:
    """reclaim moves no more than ``count`` entries, oldest first."""
    await kv.stream.ensure_group(name, "g")
    ids = [await kv.stream.append(name, {"n": str(n)}) for n in range(3)]
    await kv.stream.read_group(name, "g", "dead", count=3, block=0)
    await trio.sleep(WAIT)
    claimed = await kv.stream.reclaim(name, "g", "alive", min_idle=0.1, count=2)
    assert [entry.id for entry in claimed] == ids[:2]


async def test_missing_group_raises_query_error(kv: Backend, name: str) -> None:
    """read_group, reclaim and pending on a group that does not exist raise QueryError."""
    await kv.stream.append(name, {"n": "0"})
    for stream in (name, name + ":missing"):
        with pytest.raises(QueryError):
            await kv.stream.read_group(stream, "nope", "c", count=1, block=0)
        with pytest.raises(QueryError):
            await kv.stream.reclaim(stream, "nope", "c", min_idle=0, count=1)
        with pytest.raises(QueryError):
            await kv.stream.pending(stream, "nope")


async def test_max_length_trims_approximately(kv: Backend, name: str) -> None:
    """A stream with a max length keeps at least that many newest entries and drops old ones."""
    stream = kv.stream_with_max_length(10)
    ids = [await stream.append(name, {"n": str(n)}) for n in range(300)]
    assert 10 <= await stream.length(name) < 300
    await stream.ensure_group(name, "g")
    entries = await stream.read_group(name, "g", "c", count=300, block=0)
    assert [entry.id for entry in entries] == ids[-len(entries) :]


async def test_malformed_ids_and_counts_are_rejected(kv: Backend, name: str) -> None:
    """ack with a malformed id raises QueryError; a count below 1 raises ValueError."""
    await kv.stream.ensure_group(name, "g")
    with pytest.raises(QueryError):
        await kv.stream.ack(name, "g", ["not-an-id"])
    with pytest.raises(ValueError, match="count"):
        await kv.stream.read_group(name, "g", "c", count=0, block=0)
    with pytest.raises(ValueError, match="count"):
        await kv.stream.reclaim(name, "g", "c", min_idle=0, count=0)


# --- pub/sub -----------------------------------------------------------------


async def _next(subscription: AsyncIterator[Message]) -> Message:
    with trio.fail_after(5):
        return await anext(subscription)


async def test_publish_reaches_every_subscriber(kv: Backend, name: str) -> None:
    """Every subscriber of a topic receives a message published after it subscribed."""
    async with (
        kv.pubsub.subscribe(name) as first,
        kv.pubsub.subscribe(f"{name}:other", name) as second,
    ):
        assert await kv.pubsub.publish(name, b"hello") == 2
        assert await kv.pubsub.publish(f"{name}:other", b"more") == 1
        assert await _next(first) == Message(name, b"hello")
        assert await _next(second) == Message(name, b"hello")
        assert await _next(second) == Message(f"{name}:other", b"more")


async def test_publish_without_subscribers_reaches_no_one(kv: Backend, name: str) -> None:
    """Publishing to a topic nobody subscribes to returns 0."""
    assert await kv.pubsub.publish(name, b"lost") == 0


async def test_subscription_ends_cleanly(kv: Backend, name: str) -> None:
    """Leaving the context unsubscribes: later publishes reach no one and iteration ends."""
    with trio.fail_after(5):
        async with kv.pubsub.subscribe(name) as subscription:
            assert await kv.pubsub.publish(name, b"one") == 1
            assert await _next(subscription) == Message(name, b"one")
        assert await kv.pubsub.publish(name, b"two") == 0
        assert [message async for message in subscription] == []


async def test_slow_subscriber_loses_the_oldest_messages(
    kv: Backend, name: str, clock: trio.testing.MockClock | None
) -> None:
    """A subscriber whose buffer is full drops the oldest messages and counts them."""
    pubsub = kv.pubsub_with_buffer(2)
    with trio.fail_after(5):
        async with pubsub.subscribe(name) as subscription:
            assert isinstance(subscription, Subscription)
            for n in range(5):
                await pubsub.publish(name, str(n).encode())
            # Redis hands messages over from a worker thread, with no event to wait on.
            while (stats := subscription.statistics()).buffered + stats.dropped < 5:  # noqa: ASYNC110
                await trio.sleep(0.01)
            assert stats.dropped == 3
            assert [(await _next(subscription)).data for _ in range(2)] == [b"3", b"4"]


# --- an unreachable server ---------------------------------------------------


async def test_unreachable_redis_raises_backend_unavailable_quickly() -> None:
    """Every port call on a Redis that refuses connections raises BackendUnavailable, promptly."""
    backend = RedisBackend.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1.0)
    cache, stream, pubsub = RedisCache(backend), RedisStream(backend), RedisPubSub(backend)
    try:
        with trio.fail_after(5):
            with pytest.raises(BackendUnavailable):
                await backend.ping()
            with pytest.raises(BackendUnavailable):
                await cache.get("k")
            with pytest.raises(BackendUnavailable):
                await stream.read_group("s", "g", "c", count=1, block=1)
            with pytest.raises(BackendUnavailable):
                await pubsub.publish("t", b"x")
            with pytest.raises(BackendUnavailable):
                async with pubsub.subscribe("t"):
                    pass
    finally:
        await backend.aclose()


# --- sequencer -----------------------------------------------------------------


async def test_offsets_count_up_per_channel_in_one_epoch(kv: Backend, name: str) -> None:
    """Each channel numbers from 1 in call order, a repeated channel twice, one epoch each."""
    a, b = f"{name}:a", f"{name}:b"
    first = await kv.sequencer.next_offsets([a, b, a])
    assert [offset for offset, _ in first] == [1, 1, 2]
    second = await kv.sequencer.next_offsets([a])
    assert second[0][0] == 3
    epochs = {epoch for _, epoch in first[::2] + second}
    assert len(epochs) == 1
    assert all(len(epoch) == 8 for _, epoch in first)
    assert await kv.sequencer.next_offsets([]) == []


async def test_epoch_is_known_before_the_first_offset(kv: Backend, name: str) -> None:
    """A subscriber to a new channel learns the epoch its first publication will carry."""
    await kv.sequencer.refresh()
    before = kv.sequencer.epoch(f"{name}:new")
    [(offset, epoch)] = await kv.sequencer.next_offsets([f"{name}:new"])
    assert (offset, epoch) == (1, before)
    assert kv.sequencer.epoch(f"{name}:other") != before


@pytest.mark.redis
async def test_lost_offsets_come_back_with_a_new_epoch(redis_url: str, name: str) -> None:
    """When Redis loses the offsets (flushed), the generation goes too: new epochs, from 1."""
    backend = RedisBackend.from_url(redis_url, max_connections=2)
    try:
        keys = {"offsets_key": f"{name}:offsets", "generation_key": f"{name}:generation"}
        a, b = RedisSequencer(backend, **keys), RedisSequencer(backend, **keys)
        assert await a.refresh() == await b.refresh()
        [(_, first)] = await a.next_offsets(["post:1"])
        assert b.epoch("post:1") == first
        await backend.run(lambda client: client.delete(*keys.values()))
        [(offset, second)] = await a.next_offsets(["post:1"])
        assert offset == 1
        assert second != first
        await b.refresh()
        assert b.epoch("post:1") == second
    finally:
        await backend.aclose()


async def test_append_many_keeps_order_and_ids_increase(kv: Backend, name: str) -> None:
    """A batch append stores every entry in order with increasing ids, readable by a group."""
    await kv.stream.ensure_group(name, "g")
    ids = await kv.stream.append_many(name, [{"n": str(i)} for i in range(5)])
    assert ids == sorted(ids, key=_id_key)
    assert len(set(ids)) == 5
    entries = await kv.stream.read_group(name, "g", "c", count=10, block=0)
    assert [entry.fields["n"] for entry in entries] == ["0", "1", "2", "3", "4"]
    assert [entry.id for entry in entries] == ids
    assert await kv.stream.append_many(name, []) == []
    with pytest.raises(ValueError, match="at least one field"):
        await kv.stream.append_many(name, [{"n": "5"}, {}])
