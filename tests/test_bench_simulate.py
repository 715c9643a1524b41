"""The capacity model (``bench/simulate_cluster.py``) and its inputs (``bench/cluster_inputs.py``).

The model is arithmetic over measured costs, so these tests check its rules on made-up
costs where the answer is known (doubling the processes halves a process's share, the
bottleneck is the highest utilisation, ``solve`` finds the smallest deployment), and
its reading of the committed benchmark results: it reproduces the knee it was calibrated
on, says which file is missing and which command writes it, and its CLI prints and
writes what it found. Nothing here measures speed (STYLE.md, habit 12).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cluster_inputs import INPUT_FILES, Measured, MissingInput, load_measured
from bench.report import RESULTS_DIR
from bench.simulate_cluster import (
    Deployment,
    Limits,
    Load,
    Simulation,
    command,
    events_per_message,
    events_per_read,
    simulate,
    solve,
)
from cli import main

COSTS = Measured(
    knee_cpu_cores=1.0,
    own_event_us=10.0,
    own_read_us=130.0,
    own_message_us=100.0,
    relay_message_us=50.0,
    relay_event_us=5.0,
    frame_us=1.0,
    delivery_us=10.0,
    idle_connection_us_per_s=2.0,
    round_trip_us=40.0,
    connect_ms=0.3,
    feed_build_ms=60.0,
    base_rss_mb=150.0,
    connection_kb=12.0,
    redis_command_us=5.0,
    fcall_call_us=3.0,
    fcall_event_us=3.0,
    xreadgroup_call_us=2.0,
    xreadgroup_entry_us=1.5,
    xack_call_us=0.5,
    xack_id_us=0.3,
    spublish_call_us=0.5,
    spublish_subscriber_us=2.0,
    spublish_byte_us=0.0005,
    payload_bytes=250.0,
    frame_overhead_bytes=96.0,
    pubsub_message_overhead_bytes=30.0,
    pubsub_event_overhead_bytes=47.0,
    stream_entry_bytes=240.0,
    knee_events_per_batch=55.0,
)
"""Made-up costs of the size the benchmarks measure, so that every rule has a known answer."""

HOT = Load(connections=1_000_000, deliveries_per_s=1_000_000, fanout=1000, append_events=50)
"""Few events, each to a thousand subscribers: connections and deliveries dominate."""


def test_doubling_the_processes_halves_each_ones_connections_deliveries_and_owned_work() -> None:
    """From 100 to 200 processes a process holds half the connections, writes half the
    deliveries and transforms half the events, so with no relay cost its CPU halves."""
    costs = replace(COSTS, relay_message_us=0.0, relay_event_us=0.0, round_trip_us=0.0)
    one = simulate(Deployment(100, 4), HOT, costs)
    two = simulate(Deployment(200, 4), HOT, costs)

    def demand(simulation: Simulation, resource: str) -> float:
        return next(u.demand for u in simulation.usages if u.resource == resource)

    assert demand(two, "connections") == pytest.approx(demand(one, "connections") / 2)
    for share in ("process_cpu_deliveries_cores", "process_cpu_owned_cores"):
        assert two.figures[share] == pytest.approx(one.figures[share] / 2)
    # What is left besides the halved shares is the frame built per event with a local
    # subscriber, and with a fan-out of 1,000 nearly every process has one either way.
    frames = two.figures["process_cpu_frames_cores"]
    assert demand(two, "CPU (realtime)") - frames == pytest.approx(
        (demand(one, "CPU (realtime)") - one.figures["process_cpu_frames_cores"]) / 2
    )


def test_the_relay_cost_of_a_process_does_not_fall_with_more_processes() -> None:
    """Every process receives every batch, so its relay CPU is the same with 10 or 1,000
    processes: the term that sets a floor under a process's CPU."""
    ten = simulate(Deployment(10, 4), HOT, COSTS)
    thousand = simulate(Deployment(1000, 4), HOT, COSTS)
    assert ten.figures["process_cpu_relay_cores"] > 0
    assert thousand.figures["process_cpu_relay_cores"] == pytest.approx(
        ten.figures["process_cpu_relay_cores"]
    )


def test_the_bottleneck_is_the_resource_with_the_highest_utilisation() -> None:
    """With few processes the connections per process saturate first; with one Pub/Sub
    topic and many processes the topic's master does; either way the bottleneck is the
    usage with the highest utilisation and the headroom is one minus it."""
    few = simulate(Deployment(20, 4), HOT, COSTS)
    assert few.bottleneck.resource == "connections"
    chatty = Load(connections=1_000_000, deliveries_per_s=1_000_000, fanout=20)
    crowded = simulate(Deployment(2000, 4), chatty, COSTS)
    assert (crowded.bottleneck.resource, crowded.bottleneck.where) == (
        "Redis CPU",
        "busiest master",
    )
    for simulation in (few, crowded):
        highest = max(u.utilisation for u in simulation.usages)
        assert simulation.bottleneck.utilisation == highest
        assert simulation.headroom == pytest.approx(1 - highest)


def test_solve_finds_the_fewest_processes_then_the_fewest_masters_that_fit() -> None:
    """A million connections at 10,000 a process and a target of 80 % need 125 processes;
    solve answers 125 and the fewest masters that fit, and one process or one master
    fewer does not fit."""
    solution = solve(HOT, COSTS, target=0.8, topics="per-partition")
    assert solution.feasible
    found = solution.simulation
    n, m = found.deployment.processes, found.deployment.shards
    assert n == 125
    assert found.fits(0.8)
    assert not simulate(Deployment(n - 1, m, topics="per-partition"), HOT, COSTS).fits(0.8)
    if m > 1:
        assert not simulate(Deployment(n, m - 1, topics="per-partition"), HOT, COSTS).fits(0.8)


def test_solve_says_why_when_no_deployment_fits() -> None:
    """200,000 events/s each relayed to every process at 5 µs cost a process a whole core
    whatever the process count: solve reports no fit and names the process CPU."""
    busy = Load(connections=1_000_000, deliveries_per_s=1_000_000, fanout=5, append_events=50)
    solution = solve(busy, COSTS, target=0.8, max_processes=400)
    assert not solution.feasible
    assert "CPU (realtime)" in solution.reason
    assert "more processes do not bring it under" in solution.reason
    # The deployment shown holds the connections (125 processes at 80 %): only the relay
    # does not fit.
    assert solution.simulation.deployment.processes == 125


def test_a_read_is_what_a_producer_appends_at_once_or_what_a_linger_gathers() -> None:
    """One event per append and no linger: reads of one; a linger gathers the events a
    nozzle's share of its partition brings in that time; never more than the nozzle's cap."""
    limits = Limits()
    deployment = Deployment(10, 2, partitions_per_shard=1)
    alone = Load(connections=0, deliveries_per_s=100_000, fanout=1)
    assert events_per_read(alone, deployment, limits) == 1
    lingering = replace(alone, linger_s=0.01)
    # 100,000 events/s over 2 partitions and 10 nozzles each: 5,000/s a nozzle, 50 in 10 ms.
    assert events_per_read(lingering, deployment, limits) == pytest.approx(50)
    assert events_per_read(replace(alone, linger_s=10.0), deployment, limits) == 1024


def test_a_process_that_reads_faster_than_it_transforms_announces_merged_batches() -> None:
    """20,000 single-event reads a second on one process, each taking 230 µs to handle:
    about 4.6 reads queue behind each other and go out as one message; on 100 processes
    (200 reads a second each) nothing queues and every read is its own message."""
    busy = Load(connections=0, deliveries_per_s=20_000, fanout=1)
    one = events_per_message(busy, Deployment(1, 1), COSTS, Limits())
    assert one == pytest.approx(20_000 * 230e-6)
    assert events_per_message(busy, Deployment(100, 1), COSTS, Limits()) == 1


def test_the_model_reproduces_the_knee_it_was_calibrated_on() -> None:
    """One process on one Redis (one partition) under the knee's load
    (11,000 events/s to 5 subscribers each, 1,000 connections, 55 events a batch): the
    process's CPU is the knee's, within 2 %."""
    measured = load_measured()
    knee = Load(
        connections=1000,
        deliveries_per_s=55_000,
        fanout=5,
        append_events=measured.knee_events_per_batch,
    )
    cpu = simulate(Deployment(1, 1, partitions_per_shard=1), knee, measured).usages[0]
    assert cpu.resource == "CPU (realtime)"
    assert cpu.utilisation == pytest.approx(1.0, abs=0.02)


def test_a_missing_input_names_the_file_and_the_command_that_writes_it(tmp_path: Path) -> None:
    """Without cluster-costs.json the loader refuses with the path and the command to run."""
    missing = tmp_path / "cluster-costs.json"
    with pytest.raises(MissingInput) as raised:
        load_measured({"costs": missing})
    assert str(missing) in str(raised.value)
    assert "`python -m bench.cluster_costs` writes it" in str(raised.value)


def test_without_the_cluster_benchmark_the_batch_costs_stand_and_a_note_says_so() -> None:
    """realtime-cluster.json absent: the per-batch costs are the ones measured one call at
    a time (scale 1), and the notes say the cluster's extra cost is not measured."""
    measured = load_measured({"cluster": Path("/nonexistent/realtime-cluster.json")})
    assert measured.batch_scale == 1.0
    assert any("not measured" in note for note in measured.notes)


def test_the_cluster_benchmark_calibrates_the_cost_of_more_smaller_batches(
    tmp_path: Path,
) -> None:
    """A realtime-cluster.json where 3 partitions cost one process 6 µs more per event at
    11,000 events/s (the row nearest the knee; the 5,000 row says otherwise): the model,
    given the benchmark's two set-ups, then shows those 6 µs between them."""
    overhead = [
        {
            "rate": rate,
            "single_server_cpu_us_per_event": single,
            "cluster_server_cpu_us_per_event": cluster,
        }
        for rate, single, cluster in ((5000, 80.0, 120.0), (11000, 65.0, 71.0))
    ]
    document = {"command": "x", "date": "d", "settings": {"partitions": 3}}
    path = tmp_path / "realtime-cluster.json"
    path.write_text(json.dumps({**document, "cluster_overhead": overhead}))
    measured = load_measured({"cluster": path})
    assert measured.batch_scale != 1.0

    def cpu(deployment: Deployment, append_events: float) -> float:
        load = Load(1000, 55_000, fanout=5, append_events=append_events)
        return simulate(deployment, load, measured).usages[0].demand

    single = cpu(Deployment(1, 1, partitions_per_shard=1, replicas=0), 55.0)
    cluster = cpu(Deployment(1, 3, partitions_per_shard=1, replicas=1), 55.0 / 3)
    # The three nozzles' idle reads and reclaims (3 × 1.1 round trips a second) are the rest.
    assert (cluster - single) / 11_000 * 1e6 == pytest.approx(6.0, abs=0.1)


def test_the_cli_solves_on_the_committed_results_and_writes_its_json(
    runner: CliRunner, tmp_path: Path
) -> None:
    """``starling bench simulate-cluster --solve`` on bench/results: it prints the table and
    the bottleneck, and writes the rows, the deployment, the inputs with their sources and
    the notes."""
    output = tmp_path / "simulate.json"
    arguments = ["bench", "simulate-cluster", "--solve", "--fanout", "1000"]
    arguments += ["--append-events", "50", "--topics", "per-partition", "--output", str(output)]
    result = runner.invoke(main, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "bottleneck" in result.output
    written = json.loads(output.read_text())
    assert written["solved"]["feasible"] is True
    assert written["deployment"]["processes"] >= 100
    assert {row["resource"] for row in written["rows"]} >= {"CPU (realtime)", "Redis CPU"}
    files = {source["file"] for source in written["inputs"]}
    assert {"realtime.json", "realtime-hot.json", "cluster-costs.json"} <= files


def test_the_cli_refuses_clearly_when_an_input_is_missing(tmp_path: Path) -> None:
    """A results directory without cluster-costs.json: the command fails and says which
    file and which command writes it."""
    for key, name in INPUT_FILES.items():
        if key not in ("costs", "cluster") and (RESULTS_DIR / name).exists():
            shutil.copy(RESULTS_DIR / name, tmp_path / name)
    arguments = ["--processes", "10", "--shards", "2", "--output", str(tmp_path / "out.json")]
    for key, name in INPUT_FILES.items():
        arguments += [f"--{key}-json", str(tmp_path / name)]
    result = CliRunner().invoke(command, arguments)
    assert result.exit_code != 0
    assert "cluster-costs.json is missing" in result.output
    assert "python -m bench.cluster_costs" in result.output
