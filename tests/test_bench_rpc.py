"""The native load generator of JSON-RPC calls over the WebSocket (``bench/rpc_native.py``),
end to end and small: a real in-process server, a graph loaded by the CLI, about a second
of ``social.counts`` pipelined on two connections.

Speed is measured by the benchmark, never asserted here (STYLE.md, habit 12): this run
proves the load generator's bookkeeping against counts kept apart from it — every
result against the counts of the edge list the graph was loaded from, and the calls it
sent against the server's own count of ``social.counts`` calls (``GET /metrics``).
Skipped when ``go`` is not on PATH.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio
from click.testing import CliRunner

from bench.rpc_native import RPCLOAD, build_rpcload, run_rpc_load
from tests.in_process import invoke_in_thread, serving

USERS = 12
"""Users 1..12; user i follows the next i % 4 + 1 users, around the circle."""
EDGES = [(i, (i + d) % USERS + 1) for i in range(1, USERS + 1) for d in range(i % 4 + 1)]
TIMEOUT = 60.0
"""Seconds the end-to-end test may take."""
COUNTS_OK = re.compile(r'^starling_rpc_calls_total\{method="social.counts",outcome="ok"\} (\S+)$')


@functools.cache
def built() -> Path:
    """``go build`` of bench/rpcload once per session; the binary (skips without Go)."""
    if shutil.which("go") is None:
        pytest.skip("the Go toolchain is not on PATH (starling-rpcload needs Go >= 1.22)")
    return build_rpcload()


def test_rpcload_go_tests_pass() -> None:
    """The load generator's own tests pass: replies matched by id in any order, errors by
    code, the window, recorded results, request frames, and never more than depth in flight."""
    built()
    result = subprocess.run(
        ["go", "test", "./..."],
        cwd=RPCLOAD.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def served_counts_calls(client: httpx.AsyncClient) -> float:
    """The server's count of ``social.counts`` calls answered ok (``GET /metrics``)."""
    text = (await client.get("/metrics")).text
    found = [float(m[1]) for line in text.splitlines() if (m := COUNTS_OK.match(line))]
    return sum(found)


async def test_every_call_is_answered_with_the_graphs_counts(tmp_path: Path) -> None:
    """About a second of social.counts on 2 connections × 16 in flight: every call sent is
    answered ok (no error, nothing unanswered or unmatched), each user's only result is the
    counts of the edge list, the results add up to the calls, and the server counted
    exactly the calls the load generator sent."""
    built()
    edges = tmp_path / "edges.txt"
    edges.write_text("".join(f"{a} {b}\n" for a, b in EDGES))
    following = Counter(a for a, _ in EDGES)
    followers = Counter(b for _, b in EDGES)
    expected = {
        str(u): [{"following": following[u], "followers": followers[u]}]
        for u in range(1, USERS + 1)
    }
    directory = tmp_path / "data"
    loaded = await invoke_in_thread(
        CliRunner(),
        ["load", "graph", str(edges), "--header", "no", "--data-dir", str(directory)],
    )
    assert loaded.exit_code == 0, loaded.output

    with trio.fail_after(TIMEOUT):
        async with serving(directory) as server, httpx.AsyncClient(base_url=server.url) as http:
            before = await served_counts_calls(http)
            report = await trio.to_thread.run_sync(
                functools.partial(
                    run_rpc_load,
                    server.url,
                    server.secret,
                    "social.counts",
                    [{"user": user} for user in expected],
                    connections=2,
                    depth=16,
                    seconds=1.0,
                    warmup=0.25,
                    record_results=True,
                )
            )
            served = await served_counts_calls(http) - before

    totals = report["totals"]
    assert totals["errors"] == report["errors"] == {}, totals["first_error"]
    assert totals["sent"] == totals["replies"] == totals["ok"] == served
    assert (totals["unanswered"], totals["unmatched"], totals["malformed"]) == (0, 0, 0)
    assert totals["drained"] is True
    assert report["connections"] == {"opened": 2, "closed_early": 0, "close_codes": {}}
    results = {line["params"]["user"]: line["distinct"] for line in report["results"]}
    assert results == expected
    assert sum(line["calls"] for line in report["results"]) == totals["ok"]
    assert all(line["more"] == 0 for line in report["results"])
    assert report["latency_ms"]["count"] == report["completed"] == report["ok"]
    assert report["completed"] <= totals["replies"]
    per_second = report["completed"] / report["window"]["seconds"]
    assert report["calls_per_s"] == pytest.approx(per_second, abs=0.1)
