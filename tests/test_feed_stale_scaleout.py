"""Feed freshness across processes: two ``starling serve`` on one Redis, one notice per window.

Real processes (the ``starling`` command), a real Redis, real WebSocket clients;
the servers start in real time, so waits poll under a bound.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from auth.tokens import issue_token
from tests.processes import SECRET, load_graph, server_process, wait_healthy

pytestmark = pytest.mark.redis


async def rpc(client: httpx.AsyncClient, url: str, method: str, **params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply = (await client.post(f"{url}/rpc", json=body)).json()
    assert "result" in reply, reply
    return reply["result"]


def find_child(node: dict[str, Any], path: str) -> dict[str, Any]:
    """The health tree's node at ``path`` (``"realtime/feed_stale"``)."""
    for name in path.split("/"):
        node = next(child for child in node["children"] if child["id"] == name)
    return node


async def until_marker(ws: WebSocketConnection) -> list[dict[str, Any]]:
    """The publications up to the ``{"marker": true}`` one, notifications left out."""
    got: list[dict[str, Any]] = []
    while not got or got[-1]["data"] != {"marker": True}:
        frame = json.loads(await ws.get_message())
        for item in frame if isinstance(frame, list) else [frame]:
            if item["params"]["data"].get("type") != "notification":
                got.append(item["params"])
    return got


async def test_a_user_on_two_processes_is_told_of_a_post_once(
    tmp_path: Path, shared_redis: str
) -> None:
    """A post published through process A makes the author's follower, connected to both
    processes, stale: both sessions get the one feed.stale notice (one offset) and no second
    one from process B, which saw the post over Pub/Sub and lost the window's claim."""
    redis_url = shared_redis  # emptied
    # in process A's embedded graph
    await load_graph(tmp_path, "reader writer\n", data_dir=tmp_path / "a")
    with (
        server_process(tmp_path, redis_url, "a") as a,
        server_process(tmp_path, redis_url, "b") as b,
    ):
        await wait_healthy(a.url)
        await wait_healthy(b.url)
        token = issue_token(SECRET.encode(), "reader")
        with trio.fail_after(60):
            async with (
                open_websocket_url(f"{a.ws_url}?token={token}") as on_a,
                open_websocket_url(f"{b.ws_url}?token={token}") as on_b,
                httpx.AsyncClient() as client,
            ):
                for ws in (on_a, on_b):
                    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1,
                        "method": "subscribe", "params": {"channel": "user:reader"}}))  # fmt: skip
                    assert json.loads(await ws.get_message())["result"]["offset"] == 0
                post = {"id": "s1", "title": "One"}
                await rpc(client, a.url, "posts.publish", author="writer", post=post)
                while True:  # until both processes have claimed the window or lost it
                    figures = [
                        find_child(await rpc(client, url, "system.health"), "realtime/feed_stale")
                        for url in (a.url, b.url)
                    ]
                    if sum(f["sent"] + f["claims_lost"] for f in figures) == 2:
                        break
                    await trio.sleep(0.1)
                assert sum(f["sent"] for f in figures) == 1
                marker = await rpc(
                    client, b.url, "realtime.publish", channel="user:reader", data={"marker": True}
                )
                notice = {"type": "feed.stale", "new": 1, "reasons": ["followed_author"]}
                for ws in (on_a, on_b):
                    got = await until_marker(ws)
                    assert [p["data"] for p in got] == [notice, {"marker": True}]
                    assert got[0]["offset"] < got[1]["offset"] == marker["offset"]
