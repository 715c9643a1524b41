"""Starling on a real Redis Cluster (3 masters, 3 replicas): processes, partitions, failover.

The cluster is started by the tests (:func:`tests.services.redis_cluster`); the
processes are real ``starling serve`` commands with ``--redis-url
redis+cluster://…``; the clients are real WebSocket clients.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from redis.cluster import RedisCluster
from trio_websocket import WebSocketConnection, open_websocket_url

from actors.realtime.streams import GROUP, STREAM
from auth.tokens import issue_token
from stores.errors import BackendUnavailable
from stores.partitions import Partitions, key_slot_of
from stores.redis import RedisCache
from stores.redis_cluster import DEFAULT_PARTITIONS, RedisClusterBackend, parse_cluster_url
from tests.processes import SECRET, server_process, wait_healthy
from tests.redis_clients import client_for, flush

pytestmark = pytest.mark.redis


def cluster_client(url: str) -> RedisCluster:
    """redis-py's cluster client on the cluster of ``url``, with text replies."""
    client = client_for(url, decode_responses=True)
    assert isinstance(client, RedisCluster)
    return client


def pubs(frame: str | bytes) -> list[dict[str, Any]]:
    decoded = json.loads(frame)
    items = decoded if isinstance(decoded, list) else [decoded]
    return [item["params"] for item in items if item.get("method") in (None, "pub")]


async def subscribe(ws: WebSocketConnection, channels: list[str]) -> None:
    for number, channel in enumerate(channels):
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": number,
            "method": "subscribe", "params": {"channel": channel}}))  # fmt: skip
        reply = json.loads(await ws.get_message())
        assert reply["result"]["offset"] == 0, reply


async def rpc(client: httpx.AsyncClient, method: str, params: Any = None) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    reply = (await client.post("/rpc", json=body)).json()
    assert "result" in reply, reply
    return reply["result"]


async def test_three_processes_deliver_in_order_exactly_once_across_partitions(
    tmp_path: Path, redis_cluster_url: str
) -> None:
    """Events published through process B (``realtime.publish_many``, several partitions per
    call) and by a bare ``XADD`` to a channel's partition reach the subscribers of A and C
    exactly once, each channel in offset order, both seeing the same sequence; every entry
    is read by one process and acknowledged."""
    flush(redis_cluster_url)
    partitions = Partitions(DEFAULT_PARTITIONS)
    channels = [f"post:cluster-{i}" for i in range(12)]
    assert len({partitions.of(c) for c in channels}) == partitions.count  # in every partition
    token = issue_token(SECRET.encode(), "watcher")
    with (
        server_process(tmp_path, redis_cluster_url, "a") as a,
        server_process(tmp_path, redis_cluster_url, "b") as b,
        server_process(tmp_path, redis_cluster_url, "c") as c,
    ):
        for process in (a, b, c):
            await wait_healthy(process.url)
        with trio.fail_after(90):
            async with (
                open_websocket_url(f"{a.ws_url}?token={token}") as on_a,
                open_websocket_url(f"{c.ws_url}?token={token}") as on_c,
                httpx.AsyncClient(base_url=b.url) as client,
            ):
                for ws in (on_a, on_c):
                    await subscribe(ws, channels)
                rounds = 15
                for seq in range(rounds):
                    events = [{"channel": ch, "data": {"seq": seq}} for ch in channels]
                    accepted = (await rpc(client, "realtime.publish_many", {"events": events}))[
                        "published"
                    ]
                    assert [x["offset"] for x in accepted] == [seq + 1] * len(channels)
                producer = cluster_client(redis_cluster_url)
                try:
                    for channel in channels:
                        key = partitions.key(STREAM, partitions.of(channel))
                        producer.xadd(key, {"channel": channel, "data": json.dumps({"seq": -1})})
                finally:
                    producer.close()
                expected = len(channels) * (rounds + 1)
                received: dict[str, list[dict[str, Any]]] = {"a": [], "c": []}
                for name, ws in (("a", on_a), ("c", on_c)):
                    while len(received[name]) < expected:
                        received[name] += pubs(await ws.get_message())
                for name, got in received.items():
                    assert len(got) == expected, name
                    for channel in channels:
                        mine = [p for p in got if p["channel"] == channel]
                        assert [p["offset"] for p in mine] == list(range(1, rounds + 2)), channel
                        assert [p["data"]["seq"] for p in mine] == [*range(rounds), -1], channel
                by_channel = {
                    name: {ch: [p for p in got if p["channel"] == ch] for ch in channels}
                    for name, got in received.items()
                }
                assert by_channel["a"] == by_channel["c"]
                # Exactly once: nothing more arrives.
                with trio.move_on_after(1.0):
                    extra = pubs(await on_a.get_message())
                    pytest.fail(f"a duplicate arrived: {extra}")
            async with httpx.AsyncClient() as client:
                read = 0
                for process in (a, b, c):
                    body = {"jsonrpc": "2.0", "id": 1, "method": "system.stats"}
                    stats = (await client.post(f"{process.url}/rpc", json=body)).json()
                    read += stats["result"]["realtime"]["read"]
    assert read == expected  # each entry read by one process's nozzle
    admin = cluster_client(redis_cluster_url)
    try:
        pending = sum(admin.xpending(key, GROUP)["pending"] for key in partitions.keys(STREAM))
    finally:
        admin.close()
    assert pending == 0


def test_the_url_is_checked() -> None:
    """A cluster URL without nodes, with a database, or with a bad partition count is refused
    with a clear error."""
    from stores.errors import ConfigError

    for url, message in [
        ("redis+cluster://", "names at least one node"),
        ("redis+cluster://h:1/3", "only database 0"),
        ("redis+cluster://h:x", "host:port"),
        ("redis+cluster://h:1?partitions=0", "partitions must be"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_cluster_url(url)
    parsed = parse_cluster_url("redis+cluster://u:p%40ss@h1:7000,[::1]:7001?partitions=6")
    assert parsed.seeds == (("h1", 7000), ("::1", 7001))
    assert (parsed.username, parsed.password, parsed.partitions) == ("u", "p@ss", 6)


FAILOVER_CHANNELS = 12
FAILOVER_TICK = 0.02  # seconds between two publish_many calls of the producer


async def test_a_master_killed_mid_stream_fails_over_and_every_loss_is_told(
    tmp_path: Path, redis_cluster: Any
) -> None:
    """Kill the master that serves the batches' Pub/Sub topic (and a third of the partitions)
    while a producer publishes through process B and a subscriber listens on process A.

    Its replica is promoted; both processes find the new master by themselves (no restart);
    ``/health`` of A goes ``degraded`` during the outage and ``ok`` after; the partitions that
    moved start a new epoch, so a reconnect with ``since`` from before answers
    ``recovered: false`` there. What was lost is measured and printed; nothing accepted is
    missing from a channel whose recovery said ``recovered: true`` (no silent hole), and no
    offset names two publications in one epoch.
    """
    from tests.services import key_slot

    url = redis_cluster.url
    channels = [f"post:failover-{i}" for i in range(FAILOVER_CHANNELS)]
    token = issue_token(SECRET.encode(), "watcher")
    options = ("--monitor-interval", "0.5")
    with (
        server_process(tmp_path, url, "a", options=options) as a,
        server_process(tmp_path, url, "b", options=options) as b,
    ):
        for process in (a, b):
            await wait_healthy(process.url)
        accepted: list[tuple[str, int, str, int]] = []  # channel, offset, epoch, seq
        errors: list[tuple[float, str]] = []
        received: list[dict[str, Any]] = []
        gaps: list[dict[str, Any]] = []
        health: list[tuple[float, str]] = []
        epochs: dict[str, str] = {}
        start = trio.current_time()
        stop = trio.Event()
        back = trio.Event()  # /health said ok after the promotion
        promoted_at = [float("inf")]

        async def produce(client: httpx.AsyncClient) -> None:
            seq = 0
            while not stop.is_set():
                events = [{"channel": ch, "data": {"seq": seq}} for ch in channels]
                body = {"jsonrpc": "2.0", "id": seq, "method": "realtime.publish_many",
                        "params": {"events": events}}  # fmt: skip
                try:
                    reply = (await client.post("/rpc", json=body, timeout=10)).json()
                except httpx.HTTPError as exc:
                    errors.append((trio.current_time() - start, repr(exc)))
                else:
                    if "result" in reply:
                        for item in reply["result"]["published"]:
                            accepted.append((item["channel"], item["offset"], item["epoch"], seq))
                    else:
                        errors.append((trio.current_time() - start, reply["error"]["message"]))
                seq += 1
                await trio.sleep(FAILOVER_TICK)

        async def listen(ws: WebSocketConnection) -> None:
            while True:
                frame = json.loads(await ws.get_message())
                for item in frame if isinstance(frame, list) else [frame]:
                    if item.get("method") == "gap":
                        gaps.append(item["params"])
                    elif item.get("method") == "pub":
                        received.append(item["params"])

        async def watch_health(client: httpx.AsyncClient) -> None:
            while True:
                try:
                    status = (await client.get("/health")).json()["status"]
                except (httpx.HTTPError, ValueError, KeyError):
                    status = "unreachable"
                now = trio.current_time() - start
                health.append((now, status))
                if status == "ok" and now > promoted_at[0]:
                    back.set()
                await trio.sleep(0.25)

        with trio.fail_after(120):
            async with (
                open_websocket_url(f"{a.ws_url}?token={token}") as on_a,
                httpx.AsyncClient(base_url=b.url) as to_b,
                httpx.AsyncClient(base_url=a.url) as to_a,
                trio.open_nursery() as nursery,
            ):
                for number, channel in enumerate(channels):
                    await on_a.send_message(json.dumps({"jsonrpc": "2.0", "id": number,
                        "method": "subscribe", "params": {"channel": channel}}))  # fmt: skip
                    reply = json.loads(await on_a.get_message())
                    epochs[channel] = reply["result"]["epoch"]
                nursery.start_soon(listen, on_a)
                nursery.start_soon(watch_health, to_a)
                nursery.start_soon(produce, to_b)
                await trio.sleep(3)
                victim = redis_cluster.master_of(key_slot("starling:realtime"))
                killed_at = trio.current_time() - start
                await trio.to_thread.run_sync(redis_cluster.kill, victim)
                _, promotion = await trio.to_thread.run_sync(
                    redis_cluster.wait_promoted, victim, 30.0
                )
                # The process comes back by itself: /health says ok again.
                promoted_at[0] = killed_at + promotion
                await back.wait()
                recovered_at = trio.current_time() - start
                await trio.sleep(3)
                stop.set()
                await trio.sleep(2)  # the last publications reach the subscriber
                nursery.cancel_scope.cancel()
            # A reconnect with since = the last offset seen in the first epoch.
            async with open_websocket_url(f"{a.ws_url}?token={token}") as again:
                recovery: dict[str, dict[str, Any]] = {}
                for number, channel in enumerate(channels):
                    seen = [p for p in received if p["channel"] == channel]
                    first_epoch = [
                        o for c, o, e, _ in accepted if c == channel and e == epochs[channel]
                    ]
                    last = max((p["offset"] for p in seen if p["offset"] in first_epoch), default=0)
                    since = {"offset": last, "epoch": epochs[channel]}
                    params = {"channel": channel, "since": since}
                    await again.send_message(json.dumps({"jsonrpc": "2.0", "id": number,
                        "method": "subscribe", "params": params}))  # fmt: skip
                    recovery[channel] = json.loads(await again.get_message())["result"]
    # No offset names two publications in one epoch.
    by_position: dict[tuple[str, str, int], set[int]] = {}
    for channel, offset, epoch, seq in accepted:
        by_position.setdefault((channel, epoch, offset), set()).add(seq)
    assert all(len(seqs) == 1 for seqs in by_position.values())
    # Every accepted publication reached the subscriber, or its loss was told.
    got = {(p["channel"], p["data"]["seq"]) for p in received}
    recovered = {
        (channel, p["data"]["seq"])
        for channel, result in recovery.items()
        for p in result.get("publications", [])
    }
    told_channels = {c for c, result in recovery.items() if not result.get("recovered", True)}
    told_gaps = {
        (g["channel"], g["epoch"], offset)
        for g in gaps
        for offset in range(g["first"], g["last"] + 1)
    }
    lost = [
        (channel, offset, epoch, seq)
        for channel, offset, epoch, seq in accepted
        if (channel, seq) not in got and (channel, seq) not in recovered
    ]
    silent = [
        item
        for item in lost
        if item[0] not in told_channels and (item[0], item[2], item[1]) not in told_gaps
    ]
    moved = {c for c in channels if recovery[c]["epoch"] != epochs[c]}
    degraded = [t for t, status in health if status != "ok" and killed_at <= t <= recovered_at]
    print(
        f"\nfailover: promoted in {promotion:.2f} s; health degraded for "
        f"{(max(degraded) - min(degraded)) if degraded else 0:.2f} s; producer errors "
        f"{len(errors)} over {(errors[-1][0] - errors[0][0]) if errors else 0:.2f} s; "
        f"accepted {len(accepted)}, lost {len(lost)} (told: {len(lost) - len(silent)}), "
        f"channels with a new epoch {len(moved)}/{len(channels)}, told by recovered:false "
        f"{len(told_channels)}, gap notices {len(gaps)}"
    )
    assert silent == [], f"silent losses (channel, offset, epoch, seq): {silent[:10]}"
    assert degraded, f"health never showed the outage: {health}"
    assert moved, "no partition started a new epoch after the failover"
    assert told_channels >= moved, (told_channels, moved, recovery)
    assert health[-1][1] == "ok", health[-5:]


async def test_the_router_follows_a_moved_slot_and_skips_dead_seeds(redis_cluster_url: str) -> None:
    """A stale slot map (as after a resharding) is corrected by the MOVED answer; a dead node
    named first in the URL is skipped; a cluster with no live node is a clear outage."""
    live = redis_cluster_url.removeprefix("redis+cluster://")
    backend = RedisClusterBackend.from_cluster_url(
        f"redis+cluster://127.0.0.1:1,{live}", max_connections=2
    )
    try:
        router = backend.router
        key = "starling-test:moved"
        right = await router.node(key)
        wrong = next(node for node in router.masters() if node != right)
        router._slots[key_slot_of(key)] = wrong  # a stale map
        replies = await backend.execute([("SET", key, "1"), ("GET", key)], key=key)
        assert replies == [b"OK", b"1"]
        assert await router.node(key) == right
        assert router.reloads == 2
    finally:
        await backend.aclose()
    dead = RedisClusterBackend.from_cluster_url("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    try:
        with pytest.raises(BackendUnavailable, match=r"no Redis Cluster node answered: 127\.0"):
            await dead.ping()
        with pytest.raises(BackendUnavailable, match="Redis Cluster cannot be connected"):
            await RedisCache(dead).get("x")  # redis-py's cluster client, in a worker thread
    finally:
        await dead.aclose()
