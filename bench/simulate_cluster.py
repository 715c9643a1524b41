"""A capacity model: Starling's realtime path on N processes and a Redis Cluster of M masters.

Run it as ``starling bench simulate-cluster`` (or ``python -m bench.simulate_cluster``)::

    starling bench simulate-cluster --processes 100 --shards 8 --connections 1000000 \\
        --deliveries 1000000 --fanout 50
    starling bench simulate-cluster --solve --connections 1000000 --deliveries 1000000

It replays the per-operation costs the benchmarks measured through ``N`` processes and
``M`` masters and prints, for every resource, the demand, the capacity and the
utilisation, the bottleneck (the highest utilisation) and the headroom; ``--solve``
finds the smallest ``N`` and then ``M`` whose every utilisation is at most ``--target``.
docs/scaling.md explains the figures and what they mean.

The deployment it models (the Redis Cluster mode of :mod:`stores.redis_cluster`): the
stream ``starling:events`` is split into ``P = M × partitions_per_shard`` partitions
(:mod:`stores.partitions`), a channel always in one; each process runs one nozzle per
partition in the partition's consumer group; producers append with one
``FCALL starling_publish`` per partition per call (numbering and ``XADD`` at once); the
process whose nozzle read a batch transforms it, delivers it to its own subscribers,
``SPUBLISH``es it (one message per batch) and ``XACK``s it; every process's relay
receives every message and puts its events into its histories and its own
subscribers' outboxes. Per second, with ``E`` events, fan-out ``F``, ``D = E·F``
deliveries, ``C`` connections, ``R = E/b_read`` nozzle reads and ``B = E/b`` announced
batches (Pub/Sub messages):

    each process   E/N · own_event + R/N · own_read + B/N · own_message   (what it read)
                   + E · relay_event + B · relay_message    (every batch, from every process)
                   + E · p_local · frame                    (a frame per event with a local
                                                              subscriber, p_local = 1-(1-1/N)^F)
                   + D/N · delivery + C/N · idle_connection
                   + P · (1/block + 1/reclaim_every) · round_trip   (idle reads, reclaims)
    each master    its partitions' FCALLs, XREADGROUPs, XACKs, idle reads and XAUTOCLAIMs,
                   and its topics' SPUBLISHes, each written to N subscribers; all of it
                   replicated to its replicas

``b_read``, the events one nozzle read returns, is what a producer appends to one
partition at once (``append_events``; 1 for ``realtime.publish`` and ``comments.add``,
about 55 for the benchmark's producer at 11,000 events/s, one ``FCALL`` per 5 ms tick),
or what a nozzle that waited ``linger`` seconds between reads would gather, up to the
nozzle's batch cap. ``b`` is ``b_read`` times the reads a transformer finds queued and
takes as one (:func:`events_per_message`).

The costs and sizes are :class:`~bench.cluster_inputs.Measured`, read from the
benchmarks' JSON under ``bench/results`` by :func:`~bench.cluster_inputs.load_measured`
(which file, command and date each comes from, and what is derived rather than
measured: :mod:`bench.cluster_inputs`). ``own_event`` is what is left of the knee's CPU
per event once the measured parts are taken out: ``(knee CPU − D·delivery − C·idle) / E
− relay_event − frame − (own_read + own_message + relay_message) / b_knee``.

The capacities that are configuration or hardware, not measurements, are
:class:`Limits` (each says which).

Everything here but the CLI is a pure function of its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

import click
from rich.console import Console

from actors.realtime.transformer import MERGE_BATCHES
from bench.cluster_inputs import (
    INPUT_FILES,
    OPTIONAL_INPUTS,
    BadInput,
    Measured,
    MissingInput,
    load_measured,
)
from bench.report import RESULTS_DIR, print_table, write_json

NAME: Final = "simulate-cluster"
"""The JSON file's name under ``bench/results``."""

Topics = Literal["one", "per-partition"]
"""Where rendered batches cross processes: one sharded Pub/Sub topic
(``starling:realtime``, one slot, so one master, as :mod:`actors.realtime.transformer`
publishes today) or one topic per stream partition (spread over the masters)."""

HISTORY_ENTRY_OVERHEAD: Final = 90
"""Bytes a history keeps per publication besides its payload (a ``Publication`` struct,
the bytes object's header, the deque slot): an estimate, not measured."""

STREAM_READ_OVERHEAD: Final = 80
"""Bytes of an ``XREADGROUP`` reply per entry besides its payload (id, field names,
offset, generation, RESP framing): an estimate from the RESP of one entry."""

REPLICATION_OVERHEAD: Final = 100
"""Bytes Redis propagates to a replica per appended event besides its payload (the
``XADD`` with its id and the ``HINCRBY`` a Function call's effects replicate as): an
estimate."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """What runs.

    Attributes:
        processes: Starling processes (``N``), each one trio thread for the realtime path.
        shards: Redis masters (``M``).
        partitions_per_shard: stream partitions per master (``P = M ×`` this).
        replicas: replicas per master.
        topics: where rendered batches cross processes (:data:`Topics`).

    Raises:
        ValueError: a count < 1 (replicas < 0).
    """

    processes: int
    shards: int
    partitions_per_shard: int = 1
    replicas: int = 1
    topics: Topics = "one"

    def __post_init__(self) -> None:
        if min(self.processes, self.shards, self.partitions_per_shard) < 1 or self.replicas < 0:
            raise ValueError("processes, shards and partitions must be >= 1, replicas >= 0")

    @property
    def partitions(self) -> int:
        """Stream partitions, ``P``."""
        return self.shards * self.partitions_per_shard


@dataclass(frozen=True, slots=True)
class Load:
    """What the deployment serves, per second.

    Attributes:
        connections: WebSocket connections held, each subscribed.
        deliveries_per_s: publications written to connections.
        fanout: deliveries per event (subscribers of its channel), so events/s is
            ``deliveries_per_s / fanout``.
        append_events: events a producer appends to one partition at once (one ``FCALL``).
        linger_s: seconds a nozzle would wait between reads to gather a bigger batch
            (0: it reads again at once, as it does today).
        payload_bytes: an event's rendered payload; ``None``: the measured sample's.
        feed_builds_per_s: cold feed builds.
        channels: channels with subscribers (for the histories' memory); ``None``:
            ``connections / fanout``.

    Raises:
        ValueError: a negative figure, or fan-out or ``append_events`` below 1.
    """

    connections: float
    deliveries_per_s: float
    fanout: float
    append_events: float = 1.0
    linger_s: float = 0.0
    payload_bytes: float | None = None
    feed_builds_per_s: float = 0.0
    channels: float | None = None

    def __post_init__(self) -> None:
        if min(self.connections, self.deliveries_per_s, self.linger_s, self.feed_builds_per_s) < 0:
            raise ValueError("connections, deliveries, linger and feed builds must be >= 0")
        if self.fanout < 1 or self.append_events < 1:
            raise ValueError("fanout and append_events must be >= 1")

    @property
    def events_per_s(self) -> float:
        """Events entering the stream per second."""
        return self.deliveries_per_s / self.fanout


@dataclass(frozen=True, slots=True)
class Limits:
    """Capacities and settings that are configuration or hardware, not measurements.

    Attributes:
        connections_per_process: ``--ws-max-connections`` (its default, and the most
            connections one process held in a benchmark: realtime-idle).
        memory_per_process_mb: RSS a process may use (an assumption).
        nic_gbit: one host's network, each way (an assumption).
        processes_per_host: processes sharing a host's network (an assumption).
        redis_cores: CPU one Redis master may use: 1, its one command thread.
        redis_memory_gb: memory one Redis master may use (an assumption).
        build_threads: feed build threads per process (``FeedSettings.build_threads``).
        max_nodes: Redis Cluster nodes, masters and replicas (the cluster
            specification's suggested maximum, ~1,000).
        nozzle_batch: most entries per nozzle read (``RealtimeSettings.batch``).
        nozzle_block_s: a nozzle's longest wait for an entry (``RealtimeSettings.block``).
        reclaim_every_s: seconds between a nozzle's reclaims.
        history_channels: channels with a history per process (``RealtimeSettings``).
        history_size: publications kept per channel.
        stream_max_length: entries kept per stream partition.
    """

    connections_per_process: int = 10_000
    memory_per_process_mb: float = 2048.0
    nic_gbit: float = 10.0
    processes_per_host: int = 8
    redis_cores: float = 1.0
    redis_memory_gb: float = 8.0
    build_threads: int = 2
    max_nodes: int = 1000
    nozzle_batch: int = 1024
    nozzle_block_s: float = 1.0
    reclaim_every_s: float = 10.0
    history_channels: int = 10_000
    history_size: int = 100
    stream_max_length: int = 1_000_000


# -- the model -------------------------------------------------------------------------


Where = Literal["each process", "busiest master", "cluster"]


@dataclass(frozen=True, slots=True)
class Usage:
    """One resource: how much is asked of it and how much it has.

    Attributes:
        resource: its name.
        where: a process (all alike), the busiest master, or the whole cluster.
        demand: what the load asks, in ``unit``.
        capacity: what it has, in ``unit``.
        unit: e.g. ``"cores"``, ``"MB"``, ``"Gbit/s"``.
    """

    resource: str
    where: Where
    demand: float
    capacity: float
    unit: str

    @property
    def utilisation(self) -> float:
        """``demand / capacity`` (``inf`` for a demand on no capacity)."""
        if self.capacity <= 0:
            return math.inf if self.demand > 0 else 0.0
        return self.demand / self.capacity


@dataclass(frozen=True, slots=True)
class Simulation:
    """The model's answer for one deployment and load.

    Attributes:
        deployment: what runs.
        load: what it serves.
        usages: every resource, process resources first.
        figures: derived rates (events per batch, messages, Redis commands per event …).
    """

    deployment: Deployment
    load: Load
    usages: tuple[Usage, ...]
    figures: Mapping[str, float]

    @property
    def bottleneck(self) -> Usage:
        """The resource with the highest utilisation: the one that saturates first."""
        return max(self.usages, key=lambda usage: usage.utilisation)

    @property
    def headroom(self) -> float:
        """``1 − the bottleneck's utilisation``: the share of it still free (< 0: over)."""
        return 1.0 - self.bottleneck.utilisation

    def fits(self, target: float = 1.0) -> bool:
        """Whether every utilisation is at most ``target``."""
        return self.bottleneck.utilisation <= target


def events_per_read(load: Load, deployment: Deployment, limits: Limits) -> float:
    """Events one nozzle read returns: what a producer appends to a partition at once, or
    what ``linger`` gathers (``E/P`` a second shared by ``N`` nozzles), at most the cap."""
    per_nozzle = load.events_per_s / deployment.partitions / deployment.processes
    gathered = per_nozzle * load.linger_s
    return min(float(limits.nozzle_batch), max(load.append_events, gathered))


def events_per_message(
    load: Load, deployment: Deployment, measured: Measured, limits: Limits
) -> float:
    """Events one announced batch (one Pub/Sub message) holds.

    The transformer takes the nozzle batches queued in its mailbox as one (up to
    :data:`MERGE_BATCHES`, and a nozzle batch's entries). Batches queue when a process's
    reads arrive faster than it handles them; the model takes the time to handle one as
    its CPU (``own_read + own_message``), a lower bound, so the merging it counts is an
    upper bound.
    """
    read = events_per_read(load, deployment, limits)
    reads_per_process = load.events_per_s / read / deployment.processes
    cycle_s = (measured.own_read_us + measured.own_message_us) / 1e6
    queued = min(float(MERGE_BATCHES), max(1.0, reads_per_process * cycle_s))
    return min(float(limits.nozzle_batch), read * queued)


def simulate(
    deployment: Deployment, load: Load, measured: Measured, limits: Limits | None = None
) -> Simulation:
    """Every resource's demand and capacity for ``load`` on ``deployment`` (module
    docstring: the equations). Pure."""
    limits = limits or Limits()
    m = measured
    n = deployment.processes
    masters = deployment.shards
    partitions = deployment.partitions
    events = load.events_per_s
    deliveries = load.deliveries_per_s
    connections = load.connections
    payload = m.payload_bytes if load.payload_bytes is None else load.payload_bytes
    b_read = events_per_read(load, deployment, limits)
    b = events_per_message(load, deployment, m, limits)
    reads = events / b_read if events else 0.0
    batches = events / b if events else 0.0
    appends = events / load.append_events if events else 0.0
    message_bytes = m.pubsub_message_overhead_bytes + b * (m.pubsub_event_overhead_bytes + payload)
    frame_bytes = m.frame_overhead_bytes + payload

    # -- each process
    p_local = 1.0 - (1.0 - 1.0 / n) ** load.fanout
    polls = partitions * (1.0 / limits.nozzle_block_s + 1.0 / limits.reclaim_every_s)
    owned_us = (
        events / n * m.own_event_us + reads / n * m.own_read_us + batches / n * m.own_message_us
    )
    relay_us = events * m.relay_event_us + batches * m.relay_message_us
    frames_us = events * p_local * m.frame_us
    delivery_us = deliveries / n * m.delivery_us
    idle_us = connections / n * m.idle_connection_us_per_s
    poll_us = polls * m.round_trip_us
    cpu_us = owned_us + relay_us + frames_us + delivery_us + idle_us + poll_us
    channels = connections / load.fanout if load.channels is None else load.channels
    histories_mb = (
        min(channels, limits.history_channels)
        * limits.history_size
        * (payload + HISTORY_ENTRY_OVERHEAD)
        / 1e6
    )
    memory_mb = m.base_rss_mb + connections / n * m.connection_kb / 1024 + histories_mb
    process_in_bits = 8 * (batches * message_bytes + events / n * (payload + STREAM_READ_OVERHEAD))
    process_out_bits = 8 * (deliveries / n * frame_bytes + batches / n * message_bytes)
    builds_cores = load.feed_builds_per_s / n * m.feed_build_ms / 1000

    # -- the busiest master: its share of the partitions, and the topic's master
    share = 1.0 / masters
    topic_share = 1.0 if deployment.topics == "one" else share
    fcalls = appends * share
    xreads = reads * share
    idle_reads = n * partitions * share / limits.nozzle_block_s
    acks = reads * share
    claims = n * partitions * share / limits.reclaim_every_s
    spublishes = batches * topic_share
    written = spublishes * n
    commands = fcalls + xreads + idle_reads + acks + claims + spublishes
    replicated_bytes = deployment.replicas * (
        events * share * (payload + REPLICATION_OVERHEAD) + spublishes * message_bytes
    )
    replicated_messages = deployment.replicas * (fcalls + xreads + acks + spublishes)
    redis_us = m.redis_scale * (
        commands * m.redis_command_us
        + fcalls * (m.fcall_call_us + load.append_events * m.fcall_event_us)
        + xreads * (m.xreadgroup_call_us + b_read * m.xreadgroup_entry_us)
        + (idle_reads + claims) * m.xreadgroup_call_us
        + acks * (m.xack_call_us + b_read * m.xack_id_us)
        + spublishes * m.spublish_call_us
        + written * (m.spublish_subscriber_us + message_bytes * m.spublish_byte_us)
        + replicated_messages * m.spublish_subscriber_us
        + replicated_bytes * m.spublish_byte_us
    )
    master_out_bits = 8 * (
        written * message_bytes
        + events * share * (payload + STREAM_READ_OVERHEAD)
        + replicated_bytes
    )
    master_in_bits = 8 * (
        events * share * (payload + STREAM_READ_OVERHEAD) + spublishes * message_bytes
    )
    # The measured entry holds the sample's payload: a bigger payload adds its difference.
    entry_bytes = m.stream_entry_bytes + max(0.0, payload - m.payload_bytes)
    stream_gb = partitions * share * limits.stream_max_length * entry_bytes / 1e9
    nodes = masters * (1 + deployment.replicas)

    host_bits = limits.nic_gbit * 1e9
    usages = (
        Usage("CPU (realtime)", "each process", cpu_us / 1e6, m.knee_cpu_cores, "cores"),
        Usage(
            "connections",
            "each process",
            connections / n,
            limits.connections_per_process,
            "connections",
        ),
        Usage("memory", "each process", memory_mb, limits.memory_per_process_mb, "MB"),
        Usage(
            "network in (Pub/Sub, stream)",
            "each process",
            process_in_bits / 1e9,
            host_bits / limits.processes_per_host / 1e9,
            "Gbit/s",
        ),
        Usage(
            "network out (WebSockets)",
            "each process",
            process_out_bits / 1e9,
            host_bits / limits.processes_per_host / 1e9,
            "Gbit/s",
        ),
        Usage("CPU (feed builds)", "each process", builds_cores, limits.build_threads, "cores"),
        Usage("Redis CPU", "busiest master", redis_us / 1e6, limits.redis_cores, "cores"),
        Usage("network out", "busiest master", master_out_bits / 1e9, limits.nic_gbit, "Gbit/s"),
        Usage("network in", "busiest master", master_in_bits / 1e9, limits.nic_gbit, "Gbit/s"),
        Usage("memory (stream)", "busiest master", stream_gb, limits.redis_memory_gb, "GB"),
        Usage("Redis nodes", "cluster", nodes, limits.max_nodes, "nodes"),
    )
    # Over the cluster: an FCALL per append; an XREADGROUP, an XACK and an SPUBLISH per
    # batch (busy); each nozzle's idle reads and reclaims (idle).
    busy_commands = appends + 2 * reads + batches
    idle_commands = n * polls
    figures = {
        "events_per_s": events,
        "deliveries_per_s": deliveries,
        "events_per_read": b_read,
        "events_per_message": b,
        "reads_per_s": reads,
        "messages_per_s": batches,
        "pubsub_messages_written_per_s": batches * n,
        "pubsub_message_bytes": message_bytes,
        "frame_bytes": frame_bytes,
        "process_cpu_owned_cores": owned_us / 1e6,
        "process_cpu_relay_cores": relay_us / 1e6,
        "process_cpu_frames_cores": frames_us / 1e6,
        "process_cpu_deliveries_cores": delivery_us / 1e6,
        "process_cpu_idle_cores": (idle_us + poll_us) / 1e6,
        "redis_commands_per_s": busy_commands,
        "redis_idle_commands_per_s": idle_commands,
        "redis_commands_per_event": busy_commands / events if events else 0.0,
        "redis_commands_per_delivery": busy_commands / deliveries if deliveries else 0.0,
        "pubsub_writes_per_event": batches * n / events if events else 0.0,
        "pubsub_writes_per_delivery": batches * n / deliveries if deliveries else 0.0,
        "busiest_master_commands_per_s": commands,
        "busiest_master_pubsub_writes_per_s": written,
        "busiest_master_pubsub_bytes_per_s": written * message_bytes,
        "histories_cover": min(1.0, limits.history_channels / channels) if channels else 1.0,
        "reconnect_all_s": connections / n * m.connect_ms / 1000 / m.knee_cpu_cores,
    }
    return Simulation(deployment, load, usages, figures)


# -- solving ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Solution:
    """What :func:`solve` found.

    Attributes:
        simulation: the smallest deployment that fits, or the closest one tried when
            none does.
        feasible: whether it fits the target.
        reason: why none fits (empty when one does).
    """

    simulation: Simulation
    feasible: bool
    reason: str = ""


def _on(where: Where) -> Callable[[Simulation], list[Usage]]:
    def usages(simulation: Simulation) -> list[Usage]:
        return [u for u in simulation.usages if u.where == where]

    return usages


_process_side = _on("each process")
_master_side = _on("busiest master")


def solve(
    load: Load,
    measured: Measured,
    limits: Limits | None = None,
    *,
    target: float = 0.8,
    partitions_per_shard: int = 1,
    replicas: int = 1,
    topics: Topics = "one",
    max_processes: int = 10_000,
) -> Solution:
    """The smallest ``N`` (processes), then the smallest ``M`` (masters), whose every
    utilisation is at most ``target``.

    A process's load only falls (or stays) with fewer masters, and a master's only grows
    with more processes and falls with more masters; so the first ``N`` whose processes
    fit with one master is the answer's ``N`` if there is an answer, and ``M`` is then
    found by bisection, up to the most masters the cluster's node limit allows at
    ``target`` (masters and their replicas count as nodes).

    Raises:
        ValueError: ``target`` <= 0 or ``max_processes`` < 1.
    """
    limits = limits or Limits()
    if not target > 0 or max_processes < 1:
        raise ValueError("target must be > 0 and max_processes >= 1")
    max_shards = max(1, int(target * limits.max_nodes) // (1 + replicas))

    def at(n: int, m: int) -> Simulation:
        deployment = Deployment(n, m, partitions_per_shard, replicas, topics)
        return simulate(deployment, load, measured, limits)

    def fits(usages: Sequence[Usage]) -> bool:
        return all(u.utilisation <= target for u in usages)

    def worst(usages: Sequence[Usage]) -> Usage:
        return max(usages, key=lambda u: u.utilisation)

    for n in range(1, max_processes + 1):
        if not fits(_process_side(at(n, 1))):
            continue
        widest = at(n, max_shards)
        if not fits(_master_side(widest)):
            over = worst(_master_side(widest))
            return Solution(
                widest,
                False,
                f"{n} processes fit, but even {max_shards} masters (the most the cluster's "
                f"{limits.max_nodes} nodes allow at {target:.0%}, replicas included) leave "
                f"{over.resource} of the {over.where} at {over.utilisation:.0%}; more "
                "processes only add to it",
            )
        low, high = 1, max_shards
        while low < high:
            middle = (low + high) // 2
            if fits(_master_side(at(n, middle))):
                high = middle
            else:
                low = middle + 1
        found = at(n, low)
        if fits(found.usages):
            return Solution(found, True)

    # None fits: show the fewest processes at which every process resource fits but those
    # that would not fit even with the most processes tried.
    most = [u for u in _process_side(at(max_processes, 1)) if u.utilisation > target]
    hopeless = {u.resource for u in most}

    def rest_fit(n: int) -> bool:
        return fits([u for u in _process_side(at(n, 1)) if u.resource not in hopeless])

    n = next((n for n in range(1, max_processes + 1) if rest_fit(n)), max_processes)
    low = next((m for m in range(1, max_shards + 1) if fits(_master_side(at(n, m)))), max_shards)
    nearest = at(n, low)
    floor = worst(most or nearest.usages)
    also = [
        f"{u.resource} of the {u.where} ({u.utilisation:.0%})"
        for u in nearest.usages
        if u.utilisation > target and u.resource not in hopeless
    ]
    return Solution(
        nearest,
        False,
        f"no process count up to {max_processes:,} fits: with {max_processes:,} processes "
        f"{floor.resource} of each process is still at {floor.utilisation:.0%} (target "
        f"{target:.0%}); more processes do not bring it under"
        + (f"; over the target as well: {', '.join(also)}" if also else ""),
    )


# -- output ----------------------------------------------------------------------------


def usage_rows(simulation: Simulation) -> list[dict[str, Any]]:
    """The JSON's rows: one per resource, the bottleneck marked."""
    worst = simulation.bottleneck
    return [
        {
            "resource": u.resource,
            "where": u.where,
            "demand": u.demand,
            "capacity": u.capacity,
            "unit": u.unit,
            "utilisation": u.utilisation,
            "bottleneck": u is worst,
        }
        for u in simulation.usages
    ]


def _shown(row: Mapping[str, Any]) -> dict[str, str]:
    """A row of :func:`usage_rows` as the table prints it."""
    return {
        "what": row["resource"],
        "where": row["where"],
        "demand": _number(row["demand"]),
        "capacity": _number(row["capacity"]),
        "unit": row["unit"],
        "utilisation": f"{100 * row['utilisation']:,.0f} %",
        "": "◀ bottleneck" if row["bottleneck"] else "",
    }


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}"


def summary(simulation: Simulation) -> str:
    """One sentence: the deployment, the bottleneck, the headroom."""
    d = simulation.deployment
    worst = simulation.bottleneck
    grow = 1 / worst.utilisation if worst.utilisation > 0 else math.inf
    return (
        f"{d.processes:,} processes, {d.shards:,} masters ({d.partitions:,} partitions, "
        f"{d.replicas} replica(s) each, topics: {d.topics}): bottleneck {worst.resource} "
        f"({worst.where}) at {worst.utilisation:.0%}; headroom {simulation.headroom:.0%} "
        f"(the load can grow {grow:.2f}×)"
    )


def document(
    simulation: Simulation, measured: Measured, limits: Limits, solution: Solution | None
) -> dict[str, Any]:
    """Everything the JSON keeps besides the rows."""
    return {
        "deployment": asdict(simulation.deployment),
        "load": {**asdict(simulation.load), "events_per_s": simulation.load.events_per_s},
        "limits": asdict(limits),
        "bottleneck": simulation.bottleneck.resource,
        "bottleneck_where": simulation.bottleneck.where,
        "utilisation": simulation.bottleneck.utilisation,
        "headroom": simulation.headroom,
        "figures": dict(simulation.figures),
        "solved": None
        if solution is None
        else {"feasible": solution.feasible, "reason": solution.reason},
        "inputs": [asdict(source) for source in measured.sources],
        "notes": list(measured.notes),
    }


def _figure_rows(simulation: Simulation) -> list[dict[str, Any]]:
    return [{"what": key, "value": _number(value)} for key, value in simulation.figures.items()]


def _path_option(key: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        f"--{key}-json",
        f"{key}_json",
        type=click.Path(dir_okay=False, path_type=Path),
        default=RESULTS_DIR / INPUT_FILES[key],
        show_default=True,
        help=f"Input ({'optional' if key in OPTIONAL_INPUTS else 'required'}).",
    )


def _with_path_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for key in reversed(INPUT_FILES):
        function = _path_option(key)(function)
    return function


@click.command(NAME)
@click.option("--processes", type=click.IntRange(min=1), help="Starling processes (N).")
@click.option("--shards", type=click.IntRange(min=1), help="Redis masters (M).")
@click.option("--solve", is_flag=True, help="Find the smallest N, then M, that fit --target.")
@click.option("--target", default=0.8, show_default=True, help="Highest utilisation allowed.")
@click.option("--connections", default=1_000_000.0, show_default=True, help="Connections held.")
@click.option("--deliveries", default=1_000_000.0, show_default=True, help="Deliveries/s.")
@click.option("--fanout", type=float, help="Deliveries per event [default: 5, or from --events].")
@click.option("--events", type=float, help="Events/s (sets the fan-out: deliveries / events).")
@click.option("--append-events", default=1.0, show_default=True, help="Events per producer FCALL.")
@click.option("--linger-ms", default=0.0, show_default=True, help="A nozzle's wait between reads.")
@click.option("--payload-bytes", type=float, help="Event payload [default: the measured sample].")
@click.option("--feed-builds", default=0.0, show_default=True, help="Cold feed builds/s.")
@click.option("--channels", type=float, help="Channels with subscribers [connections/fanout].")
@click.option(
    "--partitions-per-shard",
    default=1,
    show_default=True,
    help="Stream partitions per master (the code's default: one per master).",
)
@click.option("--replicas", default=1, show_default=True, help="Replicas per master.")
@click.option(
    "--topics",
    type=click.Choice(["one", "per-partition"]),
    default="one",
    show_default=True,
    help="One Pub/Sub topic (as the code is) or one per partition.",
)
@click.option("--connections-per-process", default=10_000, show_default=True)
@click.option("--memory-per-process-mb", default=2048.0, show_default=True)
@click.option("--nic-gbit", default=10.0, show_default=True, help="Per host, each way.")
@click.option("--processes-per-host", default=8, show_default=True)
@click.option("--redis-memory-gb", default=8.0, show_default=True)
@click.option("--max-processes", default=10_000, show_default=True, help="--solve's search.")
@click.option(
    "--redis-cost-scale",
    default=1.0,
    show_default=True,
    help="Multiply every Redis CPU cost (sensitivity: the model leaves some out).",
)
@_with_path_options
@click.option("--show-inputs", is_flag=True, help="Print every input and its source.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="JSON file.")
def command(**options: Any) -> None:
    """A capacity model: N processes and M Redis masters under a realtime load.

    Replays the measured per-operation costs (bench/results/*.json) and prints each
    resource's utilisation, the bottleneck and the headroom (docs/scaling.md).

    \b
    Examples:
      starling bench simulate-cluster --processes 100 --shards 8 --fanout 50
      starling bench simulate-cluster --solve --connections 1000000 --deliveries 1000000
      starling bench simulate-cluster --solve --fanout 1000 --topics per-partition
    """
    console = Console(width=160)
    paths = {key: options[f"{key}_json"] for key in INPUT_FILES}
    try:
        measured = load_measured(paths)
    except (MissingInput, BadInput) as error:
        raise click.ClickException(str(error)) from None
    measured = replace(measured, redis_scale=options["redis_cost_scale"])
    fanout = options["fanout"]
    if options["events"] is not None:
        if options["events"] <= 0:
            raise click.BadParameter("--events must be > 0")
        fanout = options["deliveries"] / options["events"]
    try:
        load = Load(
            connections=options["connections"],
            deliveries_per_s=options["deliveries"],
            fanout=5.0 if fanout is None else fanout,
            append_events=options["append_events"],
            linger_s=options["linger_ms"] / 1000,
            payload_bytes=options["payload_bytes"],
            feed_builds_per_s=options["feed_builds"],
            channels=options["channels"],
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    limits = replace(
        Limits(),
        connections_per_process=options["connections_per_process"],
        memory_per_process_mb=options["memory_per_process_mb"],
        nic_gbit=options["nic_gbit"],
        processes_per_host=options["processes_per_host"],
        redis_memory_gb=options["redis_memory_gb"],
    )
    solution = None
    if options["solve"]:
        solution = solve(
            load,
            measured,
            limits,
            target=options["target"],
            partitions_per_shard=options["partitions_per_shard"],
            replicas=options["replicas"],
            topics=options["topics"],
            max_processes=options["max_processes"],
        )
        simulation = solution.simulation
    else:
        if options["processes"] is None or options["shards"] is None:
            raise click.UsageError("give --processes and --shards, or --solve")
        deployment = Deployment(
            options["processes"],
            options["shards"],
            options["partitions_per_shard"],
            options["replicas"],
            options["topics"],
        )
        simulation = simulate(deployment, load, measured, limits)
    if options["show_inputs"]:
        print_table(
            "inputs",
            [
                {"what": s.name, "value": _number(s.value), "unit": s.unit, "file": s.file}
                for s in measured.sources
            ],
            console,
        )
    title = (
        f"{load.connections:,.0f} connections, {load.deliveries_per_s:,.0f} deliveries/s, "
        f"fan-out {load.fanout:g} ({load.events_per_s:,.0f} events/s)"
    )
    print_table(title, [_shown(row) for row in usage_rows(simulation)], console)
    print_table("derived figures", _figure_rows(simulation), console)
    if solution is not None and not solution.feasible:
        console.print(
            f"[bold]no deployment fits --target {options['target']}:[/] {solution.reason}"
        )
    console.print(summary(simulation))
    for line in measured.notes:
        console.print(f"note: {line}")
    path = write_json(
        NAME,
        usage_rows(simulation),
        document(simulation, measured, limits, solution),
        options["output"],
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    command()
