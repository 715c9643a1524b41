"""Social graph benchmark: JSON-RPC latency and throughput per method, on the demo world.

Run it as ``starling bench social`` or ``python -m bench.social``. It

1. samples realistic params from the graph (seeded): random users, posts
   with recommendations, (user, post) pairs where a followee recommended the
   post, and users who follow about 1,000 others (the who-to-follow budget);
2. starts ``starling serve`` as a separate process on a free loopback port;
3. drives each read method with wrk (C, closed loop) over HTTP ``POST /rpc``:
   once with one connection (latency: p50/p99) and once with ``--clients``
   connections (throughput: calls/s), ``--runs`` times each, and reports
   medians;
4. prints a table, the budgets of issue 12 against the figures (:data:`BUDGETS`),
   and writes ``bench/results/social-<backend>.json``.

Data: SNAP soc-Slashdot0902 (Leskovec et al. 2009) with the Hacker News and
Medium stories of the demo world; the story-to-user mapping and the
recommendations are synthetic (see docs/data.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bench.load import LoadResult, require_wrk, run_wrk
from bench.report import print_table, write_json
from settings import Settings

SEED = 7
SAMPLES = 500


@dataclass(frozen=True, slots=True)
class Budget:
    """A figure the social read path must reach (issue 12: 2 cores, load generator included).

    Attributes:
        method: the workload row.
        column: the row's figure (a column of :func:`measure`, ``{clients}`` filled in).
        limit: the bound.
        at_least: ``True``: the figure must be >= ``limit``; ``False``: <=.
    """

    method: str
    column: str
    limit: float
    at_least: bool


BUDGETS = (
    Budget("social.counts", "calls/s ({clients} clients)", 3000.0, at_least=True),
    Budget("social.friends_who_recommended", "p50_ms (1 client)", 2.0, at_least=False),
)
"""``social.counts`` >= 3,000 calls/s over HTTP with 8 connections;
``social.friends_who_recommended`` p50 <= 2 ms over HTTP (one connection)."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One row of the benchmark: a method and the request bodies to rotate through."""

    name: str
    bodies: list[bytes]
    calls_per_request: int = 1


def request(method: str, params: dict[str, Any], id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


def encode(requests: Sequence[dict[str, Any]] | dict[str, Any]) -> bytes:
    return json.dumps(requests, separators=(",", ":")).encode()


async def sample_params(settings: Settings) -> dict[str, list[Any]]:
    """Params drawn from the graph (seeded), read directly before the server starts."""
    graph = await settings.open_graph()
    rng = random.Random(SEED)
    try:
        session = graph.session()
        users = [
            row["id"]
            for row in await session.read(
                "MATCH (u:User)-[:FOLLOWS]->(:User) RETURN DISTINCT u.id AS id"
            )
        ]
        if not users:
            raise SystemExit("the graph is empty: run `starling load demo` first")
        posts = [
            row["id"]
            for row in await session.read(
                "MATCH (:User)-[:RECOMMENDED]->(p:Post) RETURN DISTINCT p.id AS id"
            )
        ]
        if not posts:
            raise SystemExit("the graph has no recommended posts: run `starling load demo` first")
        pairs = [
            (row["user"], row["post"])
            for row in await session.read(
                "MATCH (u:User)-[:FOLLOWS]->(:User)-[:RECOMMENDED]->(p:Post) "
                "RETURN u.id AS user, p.id AS post LIMIT 200000"
            )
        ]
        degrees = await session.read(
            "MATCH (u:User)-[:FOLLOWS]->(f:User) RETURN u.id AS id, count(f) AS following"
        )
        session.close()
    finally:
        await graph.aclose()
    near_1000 = sorted(degrees, key=lambda row: abs(int(row["following"]) - 1000))[:20]
    return {
        "users": rng.sample(users, min(SAMPLES, len(users))),
        "posts": rng.sample(posts, min(SAMPLES, len(posts))),
        "pairs": rng.sample(pairs, min(SAMPLES, len(pairs))),
        "heavy_users": [row["id"] for row in near_1000],
        "heavy_following": [int(row["following"]) for row in near_1000],
    }


def workloads(params: dict[str, list[Any]]) -> list[Workload]:
    """The rows: every read method, plus social.counts in batches of 10."""
    users, posts, pairs = params["users"], params["posts"], params["pairs"]

    def each(
        method: str, make: Callable[[Any], dict[str, Any]], items: list[Any], label: str = ""
    ) -> Workload:
        bodies = [encode(request(method, make(x), i)) for i, x in enumerate(items)]
        return Workload(label or method, bodies)

    batches = [
        encode([request("social.counts", {"user": u}, j) for j, u in enumerate(users[i : i + 10])])
        for i in range(0, len(users) - 9, 10)
    ]
    return [
        each("social.counts", lambda u: {"user": u}, users),
        Workload("social.counts (batch of 10)", batches, calls_per_request=10),
        each("social.following", lambda u: {"user": u, "limit": 100}, users),
        each("social.followers", lambda u: {"user": u, "limit": 100}, users),
        each("posts.get", lambda p: {"post": p}, posts),
        each("social.recommenders", lambda p: {"post": p, "limit": 20}, posts),
        each(
            "social.friends_who_recommended",
            lambda pair: {"user": pair[0], "post": pair[1], "limit": 20},
            pairs,
        ),
        each("social.who_to_follow", lambda u: {"user": u, "limit": 10}, users),
        each(
            "social.who_to_follow",
            lambda u: {"user": u, "limit": 10},
            params["heavy_users"],
            label="social.who_to_follow (following≈1,000)",
        ),
    ]


async def scatter_gather(
    settings: Settings, *, readers: int = 4, repeats: int = 30
) -> list[dict[str, Any]]:
    """The most-followed user's whole follower list: scatter/gather vs one unsplit query.

    Both read the same ids through the same pool of ``readers`` graph-reader
    actors (in process, no HTTP): scatter/gather cuts the list into id ranges
    of 250 read concurrently (``actors.social.scatter.read_page``); the
    unsplit read is one query for all of them. Median of ``repeats``.
    """
    from actors.social import GraphReader, ReaderPool
    from actors.social.scatter import read_page

    graph = await settings.open_graph()
    rows: list[dict[str, Any]] = []
    try:
        top = await graph.session().read(
            "MATCH (u:User)<-[:FOLLOWS]-(f:User) RETURN u.id AS id, count(f) AS followers "
            "ORDER BY followers DESC LIMIT 1"
        )
        user, followers = top[0]["id"], int(top[0]["followers"])
        actors = [GraphReader(f"graph_reader-{i}", graph) for i in range(readers)]
        async with trio.open_nursery() as nursery:
            pool = ReaderPool([await nursery.start(actor.run) for actor in actors])
            timings: dict[str, list[float]] = {}
            for name, chunk in (("unsplit (1 query)", followers + 1), ("scatter/gather", 250)):
                for _ in range(repeats):
                    started = time.perf_counter()
                    page = await read_page(
                        pool, user, "followers", limit=followers, after="", chunk=chunk
                    )
                    timings.setdefault(name, []).append(time.perf_counter() - started)
                    assert len(page.users) == followers
            for actor in actors:
                actor.request_stop()
        unsplit = statistics.median(timings["unsplit (1 query)"])
        for name, values in timings.items():
            rows.append(
                {
                    "case": f"{name}: followers of {user} ({followers:,})",
                    "p50_ms": statistics.median(values) * 1000,
                    "max_ms": max(values) * 1000,
                    "vs unsplit": unsplit / statistics.median(values),
                }
            )
    finally:
        await graph.aclose()
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(args: list[str], env: dict[str, str]) -> Iterator[str]:
    """``starling serve`` in a child process; yields its URL once /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port), *args]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not come up: {' '.join(command)}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def median(results: list[LoadResult], key: Callable[[LoadResult], float]) -> float:
    return float(statistics.median(key(result) for result in results))


def measure(
    url: str, workload: Workload, *, clients: int, seconds: float, runs: int
) -> dict[str, Any]:
    """Median figures over ``runs`` runs at 1 connection and at ``clients`` connections."""
    single = [run_wrk(url, workload.bodies, connections=1, seconds=seconds) for _ in range(runs)]
    loaded = [
        run_wrk(url, workload.bodies, connections=clients, seconds=seconds) for _ in range(runs)
    ]
    errors = sum(r.errors + r.socket_errors for r in single + loaded)
    return {
        "method": workload.name,
        "p50_ms (1 client)": median(single, lambda r: r.p50_ms),
        "p99_ms (1 client)": median(single, lambda r: r.p99_ms),
        f"calls/s ({clients} clients)": median(
            loaded, lambda r: r.calls_per_second * workload.calls_per_request
        ),
        f"p50_ms ({clients} clients)": median(loaded, lambda r: r.p50_ms),
        f"p99_ms ({clients} clients)": median(loaded, lambda r: r.p99_ms),
        "errors": errors,
    }


def check_budgets(rows: list[dict[str, Any]], *, clients: int) -> list[dict[str, Any]]:
    """One row per budget whose method was measured: the figure, the bound, and whether it holds."""
    checked = []
    for budget in BUDGETS:
        row = next((row for row in rows if row["method"] == budget.method), None)
        if row is None:
            continue
        column = budget.column.format(clients=clients)
        figure = float(row[column])
        holds = figure >= budget.limit if budget.at_least else figure <= budget.limit
        checked.append(
            {
                "method": budget.method,
                "figure (HTTP)": column,
                "measured": figure,
                "budget": f"{'>=' if budget.at_least else '<='} {budget.limit:g}",
                "met": "yes" if holds else "NO",
            }
        )
    return checked


def run(
    settings: Settings,
    *,
    clients: int = 8,
    seconds: float = 5.0,
    runs: int = 3,
    only: str | None = None,
    output: Path | None = None,
    readers: int = 4,
) -> Path:
    """Run the benchmark against the graph of ``settings``; return the JSON path.

    Args:
        readers: the server's ``--readers`` (graph reader actors).
    """
    require_wrk()
    params = trio.run(sample_params, settings)
    backend = "neo4j" if not settings.graph_url.startswith("ladybug") else "ladybug"
    args = ["--data-dir", str(settings.data_dir), "--graph-url", settings.graph_url]
    args += ["--readers", str(readers)]
    env = {**os.environ, "STARLING_API_KEY": ""}
    rows = []
    with running_server(args, env) as url:
        for workload in workloads(params):
            if only and only not in workload.name:
                continue
            rows.append(measure(url, workload, clients=clients, seconds=seconds, runs=runs))
            print_table(f"social ({backend}) — so far", rows[-1:])
    print_table(f"social graph over JSON-RPC, {backend}, median of {runs} runs", rows)
    budgets = check_budgets(rows, clients=clients)
    print_table(f"budgets (issue 12), {backend}, median of {runs} runs", budgets)
    split = trio.run(scatter_gather, settings)
    print_table(f"scatter/gather vs one query ({backend}, in process, 4 readers)", split)
    extra = {
        "backend": backend,
        "clients": clients,
        "seconds_per_run": seconds,
        "runs": runs,
        "heavy_users_following": params["heavy_following"],
        "budgets": budgets,
        "scatter_gather": split,
        "data": "SNAP soc-Slashdot0902 + HN/Medium stories (synthetic authors/recommendations, "
        "seed 42; see docs/data.md)",
    }
    return write_json(f"social-{backend}", rows, extra, output)
