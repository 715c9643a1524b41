"""The presence store contract (:class:`stores.presence.PresenceStore`), on every backend:
in-process and a real Redis.

Timing as in tests/test_contract_kv.py: the in-process store measures expiry on trio's
clock, so it runs on the autojump clock; Redis measures it on the server's clock, so its
cases wait for real, a few tenths of a second. Each test uses its own uuid-named channels
and flushes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from stores.backends import open_redis
from stores.presence import MemoryPresence, PresenceStore
from stores.redis_presence import RedisPresence

TTL = 0.1  # seconds an entry lives in these tests
WAIT = 0.2  # seconds that outlast TTL


@pytest.fixture
async def store(redis_or_none: str | None) -> AsyncIterator[PresenceStore]:
    """The presence store under test."""
    if redis_or_none is None:
        yield MemoryPresence()
        return
    backend = open_redis(redis_or_none, max_connections=4)
    try:
        yield RedisPresence(backend)
    finally:
        await backend.aclose()


@pytest.fixture
def channel() -> str:
    """A channel name no other test uses."""
    return f"post:t{uuid.uuid4().hex}"


async def test_read_gives_each_origins_counts(store: PresenceStore, channel: str) -> None:
    """Two origins' counts are kept apart and read back exactly; a channel with none reads {}."""
    await store.update("a", {channel: {"1": 2, "2": 1}}, ttl=10)
    await store.update("b", {channel: {"1": 1}}, ttl=10)

    (entries, empty) = await store.read([channel, channel + "x"])

    assert entries == {"a": {"1": 2, "2": 1}, "b": {"1": 1}}
    assert empty == {}


async def test_a_zero_count_removes_the_user_and_the_last_one_the_entry(
    store: PresenceStore, channel: str
) -> None:
    """Counts are absolute: 0 removes a user, an origin with no user left is not read."""
    await store.update("a", {channel: {"1": 1, "2": 1}}, ttl=10)
    await store.update("a", {channel: {"1": 0, "2": 3}}, ttl=10)
    assert await store.read([channel]) == [{"a": {"2": 3}}]

    await store.update("a", {channel: {"2": 0}}, ttl=10)

    assert await store.read([channel]) == [{}]


async def test_update_says_where_the_origin_had_no_live_entry(
    store: PresenceStore, channel: str
) -> None:
    """update returns the channels where the writer's entry was missing before the write
    (new, or expired), so a writer can tell its entry was lost."""
    other = channel + "b"
    assert sorted(await store.update("a", {channel: {"1": 1}, other: {"2": 1}}, ttl=TTL)) == [
        channel,
        other,
    ]
    assert await store.update("a", {channel: {"3": 1}}, ttl=TTL) == []

    await trio.sleep(WAIT)

    assert await store.update("a", {channel: {"4": 1}}, ttl=10) == [channel]
    assert await store.read([channel]) == [{"a": {"4": 1}}]


async def test_entries_expire_unless_refreshed(store: PresenceStore, channel: str) -> None:
    """An origin that stops refreshing vanishes after ttl (its users with it), while one that
    refreshes stays; refresh names the channels where there was nothing to refresh."""
    await store.update("alive", {channel: {"1": 1}}, ttl=TTL)
    await store.update("dead", {channel: {"2": 1}}, ttl=TTL)
    for _ in range(8):
        await trio.sleep(TTL / 4)
        assert await store.refresh("alive", [channel, channel + "x"], ttl=TTL) == [channel + "x"]

    assert await store.read([channel]) == [{"alive": {"1": 1}}]
    assert await store.refresh("dead", [channel], ttl=TTL) == [channel]

    await trio.sleep(WAIT)

    assert await store.read([channel]) == [{}]


async def test_remove_drops_an_origins_entries_at_once(store: PresenceStore, channel: str) -> None:
    """remove takes an origin's entries away now, leaving the others'."""
    await store.update("a", {channel: {"1": 1}}, ttl=10)
    await store.update("b", {channel: {"2": 1}}, ttl=10)

    await store.remove("a", [channel])

    assert await store.read([channel]) == [{"b": {"2": 1}}]


async def test_channel_names_never_mix_with_origins(store: PresenceStore, channel: str) -> None:
    """``post:x`` written by origin ``b`` and ``post:x:b`` are two channels (ids may hold
    colons), each with its own entries."""
    await store.update("b", {channel: {"1": 1}}, ttl=10)
    await store.update("a", {f"{channel}:b": {"2": 1}}, ttl=10)

    assert await store.read([channel, f"{channel}:b"]) == [{"b": {"1": 1}}, {"a": {"2": 1}}]


@pytest.mark.parametrize("ttl", [0, -1])
async def test_non_positive_ttl_is_rejected(store: PresenceStore, channel: str, ttl: float) -> None:
    """update and refresh refuse a ttl that is not positive, with ValueError."""
    with pytest.raises(ValueError, match="ttl"):
        await store.update("a", {channel: {"1": 1}}, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.refresh("a", [channel], ttl=ttl)
