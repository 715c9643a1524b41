"""Issue 16: Starling on several hosts; one host dies mid-stream and its clients recover exactly.

Every process runs on a host of its own, a network namespace on one bridge
(tests/hosts.py), and reaches the others by address only:

* ``graph``: Neo4j, the graph every server shares (``--graph-url``);
* ``redis``: one ``redis-server`` (``redis://``), or a Redis Cluster of 3 masters
  and 3 replicas (``redis+cluster://``);
* ``a``, ``b``, ``c``: one ``starling serve`` each, listening on its host's address;
* ``clients``: tests/host_client.py, subscribers that start on each server and
  know every other (after a refused connection they go to the next and resubscribe
  with ``since``), and a producer calling ``realtime.publish_many`` on the
  servers in turn, skipping one that refuses.

Mid-stream a server's host is killed (:meth:`~tests.hosts.Host.kill`: SIGKILL of
every process on it; its address still answers, with RST). Its subscribers must
land on another host and recover *exactly*: every acknowledged publication
delivered to every subscriber once, in offset order per channel, none lost, none
reloaded (inside a ``recovered: false`` or ``gap`` range), no offset naming another
event, and the producer's calls acknowledged on the live hosts. A ``gap`` over
offsets whose call was not acknowledged (it timed out, -32002, because the host
that had read those entries died) is the server telling the truth about an outcome
the producer was told is unknown: counted (``reloads``), not failed. The run's figures are
printed and written as JSON (tests/reliability/figures.py's ``report``), with,
for each kill, the seconds each of its subscribers took to be resubscribed
elsewhere on every channel and the publications the resubscriptions recovered.

One departure is a known limit (docs/reliability.md): a host killed after it
delivered a batch to its own subscribers and before it announced the batch to
the other hosts leaves those offsets to the survivors' reorder buffers, which
skip them after ``--reorder-wait`` and tell a ``gap`` (the entries come back
only when reclaimed, 30 s later, and are dropped then): acknowledged
publications are then reloaded, not recovered. When every reload of a run is of
that kind (told within :data:`KNOWN_LIMIT_WITHIN` seconds of a kill, covering
only events sent before it) and nothing is silently missing, the test is an
expected failure (``xfail``) that says so, with the figures; any other reload,
or a silent hole, fails it.

Short (CI): one kill in about 18 s of traffic per Redis. ``STARLING_HOSTS=long``
(``make cluster-test``): six kills, each host down 15 s and back (same address and
port) for 30 s before the next, about five minutes of traffic per Redis.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from subprocess import PIPE
from typing import Any, TypeVar

import httpx
import pytest
import trio

from tests import services
from tests.host_client import Config
from tests.hosts import Host, Network, require_namespaces
from tests.processes import Process, load_graph, server_process, wait_healthy
from tests.reliability.figures import Figures, figures, report
from tests.reliability.traffic import Event, Ledger, Received, Reload, Subscriber

pytestmark = [pytest.mark.redis, pytest.mark.neo4j]

ROOT = Path(__file__).resolve().parents[1]
PROFILE_ENV = "STARLING_HOSTS"
"""``long`` selects :data:`LONG`; anything else (or unset) :data:`SHORT`."""
API_KEY = "hosts-test-api-key-0123456789abcdef"
"""The servers' ``--api-key``: the producer and the test are not their loopback clients."""
SERVERS = ("a", "b", "c")
KNOWN_LIMIT_WITHIN = 3.0
"""Seconds after a kill in which a told gap is the known limit's (docs/reliability.md): the
host delivered a batch to its own subscribers and died before announcing it to the others,
whose reorder buffers skip it after ``--reorder-wait`` (0.5 s); its subscribers that got it
are ahead of their new host (``recovered: false``), the others are told with ``gap``."""
DONE_WITHIN = 120.0
"""Seconds the client may take, after ``stop``, beyond its settle time, to write and end."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Plan:
    """A run's schedule; seconds, and events a second.

    Attributes:
        name: ``short`` or ``long``.
        rate: events a second the producer makes.
        channels: channels the events are spread over (every subscriber follows all).
        subscribers: subscribers starting on each server.
        before: traffic before the first kill.
        kills: hosts killed, one after another (``a``, ``b``, ``c``, ``a`` …).
        down: traffic after a kill, the host down.
        up: traffic after the killed host is back (0: it is not restarted).
        settle: longest wait, after the producer stopped, for the subscribers to catch up.
    """

    name: str
    rate: int
    channels: int
    subscribers: int
    before: float
    kills: int
    down: float
    up: float
    settle: float


SHORT = Plan(
    "short", rate=100, channels=4, subscribers=2, before=6, kills=1, down=12, up=0, settle=20
)
"""CI: one kill, about 18 s of traffic."""
LONG = Plan(
    "long", rate=200, channels=8, subscribers=3, before=30, kills=6, down=15, up=30, settle=60
)
"""``make cluster-test``: six kills and restarts, about five minutes of traffic."""


def _plan() -> Plan:
    return LONG if os.environ.get(PROFILE_ENV, "").lower() == "long" else SHORT


def _started(stack: ExitStack, what: str, service: AbstractContextManager[_T]) -> _T:
    """Enter ``service``; skip the test if it cannot start (fail it with ``CI=true``), as the
    suite's session services do (tests/conftest.py)."""
    from tests.conftest import _in_ci

    try:
        return stack.enter_context(service)
    except Exception as error:
        message = f"{what} could not be started ({type(error).__name__}: {error})"
        if _in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)


@dataclass(frozen=True, slots=True)
class Hosts:
    """The module's network and its hosts, Neo4j running on ``graph``."""

    network: Network
    graph: Host
    redis: Host
    servers: tuple[Host, ...]
    clients: Host
    graph_url: str


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """The hosts (module docstring), Neo4j started on ``graph``; shared by the module's tests,
    each of which starts its own Redis and servers."""
    require_namespaces()
    with ExitStack() as stack:
        network = stack.enter_context(Network())
        graph = network.host("graph")
        redis, clients = network.host("redis"), network.host("clients")
        servers = tuple(network.host(name) for name in SERVERS)
        workdir = tmp_path_factory.mktemp("graph")
        neo4j = services.neo4j_server(workdir, host=graph.address, wrap=graph.wrap)
        url = _started(stack, "Neo4j on its host", neo4j)
        yield Hosts(network, graph, redis, servers, clients, url)


class _Servers:
    """One ``starling serve`` per server host, on a fixed port each, killed and restarted."""

    def __init__(self, hosts: Hosts, redis_url: str, directory: Path) -> None:
        self.hosts = hosts
        self.redis_url = redis_url
        self.directory = directory
        self.ports = {host.name: services.free_port() for host in hosts.servers}
        self.running: dict[str, tuple[Process, ExitStack]] = {}
        self.starts = dict.fromkeys(self.ports, 0)

    def url(self, host: Host) -> str:
        return f"http://{host.address}:{self.ports[host.name]}"

    @property
    def urls(self) -> list[str]:
        return [self.url(host) for host in self.hosts.servers]

    async def start(self, host: Host) -> None:
        """Start its server (again: same address and port, a new data dir and consumer name)
        and wait until it answers ``/health``."""
        self.starts[host.name] += 1
        stack = ExitStack()
        process = stack.enter_context(
            server_process(
                self.directory, self.redis_url, f"{host.name}{self.starts[host.name]}",
                self.hosts.graph_url, options=("--api-key", API_KEY),
                host=host.address, port=self.ports[host.name], wrap=host.wrap,
            )
        )  # fmt: skip
        self.running[host.name] = (process, stack)
        await wait_healthy(process.url)

    async def kill(self, host: Host) -> float:
        """Kill its host (every process on it); when it was dead (``time.monotonic()``)."""
        await trio.to_thread.run_sync(host.kill)
        killed_at = time.monotonic()
        process, stack = self.running.pop(host.name)
        code = await trio.to_thread.run_sync(lambda: process.process.wait(timeout=10))
        assert code == -signal.SIGKILL, code
        stack.close()
        return killed_at

    def close(self) -> None:
        for _, stack in self.running.values():
            stack.close()


async def _rpc(url: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with httpx.AsyncClient(timeout=15.0, headers=headers) as client:
        reply: dict[str, Any] = (await client.post(f"{url}/rpc", json=body)).json()
        return reply


async def _graph_counts(urls: list[str], user: str) -> list[Any]:
    """``social.counts`` of ``user`` on each server: read from the graph on its own host."""
    return [(await _rpc(url, "social.counts", {"user": user})).get("result") for url in urls]


class _Lines:
    """Lines of a process's stdout."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def expect(self, wanted: str, log: Path) -> None:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise AssertionError(f"the client ended before {wanted!r}: see {log}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        assert line.decode() == wanted, f"{line!r} instead of {wanted!r}: see {log}"


@dataclass(frozen=True, slots=True)
class Kill:
    """A host killed: which, its URL, when (``time.monotonic()``), when it was back (or not)."""

    host: str
    url: str
    at: float
    back: float | None


@dataclass
class Run:
    """What the client wrote (tests/host_client.py), rebuilt into the traffic's types."""

    started: float
    stopped: float
    settle: float
    ledger: Ledger
    subscribers: list[Subscriber]
    subscribes: list[dict[str, Any]]


def _read(out: Path, channels: list[str]) -> Run:
    ledger = Ledger()
    by_name: dict[str, Subscriber] = {}
    subscribes: list[dict[str, Any]] = []
    run: dict[str, Any] = {}
    for text in out.read_text().splitlines():
        record = json.loads(text)
        kind = record.pop("kind")
        if kind == "run":
            run = record
        elif kind == "event":
            ledger.events[record["seq"]] = Event(**record)
        elif kind == "errors":
            ledger.errors, ledger.error_messages = record["errors"], record["messages"]
        elif kind == "subscriber":
            subscriber = Subscriber(record["name"], record["urls"], "", channels)
            subscriber.at = record["urls"].index(record["url"])
            subscriber.duplicates, subscriber.late = record["duplicates"], record["late"]
            subscriber.reconnects, subscriber.closes = record["reconnects"], record["closes"]
            by_name[subscriber.name] = subscriber
        elif kind == "received":
            by_name[record.pop("subscriber")].received.append(Received(**record))
        elif kind == "reload":
            by_name[record.pop("subscriber")].reloads.append(Reload(**record))
        elif kind == "subscribe":
            subscribes.append(record)
    return Run(
        run["started"], run["stopped"], run["settle"], ledger, list(by_name.values()), subscribes
    )


def _moves(run: Run, kill: Kill, until: float) -> dict[str, list[dict[str, Any]]]:
    """For each subscriber that was on ``kill``'s host when it died: its resubscriptions
    (``since``) between the kill and ``until``, on whichever host."""
    where: dict[str, str] = {}
    for subscribe in run.subscribes:  # in each subscriber's order, its subscriptions' times
        if subscribe["at"] <= kill.at:
            where[subscribe["subscriber"]] = subscribe["url"]
    return {
        name: [
            s
            for s in run.subscribes
            if s["subscriber"] == name and s["resumed"] and kill.at < s["at"] <= until
        ]
        for name, url in sorted(where.items())
        if url == kill.url
    }


def _kill_figures(
    run: Run, kills: list[Kill], channels: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per kill: its subscribers, the seconds each took to be resubscribed elsewhere on every
    channel (median, longest), the publications those replies recovered, and those that could
    not recover (``recovered: false``); and what went wrong: a kill with no subscriber on its
    host, a subscriber not resubscribed elsewhere on every channel before the next kill."""
    figures_, problems = [], []
    for k, kill in enumerate(kills):
        until = kills[k + 1].at if k + 1 < len(kills) else run.stopped + run.settle
        moves = _moves(run, kill, until)
        if not moves:
            problems.append(f"no subscriber was on {kill.host} when it was killed")
            continue
        reconnect_s = []
        for name, resumed in moves.items():
            first: dict[str, dict[str, Any]] = {}
            for subscribe in resumed:
                first.setdefault(subscribe["channel"], subscribe)
            if sorted(first) != sorted(channels) or kill.url in {s["url"] for s in first.values()}:
                problems.append(f"{name} not resubscribed elsewhere after {kill}: {resumed}")
                continue
            reconnect_s.append(max(s["at"] for s in first.values()) - kill.at)
        resumed_all = [s for resumed in moves.values() for s in resumed]
        figures_.append(
            {
                "host": kill.host,
                "subscribers": len(moves),
                "reconnect_s": sorted(round(seconds, 3) for seconds in reconnect_s),
                "recovered": sum(s["count"] for s in resumed_all),
                "not_recovered": sum(not s["recovered"] for s in resumed_all),
                "back_after_s": None if kill.back is None else round(kill.back - kill.at, 3),
            }
        )
    return figures_, problems


def _check_nothing_silent(result: Figures, run: Run) -> None:
    """No acknowledged event silently missing (each delivered, or inside a told reload), none
    under another offset or two, each subscriber's publications once and in offset order."""
    assert result.lost == 0, result.lost_examples
    assert result.wrong == result.late == result.renumbered == 0, asdict(result)
    assert result.delivered + result.reloaded == result.expected, asdict(result)
    for subscriber in run.subscribers:
        offsets: dict[str, list[int]] = {}
        seqs = [pub.seq for pub in subscriber.received]
        for pub in subscriber.received:
            offsets.setdefault(pub.channel, []).append(pub.offset)
        for channel, taken in offsets.items():
            assert taken == sorted(set(taken)), (subscriber.name, channel)
        assert len(seqs) == len(set(seqs)), subscriber.name


def _unexplained_reloads(run: Run, kills: list[Kill]) -> list[str]:
    """The reloads (``gap`` notices, ``recovered: false``) that are not the known limit's: told
    within :data:`KNOWN_LIMIT_WITHIN` seconds of a kill and covering only events sent before it."""
    acknowledged = run.ledger.acknowledged()
    unexplained = []
    for subscriber in run.subscribers:
        for reload in subscriber.reloads:
            kill = next((k for k in kills if k.at <= reload.at <= k.at + KNOWN_LIMIT_WITHIN), None)
            covered = [
                event
                for event in acknowledged
                if event.channel == reload.channel
                and reload.first <= (event.offset or 0) <= reload.last
            ]
            if kill is None or any(event.sent_at >= kill.at for event in covered):
                unexplained.append(f"{subscriber.name}: {reload}")
    return unexplained


def _start_redis(kind: str, stack: ExitStack, host: Host, workdir: Path) -> str:
    if kind == "single":
        redis = services.redis_server(workdir, host=host.address, wrap=host.wrap)
        return _started(stack, "redis-server on its host", redis)
    cluster = services.redis_cluster(workdir, host=host.address, wrap=host.wrap)
    return _started(stack, "Redis Cluster on its host", cluster).url


@pytest.mark.parametrize("redis", ["single", "cluster"])
async def test_a_host_killed_mid_stream_its_subscribers_recover_exactly_on_another(
    hosts: Hosts, tmp_path: Path, redis: str
) -> None:
    """With three ``starling serve`` hosts sharing a Redis host (a server, or a Redis Cluster) and a Neo4j host, killing one host's every process mid-stream sends its subscribers to another host, where their resubscription with ``since`` recovers what they missed: every acknowledged publication reaches every subscriber once, in offset order per channel, none lost or reloaded, while the producer keeps publishing on the live hosts."""  # noqa: E501
    plan = _plan()
    channels = [f"post:hosts-{redis}-{i}" for i in range(plan.channels)]
    user = f"h{uuid.uuid4().hex[:8]}"
    await load_graph(tmp_path, f"{user} x{user}\ny{user} {user}\n", graph_url=hosts.graph_url)
    with ExitStack() as stack:
        workdir = tmp_path / "redis"
        workdir.mkdir()
        redis_url = _start_redis(redis, stack, hosts.redis, workdir)
        servers = _Servers(hosts, redis_url, tmp_path)
        stack.callback(servers.close)
        for host in hosts.servers:
            await servers.start(host)
        counts = {"following": 1, "followers": 1}
        assert await _graph_counts(servers.urls, user) == [counts] * len(SERVERS)

        config = Config(
            servers.urls, API_KEY, channels, plan.rate, plan.subscribers, settle=plan.settle
        )
        (tmp_path / "client.json").write_text(json.dumps(asdict(config)))
        out, log = tmp_path / "client.jsonl", tmp_path / "client.log"
        argv = [sys.executable, "-m", "tests.host_client", str(tmp_path / "client.json"), str(out)]
        kills: list[Kill] = []
        with log.open("wb") as stderr:
            client = await trio.lowlevel.open_process(
                [*hosts.clients.wrap, *argv], stdin=PIPE, stdout=PIPE, stderr=stderr, cwd=ROOT
            )
        assert client.stdin is not None
        assert client.stdout is not None
        lines = _Lines(client.stdout)
        try:
            with trio.fail_after(60):
                await lines.expect("subscribed", log)
            await trio.sleep(plan.before)
            for k in range(plan.kills):
                victim = hosts.servers[k % len(hosts.servers)]
                at = await servers.kill(victim)
                await trio.sleep(plan.down)
                survivors = [servers.url(host) for host in hosts.servers if host is not victim]
                assert await _graph_counts(survivors, user) == [counts] * len(survivors)
                back = None
                if plan.up:
                    await servers.start(victim)
                    back = time.monotonic()
                    await trio.sleep(plan.up)
                kills.append(Kill(victim.name, servers.url(victim), at, back))
            await client.stdin.send_all(b"stop\n")
            with trio.fail_after(plan.settle + DONE_WITHIN):
                await lines.expect("done", log)
                await client.wait()
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
    assert client.returncode == 0, log.read_text()

    run = _read(out, channels)
    result = figures(
        f"host-kill-{redis}", plan.name, run.ledger, run.subscribers, rate=plan.rate,
        produced_from=run.started, produced_until=run.stopped, fault_end=kills[0].at,
    )  # fmt: skip
    per_kill, problems = _kill_figures(run, kills, channels)
    reconnects = [seconds for kill in per_kill for seconds in kill["reconnect_s"]]
    after = [e for e in run.ledger.events.values() if e.sent_at > kills[0].at + 1]
    result.extra.update(
        redis=redis,
        kills=per_kill,
        reconnect_s_median=statistics.median(reconnects or [0.0]),
        reconnect_s_max=max(reconnects or [0.0]),
        recovered=sum(k["recovered"] for k in per_kill),
        settle_s=round(run.settle, 3),
        acknowledged_after_kill=f"{sum(e.acknowledged for e in after)}/{len(after)}",
    )
    report(result, tmp_path)
    assert not problems, problems
    _check_nothing_silent(result, run)
    assert sum(e.acknowledged for e in after) >= len(after) * 0.9, result.errors
    assert not _unexplained_reloads(run, kills), result.reload_examples
    if result.reloaded:
        pytest.xfail(
            f"known limit (docs/reliability.md): {result.reloaded} deliveries told as gaps"
            " (a host killed after delivering a batch to its own subscribers, before announcing"
            f" it to the others): {result.reload_examples}"
        )
    assert result.delivered == result.expected
