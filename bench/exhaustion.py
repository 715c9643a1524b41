"""Resource exhaustion benchmark: a normal client's latency while thousands of connections
hold sockets and do nothing useful (issue 14).

Run it as ``starling bench exhaustion``. One run is a fresh ``starling serve`` (a temp
data dir, ``memory://``, the default timeouts), then for each attack an idle window
(the probe alone: the baseline, taken next to the attack because a shared machine's
load drifts) and the attack::

    silent           N TCP connections that send nothing
                     (closed at --first-bytes-timeout, 10 s)
    http-slowloris   N ``POST /rpc`` request heads sent a byte a second
                     (closed at --http-keep-alive-timeout, 5 s: hypercorn's header limit)
    ws-slowloris     N ``GET /ws`` upgrade requests sent a byte a second (closed at
                     --ws-handshake-timeout, 10 s, after the 8 bytes that tell /ws from HTTP)
    unauthenticated  N completed WebSocket handshakes that never authenticate
                     (closed 4001 at --ws-auth-timeout, 10 s)

Processes: this one (starts the others, samples the server's CPU and memory), the
server, the attacker (trio: opens the N connections, at most :data:`CONNECTING` at
once; with ``--reconnect`` it reopens each one the server closes, a sustained attack
that is also a reconnect storm at every timeout) and the probe (trio: the normal
client). Once the attacker holds its N, the probe measures, at :data:`PROBE_RATE`
requests a second of each, for ``--seconds`` and then until the server has closed the
attacker's N connections (so the window holds the attack and its end):

    ws ping    a JSON-RPC ``ping`` on one WebSocket authenticated with a user's token
    http rpc   ``POST /rpc`` ``social.counts`` on a new TCP connection each time (so the
               accept of a new client is measured too)

The attacker reports how long its first N lived (``lived_s``: their timeout, as the
server applied it). Per attack: the probe's p50, p99 and max in milliseconds and its errors,
its p99 over the idle window's p99 (``x_idle``: the issue's budget is 2), the connections held
when the probe started and ended, the server's and the attacker's CPU (100 % = one
core), the server's RSS, and ``rest_cpu_pct``: what the rest of the machine used
meanwhile (the probe, and on a shared machine everyone else: read the latencies
beside it).
``--runs N``: every figure is the median of N runs (a fresh server each).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import click
import trio
from rich.console import Console
from trio_websocket import open_websocket_url

from auth.tokens import issue_token
from bench.realtime import cpu_seconds, machine_cpu_seconds
from bench.realtime_native import rss_bytes
from bench.report import print_table, write_json
from bench.serving import serve_process

KINDS: Final = ("silent", "http-slowloris", "ws-slowloris", "unauthenticated")
"""The attacks, in the order a run measures them (after ``idle``)."""
CONNECTIONS: Final = 5_000
PROBE_RATE: Final = 40.0
"""Requests a second of each probe (under a user's 50/s connection rate limit)."""
REQUEST_TIMEOUT: Final = 10.0
"""Seconds after which a probe request counts as an error."""
CONNECTING: Final = 200
"""The attacker's connects (and handshakes) in flight at once."""
TRICKLE: Final = 1.0
"""Seconds between two bytes of a slowloris connection."""
READY_TIMEOUT: Final = 180.0
"""Seconds the attacker may take to open its connections."""
FINISH_TIMEOUT: Final = 60.0
"""Seconds the attacker waits for the server to close its first connections."""
SERVER_START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 10.0
SECRET: Final = "starling-bench-exhaustion-secret-0123456789"

HTTP_HEAD: Final = b"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 4096
WS_HEAD: Final = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"X-Slow: " + b"s" * 4096
)
"""Request heads that never end within a timeout at a byte a second."""
UPGRADE: Final = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
RPC_BODY: Final = b'{"jsonrpc":"2.0","id":1,"method":"social.counts","params":{"user":"alice"}}'
RPC_REQUEST: Final = (
    b"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(RPC_BODY)
) + RPC_BODY


# -- the attacker (a child process) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttackPlan:
    """What the attacker does: ``connections`` of ``kind`` to ``host:port``, reopened when
    the server closes them if ``reconnect``."""

    kind: str
    connections: int
    host: str
    port: int
    reconnect: bool = False


class _Attack:
    """The attacker's state: its first generation's lifetimes and what is open now."""

    def __init__(self, plan: AttackPlan) -> None:
        self.plan = plan
        self.open = 0
        self.opened_first = 0
        self.ramped = trio.Event()
        self.first_left = plan.connections
        self.first_closed = trio.Event()
        self.lifetimes: list[float] = []
        self.reopened = 0
        self.errors = 0
        self.connecting = trio.CapacityLimiter(CONNECTING)
        self.hold: Callable[[trio.SocketStream], Awaitable[None]] = {
            "silent": _until_closed,
            "http-slowloris": _trickling(HTTP_HEAD),
            "ws-slowloris": _trickling(WS_HEAD),
            "unauthenticated": _unauthenticated,
        }[plan.kind]

    async def slot(self) -> None:
        """One connection of the N (reopened each time the server closes it, with
        ``reconnect``)."""
        first = True
        while True:
            try:
                async with self.connecting:
                    started = trio.current_time()
                    stream = await trio.open_tcp_stream(self.plan.host, self.plan.port)
                    if self.plan.kind == "unauthenticated":
                        await _handshake(stream)
            except (OSError, trio.BrokenResourceError):
                self.errors += 1
                await trio.sleep(0.1)
                continue
            self.open += 1
            if first:
                self.opened_first += 1
                if self.opened_first == self.plan.connections:
                    self.ramped.set()
            try:
                await self.hold(stream)
            finally:
                self.open -= 1
                with trio.CancelScope(shield=True):
                    await stream.aclose()
            if first:
                self.lifetimes.append(trio.current_time() - started)
                self.first_left -= 1
                if not self.first_left:
                    self.first_closed.set()
            else:
                self.reopened += 1
            if not self.plan.reconnect:
                return
            first = False


async def _until_closed(stream: trio.SocketStream) -> None:
    """Wait until the server closes (or resets) the connection, ignoring what it sends."""
    while True:
        try:
            if not await stream.receive_some():
                return
        except trio.BrokenResourceError:
            return


def _trickling(head: bytes) -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def hold(stream: trio.SocketStream) -> None:
        """Send ``head`` a byte every :data:`TRICKLE` seconds (on a fixed schedule, so a
        late byte does not delay the next) until the server closes."""

        async def trickle() -> None:
            start = trio.current_time()
            for index, byte in enumerate(head):
                await trio.sleep_until(start + index * TRICKLE)
                try:
                    await stream.send_all(bytes((byte,)))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            await _until_closed(stream)
            nursery.cancel_scope.cancel()

    return hold


async def _handshake(stream: trio.SocketStream) -> None:
    """Send the upgrade request and read the 101 answer."""
    await stream.send_all(UPGRADE)
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = await stream.receive_some()
        if not data:
            raise trio.BrokenResourceError("closed during the handshake")
        answer += data


async def _unauthenticated(stream: trio.SocketStream) -> None:
    """Hold a WebSocket without authenticating until the server's close frame (or EOF)."""
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.receive_some()


async def _attack(plan: AttackPlan, conn: Connection) -> None:
    attack = _Attack(plan)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(plan.connections):
            nursery.start_soon(attack.slot)
        with trio.move_on_after(READY_TIMEOUT):
            await attack.ramped.wait()
        conn.send(("ready", attack.open, trio.current_time() - started))
        await trio.to_thread.run_sync(conn.recv)
        held_at_end = attack.open
        with trio.move_on_after(FINISH_TIMEOUT):
            await attack.first_closed.wait()
        nursery.cancel_scope.cancel()
    conn.send(
        (
            "done",
            {
                "held_at_end": held_at_end,
                "lifetimes": attack.lifetimes,
                "not_closed": attack.first_left,
                "reopened": attack.reopened,
                "connect_errors": attack.errors,
            },
        )
    )


def attacker_main(plan: AttackPlan, conn: Connection) -> None:
    """The attacker process: hold the connections until told to finish, report."""
    trio.run(_attack, plan, conn)


# -- the probe (a child process) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """The normal client: requests at ``rate`` a second of each kind until told to stop (at
    most ``max_seconds``)."""

    host: str
    port: int
    rate: float
    max_seconds: float


async def _probe(plan: ProbePlan, conn: Connection) -> dict[str, Any]:
    token = issue_token(SECRET.encode(), "alice", ttl_seconds=3600)
    url = f"ws://{plan.host}:{plan.port}/ws?token={token}"
    samples: dict[str, list[float]] = {"ws ping": [], "http rpc": []}
    errors = {"ws ping": 0, "http rpc": 0}

    stop = trio.Event()

    async def paced(name: str, once: Callable[[], Awaitable[bool]]) -> None:
        start = trio.current_time()
        for tick in range(int(plan.max_seconds * plan.rate)):
            await trio.sleep_until(start + tick / plan.rate)
            if stop.is_set():
                return
            began = time.perf_counter()
            ok = False
            with trio.move_on_after(REQUEST_TIMEOUT):
                try:
                    ok = await once()
                except (OSError, trio.BrokenResourceError):
                    ok = False
            if ok:
                samples[name].append((time.perf_counter() - began) * 1000)
            else:
                errors[name] += 1

    async def http_rpc() -> bool:
        stream = await trio.open_tcp_stream(plan.host, plan.port)
        async with stream:
            await stream.send_all(RPC_REQUEST)
            answer = b""
            while data := await stream.receive_some():
                answer += data
        return answer.startswith(b"HTTP/1.1 200")

    async with open_websocket_url(url) as ws:
        ids = iter(range(1, 1 << 30))

        async def ws_ping() -> bool:
            id = next(ids)
            await ws.send_message(f'{{"jsonrpc":"2.0","id":{id},"method":"ping"}}')
            return await ws.get_message() == f'{{"jsonrpc":"2.0","result":{{}},"id":{id}}}'

        async def stopped() -> None:
            await trio.to_thread.run_sync(conn.recv, abandon_on_cancel=True)
            stop.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stopped)
            async with trio.open_nursery() as probes:
                probes.start_soon(paced, "ws ping", ws_ping)
                probes.start_soon(paced, "http rpc", http_rpc)
            nursery.cancel_scope.cancel()
    return {"samples": samples, "errors": errors}


def probe_main(plan: ProbePlan, conn: Connection) -> None:
    """The probe process: measure until told to stop, send the samples back."""
    conn.send(trio.run(_probe, plan, conn))


# -- the parent ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A running ``starling serve``: its pid, host and port."""

    pid: int
    host: str
    port: int


@contextlib.contextmanager
def running_server(connections: int) -> Iterator[Server]:
    """``starling serve`` on a free port with a temp data dir, until the block ends.

    Raises:
        RuntimeError: it did not answer ``/health`` in time (the message ends with its log).
    """
    with (
        tempfile.TemporaryDirectory(prefix="starling-bench-exhaustion-") as directory,
        serve_process(
            ["--ws-max-connections", str(2 * connections + 100)],
            data_dir=Path(directory),
            log=Path(directory) / "server.log",
            secret=SECRET,
            start_timeout=SERVER_START_TIMEOUT,
            stop_timeout=STOP_TIMEOUT,
        ) as (process, url),
    ):
        yield Server(process.pid, "127.0.0.1", int(url.rsplit(":", 1)[1]))


def _percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; ``nan`` if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def phase(
    server: Server, kind: str, *, connections: int, seconds: float, reconnect: bool = False
) -> dict[str, Any]:
    """One phase: the attack ``kind`` (or ``idle``) while the probe measures, for ``seconds``
    and then until the server has closed the attacker's first connections."""
    context = multiprocessing.get_context("spawn")
    attacker = None
    ramp = math.nan
    held = 0
    if kind != "idle":
        ours, theirs = context.Pipe()
        plan = AttackPlan(kind, connections, server.host, server.port, reconnect)
        attacker = context.Process(target=attacker_main, args=(plan, theirs), daemon=True)
        attacker.start()
        if not ours.poll(READY_TIMEOUT + 30):
            raise RuntimeError(f"{kind}: the attacker did not report")
        _, held, ramp = ours.recv()
    probe_ours, probe_theirs = context.Pipe()
    longest = seconds + FINISH_TIMEOUT + 60
    probe = context.Process(
        target=probe_main,
        args=(ProbePlan(server.host, server.port, PROBE_RATE, longest), probe_theirs),
        daemon=True,
    )
    rss = rss_bytes(server.pid)  # the connections held
    attacking = attacker.pid if attacker is not None and attacker.pid is not None else None
    cpu, busy = cpu_seconds(server.pid), machine_cpu_seconds()
    attacker_cpu = cpu_seconds(attacking) if attacking is not None else 0.0
    began = time.monotonic()
    probe.start()
    time.sleep(seconds)
    report: dict[str, Any] = {}
    if attacker is not None:
        ours.send("finish")
        if ours.poll(FINISH_TIMEOUT + 30):
            _, report = ours.recv()
    probe_ours.send("stop")
    measured = probe_ours.recv()
    window = time.monotonic() - began
    cpu, busy = cpu_seconds(server.pid) - cpu, machine_cpu_seconds() - busy
    if attacking is not None:
        attacker_cpu = cpu_seconds(attacking) - attacker_cpu
    probe.join()
    if attacker is not None:
        attacker.join(STOP_TIMEOUT)
        if attacker.is_alive():
            attacker.kill()
    time.sleep(1.0)  # let the server close what the attacker left
    lifetimes = report.get("lifetimes", [])
    row: dict[str, Any] = {"case": kind, "held_at_start": held, "held_at_end": 0}
    row["held_at_end"] = report.get("held_at_end", 0)
    for name, samples in measured["samples"].items():
        key = name.replace(" ", "_")
        row[f"{key}_p50_ms"] = _percentile(samples, 0.50)
        row[f"{key}_p99_ms"] = _percentile(samples, 0.99)
        row[f"{key}_max_ms"] = max(samples, default=math.nan)
        row[f"{key}_errors"] = measured["errors"][name]
    row["lived_median_s"] = statistics.median(lifetimes) if lifetimes else math.nan
    row["lived_max_s"] = max(lifetimes, default=math.nan)
    row["not_closed"] = report.get("not_closed", 0)
    row["reopened"] = report.get("reopened", 0)
    row["ramp_s"] = ramp
    row["window_s"] = window
    row["server_cpu_pct"] = 100 * cpu / window
    row["attacker_cpu_pct"] = 100 * attacker_cpu / window
    row["rest_cpu_pct"] = 100 * (busy - cpu - attacker_cpu) / window
    row["server_rss_mib"] = (rss or 0) / (1 << 20)
    return row


def _paired(idle: dict[str, Any], attack: dict[str, Any]) -> dict[str, Any]:
    """The attack's row with the idle window's p99s, CPU, and the ratios (``x_idle``)."""
    row = dict(attack)
    for key in ("ws_ping", "http_rpc"):
        row[f"idle_{key}_p99_ms"] = idle[f"{key}_p99_ms"]
        row[f"{key}_x_idle"] = attack[f"{key}_p99_ms"] / idle[f"{key}_p99_ms"]
    row["idle_server_cpu_pct"] = idle["server_cpu_pct"]
    row["idle_rest_cpu_pct"] = idle["rest_cpu_pct"]
    return row


def medians(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Row by row, the median of every number over the runs."""
    rows = []
    for same in zip(*runs, strict=True):
        row: dict[str, Any] = {}
        for key, value in same[0].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                row[key] = statistics.median(r[key] for r in same)
            else:
                row[key] = value
        rows.append(row)
    return rows


def _raise_descriptor_limit() -> None:
    """Soft open-files limit up to the hard one (the children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_SHOWN: Final = {
    "case": "case",
    "held_at_start": "held",
    "held_at_end": "held_end",
    "idle_ws_ping_p99_ms": "idle_ws_p99",
    "ws_ping_p50_ms": "ws_p50_ms",
    "ws_ping_p99_ms": "ws_p99_ms",
    "ws_ping_x_idle": "ws_x_idle",
    "idle_http_rpc_p99_ms": "idle_http_p99",
    "http_rpc_p50_ms": "http_p50_ms",
    "http_rpc_p99_ms": "http_p99_ms",
    "http_rpc_x_idle": "http_x_idle",
    "ws_ping_errors": "ws_err",
    "http_rpc_errors": "http_err",
    "lived_median_s": "lived_s",
    "lived_max_s": "lived_max_s",
    "not_closed": "not_closed",
    "window_s": "window_s",
    "server_cpu_pct": "server_cpu",
    "attacker_cpu_pct": "attacker_cpu",
    "rest_cpu_pct": "rest_cpu",
    "idle_rest_cpu_pct": "idle_rest_cpu",
    "server_rss_mib": "rss_mib",
}
"""The table's columns (the JSON keeps every key): key → heading."""


def run(
    *,
    connections: int,
    seconds: float,
    runs: int,
    kinds: Sequence[str],
    reconnect: bool = False,
    output: Path | None,
    console: Console,
) -> list[dict[str, Any]]:
    """``runs`` runs of the idle phase and each of ``kinds``; print and write the medians."""
    _raise_descriptor_limit()
    every: list[list[dict[str, Any]]] = []
    for number in range(1, runs + 1):
        rows = []
        with running_server(connections) as server:
            for kind in kinds:
                console.print(f"run {number}/{runs}: idle, then {kind} …")
                idle = phase(server, "idle", connections=connections, seconds=seconds)
                attack = phase(
                    server, kind, connections=connections, seconds=seconds, reconnect=reconnect
                )
                rows.append(_paired(idle, attack))
        every.append(rows)
        print_table(f"run {number}", [_shown(row) for row in every[-1]], console)
    result = medians(every)
    how = "reopened when closed" if reconnect else "each closed once"
    title = f"exhaustion: {connections:,} connections ({how}), medians of {runs} run(s)"
    print_table(title, [_shown(row) for row in result], console)
    path = write_json(
        "exhaustion",
        result,
        {
            "connections": connections,
            "seconds": seconds,
            "reconnect": reconnect,
            "probe_rate": PROBE_RATE,
            "runs": every,
        },
        output,
    )
    console.print(f"wrote {path}")
    return result


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {heading: row[key] for key, heading in _SHOWN.items()}


@click.command("exhaustion")
@click.option("--connections", default=CONNECTIONS, show_default=True, help="Held per attack.")
@click.option(
    "--seconds",
    default=10.0,
    show_default=True,
    help="Seconds the probe measures at least (an attack's window lasts until its "
    "connections are closed).",
)
@click.option("--runs", default=3, show_default=True, help="Runs (medians), a fresh server each.")
@click.option(
    "--kinds",
    default=",".join(KINDS),
    show_default=True,
    help="The attacks to run, comma-separated.",
)
@click.option(
    "--reconnect",
    is_flag=True,
    help="Reopen each connection the server closes (a sustained attack: a reconnect storm "
    "at every timeout).",
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="JSON file.")
def command(
    connections: int,
    seconds: float,
    runs: int,
    kinds: str,
    reconnect: bool,
    output: Path | None,
) -> None:
    """A normal client's latency while N connections do nothing useful (issue 14).

    \b
    Examples:
      starling bench exhaustion
      starling bench exhaustion --connections 1000 --runs 1 --kinds silent
    """
    chosen = [kind.strip() for kind in kinds.split(",") if kind.strip()]
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        raise click.BadParameter(f"unknown kinds {unknown}; choose from {', '.join(KINDS)}")
    run(
        connections=connections,
        seconds=seconds,
        runs=runs,
        kinds=chosen,
        reconnect=reconnect,
        output=output,
        console=Console(width=220),
    )
