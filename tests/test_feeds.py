"""Ranked feeds end to end: social writes → events → story index and builders → feed.get.

Each test runs the real social subtree and the real feeds subtree over a
small hand-made world, on the embedded pair (Ladybug graph, in-process cache)
and on the served pair (the Neo4j test server, a real redis-server). The
expected feed is written out from the world's definition below, never
computed by the code under test.

The world (ids prefixed per test)::

    reader follows a1 a2 a3 a4 f1 f2 f3 and the topic "ml"; mutes a4; read p2
    a1: p1 p2 p3 p4          a2: p5 p6 (deleted) p7, in publication "pubx"
    a3: p8 p9                a4: p10 p11 (muted)     reader: p12 (own)
    s1 (not followed): p13 tagged ml, p14 recommended by f1 and f2, p15
    after the feeds start: s1 publishes p16 tagged ml; f3 recommends p15
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.feeds import (
    FeedCounters,
    Feeds,
    FeedSettings,
    GraphContextSource,
    LinearScorer,
    PipelineParams,
    feeds_subtree,
)
from actors.social import (
    Block,
    DeletePost,
    Follow,
    MarkRead,
    Mute,
    PostDraft,
    Publish,
    ReaderPool,
    Recommend,
    Unblock,
    Unfollow,
)
from protocols.jsonrpc import Dispatcher
from protocols.methods import CallContext, Services, build_dispatcher
from protocols.methods.feeds import feed_cursor
from stores.backends import open_key_value
from stores.cache import Cache
from tests.social_world import Expected, Social, World, running_social

OFF = PipelineParams(trending_count=0, diversity_max=10, diversity_window=10)
"""No trending, no diversification: the feed is exactly the eligible stories."""


@dataclass
class FeedWorld:
    """The running world: social + feeds, the dispatcher, the ids."""

    social: Social
    feeds: Feeds
    rpc: Dispatcher[Any]
    world: World
    posts: dict[str, str]

    def id(self, name: str) -> str:
        return self.world.id(name)

    def post(self, name: str) -> str:
        return self.posts[name]

    @property
    def counters(self) -> FeedCounters:
        return self.feeds.counters

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """The decoded reply to one JSON-RPC request."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply = await self.rpc.handle(json.dumps(body).encode(), CallContext("127.0.0.1"))
        assert reply is not None
        decoded: dict[str, Any] = json.loads(reply)
        return decoded

    async def feed(self, **params: Any) -> dict[str, Any]:
        """``feed.get`` for the reader (or ``user=``) that must succeed."""
        params.setdefault("user", self.id("reader"))
        reply = await self.call("feed.get", **params)
        assert "result" in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    async def settle(self) -> None:
        """Let the events of the last write reach the story index and the builders."""
        await trio.testing.wait_all_tasks_blocked()


@pytest.fixture(
    params=[
        "ladybug+memory",
        pytest.param("neo4j+redis", marks=[pytest.mark.neo4j, pytest.mark.redis]),
    ]
)
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[World, str]:
    """The graph world and the cache URL under test."""
    prefix = uuid.uuid4().hex[:8]
    if request.param == "ladybug+memory":
        return World("ladybug", str(tmp_path / "graph"), prefix, [], Expected()), "memory://"
    neo4j: str = request.getfixturevalue("neo4j_url")
    redis: str = request.getfixturevalue("redis_url")
    return World("neo4j", neo4j, prefix, [], Expected()), redis


async def build_world(social: Social, world: World) -> dict[str, str]:
    """Write the world of the module docstring (before the feeds start); return post ids."""
    store, i = social.store, world.id
    users = ["reader", "a1", "a2", "a3", "a4", "f1", "f2", "f3", "s1"]
    await store.import_nodes("User", [i(u) for u in users])
    await store.import_nodes("Topic", [i("ml")])
    for followee in ["a1", "a2", "a3", "a4", "f1", "f2", "f3"]:
        await social.call(Follow(i("reader"), i(followee)))
    await store.import_relationships("FOLLOWS_TOPIC", [(i("reader"), i("ml"))])
    posts: dict[str, str] = {}
    plan = {
        "a1": ["p1", "p2", "p3", "p4"],
        "a2": ["p5", "p6", "p7"],
        "a3": ["p8", "p9"],
        "a4": ["p10", "p11"],
        "reader": ["p12"],
        "s1": ["p13", "p14", "p15"],
    }
    for author, names in plan.items():
        for name in names:
            draft = PostDraft(
                title=f"{name} by {author}",
                id=i(name),
                url=f"https://example.com/{i(name)}",
                tags=(i("ml"),) if name == "p13" else ("other",),
                publication=i("pubx") if author == "a2" else None,
                reading_time=4.0,
            )
            social.clock.now += 60
            posts[name] = (await social.call(Publish(i(author), draft))).post
    await social.call(Recommend(i("f1"), posts["p14"]))
    await social.call(Recommend(i("f2"), posts["p14"]))
    await social.call(MarkRead(i("reader"), posts["p2"]))
    await social.call(DeletePost(posts["p6"]))
    await social.call(Mute(i("reader"), i("a4")))
    social.received()
    return posts


@asynccontextmanager
async def running_world(
    world: World, cache_url: str, params: PipelineParams = OFF, **settings: Any
) -> AsyncIterator[FeedWorld]:
    """The world on its backends with social and feeds running (plus the after-start writes)."""
    store = await world.open()
    key_value = open_key_value(cache_url)
    try:
        async with running_social(store) as social:
            posts = await build_world(social, world)
            pool = ReaderPool([reader.ref for reader in social.readers])
            cache: Cache = key_value.cache
            feeds_supervisor, feeds = feeds_subtree(
                store=store,
                bus=social.bus,
                context=GraphContextSource(pool),
                cache=cache,
                settings=FeedSettings(params=params, **settings),
                scorer=LinearScorer.from_file(),
                clock=lambda: float(social.clock.now),
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(feeds_supervisor.run)
                services = Services(
                    tree=feeds_supervisor.statistics, social=social.handle, feeds=feeds
                )
                running = FeedWorld(social, feeds, build_dispatcher(services), world, posts)
                i = world.id
                draft = PostDraft(title="p16", id=i("p16"), tags=(i("ml"),))
                social.clock.now += 60
                posts["p16"] = (await social.call(Publish(i("s1"), draft))).post
                await social.call(Recommend(i("f3"), posts["p15"]))
                await running.settle()
                try:
                    yield running
                finally:
                    feeds_supervisor.request_stop()
    finally:
        await key_value.aclose()
        await store.aclose()


ELIGIBLE = ["p1", "p3", "p4", "p5", "p7", "p8", "p9", "p13", "p14", "p15", "p16"]


def posts_of(result: dict[str, Any]) -> list[str]:
    return [item["post"] for item in result["items"]]


async def test_the_feed_is_exactly_the_eligible_stories_with_their_reasons(
    backends: tuple[World, str],
) -> None:
    """Every provider's stories appear once, the filtered ones never, each with its reasons."""
    async with running_world(*backends) as w:
        result = await w.feed(limit=100)
        names = {w.post(name): name for name in w.posts}
        got = [names[post] for post in posts_of(result)]
        assert sorted(got) == sorted(ELIGIBLE)
        reasons = {names[item["post"]]: item["reasons"] for item in result["items"]}
        assert reasons["p1"] == ["followed author"]
        assert reasons["p5"] == ["followed author"]
        assert reasons["p14"] == ["2 friends recommended"]
        assert reasons["p15"] == ["1 friend recommended"]
        assert reasons["p13"] == [f"topic: {w.id('ml')}"]
        assert reasons["p16"] == [f"topic: {w.id('ml')}"]
        scores = [item["score"] for item in result["items"]]
        assert scores == sorted(scores, reverse=True)
        assert result["candidates"] >= len(ELIGIBLE)
        assert result["cached"] is False
        assert result["next_cursor"] is None
        assert result["built_ms"] > 0


async def test_diversification_holds_on_the_served_feed(backends: tuple[World, str]) -> None:
    """With the default rule no author shows more than twice in any ten consecutive stories."""
    async with running_world(*backends, params=PipelineParams(trending_count=0)) as w:
        result = await w.feed(limit=100)
        by_post = {w.post(n): n for n in w.posts}
        owner = {
            **dict.fromkeys(["p1", "p2", "p3", "p4"], "a1"),
            **dict.fromkeys(["p5", "p6", "p7"], "a2"),
            **dict.fromkeys(["p8", "p9"], "a3"),
            **dict.fromkeys(["p13", "p14", "p15", "p16"], "s1"),
        }
        authors = [owner[by_post[post]] for post in posts_of(result)]
        for start in range(len(authors)):
            window = Counter(authors[start : start + 10])
            assert max(window.values()) <= 2, authors
        assert set(posts_of(result)) <= {w.post(name) for name in ELIGIBLE}


async def test_unfollow_is_validated_away_without_a_rebuild(backends: tuple[World, str]) -> None:
    """After an unfollow the author's stories are gone from the next read of the same snapshot."""
    async with running_world(*backends) as w:
        first = await w.feed(limit=100)
        assert w.counters.builds == 1
        await w.social.call(Unfollow(w.id("reader"), w.id("a1")))
        await w.settle()
        second = await w.feed(limit=100)
        assert second["snapshot"] == first["snapshot"]
        assert second["cached"] is True
        assert w.counters.builds == 1
        a1 = {w.post(name) for name in ["p1", "p3", "p4"]}
        assert a1 <= set(posts_of(first))
        assert not a1 & set(posts_of(second))
        assert set(posts_of(second)) == set(posts_of(first)) - a1


async def test_a_read_and_a_deletion_are_validated_away(backends: tuple[World, str]) -> None:
    """A story read or deleted after the ranking disappears from the next page without a rebuild."""
    async with running_world(*backends) as w:
        first = await w.feed(limit=100)
        await w.social.call(MarkRead(w.id("reader"), w.post("p8")))
        await w.social.call(DeletePost(w.post("p9")))
        await w.settle()
        second = await w.feed(limit=100)
        assert w.counters.builds == 1
        assert set(posts_of(second)) == set(posts_of(first)) - {w.post("p8"), w.post("p9")}


async def test_a_block_hides_each_users_stories_from_the_other(
    backends: tuple[World, str],
) -> None:
    """Blocking a followed author, and being blocked by another, drop both authors' stories
    from the next read of the same snapshot, and a fresh ranking leaves them out too."""
    async with running_world(*backends, min_fresh=0) as w:  # 5 of 11 stay: no re-rank
        first = await w.feed(limit=100)
        await w.social.call(Block(w.id("reader"), w.id("a3")))
        await w.social.call(Block(w.id("s1"), w.id("reader")))
        await w.settle()
        second = await w.feed(limit=100)
        assert second["snapshot"] == first["snapshot"]
        assert w.counters.builds == 1
        hidden = {w.post(name) for name in ["p8", "p9", "p13", "p14", "p15", "p16"]}
        assert hidden <= set(posts_of(first))
        assert set(posts_of(second)) == set(posts_of(first)) - hidden

        await w.call("feed.invalidate", user=w.id("reader"))
        rebuilt = await w.feed(limit=100)
        assert w.counters.builds == 2
        assert set(posts_of(rebuilt)) == set(posts_of(second))


async def test_unblock_ranks_the_feed_afresh_without_the_removed_follow(
    backends: tuple[World, str],
) -> None:
    """After an unblock the next read ranks again: the unblocking author's stories that reach
    the reader without a follow return, the formerly followed author's do not."""
    async with running_world(*backends) as w:
        await w.social.call(Block(w.id("reader"), w.id("a3")))
        await w.social.call(Block(w.id("s1"), w.id("reader")))
        await w.settle()
        blocked = await w.feed(limit=100)
        await w.social.call(Unblock(w.id("reader"), w.id("a3")))
        await w.social.call(Unblock(w.id("s1"), w.id("reader")))
        await w.settle()
        unblocked = await w.feed(limit=100)
        assert unblocked["snapshot"] != blocked["snapshot"]
        assert unblocked["cached"] is False
        returned = {w.post(name) for name in ["p13", "p14", "p15", "p16"]}
        assert set(posts_of(unblocked)) == set(posts_of(blocked)) | returned
        assert not {w.post("p8"), w.post("p9")} & set(posts_of(unblocked))


async def test_twenty_concurrent_reads_share_one_build(backends: tuple[World, str]) -> None:
    """Single flight: 20 concurrent first pages of one cold feed cause exactly one ranking."""
    async with running_world(*backends) as w:
        results: list[dict[str, Any]] = []

        async def read() -> None:
            results.append(await w.feed(limit=5))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(read)
        assert w.counters.builds == 1
        assert len({result["snapshot"] for result in results}) == 1
        assert len(results) == 20


async def test_pages_from_one_snapshot_cover_the_feed_once(backends: tuple[World, str]) -> None:
    """Cursor pages of 3 concatenate to the full ranking, each story once, then no cursor."""
    async with running_world(*backends) as w:
        full = posts_of(await w.feed(limit=100))
        paged: list[str] = []
        cursor = None
        while True:
            page = await w.feed(limit=3, cursor=cursor)
            paged += posts_of(page)
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == full
        assert w.counters.builds == 1


async def test_new_post_by_a_followed_author_reranks_on_the_next_read(
    backends: tuple[World, str],
) -> None:
    """A post by a followed author marks the feed stale: the next read ranks again and shows it."""
    async with running_world(*backends) as w:
        first = await w.feed(limit=100)
        w.social.clock.now += 60
        draft = PostDraft(title="fresh", id=w.id("p17"))
        post = (await w.social.call(Publish(w.id("a3"), draft))).post
        await w.settle()
        second = await w.feed(limit=100)
        assert second["snapshot"] != first["snapshot"]
        assert second["cached"] is False
        assert post in posts_of(second)
        assert w.counters.builds == 2


async def test_invalidate_and_bad_requests(backends: tuple[World, str]) -> None:
    """feed.invalidate forces a new ranking; bad cursors, unknown users and limits are errors."""
    async with running_world(*backends) as w:
        first = await w.feed(limit=2)
        assert (await w.call("feed.invalidate", user=w.id("reader")))["result"] == {}
        second = await w.feed(limit=2)
        assert second["snapshot"] != first["snapshot"]

        unknown = await w.call("feed.get", user=w.id("nobody"))
        assert unknown["error"]["code"] == -32004
        assert unknown["error"]["data"] == {"kind": "user", "id": w.id("nobody")}
        malformed = await w.call("feed.get", user=w.id("reader"), cursor="not-a-cursor")
        assert malformed["error"]["code"] == -32602
        theirs = await w.call("feed.get", user=w.id("a1"), cursor=first["next_cursor"])
        assert theirs["error"]["code"] == -32602
        for limit in (0, 101, "20"):
            bad = await w.call("feed.get", user=w.id("reader"), limit=limit)
            assert bad["error"]["code"] == -32602
        gone = feed_cursor(w.id("reader"), "0123456789abcdef", 2)
        expired = await w.call("feed.get", user=w.id("reader"), cursor=gone)
        assert expired["error"]["code"] == -32010
        assert expired["error"]["message"] == "snapshot expired"
