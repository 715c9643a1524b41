"""The native load generator of JSON-RPC calls pipelined over the WebSocket.

``make bench-tools`` builds ``bench/rpcload/starling-rpcload`` (Go); a Python
client would cost the 2 CPUs as much as the server it measures. It opens
``connections`` WebSockets to ``GET /ws`` with a service token (it signs one,
``"role": "service"``, from the server's secret), and on each keeps ``depth``
calls of one method in flight, the params taken round-robin from a list; the
replies are matched by id (docs/api.md, "JSON-RPC methods on the WebSocket").
A call counts when its reply arrives inside the window (``warmup`` seconds
after the connections are up, for ``seconds``); afterwards the calls in flight
are drained, so every request ends answered or counted as unanswered.

:func:`run_rpc_load` runs it once and returns its report (the JSON of
``bench/rpcload/report.go``)::

    method          the method called
    settings        {server, user, connections, depth, params, duration_s, warmup_s, drain_s}
    window          {start_ns, end_ns, seconds}: unix ns
    completed       calls answered inside the window: ok + errors
    ok              ... with a result
    errors          {"<error.code>": calls} inside the window, e.g. {"-32602": 3}
    calls_per_s     completed / the window's seconds
    latency_ms      {count, p50, p90, p99, max}: reply arrival - request write, in ms,
                    over the replies inside the window (hdrhistogram, 3 digits);
                    None when no call completed
    totals          the whole run, warm-up and drain included: {sent, replies, ok,
                    errors, unanswered, unmatched, malformed, notifications,
                    drained, drain_s, first_error}; sent = replies + unanswered
    connections     {opened, closed_early, close_codes: {"<code>": connections}}: the
                    connections the server ended before the run did (4001: the
                    secret is not the server's; their calls count as unanswered)
    cpu             the load generator's own CPU (getrusage): {user_s, sys_s} of the
                    run, window_s (user + sys inside the window), cores (window_s /
                    the window's seconds), us_per_call
    results         with record_results only: one entry per params line,
                    {line, params, calls, distinct: [result, …] (≤ 8, sorted), more}
    methods         per method: {rate, completed, ok, errors, calls_per_s, latency_ms,
                    unanswered, dropped} (one here; a mix of several with the binary's
                    --mix, which :mod:`bench.soak` drives)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RPCLOAD = Path(__file__).resolve().parent / "rpcload" / "starling-rpcload"
"""Where ``make bench-tools`` puts the binary."""
DRAIN_SECONDS = 5.0
"""Longest wait for the calls in flight when the window ends (the binary's default)."""
DIAL_SECONDS = 10.0
"""Longest connect + handshake of one connection (the binary's default)."""
BUILD_SECONDS = 600.0
"""Longest ``go build`` (a first build downloads the modules)."""
STDERR_TAIL = 40
"""Lines of the load generator's stderr kept for an error message."""

__all__ = ["RPCLOAD", "RpcLoadUnavailable", "build_rpcload", "rpcload_binary", "run_rpc_load"]


class RpcLoadUnavailable(RuntimeError):
    """``starling-rpcload`` is not built and cannot be: Go is missing or the build failed."""


def build_rpcload() -> Path:
    """Build ``starling-rpcload`` as ``make bench-tools`` does (``go build`` in bench/rpcload).

    Returns:
        The binary's path, :data:`RPCLOAD`.

    Raises:
        RpcLoadUnavailable: ``go`` is not on PATH, or the build failed (the
            message holds Go's output).
    """
    go = shutil.which("go")
    if go is None:
        raise RpcLoadUnavailable(
            f"{RPCLOAD} is not built and Go is not on PATH: install Go >= 1.22, "
            "then run `make bench-tools`"
        )
    built = subprocess.run(
        [go, "build", "-o", RPCLOAD.name, "."],
        cwd=RPCLOAD.parent,
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
        check=False,
    )
    if built.returncode != 0:
        raise RpcLoadUnavailable(
            f"`go build` of {RPCLOAD.parent} failed (try `make bench-tools`):\n{built.stderr}"
        )
    return RPCLOAD


def rpcload_binary() -> Path:
    """The built ``starling-rpcload``, built first if it is missing.

    Raises:
        RpcLoadUnavailable: it is missing and cannot be built (see :func:`build_rpcload`).
    """
    return RPCLOAD if os.access(RPCLOAD, os.X_OK) else build_rpcload()


def run_rpc_load(
    url: str,
    secret: bytes,
    method: str,
    params: Sequence[Mapping[str, Any]],
    *,
    connections: int = 8,
    depth: int = 64,
    seconds: float = 10.0,
    warmup: float = 2.0,
    user: str = "bench-rpc",
    record_results: bool = False,
) -> dict[str, Any]:
    """Call ``method`` pipelined over ``url``'s WebSocket for ``warmup + seconds``; the report.

    Blocks for about ``warmup + seconds`` seconds (plus the drain, at most 5 s);
    run it in a thread from async code. The server must be another process or
    another thread's event loop: the load generator is a child process.

    Args:
        url: the server's base URL, ``http://host:port`` (the tool dials ``ws://host:port/ws``).
        secret: the server's token secret (``STARLING_SECRET`` or ``<data-dir>/secret``,
            :func:`auth.tokens.load_secret`); passed in a file of mode 0600, never on
            the command line.
        method: the JSON-RPC method every call names, e.g. ``"social.counts"``.
        params: the params of the calls, used round-robin over every connection,
            e.g. ``[{"user": "123"}, …]``; each a JSON object.
        connections: WebSocket connections.
        depth: calls in flight per connection (the server runs 64 of a connection at
            once and stops reading beyond).
        seconds: the measured window, in seconds.
        warmup: seconds of load before the window.
        user: the service token's subject.
        record_results: add ``results``, the distinct results of each params line.

    Returns:
        The report, as the module docstring draws it.

    Raises:
        ValueError: ``params`` is empty, or a count or duration is out of range.
        RpcLoadUnavailable: the binary is missing and cannot be built.
        RuntimeError: the load generator failed (it could not connect, say), printed no
            JSON, or ran far past its time; the message ends with its last stderr lines.
    """
    if not params:
        raise ValueError("params is empty: give at least one JSON object")
    if connections < 1 or depth < 1 or seconds <= 0 or warmup < 0:
        raise ValueError(
            f"need connections >= 1, depth >= 1, seconds > 0, warmup >= 0; got "
            f"{connections}, {depth}, {seconds}, {warmup}"
        )
    binary = rpcload_binary()
    with tempfile.TemporaryDirectory(prefix="starling-rpcload-") as scratch:  # mode 0700
        params_file = Path(scratch) / "params.jsonl"
        params_file.write_text(
            "".join(json.dumps(dict(p), separators=(",", ":")) + "\n" for p in params)
        )
        secret_file = Path(scratch) / "secret"
        secret_file.touch(mode=0o600)
        secret_file.write_bytes(secret)
        arguments = [
            str(binary),
            *("--server", url, "--secret-file", str(secret_file)),
            *("--method", method, "--params", str(params_file), "--user", user),
            *("--connections", str(connections), "--depth", str(depth)),
            *("--duration", _go_seconds(seconds), "--warmup", _go_seconds(warmup)),
        ]
        if record_results:
            arguments.append("--record-results")
        env = {k: v for k, v in os.environ.items() if not k.startswith("STARLING_")}
        limit = DIAL_SECONDS + warmup + seconds + DRAIN_SECONDS + 30.0
        try:
            ran = subprocess.run(
                arguments,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            said = _tail(expired.stderr or b"")
            message = f"starling-rpcload still running after {limit:.0f} s{said}"
            raise RuntimeError(message) from None
    said = _tail(ran.stderr)
    if ran.returncode != 0:
        raise RuntimeError(f"starling-rpcload exited {ran.returncode}{said}")
    try:
        report: dict[str, Any] = json.loads(ran.stdout)
    except ValueError as error:
        raise RuntimeError(f"starling-rpcload printed no JSON report ({error}){said}") from None
    return report


def _go_seconds(seconds: float) -> str:
    """A Go duration flag: ``2.5`` → ``"2.5s"``."""
    return f"{seconds:g}s"


def _tail(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").splitlines()[-STDERR_TAIL:]
    return (":\n" + "\n".join(lines)) if lines else ""
