"""Presence across processes: two ``starling serve`` on one Redis, one of them killed.

Real processes (the ``starling`` command), a real Redis, real WebSocket clients. The
servers run with ``--presence-expiry 3``; they start in real time, so waits are bounded
with ``fail_after`` rather than driven by a mock clock.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from auth.tokens import issue_token
from tests.processes import SECRET, Process, server_process, wait_healthy
from tests.ws_client import Client

pytestmark = pytest.mark.redis

EXPIRY = 3.0
"""Seconds (``--presence-expiry``) within which a killed process's users leave."""
SLACK = 0.5
"""Seconds allowed beyond the expiry for the leave to cross a socket and be read."""
LIVE = 2.0
"""Seconds a join may take to reach the other process (a Redis write and a Pub/Sub hop)."""


def connect(process: Process, user: str) -> Any:
    return open_websocket_url(f"{process.ws_url}?token={issue_token(SECRET.encode(), user)}")


def change(method: str, channel: str, user: str, connections: int) -> dict[str, Any]:
    params = {"channel": channel, "user": user, "connections": connections}
    return {"jsonrpc": "2.0", "method": method, "params": params}


async def test_a_killed_process_users_leave_the_others_within_the_expiry(
    tmp_path: Path, redis_url: str
) -> None:
    """A user subscribing with presence on process b joins at once for a presence
    subscriber on process a; after b is killed with SIGKILL (no goodbye), a's subscriber gets
    the user's leave within the expiry, and presence on a no longer lists the user."""
    channel = f"post:{uuid.uuid4().hex[:16]}"
    options = ("--presence-expiry", str(EXPIRY))
    with (
        server_process(tmp_path, redis_url, "a", options=options) as a,
        server_process(tmp_path, redis_url, "b", options=options) as b,
    ):
        await wait_healthy(a.url)
        await wait_healthy(b.url)
        with trio.fail_after(60):
            async with connect(a, "w") as watcher_ws:
                watcher = Client(watcher_ws)
                await watcher.call("subscribe", channel=channel, presence=True)
                own = await watcher.push()
                async with connect(b, "1") as member_ws:
                    member = Client(member_ws)
                    await member.call("subscribe", channel=channel, presence=True)
                    with trio.fail_after(LIVE):
                        joined = await watcher.push()
                    before = await watcher.call("presence", channel=channel)
                    b.process.kill()
                    b.process.wait()
                    killed = trio.current_time()
                    with trio.fail_after(EXPIRY + SLACK):
                        left = await watcher.push()
                    elapsed = trio.current_time() - killed
                    after = await watcher.call("presence", channel=channel)
                    stats = await watcher.call("presence_stats", channel=channel)

    assert own == change("join", channel, "w", 1)
    assert joined == change("join", channel, "1", 1)
    assert before["result"] == {
        "users": [{"user": "1", "connections": 1}, {"user": "w", "connections": 1}],
        "total": 2,
    }
    assert left == change("leave", channel, "1", 0)
    assert elapsed <= EXPIRY + SLACK
    assert after["result"] == {"users": [{"user": "w", "connections": 1}], "total": 1}
    assert stats["result"] == {"users": 1, "connections": 1}
