"""A graph backend outage is a reply, not a crash loop, and the service recovers by itself.

A TCP proxy sits between the Neo4j driver and the real Neo4j server of the
test session. Cutting it (listener and open connections closed) makes the
backend unreachable, as a dead server or a network partition would;
restoring it on the same port brings the backend back.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from protocols.methods import CallContext, Services, build_dispatcher
from server import serve
from settings import ServeOptions, Settings
from stores.neo4j import Neo4jGraph
from tests.reliability.proxy import TcpProxy
from tests.social_world import running_social

pytestmark = pytest.mark.neo4j


async def test_neo4j_outage_is_backend_unavailable_then_recovers(
    neo4j_url: str, nursery: trio.Nursery
) -> None:
    """While Neo4j is unreachable every method gets -32001 and no actor restarts; then it serves again."""  # noqa: E501
    proxy = TcpProxy(int(neo4j_url.rsplit(":", 1)[1]))
    await nursery.start(proxy.run)
    store = await Neo4jGraph.open(
        f"bolt://127.0.0.1:{proxy.port}", connect_timeout=1.0, max_retry_time=0.0
    )
    prefix = uuid.uuid4().hex[:8]
    a, b = f"{prefix}:a", f"{prefix}:b"
    await store.import_nodes("User", [a, b])
    await store.import_relationships("FOLLOWS", [(a, b)])
    try:
        async with running_social(store) as social:
            rpc = build_dispatcher(
                Services(tree=social.supervisor.statistics, social=social.handle)
            )

            async def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
                body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
                with trio.fail_after(20):
                    reply = await rpc.handle(json.dumps(body).encode(), CallContext("127.0.0.1"))
                assert reply is not None
                decoded: dict[str, Any] = json.loads(reply)
                return decoded

            assert (await call("social.counts", {"user": a}))["result"]["following"] == 1
            await proxy.cut()
            outage = [
                await call("social.counts", {"user": a}),
                await call("social.followers", {"user": b, "limit": 1000}),
                await call("social.follow", {"follower": b, "followee": a}),
                await call("posts.publish", {"author": a, "post": {"title": "t"}}),
            ]
            for reply in outage:
                assert reply["error"]["code"] == -32001, reply
                assert reply["error"]["message"] == "backend unavailable"
            tree = social.supervisor.statistics()
            assert tree.is_healthy()
            assert [child.restarts for child in tree.children] == [0] * len(tree.children)

            await nursery.start(proxy.run)
            assert (await call("social.follow", {"follower": b, "followee": a}))["result"] == {
                "created": True
            }
            assert (await call("social.counts", {"user": a}))["result"] == {
                "following": 1,
                "followers": 1,
            }
    finally:
        await store.aclose()


async def test_a_read_after_the_server_dropped_its_connections_answers(
    neo4j_url: str, nursery: trio.Nursery
) -> None:
    """A read (auto-commit, no driver retry) after Neo4j dropped every pooled connection answers
    on a fresh connection: the pool discards the dead ones."""
    proxy = TcpProxy(int(neo4j_url.rsplit(":", 1)[1]))
    await nursery.start(proxy.run)
    store = await Neo4jGraph.open(
        f"bolt://127.0.0.1:{proxy.port}", connect_timeout=1.0, max_retry_time=0.0
    )
    try:
        session = store.session()
        assert (await session.fetch("RETURN 1 AS one")).rows == [[1]]
        await proxy.cut()
        await nursery.start(proxy.run)

        assert (await session.fetch("RETURN 2 AS two")).rows == [[2]]
    finally:
        await store.aclose()


async def test_dead_graph_backend_shows_degraded_then_recovers(
    neo4j_url: str, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """With Neo4j cut off /health turns 503 with the graph monitor down; it turns 200 again, same process."""  # noqa: E501
    proxy = TcpProxy(int(neo4j_url.rsplit(":", 1)[1]))
    await nursery.start(proxy.run)
    settings = Settings(
        data_dir=tmp_path, graph_url=f"bolt://127.0.0.1:{proxy.port}", redis_url="memory://"
    )
    options = ServeOptions(port=0, readers=2, monitor_interval=0.2)
    root = await nursery.start(serve, settings, options)
    (api,) = [child for child in root.statistics().children if child.id == "api"]
    async with httpx.AsyncClient(base_url=api.detail.binds[0]) as client:

        async def health_until(status: int) -> dict[str, Any]:
            # Polls as an operator would: the monitor's pings run on real time.
            with trio.fail_after(30):
                while True:
                    response = await client.get("/health")
                    if response.status_code == status:
                        tree: dict[str, Any] = response.json()
                        return tree
                    await trio.sleep(0.1)

        await health_until(200)
        await proxy.cut()
        degraded = await health_until(503)
        stores = degraded["children"][0]
        assert stores["id"] == "stores"
        assert {child["id"]: child["state"] for child in stores["children"]}["graph"] != "running"
        await nursery.start(proxy.run)
        healthy = await health_until(200)
        assert (
            healthy["children"][0]["restarts_total"]
            + sum(child["restarts_total"] for child in healthy["children"][0]["children"])
            >= 1
        )
        body = {"jsonrpc": "2.0", "id": 1, "method": "system.stats"}
        assert (await client.post("/rpc", json=body)).status_code == 200
    root.request_stop()


async def test_a_graph_ruled_subscribe_answers_unavailable_in_an_outage(
    neo4j_url: str, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """With Neo4j cut off, subscribing to a circle: channel (a graph read) answers -32001 and
    keeps the WebSocket open; once Neo4j is back the same request gets the graph's answer."""
    from trio_websocket import open_websocket_url

    from auth.tokens import issue_token, load_secret

    proxy = TcpProxy(int(neo4j_url.rsplit(":", 1)[1]))
    await nursery.start(proxy.run)
    settings = Settings(
        data_dir=tmp_path, graph_url=f"bolt://127.0.0.1:{proxy.port}", redis_url="memory://"
    )
    root = await nursery.start(serve, settings, ServeOptions(port=0, readers=2))
    (api,) = [child for child in root.statistics().children if child.id == "api"]
    url = api.detail.binds[0].replace("http", "ws", 1) + "/ws"
    token = issue_token(load_secret(tmp_path), f"outage-{uuid.uuid4().hex[:8]}")
    subscribe = {"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                 "params": {"channel": "circle:nobody-here"}}  # fmt: skip
    with trio.fail_after(60):
        async with open_websocket_url(f"{url}?token={token}") as ws:
            await proxy.cut()
            await ws.send_message(json.dumps(subscribe))
            during = json.loads(await ws.get_message())
            await nursery.start(proxy.run)
            while True:
                await ws.send_message(json.dumps(subscribe))
                after = json.loads(await ws.get_message())
                if after["error"]["code"] != -32001:
                    break
                await trio.sleep(0.2)
    root.request_stop()

    assert during["error"]["code"] == -32001
    assert during["error"]["data"]["channel"] == "circle:nobody-here"
    assert after["error"]["code"] == -32003
    assert after["error"]["data"]["reason"] == "not a follower"
