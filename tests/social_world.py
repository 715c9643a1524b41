"""Test helpers for the social graph: a real graph slice, its expected answers, a running subtree.

:class:`Rpc` drives the JSON-RPC dispatcher over a running subtree.

The slice is the follows of SNAP soc-Slashdot0902 among the users with ids
below :data:`SLICE_USERS` (2,000 users, 20,727 follows; user 398 has 1,767
followers). Ids are prefixed (``"<prefix>:398"``) so that a slice loaded
into the Neo4j server shared by the test session does not meet another
test's data; the answers the tests expect are computed here from the file
with plain sets and Counters, never by the code under test.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from actors.bus import EventBus, Overflow, Subscription
from actors.social import (
    GraphReader,
    GraphWriter,
    ReaderPool,
    SocialEvent,
)
from actors.social import Social as SocialHandle
from protocols.jsonrpc import Dispatcher
from protocols.methods import CallContext, Services
from stores.graph import GraphStore
from stores.ladybug import LadybugGraph
from stores.neo4j import Neo4jGraph
from supervisor import Backoff, ChildSpec, Supervisor

SLICE_USERS = 2000
SLASHDOT = "soc-Slashdot0902.txt"


def slice_edges(path: Path, users: int = SLICE_USERS) -> list[tuple[str, str]]:
    """The distinct follows ``(source, target)`` between users ``0 .. users - 1``, no self-loops."""
    edges: dict[tuple[str, str], None] = {}
    with path.open() as file:
        for line in file:
            if line.startswith("#"):
                continue
            source, target = line.split()
            if source != target and int(source) < users and int(target) < users:
                edges[(source, target)] = None
    return list(edges)


@dataclass
class Expected:
    """Answers computed from the edge list alone."""

    following: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    followers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, edges: Iterable[tuple[str, str]]) -> Expected:
        expected = cls()
        for source, target in edges:
            expected.following[source].add(target)
            expected.followers[target].add(source)
        return expected

    def who_to_follow(self, user: str, limit: int) -> list[tuple[str, int]]:
        """Friends of friends not followed yet, by mutual count desc then id asc."""
        mutual: Counter[str] = Counter()
        followed = self.following[user]
        for friend in followed:
            for candidate in self.following[friend]:
                if candidate != user and candidate not in followed:
                    mutual[candidate] += 1
        return sorted(mutual.items(), key=lambda item: (-item[1], item[0]))[:limit]


@dataclass(frozen=True)
class World:
    """A loaded slice: where it lives and what it should answer.

    Attributes:
        kind: ``"ladybug"`` or ``"neo4j"``.
        where: the Ladybug database path, or the Bolt URL.
        prefix: every id of this slice starts with ``prefix + ":"``.
        edges: the prefixed follows.
        expected: answers computed from ``edges``.
    """

    kind: str
    where: str
    prefix: str
    edges: list[tuple[str, str]]
    expected: Expected

    def id(self, raw: str | int) -> str:
        """The prefixed id of user (or post) ``raw``."""
        return f"{self.prefix}:{raw}"

    @property
    def users(self) -> list[str]:
        """Every user of the slice, prefixed, in ascending id order."""
        return sorted({user for edge in self.edges for user in edge})

    async def open(self, **options: Any) -> GraphStore:
        """Open the backend (schema ensured); the caller closes it."""
        store: GraphStore
        if self.kind == "ladybug":
            store = await LadybugGraph.open(Path(self.where), **options)
        else:
            store = await Neo4jGraph.open(self.where, **options)
        await store.ensure_schema()
        return store


def load_world(kind: str, where: str, prefix: str, data_dir: Path) -> World:
    """Load the slice into the backend (run from a sync fixture: it calls ``trio.run``)."""
    raw = slice_edges(data_dir / SLASHDOT)
    edges = [(f"{prefix}:{a}", f"{prefix}:{b}") for a, b in raw]
    world = World(kind, where, prefix, edges, Expected.of(edges))

    async def load() -> None:
        store = await world.open()
        try:
            await store.import_nodes("User", world.users)
            await store.import_relationships("FOLLOWS", edges)
        finally:
            await store.aclose()

    trio.run(load)
    return world


class FakeClock:
    """A clock the test sets: returns ``now`` (epoch s), then advances it by ``step``."""

    def __init__(self, start: int = 1_700_000_000, step: int = 1) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> int:
        now = self.now
        self.now += self.step
        return now


@dataclass
class Social:
    """A running social subtree and its parts.

    Attributes:
        handle: what the API calls (:class:`actors.social.Social`).
        pool: the readers' pool (the handle's and the writer's).
    """

    supervisor: Supervisor
    handle: SocialHandle
    pool: ReaderPool
    readers: list[GraphReader]
    writer: GraphWriter
    bus: EventBus[SocialEvent]
    events: Subscription[SocialEvent]
    clock: FakeClock
    store: GraphStore

    async def call(self, request: Any) -> Any:
        """Call the social graph through the handle, bounded by 30 s."""
        with trio.fail_after(30):
            return await self.handle.call(request)

    def received(self) -> list[SocialEvent]:
        """The events published so far (drains the test's subscription)."""
        events = []
        while True:
            try:
                events.append(self.events.receive_nowait())
            except trio.WouldBlock:
                return events


_ids = itertools.count()


@asynccontextmanager
async def running_social(
    store: GraphStore,
    *,
    readers: int = 3,
    page_chunk: int = 64,
    fanout_chunk: int = 100,
    events: int = 1000,
) -> AsyncIterator[Social]:
    """Run readers and the writer under a ``social`` supervisor, with the handle over them.

    A ``DROP`` subscription of ``events`` slots records what is published.
    """
    bus: EventBus[SocialEvent] = EventBus()
    subscription = bus.subscribe("test", size=events, overflow=Overflow.DROP)
    clock = FakeClock()
    reader_actors = [GraphReader(f"graph_reader-{i}", store) for i in range(readers)]
    pool = ReaderPool([reader.ref for reader in reader_actors])
    writer = GraphWriter(
        store,
        bus,
        readers=pool,
        clock=clock,
        new_id=lambda: f"gen{next(_ids)}",
        fanout_chunk=fanout_chunk,
    )
    handle = SocialHandle(pool, writer.ref, page_chunk=page_chunk)
    supervisor = Supervisor(
        "social",
        [
            *(ChildSpec(reader.name, reader.run) for reader in reader_actors),
            ChildSpec(writer.name, writer.run),
        ],
        intensity=10,
        period=10,
        backoff=Backoff(initial=0.01, factor=2, maximum=0.1),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        try:
            yield Social(
                supervisor, handle, pool, reader_actors, writer, bus, subscription, clock, store
            )
        finally:
            supervisor.request_stop()


def services_for(social: Social, supervisor: Supervisor | None = None) -> Services:
    """The API's view of a running social subtree."""
    tree = (supervisor or social.supervisor).statistics
    return Services(tree=tree, social=social.handle, bus=social.bus.statistics)


@dataclass
class Rpc:
    """A dispatcher over a running social subtree."""

    dispatcher: Dispatcher[CallContext]
    social: Social

    async def __call__(self, method: str, params: Any = None) -> dict[str, Any]:
        """The decoded reply to one request."""
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        reply = await self.dispatcher.handle(json.dumps(body).encode(), CallContext("127.0.0.1"))
        assert reply is not None
        decoded: dict[str, Any] = json.loads(reply)
        return decoded

    async def result(self, method: str, params: Any = None) -> Any:
        """The result of a call that must succeed."""
        reply = await self(method, params)
        assert "result" in reply, reply
        return reply["result"]

    async def error(self, method: str, params: Any = None) -> dict[str, Any]:
        """The error object of a call that must fail."""
        reply = await self(method, params)
        assert "error" in reply, reply
        error: dict[str, Any] = reply["error"]
        return error


async def new_users(social: Social, world: World, *names: str) -> list[str]:
    """Create the users ``names`` (prefixed with the world's prefix); return their ids."""
    ids = [world.id(name) for name in names]
    await social.store.import_nodes("User", ids)
    return ids
