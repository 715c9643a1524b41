"""Closed-loop HTTP load with wrk (Debian package ``wrk``), driven from Python.

wrk is a C load generator: N connections each send a request as soon as the
previous reply arrives, so the client costs little CPU beside the server
(both share the machine's 2 cores). Latency percentiles are wrk's own
(microsecond histogram); like every closed-loop tool it under-reports tail
latency when the server stalls (coordinated omission), so p99 is a floor.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "rpc.lua"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One wrk run.

    Attributes:
        requests: replies received.
        seconds: the run's length.
        errors: replies that were not HTTP 200 or carried a JSON-RPC error.
        socket_errors: connect/read/write/timeout errors.
        p50_ms, p90_ms, p99_ms, max_ms, mean_ms: latency in milliseconds.
    """

    requests: int
    seconds: float
    errors: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def calls_per_second(self) -> float:
        """Replies per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def require_wrk() -> str:
    """The wrk executable.

    Raises:
        RuntimeError: wrk is not installed (``apt-get install wrk``).
    """
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    return path


def run_wrk(
    url: str, bodies: Sequence[bytes], *, connections: int, seconds: float, threads: int = 1
) -> LoadResult:
    """POST ``bodies`` (rotating) to ``url``/rpc for ``seconds`` with ``connections`` clients.

    Raises:
        RuntimeError: wrk is missing or printed no result.
    """
    wrk = require_wrk()
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as file:
        file.write(b"\n".join(bodies) + b"\n")
        file.flush()
        command = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(SCRIPT),
            url,
            "--",
            file.name,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    raw = json.loads(lines[-1])
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        errors=raw["errors"],
        socket_errors=raw["socket_errors"],
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        mean_ms=raw["mean_us"] / 1e3,
    )
