"""A test client of ``/ws``: JSON-RPC requests with ids, server pushes kept in arrival order.

Not a test module: the realtime tests that speak to a live server (in this process or
another) import :class:`Client` from here, never from one another.
"""

from __future__ import annotations

import json
from typing import Any

import trio
from trio_websocket import WebSocketConnection

__all__ = ["QUIET", "Client"]

QUIET = 1.0
"""Seconds :meth:`Client.quiet` waits to be sure nothing more arrives."""


class Client:
    """One WebSocket connection: :meth:`call` answers a request by its id; the pushes that
    arrive meanwhile wait in :attr:`pushes` for :meth:`push`, in the order they came.

    Attributes:
        received: pushes received so far (read it after a reply: the pushes that came
            before the reply are counted in it, the ones after are not).
    """

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.pushes: list[dict[str, Any]] = []
        self.received = 0
        self._ids = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send ``method`` with ``params`` and return its reply (``result`` or ``error``)."""
        self._ids += 1
        request = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}
        await self.ws.send_message(json.dumps(request))
        while True:
            message = json.loads(await self.ws.get_message())
            if message.get("id") == self._ids:
                return dict(message)
            self._keep(message)

    async def push(self) -> dict[str, Any]:
        """The next push (pub, join, leave, unsubscribed …), waiting for it."""
        if self.pushes:
            return self.pushes.pop(0)
        message = dict(json.loads(await self.ws.get_message()))
        self.received += 1
        return message

    async def quiet(self, seconds: float = QUIET) -> list[dict[str, Any]]:
        """Every push waiting or arriving within ``seconds``."""
        with trio.move_on_after(seconds):
            while True:
                self._keep(json.loads(await self.ws.get_message()))
        pushes, self.pushes = self.pushes, []
        return pushes

    def _keep(self, message: dict[str, Any]) -> None:
        self.received += 1
        self.pushes.append(message)
