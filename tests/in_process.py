"""Test helpers for the whole server in this process, and the CLI beside it.

:func:`serving` runs ``serve`` (hypercorn on 127.0.0.1, port 0, the embedded
graph, the in-memory stream) in the test's trio run and yields a
:class:`Server`; :func:`invoke_in_thread` runs a CLI command in a worker
thread (the command calls ``trio.run`` itself) while the server keeps
serving on the test's thread. Every test module that needs a live server
imports them from here, never from another test module.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from click.testing import CliRunner, Result
from trio_websocket import WebSocketConnection, open_websocket_url

from auth.tokens import issue_token, load_secret
from cli import main
from client import websocket_url
from server import serve
from settings import ServeOptions, Settings
from stores.backends import default_graph_url

__all__ = ["Server", "invoke_in_thread", "load_edges", "serving"]


@dataclass(frozen=True)
class Server:
    """A running server: its base URL and token secret."""

    url: str
    secret: bytes

    def token(self, user: str = "alice") -> str:
        """A user's token for this server, valid for an hour."""
        return issue_token(self.secret, user, ttl_seconds=3600)

    def connect(self, user: str) -> AbstractAsyncContextManager[WebSocketConnection]:
        """A WebSocket to this server's ``/ws``, authenticated as ``user`` (``?token=``)."""
        return open_websocket_url(f"{websocket_url(self.url)}?token={self.token(user)}")


@asynccontextmanager
async def serving(
    directory: Path,
    *,
    api_key: str | None = None,
    redis_url: str = "memory://",
    **options: Any,
) -> AsyncIterator[Server]:
    """Run ``serve`` on 127.0.0.1:0 with its data in ``directory``; stop it on exit.

    Args:
        directory: the data directory (graph, token secret).
        api_key: the key ``/rpc`` and the token routes ask for; ``None``: none.
        redis_url: the cache, stream and Pub/Sub (``memory://``: in process).
        options: further :class:`ServeOptions` fields (``ws_limits=…``).
    """
    settings = Settings(
        data_dir=directory,
        graph_url=default_graph_url(directory),
        redis_url=redis_url,
        api_key=api_key,
    )
    async with trio.open_nursery() as nursery:
        root = await nursery.start(serve, settings, ServeOptions(port=0, readers=1, **options))
        (api,) = [child for child in root.statistics().children if child.id == "api"]
        secret = await trio.to_thread.run_sync(load_secret, directory)
        try:
            yield Server(api.detail.binds[0], secret)
        finally:
            root.request_stop()


async def invoke_in_thread(runner: CliRunner, args: list[str]) -> Result:
    """Run the CLI with ``args`` in a worker thread (it calls ``trio.run`` itself)."""
    return await trio.to_thread.run_sync(
        functools.partial(runner.invoke, main, args), abandon_on_cancel=True
    )


async def load_edges(directory: Path, edges: str) -> Path:
    """A data directory ``directory/data`` whose embedded graph holds the edge list ``edges``
    (``"follower followee"`` lines), loaded by ``starling load graph``."""
    path = directory / "edges.txt"
    path.write_text(edges)
    data = directory / "data"
    loaded = await invoke_in_thread(
        CliRunner(), ["load", "graph", str(path), "--data-dir", str(data)]
    )
    assert loaded.exit_code == 0, loaded.output
    return data
