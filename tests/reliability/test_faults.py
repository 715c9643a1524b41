"""Faults under load: two ``starling serve`` processes, a steady producer, recovering subscribers.

Each test runs real processes on a private Redis (``--appendonly yes
--appendfsync everysec``), a producer calling ``realtime.publish_many`` on both
at a steady rate, and subscribers on both that reconnect with ``since`` (and
reload when told they cannot recover); it breaks one thing mid-stream and
checks that no acknowledged event is silently lost (each is delivered, or
covered by a ``recovered: false`` / ``gap`` the subscriber reloaded after),
that offsets name the events the producer was told, and that the service
comes back by itself. Each prints its figures (tests/reliability/figures.py)
and writes them as JSON. ``STARLING_CHAOS=long`` (``make chaos``) runs the long
versions.

Reloads are counted, not failed (a known limit): Pub/Sub between processes is
fire-and-forget, so the batches one process announces while the other's relay
is down (after an outage one realtime subtree may come back before the other)
reach no one there, and that process's subscribers get a ``gap`` notice. The
Neo4j test cuts the session's Neo4j off behind a TCP proxy (connections
refused, as a stopped server's) instead of stopping it: other tests use it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.processes import load_graph, server_process, wait_healthy
from tests.reliability.figures import report
from tests.reliability.proxy import TcpProxy
from tests.reliability.redis_aof import AofRedis
from tests.reliability.scenario import Profile, run_with_fault, stop_servers

pytestmark = pytest.mark.redis


async def test_a_process_killed_leaves_no_subscriber_without_its_events(
    tmp_path: Path, aof_redis: AofRedis, chaos: Profile
) -> None:
    """After ``kill -9`` of one of two processes mid-stream, its subscribers recover on the other and every subscriber has every acknowledged event once, in offset order, or was told by a gap notice or ``recovered: false`` to reload it."""  # noqa: E501
    with (
        server_process(tmp_path, aof_redis.url, "a") as a,
        server_process(tmp_path, aof_redis.url, "b") as b,
    ):
        await wait_healthy(a.url)
        await wait_healthy(b.url)

        async def kill(extra: dict[str, Any]) -> float:
            a.process.kill()
            a.process.wait()
            return trio.current_time()

        result, _, subscribers = await run_with_fault("kill-9", chaos, [a.url, b.url], kill)
    report(result, tmp_path)
    moved = [s for s in subscribers if s.urls[0] == a.url]
    assert all(s.url == b.url for s in moved), [s.closes for s in moved]
    assert result.lost == 0, result.lost_examples
    assert result.wrong == result.late == 0
    assert result.delivered + result.reloaded == result.expected


async def _health(client: httpx.AsyncClient, url: str) -> int:
    try:
        return (await client.get(f"{url}/health", timeout=5.0)).status_code
    except httpx.TransportError:
        return 0


async def _until_health(urls: list[str], status: int, within: float) -> float:
    """Poll every server's /health until all answer ``status``; return when they did."""
    async with httpx.AsyncClient() as client:
        with trio.fail_after(within):
            while True:
                if all([await _health(client, url) == status for url in urls]):
                    return trio.current_time()
                await trio.sleep(0.2)


async def _observe_outage(urls: list[str], seconds: float, extra: dict[str, Any]) -> None:
    """For ``seconds``: when /health of every server turned 503 (``degraded_after_s``) and
    what a ``realtime.publish`` sent 0.5 s in answered (``error_during``)."""
    start = trio.current_time()

    async def degraded() -> None:
        await _until_health(urls, 503, within=seconds + 60)  # cancelled at `seconds`
        extra["degraded_after_s"] = round(trio.current_time() - start, 3)

    async def publish() -> None:
        await trio.sleep(0.5)
        reply = await _rpc(urls[0], "realtime.publish", {"channel": "post:x", "data": {}})
        extra["error_during"] = reply.get("error")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(degraded)
        nursery.start_soon(publish)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


async def _rpc(url: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=15.0) as client:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply: dict[str, Any] = (await client.post(f"{url}/rpc", json=body)).json()
        return reply


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_redis_restarted_degrades_then_recovers_without_losing_an_acknowledged_event(
    tmp_path: Path, aof_redis: AofRedis, chaos: Profile, how: str
) -> None:
    """While Redis (append-only file, fsync every second) is away, stopped (SIGTERM) or killed (SIGKILL), the servers answer /health 503 and publish -32001; after it restarts they serve again by themselves, and no acknowledged event is silently lost (each delivered once, in offset order, or covered by a gap notice)."""  # noqa: E501
    with (
        server_process(tmp_path, aof_redis.url, "a") as a,
        server_process(tmp_path, aof_redis.url, "b") as b,
    ):
        urls = [a.url, b.url]
        await wait_healthy(a.url)
        await wait_healthy(b.url)

        async def restart(extra: dict[str, Any]) -> float:
            stopped = trio.current_time()
            await trio.to_thread.run_sync(aof_redis.stop if how == "stop" else aof_redis.kill)
            await _observe_outage(urls, chaos.outage, extra)
            await trio.to_thread.run_sync(aof_redis.start)
            back = trio.current_time()
            healthy = await _until_health(urls, 200, within=60)
            extra.update(
                outage_s=round(back - stopped, 3),
                healthy_after_restart_s=round(healthy - back, 3),
            )
            return back

        name = "redis-restart" if how == "stop" else "redis-crash"
        result, _, _ = await run_with_fault(name, chaos, urls, restart)
        assert a.process.poll() is None  # never restarted
        assert b.process.poll() is None
    report(result, tmp_path)
    assert result.extra.get("degraded_after_s") is not None, result.extra
    assert (result.extra.get("error_during") or {}).get("code") == -32001, result.extra
    assert set(result.errors) <= {"-32001", "-32002"}, result.errors
    assert result.lost == 0, result.lost_examples
    assert result.wrong == result.late == 0
    assert result.delivered + result.reloaded == result.expected
    assert result.recovery_s is not None


async def test_the_network_to_redis_cut_for_seconds_loses_no_acknowledged_event(
    tmp_path: Path, aof_redis: AofRedis, chaos: Profile, nursery: trio.Nursery
) -> None:
    """With every connection to Redis stalled for 10 s (a partition: no byte passes, nothing is refused) the servers answer /health 503 and publish -32001, then serve again by themselves, and no acknowledged event is silently lost (each delivered once, in offset order, or covered by a gap notice)."""  # noqa: E501
    proxy = TcpProxy(aof_redis.port)
    await nursery.start(proxy.run)
    through = f"redis://127.0.0.1:{proxy.port}/0"
    with (
        server_process(tmp_path, through, "a") as a,
        server_process(tmp_path, through, "b") as b,
    ):
        urls = [a.url, b.url]
        await wait_healthy(a.url)
        await wait_healthy(b.url)

        async def partition(extra: dict[str, Any]) -> float:
            cut = trio.current_time()
            proxy.stall()
            await _observe_outage(urls, chaos.cut, extra)
            proxy.heal()
            healed = trio.current_time()
            healthy = await _until_health(urls, 200, within=60)
            extra.update(
                cut_s=round(healed - cut, 3),
                healthy_after_heal_s=round(healthy - healed, 3),
            )
            return healed

        result, _, _ = await run_with_fault("redis-network-cut", chaos, urls, partition)
        assert a.process.poll() is None  # never restarted
        assert b.process.poll() is None
        await stop_servers(a, b)
    report(result, tmp_path)
    assert result.extra.get("degraded_after_s") is not None, result.extra
    assert (result.extra.get("error_during") or {}).get("code") == -32001, result.extra
    assert set(result.errors) <= {"-32001", "-32002"}, result.errors
    assert result.lost == 0, result.lost_examples
    assert result.wrong == result.late == 0
    assert result.delivered + result.reloaded == result.expected
    assert result.recovery_s is not None


@pytest.mark.neo4j
async def test_neo4j_cut_off_answers_unavailable_then_serves_without_a_restart(
    tmp_path: Path, aof_redis: AofRedis, neo4j_url: str, chaos: Profile, nursery: trio.Nursery
) -> None:
    """With Neo4j unreachable (the session's server cut off behind a proxy: connections refused, as a stopped server's) social and feed calls answer -32001, and once it is reachable they serve again from the same processes while realtime events flow throughout, none lost."""  # noqa: E501
    prefix = f"nf{uuid.uuid4().hex[:6]}"
    users = [f"{prefix}u{i}" for i in range(40)]
    edges = "".join(f"{users[i]} {users[(i + 1) % len(users)]}\n" for i in range(len(users)))
    await load_graph(tmp_path, edges, graph_url=neo4j_url)
    proxy = TcpProxy(int(neo4j_url.rsplit(":", 1)[1]))
    await nursery.start(proxy.run)
    graph = f"bolt://127.0.0.1:{proxy.port}"
    fresh = iter(users)  # a user never ranked before: its feed needs the graph
    urls: list[str] = []

    async def social_and_feed(url: str) -> list[dict[str, Any]]:
        return [
            await _rpc(url, "social.counts", {"user": users[0]}),
            await _rpc(url, "feed.get", {"user": next(fresh), "limit": 10}),
        ]

    async def serving() -> bool:
        replies = [reply for url in urls for reply in await social_and_feed(url)]
        return all("result" in reply for reply in replies)

    with (
        server_process(tmp_path, aof_redis.url, "a", graph) as a,
        server_process(tmp_path, aof_redis.url, "b", graph) as b,
    ):
        urls[:] = [a.url, b.url]
        await wait_healthy(a.url)
        await wait_healthy(b.url)
        assert await serving()

        async def cut(extra: dict[str, Any]) -> float:
            start = trio.current_time()
            await proxy.cut()
            during = [reply for url in urls for reply in await social_and_feed(url)]
            extra["during"] = [reply.get("error", {}).get("code") for reply in during]
            extra["degraded_after_s"] = round(await _until_health(urls, 503, within=30) - start, 3)
            await trio.sleep_until(start + chaos.outage)
            await nursery.start(proxy.run)
            back = trio.current_time()
            with trio.fail_after(60):
                while True:  # as an operator would: poll until both serve
                    if await serving():
                        break
                    await trio.sleep(0.2)
            extra["serving_after_s"] = round(trio.current_time() - back, 3)
            extra["healthy_after_s"] = round(await _until_health(urls, 200, 60) - back, 3)
            extra["outage_s"] = round(back - start, 3)
            return back

        result, _, _ = await run_with_fault("neo4j-cut", chaos, urls, cut)
        assert a.process.poll() is None  # never restarted
        assert b.process.poll() is None
        await stop_servers(a, b)
    report(result, tmp_path)
    assert result.extra["during"] == [-32001] * 4, result.extra
    assert result.lost == 0, result.lost_examples
    assert result.wrong == result.late == 0
    assert result.delivered == result.expected  # realtime does not need the graph
    assert result.errors == {}
