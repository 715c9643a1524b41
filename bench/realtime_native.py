"""The native load generator of the realtime benchmark, as :mod:`bench.realtime` drives it.

``make bench-tools`` builds ``bench/loadgen/starling-loadgen`` (Go). One
process holds every WebSocket subscriber and the producer, so it loads the
server at a few microseconds of client CPU per delivery where the Python
clients spend a few hundred. It speaks the server's protocol of ``GET /ws``
and signs its tokens from ``STARLING_SECRET``.

Its output::

    stderr   progress lines, and driver events as lines "@" + a JSON object:
               {"event": "subscribed", "connected", "errors"}   every subscriber is in
               {"event": "window", "start_ns", "end_ns"}        the measured window, unix ns
    stdout   one JSON report when it ends (shape: bench/loadgen/report.go)

A :class:`Loadgen` runs one plan; its events arrive through
:meth:`Loadgen.next_event` while the parent samples CPU and memory, then
:meth:`Loadgen.report` gives the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Protocol

LOADGEN = Path(__file__).resolve().parent / "loadgen" / "starling-loadgen"
"""Where ``make bench-tools`` puts the binary."""
STDERR_TAIL = 40
"""Lines of the loadgen's stderr kept for an error message."""

Workload = Literal["fanout", "hot", "idle", "storm", "following"]
Producer = Literal["redis", "http", "none"]


def loadgen_binary() -> Path | None:
    """The built loadgen, or ``None`` when ``make bench-tools`` has not run."""
    return LOADGEN if os.access(LOADGEN, os.X_OK) else None


@dataclass(frozen=True, slots=True)
class LoadgenPlan:
    """One loadgen run: the flags of ``starling-loadgen``.

    Attributes:
        workload: ``fanout`` / ``hot`` (a producer and subscribers), ``idle`` /
            ``storm`` (connections only; storm dials them all at once),
            ``following`` (the users of ``follows`` read ``following:<user>``).
        server: the server's base URL, ``http://127.0.0.1:PORT``.
        secret: the server's ``STARLING_SECRET`` (passed in the environment).
        run: the run id stamped in every event.
        rate: events/s (fanout, hot).
        duration, warmup, drain: seconds (fanout, hot).
        hold: seconds the connections are held (idle, storm); ``None``: its default.
        producer: ``redis`` (to ``redis_url``), ``http`` (POST /rpc), ``none``.
        partition_keys: producer redis on a ``redis+cluster://`` URL: each partition's
            (stream, offsets, generation) keys, in partition order
            (:func:`bench.realtime.partition_keys`); the loadgen routes a channel's
            events to partition ``crc32(name) % len(partition_keys)``.
        bare_xadd: producer redis: a bare ``XADD`` per event instead of one
            ``FCALL starling_publish`` per tick (events numbered by the transformer).
        publish_many: producer http: ``realtime.publish_many`` calls instead of batches.
        dial_concurrency: handshakes at once; ``None``: the workload's default
            (256; storm: all).
        follows: following: the follow lists' file (:meth:`bench.following.FollowLists.write`);
            ``subscribers`` and ``channels`` must be its users and posts.
        seed: following: the seed of the authors' draw.
    """

    workload: Workload
    server: str
    secret: str
    run: str
    subscribers: int
    channels: int
    rate: int = 0
    duration: float = 10.0
    warmup: float = 2.0
    drain: float = 5.0
    hold: float | None = None
    producer: Producer = "none"
    redis_url: str | None = None
    partition_keys: tuple[tuple[str, str, str], ...] = ()
    publish_many: bool = False
    dial_concurrency: int | None = None
    bare_xadd: bool = False
    follows: Path | None = None
    seed: int | None = None

    def arguments(self) -> list[str]:
        """The command line after the binary."""
        arguments = ["--scenario", self.workload, "--server", self.server, "--run", self.run]
        arguments += ["--subscribers", str(self.subscribers), "--channels", str(self.channels)]
        if self.producer != "none":
            arguments += ["--producer", self.producer, "--rate", str(self.rate)]
            arguments += ["--duration", _go_seconds(self.duration)]
            arguments += ["--warmup", _go_seconds(self.warmup), "--drain", _go_seconds(self.drain)]
        if self.redis_url is not None:
            arguments += ["--redis-url", self.redis_url]
        if self.partition_keys:
            streams, offsets, generations = zip(*self.partition_keys, strict=True)
            arguments += ["--stream-keys", ",".join(streams), "--offsets-keys", ",".join(offsets)]
            arguments += ["--generation-keys", ",".join(generations)]
        if self.publish_many:
            arguments.append("--publish-many")
        if self.producer == "redis":
            arguments += ["--redis-append", "xadd" if self.bare_xadd else "fcall"]
        if self.hold is not None:
            arguments += ["--hold", _go_seconds(self.hold)]
        if self.dial_concurrency is not None:
            arguments += ["--dial-concurrency", str(self.dial_concurrency)]
        if self.follows is not None:
            arguments += ["--follows", str(self.follows)]
        if self.seed is not None:
            arguments += ["--seed", str(self.seed)]
        return arguments


def _go_seconds(seconds: float) -> str:
    """A Go duration flag: ``2.5`` → ``"2.5s"``."""
    return f"{seconds:g}s"


class Plan(Protocol):
    """What a native generator runs: its token secret and its command line after the binary
    (:class:`LoadgenPlan`; ``bench.soak``'s plans of ``starling-rpcload``)."""

    @property
    def secret(self) -> str: ...

    def arguments(self) -> list[str]: ...


class Loadgen:
    """A running native generator (``starling-loadgen``, or any that speaks the same: "@"
    events on stderr, one JSON report on stdout): its driver events, then its report.

    Use as a context manager; a generator still running when the block ends is
    killed. Two threads read its pipes (a pipe left unread would stall it).

    Args:
        plan: what to run.
        binary: the executable.
        on_line: called with each progress line of its stderr (from a thread).
        on_event: called with each driver event as it arrives (from a thread), before
            :meth:`next_event` sees it.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        binary: Path = LOADGEN,
        on_line: Callable[[str], None] = lambda line: None,
        on_event: Callable[[dict[str, Any]], None] = lambda event: None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STARLING_")}
        env["STARLING_SECRET"] = plan.secret
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._stdout: list[bytes] = []
        self._on_line = on_line
        self._on_event = on_event
        self.process = subprocess.Popen(
            [str(binary), *plan.arguments()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stderr, args=(self.process.stderr,), daemon=True),
            threading.Thread(target=self._read_stdout, args=(self.process.stdout,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> Loadgen:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for reader in self._readers:
            reader.join(5.0)

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("@"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line[1:])
                    self._on_event(event)
                    self._events.put(event)
                    continue
            self._tail.append(line)
            self._on_line(line)
        self._events.put(None)  # the loadgen closed its stderr: it is ending

    def _read_stdout(self, pipe: IO[bytes]) -> None:
        self._stdout.append(pipe.read())

    def next_event(self, kind: str, timeout: float) -> dict[str, Any]:
        """Wait for the driver event ``kind`` (earlier events of other kinds are skipped).

        Args:
            kind: ``subscribed`` or ``window``.
            timeout: seconds.

        Raises:
            RuntimeError: the loadgen ended first or said nothing in time
                (the message ends with its last stderr lines).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                message = f"loadgen: no {kind!r} within {timeout:.0f} s{self._said()}"
                raise RuntimeError(message) from None
            if event is None:
                self._events.put(None)
                self.process.wait()
                raise RuntimeError(
                    f"loadgen ended (exit {self.process.returncode}) before {kind!r}{self._said()}"
                )
            if event.get("event") == kind:
                return event

    def report(self, timeout: float) -> dict[str, Any]:
        """Wait for the loadgen to end; its JSON report.

        Raises:
            RuntimeError: it failed, printed no JSON, or ran past ``timeout`` seconds.
        """
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            message = f"loadgen still running after {timeout:.0f} s{self._said()}"
            raise RuntimeError(message) from None
        for reader in self._readers:
            reader.join(10.0)
        if self.process.returncode != 0:
            raise RuntimeError(f"loadgen exited {self.process.returncode}{self._said()}")
        try:
            document: dict[str, Any] = json.loads(b"".join(self._stdout))
        except ValueError as error:
            raise RuntimeError(f"loadgen printed no JSON report ({error}){self._said()}") from None
        return document

    def _said(self) -> str:
        return (":\n" + "\n".join(self._tail)) if self._tail else ""


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` (VmRSS of /proc/<pid>/status), bytes; ``None`` if gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None
