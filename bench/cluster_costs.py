"""Per-operation costs the cluster capacity model needs that no other benchmark records.

Run it as ``python -m bench.cluster_costs`` (about a minute on 2 CPUs, on a private
``redis-server`` without persistence); it prints a table and writes
``bench/results/cluster-costs.json``, which :mod:`bench.simulate_cluster` reads.

What it measures, each ``--repeat`` times (the medians are kept, the runs too):

- **Redis CPU per command** (the server's ``used_cpu_user + used_cpu_sys`` from
  ``INFO cpu`` over a run of commands, divided by the commands): ``SET``;
  ``FCALL starling_publish`` with 1 and 32 events (the producer's append); ``XREADGROUP``
  returning 1 and 32 entries (a nozzle's read); ``XACK`` of 1 and 32 ids; ``SPUBLISH``
  with 0 and 8 subscribers and 256 and 8,192 bytes (the relay's Pub/Sub fan-out). These
  are pipelined (200 at a time): the commands' own work. Two sizes per command give a
  cost per call and per item (a straight line through both). The subscribers are raw
  sockets drained by threads of this process. ``*_alone``: one command at a time from
  one client (Redis idles between them: an upper bound).
- **Redis busy** (``redis-benchmark``, 50 clients): ``-t set`` and ``-t get`` without
  pipelining and with ``-P 16`` (the command redis.io's benchmark page shows), and an
  ``SPUBLISH`` of 256 bytes to 8 subscribers without pipelining: requests/s and Redis's
  CPU per request. From them, ``command_busy`` (what reading and answering one
  unpipelined command costs Redis when it is busy, besides the command's work) and
  ``spublish_subscriber_busy`` (one message written to one subscriber, busy).
- **A process's CPU per operation on its trio thread** (``time.thread_time``): a RESP
  round trip (one at a time, and 8 tasks at once); the nozzle's read, the transformer's
  ``PUBLISH`` of a batch and its ``XACK`` through the real adapters (:mod:`stores.redis`),
  8 tasks at once; an actor ``call`` and ``send``; the relay path (Pub/Sub message →
  :class:`~actors.realtime.relay.Relay` → :class:`~actors.realtime.publisher.PublisherActor`
  → histories, no local subscriber) for batches of 1 and 32 events at 2,000 messages/s
  (the per-event cost) and of 1 event at 8,000 messages/s (the per-message cost, busy);
  one ``pub`` frame built; one event parsed and rendered.
- **Sizes**: a sample comment's payload, its WebSocket frame, its share of a rendered
  batch on Pub/Sub, and the memory one stream entry takes in Redis.

The figures are for this machine (2 CPUs, the client and Redis on the same CPUs);
the model says which of them it extrapolates.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import click
import hiredis
import redis
import trio
from rich.console import Console

from actors.realtime.history import Histories
from actors.realtime.publisher import Publisher, PublisherActor
from actors.realtime.receipts import Receipts
from actors.realtime.relay import Relay
from actors.realtime.streams import GROUP, TOPIC
from actors.realtime.transform import Rendered, encode_batch, parse_entry, render
from actors.runtime import Actor
from bench.realtime import private_redis
from bench.report import print_table, write_json
from protocols.websocket.frames import pub_frame
from stores.memory import MemorySequencer
from stores.redis import FUNCTIONS, RedisBackend, RedisPubSub, RedisStream
from stores.resp import Command, check, pack

NAME: Final = "cluster-costs"
"""The JSON file's name under ``bench/results``."""

SMALL, LARGE = 1, 32
"""The two batch sizes every per-call / per-item line is drawn through."""

SAMPLE_CHANNEL: Final = "post:1ru8951"
SAMPLE_DATA: Final = (
    '{"type":"comment","user":"u1048576","post":"1ru8951","text":"'
    + "Tariffs on steel will raise the price of everything built with it, and the "
    "farmers who export will pay first when the others answer." + '"}'
)
"""A comment as ``comments.add`` appends it (140 characters of text); the transformer adds
its author's display fields."""
SAMPLE_PROFILE: Final = {"id": "u1048576", "name": "Margaret Hamilton"}

PIPELINE: Final = 200
"""Commands per pipeline when driving Redis."""
SUBSCRIBERS: Final = 8
"""Subscribers of the ``SPUBLISH`` runs that have any."""
BUSY_TASKS: Final = 8
"""Tasks making a process's Redis calls at once (a process has several nozzles, a
transformer and its shipper with calls in flight)."""
RELAY_RATE: Final = 2_000
"""Pub/Sub messages a second sent to the relay for its per-message / per-event split."""
RELAY_BUSY_RATE: Final = 8_000
"""Messages a second (one event each) for the relay's cost per message when busy."""


# -- Redis: CPU per command ------------------------------------------------------------


class _Raw:
    """A plain blocking RESP connection: pipelines out, replies parsed by hiredis."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self._reader = hiredis.Reader()

    def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one write; their replies, in order."""
        self.sock.sendall(pack(commands))
        replies: list[Any] = []
        while len(replies) < len(commands):
            reply = self._reader.gets()
            if reply is False:
                chunk = self.sock.recv(1 << 18)
                if not chunk:
                    raise RuntimeError("Redis closed the connection")
                self._reader.feed(chunk)
                continue
            replies.append(reply)
        return replies

    def cpu(self) -> float:
        """Redis's CPU seconds so far (user + system, all its threads), from ``INFO cpu``."""
        (info,) = self.execute([("INFO", "cpu")])
        fields = dict(line.split(":", 1) for line in info.decode().splitlines() if ":" in line)
        return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])

    def used_memory(self) -> float:
        """Redis's ``used_memory``, bytes."""
        (info,) = self.execute([("INFO", "memory")])
        for line in info.decode().splitlines():
            if line.startswith("used_memory:"):
                return float(line.split(":", 1)[1])
        raise RuntimeError("INFO memory has no used_memory")

    def close(self) -> None:
        self.sock.close()


def _per_command(conn: _Raw, commands: Sequence[Command], *, pipeline: int = PIPELINE) -> float:
    """Redis's CPU microseconds per command of ``commands``, sent ``pipeline`` at a time
    (1: each waits for the previous one's reply, so Redis reads and writes each alone)."""
    before = conn.cpu()
    for start in range(0, len(commands), pipeline):
        for reply in conn.execute(commands[start : start + pipeline]):
            check(reply)
    return (conn.cpu() - before) / len(commands) * 1e6


def _fcall(events: int, seq: int) -> Command:
    call: list[bytes | str | int] = ["FCALL", "starling_publish", 3, "bench:events"]
    call += ["bench:offsets", "bench:generation", 1_000_000, f"g{seq}"]
    for i in range(events):
        call += [f"post:c{(seq * events + i) % 1000}", SAMPLE_DATA]
    return call


class _Drain:
    """A raw ``SSUBSCRIBE`` connection whose messages a thread reads and counts (bytes)."""

    def __init__(self, port: int, channel: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(pack([("SSUBSCRIBE", channel)]))
        self.received = 0
        confirmation = b""
        while confirmation.count(b"\r\n") < 6:
            confirmation += self.sock.recv(4096)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(1 << 18)
            except OSError:
                return
            if not chunk:
                return
            self.received += len(chunk)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


def _spublish(
    conn: _Raw, port: int, subscribers: int, size: int, count: int, *, pipeline: int = PIPELINE
) -> float:
    """Redis's CPU microseconds per ``SPUBLISH`` of ``size`` bytes to ``subscribers``, sent
    ``pipeline`` at a time (1: each message is written to each subscriber on its own)."""
    channel = f"bench:spub:{subscribers}:{size}"
    payload = b"x" * size
    drains = [_Drain(port, channel) for _ in range(subscribers)]
    try:
        head = f"*3\r\n$8\r\nsmessage\r\n${len(channel)}\r\n{channel}\r\n${size}\r\n"
        expected = count * (len(head) + size + 2)
        before = conn.cpu()
        for start in range(0, count, pipeline):
            conn.execute([("SPUBLISH", channel, payload)] * min(pipeline, count - start))
        deadline = time.monotonic() + 30
        while any(d.received < expected for d in drains) and time.monotonic() < deadline:
            time.sleep(0.01)
        if any(d.received < expected for d in drains):
            raise RuntimeError("a subscriber did not receive every message")
        return (conn.cpu() - before) / count * 1e6
    finally:
        for drain in drains:
            drain.close()


def _line(small: float, large: float) -> tuple[float, float]:
    """(per call, per item) of a cost measured with :data:`SMALL` and :data:`LARGE` items."""
    per_item = (large - small) / (LARGE - SMALL)
    return small - SMALL * per_item, per_item


def redis_costs(url: str) -> dict[str, float]:
    """One run of every Redis-side figure (microseconds of Redis CPU; bytes per entry)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    conn = _Raw(port)
    try:
        check(conn.execute([("FUNCTION", "LOAD", "REPLACE", FUNCTIONS)])[0])
        figures: dict[str, float] = {}
        sets: list[Command] = [("SET", f"k{i}", "v" * 16) for i in range(50_000)]
        figures["set_call"] = _per_command(conn, sets)
        figures["set_call_alone"] = _per_command(conn, sets[:20_000], pipeline=1)
        memory_before = conn.used_memory()
        one = _per_command(conn, [_fcall(SMALL, i) for i in range(20_000)])
        figures["stream_entry_bytes"] = (conn.used_memory() - memory_before) / (20_000 * SMALL)
        many = _per_command(conn, [_fcall(LARGE, i) for i in range(2_000)])
        figures["fcall_call"], figures["fcall_event"] = _line(one, many)
        check(conn.execute([("XGROUP", "CREATE", "bench:events", "g", "0")])[0])
        reads: dict[int, float] = {}
        for count, calls in ((SMALL, 10_000), (LARGE, 1_000)):
            read: Command = ("XREADGROUP", "GROUP", "g", "c", "COUNT", count)
            reads[count] = _per_command(conn, [(*read, "STREAMS", "bench:events", ">")] * calls)
        figures["xreadgroup_call"], figures["xreadgroup_entry"] = _line(reads[SMALL], reads[LARGE])
        (entries,) = conn.execute(
            [("XRANGE", "bench:events", "-", "+", "COUNT", 10_000 + 1_000 * LARGE)]
        )
        pending = [entry[0] for entry in entries]
        ack_one = _per_command(conn, [("XACK", "bench:events", "g", i) for i in pending[:10_000]])
        rest = pending[10_000:]
        groups = [rest[i : i + LARGE] for i in range(0, len(rest) - LARGE + 1, LARGE)]
        ack_many = _per_command(conn, [("XACK", "bench:events", "g", *ids) for ids in groups])
        figures["xack_call"], figures["xack_id"] = _line(ack_one, ack_many)
        alone = _spublish(conn, port, 0, 256, 50_000)
        small = _spublish(conn, port, SUBSCRIBERS, 256, 30_000)
        large = _spublish(conn, port, SUBSCRIBERS, 8192, 4_000)
        per_byte = (large - small) / (SUBSCRIBERS * (8192 - 256))
        figures["spublish_call"] = alone
        figures["spublish_subscriber"] = (small - alone) / SUBSCRIBERS - 256 * per_byte
        figures["spublish_subscriber_byte"] = per_byte
        lone = _spublish(conn, port, SUBSCRIBERS, 256, 10_000, pipeline=1)
        alone_call = figures["set_call_alone"] - figures["set_call"] + alone
        figures["spublish_subscriber_alone"] = (lone - alone_call) / SUBSCRIBERS - 256 * per_byte
        return figures
    finally:
        conn.close()


def redis_benchmark(url: str) -> dict[str, float]:
    """``redis-benchmark`` (50 clients): ``-t set`` and ``-t get`` without pipelining and
    with ``-P 16`` (the command redis.io's benchmark page shows), and ``SPUBLISH`` of
    256 bytes to :data:`SUBSCRIBERS` subscribers without pipelining; for each, requests/s
    and Redis's CPU microseconds per request (``INFO cpu``, Redis busy with 50 clients)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    conn = _Raw(port)
    channel = "bench:busy"
    cases: list[tuple[str, list[str], int, int]] = [
        ("set_p1", ["-t", "set"], 200_000, 1),
        ("get_p1", ["-t", "get"], 200_000, 1),
        ("set_p16", ["-t", "set"], 1_000_000, 16),
        ("get_p16", ["-t", "get"], 1_000_000, 16),
        ("spublish_p1", ["SPUBLISH", channel, "x" * 256], 100_000, 1),
    ]
    figures = {}
    try:
        for name, what, requests, pipeline in cases:
            drains = (
                [_Drain(port, channel) for _ in range(SUBSCRIBERS)] if "SPUBLISH" in what else []
            )
            try:
                command = ["redis-benchmark", "-p", str(port), "-n", str(requests)]
                command += ["-P", str(pipeline), "-q", "--csv", *what]
                before = conn.cpu()
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                spent = conn.cpu() - before
            finally:
                for drain in drains:
                    drain.close()
            rows = [line.split(",") for line in out.splitlines() if line.count(",") >= 1]
            rates = [float(cells[1].strip('"')) for cells in rows if cells[0] != '"test"']
            figures[f"{name}_per_s"] = rates[0]
            figures[f"{name}_us"] = spent / requests * 1e6
    finally:
        conn.close()
    return figures


# -- the process: CPU per operation on the trio thread -----------------------------------


def _cpu_us(work: Callable[[], Any], count: int) -> float:
    """Microseconds of this thread's CPU per unit of ``work()`` (which does ``count`` units)."""
    before = time.thread_time()
    work()
    return (time.thread_time() - before) / count * 1e6


class _Echo(Actor[Any]):
    async def handle(self, message: Any) -> Any:
        return None


def _rendered(events: int, offsets: dict[str, int], data: bytes) -> list[Rendered]:
    items = []
    for i in range(events):
        channel = f"post:c{(sum(offsets.values()) + i) % 1000}"
        offsets[channel] = offsets.get(channel, 0) + 1
        items.append(Rendered(channel, offsets[channel], "e0000001", f"{i}-0", data))
    return items


async def _relay_cost(backend: RedisBackend, url: str, events: int, rate: float) -> float:
    """Trio-thread CPU microseconds per Pub/Sub message of ``events`` events through the
    relay into a publisher with no local subscriber; ``rate`` messages a second."""
    data = render(parse_entry("1-0", {"channel": SAMPLE_CHANNEL, "data": SAMPLE_DATA}), {})
    offsets: dict[str, int] = {}
    count = int(rate * 2)
    messages = [encode_batch(_rendered(events, offsets, data), "other") for _ in range(count)]
    publisher = Publisher(pub_frame, Histories(max_channels=10_000))
    actor = PublisherActor(publisher, MemorySequencer(), Receipts(), reorder_wait=0.5)
    relay = Relay(RedisPubSub(backend), actor.ref, "self")

    def send() -> None:
        client = redis.Redis.from_url(url)
        step = max(1, int(rate / 1000))  # messages per millisecond tick
        start = time.monotonic()
        for tick, first in enumerate(range(0, count, step)):
            delay = start + tick / 1000 * (step * 1000 / rate) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with client.pipeline(transaction=False) as pipe:
                for message in messages[first : first + step]:
                    pipe.publish(TOPIC, message)
                pipe.execute()
        client.close()

    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await nursery.start(relay.run)
        before = time.thread_time()
        await trio.to_thread.run_sync(send)
        with trio.move_on_after(10):
            # The relay signals nothing when it has passed a batch on: poll its count.
            while relay.batches + relay.dropped < count:  # noqa: ASYNC110
                await trio.sleep(0.01)
        spent = time.thread_time() - before
        if relay.dropped or relay.batches < count:
            raise RuntimeError(f"the relay took {relay.batches} of {count} messages")
        relay.request_stop()
        actor.request_stop()
    return spent / count * 1e6


async def _spread(call: Callable[[int], Awaitable[object]], count: int, tasks: int) -> float:
    """Trio-thread CPU microseconds per ``call(i)``, ``i`` in ``range(count)``, made by
    ``tasks`` tasks at once (each waits for its own replies; the others run meanwhile)."""

    async def loop(indices: range) -> None:
        for i in indices:
            await call(i)

    before = time.thread_time()
    async with trio.open_nursery() as nursery:
        for task in range(tasks):
            nursery.start_soon(loop, range(task, count, tasks))
    return (time.thread_time() - before) / count * 1e6


async def _process_costs(url: str) -> dict[str, float]:
    backend = RedisBackend.from_url(url)
    stream = RedisStream(backend)
    pubsub = RedisPubSub(backend)
    figures: dict[str, float] = {}
    try:
        rounds = 6_000

        async def ping(_i: int) -> None:
            await backend.resp.execute([("PING",)])

        figures["resp_round_trip_alone"] = await _spread(ping, rounds, 1)
        figures["resp_round_trip"] = await _spread(ping, rounds, BUSY_TASKS)
        client = redis.Redis.from_url(url)
        with client.pipeline(transaction=False) as pipe:
            for i in range(rounds * (SMALL + LARGE)):
                pipe.xadd("bench:read", {"channel": f"post:c{i % 1000}", "data": SAMPLE_DATA})
            pipe.execute()
        client.close()
        await stream.ensure_group("bench:read", GROUP)
        reads: dict[int, float] = {}
        acks: dict[int, float] = {}
        publishes: dict[int, float] = {}
        data = render(parse_entry("1-0", {"channel": SAMPLE_CHANNEL, "data": SAMPLE_DATA}), {})
        offsets: dict[str, int] = {}
        for size in (SMALL, LARGE):
            calls = rounds // (1 if size == SMALL else 4)
            got: list[list[str]] = []

            async def read(_i: int, size: int = size, got: list[list[str]] = got) -> None:
                entries = await stream.read_group("bench:read", GROUP, "c", count=size, block=0)
                got.append([entry.id for entry in entries])

            reads[size] = await _spread(read, calls, BUSY_TASKS)

            async def ack(i: int, got: list[list[str]] = got) -> None:
                await stream.ack("bench:read", GROUP, got[i])

            acks[size] = await _spread(ack, len(got), BUSY_TASKS)
            message = encode_batch(_rendered(size, offsets, data), "self")

            async def publish(_i: int, message: bytes = message) -> None:
                await pubsub.publish("bench:nobody", message)

            publishes[size] = await _spread(publish, calls, BUSY_TASKS)
        figures["read_call"], figures["read_entry"] = _line(reads[SMALL], reads[LARGE])
        figures["ack_call"], figures["ack_id"] = _line(acks[SMALL], acks[LARGE])
        figures["publish_call"], figures["publish_event"] = _line(
            publishes[SMALL], publishes[LARGE]
        )
        echo = _Echo("echo", mailbox_size=64)
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(echo.run)

            async def call(_i: int) -> None:
                await ref.call(None)

            async def send(_i: int) -> None:
                await ref.send(None)

            figures["actor_call"] = await _spread(call, rounds, 1)
            figures["actor_send"] = await _spread(send, rounds, 1)
            ref.request_stop()
        quiet = await _relay_cost(backend, url, SMALL, RELAY_RATE)
        many = await _relay_cost(backend, url, LARGE, RELAY_RATE)
        busy = await _relay_cost(backend, url, SMALL, RELAY_BUSY_RATE)
        _, figures["relay_event"] = _line(quiet, many)
        figures["relay_message"] = busy - figures["relay_event"]
        figures["relay_message_alone"] = quiet - figures["relay_event"]
    finally:
        await backend.aclose()
    return figures


def pure_costs() -> dict[str, float]:
    """Microseconds of CPU for one ``pub`` frame and one event parsed and rendered."""
    parsed = parse_entry("1-0", {"channel": SAMPLE_CHANNEL, "data": SAMPLE_DATA})
    data = render(parsed, {"u1048576": SAMPLE_PROFILE})
    count = 100_000
    fields = {"channel": SAMPLE_CHANNEL, "data": SAMPLE_DATA, "offset": "7", "gen": "g1"}
    profiles = {"u1048576": SAMPLE_PROFILE}
    return {
        "frame": _cpu_us(lambda: [pub_frame(SAMPLE_CHANNEL, i, data) for i in range(count)], count),
        "transform_event": _cpu_us(
            lambda: [render(parse_entry("1-0", fields), profiles) for _ in range(count)], count
        ),
    }


def sizes() -> dict[str, float]:
    """Bytes of the sample event: payload, frame, and its share of a rendered batch."""
    data = render(
        parse_entry("1-0", {"channel": SAMPLE_CHANNEL, "data": SAMPLE_DATA}),
        {"u1048576": SAMPLE_PROFILE},
    )
    frame = pub_frame(SAMPLE_CHANNEL, 123456, data)
    origin = "host-12345-0123456789abcdef"

    def batch(events: int) -> list[Rendered]:
        return [
            Rendered(SAMPLE_CHANNEL, 123456 + i, "3195b4d3", f"1733360000000-{i}", data)
            for i in range(events)
        ]

    one = len(encode_batch(batch(SMALL), origin))
    many = len(encode_batch(batch(LARGE), origin))
    per_message, per_event = _line(float(one), float(many))
    return {
        "payload": float(len(data)),
        "frame": float(len(frame)),
        "frame_overhead": float(len(frame) - len(data)),
        "pubsub_message_overhead": per_message,
        "pubsub_event_overhead": per_event - len(data),
    }


# -- the run -----------------------------------------------------------------------------


_UNITS: Final = {
    "redis_us": "µs of Redis CPU",
    "process_us": "µs of process CPU (trio thread)",
    "redis_ops_per_s": "requests/s, or µs of Redis CPU per request (redis-benchmark)",
    "bytes": "bytes",
}


def _medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    with private_redis() as (url, _pid):
        yield url


def run(*, repeat: int, output: Path | None, console: Console) -> dict[str, dict[str, float]]:
    """``repeat`` runs of every figure; print the medians and write them with the runs."""
    runs: dict[str, list[dict[str, float]]] = {key: [] for key in _UNITS}
    for number in range(1, repeat + 1):
        console.print(f"run {number}/{repeat} …")
        with _redis() as url:
            redis_run = redis_costs(url)
        stream_entry = redis_run.pop("stream_entry_bytes")
        runs["bytes"].append({**sizes(), "stream_entry": stream_entry})
        with _redis() as url:
            ops = redis_benchmark(url)
        runs["redis_ops_per_s"].append(ops)
        # A command among 50 clients' (Redis busy, each waiting for its reply), and then an
        # SPUBLISH's writes to each subscriber in that regime.
        redis_run["command_busy"] = ops["set_p1_us"] - redis_run["set_call"]
        redis_run["spublish_subscriber_busy"] = (
            ops["spublish_p1_us"] - redis_run["command_busy"] - redis_run["spublish_call"]
        ) / SUBSCRIBERS - 256 * redis_run["spublish_subscriber_byte"]
        runs["redis_us"].append(redis_run)
        with _redis() as url:
            process = trio.run(_process_costs, url)
        runs["process_us"].append({**process, **pure_costs()})
    medians = {key: _medians(value) for key, value in runs.items()}
    rows = [
        {"what": f"{group}.{key}", "median": value, "unit": _UNITS[group]}
        for group, values in medians.items()
        for key, value in values.items()
    ]
    print_table(f"{NAME}: medians of {repeat} run(s)", rows, console)
    path = write_json(NAME, rows, {"repeat": repeat, **medians, "runs": runs}, output)
    console.print(f"wrote {path}")
    return medians


@click.command(NAME)
@click.option("--repeat", default=3, show_default=True, help="Runs (medians).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="JSON file.")
def command(repeat: int, output: Path | None) -> None:
    """Redis's and a process's CPU per operation, and the sizes, the cluster model needs.

    \b
    Examples:
      python -m bench.cluster_costs
      python -m bench.cluster_costs --repeat 1 --output /tmp/cluster-costs.json
    """
    run(repeat=repeat, output=output, console=Console(width=160))


if __name__ == "__main__":
    command()
