"""The graph drives realtime across processes: two ``starling serve`` on one Redis and one
Neo4j. A follow or unfollow written through one process changes a live ``following:``
subscription on the other, and an unfollow or a block ends a ``circle:``/``post:``
subscription held by the other process with ``unsubscribed``.

Real processes, a real Redis, a real Neo4j, real WebSocket clients; the servers start in
real time, so waits poll under a bound.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from auth.tokens import issue_token
from tests.processes import SECRET, Process, load_graph, server_process, wait_healthy

pytestmark = [pytest.mark.redis, pytest.mark.neo4j]

TIMEOUT = 90.0
LIVE = 1.0
"""Seconds a graph change may take to reach a live subscription on another process."""


async def rpc(process: Process, method: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=process.url) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply = (await http.post("/rpc", json=body)).json()
    assert "result" in reply, reply
    return reply["result"]


async def call(ws: WebSocketConnection, method: str, **params: Any) -> dict[str, Any]:
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                      "params": params}))  # fmt: skip
    return dict(json.loads(await ws.get_message()))


async def next_push(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(LIVE + 4):
        return dict(json.loads(await ws.get_message()))


async def nothing_within(ws: WebSocketConnection, seconds: float) -> list[Any]:
    got = []
    with trio.move_on_after(seconds):
        while True:
            got.append(json.loads(await ws.get_message()))
    return got


@pytest.fixture
async def two_processes(tmp_path: Path, shared_redis: str, neo4j_url: str) -> Any:
    """Users <p>1..<p>4 in Neo4j (1 follows 2; 3 follows 2), two processes a and b."""
    redis_url = shared_redis  # emptied
    prefix = f"fo{uuid.uuid4().hex[:8]}x"  # fresh users: the session's Neo4j keeps old edges
    edges = f"{prefix}1 {prefix}2\n{prefix}3 {prefix}2\n{prefix}4 {prefix}3\n"
    await load_graph(tmp_path, edges, graph_url=neo4j_url)
    with (
        server_process(tmp_path, redis_url, "a", neo4j_url) as a,
        server_process(tmp_path, redis_url, "b", neo4j_url) as b,
    ):
        await wait_healthy(a.url)
        await wait_healthy(b.url)
        yield prefix, a, b


def token(user: str) -> str:
    return issue_token(SECRET.encode(), user)


async def test_follow_and_unfollow_on_one_process_change_following_on_the_other(
    two_processes: Any,
) -> None:
    """1 listens to following:1 on a; a follow of 4 written through b makes 4's next comment
    (published through b) arrive on a within a second; the unfollow of 2 through b stops 2's;
    the offsets are consecutive."""
    prefix, a, b = two_processes
    me, two, four = f"{prefix}1", f"{prefix}2", f"{prefix}4"
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{a.ws_url}?token={token(me)}") as ws:
            start = (await call(ws, "subscribe", channel=f"following:{me}"))["result"]["offset"]
            data = {"type": "comment", "user": two, "post": "p1", "text": "before"}
            await rpc(b, "realtime.publish", channel="post:p1", data=data)
            before = await next_push(ws)
            await rpc(b, "social.follow", follower=me, followee=four)
            await rpc(b, "social.unfollow", follower=me, followee=two)
            await trio.sleep(LIVE)
            for user, text in ((two, "after unfollow"), (four, "after follow")):
                data = {"type": "comment", "user": user, "post": "p1", "text": text}
                await rpc(b, "realtime.publish", channel="post:p1", data=data)
            after = await next_push(ws)
            rest = await nothing_within(ws, LIVE)

    assert (before["params"]["offset"], before["params"]["data"]["text"]) == (start + 1, "before")
    assert (after["params"]["offset"], after["params"]["data"]["text"]) == (
        start + 2,
        "after follow",
    )
    assert rest == []


async def test_following_recovers_exactly_on_the_other_process(two_processes: Any) -> None:
    """A listener of following:1 on a that reconnects to b with since gets exactly what it
    missed, with the same offsets."""
    prefix, a, b = two_processes
    me, two = f"{prefix}1", f"{prefix}2"
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{a.ws_url}?token={token(me)}") as ws:
            await call(ws, "subscribe", channel=f"following:{me}")
            data = {"type": "comment", "user": two, "post": "p2", "text": "seen"}
            await rpc(a, "realtime.publish", channel="post:p2", data=data)
            seen = (await next_push(ws))["params"]
            epoch = (await call(ws, "subscribe", channel=f"following:{me}"))["result"]["epoch"]
        for n in range(3):
            data = {"type": "comment", "user": two, "post": "p2", "text": f"missed {n}"}
            await rpc(a, "realtime.publish", channel="post:p2", data=data)
        await trio.sleep(LIVE)  # b's relay has them
        async with open_websocket_url(f"{b.ws_url}?token={token(me)}") as ws:
            since = {"offset": seen["offset"], "epoch": epoch}
            reply = await call(ws, "subscribe", channel=f"following:{me}", since=since)

    result = reply["result"]
    assert result["recovered"] is True
    assert [p["offset"] for p in result["publications"]] == [seen["offset"] + n for n in (1, 2, 3)]
    assert [p["data"]["text"] for p in result["publications"]] == [
        "missed 0",
        "missed 1",
        "missed 2",
    ]


async def test_circle_refused_and_ended_by_unfollow_and_block_from_the_other_process(
    two_processes: Any,
) -> None:
    """circle:2 is refused to 4 (not a follower); 1's and 3's circle:2 subscriptions on a end
    with unsubscribed when 1 unfollows 2 (reason unfollowed) and 2 blocks 3 (reason blocked),
    both written through b."""
    prefix, a, b = two_processes
    one, two, three, four = (f"{prefix}{n}" for n in range(1, 5))
    with trio.fail_after(TIMEOUT):
        async with (
            open_websocket_url(f"{a.ws_url}?token={token(four)}") as outsider,
            open_websocket_url(f"{a.ws_url}?token={token(one)}") as ws_one,
            open_websocket_url(f"{a.ws_url}?token={token(three)}") as ws_three,
        ):
            refused = await call(outsider, "subscribe", channel=f"circle:{two}")
            assert "result" in await call(ws_one, "subscribe", channel=f"circle:{two}")
            assert "result" in await call(ws_three, "subscribe", channel=f"circle:{two}")
            await rpc(b, "social.unfollow", follower=one, followee=two)
            unfollowed = await next_push(ws_one)
            await rpc(b, "social.block", user=two, blocked=three)
            blocked = await next_push(ws_three)

    assert refused["error"]["code"] == -32003
    assert refused["error"]["data"]["reason"] == "not a follower"
    assert unfollowed["method"] == blocked["method"] == "unsubscribed"
    assert unfollowed["params"] == {"channel": f"circle:{two}", "reason": "unfollowed"}
    assert blocked["params"] == {"channel": f"circle:{two}", "reason": "blocked"}
