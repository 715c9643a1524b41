"""The ``following`` scenario of ``starling bench realtime``: real users read ``following:<me>``.

``following:<me>`` carries every activity of the users ``<me>`` follows: an
event ``{"type": "comment" | "recommended" | "published", "user": A, ...}``
published on ``post:<P>`` reaches ``following:<f>`` for every subscribed
follower ``f`` of ``A`` but ``A`` (``actors/realtime/following.py``).

The scenario, run by :func:`bench.realtime.run_once` with the native clients::

    1. read the follow lists of --subscribers users of the demo world's graph,
       drawn (seeded) among the users who follow someone, and --channels posts
       (:func:`read_follow_lists`, here, before the server opens the graph)
    2. write them as a JSON file in a temp dir (:meth:`FollowLists.write`)
    3. start ``starling serve`` on that data dir; the loadgen subscribes every
       user to following:<user> and publishes comments at --rate activities/s
       by authors drawn among their followees, weighted by how many of them
       follow each (bench/loadgen/following.go)
    4. the row (:func:`following_row`): activities/s, deliveries/s, latency,
       the server's CPU per activity and per delivery, lost / dup / reordered
       / offset gaps, and the deliveries expected as computed here in Python
       from the same follow lists (:func:`expected_deliveries`)

The follow lists are read from the graph directly, not through the server's
``social.following``: two statements (the users who follow someone, then the
chosen users' followees, about 0.5 s for 1,000 demo users and their 11,000
follows) against 1,000 or more paged JSON-RPC calls (a user following 1,000
pages 10 times at 100), with no server to start first and none loaded by the
reading while it is measured.

Budget (the ``following`` issue): p99 <= 50 ms at 2,000 activities/s to 1,000
subscribers on 2 cores, nothing lost.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from settings import Settings

FOLLOWING_SUBSCRIBERS = 1_000
FOLLOWING_POSTS = 200
FOLLOWING_RATE = 2_000
"""Activities per second."""
FOLLOWING_P99_MS = 50.0
MIN_RATE_SHARE = 0.95
"""A run passes only if at least this share of the target rate was published."""
SEED = 42
"""The draws of the users, the posts (here) and the authors (the loadgen)."""
SYNTHETIC_POST = "bench-following-{}"
"""The posts commented on when the graph holds none (an edge list alone)."""

USERS_WHO_FOLLOW = "MATCH (u:User)-[:FOLLOWS]->(:User) RETURN DISTINCT u.id AS id"
FOLLOWEES = (
    "MATCH (u:User)-[:FOLLOWS]->(f:User) WHERE u.id IN $users RETURN u.id AS user, f.id AS followee"
)
POSTS = "MATCH (p:Post) RETURN p.id AS id"


@dataclass(frozen=True, slots=True)
class FollowLists:
    """The subscribers' follow lists and the posts they comment on.

    Attributes:
        follows: subscriber's user id → the ids of the users they follow (sorted).
        posts: post ids (``post:<id>`` is the channel commented on).
    """

    follows: Mapping[str, tuple[str, ...]]
    posts: tuple[str, ...]

    @property
    def edges(self) -> int:
        """Follows held, a user following themself excluded."""
        return sum(len(set(f) - {u}) for u, f in self.follows.items())

    def write(self, path: Path) -> None:
        """Write ``{"follows": {user: [followee, ...]}, "posts": [id, ...]}`` (the loadgen's
        ``--follows`` file)."""
        document = {"follows": {u: list(f) for u, f in self.follows.items()}, "posts": self.posts}
        path.write_text(json.dumps(document))


async def read_follow_lists(
    settings: Settings, *, users: int, posts: int, seed: int = SEED
) -> FollowLists:
    """Draw ``users`` users who follow someone and ``posts`` posts from the graph (seeded).

    Args:
        settings: reaches the graph (the demo world's data directory); the graph
            is closed again before this returns, so a server may open it next.
        users: how many users.
        posts: how many posts; a graph without posts gets synthetic ids
            (:data:`SYNTHETIC_POST`).
        seed: of both draws (``random.Random`` over the sorted ids).

    Raises:
        RuntimeError: the data directory holds no graph (it would be created
            empty), or fewer than ``users`` users follow someone.
    """
    if not (settings.data_dir / "graph").exists():
        raise RuntimeError(
            f"{settings.data_dir}: no graph there; build the demo world first: "
            f"starling load demo --data-dir {settings.data_dir}"
        )
    rng = random.Random(seed)
    graph = await settings.open_graph()
    try:
        session = graph.session()
        try:
            candidates = sorted(str(row["id"]) for row in await session.read(USERS_WHO_FOLLOW))
            if len(candidates) < users:
                raise RuntimeError(
                    f"{settings.data_dir}: {len(candidates):,} users follow someone, "
                    f"{users:,} wanted (an empty graph? run `starling load demo` first, "
                    "or pass --subscribers)"
                )
            chosen = sorted(rng.sample(candidates, users))
            follows: dict[str, list[str]] = {user: [] for user in chosen}
            for row in await session.read(FOLLOWEES, {"users": chosen}):
                follows[str(row["user"])].append(str(row["followee"]))
            known = sorted(str(row["id"]) for row in await session.read(POSTS))
        finally:
            session.close()
    finally:
        await graph.aclose()
    drawn = (
        sorted(rng.sample(known, min(posts, len(known))))
        if known
        else [SYNTHETIC_POST.format(k) for k in range(posts)]
    )
    return FollowLists({u: tuple(sorted(f)) for u, f in follows.items()}, tuple(drawn))


def expected_deliveries(follows: Mapping[str, Iterable[str]], per_author: Mapping[str, int]) -> int:
    """The pubs the subscribers should receive in all: for each subscriber, the activities of
    every user they follow, their own excluded, each once.

    Args:
        follows: subscriber → followees (a followee listed twice counts once).
        per_author: activities published per author.
    """
    return sum(
        per_author.get(author, 0)
        for user, followees in follows.items()
        for author in set(followees) - {user}
    )


def passes(row: Mapping[str, Any]) -> bool:
    """A following row is within its budget: p99 <= 50 ms, nothing lost, no connection
    missing or dropped, >= 95% of the target rate published."""
    return bool(
        row["p99_ms"] is not None
        and row["p99_ms"] <= FOLLOWING_P99_MS
        and row["lost"] == 0
        and row["disconnects"] == 0
        and row["connected"] == row["subscribers"]
        and row["events_per_s"] >= MIN_RATE_SHARE * row["rate"]
    )


def following_row(
    document: Mapping[str, Any],
    lists: FollowLists,
    *,
    duration: float,
    identity: Mapping[str, Any],
    cpu: Mapping[str, float | None],
    server: Mapping[str, Any],
) -> dict[str, Any]:
    """The row of one following run, from the loadgen's report (bench/loadgen/report.go).

    Args:
        document: the loadgen's JSON report.
        lists: the follow lists the loadgen was given.
        duration: seconds measured.
        identity: the row's first keys (scenario, clients, backend, rate, subscribers, channels).
        cpu: ``bench.realtime._cpu_columns``: CPU % per party and µs per delivery.
        server: ``bench.realtime._server_columns``: the server's own counters.

    ``events_per_s`` is activities/s (the key the medians and the knee share
    with the other scenarios); ``server_cpu_us_per_activity`` the server's
    CPU over the window per activity published in it.
    """
    producer, deliveries, frames = document["producer"], document["deliveries"], document["frames"]
    latency: Mapping[str, Any] = document["latency_ms"] or {}
    settings = document["settings"]
    per_author: dict[str, int] = producer.get("per_author") or {}
    in_window = producer["in_window"]
    server_pct = cpu.get("server_cpu_pct")
    row: dict[str, Any] = {
        **identity,
        "events_per_s": round(in_window / duration, 1),
        "deliveries_per_s": deliveries["window_per_s"],
        "deliveries_per_activity": (
            round(deliveries["in_window"] / in_window, 2) if in_window else None
        ),
        "frames_per_s": frames["window_per_s"],
        "messages_per_frame": frames["messages_per_frame"],
        "p50_ms": latency.get("p50"),
        "p99_ms": latency.get("p99"),
        "p999_ms": latency.get("p999"),
        "max_ms": latency.get("max"),
        "lost": deliveries["lost"],
        "duplicated": deliveries["duplicated"],
        "out_of_order": deliveries["out_of_order"],
        "offset_order_violations": deliveries["offset_order_violations"],
        "offset_gaps": deliveries["offset_gaps"],
        "unexpected": deliveries["unexpected"],
        "lost_pairs": deliveries.get("lost_pairs") or {},
        "losing_subscribers": deliveries["losing_subscribers"],
        "silent_subscribers": deliveries["silent_subscribers"],
        "disconnects": document["disconnected"],
        "disconnect_codes": document["disconnects"],
        "connected": document["connect"]["connected"],
        "authors": settings["authors"],
        "follow_edges": lists.edges,
        "events_total": producer["events"],
        "deliveries_total": deliveries["received"],
        "deliveries_expected": deliveries["expected"],
        "deliveries_expected_python": expected_deliveries(lists.follows, per_author),
        "producer_errors": producer["errors"],
        "producer_lag_ms": producer["max_lag_ms"],
        "producer_unsent": producer["unsent"],
        "producer_mode": producer["mode"],
        **cpu,
        "server_cpu_us_per_activity": _per(server_pct, duration, in_window),
        **server,
        "connect_error": document["connect"]["first_error"] or producer["first_error"] or None,
    }
    row["passed"] = passes(row)
    return row


def _per(pct: float | None, seconds: float, count: int) -> float | None:
    """µs of CPU per item: ``pct`` % of a core for ``seconds``, over ``count`` items."""
    if pct is None or math.isnan(pct) or count <= 0:
        return None
    return round(pct / 100 * seconds * 1e6 / count, 1)


FOLLOWING_COLUMNS = {
    "backend": "backend",
    "rate": "target/s",
    "events_per_s": "activities/s",
    "deliveries_per_s": "deliveries/s",
    "deliveries_per_activity": "dlv/activity",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "max_ms": "max ms",
    "lost": "lost",
    "duplicated": "dup",
    "out_of_order": "reordered",
    "offset_gaps": "offset gaps",
    "disconnects": "closed",
    "server_cpu_pct": "server %",
    "server_cpu_us_per_activity": "server µs/activity",
    "server_cpu_us_per_delivery": "server µs/dlv",
    "client_cpu_pct": "clients %",
    "runs": "runs",
    "passed": f"p99 ≤ {FOLLOWING_P99_MS:g} ms",
}
"""The following table's columns (row key → heading); CPU in % of one core."""
