"""A client that says whether the whole server still serves, for the reliability tests.

Not a test module: the reliability tests import :class:`Probe` from here and
get one from the ``probe`` fixture (``conftest.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from auth.tokens import issue_token
from tests.in_process import Server
from tests.ws_client import Client

__all__ = ["BOUND", "Probe"]

SECONDS: Final = 1.0
BOUND: Final = 60 * SECONDS
"""Longest wait for the server to serve again: a bound against hanging, never a speed
claim (the slowest restart backs off 15 s at most, stores'; the machine is shared)."""
POLL: Final = 0.05 * SECONDS
"""Seconds between two tries of a step that did not succeed yet."""
UNAVAILABLE: Final = -32001
"""The JSON-RPC error of an actor that is restarting (retried, not a failure)."""


@dataclass
class Probe:
    """The server under test, and what shows it serves.

    Attributes:
        server: the running server (``tests.in_process.serving``).
        http: an HTTP client that opens a connection per request (no keep-alive): a
            request after a restart of ``api`` never meets a connection it closed.
    """

    server: Server
    http: httpx.AsyncClient
    rounds: int = 0

    async def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The JSON-RPC reply (``result`` or ``error``) to one call over ``POST /rpc``."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        response = await self.http.post("/rpc", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def result(self, method: str, params: dict[str, Any]) -> Any:
        """The ``result`` of one call, which must succeed."""
        reply = await self.rpc(method, params)
        assert "result" in reply, reply
        return reply["result"]

    async def node(self, path: str) -> dict[str, Any]:
        """The node at ``path`` (``"root"``: the root) in ``system.health``'s tree."""
        node: dict[str, Any] = await self.result("system.health", {})
        if path == "root":
            return node
        for step in path.split("/"):
            (node,) = [child for child in node["children"] if child["id"] == step]
        return node

    async def paths(self) -> list[str]:
        """Every path of the tree, depth first (parents before their children)."""
        return list(_paths(await self.result("system.health", {}), ""))

    async def serves(self) -> None:
        """Wait until ``/health`` answers 200, a JSON-RPC read answers, and a publication
        reaches a WebSocket subscriber, each step retried until it succeeds.

        Raises:
            trio.TooSlowError: not within :data:`BOUND` seconds.
        """
        with trio.fail_after(BOUND):
            await _until(self._healthy)
            await _until(self._reads)
            await _until(self._delivers)

    async def settled(self, path: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The node at ``path`` once it runs and ``check(node)`` holds (polled).

        Raises:
            trio.TooSlowError: not within :data:`BOUND` seconds.
        """
        with trio.fail_after(BOUND):
            while True:
                try:
                    node = await self.node(path)
                except httpx.TransportError:  # api restarting
                    node = {}
                if node.get("state") == "running" and check(node):
                    return node
                await trio.sleep(POLL)

    def operator_token(self) -> str:
        """An operator's WebSocket token for this server."""
        return issue_token(self.server.secret, "ops", ttl_seconds=3600, operator=True)

    async def _healthy(self) -> bool:
        try:
            return (await self.http.get("/health")).status_code == 200
        except httpx.TransportError:
            return False

    async def _reads(self) -> bool:
        try:
            reply = await self.rpc("social.counts", {"user": "a"})
        except httpx.TransportError:
            return False
        if "error" in reply:
            assert reply["error"]["code"] == UNAVAILABLE, reply
            return False
        return True

    async def _delivers(self) -> bool:
        """Subscribe to a fresh channel, publish on it over ``/rpc``, read the pub."""
        self.rounds += 1
        channel = f"post:probe-{self.rounds}"
        try:
            async with self.server.connect("a") as ws:
                client = Client(ws)
                if "error" in await client.call("subscribe", channel=channel):
                    return False
                data = {"round": self.rounds}
                reply = await self.rpc("realtime.publish", {"channel": channel, "data": data})
                if "error" in reply:
                    assert reply["error"]["code"] == UNAVAILABLE, reply
                    return False
                push = await client.push()
        except (HandshakeError, ConnectionClosed, OSError, httpx.TransportError):
            return False
        assert push["method"] == "pub", push
        assert (push["params"]["channel"], push["params"]["data"]) == (channel, data), push
        return True


async def _until(step: Callable[[], Awaitable[bool]]) -> None:
    # Polling: what the step waits for (a restart, over the network) has no event to await.
    while not await step():  # noqa: ASYNC110
        await trio.sleep(POLL)


def _paths(node: dict[str, Any], prefix: str) -> Iterator[str]:
    for child in node.get("children", []):
        path = f"{prefix}/{child['id']}" if prefix else child["id"]
        yield path
        yield from _paths(child, path)
