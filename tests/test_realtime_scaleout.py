"""Scale-out: two ``starling serve`` processes on one Redis.

Both processes read the stream ``starling:events`` in the consumer group
``starling`` (each entry goes to one of them), number events with the shared
sequencer and cross to each other over Redis Pub/Sub. A client connected to
process A must receive what is published through process B, and what another
producer appends with XADD, exactly once and in offset order.

Real processes (the ``starling`` command), a real Redis, real WebSocket
clients; the servers start in real time, so waits poll ``/health`` under a
bound.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import trio
from trio_websocket import open_websocket_url

from actors.realtime.streams import STREAM
from auth.tokens import issue_token
from tests.processes import SECRET, load_graph, server_process, wait_healthy

pytestmark = pytest.mark.redis


def pubs(frame: str | bytes) -> list[dict[str, Any]]:
    decoded = json.loads(frame)
    return [item["params"] for item in (decoded if isinstance(decoded, list) else [decoded])]


async def test_a_client_on_one_process_gets_events_published_through_the_other(
    tmp_path: Path, redis_url: str
) -> None:
    """Events published through process B (JSON-RPC) and by XADD reach a subscriber of
    process A exactly once, in offset order; process A's and B's subscribers see the same
    sequence."""
    redis.Redis.from_url(redis_url).flushall()
    with (
        server_process(tmp_path, redis_url, "a") as process_a,
        server_process(tmp_path, redis_url, "b") as process_b,
    ):
        url_a, url_b = process_a.url, process_b.url
        await wait_healthy(url_a)
        await wait_healthy(url_b)
        token = issue_token(SECRET.encode(), "watcher")
        with trio.fail_after(60):
            async with (
                open_websocket_url(f"{url_a.replace('http', 'ws')}/ws?token={token}") as on_a,
                open_websocket_url(f"{url_b.replace('http', 'ws')}/ws?token={token}") as on_b,
                httpx.AsyncClient(base_url=url_b) as client,
            ):
                for ws in (on_a, on_b):
                    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1,
                        "method": "subscribe", "params": {"channel": "post:scale"}}))  # fmt: skip
                    reply = json.loads(await ws.get_message())
                    assert reply["result"]["offset"] == 0, reply
                told = []
                for seq in range(30):
                    body = {"jsonrpc": "2.0", "id": seq, "method": "realtime.publish",
                            "params": {"channel": "post:scale", "data": {"seq": seq}}}  # fmt: skip
                    reply = (await client.post("/rpc", json=body)).json()
                    told.append(reply["result"]["offset"])
                assert told == list(range(1, 31))
                producer = redis.Redis.from_url(redis_url)
                for seq in range(30, 40):
                    producer.xadd(
                        STREAM, {"channel": "post:scale", "data": json.dumps({"seq": seq})}
                    )
                received: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
                for name, ws in (("a", on_a), ("b", on_b)):
                    while len(received[name]) < 40:
                        received[name] += pubs(await ws.get_message())
                    assert [p["offset"] for p in received[name]] == list(range(1, 41))
                    seqs = [p["data"]["seq"] for p in received[name]]
                    # Each RPC returned before the next was sent: their order is kept.
                    assert seqs[:30] == list(range(30))
                    # The XADDs are read by both processes' nozzles at once: each is numbered
                    # by whichever process read it, so only their set is fixed.
                    assert sorted(seqs[30:]) == list(range(30, 40))
                assert received["a"] == received["b"]  # one order, seen by both processes
                # Exactly once: a marker published after the 40 is the next thing either
                # subscriber receives, with the next offset (no duplicate came in between).
                body = {"jsonrpc": "2.0", "id": 40, "method": "realtime.publish",
                        "params": {"channel": "post:scale", "data": {"marker": True}}}  # fmt: skip
                assert (await client.post("/rpc", json=body)).json()["result"]["offset"] == 41
                for ws in (on_a, on_b):
                    (marker,) = pubs(await ws.get_message())
                    assert (marker["offset"], marker["data"]) == (41, {"marker": True})
        async with httpx.AsyncClient() as client:
            stats = {}
            for name, url in (("a", url_a), ("b", url_b)):
                body = {"jsonrpc": "2.0", "id": 1, "method": "system.stats"}
                stats[name] = (await client.post(f"{url}/rpc", json=body)).json()["result"]
    # Both processes' nozzles share the stream: between them they read each entry once.
    read = stats["a"]["realtime"]["read"] + stats["b"]["realtime"]["read"]
    assert read == 41
    assert redis.Redis.from_url(redis_url).xpending(STREAM, "starling")["pending"] == 0


@pytest.mark.neo4j
async def test_two_processes_on_one_redis_and_one_neo4j(
    tmp_path: Path, redis_url: str, neo4j_url: str
) -> None:
    """docs/operations.md, "Two processes on one Redis and one Neo4j", step by step: the
    graph is loaded once, a follow written through process B is read through process A, and
    its notification reaches a subscriber of A's WebSocket once; a post published through B
    shows in a follower's feed ranked by A."""
    redis.Redis.from_url(redis_url).flushall()
    prefix = f"ops{os.getpid()}x"
    a, b, c = (f"{prefix}{name}" for name in "abc")
    edges = f"source target\n{a} {b}\n{b} {a}\n{c} {b}\n"  # a header line
    await load_graph(tmp_path, edges, graph_url=neo4j_url)
    with (
        server_process(tmp_path, redis_url, "a", neo4j_url) as process_a,
        server_process(tmp_path, redis_url, "b", neo4j_url) as process_b,
    ):
        url_a, url_b = process_a.url, process_b.url
        await wait_healthy(url_a)
        await wait_healthy(url_b)
        token = issue_token(SECRET.encode(), a)
        with trio.fail_after(60):
            async with (
                open_websocket_url(f"{url_a.replace('http', 'ws')}/ws?token={token}") as ws,
                httpx.AsyncClient() as client,
            ):
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1,
                    "method": "subscribe", "params": {"channel": f"user:{a}"}}))  # fmt: skip
                assert "result" in json.loads(await ws.get_message())
                body = {"jsonrpc": "2.0", "id": 1, "method": "social.follow",
                        "params": {"follower": c, "followee": a}}  # fmt: skip
                reply = (await client.post(f"{url_b}/rpc", json=body)).json()
                assert reply["result"] == {"created": True}
                body = {"jsonrpc": "2.0", "id": 2, "method": "social.counts",
                        "params": {"user": a}}  # fmt: skip
                reply = (await client.post(f"{url_a}/rpc", json=body)).json()
                assert reply["result"] == {"following": 1, "followers": 2}
                (pub,) = pubs(await ws.get_message())
                assert pub["channel"] == f"user:{a}"
                assert (pub["data"]["kind"], pub["data"]["user"]) == ("followed", c)
                # Once: a marker published through B after it is the next thing A's
                # subscriber receives (no duplicate came in between).
                body = {"jsonrpc": "2.0", "id": 5, "method": "realtime.publish",
                        "params": {"channel": f"user:{a}", "data": {"marker": True}}}  # fmt: skip
                told = (await client.post(f"{url_b}/rpc", json=body)).json()["result"]
                (marker,) = pubs(await ws.get_message())
                assert (marker["offset"], marker["data"]) == (told["offset"], {"marker": True})
                assert told["offset"] == pub["offset"] + 1
                # A post published through B reaches A's feeds (shared feed events):
                # b follows a, so b's feed ranked on A has it.
                post = f"{prefix}p"
                draft = {"id": post, "title": "Shared"}
                body = {"jsonrpc": "2.0", "id": 3, "method": "posts.publish",
                        "params": {"author": a, "post": draft}}  # fmt: skip
                assert "result" in (await client.post(f"{url_b}/rpc", json=body)).json()
                with trio.fail_after(10):
                    while True:  # the event crosses Redis Pub/Sub: poll A's feed
                        body = {"jsonrpc": "2.0", "id": 4, "method": "feed.get",
                                "params": {"user": b, "limit": 20}}  # fmt: skip
                        reply = (await client.post(f"{url_a}/rpc", json=body)).json()
                        if post in [item["post"] for item in reply["result"]["items"]]:
                            break
                        await trio.sleep(0.2)


async def test_two_processes_number_a_channel_in_stream_order(
    tmp_path: Path, redis_url: str
) -> None:
    """Producers publishing one channel's events through two processes at once (publish_many): in the stream the channel's offsets increase entry by entry, and a subscriber of either process receives them in that order, each once."""  # noqa: E501
    redis.Redis.from_url(redis_url).flushall()
    with (
        server_process(tmp_path, redis_url, "a") as process_a,
        server_process(tmp_path, redis_url, "b") as process_b,
    ):
        url_a, url_b = process_a.url, process_b.url
        await wait_healthy(url_a)
        await wait_healthy(url_b)
        token = issue_token(SECRET.encode(), "watcher")
        calls, per_call = 20, 10
        with trio.fail_after(60):
            async with open_websocket_url(f"{url_a.replace('http', 'ws')}/ws?token={token}") as ws:
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1,
                    "method": "subscribe", "params": {"channel": "post:order"}}))  # fmt: skip
                assert json.loads(await ws.get_message())["result"]["offset"] == 0

                async def produce(url: str, name: str) -> None:
                    async with httpx.AsyncClient(base_url=url) as client:
                        for call in range(calls):
                            events = [
                                {
                                    "channel": "post:order",
                                    "data": {"by": name, "n": call * per_call + i},
                                }
                                for i in range(per_call)
                            ]
                            body = {"jsonrpc": "2.0", "id": call, "method": "realtime.publish_many",
                                    "params": {"events": events}}  # fmt: skip
                            reply = (await client.post("/rpc", json=body)).json()
                            offsets = [p["offset"] for p in reply["result"]["published"]]
                            assert offsets == sorted(offsets), reply

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(produce, url_a, "a")
                    nursery.start_soon(produce, url_b, "b")
                received: list[dict[str, Any]] = []
                while len(received) < 2 * calls * per_call:
                    received += pubs(await ws.get_message())
        entries = redis.Redis.from_url(redis_url, decode_responses=True).xrange(STREAM)
        in_stream = [
            (int(fields["offset"]), json.loads(fields["data"]))
            for _id, fields in entries
            if fields["channel"] == "post:order"
        ]
        assert [offset for offset, _ in in_stream] == list(range(1, 2 * calls * per_call + 1))
        assert [(p["offset"], p["data"]) for p in received] == in_stream
        for name in ("a", "b"):  # each producer's events in the order it sent them
            mine = [data["n"] for _, data in in_stream if data["by"] == name]
            assert mine == list(range(calls * per_call))
