"""Realtime delivery benchmark: Disqus's budget, end to end through ``starling serve``.

Run it as ``starling bench realtime``. The budget (the realtime issue, after
https://blog.disqus.com/scaling-realtime-at-disqus): on this machine, clients
included,

- >= 20,000 events/s entering the stream ``starling:events``,
- delivered to 1,000 WebSocket subscribers on 200 channels (5 per channel,
  so 100,000 deliveries/s),
- end to end (the producer's ``time.time()`` in the event → the subscriber's
  ``time.time()`` when the frame arrived) p99 <= 25 ms,
- nothing lost.

One run, every process on this machine::

    parent (this module)     starts everything below, samples CPU from /proc/<pid>/stat
    ├── redis-server         (redis backend, no --redis-url) private, no persistence
    │   or 6 redis-servers   (redis-cluster backend, no --redis-url) a private Redis
    │                        Cluster, 3 masters + 3 replicas, from tests/services.py
    ├── starling serve       a temp data dir, a free port, STARLING_SECRET shared with clients
    ├── subscribers × P      trio + trio-websocket; subscriber i reads channel i % C
    └── producer             trio; every TICK_SECONDS appends the events due so far,
                             channels round-robin, data = {"run", "seq", "sent"}

The producer appends with ``XADD`` in one redis-py pipeline per tick (redis), or
with JSON-RPC batches of ``realtime.publish`` (memory: the stream is in the
server's process; each call returns once published, so batches go out
concurrently, at most :data:`MAX_INFLIGHT` at once).

Timeline: the producer starts at ``start``; events sent during the first
``warmup`` seconds are delivered and checked but not measured; the window is
``[start + warmup, start + warmup + duration)``. Latency and deliveries/s
count the events *sent* in the window, frames/s the frames *received* in it.
After the producer stops, the subscribers get its per-channel counts and
drain until they have everything or ``drain`` seconds passed; then ``lost`` is
what some subscriber never got, ``duplicated`` what one got twice (both over
every event of the run, warm-up included).

Latencies go into HdrHistograms (1 µs .. 60 s, 3 significant digits), one per
client process, merged in the parent. CPU%: user + system time over the
window, 100% = one core; ``other_cpu_pct`` is what the rest of the machine
used meanwhile (busy time in /proc/stat minus ours): a shared machine's noise,
to read beside the latencies. Caveat: ``sent`` is stamped when the producer sends
a batch; if the producer falls behind its schedule the delay it suffered is
not in the latency (``producer_lag_ms`` shows it, and events/s falls short).

Redis Cluster (``--backend redis-cluster``, native clients only): ``starling serve
--redis-url redis+cluster://…`` on a private 3-master/3-replica cluster, which
``python tests/services.py redis-cluster`` (the test suite's launcher, run as a
child process from the source checkout) forms for each run and stops after it;
the stream is split into partitions (:mod:`stores.partitions`, 3 by default)
and the loadgen appends each event to its channel's partition, one ``FCALL
starling_publish`` per partition per tick. ``redis_cpu_pct`` is then the six
nodes' together. With both ``redis`` and ``redis-cluster`` measured, the JSON's
``cluster_overhead`` holds, per rate, the cluster's server CPU per event over
the single Redis's, minus one (budget: :data:`CLUSTER_OVERHEAD_BUDGET`).

With several backends and no ``--knee``, the runs are interleaved (each
repeat runs every backend in turn), so that a busy machine's noise falls on
all of them alike.

``--knee`` steps the rate up a ladder until a rate misses (p99 > 25 ms, a
loss, a dropped connection, or fewer than 95% of the events entering), then
bisects between the last pass and the first miss; the knee is the highest
rate that passed; the budget rate is then measured too if the search did
not reach it. With ``--repeat N`` every figure is the median of N runs.

Clients (``--clients``): ``native`` is the Go load generator of
``bench/loadgen`` (``make bench-tools``; :mod:`bench.realtime_native`), one
process holding every subscriber and the producer, the default once built;
``python`` is the trio subscribers and producer above. With native clients
the parent still starts redis-server and ``starling serve`` and samples CPU
over the window; ``client_cpu_pct`` is then the loadgen's, producer
included (``producer_cpu_pct`` is empty), and ``out_of_order`` also counts
reordered ``seq``s within a channel (``offset_order_violations`` the same
by ``offset``). Both fill ``server_cpu_us_per_delivery``: the server's CPU
over the window per ``pub`` received in it.

Scenarios (``--scenario``)::

    fanout  the budget above: 1,000 subscribers on 200 channels, 20,000 events/s
    hot     10,000 subscribers on 10 channels, 10 events/s per channel
    idle    10,000 connections subscribe (256 handshakes at once) and stay idle
    storm   10,000 connections subscribe all at once, as after a restart
    following  1,000 demo users read following:<me>; 2,000 comments/s by the
            users they follow (:mod:`bench.following`; p99 <= 50 ms)

``idle``, ``storm`` and ``following`` need the native clients. ``idle`` and
``storm`` report how long the connections took to be subscribed (per client
p50/p99, and the whole), the errors and retries, and the server's memory per
connection: its VmRSS (/proc/<pid>/status) before the loadgen starts and while
the connections are held, the difference over the connections held.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import multiprocessing
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import click
import httpx
import msgspec
import redis
import trio
from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.markup import escape
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from actors.realtime.streams import STREAM
from auth.tokens import issue_token
from bench import following
from bench.following import FOLLOWING_COLUMNS, FollowLists, read_follow_lists
from bench.realtime_native import Loadgen, LoadgenPlan, Workload, loadgen_binary, rss_bytes
from bench.report import print_table, write_json
from protocols.jsonrpc import MAX_BATCH
from settings import DEFAULT_DATA_DIR, Settings
from stores.partitions import Partitions
from stores.redis_cluster import CLUSTER_SCHEMES, parse_cluster_url
from stores.sequence import GENERATION_KEY, OFFSETS_KEY

Backend = Literal["memory", "redis", "redis-cluster"]
BACKENDS: tuple[Backend, ...] = ("memory", "redis", "redis-cluster")
Clients = Literal["native", "python"]

BUDGET_RATE = 20_000
"""Events per second entering the stream."""
BUDGET_SUBSCRIBERS = 1_000
BUDGET_CHANNELS = 200
BUDGET_P99_MS = 25.0
MIN_RATE_SHARE = 0.95
"""A run passes only if at least this share of the target rate entered the stream."""

CLUSTER_OVERHEAD_BUDGET = 0.20
"""The cluster's extra server CPU per event over a single Redis, at most (issue 16)."""
CLUSTER_START_TIMEOUT = 120.0
"""Seconds ``tests/services.py redis-cluster`` may take to form the cluster."""
SERVICES_SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "services.py"
"""The test suite's service launcher (a source checkout's), run for a private Redis Cluster."""

KNEE_LADDER = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 30_000, 40_000)
"""Rates (events/s) the knee search steps through, lowest first."""
KNEE_BISECTIONS = 2

TICK_SECONDS = 0.005
"""The producer's schedule: a batch every 5 ms."""
MAX_TICK_EVENTS = 5_000
"""Most events one tick sends when catching up (the rest wait for the next tick)."""
MAX_INFLIGHT = 32
"""Most JSON-RPC batches in flight at once (memory backend)."""
HANDSHAKES = 32
"""WebSocket handshakes in progress at once, per client process."""
PING_EVERY = 20.0
"""Seconds between JSON-RPC ``ping`` notifications (the server closes after 60 idle)."""
START_DELAY = 2.0
"""Seconds between the subscribers' readiness and the producer's first tick (its process starts)."""
SERVER_START_TIMEOUT = 60.0
READY_TIMEOUT = 120.0
"""Seconds the client processes may take to connect and subscribe."""
STOP_TIMEOUT = 10.0

LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3
"""The histograms' range in microseconds, and their precision."""

SECRET = "starling-bench-realtime-secret-0123456789"
"""The token secret of the server and the clients (``STARLING_SECRET``), 32+ bytes."""

WORKLOADS: dict[Workload, tuple[int, int, int]] = {
    "fanout": (BUDGET_SUBSCRIBERS, BUDGET_CHANNELS, BUDGET_RATE),
    "hot": (10_000, 10, 100),
    "idle": (10_000, 200, 0),
    "storm": (10_000, 200, 0),
    "following": (
        following.FOLLOWING_SUBSCRIBERS,
        following.FOLLOWING_POSTS,
        following.FOLLOWING_RATE,
    ),
}
"""Each ``--scenario``'s default (subscribers, channels, events/s); hot: 10 events/s per
channel; following: users, posts commented on, activities/s."""
CONNECTION_WORKLOADS = frozenset({"idle", "storm"})
"""The scenarios without a producer: connections only."""
NATIVE_WORKLOADS = CONNECTION_WORKLOADS | {"following"}
"""The scenarios only the native clients run."""
HOLD_SECONDS: dict[Workload, float] = {"idle": 5.0, "storm": 2.0}
"""How long idle and storm hold their connections before closing them."""
NATIVE_READY_TIMEOUT = 900.0
"""Seconds the loadgen may take to connect and subscribe everyone (a storm retries)."""
MAX_CONNECTIONS_HEADROOM = 100
"""``--ws-max-connections`` is at least the subscribers plus this."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark run's settings.

    Attributes:
        backend: ``memory`` (in-process stream), ``redis`` or ``redis-cluster``.
        rate: events per second the producer aims at (idle, storm: none, 0).
        subscribers: WebSocket subscribers; subscriber ``i`` reads channel ``i % channels``.
        channels: channels ``post:bench-0`` .. ``post:bench-<channels - 1>``.
        duration: seconds measured.
        warmup: seconds of load before the measured window.
        drain: longest wait, seconds, for the last deliveries after the producer stopped.
        client_processes: subscriber processes.
        transformers: the server's ``--transformers``.
        clients: ``native`` (the Go loadgen) or ``python`` (trio processes).
        workload: the ``--scenario``: ``fanout``, ``hot``, ``idle``, ``storm``.
        hold: idle/storm: seconds the connections are held; ``None``: :data:`HOLD_SECONDS`.
        publish_many: native, memory backend: ``realtime.publish_many`` calls.
        dial_concurrency: native: handshakes at once; ``None``: 256 (storm: all).
        bare_xadd: native, Redis: bare ``XADD`` instead of ``FCALL starling_publish``.
        data_dir: following: the data directory holding the demo world (its graph
            gives the follow lists, and the server runs on it); other scenarios:
            ``None``, a temp dir.
        seed: following: the draw of the users, the posts and the authors.
    """

    backend: Backend
    rate: int
    subscribers: int = BUDGET_SUBSCRIBERS
    channels: int = BUDGET_CHANNELS
    duration: float = 10.0
    warmup: float = 2.0
    drain: float = 5.0
    client_processes: int = 2
    transformers: int = 1
    clients: Clients = "python"
    workload: Workload = "fanout"
    hold: float | None = None
    publish_many: bool = False
    dial_concurrency: int | None = None
    bare_xadd: bool = False
    data_dir: str | None = None
    seed: int = following.SEED

    def __post_init__(self) -> None:
        if self.clients == "python" and self.workload in NATIVE_WORKLOADS:
            raise ValueError(f"the {self.workload} scenario needs the native clients")
        if self.clients == "python" and self.backend == "redis-cluster":
            raise ValueError("the redis-cluster backend needs the native clients")
        if self.workload == "following" and self.data_dir is None:
            raise ValueError("the following scenario needs the demo world's data directory")
        if self.subscribers < 1 or self.channels < 1:
            raise ValueError("subscribers and channels must be >= 1")
        if self.rate < 1 and self.workload not in CONNECTION_WORKLOADS:
            raise ValueError("rate must be >= 1 event/s")
        if self.client_processes < 1 or self.client_processes > self.subscribers:
            raise ValueError("client processes must be between 1 and the subscribers")
        if not (self.duration > 0 and self.warmup >= 0 and self.drain > 0):
            raise ValueError("duration and drain must be > 0 seconds, warmup >= 0")
        if self.hold is not None and self.hold <= 0:
            raise ValueError("hold must be > 0 seconds")


def channel_name(index: int) -> str:
    """The name of channel ``index``."""
    return f"post:bench-{index}"


# -- wire --------------------------------------------------------------------------


class _Data(msgspec.Struct):
    run: str
    seq: int
    sent: float


class _PubParams(msgspec.Struct):
    channel: str
    offset: int
    data: _Data


class _Frame(msgspec.Struct):
    """A server frame: a ``pub`` (params set) or a reply (ignored here)."""

    method: str | None = None
    params: _PubParams | None = None


_frames = msgspec.json.Decoder(list[_Frame] | _Frame)
_json = msgspec.json.Encoder()


# -- processes: messages between the parent and its children ------------------------


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """What one subscriber process does: subscribers ``first .. first + count - 1``."""

    url: str
    run: str
    first: int
    count: int
    channels: int


@dataclass(frozen=True, slots=True)
class Window:
    """The measured window, epoch seconds: ``start <= t < end``."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Expected:
    """The events each channel got (per-channel counts) and the drain deadline (epoch seconds)."""

    per_channel: tuple[int, ...]
    deadline: float


@dataclass(frozen=True, slots=True)
class ClientReport:
    """One subscriber process's figures.

    Attributes:
        histogram: the latencies (µs) of the events sent in the window, HdrHistogram-encoded.
        frames: frames received in the window; ``frame_messages``: the ``pub``s in them.
        measured: ``pub``s of events sent in the window.
        received: distinct events received (the whole run).
        expected: events the subscribers should have received (the whole run).
        lost, duplicated: over the whole run.
        out_of_order: pubs whose seq is below the highest seq their subscriber had seen.
        disconnects: connections the server closed.
        connect_errors: subscribers that could not connect or subscribe.
    """

    histogram: bytes
    frames: int
    frame_messages: int
    measured: int
    received: int
    expected: int
    lost: int
    duplicated: int
    out_of_order: int
    disconnects: int
    connect_errors: int


@dataclass(frozen=True, slots=True)
class ProducerPlan:
    """What the producer does: ``rate`` events/s from ``start`` (epoch) for ``seconds``."""

    backend: Backend
    target: str
    """``http://host:port/rpc`` (memory) or a ``redis://`` URL."""
    run: str
    rate: int
    channels: int
    start: float
    seconds: float
    window: Window


@dataclass(frozen=True, slots=True)
class ProducerReport:
    """What entered the stream.

    Attributes:
        per_channel: events accepted per channel (the whole run).
        accepted: events accepted; ``in_window``: of them, sent in the window.
        errors: events refused or lost on the way (HTTP or Redis errors).
        max_lag_ms: the latest a batch went out after its tick, milliseconds.
    """

    per_channel: tuple[int, ...]
    accepted: int
    in_window: int
    errors: int
    max_lag_ms: float


# -- helpers -----------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free now; the caller binds it soon)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc/<pid>/stat.

    Returns ``nan`` when the process is gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rpartition(")")[2].split()
    # After "pid (comm)": fields[0] is state (field 3), so utime (14) and stime (15) are 11, 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine spent busy (not idle nor iowait), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _wait_until(epoch: float) -> None:
    delay = epoch - time.time()
    if delay > 0:
        time.sleep(delay)


async def _trio_sleep_until_epoch(epoch: float) -> None:
    await trio.sleep_until(trio.current_time() + (epoch - time.time()))


def new_histogram() -> Any:
    """An empty latency histogram (µs)."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


# -- the services: redis-server and starling serve ------------------------------------


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, int]]:
    """A private ``redis-server`` without persistence; yields its URL and pid.

    Raises:
        RuntimeError: redis-server is not installed or did not answer in time.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="starling-bench-redis-") as directory:
        command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", directory]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(f"redis-server did not start on port {port}") from None
                    time.sleep(0.05)
            client.close()
            yield url, process.pid
        finally:
            _stop(process)


@contextlib.contextmanager
def private_redis_cluster() -> Iterator[tuple[str, list[int]]]:
    """A private Redis Cluster (3 masters, 3 replicas, no persistence) for one run;
    yields its ``redis+cluster://`` URL and the pids of its ``redis-server`` nodes.

    It is the test suite's (``python tests/services.py redis-cluster``, stdlib only,
    so it runs in this venv), started as a child process of the source checkout and
    stopped with SIGTERM: the benchmarks' distribution cannot import ``tests``.

    Raises:
        RuntimeError: not a source checkout, or the cluster did not form in
            :data:`CLUSTER_START_TIMEOUT` seconds (the message ends with the
            launcher's output).
    """
    if not SERVICES_SCRIPT.exists():
        raise RuntimeError(f"a private Redis Cluster needs a source checkout ({SERVICES_SCRIPT})")
    with tempfile.TemporaryDirectory(prefix="starling-bench-cluster-") as directory:
        log_path = Path(directory) / "launcher.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(SERVICES_SCRIPT), "redis-cluster", "--workdir", directory],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        try:
            url = _first_line(process, CLUSTER_START_TIMEOUT)
            if not url.startswith("redis+cluster://"):
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the Redis Cluster did not start: {url!r}\n{tail}")
            yield url, _child_pids(process.pid)
        finally:
            _stop(process, signal.SIGTERM)
            if process.stdout is not None:
                process.stdout.close()


def _first_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line ``process`` writes on its stdout ("" if it ends or says nothing in time)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n") and (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([process.stdout], [], [], remaining)
        if not readable:
            break
        byte = os.read(process.stdout.fileno(), 1)
        if not byte:
            break
        line += byte
    return line.decode(errors="replace").strip()


def _child_pids(pid: int) -> list[int]:
    """The children of process ``pid`` (/proc/<pid>/task/*/children; [] if it is gone)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in (task / "children").read_text().split()]
    return children


def partition_keys(url: str) -> tuple[tuple[str, str, str], ...]:
    """Each stream partition's (stream, offsets, generation) keys on the cluster of ``url``
    (a ``redis+cluster://`` URL, its ``?partitions=N`` or the server's default), the keys
    ``starling serve`` reads and numbers; ``()`` for any other URL."""
    if urlsplit(url).scheme not in CLUSTER_SCHEMES:
        return ()
    partitions = Partitions(parse_cluster_url(url).partitions)
    return tuple(
        zip(
            partitions.keys(STREAM),
            partitions.keys(OFFSETS_KEY),
            partitions.keys(GENERATION_KEY),
            strict=True,
        )
    )


def _stop(process: subprocess.Popen[bytes], graceful: signal.Signals = signal.SIGINT) -> None:
    """Graceful (``graceful``, SIGINT by default), then brutal (SIGKILL) after
    :data:`STOP_TIMEOUT`."""
    if process.poll() is None:
        process.send_signal(graceful)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def starling_command() -> list[str]:
    """How to run ``starling``: the venv's script, else this interpreter."""
    script = Path(sys.executable).parent / "starling"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cli import main; main()"]


@dataclass(frozen=True, slots=True)
class Server:
    """A running ``starling serve``: its pid and base URL (``http://127.0.0.1:PORT``)."""

    pid: int
    url: str

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@contextlib.contextmanager
def running_server(scenario: Scenario, redis_url: str) -> Iterator[Server]:
    """``starling serve`` on a free port, until the block ends.

    Its data dir is ``scenario.data_dir`` (following: the demo world), else a
    temp dir; its log goes to a temp dir.

    Raises:
        RuntimeError: the server did not answer ``/health`` in time, or exited
            before the block ended (the message ends with its log).
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARLING_")}
    env["STARLING_SECRET"] = SECRET
    with tempfile.TemporaryDirectory(prefix="starling-bench-realtime-") as directory:
        data_dir = scenario.data_dir or directory
        command = [*starling_command(), "serve", "--port", str(port), "--data-dir", data_dir]
        command += ["--redis-url", redis_url, "--transformers", str(scenario.transformers)]
        connections = max(10_000, scenario.subscribers + MAX_CONNECTIONS_HEADROOM)
        command += ["--ws-max-connections", str(connections)]
        log_path = Path(directory) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"starling serve did not start:\n{tail}")
                time.sleep(0.1)
            yield Server(process.pid, url)
            if process.poll() is not None:  # its figures would be the clients' alone
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"starling serve exited during the run:\n{tail}")
        finally:
            _stop(process)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def realtime_stats(url: str) -> dict[str, Any]:
    """The server's ``system.stats`` realtime figures (``{}`` if it does not answer)."""
    request = {"jsonrpc": "2.0", "method": "system.stats", "id": 1}
    try:
        reply = httpx.post(f"{url}/rpc", json=request, timeout=5.0).json()
        stats: dict[str, Any] = reply["result"].get("realtime", {})
        return stats
    except (httpx.HTTPError, KeyError, ValueError):
        return {}


# -- subscribers (a child process) ----------------------------------------------------


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection in a load generator while it measures.

    A full collection in a client process holding 500 connections pauses it
    for 100-260 ms (seen with a trio instrument timing task steps); every
    message arriving meanwhile would be charged to the server's latency.
    Reference counting still frees what the run drops; the collector runs
    again after the run. The server's own collector is left alone.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


class _Subscriber:
    """One WebSocket subscriber: connects, subscribes, then checks and times every ``pub``."""

    __slots__ = (
        "channel",
        "closed",
        "duplicated",
        "max_seq",
        "out_of_order",
        "received",
        "seen",
        "ws",
    )

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.seen = bytearray()
        self.received = 0
        self.duplicated = 0
        self.max_seq = -1
        self.out_of_order = 0
        self.closed = False
        self.ws: WebSocketConnection | None = None


class _ClientRun:
    """The trio program of one subscriber process."""

    def __init__(self, plan: ClientPlan, conn: Connection) -> None:
        self.plan = plan
        self.conn = conn
        self.subscribers = [
            _Subscriber(channel_name(i % plan.channels))
            for i in range(plan.first, plan.first + plan.count)
        ]
        self.histogram = new_histogram()
        self.window = Window(math.inf, math.inf)
        self.frames = 0
        self.frame_messages = 0
        self.measured = 0
        self.connect_errors = 0
        self.connect_error: str | None = None
        self.disconnects = 0
        self.stopping = False

    async def main(self) -> None:
        ready = trio.Semaphore(0)
        handshakes = trio.Semaphore(HANDSHAKES)
        async with trio.open_nursery() as nursery:
            for index, subscriber in enumerate(self.subscribers):
                nursery.start_soon(self._subscriber, index, subscriber, handshakes, ready)
            for _ in self.subscribers:
                await ready.acquire()
            self.conn.send(
                ("ready", (len(self.subscribers) - self.connect_errors, self.connect_error))
            )
            with paused_gc():
                self.window = await trio.to_thread.run_sync(self.conn.recv)
                nursery.start_soon(self._ping)
                expected: Expected = await trio.to_thread.run_sync(self.conn.recv)
                await self._drain(expected)
            self.stopping = True
            self.conn.send(("report", self._report(expected)))
            nursery.cancel_scope.cancel()

    async def _subscriber(
        self,
        index: int,
        subscriber: _Subscriber,
        handshakes: trio.Semaphore,
        ready: trio.Semaphore,
    ) -> None:
        token = issue_token(SECRET.encode(), f"bench-{self.plan.first + index}", ttl_seconds=3600)
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with handshakes:
                    ws = await stack.enter_async_context(
                        open_websocket_url(f"{self.plan.url}?token={token}", disconnect_timeout=1.0)
                    )
                    request = {"jsonrpc": "2.0", "method": "subscribe", "id": 1}
                    request["params"] = {"channel": subscriber.channel}
                    await ws.send_message(_json.encode(request).decode())
                    reply = msgspec.json.decode(await ws.get_message())
                    if not isinstance(reply, dict) or "result" not in reply:
                        raise RuntimeError(f"subscribe refused: {reply}")
            except (OSError, ConnectionClosed, HandshakeError, RuntimeError) as error:
                self.connect_errors += 1
                self.connect_error = self.connect_error or f"{type(error).__name__}: {error}"
                subscriber.closed = True
                ready.release()
                return
            except BaseException:
                ready.release()
                raise
            subscriber.ws = ws
            ready.release()
            await self._receive(ws, subscriber)

    async def _receive(self, ws: WebSocketConnection, subscriber: _Subscriber) -> None:
        run, histogram = self.plan.run, self.histogram
        while True:
            try:
                frame = await ws.get_message()
            except ConnectionClosed:
                subscriber.closed = True
                if not self.stopping:
                    self.disconnects += 1
                return
            now = time.time()
            decoded = _frames.decode(frame)
            items = decoded if isinstance(decoded, list) else [decoded]
            window = self.window
            in_window = window.start <= now < window.end
            if in_window:
                self.frames += 1
            for item in items:
                params = item.params
                if params is None or item.method != "pub":
                    continue
                data = params.data
                if data.run != run:
                    continue  # another run's event (a shared Redis)
                if in_window:
                    self.frame_messages += 1
                seq, seen = data.seq, subscriber.seen
                if seq >= len(seen):
                    seen.extend(bytes(seq + 1024 - len(seen)))
                if seen[seq]:
                    subscriber.duplicated += 1
                else:
                    seen[seq] = 1
                    subscriber.received += 1
                    if seq < subscriber.max_seq:
                        subscriber.out_of_order += 1
                    else:
                        subscriber.max_seq = seq
                if window.start <= data.sent < window.end:
                    self.measured += 1
                    histogram.record_value(max(LOWEST_US, int((now - data.sent) * 1e6)))

    async def _ping(self) -> None:
        ping = _json.encode({"jsonrpc": "2.0", "method": "ping"}).decode()
        while True:
            await trio.sleep(PING_EVERY)
            for subscriber in self.subscribers:
                if subscriber.ws is not None and not subscriber.closed:
                    with contextlib.suppress(ConnectionClosed):
                        await subscriber.ws.send_message(ping)

    def _expected(self, subscriber: _Subscriber, expected: Expected) -> int:
        return expected.per_channel[int(subscriber.channel.rpartition("-")[2])]

    async def _drain(self, expected: Expected) -> None:
        while time.time() < expected.deadline:
            if all(s.closed or s.received >= self._expected(s, expected) for s in self.subscribers):
                return
            await trio.sleep(0.05)

    def _report(self, expected: Expected) -> ClientReport:
        wanted = [self._expected(s, expected) for s in self.subscribers]
        return ClientReport(
            histogram=self.histogram.encode(),
            frames=self.frames,
            frame_messages=self.frame_messages,
            measured=self.measured,
            received=sum(s.received for s in self.subscribers),
            expected=sum(wanted),
            lost=sum(max(0, w - s.received) for s, w in zip(self.subscribers, wanted, strict=True)),
            duplicated=sum(s.duplicated for s in self.subscribers),
            out_of_order=sum(s.out_of_order for s in self.subscribers),
            disconnects=self.disconnects,
            connect_errors=self.connect_errors,
        )


def client_main(plan: ClientPlan, conn: Connection) -> None:
    """The entry point of a subscriber process (``multiprocessing``, spawn)."""
    try:
        trio.run(_ClientRun(plan, conn).main)
    except BaseException as error:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(error).__name__}: {error}"))
        raise


# -- the producer (a child process) ----------------------------------------------------


class _Producer:
    """Appends ``rate`` events/s on a fixed schedule (see the module docstring)."""

    def __init__(self, plan: ProducerPlan) -> None:
        self.plan = plan
        self.next_seq = [0] * plan.channels
        self.accepted = [0] * plan.channels
        self.in_window = 0
        self.errors = 0
        self.max_lag = 0.0
        self._channel = 0

    def _events(self, count: int, sent: float) -> list[tuple[int, bytes]]:
        events: list[tuple[int, bytes]] = []
        for _ in range(count):
            channel = self._channel
            self._channel = (channel + 1) % self.plan.channels
            seq = self.next_seq[channel]
            self.next_seq[channel] = seq + 1
            events.append((channel, _json.encode(_Data(self.plan.run, seq, sent))))
        return events

    def _accept(self, events: list[tuple[int, bytes]], ok: Sequence[bool], sent: float) -> None:
        window = self.plan.window
        for (channel, _), accepted in zip(events, ok, strict=True):
            if accepted:
                self.accepted[channel] += 1
                if window.start <= sent < window.end:
                    self.in_window += 1
            else:
                self.errors += 1

    async def main(self) -> ProducerReport:
        plan = self.plan
        ticks = math.ceil(plan.seconds / TICK_SECONDS)
        emitted = 0
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(paused_gc())
            if plan.backend == "memory":
                client = await stack.enter_async_context(RpcConnections(plan.target))
                inflight = trio.Semaphore(MAX_INFLIGHT)
                nursery = await stack.enter_async_context(trio.open_nursery())
            else:
                store = redis.Redis.from_url(plan.target)
                stack.callback(store.close)
            for tick in range(1, ticks + 1):
                due_at = plan.start + tick * TICK_SECONDS
                await _trio_sleep_until_epoch(due_at)
                if time.time() >= plan.start + plan.seconds:
                    break  # behind schedule: what is not sent by the end is never sent
                count = min(MAX_TICK_EVENTS, int(plan.rate * tick * TICK_SECONDS) - emitted)
                if count <= 0:
                    continue
                emitted += count
                sent = time.time()
                self.max_lag = max(self.max_lag, sent - due_at)
                events = self._events(count, sent)
                if plan.backend == "memory":
                    for first in range(0, len(events), MAX_BATCH):
                        chunk = events[first : first + MAX_BATCH]
                        await inflight.acquire()
                        nursery.start_soon(self._post, client, inflight, chunk, sent)
                else:
                    ok = await trio.to_thread.run_sync(_xadd, store, events)
                    self._accept(events, ok, sent)
        return ProducerReport(
            per_channel=tuple(self.accepted),
            accepted=sum(self.accepted),
            in_window=self.in_window,
            errors=self.errors,
            max_lag_ms=self.max_lag * 1000,
        )

    async def _post(
        self,
        client: RpcConnections,
        inflight: trio.Semaphore,
        events: list[tuple[int, bytes]],
        sent: float,
    ) -> None:
        try:
            body = b"[" + b",".join(_publish_request(i, e) for i, e in enumerate(events)) + b"]"
            try:
                replies = msgspec.json.decode(await client.post(body))
            except (OSError, trio.BrokenResourceError, ValueError, msgspec.DecodeError):
                replies = []
            if not isinstance(replies, list):
                replies = []
            done = {r.get("id") for r in replies if isinstance(r, dict) and "result" in r}
            self._accept(events, [i in done for i in range(len(events))], sent)
        finally:
            inflight.release()


class RpcConnections:
    """Keep-alive HTTP/1.1 connections that POST JSON to one URL, one request at a time each.

    A few lines of HTTP instead of httpx: the producer shares the machine
    with the server, and httpx costs it about a millisecond of CPU per request.
    Use as an async context manager (closes the idle connections).

    Args:
        url: ``http://host:port/path``.
    """

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        self._host, self._port = parsed.host, parsed.port or 80
        self._head = (
            f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._idle: list[trio.SocketStream] = []

    async def __aenter__(self) -> RpcConnections:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        while self._idle:
            await self._idle.pop().aclose()

    async def post(self, body: bytes) -> bytes:
        """POST ``body``; the response body.

        Raises:
            OSError, trio.BrokenResourceError: the connection failed.
            ValueError: not a 200 response with a Content-Length.
        """
        stream = (
            self._idle.pop() if self._idle else await trio.open_tcp_stream(self._host, self._port)
        )
        try:
            await stream.send_all(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))
            reply = await _read_response(stream)
        except BaseException:
            stream.socket.close()
            raise
        self._idle.append(stream)
        return reply


async def _read_response(stream: trio.SocketStream) -> bytes:
    """One HTTP/1.1 response's body (Content-Length framing).

    Raises:
        ValueError: not a 200, or no Content-Length.
        trio.BrokenResourceError: the connection closed early.
    """
    buffer = bytearray()
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = await stream.receive_some(65_536)
        if not chunk:
            raise trio.BrokenResourceError("connection closed")
        buffer += chunk
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    if head[0].split(" ")[1] != "200":
        raise ValueError(f"HTTP {head[0]}")
    lengths = [line.split(":", 1)[1] for line in head if line.lower().startswith("content-length:")]
    if not lengths:
        raise ValueError("no Content-Length")
    size = int(lengths[0])
    body = buffer[end + 4 :]
    while len(body) < size:
        chunk = await stream.receive_some(65_536)
        if not chunk:
            raise trio.BrokenResourceError("connection closed")
        body += chunk
    return bytes(body[:size])


def _publish_request(id: int, event: tuple[int, bytes]) -> bytes:
    channel, data = event
    head = b'{"jsonrpc":"2.0","method":"realtime.publish","id":%d,"params":{"channel":' % id
    return head + _json.encode(channel_name(channel)) + b',"data":' + data + b"}}"


def _xadd(store: redis.Redis, events: list[tuple[int, bytes]]) -> list[bool]:
    """XADD every event in one pipeline (a worker thread); which were accepted."""
    pipe = store.pipeline(transaction=False)
    for channel, data in events:
        pipe.xadd("starling:events", {"channel": channel_name(channel), "data": data})
    try:
        replies = pipe.execute(raise_on_error=False)
    except redis.RedisError:
        return [False] * len(events)
    return [not isinstance(reply, Exception) for reply in replies]


def producer_main(plan: ProducerPlan, conn: Connection) -> None:
    """The entry point of the producer process (``multiprocessing``, spawn)."""
    try:
        conn.send(("report", trio.run(_Producer(plan).main)))
    except BaseException as error:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(error).__name__}: {error}"))
        raise


# -- one run (the parent) --------------------------------------------------------------


@dataclass
class _Child:
    process: multiprocessing.process.BaseProcess
    conn: Connection

    def receive(self, what: str, timeout: float) -> Any:
        """The child's next message, which must be ``(what, value)``.

        Raises:
            RuntimeError: the child failed, said something else, or said nothing in time.
        """
        if not self.conn.poll(timeout):
            raise RuntimeError(f"{self.process.name}: no {what} within {timeout:.0f} s")
        kind, value = self.conn.recv()
        if kind != what:
            raise RuntimeError(f"{self.process.name}: {kind}: {value}")
        return value


@contextlib.contextmanager
def _children() -> Iterator[list[_Child]]:
    """Child processes started into the yielded list; each is ended after the block."""
    children: list[_Child] = []
    try:
        yield children
    finally:
        for child in children:
            child.process.join(STOP_TIMEOUT)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
            child.conn.close()


def _spawn(children: list[_Child], name: str, target: Any, plan: Any) -> _Child:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(plan, child), name=name, daemon=True)
    process.start()
    child.close()
    children.append(_Child(process, parent))
    return children[-1]


Log = Callable[[str], None]
"""Where a run's progress lines go."""


def _quiet(line: str) -> None:
    """Drop a progress line."""


def run_once(
    scenario: Scenario, redis_url: str | None = None, *, log: Log = _quiet
) -> dict[str, Any]:
    """One run (module docstring); its row of figures.

    Args:
        scenario: the settings.
        redis_url: an existing Redis (redis backend); ``None`` starts a private one.
        log: where the native loadgen's progress lines go.

    Raises:
        RuntimeError: a service, a child process or the loadgen failed, or the
            native clients are wanted but not built.
    """
    if scenario.clients == "python":
        return _run_python(scenario, redis_url)
    if scenario.workload in CONNECTION_WORKLOADS:
        return _run_connections(scenario, redis_url, log)
    if scenario.workload == "following":
        return _run_following(scenario, redis_url, log)
    return _run_native(scenario, redis_url, log)


def is_cluster_url(url: str) -> bool:
    """``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def store_url_for(backend: Backend, redis_url: str | None) -> str | None:
    """The existing store ``--redis-url`` gives ``backend``: a cluster URL serves the
    redis-cluster backend, any other the redis backend; ``None``: start a private one."""
    if redis_url is None or backend == "memory":
        return None
    return redis_url if is_cluster_url(redis_url) == (backend == "redis-cluster") else None


def _services(
    stack: contextlib.ExitStack, scenario: Scenario, redis_url: str | None
) -> tuple[Server, str, list[int]]:
    """The stream (a private redis-server or Redis Cluster unless ``redis_url`` serves the
    backend, :func:`store_url_for`) and ``starling serve``, until ``stack`` ends.

    Returns:
        The server, the stream's URL, the pids of the private Redis processes ([] if not ours).
    """
    redis_pids: list[int] = []
    existing = store_url_for(scenario.backend, redis_url)
    if scenario.backend == "memory":
        store_url = "memory://"
    elif existing is not None:
        store_url = existing
    elif scenario.backend == "redis-cluster":
        store_url, redis_pids = stack.enter_context(private_redis_cluster())
    else:
        store_url, redis_pid = stack.enter_context(private_redis())
        redis_pids = [redis_pid]
    return stack.enter_context(running_server(scenario, store_url)), store_url, redis_pids


def _cpu_sample(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds of each party so far, and the machine's busy seconds (``machine``)."""
    sample = {party: sum(cpu_seconds(pid) for pid in group) for party, group in pids.items()}
    sample["machine"] = machine_cpu_seconds()
    return sample


def _cpu_pct(
    before: dict[str, float], after: dict[str, float], pids: dict[str, list[int]], seconds: float
) -> dict[str, float | None]:
    """Each party's CPU % of one core between two samples (``None``: no such process);
    ``other``: what the rest of the machine used."""
    cpu: dict[str, float | None] = {
        party: 100 * (after[party] - before[party]) / seconds if pids.get(party, [0]) else None
        for party in before
    }
    ours = sum(v for k, v in cpu.items() if k != "machine" and v is not None and not math.isnan(v))
    machine = cpu["machine"]
    cpu["other"] = None if machine is None else machine - ours
    return cpu


def _run_python(scenario: Scenario, redis_url: str | None) -> dict[str, Any]:
    """One run with the Python subscriber processes and producer."""
    run = _run_id()
    with contextlib.ExitStack() as stack:
        server, store_url, redis_pids = _services(stack, scenario, redis_url)
        children = stack.enter_context(_children())
        share, extra = divmod(scenario.subscribers, scenario.client_processes)
        first = 0
        for index in range(scenario.client_processes):
            count = share + (1 if index < extra else 0)
            plan = ClientPlan(server.ws_url, run, first, count, scenario.channels)
            _spawn(children, f"subscribers-{index}", client_main, plan)
            first += count
        clients = list(children)
        ready = [client.receive("ready", READY_TIMEOUT) for client in clients]
        connected = sum(count for count, _ in ready)
        connect_error = next((error for _, error in ready if error is not None), None)
        start = time.time() + START_DELAY
        window = Window(start + scenario.warmup, start + scenario.warmup + scenario.duration)
        for client in clients:
            client.conn.send(window)
        target = f"{server.url}/rpc" if scenario.backend == "memory" else store_url
        seconds = scenario.warmup + scenario.duration
        producer_plan = ProducerPlan(
            scenario.backend, target, run, scenario.rate, scenario.channels, start, seconds, window
        )
        producer = _spawn(children, "producer", producer_main, producer_plan)
        pids = {
            "server": [server.pid],
            "client": [c.process.pid for c in clients if c.process.pid is not None],
            "producer": [producer.process.pid] if producer.process.pid is not None else [],
            "redis": redis_pids,
        }
        _wait_until(window.start)
        cpu_before = _cpu_sample(pids)
        _wait_until(window.end)
        cpu_after = _cpu_sample(pids)
        produced: ProducerReport = producer.receive("report", seconds + 60)
        expected = Expected(produced.per_channel, time.time() + scenario.drain)
        for client in clients:
            client.conn.send(expected)
        reports: list[ClientReport] = [
            client.receive("report", scenario.drain + 30) for client in clients
        ]
        stats = realtime_stats(server.url)
    cpu = _cpu_pct(cpu_before, cpu_after, pids, scenario.duration)
    row = _row(scenario, produced, reports, cpu, stats, connected)
    row["connect_error"] = connect_error
    return row


def _run_id() -> str:
    """A run id (stamped in every event; pubs of other runs are ignored)."""
    return f"{os.getpid()}-{time.time_ns()}"


NOT_BUILT = "the native load generator is not built: run `make bench-tools` (needs Go >= 1.22)"


def _loadgen_binary() -> Path:
    """The built loadgen.

    Raises:
        RuntimeError: it is not built.
    """
    binary = loadgen_binary()
    if binary is None:
        raise RuntimeError(NOT_BUILT)
    return binary


def _run_native(scenario: Scenario, redis_url: str | None, log: Log) -> dict[str, Any]:
    """One fanout/hot run with the Go loadgen: it subscribes, produces and checks; we sample CPU."""
    document, cpu, stats = _loadgen_run(scenario, redis_url, log)
    return _native_row(scenario, document, cpu, stats)


def _run_following(scenario: Scenario, redis_url: str | None, log: Log) -> dict[str, Any]:
    """One following run (:mod:`bench.following`): the follow lists read from the graph
    before the server opens it, handed to the loadgen as a file in a temp dir."""
    assert scenario.data_dir is not None  # Scenario checks it
    settings = Settings.resolve(Path(scenario.data_dir), None, None)
    lists: FollowLists = trio.run(
        functools.partial(
            read_follow_lists,
            settings,
            users=scenario.subscribers,
            posts=scenario.channels,
            seed=scenario.seed,
        )
    )
    with tempfile.TemporaryDirectory(prefix="starling-bench-following-") as directory:
        follows = Path(directory) / "follows.json"
        lists.write(follows)
        # memory://: realtime.publish_many, as a batch's calls would run concurrently
        # and the loadgen would fall back to one activity per request (producer.go).
        planned = replace(scenario, channels=len(lists.posts), publish_many=True)
        document, cpu, stats = _loadgen_run(planned, redis_url, log, follows=follows)
    identity = {
        "scenario": scenario.workload,
        "clients": "native",
        "backend": scenario.backend,
        "rate": scenario.rate,
        "subscribers": scenario.subscribers,
        "channels": len(lists.posts),
    }
    return following.following_row(
        document,
        lists,
        duration=scenario.duration,
        identity=identity,
        cpu=_cpu_columns(cpu, scenario.duration, document["frames"]["messages_in_window"]),
        server=_server_columns(stats),
    )


def _loadgen_run(
    scenario: Scenario, redis_url: str | None, log: Log, *, follows: Path | None = None
) -> tuple[dict[str, Any], dict[str, float | None], dict[str, Any]]:
    """The services and the Go loadgen for one run with a producer.

    Returns:
        The loadgen's report, each party's CPU % over the window, the server's
        ``system.stats`` realtime figures.
    """
    binary = _loadgen_binary()
    with contextlib.ExitStack() as stack:
        server, store_url, redis_pids = _services(stack, scenario, redis_url)
        memory = scenario.backend == "memory"
        plan = LoadgenPlan(
            workload=scenario.workload,
            server=server.url,
            secret=SECRET,
            run=_run_id(),
            subscribers=scenario.subscribers,
            channels=scenario.channels,
            rate=scenario.rate,
            duration=scenario.duration,
            warmup=scenario.warmup,
            drain=scenario.drain,
            producer="http" if memory else "redis",
            redis_url=None if memory else store_url,
            partition_keys=() if memory else partition_keys(store_url),
            publish_many=scenario.publish_many,
            dial_concurrency=scenario.dial_concurrency,
            bare_xadd=scenario.bare_xadd,
            follows=follows,
            seed=scenario.seed if follows is not None else None,
        )
        loadgen = stack.enter_context(Loadgen(plan, binary=binary, on_line=log))
        loadgen.next_event("subscribed", NATIVE_READY_TIMEOUT)
        announced = loadgen.next_event("window", READY_TIMEOUT)
        window = Window(announced["start_ns"] / 1e9, announced["end_ns"] / 1e9)
        pids = {
            "server": [server.pid],
            "client": [loadgen.pid],
            "producer": [],  # in the loadgen
            "redis": redis_pids,
        }
        _wait_until(window.start)
        cpu_before = _cpu_sample(pids)
        _wait_until(window.end)
        cpu_after = _cpu_sample(pids)
        document = loadgen.report(scenario.drain + READY_TIMEOUT)
        stats = realtime_stats(server.url)
    return document, _cpu_pct(cpu_before, cpu_after, pids, scenario.duration), stats


HOLD_SAMPLE_SHARE = 0.8
"""Idle/storm: the server's memory is read this far into the hold (before the loadgen closes)."""


def _run_connections(scenario: Scenario, redis_url: str | None, log: Log) -> dict[str, Any]:
    """One idle/storm run: the loadgen connects and holds; we read the server's memory and CPU."""
    binary = _loadgen_binary()
    hold = scenario.hold or HOLD_SECONDS[scenario.workload]
    with contextlib.ExitStack() as stack:
        server, _, _ = _services(stack, scenario, redis_url)
        rss_before = rss_bytes(server.pid)
        cpu_start = cpu_seconds(server.pid)
        plan = LoadgenPlan(
            workload=scenario.workload,
            server=server.url,
            secret=SECRET,
            run=_run_id(),
            subscribers=scenario.subscribers,
            channels=scenario.channels,
            hold=hold,
            dial_concurrency=scenario.dial_concurrency,
        )
        loadgen = stack.enter_context(Loadgen(plan, binary=binary, on_line=log))
        loadgen.next_event("subscribed", NATIVE_READY_TIMEOUT)
        held_at = time.monotonic()
        cpu_subscribed = cpu_seconds(server.pid)
        time.sleep(hold * HOLD_SAMPLE_SHARE)
        cpu_held = cpu_seconds(server.pid)
        held_for = time.monotonic() - held_at
        rss_after = rss_bytes(server.pid)
        document = loadgen.report(hold + READY_TIMEOUT)
    connect = document["connect"]
    connected: int = connect["connected"]
    per_client = connect["per_client_ms"] or {}
    since_start = connect["since_start_ms"] or {}
    connect_cpu = cpu_subscribed - cpu_start
    rss_delta = None if rss_before is None or rss_after is None else rss_after - rss_before
    row: dict[str, Any] = {
        "scenario": scenario.workload,
        "clients": "native",
        "backend": scenario.backend,
        "subscribers": scenario.subscribers,
        "channels": scenario.channels,
        "connected": connected,
        "connect_errors": connect["connect_errors"],
        "retries": connect["retries"],
        "subscribe_s": connect["subscribe_s"],
        "subscribed_per_s": connect["subscribed_per_s"],
        "connect_p50_ms": per_client.get("p50"),
        "connect_p99_ms": per_client.get("p99"),
        "connect_max_ms": per_client.get("max"),
        "ready_p50_ms": since_start.get("p50"),
        "ready_p99_ms": since_start.get("p99"),
        "server_rss_before_mb": _mib(rss_before),
        "server_rss_after_mb": _mib(rss_after),
        "server_rss_per_connection_kb": (
            round(rss_delta / connected / 1024, 2) if rss_delta is not None and connected else None
        ),
        "server_connect_cpu_s": round(connect_cpu, 2),
        "server_cpu_ms_per_connection": (
            round(1000 * connect_cpu / connected, 3) if connected else None
        ),
        "server_idle_cpu_pct": _pct(100 * (cpu_held - cpu_subscribed) / held_for),
        "client_cpu_s": round(document["cpu"]["user_s"] + document["cpu"]["sys_s"], 2),
        "disconnects": document["disconnected"],
        "disconnect_codes": document["disconnects"],
        "error_kinds": connect["error_kinds"],
        "retry_kinds": connect["retry_kinds"],
        "connect_error": connect["first_error"] or None,
    }
    row["passed"] = connections_pass(row)
    return row


def _mib(size: int | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)


def passes(row: dict[str, Any]) -> bool:
    """A fanout/hot row is within the budget: p99 <= 25 ms, nothing lost, no
    connection missing or dropped, >= 95% of the target rate entered (a
    following row: :func:`bench.following.passes`)."""
    if row.get("scenario") == "following":
        return following.passes(row)
    return bool(
        row["p99_ms"] is not None
        and row["p99_ms"] <= BUDGET_P99_MS
        and row["lost"] == 0
        and row["disconnects"] == 0
        and row["connected"] == row["subscribers"]
        and row["events_per_s"] >= MIN_RATE_SHARE * row["rate"]
    )


def connections_pass(row: dict[str, Any]) -> bool:
    """An idle/storm row passes when every connection subscribed and none was dropped."""
    return bool(row["connected"] == row["subscribers"] and row["disconnects"] == 0)


def _row(
    scenario: Scenario,
    produced: ProducerReport,
    reports: Sequence[ClientReport],
    cpu: dict[str, float | None],
    stats: dict[str, Any],
    connected: int,
) -> dict[str, Any]:
    """The row of a run with the Python clients."""
    histogram = new_histogram()
    for report in reports:
        histogram.decode_and_add(report.histogram)
    frames = sum(r.frames for r in reports)
    frame_messages = sum(r.frame_messages for r in reports)
    measured = int(histogram.get_total_count()) > 0

    def at(percentile: float) -> float | None:
        """A latency percentile in ms; ``None`` when nothing sent in the window arrived."""
        return _ms(histogram.get_value_at_percentile(percentile)) if measured else None

    row: dict[str, Any] = {
        "scenario": scenario.workload,
        "clients": "python",
        "backend": scenario.backend,
        "rate": scenario.rate,
        "subscribers": scenario.subscribers,
        "channels": scenario.channels,
        "events_per_s": round(produced.in_window / scenario.duration, 1),
        "deliveries_per_s": round(sum(r.measured for r in reports) / scenario.duration, 1),
        "frames_per_s": round(frames / scenario.duration, 1),
        "messages_per_frame": round(frame_messages / frames, 2) if frames else 0.0,
        "p50_ms": at(50.0),
        "p99_ms": at(99.0),
        "p999_ms": at(99.9),
        "max_ms": _ms(histogram.get_max_value()) if measured else None,
        "lost": sum(r.lost for r in reports),
        "duplicated": sum(r.duplicated for r in reports),
        "out_of_order": sum(r.out_of_order for r in reports),
        "offset_order_violations": None,  # the Python clients do not check offsets
        "disconnects": sum(r.disconnects for r in reports),
        "connected": connected,
        "events_total": produced.accepted,
        "events_per_channel": list(produced.per_channel),
        "deliveries_total": sum(r.received for r in reports),
        "deliveries_expected": sum(r.expected for r in reports),
        "producer_errors": produced.errors,
        "producer_lag_ms": round(produced.max_lag_ms, 2),
        **_cpu_columns(cpu, scenario.duration, frame_messages, produced.in_window),
        **_server_columns(stats),
    }
    row["passed"] = passes(row)
    return row


def _native_row(
    scenario: Scenario,
    document: dict[str, Any],
    cpu: dict[str, float | None],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """The row of a fanout/hot run with the native clients, from the loadgen's report.

    The report's shape is ``report`` in bench/loadgen/report.go.
    """
    producer, deliveries, frames = document["producer"], document["deliveries"], document["frames"]
    latency: dict[str, Any] = document["latency_ms"] or {}
    connect = document["connect"]
    row: dict[str, Any] = {
        "scenario": scenario.workload,
        "clients": "native",
        "backend": scenario.backend,
        "rate": scenario.rate,
        "subscribers": scenario.subscribers,
        "channels": scenario.channels,
        "events_per_s": round(producer["in_window"] / scenario.duration, 1),
        "deliveries_per_s": deliveries["window_per_s"],
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
        "disconnects": document["disconnected"],
        "disconnect_codes": document["disconnects"],
        "connected": connect["connected"],
        "events_total": producer["events"],
        "events_per_channel": producer["per_channel"],
        "deliveries_total": deliveries["received"],
        "deliveries_expected": deliveries["expected"],
        "producer_errors": producer["errors"],
        "producer_lag_ms": producer["max_lag_ms"],
        "producer_unsent": producer["unsent"],
        "producer_mode": producer["mode"],
        **_cpu_columns(cpu, scenario.duration, frames["messages_in_window"], producer["in_window"]),
        **_server_columns(stats),
        "connect_error": connect["first_error"] or producer["first_error"] or None,
    }
    row["passed"] = passes(row)
    return row


def _cpu_columns(
    cpu: dict[str, float | None], seconds: float, deliveries: int, events: int | None = None
) -> dict[str, Any]:
    """CPU % of one core per party over the window, and µs of CPU per delivery
    (``deliveries``: the ``pub``s received in the window) of the server and of
    the load generators (subscribers and producer together); with ``events``
    (those sent in the window), the server's and Redis's µs of CPU per event."""
    load = [v for k, v in cpu.items() if k in ("client", "producer") and v is not None]
    return {
        "server_cpu_pct": _pct(cpu["server"]),
        "client_cpu_pct": _pct(cpu["client"]),
        "producer_cpu_pct": _pct(cpu["producer"]),
        "redis_cpu_pct": _pct(cpu["redis"]),
        "other_cpu_pct": _pct(cpu["other"]),
        "server_cpu_us_per_delivery": _per_delivery(cpu["server"], seconds, deliveries),
        "client_cpu_us_per_delivery": _per_delivery(
            sum(load) if load else None, seconds, deliveries
        ),
    } | (
        {}
        if events is None
        else {
            "server_cpu_us_per_event": _per_delivery(cpu["server"], seconds, events),
            "redis_cpu_us_per_event": _per_delivery(cpu["redis"], seconds, events),
        }
    )


def _per_delivery(pct: float | None, seconds: float, deliveries: int) -> float | None:
    """µs of CPU per delivery: ``pct`` % of a core for ``seconds``, over ``deliveries``."""
    if pct is None or math.isnan(pct) or deliveries <= 0:
        return None
    return round(pct / 100 * seconds * 1e6 / deliveries, 1)


def _server_columns(stats: dict[str, Any]) -> dict[str, Any]:
    """The server's own counters (``system.stats``), ``None`` where it has none.

    ``server_publish_p99_ms``: its stream-to-publisher latency (the last 10-20 s),
    the part of the end-to-end latency spent before the WebSocket edge.
    """
    latency = stats.get("latency_ms")
    return {
        "server_publish_p99_ms": latency.get("p99") if isinstance(latency, dict) else None,
        "server_published": stats.get("published"),
        "server_delivered": stats.get("delivered"),
        "server_slow_disconnects": stats.get("slow_disconnects"),
        "server_reorder_gaps": stats.get("reorder_gaps"),
        "server_duplicates": stats.get("duplicates"),
    }


def _ms(microseconds: Any) -> float:
    return round(float(microseconds) / 1000, 3)


def _pct(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 1)


# -- many runs: rates, repeats, the knee ------------------------------------------------


IDENTITY_KEYS = ("scenario", "clients", "backend", "rate", "subscribers", "channels")
"""What a row of medians copies from its first run."""
NUMERIC_SKIP = frozenset({*IDENTITY_KEYS, "passed", "connect_error"})
WORST_OF: dict[str, Callable[[Sequence[float]], float]] = {
    "lost": max,
    "duplicated": max,
    "out_of_order": max,
    "offset_order_violations": max,
    "disconnects": max,
    "connect_errors": max,
    "connected": min,
}
"""Figures a row of medians takes from the worst run instead of the median."""


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row of the runs' medians (same scenario, backend and rate); ``passed`` if it passes.

    Losses, duplicates, reorderings, dropped connections and connect errors
    are the worst run's, ``connected`` the fewest: the row passes only if
    *no* run lost an event or a connection. Figures that are not numbers
    (per-channel counts, close codes) are left out.
    """
    row: dict[str, Any] = {k: runs[0][k] for k in IDENTITY_KEYS if k in runs[0]}
    row["runs"] = len(runs)
    for key in runs[0]:
        if key in NUMERIC_SKIP:
            continue
        values = [r[key] for r in runs if _numeric(r.get(key))]
        if values:
            row[key] = WORST_OF[key](values) if key in WORST_OF else statistics.median(values)
        elif all(r.get(key) is None for r in runs):
            row[key] = None
    row["connect_error"] = next((r["connect_error"] for r in runs if r["connect_error"]), None)
    connections = row.get("scenario") in CONNECTION_WORKLOADS
    row["passed"] = connections_pass(row) if connections else passes(row)
    return row


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class Session:
    """Every run of one invocation, and what the table shows."""

    console: Console
    repeat: int
    redis_url: str | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)

    def measure(self, scenario: Scenario) -> dict[str, Any]:
        """Run ``scenario`` ``repeat`` times; the medians row."""
        [summary] = self.measure_interleaved([scenario])
        return summary

    def measure_interleaved(self, scenarios: Sequence[Scenario]) -> list[dict[str, Any]]:
        """Run each of ``scenarios`` ``repeat`` times, taking turns (run 1 of each, then
        run 2 of each, …) so that a busy machine's noise falls on all alike; their
        medians rows, in order."""
        runs: list[list[dict[str, Any]]] = [[] for _ in scenarios]
        for attempt in range(1, self.repeat + 1):
            for scenario, rows in zip(scenarios, runs, strict=True):
                self.console.log(f"{_described(scenario)} (run {attempt}/{self.repeat})")
                row = run_once(scenario, self.redis_url, log=self._progress)
                self.console.log(_outcome(row))
                if row["connect_error"] is not None:
                    self.console.log(
                        f"  [red]{scenario.subscribers - row['connected']} subscribers failed "
                        f"to connect[/]: {escape(row['connect_error'][:300])}"
                    )
                rows.append(row)
        summaries = []
        for rows in runs:
            self.runs += rows
            summaries.append(medians(rows))
        self.summary += summaries
        return summaries

    def _progress(self, line: str) -> None:
        self.console.log(f"  {line}", markup=False, highlight=False)


def _described(scenario: Scenario) -> str:
    if scenario.workload in CONNECTION_WORKLOADS:
        return (
            f"{scenario.workload} ({scenario.backend}): {scenario.subscribers:,} connections "
            f"on {scenario.channels:,} channels, native clients"
        )
    if scenario.workload == "following":
        return (
            f"following ({scenario.backend}): {scenario.rate:,} activities/s by the followees "
            f"of {scenario.subscribers:,} users of {scenario.data_dir}, native clients"
        )
    return (
        f"{scenario.workload} ({scenario.backend}, {scenario.clients} clients): "
        f"{scenario.rate:,} events/s, {scenario.subscribers:,} subscribers "
        f"on {scenario.channels:,} channels"
    )


def _outcome(row: dict[str, Any]) -> str:
    if row["scenario"] in CONNECTION_WORKLOADS:
        return (
            f"  → {row['connected']:,} subscribed in {row['subscribe_s']} s "
            f"(p99 {row['connect_p99_ms']} ms per client), server RSS "
            f"+{row['server_rss_per_connection_kb']} KiB per connection"
        )
    if row["scenario"] == "following":
        return (
            f"  → {row['events_per_s']:,.0f} activities/s, {row['deliveries_per_s']:,.0f} "
            f"deliveries/s, p99 {row['p99_ms']} ms, lost {row['lost']}, "
            f"server {row['server_cpu_us_per_activity']} µs/activity"
        )
    return (
        f"  → {row['events_per_s']:,.0f} events/s, p99 {row['p99_ms']} ms, "
        f"lost {row['lost']}, server CPU {row['server_cpu_pct']}%"
    )


def knee(session: Session, base: Scenario, ladder: Sequence[int]) -> dict[str, Any]:
    """The highest rate that passes for ``base``'s backend (module docstring)."""
    passed: int | None = None
    failed: int | None = None
    for rate in ladder:
        if session.measure(_at(base, rate))["passed"]:
            passed = rate
        else:
            failed = rate
            break
    low = passed or 0
    if failed is not None:
        for _ in range(KNEE_BISECTIONS):
            grain = 10 ** max(1, len(str(failed)) - 2)  # two significant digits
            middle = round((low + failed) / 2 / grain) * grain
            if middle <= low or middle >= failed:
                break
            if session.measure(_at(base, middle))["passed"]:
                low = passed = middle
            else:
                failed = middle
    return {"backend": base.backend, "knee_rate": passed, "first_miss": failed}


def cluster_overhead(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rate measured on both ``redis`` and ``redis-cluster``, from their medians rows:
    each one's server (and Redis) CPU per event and per delivery, and the cluster's
    extra server CPU per event, ``cluster / single - 1`` (``passed``: within
    :data:`CLUSTER_OVERHEAD_BUDGET`)."""
    rows = {(r["backend"], r.get("rate")): r for r in summary}
    overhead = []
    for (backend, rate), cluster in rows.items():
        single = rows.get(("redis", rate))
        if backend != "redis-cluster" or single is None:
            continue
        row: dict[str, Any] = {"rate": rate}
        for key in (
            "server_cpu_us_per_event",
            "server_cpu_us_per_delivery",
            "redis_cpu_us_per_event",
            "p50_ms",
            "p99_ms",
        ):
            row[f"single_{key}"], row[f"cluster_{key}"] = single.get(key), cluster.get(key)
        for key in ("server_cpu_us_per_event", "server_cpu_us_per_delivery"):
            ratio = _ratio(cluster.get(key), single.get(key))
            row[key.replace("server_cpu_us_per", "extra_server_cpu_per")] = ratio
        extra = row["extra_server_cpu_per_event"]
        row["passed"] = extra is not None and extra <= CLUSTER_OVERHEAD_BUDGET
        overhead.append(row)
    return overhead


OVERHEAD_COLUMNS = {
    "rate": "target/s",
    "single_server_cpu_us_per_event": "redis: server µs/event",
    "cluster_server_cpu_us_per_event": "cluster: server µs/event",
    "extra_server_cpu_per_event": "extra /event",
    "extra_server_cpu_per_delivery": "extra /dlv",
    "single_redis_cpu_us_per_event": "redis: redis µs/event",
    "cluster_redis_cpu_us_per_event": "cluster: redis µs/event",
    "single_p99_ms": "redis: p99 ms",
    "cluster_p99_ms": "cluster: p99 ms",
    "passed": "budget",
}
"""The cluster overhead table's columns (row key → heading); all of them are in the JSON."""


def _overhead_shown(row: dict[str, Any]) -> dict[str, Any]:
    shown = {}
    for key, heading in OVERHEAD_COLUMNS.items():
        value = row.get(key)
        if key.startswith("extra_") and value is not None:
            shown[heading] = f"{value:+.1%}"
        else:
            shown[heading] = _shown(key, value)
    return shown


def _ratio(value: float | None, base: float | None) -> float | None:
    """``value / base - 1``, rounded to 3 places; ``None`` if either is missing or ``base`` is 0."""
    if value is None or not base:
        return None
    return round(value / base - 1, 3)


def _at(base: Scenario, rate: int) -> Scenario:
    return replace(base, rate=rate)


TABLE_COLUMNS = {
    "backend": "backend",
    "clients": "clients",
    "rate": "target/s",
    "events_per_s": "events/s",
    "deliveries_per_s": "deliveries/s",
    "frames_per_s": "frames/s",
    "messages_per_frame": "msg/frame",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "p999_ms": "p99.9 ms",
    "max_ms": "max ms",
    "lost": "lost",
    "duplicated": "dup",
    "out_of_order": "reordered",
    "disconnects": "closed",
    "server_cpu_pct": "server %",
    "client_cpu_pct": "clients %",
    "producer_cpu_pct": "producer %",
    "redis_cpu_pct": "redis %",
    "other_cpu_pct": "others %",
    "server_cpu_us_per_event": "server µs/event",
    "server_cpu_us_per_delivery": "server µs/dlv",
    "redis_cpu_us_per_event": "redis µs/event",
    "client_cpu_us_per_delivery": "clients µs/dlv",
    "runs": "runs",
    "passed": "budget",
}
"""The table's columns (row key → heading); CPU in % of one core."""

CONNECTION_COLUMNS = {
    "scenario": "scenario",
    "backend": "backend",
    "subscribers": "connections",
    "connected": "subscribed",
    "connect_errors": "errors",
    "retries": "retries",
    "subscribe_s": "all in s",
    "subscribed_per_s": "per s",
    "connect_p50_ms": "p50 ms",
    "connect_p99_ms": "p99 ms",
    "connect_max_ms": "max ms",
    "server_rss_per_connection_kb": "server KiB/conn",
    "server_cpu_ms_per_connection": "server ms/conn",
    "server_idle_cpu_pct": "server idle %",
    "disconnects": "closed",
    "runs": "runs",
    "passed": "all in",
}
"""The idle/storm table's columns: connect+subscribe times are per client."""


def table_rows(
    rows: Sequence[dict[str, Any]], columns: dict[str, str] = TABLE_COLUMNS
) -> list[dict[str, Any]]:
    """The rows as the table shows them: a subset of the columns, short headings."""
    shown = [k for k in columns if not rows or k in rows[0]]
    return [{columns[k]: _shown(k, row.get(k)) for k in shown} for row in rows]


def _shown(key: str, value: Any) -> Any:
    if value is None:
        return "-"
    if key == "passed":
        return "pass" if value else "miss"
    if key.endswith("_ms") or key == "messages_per_frame":
        return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
    if isinstance(value, float):
        return round(value) if abs(value) >= 100 else f"{value:.1f}"
    return value


def parse_backends(text: str) -> list[Backend]:
    """``"redis,redis-cluster"`` → ``["redis", "redis-cluster"]``; ``both`` is memory and redis.

    Raises:
        ValueError: an unknown name, or none.
    """
    backends: list[Backend] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        names = ["memory", "redis"] if name == "both" else [name]
        for backend in names:
            if backend not in BACKENDS:
                known = ", ".join([*BACKENDS, "both"])
                raise ValueError(f"unknown backend {part.strip()!r} (known: {known})")
            if backend not in backends:
                backends.append(backend)
    if not backends:
        raise ValueError("no backend given")
    return backends


def parse_rates(values: Sequence[str]) -> tuple[int, ...]:
    """``("20000", "5k,10k")`` → ``(20000, 5000, 10000)``.

    Raises:
        ValueError: a rate is not a positive number (``k`` suffix allowed).
    """
    rates: list[int] = []
    for value in values:
        for part in value.split(","):
            text = part.strip().lower()
            if not text:
                continue
            scale = 1000 if text.endswith("k") else 1
            rate = round(float(text.rstrip("k")) * scale)
            if rate < 1:
                raise ValueError(f"rate {part!r} must be >= 1 event/s")
            rates.append(rate)
    return tuple(rates)


def run(
    base: Scenario,
    *,
    backends: Sequence[Backend],
    rates: Sequence[int],
    knee_search: bool,
    repeat: int = 1,
    redis_url: str | None = None,
    output: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Measure every backend at every rate (or search the knee); print and write the results.

    idle and storm have no rates: one measurement per backend. The JSON goes
    to ``bench/results/realtime.json`` (fanout) or ``realtime-<scenario>.json``;
    following has its own columns (:data:`bench.following.FOLLOWING_COLUMNS`)
    and budget.

    Returns:
        The JSON document's extra fields: ``budget``, ``settings``, ``summary``, ``knee``.
    """
    console = console or Console(width=200, stderr=True)
    session = Session(console, repeat, redis_url)
    connections = base.workload in CONNECTION_WORKLOADS
    knees = []
    if not (connections or knee_search):
        for rate in rates:  # interleaved: each repeat runs every backend in turn
            session.measure_interleaved([replace(base, backend=b, rate=rate) for b in backends])
    for backend in backends:
        scenario = replace(base, backend=backend)
        if connections:
            session.measure(scenario)
        elif knee_search:
            knees.append(knee(session, scenario, rates))
            measured = any(
                r["backend"] == backend and r["rate"] == BUDGET_RATE for r in session.runs
            )
            if base.workload == "fanout" and not measured:
                session.measure(_at(scenario, BUDGET_RATE))  # the budget point, always
    out = Console(width=240)
    columns = CONNECTION_COLUMNS if connections else TABLE_COLUMNS
    if base.workload == "following":
        columns = FOLLOWING_COLUMNS
    title = "realtime delivery" if base.workload == "fanout" else f"realtime {base.workload}"
    print_table(f"{title}: runs", table_rows(session.runs, columns), out)
    if repeat > 1:
        print_table(f"{title}: medians of {repeat} runs", table_rows(session.summary, columns), out)
    budget: dict[str, Any] = {
        "rate": BUDGET_RATE,
        "subscribers": BUDGET_SUBSCRIBERS,
        "channels": BUDGET_CHANNELS,
        "p99_ms": BUDGET_P99_MS,
        "min_rate_share": MIN_RATE_SHARE,
    }
    if base.workload == "following":
        budget = {
            "rate": following.FOLLOWING_RATE,
            "subscribers": following.FOLLOWING_SUBSCRIBERS,
            "p99_ms": following.FOLLOWING_P99_MS,
            "min_rate_share": following.MIN_RATE_SHARE,
            "cpus": 2,
        }
    if knees:
        p99 = budget["p99_ms"]
        print_table(f"knee: highest rate with p99 <= {p99:g} ms, 0 lost", knees, out)
    overhead = cluster_overhead(session.summary)
    if overhead:
        budget["cluster_overhead"] = CLUSTER_OVERHEAD_BUDGET
        limit = f"{CLUSTER_OVERHEAD_BUDGET:.0%}"
        title = f"Redis Cluster vs single Redis: extra server CPU per event (budget {limit})"
        print_table(title, [_overhead_shown(row) for row in overhead], out)
    extra = {
        "budget": budget,
        "settings": {**asdict(base), "backends": list(backends), "repeat": repeat},
        "summary": session.summary,
        "knee": knees,
        "cluster_overhead": overhead,
    }
    name = "realtime" if base.workload == "fanout" else f"realtime-{base.workload}"
    if "redis-cluster" in backends:
        name += "-cluster"
    path = write_json(name, session.runs, extra, output)
    out.print(f"wrote {path}")
    return extra


@click.command("realtime")
@click.option(
    "--scenario",
    "workload",
    type=click.Choice(list(WORKLOADS)),
    default="fanout",
    show_default=True,
    help="fanout: the budget; hot: 10,000 subscribers on 10 channels at 10 events/s each; "
    "idle: 10,000 idle connections (memory per connection); storm: 10,000 connecting at once; "
    "following: 1,000 demo users on following:<me>, 2,000 comments/s by their followees.",
)
@click.option(
    "--clients",
    type=click.Choice(["native", "python"]),
    help="native: the Go load generator (make bench-tools); python: trio processes "
    "[default: native when built, else python].",
)
@click.option(
    "--backend",
    default="both",
    show_default=True,
    help="The stream: memory (in-process), redis, redis-cluster (a private 3+3-node Redis "
    "Cluster, native clients), comma-separated for several (runs interleaved); "
    "both: memory,redis.",
)
@click.option("--subscribers", type=int, help="[default: 1,000; hot, idle, storm: 10,000]")
@click.option(
    "--channels", type=int, help="[default: 200; hot: 10; following: the posts commented on]"
)
@click.option(
    "--rate",
    "rates",
    multiple=True,
    help=f"Events/s (repeatable or comma-separated, k suffix) [default: {BUDGET_RATE}; "
    f"hot: 10 per channel; following: {following.FOLLOWING_RATE} activities/s; "
    "with --knee: the ladder].",
)
@click.option("--duration", default=10.0, show_default=True, help="Seconds measured per run.")
@click.option("--warmup", default=2.0, show_default=True, help="Seconds of load before.")
@click.option("--drain", default=5.0, show_default=True, help="Longest wait for the last pubs.")
@click.option(
    "--hold",
    type=float,
    help="idle, storm: seconds the connections are held [default: 5; storm: 2].",
)
@click.option(
    "--client-processes", default=2, show_default=True, help="Python clients: subscriber processes."
)
@click.option(
    "--publish-many",
    is_flag=True,
    help="Native clients, memory backend: publish with realtime.publish_many calls.",
)
@click.option(
    "--dial-concurrency",
    type=int,
    help="Native clients: handshakes at once [default: 256; storm: all].",
)
@click.option(
    "--bare-xadd",
    is_flag=True,
    help="Native clients, Redis: append with bare XADDs (numbered by the transformer) instead "
    "of FCALL starling_publish (numbered as they enter the stream).",
)
@click.option("--repeat", default=1, show_default=True, help="Runs per rate (medians).")
@click.option(
    "--redis-url",
    help="An existing Redis, or a Redis Cluster (redis+cluster://h:p,h:p) for the redis-cluster "
    "backend [default: a private redis-server or cluster per run].",
)
@click.option("--knee", is_flag=True, help="Search the highest rate within the budget.")
@click.option("--transformers", default=1, show_default=True, help="Passed to starling serve.")
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="following: the data directory of the demo world (starling load demo --data-dir DIR); "
    f"the server runs on it [default: {DEFAULT_DATA_DIR}].",
)
@click.option(
    "--seed",
    default=following.SEED,
    show_default=True,
    help="following: the draw of the users, the posts and the authors.",
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="JSON file.")
def command(
    workload: Workload,
    clients: Clients | None,
    backend: str,
    subscribers: int | None,
    channels: int | None,
    rates: tuple[str, ...],
    duration: float,
    warmup: float,
    drain: float,
    hold: float | None,
    client_processes: int,
    publish_many: bool,
    dial_concurrency: int | None,
    bare_xadd: bool,
    repeat: int,
    redis_url: str | None,
    knee: bool,
    transformers: int,
    data_dir: Path | None,
    seed: int,
    output: Path | None,
) -> None:
    """Realtime delivery vs Disqus's budget: 20k events/s to 1,000 subscribers, p99 <= 25 ms.

    Starts `starling serve` (and a private redis-server), the subscribers and
    a producer on this machine; prints latency, throughput, losses and CPU.
    The clients are the native load generator once `make bench-tools` built
    it, else Python processes.

    \b
    Examples:
      starling bench realtime
      starling bench realtime --backend memory --rate 5k,10k,20k --repeat 3
      starling bench realtime --backend redis --knee
      starling bench realtime --backend redis,redis-cluster --rate 5k,11k --repeat 3
      starling bench realtime --subscribers 20 --channels 4 --rate 200 --duration 2
      starling bench realtime --scenario hot --backend redis
      starling bench realtime --scenario idle --backend memory
      starling bench realtime --scenario storm --backend memory --repeat 3
      starling bench realtime --scenario following --data-dir DEMO --backend redis
    """
    if clients is None:
        if loadgen_binary() is not None:
            clients = "native"
        elif workload in NATIVE_WORKLOADS:
            raise click.ClickException(f"--scenario {workload}: {NOT_BUILT}")
        else:
            clients = "python"
            click.echo(
                "note: the native load generator is not built (make bench-tools): "
                "using the Python clients",
                err=True,
            )
    default_subscribers, default_channels, default_rate = WORKLOADS[workload]
    channels = channels or default_channels
    if workload == "hot":
        default_rate = 10 * channels
    try:
        backends = parse_backends(backend)
        if clients == "python" and "redis-cluster" in backends:
            raise ValueError("the redis-cluster backend needs the native clients: make bench-tools")
        parsed = parse_rates(rates)
        if workload in CONNECTION_WORKLOADS and (parsed or knee):
            raise ValueError(f"--rate and --knee do not apply to the {workload} scenario")
        base = Scenario(
            backend="memory",
            rate=default_rate,
            subscribers=subscribers or default_subscribers,
            channels=channels,
            duration=duration,
            warmup=warmup,
            drain=drain,
            client_processes=client_processes,
            transformers=transformers,
            clients=clients,
            workload=workload,
            hold=hold,
            publish_many=publish_many,
            dial_concurrency=dial_concurrency,
            bare_xadd=bare_xadd,
            data_dir=str(data_dir or DEFAULT_DATA_DIR) if workload == "following" else None,
            seed=seed,
        )
        if repeat < 1:
            raise ValueError("repeat must be >= 1")
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    ladder = parsed or (KNEE_LADDER if knee else (default_rate,))
    try:
        run(
            base,
            backends=backends,
            rates=ladder,
            knee_search=knee,
            repeat=repeat,
            redis_url=redis_url,
            output=output,
        )
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":
    command()
