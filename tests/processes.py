"""Test helpers for ``starling serve`` in processes of its own (scale-out on one Redis).

:func:`server_process` starts the real command on a free port with its own data
directory and yields a :class:`Process` (its URL, its ``/ws`` URL, and the process,
which a test may kill); :func:`wait_healthy` waits for its ``/health``. Not a test
module: the scale-out tests import these from here, never from one another.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from tests.services import free_port

__all__ = ["SECRET", "STARTUP", "Process", "load_graph", "server_process", "wait_healthy"]

SECRET = "scale-out-test-secret-0123456789abcdef"
"""The token secret every process of a test shares (``STARLING_SECRET``)."""
STARTUP = 60.0
"""Seconds a server process may take to answer /health."""
STOP = 20.0
"""Seconds a server process may take to stop after SIGINT before it is killed."""


@dataclass(frozen=True)
class Process:
    """A running ``starling serve``: its base URL and its process."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def ws_url(self) -> str:
        """The URL of its ``/ws``."""
        return self.url.replace("http", "ws", 1) + "/ws"


@contextmanager
def server_process(
    directory: Path,
    redis_url: str,
    name: str,
    graph_url: str | None = None,
    *,
    options: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int | None = None,
    wrap: Sequence[str] = (),
) -> Iterator[Process]:
    """``starling serve`` on a free port, its data in ``directory/name``, its log in
    ``directory/name.log``; stopped with SIGINT on exit (killed if it does not stop).

    Args:
        graph_url: the graph (``--graph-url``); the embedded one under its data dir if ``None``.
        options: more ``serve`` flags, e.g. ``("--presence-expiry", "3")``.
        host: the address it listens on (``--host``), the one in its URL.
        port: its port; a free one when ``None`` (a restarted server keeps its URL).
        wrap: an argv prefix that runs it elsewhere and execs it (its pid is the server's),
            e.g. a network namespace's ``("ip", "netns", "exec", NS)`` (tests/hosts.py).
    """
    port = free_port() if port is None else port
    env = os.environ | {"STARLING_SECRET": SECRET}
    command = [
        *wrap, sys.executable, "-c", "from cli import main; main()", "serve",
        "--data-dir", str(directory / name), "--redis-url", redis_url,
        "--host", host, "--port", str(port), "--consumer", name, "--readers", "1",
        *(["--graph-url", graph_url] if graph_url else []), *options,
    ]  # fmt: skip
    log = (directory / f"{name}.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Process(f"http://{host}:{port}", process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def wait_healthy(url: str) -> None:
    """Wait until ``url``'s ``/health`` answers 200, at most :data:`STARTUP` seconds."""
    with trio.fail_after(STARTUP):
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(f"{url}/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await trio.sleep(0.2)


async def load_graph(
    directory: Path, edges: str, *, graph_url: str | None = None, data_dir: Path | None = None
) -> None:
    """``starling load graph`` of the edge list ``edges`` in a process of its own.

    Args:
        directory: where the edge list is written (``edges.txt``).
        edges: ``"follower followee"`` lines (a header line is recognised).
        graph_url: the shared graph to load (Neo4j); else the embedded one of ``data_dir``.
        data_dir: the data directory (``directory/load`` when ``None``).
    """
    path = directory / "edges.txt"
    path.write_text(edges)
    command = [
        sys.executable, "-c", "from cli import main; main()", "load", "graph", str(path),
        "--data-dir", str(data_dir or directory / "load"),
        *(["--graph-url", graph_url] if graph_url else []),
    ]  # fmt: skip
    env = os.environ | {"STARLING_SECRET": SECRET}
    await trio.run_process(command, check=True, env=env, capture_stdout=True, capture_stderr=True)
