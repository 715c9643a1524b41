"""Fixtures of the reliability tests: the whole server in this process, with a probe."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.in_process import load_edges, serving
from tests.reliability.probe import Probe
from tests.reliability.redis_aof import AofRedis
from tests.reliability.scenario import Profile, profile

EDGES = "a b\nb a\n"
"""Two users who follow each other: the probe reads ``a``'s counts and subscribes as ``a``."""


@pytest.fixture
async def probe(tmp_path: Path) -> AsyncIterator[Probe]:
    """The server (embedded graph, in-memory stream, fault injection on) and its probe."""
    data = await load_edges(tmp_path, EDGES)
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with (
        serving(data, fault_injection=True) as server,
        httpx.AsyncClient(base_url=server.url, limits=fresh, timeout=30) as http,
    ):
        yield Probe(server, http)


# -- faults under load (test_faults*.py): real processes on a Redis of their own ------------


@pytest.fixture
def chaos() -> Profile:
    """The durations and rate of a fault run (``STARLING_CHAOS=long`` for ``make chaos``)."""
    return profile()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AofRedis]:
    """A private running ``redis-server`` with ``--appendonly yes --appendfsync everysec``,
    which a test may stop, kill and start again (the session's shared Redis is never stopped)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = AofRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
