"""Presence on a real server in this process, with real WebSocket clients: ``subscribe
{channel, presence: true}``, the ``join``/``leave`` pushes, ``presence`` and
``presence_stats``, and the ``circle:`` rules applied to them.

Users 1..4 come from an edge list loaded by the CLI (1 follows 2); the presence
subscriber is user 2 (``w`` on a ``post:`` channel, where anyone may read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.in_process import Server, load_edges, serving
from tests.ws_client import Client

TIMEOUT = 30.0
"""Seconds any one test may take."""


async def load_users(tmp_path: Path) -> Path:
    """A data directory whose graph holds users 1..4; 1 follows 2."""
    return await load_edges(tmp_path, "1 2\n3 4\n")


def connect(server: Server, user: str) -> Any:
    return server.connect(user)


def change(method: str, channel: str, user: str, connections: int) -> dict[str, Any]:
    params = {"channel": channel, "user": user, "connections": connections}
    return {"jsonrpc": "2.0", "method": method, "params": params}


async def stats_until(watcher: Client, channel: str, expected: dict[str, int]) -> None:
    """Ask ``presence_stats`` until it answers ``expected`` (a close reaches the server
    after the client's close handshake)."""
    while True:  # the server's side of a close is not observable from the client: poll
        if (await watcher.call("presence_stats", channel=channel))["result"] == expected:
            return
        await trio.sleep(0.01)


async def test_tabs_of_one_user_join_once_and_leave_with_the_last(tmp_path: Path) -> None:
    """On post:p, a presence subscriber gets its own join after its reply, then join(1,
    connections 1), no join for user 1's second tab, join(2), and leave(1) only once both of
    1's tabs closed, then leave(2) on unsubscribe: in that order, nothing else; presence and
    presence_stats count the tabs."""
    channel = "post:p"
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path / "data") as server, connect(server, "w") as ws:
            watcher = Client(ws)
            reply = await watcher.call("subscribe", channel=channel, presence=True)
            pushed_before_reply = watcher.received
            async with connect(server, "1") as tab_a, connect(server, "1") as tab_b:
                for tab in (tab_a, tab_b):
                    assert "result" in await Client(tab).call(
                        "subscribe", channel=channel, presence=True
                    )
                async with connect(server, "2") as other_ws:
                    other = Client(other_ws)
                    await other.call("subscribe", channel=channel, presence=True)
                    listed = await watcher.call("presence", channel=channel)
                    counted = await watcher.call("presence_stats", channel=channel)
                    await tab_a.aclose()
                    await stats_until(watcher, channel, {"users": 3, "connections": 3})
                    await other.call("unsubscribe", channel=channel)
            await stats_until(watcher, channel, {"users": 1, "connections": 1})
            pushes = await watcher.quiet()

    assert reply["result"]["channel"] == channel
    assert pushed_before_reply == 0
    assert pushes == [
        change("join", channel, "w", 1),
        change("join", channel, "1", 1),
        change("join", channel, "2", 1),
        change("leave", channel, "2", 0),
        change("leave", channel, "1", 0),
    ]
    assert listed["result"] == {
        "users": [
            {"user": "1", "connections": 2},
            {"user": "2", "connections": 1},
            {"user": "w", "connections": 1},
        ],
        "total": 3,
    }
    assert counted["result"] == {"users": 3, "connections": 4}


async def test_a_plain_subscriber_neither_counts_nor_hears_presence(tmp_path: Path) -> None:
    """A subscription without presence: true is not in the presence and gets no join or
    leave, while presence may still be asked."""
    channel = "post:q"
    with trio.fail_after(TIMEOUT):
        async with (
            serving(tmp_path / "data") as server,
            connect(server, "w") as plain_ws,
            connect(server, "1") as member_ws,
        ):
            plain = Client(plain_ws)
            await plain.call("subscribe", channel=channel)
            await Client(member_ws).call("subscribe", channel=channel, presence=True)
            listed = await plain.call("presence", channel=channel)
            pushes = await plain.quiet(0.3)

    assert listed["result"] == {"users": [{"user": "1", "connections": 1}], "total": 1}
    assert pushes == []


async def test_circle_presence_is_for_followers_and_ends_with_an_unfollow(tmp_path: Path) -> None:
    """circle:2's presence is refused to 3 (not a follower) like its subscription, granted
    to 1 (a follower), and 1's unfollow ends 1's presence: 2 gets leave(1)."""
    directory = await load_users(tmp_path)
    channel = "circle:2"
    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server:
            async with connect(server, "3") as ws:
                stranger = Client(ws)
                refused_read = await stranger.call("presence", channel=channel)
                refused_stats = await stranger.call("presence_stats", channel=channel)
                refused_subscribe = await stranger.call("subscribe", channel=channel, presence=True)
            async with connect(server, "2") as author_ws, connect(server, "1") as follower_ws:
                author, follower = Client(author_ws), Client(follower_ws)
                await author.call("subscribe", channel=channel, presence=True)
                granted = await follower.call("subscribe", channel=channel, presence=True)
                read = await follower.call("presence", channel=channel)
                async with httpx.AsyncClient(base_url=server.url) as http:
                    body = {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "social.unfollow",
                        "params": {"follower": "1", "followee": "2"},
                    }
                    assert "result" in (await http.post("/rpc", json=body)).json()
                follower_pushes = [await follower.push() for _ in range(2)]
                author_pushes = [await author.push() for _ in range(3)]

    for refused in (refused_read, refused_stats, refused_subscribe):
        assert refused["error"]["code"] == -32003
        assert refused["error"]["data"] == {"channel": channel, "reason": "not a follower"}
    assert "result" in granted
    assert read["result"]["total"] == 2
    assert follower_pushes == [
        change("join", channel, "1", 1),
        {
            "jsonrpc": "2.0",
            "method": "unsubscribed",
            "params": {"channel": channel, "reason": "unfollowed"},
        },
    ]
    assert author_pushes == [
        change("join", channel, "2", 1),
        change("join", channel, "1", 1),
        change("leave", channel, "1", 0),
    ]
