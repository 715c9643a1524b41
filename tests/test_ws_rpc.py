"""JSON-RPC methods over ``/ws`` on a real server: a service pipelines its calls on one
connection and gets the same answers ``POST /rpc`` gives; a user's token calls only what
acts for that user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from auth.tokens import issue_token
from client import websocket_url
from tests.in_process import Server, load_edges, serving

TIMEOUT = 30.0
"""Seconds any one test may take."""
FOLLOWERS = 40


async def load_users(tmp_path: Path) -> Path:
    """A data directory whose graph holds users 1..41 and 100 (an edge list loaded by the CLI)."""
    lines = [f"{i} {i + 1}" for i in range(1, FOLLOWERS + 1)] + ["100 1"]
    return await load_edges(tmp_path, "\n".join(lines) + "\n")


def request(id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


async def receive(ws: WebSocketConnection) -> Any:
    return json.loads(await ws.get_message())


async def connect(server: Server, token: str) -> Any:
    return open_websocket_url(f"{websocket_url(server.url)}?token={token}")


async def test_a_service_pipelines_calls_and_gets_what_http_answers(tmp_path: Path) -> None:
    """40 follows sent at once on one connection all succeed (replies matched by id), and a
    batch of a read, bad params, an unknown method and system.health is answered as one
    array, the read equal to POST /rpc's answer."""
    directory = await load_users(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server:
            token = issue_token(server.secret, "feed-service", service=True)
            async with await connect(server, token) as ws:
                for i in range(1, FOLLOWERS + 1):
                    follow = {"follower": str(i), "followee": "100"}
                    await ws.send_message(json.dumps(request(i, "social.follow", follow)))
                replies = [await receive(ws) for _ in range(FOLLOWERS)]
                assert sorted(r["id"] for r in replies) == list(range(1, FOLLOWERS + 1))
                assert all(r["result"] == {"created": True} for r in replies), replies

                batch = [
                    request(41, "social.counts", {"user": "100"}),
                    request(42, "social.counts", {"user": 5}),
                    request(43, "social.nope", {}),
                    request(44, "system.health", {}),
                ]
                await ws.send_message(json.dumps(batch))
                counts, bad, unknown, health = await receive(ws)

            async with httpx.AsyncClient(base_url=server.url) as http:
                posted = await http.post("/rpc", json=request(41, "social.counts", {"user": "100"}))

    assert (
        counts
        == posted.json()
        == {
            "jsonrpc": "2.0",
            "result": {"following": 1, "followers": FOLLOWERS},
            "id": 41,
        }
    )
    assert (bad["id"], bad["error"]["code"]) == (42, -32602)
    assert unknown["error"] == {
        "code": -32601,
        "message": "Method not found",
        "data": {"method": "social.nope"},
    }
    assert health["result"]["status"] == "ok"


async def test_a_users_token_calls_only_what_acts_for_that_user(tmp_path: Path) -> None:
    """User 1 may follow as 1 and read anyone's counts; following as 2 and system.stats get
    -32003."""
    directory = await load_users(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server, await connect(server, server.token("1")) as ws:
            await ws.send_message(
                json.dumps(
                    [
                        request(1, "social.follow", {"follower": "1", "followee": "3"}),
                        request(2, "social.follow", {"follower": "2", "followee": "3"}),
                        request(3, "system.stats", {}),
                    ]
                )
            )
            mine, theirs, stats = await receive(ws)
            # The calls of a batch run concurrently: read after the batch's reply.
            await ws.send_message(json.dumps(request(4, "social.counts", {"user": "3"})))
            counts = await receive(ws)

    assert mine["result"] == {"created": True}
    assert theirs["error"]["code"] == stats["error"]["code"] == -32003
    assert theirs["error"]["data"]["reason"] == (
        "social.follow acts for follower = the token's user only"
    )
    assert counts["result"] == {"following": 1, "followers": 2}  # 3 → 4; 2 → 3 and 1 → 3
