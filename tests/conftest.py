"""Shared fixtures: real Neo4j and real Redis for the backend tests, the real data, a CLI runner.

Testing policy (after trio-websocket's): every adapter is tested against the
real service it adapts. The test session starts a real Neo4j 5.26 (embedded,
Bolt enabled, see ``tests/neo4j_server``) and a real ``redis-server`` on free
loopback ports the first time a test asks for them, and stops what it
started; likewise a Redis Cluster (``redis_cluster_url``; a test that kills
nodes takes a fresh one of its own, ``redis_cluster``).
``STARLING_TEST_NEO4J_URL`` / ``STARLING_TEST_REDIS_URL`` /
``STARLING_TEST_REDIS_CLUSTER_URL`` point the tests at services already running
instead. With ``CI=true`` a service that cannot be started fails the run;
elsewhere its tests are skipped with one loud line saying why.

Fixtures live here; helpers that are not fixtures live in modules of their
own that are not test modules (``tests/services.py``: the backing services;
``tests/in_process.py``: the whole server in-process and the CLI beside it;
``tests/social_world.py``: the social graph slice). A test module imports
from these, never from another test module.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
import structlog
import trio
import trio.testing
from click.testing import CliRunner

from protocols.methods import build_dispatcher
from tests.redis_clients import flush
from tests.social_world import Expected, Rpc, Social, World, running_social, services_for

if TYPE_CHECKING:
    from tests.services import RedisClusterHandle

# Plain one-line logs in tests: no colour, no rich tracebacks in captured output.
structlog.configure(
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        structlog.processors.KeyValueRenderer(key_order=["level", "event"]),
    ]
)

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _service(
    name: str,
    env_var: str,
    start_name: str,
    stack: ExitStack,
    workdir: Path,
) -> str:
    if url := os.environ.get(env_var):
        return url
    try:
        from tests import services  # imported lazily: only backend tests need it

        start: Callable[[Path], AbstractContextManager[str]] = getattr(services, start_name)
        return stack.enter_context(start(workdir))
    except Exception as exc:
        message = f"{name} could not be started ({type(exc).__name__}: {exc}); set {env_var}"
        _unavailable(name, message)


def _unavailable(name: str, message: str) -> NoReturn:
    """Fails the test under ``CI=true``; elsewhere skips it with one loud line on stderr."""
    if _in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    sys.stderr.write(f"\n!!!!! SKIPPING {name} TESTS: {message}\n")
    pytest.skip(message)


@pytest.fixture(scope="session")
def _service_stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def neo4j_url(_service_stack: ExitStack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Bolt URL of a real Neo4j 5.26 (auth disabled)."""
    return _service(
        "Neo4j",
        "STARLING_TEST_NEO4J_URL",
        "neo4j_server",
        _service_stack,
        tmp_path_factory.mktemp("neo4j"),
    )


@pytest.fixture(scope="session")
def redis_url(_service_stack: ExitStack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``redis://`` URL of a real redis-server."""
    return _service(
        "Redis",
        "STARLING_TEST_REDIS_URL",
        "redis_server",
        _service_stack,
        tmp_path_factory.mktemp("redis"),
    )


@pytest.fixture(scope="session")
def redis_cluster_url(_service_stack: ExitStack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``redis+cluster://`` URL of a real Redis Cluster (3 masters, 1 replica each) shared by the
    session: tests must not break it (kill a node, move a slot), and must not assume it empty."""
    return _service(
        "Redis Cluster",
        "STARLING_TEST_REDIS_CLUSTER_URL",
        "redis_cluster_service",
        _service_stack,
        tmp_path_factory.mktemp("redis-cluster"),
    )


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterHandle]:
    """A fresh real Redis Cluster (3 masters, 1 replica each) of this test's own, to kill and
    restart nodes in; stopped after the test (about 2 s to start)."""
    from tests import services  # imported lazily: only backend tests need it

    workdir = tmp_path / "redis-cluster"
    workdir.mkdir()
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(services.redis_cluster(workdir))
        except Exception as exc:
            message = f"Redis Cluster could not be started ({type(exc).__name__}: {exc})"
            _unavailable("Redis Cluster", message)
        yield cluster


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real data sets (``../shared/data``)."""
    if not DATA_DIR.is_dir():
        pytest.fail(f"real data not found at {DATA_DIR}", pytrace=False)
    return DATA_DIR


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    """A CLI runner; the logging the command sets up is undone after the test."""
    saved = structlog.get_config()
    yield CliRunner()
    structlog.configure(**saved)


CLIENT_LOGGERS = frozenset({"trio-websocket", "httpx", "httpcore", "hpack"})
"""The test's own client libraries: they log what the test sends (a ``?token=`` URL), not
what the server writes."""


@pytest.fixture
def server_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], str]]:
    """The server's log output so far, as ``starling serve`` writes it off a terminal: the
    structlog JSON lines at debug level (:func:`cli.common.configure_logging`'s processors,
    tracebacks included, into a buffer of the test's; CLI commands the test runs keep it)
    and the standard library's records, but for the test's client libraries."""
    import cli.common
    from cli.common import configure_logging

    saved = structlog.get_config()
    neo4j = logging.getLogger("neo4j")
    neo4j_level = neo4j.level
    caplog.set_level(logging.DEBUG)
    configure_logging(debug=True)
    written = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(written))
    monkeypatch.setattr(cli.common, "configure_logging", lambda debug: None)

    def text() -> str:
        records = [
            caplog.handler.format(record)
            for record in caplog.records
            if record.name.partition(".")[0] not in CLIENT_LOGGERS
        ]
        return written.getvalue() + "\n".join(records)

    try:
        yield text
    finally:
        structlog.configure(**saved)
        neo4j.setLevel(neo4j_level)


@pytest.fixture(scope="session")
def slashdot_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose embedded graph holds SNAP Slashdot, loaded by the CLI once."""
    from cli import main

    directory = tmp_path_factory.mktemp("slashdot")
    source = data_dir / "soc-Slashdot0902.txt"
    result = CliRunner().invoke(main, ["load", "graph", str(source), "--data-dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert "870,161" in result.output, result.output
    assert "78,303" in result.output, result.output
    return directory


@pytest.fixture(scope="session")
def demo_graph(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded graph holding the demo world, built once per session."""
    directory = tmp_path_factory.mktemp("demo") / "graph"

    from datasets.demo import build_demo_world
    from stores.ladybug import LadybugGraph

    async def build() -> None:
        graph = await LadybugGraph.open(directory)
        try:
            await build_demo_world(graph, data_dir)
        finally:
            await graph.aclose()

    trio.run(build)
    return directory


# -- the social subtree over an empty graph (tests/social_world.py) ----------------------


@pytest.fixture(params=["ladybug", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    """An empty graph on the backend under test, with ids unique to this test (a module with
    a loaded world defines its own ``world``)."""
    kind: str = request.param
    prefix = uuid.uuid4().hex[:8]
    if kind == "ladybug":
        return World(kind, str(tmp_path / "graph"), prefix, [], Expected())
    url: str = request.getfixturevalue("neo4j_url")
    return World(kind, url, prefix, [], Expected())


@pytest.fixture
async def social(world: World) -> AsyncIterator[Social]:
    """The social subtree running over the world's backend."""
    store = await world.open()
    try:
        async with running_social(store) as running:
            yield running
    finally:
        await store.aclose()


@pytest.fixture
def rpc(social: Social) -> Rpc:
    """The JSON-RPC dispatcher over the running subtree."""
    return Rpc(build_dispatcher(services_for(social)), social)


# -- the key-value backends' contract tests (tests/test_contract_*.py) --------------------


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
def redis_or_none(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the in-process backend, else the URL of the real Redis or Redis Cluster."""
    if request.param == "memory":
        return None
    fixture = "redis_url" if request.param == "redis" else "redis_cluster_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
def shared_redis(request: pytest.FixtureRequest) -> str:
    """The URL of a real Redis, then of a real Redis Cluster, emptied: what processes share to
    scale out (the scale-out tests run on both)."""
    fixture = "redis_url" if request.param == "redis" else "redis_cluster_url"
    url: str = request.getfixturevalue(fixture)
    flush(url)
    return url


@pytest.fixture
def clock(redis_or_none: str | None) -> trio.testing.MockClock | None:
    """The autojump clock for the in-process backend; real time for Redis."""
    return trio.testing.MockClock(autojump_threshold=0) if redis_or_none is None else None
