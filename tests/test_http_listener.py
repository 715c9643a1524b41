"""The ``api`` listener (``protocols.http.HttpServer``) across restarts and connection failures."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import protocols.http
from protocols.http import HttpServer


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def listener() -> HttpServer:
    app = Starlette(routes=[Route("/ok", ok)])
    return HttpServer(app, host="127.0.0.1", port=0, graceful_timeout=1.0)


async def run_once(server: HttpServer, ended: trio.Event, *, task_status: Any) -> None:
    await server.run(task_status=task_status)
    ended.set()


async def test_a_restart_keeps_the_port_and_serves_who_connected_meanwhile() -> None:
    """After ``request_restart`` the next run serves the same port on the same socket: a
    client that connects while the listener is stopped waits in the backlog and is
    answered once it runs again; ``request_stop`` then closes the socket."""
    server = listener()
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        ended = trio.Event()
        await nursery.start(run_once, server, ended)
        (url,) = server.binds
        server.request_restart()
        await ended.wait()
        answers: list[int] = []
        answered = trio.Event()

        async def get() -> None:
            answers.append((await client.get(f"{url}/ok")).status_code)
            answered.set()

        nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()  # sent, waiting for the answer
        assert answers == []
        ended = trio.Event()
        await nursery.start(run_once, server, ended)
        assert server.binds == (url,)
        with trio.fail_after(10):
            await answered.wait()
        assert answers == [200]
        server.request_stop()
        await ended.wait()
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/ok")


async def test_a_connection_that_fails_ends_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug met while serving one connection closes that connection only: the listener
    keeps running and answers the next one."""
    real = protocols.http.TCPServer
    failed: list[bool] = []

    def failing_once(*args: Any) -> Any:
        if not failed:
            failed.append(True)
            raise RuntimeError("a bug met by one connection")
        return real(*args)

    monkeypatch.setattr(protocols.http, "TCPServer", failing_once)
    server = listener()
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        ended = trio.Event()
        await nursery.start(run_once, server, ended)
        (url,) = server.binds
        with pytest.raises(httpx.TransportError):
            await client.get(f"{url}/ok")
        assert (await client.get(f"{url}/ok")).status_code == 200
        assert not ended.is_set()
        server.request_stop()
