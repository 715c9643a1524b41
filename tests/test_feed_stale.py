"""Feed freshness pushes (``feed.stale`` on ``user:<me>``), from the rule to the wire.

Four levels:

- the :class:`FreshnessCoalescer` on plain numbers (no clock, no I/O);
- the :class:`StaleNotifier` on the in-process stores and the autojump clock,
  with a stand-in for the graph's answers (a real graph runs in threads, and
  the autojump clock would jump while it answers): one notice per window,
  the counts and reasons, the claim between two "processes";
- the notifier's graph queries on the real graph (Ladybug, and Neo4j when it runs);
- the whole server on the embedded default with real WebSocket clients.

The two-process case on a real Redis is in ``test_realtime_scaleout.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection, open_websocket_url

from actors.bus import EventBus
from actors.realtime import Publisher
from actors.realtime.freshness import MAX_HELD_ITEMS, FreshnessCoalescer, Notice
from actors.realtime.pipeline import RealtimeSettings
from actors.realtime.stale import (
    PUBLICATION_FOLLOWERS,
    RECOMMENDER_FOLLOWERS,
    TOPIC_FOLLOWERS,
    StaleNotifier,
    claim_key,
)
from actors.realtime.streams import STREAM
from actors.social import GraphReader, ReaderPool
from actors.social.events import Published, Recommended, SocialEvent
from datasets.importers import import_edge_list, read_edge_list
from stores.backends import default_graph_url, open_graph
from stores.memory import MemoryCache, MemorySequencer, MemoryStream
from tests.in_process import serving

WINDOW = 5.0

# --- the coalescer ---------------------------------------------------------------------


def stale(user: str, *items: tuple[str, str]) -> Notice:
    return Notice(user, items)


def test_the_first_trigger_is_told_at_once() -> None:
    """A user told nothing in the last window gets a notice of one post at once."""
    coalescer = FreshnessCoalescer(WINDOW)
    notice = coalescer.note("a", "p1", ["followed_author"], now=100.0)
    assert notice == stale("a", ("p1", "followed_author"))
    assert notice.data() == {"type": "feed.stale", "new": 1, "reasons": ["followed_author"]}
    assert coalescer.next_deadline() is None


def test_triggers_within_the_window_make_one_notice_at_its_end() -> None:
    """Triggers after a notice are held until the window's end and told as one notice
    counting distinct posts, with distinct reasons in the order first seen."""
    coalescer = FreshnessCoalescer(WINDOW)
    assert coalescer.note("a", "p1", ["followed_author"], now=100.0) is not None
    assert coalescer.note("a", "p2", ["followed_topic"], now=101.0) is None
    assert coalescer.note("a", "p3", ["friends_recommended"], now=102.0) is None
    assert coalescer.note("a", "p2", ["followed_author"], now=103.0) is None
    assert coalescer.next_deadline() == 105.0
    assert coalescer.due(104.9) == []
    (notice,) = coalescer.due(105.0)
    assert (notice.user, notice.new) == ("a", 2)
    assert notice.reasons == ("followed_topic", "friends_recommended", "followed_author")
    assert coalescer.next_deadline() is None
    assert coalescer.due(200.0) == []


def test_a_post_the_last_notice_counted_is_not_counted_again_in_its_window() -> None:
    """A second reason for a post just told changes nothing; after the window it is news again."""
    coalescer = FreshnessCoalescer(WINDOW)
    first = coalescer.note("a", "p1", ["followed_author", "followed_topic"], now=0.0)
    assert first is not None
    assert first.data()["reasons"] == ["followed_author", "followed_topic"]
    assert coalescer.note("a", "p1", ["followed_publication"], now=1.0) is None
    assert coalescer.next_deadline() is None
    assert coalescer.note("a", "p1", ["friends_recommended"], now=5.0) is not None


def test_what_is_held_for_one_user_is_bounded_whatever_the_event_rate() -> None:
    """100,000 posts within one window hold at most ``MAX_HELD_ITEMS`` items for the user;
    the notice at the window's end counts those."""
    coalescer = FreshnessCoalescer(WINDOW)
    assert coalescer.note("a", "p0", ["followed_author"], now=0.0) is not None
    for n in range(1, 100_001):
        assert coalescer.note("a", f"p{n}", ["followed_author"], now=1.0) is None
    (notice,) = coalescer.due(WINDOW)
    assert notice.new == MAX_HELD_ITEMS
    assert notice.posts[:2] == ("p1", "p2")


def test_the_window_restarts_at_each_notice() -> None:
    """After a window-end notice the next trigger waits a whole window; after a quiet window
    it is told at once."""
    coalescer = FreshnessCoalescer(WINDOW)
    coalescer.note("a", "p1", ["followed_author"], now=0.0)
    coalescer.note("a", "p2", ["followed_author"], now=1.0)
    assert [n.posts for n in coalescer.due(5.0)] == [("p2",)]
    assert coalescer.note("a", "p3", ["followed_author"], now=6.0) is None
    assert coalescer.next_deadline() == 10.0
    assert [n.posts for n in coalescer.due(10.0)] == [("p3",)]
    assert coalescer.note("a", "p4", ["followed_author"], now=15.0) is not None


def test_users_are_coalesced_apart() -> None:
    """Each user has a window of their own; due notices come earliest first."""
    coalescer = FreshnessCoalescer(WINDOW)
    coalescer.note("a", "p1", ["followed_author"], now=0.0)
    coalescer.note("b", "p1", ["followed_topic"], now=2.0)
    coalescer.note("b", "p2", ["followed_topic"], now=3.0)
    coalescer.note("a", "p2", ["followed_author"], now=4.0)
    assert coalescer.waiting == 2
    assert coalescer.next_deadline() == 5.0
    assert [n.user for n in coalescer.due(7.0)] == ["a", "b"]


def test_a_lost_claim_keeps_only_what_the_winner_did_not_tell() -> None:
    """After a lost claim the winner's posts count as told; the others are held a whole
    window from then, merged with what was held meanwhile."""
    coalescer = FreshnessCoalescer(WINDOW)
    notice = coalescer.note("a", "p1", ["followed_author"], now=0.0)
    assert notice is not None
    coalescer.lost(notice, ["p1"], now=0.1)
    assert coalescer.next_deadline() is None
    assert coalescer.note("a", "p1", ["followed_topic"], now=1.0) is None
    coalescer.note("a", "p2", ["followed_author"], now=1.0)
    coalescer.note("a", "p3", ["followed_topic"], now=2.0)
    (held,) = coalescer.due(5.1)
    coalescer.lost(held, ["p2"], now=5.2)
    coalescer.note("a", "p4", ["friends_recommended"], now=6.0)
    assert coalescer.next_deadline() == 10.2
    (notice,) = coalescer.due(10.2)
    assert notice.posts == ("p3", "p4")
    assert notice.reasons == ("followed_topic", "friends_recommended")


def test_forget_drops_what_is_held() -> None:
    """A user forgotten (disconnected) has nothing due and is told at once next time."""
    coalescer = FreshnessCoalescer(WINDOW)
    coalescer.note("a", "p1", ["followed_author"], now=0.0)
    coalescer.note("a", "p2", ["followed_author"], now=1.0)
    coalescer.forget("a")
    assert coalescer.next_deadline() is None
    assert coalescer.due(10.0) == []
    assert coalescer.note("a", "p3", ["followed_author"], now=2.0) is not None


def test_the_window_must_be_positive() -> None:
    """A window of zero seconds is refused."""
    with pytest.raises(ValueError, match="window"):
        FreshnessCoalescer(0)


# --- the notifier on the in-process stores ---------------------------------------------


@dataclass(eq=False)
class Session:
    """A connected client as the publisher sees it (the notices are read from the stream)."""

    subscriptions: frozenset[str] = frozenset()

    def offer(self, channel: str, offset: int, frame: bytes, /) -> bool:
        return True

    def statistics(self) -> SimpleNamespace:
        return SimpleNamespace(close=None)


@dataclass
class Answers:
    """The graph's answers to the notifier's three queries, restricted to ``$users`` as the
    queries are; every call is recorded."""

    topics: dict[str, list[str]] = field(default_factory=dict)  # tag → its followers
    publications: dict[str, list[str]] = field(default_factory=dict)
    recommenders: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    calls: list[tuple[str, list[str]]] = field(default_factory=list)

    async def read(self, cypher: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        users = list(params["users"])
        if cypher == TOPIC_FOLLOWERS:
            self.calls.append(("topic", users))
            found = [u for tag in params["tags"] for u in self.topics.get(tag, [])]
        elif cypher == PUBLICATION_FOLLOWERS:
            self.calls.append(("publication", users))
            found = self.publications.get(params["publication"], [])
        else:
            assert cypher == RECOMMENDER_FOLLOWERS
            self.calls.append(("recommended", users))
            found = self.recommenders.get((params["recommender"], params["post"]), [])
        return [{"id": user} for user in dict.fromkeys(found) if user in users]


@dataclass
class Process:
    """One process's share: its bus, its hub, its notifier."""

    bus: EventBus[SocialEvent]
    publisher: Publisher
    notifier: StaleNotifier
    cache: MemoryCache
    sessions: dict[str, Session] = field(default_factory=dict)

    def connect(self, user: str) -> None:
        session = self.sessions[user] = Session(frozenset({f"user:{user}"}))
        self.publisher.subscribe(session, f"user:{user}")

    def disconnect(self, user: str) -> None:
        self.publisher.unsubscribe(self.sessions.pop(user), f"user:{user}")


@asynccontextmanager
async def processes(
    count: int, answers: Answers, *, window: float = WINDOW
) -> AsyncIterator[tuple[list[Process], MemoryStream]]:
    """``count`` notifiers sharing one cache and one stream, as processes share a Redis."""
    stream = MemoryStream()
    sequencer = MemorySequencer(stream)
    cache = MemoryCache()
    started = []
    async with trio.open_nursery() as nursery:
        for n in range(count):
            bus: EventBus[SocialEvent] = EventBus()
            publisher = Publisher(lambda channel, offset, data: data)
            notifier = StaleNotifier(
                bus, publisher, sequencer, cache, answers, window=window, origin=f"p{n}"
            )
            await nursery.start(notifier.run)
            started.append(Process(bus, publisher, notifier, cache))
        await stream.ensure_group(STREAM, "test")
        yield started, stream
        nursery.cancel_scope.cancel()


async def appended(stream: MemoryStream) -> list[tuple[str, int, dict[str, Any]]]:
    """The notices appended since the last call: ``(channel, offset, data)``."""
    entries = await stream.read_group(STREAM, "test", "reader", count=1000, block=0)
    return [(e.fields["channel"], int(e.fields["offset"]), json.loads(e.fields["data"]))
            for e in entries]  # fmt: skip


def published(post: str, author: str, followers: Sequence[str], **fields: Any) -> Published:
    fields = {"chunk": 0, "chunks": 1} | fields
    return Published(post, author, 1_700_000_000, tuple(followers), **fields)


def data(new: int, *reasons: str) -> dict[str, Any]:
    return {"type": "feed.stale", "new": new, "reasons": list(reasons)}


async def at(moment: float) -> None:
    """Sleep until ``moment`` on the test's clock, then let every task settle."""
    await trio.sleep_until(moment)
    await trio.testing.wait_all_tasks_blocked()


async def test_one_notice_per_window_with_the_count_and_reasons(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Connected users are told of a post at once, then of everything after it in one notice
    at the window's end (distinct posts, reasons in order); a user who is not connected, or
    left before the window's end, is told nothing; the graph is asked once per post, about
    connected users only."""
    answers = Answers(
        topics={"t1": ["b", "w", "c"]},
        publications={"pub": ["a"]},
        recommenders={("x", "p3"): ["a"], ("y", "p2"): ["a"]},
    )
    async with processes(1, answers) as ([process], stream):
        process.connect("a")
        process.connect("b")
        start = trio.current_time()
        await process.bus.publish(published("p1", "w", ["a", "c"], tags=("t1",)))
        await at(start)
        assert await appended(stream) == [
            ("user:a", 1, data(1, "followed_author")),
            ("user:b", 1, data(1, "followed_topic")),
        ]
        assert answers.calls == [("topic", ["a", "b"])]
        await at(start + 1)
        await process.bus.publish(published("p2", "w2", ["a"], chunks=2, publication="pub"))
        await process.bus.publish(published("p2", "w2", ["b", "c"], chunk=1, chunks=2))
        await at(start + 2)
        await process.bus.publish(Recommended("x", "p3", 1_700_000_001))
        await at(start + 3)
        await process.bus.publish(Recommended("y", "p2", 1_700_000_002))
        await at(start + 4.999)
        assert await appended(stream) == []
        await at(start + 5)
        assert await appended(stream) == [
            ("user:a", 2, data(2, "followed_author", "followed_publication",
                               "friends_recommended")),
            ("user:b", 2, data(1, "followed_author")),
        ]  # fmt: skip
        assert answers.calls[1:] == [
            ("publication", ["a", "b"]),
            ("recommended", ["a", "b"]),
            ("recommended", ["a", "b"]),
        ]
        await at(start + 6)
        await process.bus.publish(published("p4", "w", ["a", "b"]))
        await at(start + 7)
        process.disconnect("b")
        await at(start + 10)
        assert await appended(stream) == [("user:a", 3, data(1, "followed_author"))]
        await at(start + 60)
        assert await appended(stream) == []
        figures = process.notifier.statistics()
        assert (figures.events, figures.sent, figures.coalesced) == (6, 5, 6)
        assert (figures.claims_lost, figures.failed, figures.waiting) == (0, 0, 0)


async def test_a_user_connected_to_two_processes_is_told_once_per_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two processes that both see an event and both hold the user's session send one
    notice between them: the claim's loser drops what the winner told."""
    async with processes(2, Answers()) as (both, stream):
        for process in both:
            process.connect("a")
        start = trio.current_time()
        for process in both:
            await process.bus.publish(published("p1", "w", ["a"]))
        await at(start)
        assert await appended(stream) == [("user:a", 1, data(1, "followed_author"))]
        await at(start + 1)
        for process in both:
            await process.bus.publish(published("p2", "w", ["a"]))
            await process.bus.publish(published("p3", "w", ["a"]))
        await at(start + 5)
        assert await appended(stream) == [("user:a", 2, data(2, "followed_author"))]
        await at(start + 60)
        assert await appended(stream) == []
        figures = [process.notifier.statistics() for process in both]
        assert sum(f.sent for f in figures) == 2
        assert sum(f.claims_lost for f in figures) == 2
        assert sum(f.waiting for f in figures) == 0


async def test_the_claim_lasts_most_of_a_window(autojump_clock: trio.testing.MockClock) -> None:
    """The window claim in the cache names the posts told and lapses within the window."""
    async with processes(1, Answers()) as ([process], _):
        process.connect("a")
        await process.bus.publish(published("p1", "w", ["a"]))
        await trio.testing.wait_all_tasks_blocked()
        assert json.loads(await process.cache.get(claim_key("a")) or b"null") == ["p1"]
        await trio.sleep(0.9 * WINDOW - 0.01)
        assert await process.cache.get(claim_key("a")) is not None
        await trio.sleep(0.02)
        assert await process.cache.get(claim_key("a")) is None


# --- the queries on the real graph -------------------------------------------------------


@pytest.fixture(params=["ladybug", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def graph_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The embedded graph in a fresh directory, or the test session's Neo4j."""
    if request.param == "ladybug":
        return default_graph_url(tmp_path)
    url: str = request.getfixturevalue("neo4j_url")
    return url


async def test_the_audience_queries_on_the_real_graph(graph_url: str) -> None:
    """On the real graph the audience of a post is its connected followers, tag followers and
    publication followers (never its author), and of a recommendation the connected followers
    of the recommender who neither wrote nor read the post."""
    p = f"s{uuid.uuid4().hex[:8]}-"  # a Neo4j server is shared by the session's tests
    a, b, c, d, w, x = (p + name for name in "abcdwx")
    graph = await open_graph(graph_url)
    try:
        await graph.ensure_schema()
        await graph.import_nodes("User", [a, b, c, d, w, x])
        await graph.import_nodes("Post", [p + "post", p + "own"])
        await graph.import_nodes("Topic", [p + "t1", p + "t2"])
        await graph.import_nodes("Publication", [p + "pub"])
        await graph.import_relationships(
            "FOLLOWS_TOPIC", [(a, p + "t1"), (c, p + "t2"), (d, p + "t1"), (w, p + "t1")]
        )
        await graph.import_relationships("FOLLOWS_PUBLICATION", [(b, p + "pub"), (d, p + "pub")])
        await graph.import_relationships("FOLLOWS", [(a, x), (b, x), (c, x), (d, x)])
        await graph.import_relationships("WROTE", [(w, p + "post"), (c, p + "own")])
        await graph.import_relationships("READ", [(b, p + "post")])
        reader = GraphReader("graph_reader-0", graph)
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run)
            publisher = Publisher(lambda channel, offset, data: data)
            for user in (a, b, c, w):  # d is not connected here
                publisher.subscribe(Session(frozenset({f"user:{user}"})), f"user:{user}")
            notifier = StaleNotifier(
                EventBus(), publisher, MemorySequencer(), MemoryCache(), ReaderPool([reader.ref]),
                window=WINDOW,
            )  # fmt: skip
            post = published(
                p + "post", w, [a, d], tags=(p + "t1", p + "t2"), publication=p + "pub"
            )
            assert await notifier.audience(post) == {
                a: ["followed_author", "followed_topic"],
                c: ["followed_topic"],
                b: ["followed_publication"],
            }
            later_chunk = published(p + "post", w, [b], chunk=1, chunks=2, tags=(p + "t1",))
            assert await notifier.audience(later_chunk) == {b: ["followed_author"]}
            for recommended, expected in [(p + "post", {a, c}), (p + "own", {a, b})]:
                event = Recommended(x, recommended, 1_700_000_000)
                audience = await notifier.audience(event)
                assert set(audience) == expected
                assert all(reasons == ["friends_recommended"] for reasons in audience.values())
            nursery.cancel_scope.cancel()
    finally:
        await graph.aclose()


# --- the whole server ----------------------------------------------------------------------


async def rpc(client: httpx.AsyncClient, method: str, **params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply = (await client.post("/rpc", json=body)).json()
    assert "result" in reply, reply
    return reply["result"]


async def ws_call(ws: WebSocketConnection, method: str, **params: Any) -> Any:
    """A request on the WebSocket; its result (no publication may come first)."""
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 7, "method": method,
                                      "params": params}))  # fmt: skip
    reply = json.loads(await ws.get_message())
    assert reply.get("id") == 7, reply
    return reply["result"]


async def next_stale(ws: WebSocketConnection) -> tuple[int, dict[str, Any]]:
    """The next ``feed.stale`` publication's offset and data (other publications skipped)."""
    while True:
        frame = json.loads(await ws.get_message())
        for item in frame if isinstance(frame, list) else [frame]:
            params = item["params"]
            if params["data"].get("type") == "feed.stale":
                return params["offset"], params["data"]


async def test_a_connected_follower_is_told_at_once_then_once_per_window(
    tmp_path: Path,
) -> None:
    """On the embedded default, when an author a user follows publishes three posts in a row,
    the connected user gets one feed.stale at once (new 1) and one at the window's end (new 2),
    and nothing more; a follower who is not connected gets none."""
    window = 2.0
    (tmp_path / "edges.txt").write_text("a b\nc b\n")  # a and c follow b
    graph = await open_graph(default_graph_url(tmp_path))
    try:
        await graph.ensure_schema()
        await import_edge_list(graph, read_edge_list(tmp_path / "edges.txt"))
    finally:
        await graph.aclose()
    settings = RealtimeSettings(feed_stale_window=window)
    with trio.fail_after(30):
        async with (
            serving(tmp_path, realtime=settings) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            ws_url = server.url.replace("http", "ws") + "/ws"
            async with open_websocket_url(f"{ws_url}?token={server.token('a')}") as ws:
                assert (await ws_call(ws, "subscribe", channel="user:a"))["offset"] == 0
                for n in (1, 2, 3):
                    post = {"id": f"s{n}", "title": f"Story {n}"}
                    await rpc(client, "posts.publish", author="b", post=post)
                first = await next_stale(ws)
                told = trio.current_time()
                assert first[1] == {"type": "feed.stale", "new": 1, "reasons": ["followed_author"]}
                second = await next_stale(ws)
                assert trio.current_time() - told > window / 2  # at the window's end
                assert second[1] == {"type": "feed.stale", "new": 2, "reasons": ["followed_author"]}
                assert second[0] > first[0]
                marker = await rpc(
                    client, "realtime.publish", channel="user:a", data={"type": "feed.stale"}
                )
                assert await next_stale(ws) == (marker["offset"], {"type": "feed.stale"})
            async with open_websocket_url(f"{ws_url}?token={server.token('c')}") as ws:
                history = await ws_call(ws, "history", channel="user:c")
                kinds = [pub["data"].get("type") for pub in history["publications"]]
                assert kinds == ["notification"] * 3  # c's channel lived, without feed.stale
