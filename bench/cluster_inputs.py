"""What the capacity model (:mod:`bench.simulate_cluster`) reads: the benchmarks' results.

:func:`load_measured` reads the JSON files the benchmarks write under ``bench/results``
and derives one :class:`Measured`: every per-operation cost and size the model uses,
each with its :class:`Source` (the file, the command that wrote it, its date, and how
the figure was read or derived), so the model's output can say where each input comes
from.

The inputs (:data:`INPUT_FILES`, :data:`PRODUCED_BY`):

- ``realtime.json``: the knee of one process on Redis (events/s, deliveries/s, server
  CPU): a process's usable CPU is its CPU at the knee, where p99 ≤ 25 ms still held;
- ``realtime-hot.json``: CPU per delivery when every delivery is its own ``send``;
- ``realtime-idle.json``: memory and CPU per idle subscribed connection, the base RSS,
  CPU to accept, authenticate and subscribe one connection;
- ``soak.json`` (optional): the RSS of a process carrying every kind of work;
- ``feeds.json``: CPU per cold feed build;
- ``cluster-costs.json`` (:mod:`bench.cluster_costs`): Redis's CPU per command, a
  process's CPU per Redis round trip, actor hop, relayed message and event, and sizes;
- ``realtime-cluster.json`` (optional; ``starling bench realtime --backend
  redis,redis-cluster``): one process's CPU per event on one Redis and on a Redis
  Cluster under the same load (``cluster_overhead``). The cluster's extra cost is per
  batch (each partition is one more read, acknowledgement and message per tick), so
  the row nearest the knee's rate scales the per-batch costs measured one call at a
  time (:func:`_batch_scale`) until the model gives that extra; without the file the
  scale is 1 and a note says so.

Derived, not read (the derivation is in each :class:`Source`'s ``how``): the CPU per
delivery (the hot scenario's CPU less its idle connections' over its deliveries), the
events per batch at the knee (its rate × the producer's 5 ms tick), and
``own_event_us``, what is left of the knee's CPU per event once every measured part is
taken out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.report import RESULTS_DIR
from stores.redis_cluster import DEFAULT_PARTITIONS

__all__ = [
    "INPUT_FILES",
    "OPTIONAL_INPUTS",
    "PRODUCED_BY",
    "BadInput",
    "Measured",
    "MissingInput",
    "Source",
    "default_paths",
    "load_measured",
]

PRODUCER_TICK_S: Final = 0.005
"""The benchmark producer's tick (``bench/loadgen/producer.go``, ``tickInterval``): one
``FCALL`` a tick, so at the knee a batch holds the events of 5 ms."""

INPUT_FILES: Final = {
    "realtime": "realtime.json",
    "hot": "realtime-hot.json",
    "idle": "realtime-idle.json",
    "soak": "soak.json",
    "feeds": "feeds.json",
    "costs": "cluster-costs.json",
    "cluster": "realtime-cluster.json",
}
"""Each input's file under ``bench/results`` by default."""

PRODUCED_BY: Final = {
    "realtime": "starling bench realtime --backend redis --knee --rate 5k,7.5k,10k,15k,20k "
    "--repeat 3",
    "hot": "starling bench realtime --scenario hot --backend redis --repeat 3",
    "idle": "starling bench realtime --scenario idle --backend redis --repeat 3",
    "soak": "starling bench soak --minutes 30",
    "feeds": "starling bench feeds",
    "costs": "python -m bench.cluster_costs",
    "cluster": "starling bench realtime --clients native --backend redis,redis-cluster "
    "--rate 5k,11k --repeat 3 --output bench/results/realtime-cluster.json",
}
"""The command that writes each input."""

OPTIONAL_INPUTS: Final = frozenset({"soak", "cluster"})


class MissingInput(FileNotFoundError):
    """A benchmark result the model needs is not there (the message names the command that
    writes it)."""


class BadInput(ValueError):
    """A benchmark result is there but lacks a figure the model reads."""


# -- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where one input figure comes from.

    Attributes:
        name: the figure's name in :class:`Measured`.
        value: its value, in ``unit``.
        unit: e.g. ``"µs"``, ``"µs/s"``, ``"bytes"``.
        file: the benchmark result it was read or derived from.
        command: the command that wrote that file.
        date: when (UTC, as the file says).
        how: measured as is, or how it was derived.
    """

    name: str
    value: float
    unit: str
    file: str
    command: str
    date: str
    how: str


@dataclass(frozen=True, slots=True)
class Measured:
    """Per-operation costs and sizes, from the benchmarks (see the module docstring).

    Process costs are microseconds of one process's CPU (its trio thread: the realtime
    path runs there); Redis costs are microseconds of one Redis server's CPU.
    """

    knee_cpu_cores: float
    """A process's CPU at its knee: its usable CPU, cores."""
    own_event_us: float
    """Transforming one event of a batch this process read (derived, see module docstring)."""
    own_read_us: float
    """Per nozzle read that returned entries: the ``XREADGROUP`` and ``XACK`` round trips
    and the actor ``send`` to the transformer."""
    own_message_us: float
    """Per batch this process announces: the ``PUBLISH`` round trip and the actor ``call``
    that delivers it to its own publisher."""
    relay_message_us: float
    """Per Pub/Sub message received (a batch, from any process)."""
    relay_event_us: float
    """Per event of a received message: decoded, reordered, put in its history."""
    frame_us: float
    """Building one ``pub`` frame (once per event per process with a local subscriber)."""
    delivery_us: float
    """Per delivery: one offer and one ``send`` to a connection."""
    idle_connection_us_per_s: float
    """An idle, subscribed connection's CPU per second."""
    round_trip_us: float
    """One Redis round trip on the trio thread (a nozzle's idle read, a reclaim)."""
    connect_ms: float
    """CPU to accept, authenticate and subscribe one connection."""
    feed_build_ms: float
    """CPU of one cold feed build (~100k candidates)."""
    base_rss_mb: float
    """A process's RSS before it holds connections."""
    connection_kb: float
    """RSS per held, subscribed connection."""
    redis_command_us: float
    """Redis's CPU to read and answer one command that arrives alone (not pipelined) while
    Redis is busy with many clients, besides the command's own work."""
    fcall_call_us: float
    fcall_event_us: float
    xreadgroup_call_us: float
    xreadgroup_entry_us: float
    xack_call_us: float
    xack_id_us: float
    spublish_call_us: float
    spublish_subscriber_us: float
    """Writing one Pub/Sub message to one subscriber, Redis busy with many publishers."""
    spublish_byte_us: float
    """Per byte of a message written to one subscriber."""
    payload_bytes: float
    """The sample event's payload (a 140-character comment with its author)."""
    frame_overhead_bytes: float
    pubsub_message_overhead_bytes: float
    pubsub_event_overhead_bytes: float
    stream_entry_bytes: float
    """Redis memory per stream entry."""
    knee_events_per_batch: float
    """Events per batch at the knee (the producer's tick)."""
    redis_scale: float = 1.0
    """A multiplier of every Redis CPU cost (a sensitivity knob: 1 as measured)."""
    batch_scale: float = 1.0
    """What the per-batch costs (``own_read``, ``own_message``, ``relay_message``, already
    multiplied by it) were scaled by to match the cluster benchmark; 1 without it."""
    sources: tuple[Source, ...] = ()
    notes: tuple[str, ...] = ()
    """What was not measured and what stands in for it."""


# -- loading the benchmark results ------------------------------------------------------


def default_paths(results: Path = RESULTS_DIR) -> dict[str, Path]:
    """Every input's default path under ``results``."""
    return {key: results / name for key, name in INPUT_FILES.items()}


def _read(key: str, path: Path) -> dict[str, Any] | None:
    """The JSON at ``path``; ``None`` for a missing optional input.

    Raises:
        MissingInput: a required input is missing.
        BadInput: the file is not a JSON object.
    """
    if not path.exists():
        if key in OPTIONAL_INPUTS:
            return None
        raise MissingInput(
            f"{path} is missing: the capacity model needs it; `{PRODUCED_BY[key]}` writes it"
        )
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BadInput(f"{path} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadInput(f"{path} is not a JSON object")
    return document


def _figure(document: Mapping[str, Any], path: Path, *keys: str) -> Any:
    """``document[k1][k2]…``.

    Raises:
        BadInput: a key is missing.
    """
    value: Any = document
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            raise BadInput(f"{path} has no {'.'.join(keys)}")
        value = value[key]
    return value


def _command(document: Mapping[str, Any]) -> str:
    command = document.get("command", "")
    return " && ".join(command) if isinstance(command, list) else str(command)


def _date(document: Mapping[str, Any]) -> str:
    date = document.get("date", "")
    return ", ".join(date) if isinstance(date, list) else str(date)


def _knee(document: Mapping[str, Any], path: Path) -> Mapping[str, Any]:
    """The Redis backend's summary row at its knee rate."""
    knees = [k for k in document.get("knee", []) if k.get("backend") == "redis"]
    if not knees:
        raise BadInput(f"{path} has no knee for the redis backend (run it with --knee)")
    rate = knees[0]["knee_rate"]
    for row in document.get("summary", []):
        if row.get("backend") == "redis" and row.get("rate") == rate:
            return dict(row)
    raise BadInput(f"{path} has no summary row at the knee rate {rate}")


def _batch_scale(
    document: Mapping[str, Any] | None, path: Path, knee_rate: float, per_batch_us: float
) -> tuple[float, str]:
    """(scale, note): what the per-batch costs measured one call at a time must be
    multiplied by so that the model gives the cluster's measured extra CPU per event.

    ``realtime-cluster.json``'s ``cluster_overhead`` row nearest the knee's rate gives one
    process's CPU per event on one Redis and on the cluster, the same load on both. The
    cluster splits the stream into ``P`` partitions, each read by its own nozzle, so a
    tick's events arrive in ``P`` reads instead of one: ``rate / (rate·tick/P) −
    rate / (rate·tick)`` more reads a second, each with its ``XACK``, and (the model's
    merge estimate at these rates) its own message. Their cost at ``per_batch_us`` each is
    the model's extra; the measured extra over it is the scale.
    """
    if document is None:
        return 1.0, (
            f"{path.name} is absent: the cluster mode's extra cost is not measured, so the "
            "per-batch costs measured one call at a time stand (scale 1.0)"
        )
    rows = [
        row
        for row in document.get("cluster_overhead", [])
        if row.get("rate")
        and row.get("single_server_cpu_us_per_event")
        and row.get("cluster_server_cpu_us_per_event")
    ]
    if not rows:
        raise BadInput(
            f"{path} has no cluster_overhead row with rate, single_ and "
            "cluster_server_cpu_us_per_event"
        )
    row = min(rows, key=lambda r: abs(float(r["rate"]) - knee_rate))
    rate = float(row["rate"])
    single = float(row["single_server_cpu_us_per_event"])
    cluster = float(row["cluster_server_cpu_us_per_event"])
    partitions = int(document.get("settings", {}).get("partitions") or DEFAULT_PARTITIONS)
    extra_reads = rate / (rate * PRODUCER_TICK_S / partitions) - rate / (rate * PRODUCER_TICK_S)
    modelled = extra_reads * per_batch_us / rate
    scale = min(10.0, max(0.1, (cluster - single) / modelled)) if modelled > 0 else 1.0
    note = (
        f"cluster mode from {path.name} ({_date(document)}), at {rate:,.0f} events/s with "
        f"{partitions} partitions: a process's CPU per event {single} → {cluster} µs; "
        f"{extra_reads:,.0f} more reads and messages a second at {per_batch_us:.0f} µs each "
        f"would add {modelled:.1f} µs per event, so the per-batch costs are scaled by "
        f"{scale:.2f}"
    )
    redis_single = row.get("single_redis_cpu_us_per_event")
    redis_cluster = row.get("cluster_redis_cpu_us_per_event")
    if redis_single and redis_cluster:
        note += (
            f"; Redis CPU per event {redis_single} µs on one Redis, {redis_cluster} µs on the "
            "cluster's masters and replicas together (reported: the model counts each "
            "master's commands and replication itself)"
        )
    return scale, note


def load_measured(paths: Mapping[str, Path] | None = None) -> Measured:
    """Read the benchmark results and derive :class:`Measured` (module docstring).

    Args:
        paths: each input's file (:data:`INPUT_FILES` keys); the missing keys default
            to ``bench/results``.

    Raises:
        MissingInput: a required file is missing (the message says which command writes it).
        BadInput: a file lacks a figure.
    """
    chosen = {**default_paths(), **(paths or {})}
    docs = {key: _read(key, path) for key, path in chosen.items()}
    sources: list[Source] = []

    def note(key: str, name: str, value: float, unit: str, how: str) -> float:
        document = docs[key] or {}
        sources.append(
            Source(
                name,
                value,
                unit,
                str(chosen[key].name),
                _command(document),
                _date(document),
                how,
            )
        )
        return value

    realtime, hot, idle = docs["realtime"], docs["hot"], docs["idle"]
    feeds, costs, soak = docs["feeds"], docs["costs"], docs["soak"]
    # Required inputs: _read raised MissingInput for any of them that is missing.
    assert realtime is not None
    assert hot is not None
    assert idle is not None
    assert feeds is not None
    assert costs is not None
    knee = _knee(realtime, chosen["realtime"])
    path_costs = chosen["costs"]
    process = _figure(costs, path_costs, "process_us")
    redis_us = _figure(costs, path_costs, "redis_us")
    sizes = _figure(costs, path_costs, "bytes")

    def cost(group: Mapping[str, Any], key: str, name: str, unit: str = "µs") -> float:
        if key not in group:
            raise BadInput(f"{path_costs} has no {key}")
        value = max(0.0, float(group[key]))
        return note("costs", name, value, unit, f"measured: {key}")

    hot_row = _figure(hot, chosen["hot"], "summary")[0]
    idle_row = _figure(idle, chosen["idle"], "summary")[0]
    idle_per_connection = idle_row["server_idle_cpu_pct"] / 100 / idle_row["subscribers"] * 1e6
    idle_connection = note(
        "idle",
        "idle_connection_us_per_s",
        idle_per_connection,
        "µs/s",
        f"server_idle_cpu_pct {idle_row['server_idle_cpu_pct']} over "
        f"{idle_row['subscribers']:,} idle subscribed connections",
    )
    hot_cpu = hot_row["server_cpu_pct"] / 100
    delivery = note(
        "hot",
        "delivery_us",
        (hot_cpu - hot_row["subscribers"] * idle_per_connection / 1e6)
        / hot_row["deliveries_per_s"]
        * 1e6,
        "µs",
        f"server CPU {hot_row['server_cpu_pct']} % at {hot_row['deliveries_per_s']:,} "
        f"deliveries/s ({hot_row['events_per_s']} events/s, {hot_row['subscribers']:,} "
        "connections), less their idle CPU",
    )
    knee_cpu = note(
        "realtime",
        "knee_cpu_cores",
        knee["server_cpu_pct"] / 100,
        "cores",
        f"server CPU at the knee, {knee['events_per_s']:,} events/s → "
        f"{knee['deliveries_per_s']:,} deliveries/s, p99 {knee['p99_ms']} ms",
    )
    knee_batch = note(
        "realtime",
        "knee_events_per_batch",
        knee["events_per_s"] * PRODUCER_TICK_S,
        "events",
        "knee events/s × the producer's 5 ms tick (one FCALL a tick)",
    )
    round_trip = cost(process, "resp_round_trip", "round_trip_us")
    if "relay_message" not in process:
        raise BadInput(f"{path_costs} has no process_us.relay_message")
    relay_message = max(0.0, float(process["relay_message"]))
    relay_event = cost(process, "relay_event", "relay_event_us")
    frame = cost(process, "frame", "frame_us")
    for key in ("read_call", "ack_call", "actor_send", "publish_call", "actor_call"):
        if key not in process:
            raise BadInput(f"{path_costs} has no process_us.{key}")

    def total(*keys: str) -> float:
        return sum(max(0.0, float(process[k])) for k in keys)

    measured_read = total("read_call", "ack_call", "actor_send")
    measured_message = total("publish_call", "actor_call")
    scale, scale_note = _batch_scale(
        docs["cluster"],
        chosen["cluster"],
        float(knee["events_per_s"]),
        measured_read + measured_message + relay_message,
    )
    scaled = f" × {scale:.2f} (the cluster benchmark's extra cost per batch)" if scale != 1 else ""
    own_read = note(
        "costs",
        "own_read_us",
        measured_read * scale,
        "µs",
        f"measured: (read_call + ack_call + actor_send){scaled}",
    )
    own_message = note(
        "costs",
        "own_message_us",
        measured_message * scale,
        "µs",
        f"measured: (publish_call + actor_call){scaled}",
    )
    relay_message = note(
        "costs",
        "relay_message_us",
        relay_message * scale,
        "µs",
        f"measured: relay_message{scaled}",
    )
    per_event_total = (
        (
            knee_cpu
            - knee["deliveries_per_s"] * delivery / 1e6
            - knee["subscribers"] * idle_connection / 1e6
        )
        / knee["events_per_s"]
        * 1e6
    )
    per_batch = own_read + own_message + relay_message
    own_event_raw = per_event_total - relay_event - frame - per_batch / knee_batch
    notes: list[str] = [scale_note]
    if own_event_raw < 0:
        notes.append(
            f"the knee leaves {own_event_raw:.1f} µs per event to transforming it once the "
            "measured parts are taken out; 0 is used"
        )
    own_event = note(
        "realtime",
        "own_event_us",
        max(0.0, own_event_raw),
        "µs",
        f"derived: knee CPU per event {per_event_total:.1f} µs (after deliveries and idle "
        f"connections) − relay_event − frame − (own_read + own_message + relay_message) / "
        f"{knee_batch:.0f} events per batch",
    )
    connect = note(
        "idle",
        "connect_ms",
        idle_row["server_cpu_ms_per_connection"],
        "ms",
        "server CPU to accept, authenticate and subscribe, per connection",
    )
    connection_kb = note(
        "idle",
        "connection_kb",
        idle_row["server_rss_per_connection_kb"],
        "KiB",
        f"RSS {idle_row['server_rss_before_mb']} → {idle_row['server_rss_after_mb']} MB "
        f"for {idle_row['subscribers']:,} connections",
    )
    if soak is not None:
        samples = [s["rss_mb"] for s in soak.get("samples", []) if "rss_mb" in s]
        if not samples:
            raise BadInput(f"{chosen['soak']} has no samples with rss_mb")
        subscribers = soak.get("settings", {}).get("subscribers", 0)
        base_rss = note(
            "soak",
            "base_rss_mb",
            max(samples) - subscribers * connection_kb / 1024,
            "MB",
            f"the soak's highest RSS ({max(samples)} MB: every kind of work, the embedded "
            f"graph and feed cache included) less its {subscribers:,} connections",
        )
    else:
        base_rss = note(
            "idle",
            "base_rss_mb",
            idle_row["server_rss_before_mb"],
            "MB",
            "RSS before the connections (soak.json absent)",
        )
    throughput = _figure(feeds, chosen["feeds"], "throughput")
    feed_build = note(
        "feeds",
        "feed_build_ms",
        throughput["build_threads"] / throughput["builds_per_s"] * 1000,
        "ms",
        f"{throughput['build_threads']} build threads on {throughput['build_threads']} CPUs "
        f"ranked {throughput['builds_per_s']:.1f} feeds/s (~100k candidates each)",
    )
    if "command_busy" not in redis_us:
        raise BadInput(f"{path_costs} has no redis_us.command_busy")
    redis_command = note(
        "costs",
        "redis_command_us",
        max(0.0, float(redis_us["command_busy"])),
        "µs",
        "measured: Redis CPU per SET among 50 unpipelined clients (redis-benchmark) − a "
        "pipelined SET's: reading and answering one command alone, Redis busy",
    )
    return Measured(
        knee_cpu_cores=knee_cpu,
        own_event_us=own_event,
        own_read_us=own_read,
        own_message_us=own_message,
        relay_message_us=relay_message,
        relay_event_us=relay_event,
        frame_us=frame,
        delivery_us=delivery,
        idle_connection_us_per_s=idle_connection,
        round_trip_us=round_trip,
        connect_ms=connect,
        feed_build_ms=feed_build,
        base_rss_mb=base_rss,
        connection_kb=connection_kb,
        redis_command_us=redis_command,
        fcall_call_us=cost(redis_us, "fcall_call", "fcall_call_us"),
        fcall_event_us=cost(redis_us, "fcall_event", "fcall_event_us"),
        xreadgroup_call_us=cost(redis_us, "xreadgroup_call", "xreadgroup_call_us"),
        xreadgroup_entry_us=cost(redis_us, "xreadgroup_entry", "xreadgroup_entry_us"),
        xack_call_us=cost(redis_us, "xack_call", "xack_call_us"),
        xack_id_us=cost(redis_us, "xack_id", "xack_id_us"),
        spublish_call_us=cost(redis_us, "spublish_call", "spublish_call_us"),
        spublish_subscriber_us=cost(redis_us, "spublish_subscriber_busy", "spublish_subscriber_us"),
        spublish_byte_us=cost(redis_us, "spublish_subscriber_byte", "spublish_byte_us"),
        payload_bytes=cost(sizes, "payload", "payload_bytes", "bytes"),
        frame_overhead_bytes=cost(sizes, "frame_overhead", "frame_overhead_bytes", "bytes"),
        pubsub_message_overhead_bytes=cost(
            sizes, "pubsub_message_overhead", "pubsub_message_overhead_bytes", "bytes"
        ),
        pubsub_event_overhead_bytes=cost(
            sizes, "pubsub_event_overhead", "pubsub_event_overhead_bytes", "bytes"
        ),
        stream_entry_bytes=cost(sizes, "stream_entry", "stream_entry_bytes", "bytes"),
        knee_events_per_batch=knee_batch,
        batch_scale=scale,
        sources=tuple(sources),
        notes=tuple(notes),
    )
