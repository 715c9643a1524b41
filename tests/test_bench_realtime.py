"""``starling bench realtime`` end to end, small: a real server, real subscribers, a real producer.

Speed is measured by the benchmark, never asserted here (STYLE.md, habit 12):
these runs prove that the benchmark's bookkeeping is right on a load the
machine carries easily (20 subscribers on 4 channels, 200 events/s, 2 s):
every event reaches every subscriber of its channel once, and the JSON has
its documented keys. The Redis run starts the benchmark's own private
``redis-server`` (the shared test Redis is left alone: the stream and the
sequencer keys of the server are not namespaced).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench.realtime import TABLE_COLUMNS, command, parse_rates

SUBSCRIBERS, CHANNELS, RATE = 20, 4, 200

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
}


def smoke(backend: str, output: Path) -> dict[str, Any]:
    """Run the small benchmark on ``backend``; the JSON document it wrote."""
    arguments = [
        "--backend",
        backend,
        "--subscribers",
        str(SUBSCRIBERS),
        "--channels",
        str(CHANNELS),
        "--rate",
        str(RATE),
        "--duration",
        "2",
        "--warmup",
        "1",
        "--drain",
        "5",
        "--output",
        str(output),
    ]
    result = CliRunner().invoke(command, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(output.read_text())
    return document


def check(document: dict[str, Any], backend: str) -> None:
    """Every event reached every subscriber of its channel exactly once; the keys are there."""
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
    assert row["events_total"] > 0
    per_channel = SUBSCRIBERS // CHANNELS
    assert row["deliveries_total"] == row["events_total"] * per_channel
    assert row["deliveries_expected"] == row["deliveries_total"]
    assert row["server_cpu_pct"] is not None


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


def test_table_headings_cover_the_budget_figures() -> None:
    """The table shows latency, throughput, losses and CPU for each run."""
    assert {"p99_ms", "events_per_s", "deliveries_per_s", "lost", "server_cpu_pct"} <= set(
        TABLE_COLUMNS
    )
