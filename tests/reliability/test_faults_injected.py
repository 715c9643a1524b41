"""Realtime actors crashed on purpose under load (``system.fault``, ``--fault-injection``).

Two ``starling serve`` processes on a private Redis, the producer and the
recovering subscribers of ``test_faults.py`` (tests/reliability/scenario.py);
mid-stream one process's transformer, publisher, nozzle or relay raises an
injected fault in its next message or run loop and its supervisor restarts it
(and, ``rest_for_one``, the stages after it). Nothing acknowledged may be
silently lost: each subscriber of either process gets every event once, in
offset order, except the offsets a ``gap`` notice told it to reload.

What the restarts cost (known limits, counted as ``reloads``): Pub/Sub is
fire-and-forget, so the batches the other process announces while this one's
relay is down (a relay crash, or a publisher crash, which restarts the relay
after it) reach no one here; and the batches a transformer had delivered but
not yet announced and acknowledged when it was stopped stay pending, to be
reclaimed after 30 s, long after the other process's reorder buffer skipped
their offsets (0.5 s). Either way the subscribers get a ``gap`` notice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.processes import server_process, wait_healthy
from tests.reliability.figures import report
from tests.reliability.redis_aof import AofRedis
from tests.reliability.scenario import Profile, run_with_fault

pytestmark = pytest.mark.redis


def _restarts(tree: dict[str, Any], path: str) -> int:
    """``restarts_total`` of the child at ``path`` (ids joined by ``/``) in a /health tree."""
    node = tree
    for name in path.split("/"):
        (node,) = [child for child in node["children"] if child["id"] == name]
    return int(node["restarts_total"])


@pytest.mark.parametrize(
    "path",
    ["realtime/transformer-0", "realtime/publisher", "realtime/nozzle", "realtime/relay"],
)
async def test_a_realtime_actor_crashed_under_load_loses_nothing(
    tmp_path: Path, aof_redis: AofRedis, chaos: Profile, path: str
) -> None:
    """A realtime stage (transformer, publisher, nozzle, relay) of one process crashed by an injected fault while events flow is restarted, and every subscriber of both processes gets every acknowledged event exactly once, in offset order, or a gap notice covering it."""  # noqa: E501
    options = ("--fault-injection",)
    with (
        server_process(tmp_path, aof_redis.url, "a", options=options) as a,
        server_process(tmp_path, aof_redis.url, "b", options=options) as b,
    ):
        await wait_healthy(a.url)
        await wait_healthy(b.url)

        async def crash(extra: dict[str, Any]) -> float:
            async with httpx.AsyncClient(base_url=a.url, timeout=15) as client:
                before = _restarts((await client.get("/health")).json(), path)
                body = {"jsonrpc": "2.0", "id": 1, "method": "system.fault",
                        "params": {"path": path, "kind": "handler"}}  # fmt: skip
                injected = trio.current_time()
                reply = (await client.post("/rpc", json=body)).json()
                assert "result" in reply, reply
                with trio.fail_after(60):
                    while True:
                        health = await client.get("/health")
                        if health.status_code == 200 and _restarts(health.json(), path) > before:
                            break
                        await trio.sleep(0.05)
                extra["restarted_after_s"] = round(trio.current_time() - injected, 3)
            return injected

        name = "fault-" + path.rsplit("/", 1)[1]
        result, _, _ = await run_with_fault(name, chaos, [a.url, b.url], crash)
        assert a.process.poll() is None  # the fault was answered inside the process
        assert b.process.poll() is None
    report(result, tmp_path)
    assert result.lost == 0, result.lost_examples
    assert result.wrong == 0
    assert result.duplicated == result.late == 0
    assert set(result.reload_reasons) <= {"gap"}, result.reload_reasons
    assert result.delivered + result.reloaded == result.expected
    assert set(result.errors) <= {"-32002"}, result.errors  # a receipt lost with the batch
