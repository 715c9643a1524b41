"""``starling bench soak``, short: two minutes of the whole mixed load on the demo world.

The soak's long run (30 minutes, docs/benchmarks.md) judges with :data:`bench.soak.STRICT`;
two minutes are too short for the allocator, the caches and the percentiles to settle, so
this run is judged with :data:`bench.soak.LOOSE` (nothing may be lost all the same). Speed is
not asserted (STYLE.md, habit 12): the verdicts are about drift and loss, and that every
generator ran (at half its rate or more).
The judging itself is pure and tested on made-up reports. The Go generators' own tests
(``go test``) prove their bookkeeping: the mix's pacing and intervals, the churn's
recoveries and offset gaps. Skipped without ``go`` on PATH.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench import soak
from bench.realtime_native import LOADGEN
from bench.rpc_native import RPCLOAD

SHORT_MINUTES = 2.0


@functools.cache
def go_tests(directory: Path) -> subprocess.CompletedProcess[str]:
    """``go test ./...`` in one generator's directory, once per session."""
    return subprocess.run(
        ["go", "test", "-count=1", "./..."],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def needs_go() -> None:
    if shutil.which("go") is None:
        pytest.skip("the Go toolchain is not on PATH (the soak's generators need Go >= 1.22)")


@pytest.mark.parametrize("directory", [LOADGEN.parent, RPCLOAD.parent], ids=["loadgen", "rpcload"])
def test_the_generators_go_tests_pass(directory: Path) -> None:
    """The generators' own tests pass: the mix's pacing, dropped calls, depth and intervals
    (rpcload), the churn's recoveries, failed recoveries, offset gaps and comments (loadgen)."""
    needs_go()
    ran = go_tests(directory)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def report_of(**changes: Any) -> dict[str, Any]:
    """A made-up soak report: 30 samples after a 60 s warm-up, flat, nothing lost."""
    samples = [
        {"t": 60.0 + 5 * i, "rss_mb": 400.0, "fds": 1000 + (i % 3), "tasks": 1300 - (i % 2)}
        for i in range(30)
    ]
    intervals = {
        kind: [{"t": 60.0 + 5 * i, "p99": 10.0 + (i % 2)} for i in range(30)] for kind in soak.KINDS
    }
    rows = [{"kind": kind, "target_per_s": 10.0, "rate_per_s": 10.0} for kind in soak.KINDS]
    report: dict[str, Any] = {
        "settings": {"warmup_end_s": 60.0},
        "samples": samples,
        "intervals": intervals,
        "lost": {"deliveries_lost": 0, "call_errors": 0},
        "rows": rows,
    }
    report.update(changes)
    return report


def failed(report: dict[str, Any], criteria: soak.Criteria = soak.STRICT) -> set[str]:
    return {v["criterion"] for v in soak.judge(report, criteria) if not v["passed"]}


def test_a_flat_run_passes_every_criterion() -> None:
    """Flat RSS, fds and tasks that only wobble, steady p99s, nothing lost and every rate
    held pass all six verdicts."""
    assert failed(report_of()) == set()


def test_growth_after_the_warm_up_fails_rss_and_leak_trends() -> None:
    """RSS growing 8 %, an fd more every sample and two tasks more every sample fail the
    RSS, fd and task verdicts; growth during the warm-up alone does not count."""
    report = report_of()
    for i, sample in enumerate(report["samples"]):
        sample["rss_mb"] = 400.0 + i * 32 / 29
        sample["fds"] = 1000 + i
        sample["tasks"] = 1300 + 2 * i
    warm = {"t": 10.0, "rss_mb": 100.0, "fds": 10, "tasks": 10}
    report["samples"].insert(0, warm)
    assert failed(report) == {"RSS growth after warm-up", "no fd leak", "no task leak"}


def test_one_spike_is_no_leak_but_a_trend_is() -> None:
    """A single outlying sample of fds does not make a leak (the trend is robust); the same
    growth spread over every sample does."""
    spiked = report_of()
    spiked["samples"][-1]["fds"] = 5000
    assert "no fd leak" not in failed(spiked)
    trending = report_of()
    for i, sample in enumerate(trending["samples"]):
        sample["fds"] = 1000 + 2 * i
    assert "no fd leak" in failed(trending)


def test_a_p99_that_climbs_a_loss_or_a_short_rate_fail() -> None:
    """A p99 that triples from the first third to the last, one lost delivery, and a kind
    below 95 % of its rate each fail their own verdict."""
    report = report_of()
    report["intervals"]["feed.get"] = [
        {"t": 60.0 + 5 * i, "p99": 10.0 if i < 10 else 30.0} for i in range(30)
    ]
    report["lost"]["deliveries_lost"] = 1
    report["rows"][0]["rate_per_s"] = 9.0
    assert failed(report) == {"p99 steady (every kind)", "nothing lost", "load held"}
    assert "p99 steady (every kind)" not in failed(report, soak.LOOSE)


def test_the_mix_is_the_fraction_of_the_recorded_knees() -> None:
    """Every kind's rate is its knee (read from bench/results) × the fraction × its share,
    the shares sum to 1, and follows and unfollows split the follow kind's rate."""
    knees = soak.read_knees()
    assert set(knees) == set(soak.SHARES)
    assert sum(soak.SHARES.values()) == pytest.approx(1.0)
    mix = soak.Mix.of(knees, 0.5)
    assert mix.publish == round(knees["publish"].rate * 0.5 * soak.SHARES["publish"])
    assert mix.calls["social.counts"] == pytest.approx(
        knees["social.counts"].rate * 0.5 * soak.SHARES["social.counts"]
    )
    assert mix.calls["social.follow"] == mix.calls["social.unfollow"]
    follow = knees["social.follow"].rate * 0.5 * soak.SHARES["social.follow"]
    assert mix.calls["social.follow"] * 2 == pytest.approx(follow)
    used = sum(row["share_of_knee"] for row in mix.rows)
    assert used == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_two_minute_soak_holds_its_load_loses_nothing_and_writes_its_report(
    demo_graph: Path, tmp_path: Path
) -> None:
    """Two minutes of the whole mix on a copy of the demo world: nothing is lost, no fd or
    task count trends up, RSS and every p99 stay within the loose bounds, every kind runs
    at its rate, and the JSON (with every sample and interval) and the PNG are written."""
    needs_go()
    output, plot = tmp_path / "soak.json", tmp_path / "soak.png"
    began = time.monotonic()
    report = soak.run(demo_graph.parent, minutes=SHORT_MINUTES, output=output, plot=plot)
    took = time.monotonic() - began

    verdicts = {v["criterion"]: v for v in soak.judge(report, soak.LOOSE)}
    assert all(v["passed"] for v in verdicts.values()), json.dumps(verdicts, indent=1)
    written = json.loads(output.read_text())
    assert written["benchmark"] == "soak"
    assert {"settings", "knees", "mix", "samples", "intervals", "lost", "verdicts", "rows"} <= set(
        written
    )
    assert len(written["samples"]) >= SHORT_MINUTES * 60 / soak.SAMPLE_EVERY - 3
    assert all(s["tasks"] and s["fds"] and s["rss_mb"] for s in written["samples"])
    assert set(soak.KINDS) <= set(written["intervals"])
    assert written["deliveries"]["received"] == written["deliveries"]["expected"] > 0
    assert written["deliveries"]["reconnects"] > 0
    assert written["deliveries"]["recovered"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert took < SHORT_MINUTES * 60 + 120
