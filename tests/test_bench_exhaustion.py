"""The resource exhaustion benchmark (``bench/exhaustion.py``), small: its attacker against a
real in-process listener with a 1 s first-bytes timeout, and its arithmetic.

Speed is measured by the benchmark, never asserted here (STYLE.md, habit 12): these tests
prove its bookkeeping — the connections the attacker says it held and how long it says
they lived, against the server's own count of the connections it closed.
"""

from __future__ import annotations

import itertools
import multiprocessing

import pytest
import trio
from starlette.applications import Starlette

from actors.realtime import Histories, Publisher
from bench.exhaustion import (
    KINDS,
    AttackPlan,
    _Attack,
    _paired,
    _percentile,
    attacker_main,
    medians,
)
from protocols.http import HttpServer
from protocols.websocket import WebSocketGateway, pub_frame

TIMEOUT = 1.0
"""The listener's first-bytes timeout, seconds."""
CONNECTIONS = 50


async def test_the_attacker_holds_its_connections_and_reports_how_long_the_server_kept_them() -> (
    None
):
    """50 silent connections: the attacker reports all 50 held, then 50 lifetimes of at least
    the server's first-bytes timeout, and the server counts 50 such closures."""
    epochs = (f"e{n}" for n in itertools.count(1))
    gateway = WebSocketGateway(
        Publisher(pub_frame, Histories(epochs=lambda _channel: next(epochs))), b"b" * 32
    )
    http = HttpServer(
        Starlette(routes=[]),
        host="127.0.0.1",
        port=0,
        graceful_timeout=1.0,
        websocket=gateway,
        first_bytes_timeout=TIMEOUT,
    )
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(http.run)
            port = int(http.binds[0].rsplit(":", 1)[1])
            plan = AttackPlan("silent", CONNECTIONS, "127.0.0.1", port)
            attacker = context.Process(target=attacker_main, args=(plan, theirs), daemon=True)
            attacker.start()
            try:
                assert await trio.to_thread.run_sync(ours.poll, 30)
                ready, held, _ramp = ours.recv()
                assert (ready, held) == ("ready", CONNECTIONS)
                ours.send("finish")
                assert await trio.to_thread.run_sync(ours.poll, 30)
                done, report = ours.recv()
            finally:
                await trio.to_thread.run_sync(attacker.join, 10)
                http.request_stop()
    assert done == "done"
    assert (len(report["lifetimes"]), report["not_closed"]) == (CONNECTIONS, 0)
    assert min(report["lifetimes"]) >= TIMEOUT
    assert http.statistics().first_bytes_timeouts >= CONNECTIONS


def test_the_percentile_is_the_nearest_rank() -> None:
    """Of 1..100, p50 is 50 and p99 is 99; of nothing, nan."""
    values = [float(n) for n in range(100, 0, -1)]
    assert (_percentile(values, 0.5), _percentile(values, 0.99)) == (50.0, 99.0)
    assert _percentile([], 0.99) != _percentile([], 0.99)  # nan


def test_an_attack_is_compared_with_the_idle_window_next_to_it() -> None:
    """``x_idle`` is the attack's p99 over its own idle window's, for each probe."""
    idle = {
        "ws_ping_p99_ms": 2.0,
        "http_rpc_p99_ms": 4.0,
        "server_cpu_pct": 5.0,
        "rest_cpu_pct": 10.0,
    }
    attack = {"case": "silent", "ws_ping_p99_ms": 3.0, "http_rpc_p99_ms": 4.0}
    row = _paired(idle, attack)
    assert (row["ws_ping_x_idle"], row["http_rpc_x_idle"]) == (1.5, 1.0)
    assert (row["idle_ws_ping_p99_ms"], row["idle_rest_cpu_pct"]) == (2.0, 10.0)


def test_medians_are_taken_row_by_row_over_the_runs() -> None:
    """Numbers become their median over the runs; text is kept from the first run."""
    runs = [[{"case": "silent", "p99": p99, "held": 5}] for p99 in (3.0, 1.0, 2.0)]
    assert medians(runs) == [{"case": "silent", "p99": 2.0, "held": 5}]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_the_command_accepts_is_one_the_attacker_holds(kind: str) -> None:
    """The attacker has a way to hold each attack ``--kinds`` accepts."""
    assert callable(_Attack(AttackPlan(kind, 1, "127.0.0.1", 1)).hold)
