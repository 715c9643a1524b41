"""Real backing services for the test suite: an embedded Neo4j and a Redis server.

Both are started as child processes on a free loopback port and yield a URL:

* :func:`neo4j_server` runs the Java launcher in ``tests/neo4j_server`` (Neo4j
  5.26 LTS community, embedded, Bolt enabled, auth disabled) and yields
  ``bolt://127.0.0.1:PORT``. The launcher's jar is built with Maven on first use
  (or whenever its sources are newer than the jar).
* :func:`redis_server` runs ``redis-server`` without persistence and yields
  ``redis://127.0.0.1:PORT/0``.

Neither removes anything it did not create, and neither leaves a process behind:
each stops its child in a ``finally`` block, and every child still running when
the interpreter exits is killed by an :mod:`atexit` hook. In addition the Neo4j
launcher stops by itself when its stdin (a pipe from this process) is closed,
which also covers this process being killed outright.

Only the standard library is used. For developers::

    python tests/services.py neo4j    # or: redis
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import os
import pathlib
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TypeVar

__all__ = ["neo4j_server", "redis_server"]

NEO4J_PROJECT_DIR = pathlib.Path(__file__).resolve().parent / "neo4j_server"
"""The Maven project of the Neo4j launcher."""

NEO4J_MAIN_CLASS = "starling.Neo4jTestServer"

NEO4J_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:MaxDirectMemorySize=256m",
    "-XX:-OmitStackTraceInFastThrow",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
)
"""JVM options: bounded heap, small footprint, and the module openings Neo4j asks for."""

NEO4J_BUILD_TIMEOUT = 900.0
"""Seconds allowed for the Maven build (the first one downloads about 130 MB)."""

NEO4J_START_TIMEOUT = 180.0
"""Seconds allowed from starting the JVM to its ``READY`` line."""

REDIS_START_TIMEOUT = 30.0
"""Seconds allowed from starting ``redis-server`` to its first ``PONG``."""

STOP_TIMEOUT = 30.0
"""Seconds a child may take to stop after SIGTERM before it is killed."""

_START_ATTEMPTS = 3
"""Attempts to start a server when its freshly picked port was taken meanwhile."""

_TAIL_LINES = 40
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PORT_IN_USE = re.compile(r"address already in use", re.IGNORECASE)

_T = TypeVar("_T")

_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()


class _PortInUseError(RuntimeError):
    """A server could not bind the port picked for it (someone else took it first)."""


# --------------------------------------------------------------------------- processes


def _kill_children_at_exit() -> None:
    """Kills every child that is still running when the interpreter exits."""
    with _children_lock:
        children = list(_children)
        _children.clear()
    for child in children:
        if child.poll() is None:
            child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)


atexit.register(_kill_children_at_exit)


def _spawn(
    args: Sequence[str],
    *,
    log_path: pathlib.Path,
    stdout_pipe: bool = False,
    stdin_pipe: bool = False,
    cwd: pathlib.Path | None = None,
) -> subprocess.Popen[bytes]:
    """Starts a child process and records it for the exit hook.

    Args:
        args: The command line.
        log_path: File that receives the child's stderr (and its stdout unless
            ``stdout_pipe``); it is appended to.
        stdout_pipe: Whether to give the child's stdout to the caller as a pipe.
        stdin_pipe: Whether the child's stdin is a pipe held open by the caller;
            otherwise it is ``/dev/null``.
        cwd: Working directory of the child.

    Returns:
        The running child.
    """
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            cwd=cwd,
        )
    with _children_lock:
        _children.add(child)
    return child


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Stops a child: closes its stdin, sends SIGTERM, and kills it if it lingers.

    Args:
        child: A child started by :func:`_spawn`.
    """
    try:
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=STOP_TIMEOUT)
        if child.stdout is not None:
            with contextlib.suppress(OSError):
                child.stdout.close()
    finally:
        with _children_lock:
            _children.discard(child)


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: pathlib.Path, lines: int = _TAIL_LINES) -> str:
    """Returns the last lines of a text file, without ANSI colour codes.

    Args:
        path: The file; a missing file gives an empty tail.
        lines: How many lines to keep.

    Returns:
        The tail, or a placeholder if there is nothing to show.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no output)"
    kept = _ANSI_ESCAPE.sub("", text).rstrip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"


def _retry_on_port_conflict(start: Callable[[], _T], what: str) -> _T:
    """Calls ``start`` again (with a new port) while it fails with :class:`_PortInUseError`.

    Args:
        start: Starts a server on a freshly picked port.
        what: Names the server in the error message.

    Returns:
        What ``start`` returned.

    Raises:
        RuntimeError: Every attempt found its port taken.
    """
    for _ in range(_START_ATTEMPTS - 1):
        with contextlib.suppress(_PortInUseError):
            return start()
    try:
        return start()
    except _PortInUseError as error:
        raise RuntimeError(f"{what} found its port taken in {_START_ATTEMPTS} attempts") from error


def _new_log(directory: pathlib.Path, stem: str) -> pathlib.Path:
    """Returns a log file path in ``directory`` that does not exist yet.

    Args:
        directory: Where the log goes.
        stem: Base of the file name.

    Returns:
        ``stem.log``, or ``stem-N.log`` for the first free N.
    """
    path = directory / f"{stem}.log"
    number = 1
    while path.exists():
        number += 1
        path = directory / f"{stem}-{number}.log"
    return path


# --------------------------------------------------------------------------- neo4j


def _neo4j_jar() -> pathlib.Path:
    return NEO4J_PROJECT_DIR / "target" / "neo4j-test-server.jar"


def _neo4j_jar_is_current() -> bool:
    """Tells whether the launcher jar exists and is newer than the pom and the sources."""
    jar = _neo4j_jar()
    lib = jar.parent / "lib"
    if not jar.is_file() or not lib.is_dir() or not any(lib.glob("neo4j-*.jar")):
        return False
    sources = [NEO4J_PROJECT_DIR / "pom.xml", *(NEO4J_PROJECT_DIR / "src").rglob("*")]
    newest_source = max(path.stat().st_mtime for path in sources if path.is_file())
    return jar.stat().st_mtime >= newest_source


def build_neo4j_launcher(*, force: bool = False) -> pathlib.Path:
    """Builds the Neo4j launcher with Maven unless its jar is up to date.

    Concurrent callers (e.g. several pytest-xdist workers) are serialised by a
    file lock, so the build runs once.

    Args:
        force: Build even if the jar looks current.

    Returns:
        The launcher's jar; its dependencies are in ``lib/`` beside it.

    Raises:
        RuntimeError: Maven is missing, fails, or takes too long.
    """
    lock_name = hashlib.sha256(str(NEO4J_PROJECT_DIR).encode()).hexdigest()[:16]
    lock_path = pathlib.Path(tempfile.gettempdir()) / f"starling-neo4j-build-{lock_name}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if force or not _neo4j_jar_is_current():
                _run_maven()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _neo4j_jar()


def _run_maven() -> None:
    """Runs ``mvn -q -B package -DskipTests`` in the launcher project.

    Raises:
        RuntimeError: Maven is missing, fails, or takes too long.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            "Maven ('mvn') is not on PATH; it is needed to build the Neo4j test server "
            f"in {NEO4J_PROJECT_DIR} (run scripts/install-test-deps.sh)"
        )
    command = [mvn, "-q", "-B", "package", "-DskipTests"]
    try:
        result = subprocess.run(
            command,
            cwd=NEO4J_PROJECT_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=NEO4J_BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(
            f"building the Neo4j test server timed out after {NEO4J_BUILD_TIMEOUT:.0f} s "
            f"({' '.join(command)} in {NEO4J_PROJECT_DIR})"
        ) from error
    if result.returncode != 0 or not _neo4j_jar().is_file():
        output = _ANSI_ESCAPE.sub("", result.stdout.decode("utf-8", errors="replace"))
        tail = "\n".join(output.rstrip().splitlines()[-_TAIL_LINES:]) or "(no output)"
        raise RuntimeError(
            f"building the Neo4j test server failed (exit code {result.returncode}; "
            f"{' '.join(command)} in {NEO4J_PROJECT_DIR}). Maven's output ends with:\n{tail}"
        )


def _read_lines(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    """Copies a child's stdout into ``lines`` until end of file, then puts ``None``.

    Reading on to the end also keeps the pipe from filling up later.

    Args:
        stream: The child's stdout.
        lines: Receives each decoded line, then ``None``.
    """
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass  # the pipe was closed by _stop()
    finally:
        lines.put(None)


def _start_neo4j(home: pathlib.Path, log_path: pathlib.Path) -> tuple[subprocess.Popen[bytes], str]:
    """Starts the launcher on a fresh port and waits for its ``READY`` line.

    Args:
        home: The DBMS home directory.
        log_path: Receives the JVM's stderr.

    Returns:
        The running JVM and its Bolt URL.

    Raises:
        _PortInUseError: The port was taken before Neo4j could bind it.
        RuntimeError: The JVM died or did not get ready in time.
    """
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("'java' is not on PATH; the Neo4j test server needs Java 17 or newer")
    jar = _neo4j_jar()
    port = free_port()
    classpath = os.pathsep.join([str(jar), str(jar.parent / "lib" / "*")])
    command = [java, *NEO4J_JVM_OPTIONS, "-cp", classpath, NEO4J_MAIN_CLASS, str(home), str(port)]
    child = _spawn(command, log_path=log_path, stdout_pipe=True, stdin_pipe=True, cwd=home)
    assert child.stdout is not None
    try:
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(
            target=_read_lines, args=(child.stdout, lines), name="neo4j-stdout", daemon=True
        ).start()
        expected = f"READY bolt://127.0.0.1:{port}"
        deadline = time.monotonic() + NEO4J_START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"Neo4j test server not ready after {NEO4J_START_TIMEOUT:.0f} s; "
                    f"its log ({log_path}) ends with:\n{_tail(log_path)}"
                )
            try:
                line = lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line is None:
                code = child.wait(timeout=STOP_TIMEOUT)
                tail = _tail(log_path)
                if _PORT_IN_USE.search(tail):
                    raise _PortInUseError(f"port {port} was taken")
                raise RuntimeError(
                    f"Neo4j test server exited with code {code} before it was ready; "
                    f"its log ({log_path}) ends with:\n{tail}"
                )
            if line == expected:
                return child, f"bolt://127.0.0.1:{port}"
    except BaseException:
        _stop(child)
        raise


@contextlib.contextmanager
def neo4j_server(workdir: pathlib.Path) -> Iterator[str]:
    """Runs an embedded Neo4j 5.26 (community) with Bolt on a free loopback port.

    Authentication is disabled: connect with ``auth=None``. The data lives in
    ``workdir/neo4j`` (Neo4j's own logs in ``workdir/neo4j/logs``) and the
    JVM's stderr goes to ``workdir/neo4j-server.log``; both are left in place.
    The launcher is built with Maven first if needed (see
    :func:`build_neo4j_launcher`).

    Args:
        workdir: An existing directory for the server's files.

    Yields:
        The Bolt URL, ``bolt://127.0.0.1:PORT``.

    Raises:
        RuntimeError: The build failed, or the server died or did not get ready
            within :data:`NEO4J_START_TIMEOUT` seconds (the message carries the
            tail of its log).
    """
    build_neo4j_launcher()
    home = workdir / "neo4j"
    home.mkdir(parents=True, exist_ok=True)
    log_path = _new_log(workdir, "neo4j-server")
    child, url = _retry_on_port_conflict(
        lambda: _start_neo4j(home, log_path), f"Neo4j test server (see {log_path})"
    )
    try:
        yield url
    finally:
        _stop(child)


# --------------------------------------------------------------------------- redis


def _redis_ping(port: int, timeout: float = 1.0) -> bool:
    """Sends one RESP ``PING`` to 127.0.0.1:port and tells whether ``+PONG`` came back.

    Args:
        port: The server's port.
        timeout: Socket timeout in seconds.

    Returns:
        Whether the server answered ``+PONG``.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"+PONG")
    except OSError:
        return False


def _start_redis(
    executable: str, workdir: pathlib.Path, log_path: pathlib.Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Starts ``redis-server`` on a fresh port and waits until it answers ``PING``.

    Args:
        executable: Path of ``redis-server``.
        workdir: The server's working directory (``--dir``).
        log_path: Receives the server's output.

    Returns:
        The running server and its port.

    Raises:
        _PortInUseError: The port was taken before Redis could bind it.
        RuntimeError: The server died or did not answer in time.
    """
    port = free_port()
    command = [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip
    child = _spawn(command, log_path=log_path, cwd=workdir)
    try:
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while not _redis_ping(port):
            code = child.poll()
            if code is not None:
                tail = _tail(log_path)
                if _PORT_IN_USE.search(tail):
                    raise _PortInUseError(f"port {port} was taken")
                raise RuntimeError(
                    f"redis-server exited with code {code} before it answered PING; "
                    f"its log ({log_path}) ends with:\n{tail}"
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"redis-server did not answer PING within {REDIS_START_TIMEOUT:.0f} s; "
                    f"its log ({log_path}) ends with:\n{_tail(log_path)}"
                )
            time.sleep(0.05)
        return child, port
    except BaseException:
        _stop(child)
        raise


@contextlib.contextmanager
def redis_server(workdir: pathlib.Path) -> Iterator[str]:
    """Runs ``redis-server`` without persistence on a free loopback port.

    The server's output goes to ``workdir/redis-server.log``, which is left in
    place.

    Args:
        workdir: An existing directory, the server's ``--dir``.

    Yields:
        The URL of database 0, ``redis://127.0.0.1:PORT/0``.

    Raises:
        RuntimeError: ``redis-server`` is not on PATH, or it died or did not
            answer ``PING`` within :data:`REDIS_START_TIMEOUT` seconds.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError(
            "'redis-server' is not on PATH; install it (Debian: apt-get install redis-server, "
            "or run scripts/install-test-deps.sh)"
        )
    workdir = workdir.resolve()
    log_path = _new_log(workdir, "redis-server")
    child, port = _retry_on_port_conflict(
        lambda: _start_redis(executable, workdir, log_path), f"redis-server (see {log_path})"
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(child)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Starts one service, prints its URL, and runs it until Ctrl-C or SIGTERM.

    Args:
        argv: Command-line arguments without the program name.

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(
        description="Run a Starling test service until Ctrl-C.",
    )
    parser.add_argument("service", choices=["neo4j", "redis"])
    parser.add_argument(
        "--workdir",
        type=pathlib.Path,
        help="directory for the service's files (default: a temporary one, removed at the end)",
    )
    args = parser.parse_args(argv)
    service = neo4j_server if args.service == "neo4j" else redis_server

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        print(f"starting {args.service} in {workdir} ...", file=sys.stderr, flush=True)
        try:
            url = stack.enter_context(service(workdir))
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(url, flush=True)
        print("running; press Ctrl-C to stop", file=sys.stderr, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopping ...", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
