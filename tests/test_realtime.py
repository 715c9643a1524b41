"""The realtime pipeline end to end: stream → nozzle → transformer → publisher → WebSocket.

Two levels, each on the in-process backend and on a real Redis:

- the subtree alone (``realtime_subtree``) with a collecting subscriber, for
  what needs a fault injected or a figure read: a transformer crashing
  mid-stream loses nothing, a poison entry is acknowledged and counted. The
  in-process backend runs on the autojump clock (reclaim after "30 s" takes
  no time); Redis runs in real time with short bounds;
- the whole server (``serve``: hypercorn, the /ws route, JSON-RPC), with real
  trio-websocket clients: ordered exactly-once delivery, recovery with
  ``since``, authentication, a slow client.

Redis tests flush the test Redis first: the pipeline's stream, group, topic
and sequencer keys have fixed names (``starling:*``), like a deployment's.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from actors.realtime.pipeline import InvalidEvent, Realtime, RealtimeSettings, realtime_subtree
from actors.realtime.streams import GROUP, STREAM, TOPIC
from actors.realtime.transform import Rendered, encode_batch
from auth.tokens import issue_token, load_secret
from datasets.importers import import_edge_list, read_edge_list
from protocols.websocket import gap_frame, pub_frame
from protocols.websocket.session import CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED, KiB, Limits
from server import serve
from settings import ServeOptions, Settings
from stores.backends import KeyValueBackend, default_graph_url, open_key_value
from stores.cache import Cache
from stores.redis import RedisBackend, RedisPubSub
from stores.sequence import channel_epoch
from supervisor import Supervisor

TIMEOUT = 30.0
"""Seconds any one server test may take (real sockets, real time)."""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend_url(request: pytest.FixtureRequest) -> str:
    """``memory://`` or the real Redis, flushed."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushall()
    return url


# --- the subtree alone -----------------------------------------------------------


@dataclass(eq=False)
class Collector:
    """A subscriber that keeps every offer: ``(channel, offset, data)``, read from the frame."""

    got: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    subscriptions: frozenset[str] = frozenset()

    def offer(self, channel: str, offset: int, frame: bytes, /) -> bool:
        length = frame[1]  # an unmasked server frame: 2, 4 or 10 header bytes (RFC 6455 5.2)
        payload = frame[2:] if length < 126 else frame[4:] if length == 126 else frame[10:]
        params = json.loads(payload)["params"]
        assert (params["channel"], params["offset"]) == (channel, offset)
        self.got.append((channel, offset, params["data"]))
        return True

    def statistics(self) -> SimpleNamespace:
        return SimpleNamespace(close=None)

    def seqs(self, channel: str) -> list[int]:
        return [data["seq"] for name, _, data in self.got if name == channel]

    def offsets(self, channel: str) -> list[int]:
        return [offset for name, offset, _ in self.got if name == channel]


class FailingCache:
    """The real cache, except that the ``fail_on``-th calls of ``get_many`` raise."""

    def __init__(self, inner: Cache, fail_on: set[int]) -> None:
        self._inner = inner
        self._fail_on = fail_on
        self.calls = 0

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        self.calls += 1
        if self.calls in self._fail_on:
            raise RuntimeError("injected transformer crash")
        return await self._inner.get_many(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@asynccontextmanager
async def subtree(
    kv: KeyValueBackend, settings: RealtimeSettings, cache: Any = None
) -> AsyncIterator[tuple[Supervisor, Realtime]]:
    supervisor, handle = realtime_subtree(
        stream=kv.stream,
        pubsub=kv.pubsub,
        sequencer=kv.sequencer,
        cache=kv.cache if cache is None else cache,
        shared=kv.shared,
        settings=settings,
        render=pub_frame,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        yield supervisor, handle
        supervisor.request_stop()


def event(channel: str, **data: Any) -> dict[str, str]:
    return {"channel": channel, "data": json.dumps(data)}


async def until(condition: Any) -> None:
    """Wait until ``condition()`` holds, at most 20 s.

    Polls: the pipeline's stages have no event to wait on from outside, and on
    Redis the time is real (reclaim, blocking reads)."""
    with trio.fail_after(20):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.02)


async def until_read(realtime: Realtime, count: int) -> None:
    """Wait until the nozzle has read ``count`` entries from the stream.

    Reclaimed entries count: an entry a restarted nozzle took from the stream but never
    saw (cancelled in the read) is counted when it is reclaimed."""
    await until(lambda: realtime.statistics().read >= count)


@pytest.fixture
def clock(backend_url: str) -> trio.testing.MockClock | None:
    """The autojump clock for the in-process backend; real time for Redis."""
    return trio.testing.MockClock(autojump_threshold=0) if backend_url == "memory://" else None


@pytest.fixture
async def kv(backend_url: str) -> AsyncIterator[KeyValueBackend]:
    backend = open_key_value(backend_url)
    try:
        yield backend
    finally:
        await backend.aclose()


def quick(**overrides: Any) -> RealtimeSettings:
    """Settings with short bounds: small batches, reclaim after half a second."""
    values: dict[str, Any] = {
        "batch": 10,
        "block": 0.05,
        "reclaim_idle": 0.5,
        "reclaim_every": 0.2,
        "reorder_wait": 0.2,
        "consumer": "test",
    }
    return RealtimeSettings(**(values | overrides))


async def test_transformer_crash_mid_stream_loses_nothing(
    kv: KeyValueBackend, clock: trio.testing.MockClock | None
) -> None:
    """A transformer crashing on its second batch is restarted; the nozzle reclaims that
    batch, and every event reaches the subscriber (at least once), each channel in offset
    order; nothing stays pending."""
    cache = FailingCache(kv.cache, fail_on={2})
    collector = Collector()
    async with subtree(kv, quick(), cache) as (supervisor, realtime):
        for channel in ("post:a", "post:b"):
            realtime.publisher.subscribe(collector, channel)
        for seq in range(60):
            channel = "post:a" if seq % 2 else "post:b"
            await kv.stream.append(STREAM, event(channel, seq=seq, user=f"u{seq}"))
            if seq % 10 == 9:  # several batches: the crash comes mid-stream
                await until_read(realtime, seq + 1)
        await until(
            lambda: set(collector.seqs("post:a")) | set(collector.seqs("post:b")) >= set(range(60))
        )
        await until(lambda: realtime.statistics().reclaimed > 0)
        restarts = [
            child.restarts
            for child in supervisor.statistics().children
            if child.id.startswith("transformer-")
        ]
        assert sum(restarts) == 1  # whichever of the two took the second batch
        assert cache.calls >= 7
        for channel in ("post:a", "post:b"):
            offsets = collector.offsets(channel)
            assert offsets == sorted(offsets)
            assert len(set(offsets)) == len(offsets)  # a reclaimed event gets a new offset
        await until(lambda: realtime.statistics().read >= 60)
        # A batch is acknowledged after it is delivered: wait for the last acknowledgement.
        with trio.fail_after(20):
            while await kv.stream.pending(STREAM, GROUP) > 0:  # noqa: ASYNC110
                await trio.sleep(0.02)


async def test_several_transformers_number_each_channel_in_stream_order(
    kv: KeyValueBackend, clock: trio.testing.MockClock | None
) -> None:
    """With three transformers and events appended by a bare XADD (numbered by the transformers), each channel's offsets follow the order its events entered the stream."""  # noqa: E501
    collector = Collector()
    channels = [f"post:c{i}" for i in range(7)]
    # No crash here: a transformer slowed by a loaded machine must not be taken for a dead
    # one, or its batch is reclaimed and delivered twice (at least once is the contract).
    settings = quick(transformers=3, reclaim_idle=30.0)
    async with subtree(kv, settings) as (_, realtime):
        for channel in channels:
            realtime.publisher.subscribe(collector, channel)
        for seq in range(210):
            await kv.stream.append(STREAM, event(channels[seq * 5 % 7], seq=seq))
            if seq % 20 == 19:  # many batches, each split over the transformers
                await until_read(realtime, seq + 1)
        await until(lambda: len(collector.got) == 210)
    for channel in channels:
        seqs = collector.seqs(channel)
        assert seqs == sorted(seqs)
        assert collector.offsets(channel) == list(range(1, len(seqs) + 1))


async def test_events_numbered_at_append_keep_their_offsets(
    kv: KeyValueBackend, clock: trio.testing.MockClock | None
) -> None:
    """``publish_many`` numbers events as they enter the stream: each keeps that offset and epoch through the pipeline, in order; an invalid event refuses the whole call, naming it."""  # noqa: E501
    collector = Collector()
    async with subtree(kv, quick(transformers=2)) as (_, realtime):
        realtime.publisher.subscribe(collector, "post:m")
        accepted = await realtime.publish_many([("post:m", {"seq": n}) for n in range(5)])
        assert [a.offset for a in accepted] == [1, 2, 3, 4, 5]
        with pytest.raises(InvalidEvent) as invalid:
            await realtime.publish_many([("post:m", {"seq": 5}), ("room:1", {})])
        assert invalid.value.index == 1
        accepted += await realtime.publish_many([("post:m", {"seq": 5})])
        await until(lambda: len(collector.got) == 6)
    assert collector.offsets("post:m") == [a.offset for a in accepted] == list(range(1, 7))
    assert collector.seqs("post:m") == list(range(6))
    assert await kv.stream.length(STREAM) == 6


async def test_poison_events_are_acknowledged_and_counted(
    kv: KeyValueBackend, clock: trio.testing.MockClock | None
) -> None:
    """Entries that can never be delivered are acknowledged, counted and skipped; the valid
    event after them is published with offset 1 (poison takes no offset)."""
    collector = Collector()
    async with subtree(kv, quick()) as (_, realtime):
        realtime.publisher.subscribe(collector, "post:1")
        await kv.stream.append_many(
            STREAM,
            [
                {"channel": "nowhere", "data": "{}"},
                {"channel": "post:1", "data": "not json"},
                {"channel": "post:1", "data": "[1, 2]"},
                {"data": "{}"},
                {"channel": "system:dashboard", "data": "{}"},  # the server's own channel
                event("post:1", seq=1),
            ],
        )
        await until(lambda: len(collector.got) == 1)
        assert collector.got == [("post:1", 1, {"seq": 1})]
        await until(lambda: realtime.statistics().poison == 5)
        stats = realtime.statistics()
        assert (stats.events, stats.read) == (1, 6)
        assert await kv.stream.pending(STREAM, GROUP) == 0


async def test_publish_waits_for_its_offset_and_refuses_bad_events(
    kv: KeyValueBackend, clock: trio.testing.MockClock | None
) -> None:
    """``Realtime.publish`` returns the offset its event got; a bad channel or oversize data is
    refused before it reaches the stream."""
    from actors.realtime.pipeline import InvalidEvent

    async with subtree(kv, quick()) as (_, realtime):
        first = await realtime.publish("post:9", {"n": 1})
        second = await realtime.publish("post:9", {"n": 2})
        assert (first.offset, second.offset) == (1, 2)
        assert first.epoch == second.epoch == realtime.publisher.position("post:9").epoch
        length = await kv.stream.length(STREAM)
        with pytest.raises(InvalidEvent, match="channel"):
            await realtime.publish("chat:1", {"n": 3})
        with pytest.raises(InvalidEvent, match="bytes"):
            await realtime.publish("post:9", {"pad": "x" * 70_000})
        with pytest.raises(InvalidEvent, match="server's own"):
            await realtime.publish("system:dashboard", {"n": 4})
        assert await kv.stream.length(STREAM) == length


async def test_publish_times_out_with_its_own_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With no pipeline running, ``publish`` leaves the event in the stream and raises
    PublishTimeout after ``publish_timeout`` seconds (autojump clock)."""
    from actors.realtime.pipeline import PublishTimeout

    kv = open_key_value("memory://")
    _, realtime = realtime_subtree(
        stream=kv.stream, pubsub=kv.pubsub, sequencer=kv.sequencer, cache=kv.cache,
        shared=False, settings=quick(publish_timeout=0.2), render=pub_frame,
    )  # fmt: skip
    with pytest.raises(PublishTimeout) as slow:
        await realtime.publish("post:1", {"n": 1})
    assert slow.value.seconds == 0.2
    assert await kv.stream.length(STREAM) == 1


# --- the whole server ------------------------------------------------------------


@dataclass
class Server:
    url: str
    ws_url: str
    secret: bytes
    client: httpx.AsyncClient
    root: Supervisor

    async def rpc(self, method: str, params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply = (await self.client.post("/rpc", json=body)).json()
        assert "error" not in reply, reply
        return reply["result"]

    async def publish_many(self, events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """``realtime.publish`` each event, as one JSON-RPC batch; the results in order."""
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": "realtime.publish",
             "params": {"channel": channel, "data": data}}
            for i, (channel, data) in enumerate(events)
        ]  # fmt: skip
        replies = (await self.client.post("/rpc", json=batch)).json()
        by_id = {reply["id"]: reply for reply in replies}
        assert all("result" in reply for reply in replies), replies
        return [by_id[i]["result"] for i in range(len(events))]

    async def publish_in_order(self, channel: str, datas: list[dict[str, Any]]) -> None:
        """``realtime.publish`` each of ``datas`` on ``channel``, one call after the other."""
        for data in datas:
            await self.rpc("realtime.publish", {"channel": channel, "data": data})

    def token(self, user: str, **kwargs: Any) -> str:
        return issue_token(self.secret, user, **kwargs)


@asynccontextmanager
async def running(directory: Path, backend_url: str, **options: Any) -> AsyncIterator[Server]:
    (directory / "edges.txt").write_text("a b\nb a\nd b\n")
    settings = Settings(directory, default_graph_url(directory), backend_url)
    graph = await settings.open_graph()
    try:
        await import_edge_list(graph, read_edge_list(directory / "edges.txt"))
    finally:
        await graph.aclose()
    serve_options = ServeOptions(**({"port": 0, "readers": 2, "realtime": quick()} | options))
    async with trio.open_nursery() as nursery:
        root: Supervisor = await nursery.start(serve, settings, serve_options)
        (api,) = [child for child in root.statistics().children if child.id == "api"]
        url = api.detail.binds[0]
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            ws_url = url.replace("http", "ws") + "/ws"
            yield Server(url, ws_url, load_secret(directory), client, root)
        root.request_stop()


_ids = itertools.count(1)


async def request(ws: WebSocketConnection, method: str, params: Any = None) -> dict[str, Any]:
    """Send a request and return its reply (publications arriving first are an error)."""
    id = next(_ids)
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": id, "method": method,
                                      "params": params or {}}))  # fmt: skip
    reply = json.loads(await ws.get_message())
    assert isinstance(reply, dict)
    assert reply.get("id") == id, reply
    return reply


def pubs(frame: str | bytes) -> Iterator[dict[str, Any]]:
    decoded = json.loads(frame)
    for item in decoded if isinstance(decoded, list) else [decoded]:
        assert item["method"] == "pub", item
        yield item["params"]


async def receive(ws: WebSocketConnection, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        got += pubs(await ws.get_message())
    return got


async def closed_with(ws: WebSocketConnection) -> int:
    """Read (and drop) frames until the server closes; the close code."""
    while True:
        try:
            await ws.get_message()
        except ConnectionClosed as closed:
            reason = closed.reason
            break
    assert reason is not None
    return reason.code


async def test_events_reach_subscribers_in_order_exactly_once(
    tmp_path: Path, backend_url: str
) -> None:
    """Events published through JSON-RPC (and, on Redis, appended with XADD by another
    producer) reach every subscriber of their channel exactly once, in offset order, with the
    offsets the publishers were told, and nothing of other channels."""
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path, backend_url) as server:
            url = server.ws_url
            async with (
                open_websocket_url(f"{url}?token={server.token('a')}") as one,
                open_websocket_url(f"{url}?token={server.token('b')}") as two,
                open_websocket_url(f"{url}?token={server.token('c')}") as other,
            ):
                for ws in (one, two):
                    assert (await request(ws, "subscribe", {"channel": "post:p1"}))["result"][
                        "offset"
                    ] == 0
                await request(other, "subscribe", {"channel": "post:p2"})
                told: dict[int, int] = {}
                for start in range(0, 60, 15):
                    events = [
                        ("post:p1" if seq % 3 else "post:p2", {"seq": seq})
                        for seq in range(start, start + 15)
                    ]
                    for (channel, data), result in zip(
                        events, await server.publish_many(events), strict=True
                    ):
                        if channel == "post:p1":
                            told[result["offset"]] = data["seq"]
                expected = 40
                if backend_url.startswith("redis"):
                    client = redis.Redis.from_url(backend_url)
                    for seq in range(100, 110):
                        client.xadd(STREAM, event("post:p1", seq=seq))
                    expected += 10
                for ws in (one, two):
                    got = await receive(ws, expected)
                    assert [p["offset"] for p in got] == list(range(1, expected + 1))
                    assert {p["channel"] for p in got} == {"post:p1"}
                    for p in got:
                        if p["offset"] in told:
                            assert p["data"]["seq"] == told[p["offset"]]
                    seqs = [p["data"]["seq"] for p in got]
                    assert sorted(seqs) == sorted([*told.values(), *range(100, expected + 60)])
                got = await receive(other, 20)  # a batch's calls run concurrently: any order
                assert [p["offset"] for p in got] == list(range(1, 21))
                assert sorted(p["data"]["seq"] for p in got) == list(range(0, 60, 3))
                stats = await server.rpc("system.stats", {})
                assert stats["realtime"]["delivered"] == 2 * expected + 20


async def test_comments_add_checks_ids_and_reaches_the_post_channel(
    tmp_path: Path, backend_url: str
) -> None:
    """``posts.publish`` puts a ``published`` activity on ``post:<id>`` (with its title);
    ``comments.add`` on a post that exists publishes a ``comment`` there (enriched with the
    author's display fields); unknown users and posts get -32004."""
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path, backend_url) as server:
            async with open_websocket_url(f"{server.ws_url}?token={server.token('b')}") as ws:
                await request(ws, "subscribe", {"channel": "post:p1"})
                await server.rpc(
                    "posts.publish", {"author": "a", "post": {"id": "p1", "title": "T"}}
                )
                # The published activity enters the stream after posts.publish answered
                # (the realtime bridge follows the event bus): wait for it first.
                (published,) = await receive(ws, 1)
                result = await server.rpc("comments.add", {"user": "b", "post": "p1", "text": "hi"})
                assert result["channel"] == "post:p1"
                (pub,) = await receive(ws, 1)
                assert published["offset"] == 1
                assert published["data"]["type"] == "published"
                assert (published["data"]["user"], published["data"]["title"]) == ("a", "T")
                assert pub["offset"] == result["offset"] == 2
                assert pub["data"]["type"] == "comment"
                assert (pub["data"]["user"], pub["data"]["text"]) == ("b", "hi")
                assert pub["data"]["author"] == {"id": "b"}
            for params, missing in (
                ({"user": "zed", "post": "p1", "text": "x"}, "zed"),
                ({"user": "b", "post": "nope", "text": "x"}, "nope"),
            ):
                body = {"jsonrpc": "2.0", "id": 1, "method": "comments.add", "params": params}
                reply = (await server.client.post("/rpc", json=body)).json()
                assert reply["error"]["code"] == -32004
                assert reply["error"]["data"]["id"] == missing
            body = {"jsonrpc": "2.0", "id": 1, "method": "realtime.publish",
                    "params": {"channel": "room:1", "data": {}}}  # fmt: skip
            reply = (await server.client.post("/rpc", json=body)).json()
            assert reply["error"]["code"] == -32602


async def test_recovery_with_since(tmp_path: Path, backend_url: str) -> None:
    """A client that reconnects with ``since`` gets exactly what it missed
    (``recovered: true``), or nothing and ``recovered: false`` once the history
    (5 publications here) no longer holds it."""
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path, backend_url, realtime=quick(history_size=5)) as server:
            url = f"{server.ws_url}?token={server.token('a')}"
            async with open_websocket_url(url) as ws:
                epoch = (await request(ws, "subscribe", {"channel": "post:r"}))["result"]["epoch"]
                await server.publish_in_order("post:r", [{"n": n} for n in (1, 2)])
                assert [p["offset"] for p in await receive(ws, 2)] == [1, 2]
            await server.publish_in_order("post:r", [{"n": n} for n in (3, 4, 5)])
            async with open_websocket_url(url) as ws:
                since = {"offset": 2, "epoch": epoch}
                reply = await request(ws, "subscribe", {"channel": "post:r", "since": since})
                result = reply["result"]
                assert result["recovered"] is True
                assert [p["offset"] for p in result["publications"]] == [3, 4, 5]
                assert [p["data"]["n"] for p in result["publications"]] == [3, 4, 5]
                await server.publish_many([("post:r", {"n": 6})])
                assert [p["offset"] for p in await receive(ws, 1)] == [6]
            await server.publish_many([("post:r", {"n": n}) for n in range(7, 14)])
            async with open_websocket_url(url) as ws:
                since = {"offset": 6, "epoch": epoch}
                reply = await request(ws, "subscribe", {"channel": "post:r", "since": since})
                result = reply["result"]
                assert result["recovered"] is False
                assert result.get("publications", []) == []
                assert (result["offset"], result["epoch"]) == (13, epoch)


async def test_authentication_and_channel_permissions(tmp_path: Path) -> None:
    """No token: only connect/ping are served; an expired token closes 4003; another user's
    ``user:`` channel is forbidden, one's own is allowed."""
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path, "memory://") as server:
            async with open_websocket_url(server.ws_url) as ws:
                reply = await request(ws, "subscribe", {"channel": "post:1"})
                assert reply["error"]["code"] == -32003
                assert reply["error"]["message"] == "unauthorized"
            expired = server.token("a", ttl_seconds=60, now=time.time() - 3600)
            async with open_websocket_url(f"{server.ws_url}?token={expired}") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == CLOSE_TOKEN_EXPIRED
            async with open_websocket_url(f"{server.ws_url}?token={server.token('a')}") as ws:
                reply = await request(ws, "subscribe", {"channel": "user:b"})
                assert reply["error"]["code"] == -32003
                assert reply["error"]["message"] == "forbidden"
                assert "result" in await request(ws, "subscribe", {"channel": "user:a"})
                await server.rpc("social.follow", {"follower": "d", "followee": "a"})
                (pub,) = await receive(ws, 1)
                assert pub["channel"] == "user:a"
                assert (pub["data"]["kind"], pub["data"]["user"]) == ("followed", "d")


async def test_slow_client_is_disconnected_while_a_fast_one_keeps_receiving(
    tmp_path: Path,
) -> None:
    """A subscriber that stops reading is closed with 4008 once its outbox (16 KiB here) is
    full; the other subscriber of the channel gets every publication, in order."""
    limits = Limits(max_outbox_bytes=16 * KiB)
    pad = "x" * 1000
    with trio.fail_after(60):
        async with running(tmp_path, "memory://", ws_limits=limits) as server:
            url = server.ws_url
            async with (
                open_websocket_url(f"{url}?token={server.token('slow')}") as slow,
                open_websocket_url(f"{url}?token={server.token('fast')}") as fast,
            ):
                for ws in (slow, fast):
                    await request(ws, "subscribe", {"channel": "post:s"})
                received: list[dict[str, Any]] = []
                published = 0
                while (await server.rpc("system.stats", {}))["realtime"]["slow_disconnects"] == 0:
                    assert published < 50_000, "the slow client was never disconnected"
                    events = [("post:s", {"n": published + i, "pad": pad}) for i in range(50)]
                    await server.publish_many(events)
                    published += 50
                    received += await receive(fast, 50)
                assert [p["offset"] for p in received] == list(range(1, published + 1))
                code = await closed_with(slow)
                assert code == CLOSE_SLOW_CONSUMER
                await server.publish_many([("post:s", {"after": True})])
                assert (await receive(fast, 1))[0]["data"] == {"after": True}


def test_quick_settings_are_valid() -> None:
    """The settings helper builds what the tests above run with (a guard for its typos)."""
    assert quick().batch == 10
    with pytest.raises(ValueError, match="batch"):
        RealtimeSettings(batch=0)


async def test_metrics_show_the_pipeline(tmp_path: Path) -> None:
    """/metrics counts the publications and deliveries (two events to one subscriber), the open
    WebSocket connections and the stream-to-publish latency; system.stats shows the same
    figures."""
    with trio.fail_after(TIMEOUT):
        async with (
            running(tmp_path, "memory://") as server,
            open_websocket_url(f"{server.ws_url}?token={server.token('a')}") as ws,
        ):
            await request(ws, "subscribe", {"channel": "post:m"})
            await server.publish_in_order("post:m", [{"n": 1}, {"n": 2}])
            await receive(ws, 2)
            text = (await server.client.get("/metrics")).text
            stats = (await server.rpc("system.stats", {}))["realtime"]
    samples = {
        (sample.name, sample.labels.get("quantile")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples["starling_realtime_published_total", None] == stats["published"] == 2
    assert samples["starling_realtime_deliveries_total", None] == stats["delivered"] == 2
    assert samples["starling_realtime_subscriptions", None] == stats["subscribers"] == 1
    assert samples["starling_ws_connections", None] == 1
    latency = {q: samples["starling_realtime_latency_ms", q] for q in ("p50", "p99", "p99.9")}
    assert latency == stats["latency_ms"]
    assert latency["p50"] <= latency["p99"] <= latency["p99.9"]


async def test_stopping_the_server_closes_websockets_with_1001(tmp_path: Path) -> None:
    """On SIGINT/SIGTERM (the root asked to stop) each WebSocket client reads a close 1001
    "server shutting down" (it reconnects elsewhere and recovers), not a dropped connection."""
    with trio.fail_after(TIMEOUT):
        async with (
            running(tmp_path, "memory://") as server,
            open_websocket_url(f"{server.ws_url}?token={server.token('a')}") as ws,
        ):
            await request(ws, "subscribe", {"channel": "post:bye"})
            server.root.request_stop()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            assert (closed.value.reason.code, closed.value.reason.reason) == (
                1001,
                "server shutting down",
            )


async def test_system_restart_restarts_a_child_and_the_pipeline_keeps_delivering(
    tmp_path: Path,
) -> None:
    """``system.restart`` of a transformer restarts it (and, rest_for_one, what follows it);
    events still flow; an unknown path is -32004."""
    with trio.fail_after(TIMEOUT):
        async with (
            running(tmp_path, "memory://") as server,
            open_websocket_url(f"{server.ws_url}?token={server.token('a')}") as ws,
        ):
            await request(ws, "subscribe", {"channel": "post:r"})
            result = await server.rpc("system.restart", {"path": "realtime/transformer-0"})
            assert result == {"path": "realtime/transformer-0", "restarts": 1, "scheduled": False}
            actors = (await server.rpc("system.stats", {}))["actors"]
            assert actors["realtime/nozzle"]["restarts"] == 1  # after it: restarted too
            assert actors["realtime/publisher"]["restarts"] == 0  # before it: untouched
            await server.publish_in_order("post:r", [{"n": 1}])
            assert (await receive(ws, 1))[0]["data"] == {"n": 1}
            body = {"jsonrpc": "2.0", "id": 1, "method": "system.restart",
                    "params": {"path": "realtime/nothing"}}  # fmt: skip
            reply = (await server.client.post("/rpc", json=body)).json()
            assert reply["error"]["code"] == -32004


# --- the relay falling behind: found by offset, never silent ------------------------------


@dataclass(eq=False)
class Reader:
    """A subscriber that decodes every frame it is offered (``pub`` and ``gap``); ``hold``,
    when set, blocks the trio thread in the next offer until it is set (a stalled publisher)."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: frozenset[str] = frozenset({"post:1"})
    hold: threading.Event | None = None

    def offer(self, channel: str, offset: int, frame: bytes, /) -> bool:
        length = frame[1]
        payload = frame[2:] if length < 126 else frame[4:] if length == 126 else frame[10:]
        self.frames.append(json.loads(payload))
        if self.hold is not None:
            hold, self.hold = self.hold, None
            hold.wait(10)  # blocks the trio thread on purpose: the publisher stalls
        return True

    def statistics(self) -> SimpleNamespace:
        return SimpleNamespace(close=None)


@pytest.mark.redis
async def test_relay_overflow_is_found_by_offset_and_told_never_silent(redis_url: str) -> None:
    """When the relay's Pub/Sub buffer overflows while the publisher is stalled, every offset reaches the subscriber either as a pub or inside a gap notice, in order; the counters show the drop and the gap, and recovery across it answers recovered: false."""  # noqa: E501
    redis.Redis.from_url(redis_url).flushall()
    kv = open_key_value(redis_url)
    small = RedisBackend.from_url(redis_url)
    try:
        generation = await kv.sequencer.refresh()
        epoch = channel_epoch(generation, "post:1")
        supervisor_tree, realtime = realtime_subtree(
            stream=kv.stream,
            pubsub=RedisPubSub(small, buffer_size=2),
            sequencer=kv.sequencer,
            cache=kv.cache,
            shared=True,
            settings=quick(reorder_wait=0.2),
            render=pub_frame,
            render_gap=gap_frame,
        )
        reader = Reader()
        client = redis.Redis.from_url(redis_url)

        def batch(offset: int) -> bytes:
            return encode_batch(
                [Rendered("post:1", offset, epoch, f"{offset}-0", b'{"n":%d}' % offset)],
                "another-process",
            )

        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor_tree.run)
            realtime.publisher.subscribe(reader, "post:1")
            await trio.to_thread.run_sync(client.publish, TOPIC, batch(1))
            await until(lambda: len(reader.frames) == 1)
            released = threading.Event()
            reader.hold = released

            def burst() -> None:
                # The trio thread is held in the offer of offset 2 while offsets 3..20
                # reach this process's socket, one message each.
                for offset in range(2, 21):
                    client.publish(TOPIC, batch(offset))
                released.set()

            await trio.to_thread.run_sync(burst)
            await until(lambda: reader.frames and reader.frames[-1]["params"].get("offset") == 20)
            supervisor_tree.request_stop()

        covered: list[int] = []
        for frame in reader.frames:
            params = frame["params"]
            if frame["method"] == "gap":
                assert params["epoch"] == epoch
                covered += range(params["first"], params["last"] + 1)
            else:
                covered.append(params["offset"])
        assert covered == list(range(1, 21))
        statistics = realtime.statistics()
        assert statistics.relay_dropped > 0
        assert statistics.gaps == sum(f["method"] == "gap" for f in reader.frames) >= 1
        assert statistics.missed == 20 - sum(f["method"] == "pub" for f in reader.frames)
        assert realtime.publisher.since("post:1", 2, epoch).recovered is False
        client.close()
    finally:
        await small.aclose()
        await kv.aclose()
