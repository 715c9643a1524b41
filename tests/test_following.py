"""The graph drives realtime on the embedded default: ``following:<me>``, ``circle:<author>``,
live revocation on unfollow and block (a real server in this process, real WebSocket clients).

Users 1..6 come from an edge list loaded by the CLI (1 follows 2 and 3). Activities are
``post:`` events with a ``type`` and the actor in ``user``, published with
``realtime.publish`` over HTTP as a service would (loopback needs no key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from actors.realtime.pipeline import RealtimeSettings
from tests.in_process import Server, load_edges, serving
from tests.ws_client import Client

TIMEOUT = 30.0
"""Seconds any one test may take."""


async def load_users(tmp_path: Path) -> Path:
    """A data directory whose graph holds users 1..6; 1 follows 2 and 3, 4 follows 5."""
    return await load_edges(tmp_path, "1 2\n1 3\n4 5\n5 6\n")


def connect(server: Server, user: str) -> Any:
    return server.connect(user)


async def rpc(server: Server, method: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=server.url) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply = (await http.post("/rpc", json=body)).json()
    assert "result" in reply, reply
    return reply["result"]


async def comment(server: Server, user: str, post: str, text: str) -> None:
    data = {"type": "comment", "user": user, "post": post, "text": text}
    await rpc(server, "realtime.publish", channel=f"post:{post}", data=data)


async def test_following_delivers_the_activities_of_followees_only(tmp_path: Path) -> None:
    """1 follows 2 and 3: following:1 gets their comments in offset order, with the author's
    display fields, and nothing of 4 (not followed) or of 1 itself."""
    directory = await load_users(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server, connect(server, "1") as ws:
            me = Client(ws)
            reply = await me.call("subscribe", channel="following:1")
            start = reply["result"]["offset"]
            await comment(server, "2", "p1", "from 2")
            await comment(server, "4", "p1", "from 4")
            await comment(server, "1", "p1", "my own")
            await comment(server, "3", "p2", "from 3")
            first, second = await me.push(), await me.push()
            rest = await me.quiet()

    assert [p["params"]["channel"] for p in (first, second)] == ["following:1"] * 2
    assert [p["params"]["offset"] for p in (first, second)] == [start + 1, start + 2]
    assert [p["params"]["data"]["text"] for p in (first, second)] == ["from 2", "from 3"]
    assert first["params"]["data"]["author"] == {"id": "2"}
    assert rest == []


async def test_only_the_user_may_subscribe_to_their_following_channel(tmp_path: Path) -> None:
    """following:2 is refused to user 1 with -32003, and nobody may publish on following:."""
    directory = await load_users(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server, connect(server, "1") as ws:
            reply = await Client(ws).call("subscribe", channel="following:2")
            async with httpx.AsyncClient(base_url=server.url) as http:
                body = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "realtime.publish",
                    "params": {"channel": "following:1", "data": {"type": "comment"}},
                }
                published = (await http.post("/rpc", json=body)).json()

    assert reply["error"]["code"] == -32003
    assert published["error"]["code"] == -32602
    assert "server's own" in published["error"]["data"]["detail"]


async def test_follow_and_unfollow_take_effect_on_a_live_subscription(tmp_path: Path) -> None:
    """After 1 follows 4, 4's next comment reaches following:1; after 1 unfollows 2, 2's does
    not, all without resubscribing."""
    directory = await load_users(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server, connect(server, "1") as ws:
            me = Client(ws)
            await me.call("subscribe", channel="following:1")
            await rpc(server, "social.follow", follower="1", followee="4")
            await rpc(server, "social.unfollow", follower="1", followee="2")
            await comment(server, "4", "p1", "from 4")
            await comment(server, "2", "p1", "from 2")
            got = await me.push()
            rest = await me.quiet()

    assert got["params"]["data"]["text"] == "from 4"
    assert rest == []


async def test_a_reconnect_recovers_the_missed_activities_exactly(tmp_path: Path) -> None:
    """A client that left following:1 after offset k recovers k+1.. with since, exactly."""
    directory = await load_users(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server:
            async with connect(server, "1") as ws:
                me = Client(ws)
                await me.call("subscribe", channel="following:1")
                await comment(server, "2", "p1", "seen")
                seen = (await me.push())["params"]
                epoch = (await me.call("subscribe", channel="following:1"))["result"]["epoch"]
            await comment(server, "2", "p1", "missed 1")
            await comment(server, "3", "p1", "missed 2")
            async with connect(server, "1") as ws:
                since = {"offset": seen["offset"], "epoch": epoch}
                reply = await Client(ws).call("subscribe", channel="following:1", since=since)

    result = reply["result"]
    assert result["recovered"] is True
    assert [p["offset"] for p in result["publications"]] == [seen["offset"] + 1, seen["offset"] + 2]
    assert [p["data"]["text"] for p in result["publications"]] == ["missed 1", "missed 2"]


async def test_after_the_grace_a_reconnect_is_told_it_cannot_recover(tmp_path: Path) -> None:
    """Past the grace nothing is fanned out to following:1, so a since from before answers
    recovered: false, never an empty recovery that hides what was missed."""
    directory = await load_users(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(directory, realtime=RealtimeSettings(following_grace=0.2)) as server:
            async with connect(server, "1") as ws:
                me = Client(ws)
                await me.call("subscribe", channel="following:1")
                await comment(server, "2", "p1", "seen")
                seen = (await me.push())["params"]
                epoch = (await me.call("subscribe", channel="following:1"))["result"]["epoch"]
            await trio.sleep(0.5)  # the cache lease expires in real time
            await comment(server, "2", "p1", "not fanned out")
            async with connect(server, "1") as ws:
                since = {"offset": seen["offset"], "epoch": epoch}
                reply = await Client(ws).call("subscribe", channel="following:1", since=since)

    assert reply["result"]["recovered"] is False
    assert reply["result"]["publications"] == []


async def test_circle_is_for_followers_and_an_unfollow_ends_it(tmp_path: Path) -> None:
    """circle:2 is refused to 4 (not a follower), granted to 1 (a follower) until 1 unfollows
    2: then 1 gets unsubscribed {channel, reason: unfollowed} and no more publications."""
    directory = await load_users(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server:
            async with connect(server, "4") as ws:
                refused = await Client(ws).call("subscribe", channel="circle:2")
            async with connect(server, "1") as ws:
                me = Client(ws)
                granted = await me.call("subscribe", channel="circle:2")
                await rpc(server, "realtime.publish", channel="circle:2", data={"n": 1})
                first = await me.push()
                await rpc(server, "social.unfollow", follower="1", followee="2")
                ended = await me.push()
                await rpc(server, "realtime.publish", channel="circle:2", data={"n": 2})
                rest = await me.quiet()

    assert refused["error"]["code"] == -32003
    assert refused["error"]["data"] == {"channel": "circle:2", "reason": "not a follower"}
    assert "result" in granted
    assert first["params"]["data"] == {"n": 1}
    assert ended == {
        "jsonrpc": "2.0",
        "method": "unsubscribed",
        "params": {"channel": "circle:2", "reason": "unfollowed"},
    }
    assert rest == []


async def test_a_block_ends_the_blocked_users_post_and_circle_subscriptions(
    tmp_path: Path,
) -> None:
    """When 2 blocks 1, 1's subscriptions to circle:2 and to 2's post end with unsubscribed
    (reason blocked), 1's other post stays, and subscribing to 2's post again is refused."""
    directory = await load_users(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server:
            mine = await rpc(server, "posts.publish", author="2", post={"title": "two's"})
            other = await rpc(server, "posts.publish", author="3", post={"title": "three's"})
            async with connect(server, "1") as ws:
                me = Client(ws)
                for channel in ("circle:2", f"post:{mine['post']}", f"post:{other['post']}"):
                    assert "result" in await me.call("subscribe", channel=channel)
                await me.quiet()
                await rpc(server, "social.block", user="2", blocked="1")
                ended = [await me.push(), await me.push()]
                again = await me.call("subscribe", channel=f"post:{mine['post']}")
                await comment(server, "3", other["post"], "still here")
                kept = await me.push()

    assert sorted((p["method"], p["params"]["channel"], p["params"]["reason"]) for p in ended) == [
        ("unsubscribed", "circle:2", "blocked"),
        ("unsubscribed", f"post:{mine['post']}", "blocked"),
    ]
    assert again["error"]["code"] == -32003
    assert again["error"]["data"]["reason"] == "blocked"
    assert kept["params"]["channel"] == f"post:{other['post']}"


async def test_a_user_following_thousands_and_an_author_with_many_followers_work(
    tmp_path: Path,
) -> None:
    """User big follows 3,000 users and author star has 50,000 followers, 2 of them
    listening: big receives the comment of its 3,000th followee, and star's comment goes to
    exactly its 2 listening followers (the rest cost nothing)."""
    lines = [f"big f{n}" for n in range(3000)] + [f"fan{n} star" for n in range(50_000)]
    directory = await load_edges(tmp_path, "\n".join(lines) + "\n")
    with trio.fail_after(TIMEOUT * 2):
        async with (
            serving(directory) as server,
            connect(server, "big") as big_ws,
            connect(server, "fan7") as fan7_ws,
            connect(server, "fan49999") as fan49999_ws,
        ):
            clients = [Client(ws) for ws in (big_ws, fan7_ws, fan49999_ws)]
            for client, user in zip(clients, ("big", "fan7", "fan49999"), strict=True):
                await client.call("subscribe", channel=f"following:{user}")
            await comment(server, "f2999", "p1", "from the 3,000th")
            await comment(server, "star", "p2", "from the star")
            got = [await client.push() for client in clients]
            stats = await rpc(server, "system.stats")

    assert got[0]["params"]["data"]["text"] == "from the 3,000th"
    assert [g["params"]["data"]["text"] for g in got[1:]] == ["from the star"] * 2
    assert stats["realtime"]["published"] == 2 + 3  # two post: events, three following: copies
