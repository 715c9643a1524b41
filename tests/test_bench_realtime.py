"""``starling bench realtime`` end to end, small: a real server, real subscribers, a real producer.

Speed is measured by the benchmark, never asserted here (STYLE.md, habit 12):
these runs prove that the benchmark's bookkeeping is right on a load the
machine carries easily (20 subscribers on 4 channels, 200 events/s, 2 s):
every event reaches every subscriber of its channel once, and the JSON has
its documented keys. Each count the benchmark reports is checked against
one kept apart from it: what the subscribers received against what the
producer says it published per channel (subscriber ``j`` reads channel
``j % CHANNELS``), and both against the server's own counters
(``system.stats``: publications made, offers accepted by sessions). The
Redis run starts the benchmark's own private ``redis-server`` (the shared
test Redis is left alone: the stream and the sequencer keys of the server
are not namespaced).

Both kinds of clients run: the Python processes, and the native Go load
generator (``make bench-tools``; skipped when ``go`` is not on PATH).

The ``following`` scenario runs on a small follow graph loaded by the CLI
(:data:`FOLLOWING_EDGES`): the follow lists the benchmark reads are checked
against that edge list, and the pubs the loadgen counted against the
expectation computed in Python from the same follow lists and against the
server's own count of deliveries.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from bench import following
from bench.following import FollowLists, read_follow_lists
from bench.realtime import (
    TABLE_COLUMNS,
    cluster_overhead,
    command,
    medians,
    parse_backends,
    parse_rates,
    partition_keys,
    store_url_for,
)
from bench.realtime_native import LOADGEN, LoadgenPlan
from cli import main
from settings import Settings
from stores.redis_cluster import DEFAULT_PARTITIONS

SUBSCRIBERS, CHANNELS, RATE = 20, 4, 200
WARMUP, DURATION = 1, 2
"""Seconds of the run: the producer sends for ``WARMUP + DURATION`` seconds."""

ROW_KEYS = {
    "backend",
    "rate",
    "subscribers",
    "channels",
    "events_per_s",
    "deliveries_per_s",
    "frames_per_s",
    "messages_per_frame",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "lost",
    "duplicated",
    "disconnects",
    "connected",
    "events_total",
    "deliveries_total",
    "deliveries_expected",
    "producer_errors",
    "producer_lag_ms",
    "server_cpu_pct",
    "client_cpu_pct",
    "producer_cpu_pct",
    "redis_cpu_pct",
    "other_cpu_pct",
    "connect_error",
    "passed",
    "out_of_order",
    "server_cpu_us_per_delivery",
}
REPO = Path(__file__).resolve().parents[1]


def smoke(backend: str, output: Path, clients: str = "python") -> dict[str, Any]:
    """Run the small benchmark on ``backend`` with ``clients``; the JSON document it wrote."""
    arguments = [
        "--clients",
        clients,
        "--backend",
        backend,
        "--subscribers",
        str(SUBSCRIBERS),
        "--channels",
        str(CHANNELS),
        "--rate",
        str(RATE),
        "--duration",
        str(DURATION),
        "--warmup",
        str(WARMUP),
        "--drain",
        "5",
        "--output",
        str(output),
    ]
    result = CliRunner().invoke(command, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(output.read_text())
    return document


def expected_deliveries(per_channel: list[int]) -> int:
    """What the subscribers should receive in all (subscriber ``j`` reads ``j % CHANNELS``)."""
    return sum(per_channel[j % CHANNELS] for j in range(SUBSCRIBERS))


def check(document: dict[str, Any], backend: str) -> None:
    """Every event reached every subscriber of its channel exactly once, by three counts kept
    apart (the producer's, the subscribers', the server's); the keys are there."""
    assert {"benchmark", "command", "machine", "budget", "settings", "summary", "knee", "rows"} <= (
        document.keys()
    )
    assert document["benchmark"] == "realtime"
    assert {"cpus", "python"} <= document["machine"].keys()
    [row] = document["rows"]
    assert row.keys() >= ROW_KEYS
    assert row["backend"] == backend
    assert row["connected"] == SUBSCRIBERS, row["connect_error"]
    assert row["lost"] == 0
    assert row["duplicated"] == 0
    assert row["disconnects"] == 0
    assert row["producer_errors"] == 0
    # What the producer published: round-robin over the channels, never more than planned.
    per_channel = row["events_per_channel"]
    assert len(per_channel) == CHANNELS
    assert sum(per_channel) == row["events_total"]
    assert max(per_channel) - min(per_channel) <= 1
    assert 0 < row["events_total"] <= RATE * (WARMUP + DURATION)
    # The server counted every one of them published once, and nothing else.
    assert row["server_published"] == row["events_total"]
    # The subscribers received exactly what their channels carried, as the server delivered it.
    assert row["deliveries_total"] == expected_deliveries(per_channel)
    assert row["deliveries_expected"] == row["deliveries_total"]
    assert row["server_delivered"] == row["deliveries_total"]
    assert row["server_cpu_pct"] is not None
    assert row["server_cpu_us_per_delivery"] is not None


def test_memory_backend_delivers_every_event_once(tmp_path: Path) -> None:
    """On the memory backend every published event reaches its channel's 5 subscribers once."""
    check(smoke("memory", tmp_path / "realtime.json"), "memory")


@pytest.mark.redis
def test_redis_backend_delivers_every_event_once(tmp_path: Path) -> None:
    """On a private Redis every XADDed event reaches its channel's 5 subscribers once."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    document = smoke("redis", tmp_path / "realtime.json")
    check(document, "redis")
    assert document["rows"][0]["redis_cpu_pct"] is not None


def test_rates_parse_with_k_suffix_and_commas() -> None:
    """``--rate`` takes repeated values, comma lists and a ``k`` suffix."""
    assert parse_rates(["20000", "2.5k, 5k"]) == (20_000, 2_500, 5_000)
    with pytest.raises(ValueError, match="must be >= 1"):
        parse_rates(["0"])


def test_backends_parse_as_a_comma_list() -> None:
    """``--backend`` takes one name or several, ``both`` meaning memory and redis."""
    assert parse_backends("both") == ["memory", "redis"]
    assert parse_backends("redis, redis-cluster") == ["redis", "redis-cluster"]
    assert parse_backends("redis,both") == ["redis", "memory"]
    with pytest.raises(ValueError, match="unknown backend 'cluster'"):
        parse_backends("cluster")


def test_redis_url_serves_the_backend_of_its_scheme() -> None:
    """A ``redis+cluster://`` URL stands for the cluster backend, another for the single Redis;
    the other backend gets a private service."""
    cluster, single = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001", "redis://127.0.0.1:6379/0"
    assert store_url_for("redis-cluster", cluster) == cluster
    assert store_url_for("redis", cluster) is None
    assert store_url_for("redis", single) == single
    assert store_url_for("redis-cluster", single) is None
    assert store_url_for("memory", single) is None


def test_cluster_producer_gets_the_servers_partition_keys() -> None:
    """The loadgen gets each partition's stream, offsets and generation keys as the server
    names them (stores.partitions), in partition order; a single Redis gets none."""
    keys = partition_keys("redis+cluster://127.0.0.1:7000?partitions=3")
    assert len(keys) == 3
    assert [k[0].rpartition(":{")[0] for k in keys] == ["starling:events"] * 3
    assert all(len({k.rpartition(":")[2] for k in triple}) == 1 for triple in keys)  # one tag
    assert len(partition_keys("redis+cluster://127.0.0.1:7000")) == DEFAULT_PARTITIONS
    assert partition_keys("redis://127.0.0.1:6379/0") == ()
    plan = LoadgenPlan(
        workload="fanout",
        server="http://127.0.0.1:1",
        secret="s",
        run="r",
        subscribers=20,
        channels=4,
        rate=200,
        producer="redis",
        redis_url="redis+cluster://127.0.0.1:7000?partitions=3",
        partition_keys=keys,
    )
    arguments = plan.arguments()
    flags = dict(zip(arguments[::2], arguments[1::2], strict=True))
    assert flags["--stream-keys"] == ",".join(k[0] for k in keys)
    assert flags["--offsets-keys"] == ",".join(k[1] for k in keys)
    assert flags["--generation-keys"] == ",".join(k[2] for k in keys)


def test_cluster_overhead_compares_server_cpu_per_event_at_each_rate() -> None:
    """The overhead row is the cluster's server CPU per event over the single Redis's, minus one,
    per rate measured on both, and passes within 20 %."""
    summary = [
        {"backend": "redis", "rate": 5000, "server_cpu_us_per_event": 100.0},
        {"backend": "redis-cluster", "rate": 5000, "server_cpu_us_per_event": 115.0},
        {"backend": "redis", "rate": 11000, "server_cpu_us_per_event": 80.0},
        {"backend": "redis-cluster", "rate": 11000, "server_cpu_us_per_event": 100.0},
        {"backend": "memory", "rate": 5000, "server_cpu_us_per_event": 50.0},
    ]
    low, high = cluster_overhead(summary)
    assert (low["rate"], low["extra_server_cpu_per_event"], low["passed"]) == (5000, 0.15, True)
    assert (high["rate"], high["extra_server_cpu_per_event"]) == (11000, 0.25)
    assert not high["passed"]
    assert cluster_overhead(summary[:1]) == []


def test_table_headings_cover_the_budget_figures() -> None:
    """The table shows latency, throughput, losses and CPU for each run."""
    assert {"p99_ms", "events_per_s", "deliveries_per_s", "lost", "server_cpu_pct"} <= set(
        TABLE_COLUMNS
    )


@functools.cache
def built_loadgen() -> Path:
    """``make bench-tools`` once per session; the binary (skips without Go)."""
    if shutil.which("go") is None:
        pytest.skip("the Go toolchain is not on PATH (the native load generator needs Go >= 1.22)")
    result = subprocess.run(
        ["make", "bench-tools"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return LOADGEN


def test_loadgen_go_tests_pass() -> None:
    """The loadgen's own tests pass: array and single frames, duplicates, reordering, the window."""
    built_loadgen()
    result = subprocess.run(
        ["go", "test", "./..."],
        cwd=LOADGEN.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def check_native(document: dict[str, Any], backend: str) -> None:
    """The native run's counts agree as :func:`check` says, and nothing arrived out of order."""
    check(document, backend)
    [row] = document["rows"]
    assert row["clients"] == "native"
    assert row["out_of_order"] == 0
    assert row["offset_order_violations"] == 0


def test_native_memory_backend_delivers_every_event_once(tmp_path: Path) -> None:
    """With the Go loadgen publishing over HTTP, every event reaches its 5 subscribers once."""
    built_loadgen()
    check_native(smoke("memory", tmp_path / "realtime.json", clients="native"), "memory")


@pytest.mark.redis
def test_native_redis_backend_delivers_every_event_once(tmp_path: Path) -> None:
    """With the Go loadgen XADDing to its own Redis, every event reaches its 5 subscribers once."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    built_loadgen()
    check_native(smoke("redis", tmp_path / "realtime.json", clients="native"), "redis")


def test_loadgen_plan_passes_the_scenario_as_flags() -> None:
    """The driver hands the loadgen its numbers as flags, durations in Go's syntax."""
    plan = LoadgenPlan(
        workload="fanout",
        server="http://127.0.0.1:1",
        secret="s",
        run="r",
        subscribers=20,
        channels=4,
        rate=200,
        duration=2.5,
        producer="redis",
        redis_url="redis://127.0.0.1:2/0",
    )
    arguments = plan.arguments()
    flags = dict(zip(arguments[::2], arguments[1::2], strict=True))
    assert flags["--scenario"] == "fanout"
    assert flags["--duration"] == "2.5s"
    assert flags["--rate"] == "200"
    assert flags["--producer"] == "redis"
    assert flags["--redis-url"] == "redis://127.0.0.1:2/0"
    assert "--secret" not in flags  # the secret goes in the environment, not in ps


def test_medians_keep_the_worst_loss_and_skip_lists() -> None:
    """A row of medians takes losses from the worst run and leaves per-channel lists out."""
    run = {
        "scenario": "fanout",
        "clients": "native",
        "backend": "redis",
        "rate": 100,
        "subscribers": 2,
        "channels": 1,
        "events_per_s": 100.0,
        "p99_ms": 3.0,
        "lost": 0,
        "disconnects": 0,
        "connected": 2,
        "events_per_channel": [1000],
        "connect_error": None,
        "passed": True,
    }
    row = medians([run, {**run, "lost": 2, "p99_ms": 5.0}, {**run, "p99_ms": 4.0}])
    assert row["lost"] == 2
    assert row["p99_ms"] == 4.0
    assert "events_per_channel" not in row
    assert row["passed"] is False


# -- the following scenario -------------------------------------------------------------

FOLLOWING_USERS = 120
"""Users 1..120 of the small follow graph."""
FOLLOWING_EDGES = sorted(
    {
        (i, (i * 13 + 7 * k * k) % FOLLOWING_USERS + 1)
        for i in range(1, FOLLOWING_USERS + 1)
        for k in range(1, i % 7 + 1)
    }
    | {(i, 1 + i % 3) for i in range(3, FOLLOWING_USERS + 1, 3)}
)
"""User ``i`` follows ``i % 7`` users spread around (none when ``i % 7 == 0``), and every
third user also follows one of the popular users 1-3: a few authors with many followers."""
FOLLOWING_SUBSCRIBERS, FOLLOWING_RATE = 50, 200


def following_graph(directory: Path) -> Path:
    """A data directory whose graph holds :data:`FOLLOWING_EDGES`, loaded by the CLI."""
    edges = directory / "edges.txt"
    edges.write_text("".join(f"{a} {b}\n" for a, b in FOLLOWING_EDGES if a != b))
    data = directory / "data"
    result = CliRunner().invoke(
        main, ["load", "graph", str(edges), "--header", "no", "--data-dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    return data


def test_follow_lists_are_the_graphs(tmp_path: Path) -> None:
    """The benchmark draws users who follow someone, each with exactly their follows in the
    graph, and synthetic posts when the graph has none."""
    data = following_graph(tmp_path)
    settings = Settings.resolve(data, None, None)
    lists: FollowLists = trio.run(
        functools.partial(read_follow_lists, settings, users=FOLLOWING_SUBSCRIBERS, posts=10)
    )
    followees: dict[str, set[str]] = {}
    for a, b in FOLLOWING_EDGES:
        if a != b:
            followees.setdefault(str(a), set()).add(str(b))
    assert len(lists.follows) == FOLLOWING_SUBSCRIBERS
    assert {u: set(f) for u, f in lists.follows.items()} == {u: followees[u] for u in lists.follows}
    assert lists.posts == tuple(f"bench-following-{k}" for k in range(10))
    again = trio.run(
        functools.partial(read_follow_lists, settings, users=FOLLOWING_SUBSCRIBERS, posts=10)
    )
    assert again == lists  # seeded


def test_expected_deliveries_skip_the_authors_own_activities() -> None:
    """Each subscriber expects every activity of each user they follow once, never their own."""
    follows = {"a": ["b", "c", "a"], "b": ["c", "c"], "d": ["e"]}
    assert following.expected_deliveries(follows, {"a": 5, "b": 3, "c": 2}) == 3 + 2 + 2


def test_following_flags_reach_the_loadgen(tmp_path: Path) -> None:
    """The following plan hands the loadgen its follows file and seed."""
    plan = LoadgenPlan(
        workload="following",
        server="http://127.0.0.1:1",
        secret="s",
        run="r",
        subscribers=50,
        channels=10,
        rate=200,
        producer="http",
        follows=tmp_path / "follows.json",
        seed=7,
    )
    arguments = plan.arguments()
    flags = dict(zip(arguments[::2], arguments[1::2], strict=True))
    assert flags["--scenario"] == "following"
    assert flags["--follows"] == str(tmp_path / "follows.json")
    assert flags["--seed"] == "7"


def following_smoke(backend: str, tmp_path: Path) -> dict[str, Any]:
    """The small following run on ``backend``; its one row."""
    data = following_graph(tmp_path)
    output = tmp_path / "realtime-following.json"
    arguments = ["--scenario", "following", "--clients", "native", "--backend", backend]
    arguments += ["--data-dir", str(data), "--subscribers", str(FOLLOWING_SUBSCRIBERS)]
    arguments += ["--channels", "10", "--rate", str(FOLLOWING_RATE)]
    arguments += ["--duration", str(DURATION), "--warmup", str(WARMUP), "--drain", "5"]
    arguments += ["--output", str(output)]
    result = CliRunner().invoke(command, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(output.read_text())
    assert document["benchmark"] == "realtime-following"
    assert document["budget"]["p99_ms"] == 50.0
    [row] = document["rows"]
    return row


def check_following(row: dict[str, Any], backend: str) -> None:
    """Every activity reached each subscribed follower of its author but the author, once and
    in order, on consecutive offsets, by three counts kept apart: the loadgen's, the one
    computed in Python from the follow lists, the server's."""
    assert row["scenario"] == "following"
    assert row["backend"] == backend
    assert row["connected"] == FOLLOWING_SUBSCRIBERS, row["connect_error"]
    assert row["producer_errors"] == 0
    assert 0 < row["events_total"] <= FOLLOWING_RATE * (WARMUP + DURATION)
    assert row["deliveries_total"] > row["events_total"]  # popular authors: several recipients
    assert row["deliveries_total"] == row["deliveries_expected"]
    assert row["deliveries_total"] == row["deliveries_expected_python"]
    assert row["server_delivered"] == row["deliveries_total"]
    # The server published each activity once, and one publication per recipient.
    assert row["server_published"] == row["events_total"] + row["deliveries_total"]
    assert (row["lost"], row["duplicated"], row["unexpected"]) == (0, 0, 0)
    assert (row["out_of_order"], row["offset_gaps"], row["offset_order_violations"]) == (0, 0, 0)
    assert row["disconnects"] == 0
    assert row["server_cpu_us_per_activity"] is not None
    assert row["server_cpu_us_per_delivery"] is not None


def test_native_following_delivers_each_activity_to_the_authors_followers(
    tmp_path: Path,
) -> None:
    """On the memory backend, 50 users reading following:<me> get every comment of the users
    they follow once, in order, and nothing else."""
    built_loadgen()
    check_following(following_smoke("memory", tmp_path), "memory")


@pytest.mark.redis
def test_native_following_on_redis_delivers_each_activity_to_the_authors_followers(
    tmp_path: Path,
) -> None:
    """With the comments appended by FCALL to a private Redis, the same holds."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    built_loadgen()
    check_following(following_smoke("redis", tmp_path), "redis")
