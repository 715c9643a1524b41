"""Real backing services for the test suite: an embedded Neo4j, a Redis server, a Redis Cluster.

Each runs as child processes on free ports (of loopback unless told otherwise) and
yields a URL or a handle:

* :func:`neo4j_server` runs the Java launcher in ``tests/neo4j_server`` (Neo4j
  5.26 LTS community, embedded, Bolt enabled, auth disabled) and yields
  ``bolt://127.0.0.1:PORT``. The launcher's jar is built with Maven on first use
  (or whenever its sources are newer than the jar).
* :func:`redis_server` runs ``redis-server`` without persistence and yields
  ``redis://127.0.0.1:PORT/0``.
* :func:`redis_cluster` runs ``masters × (1 + replicas)`` ``redis-server`` nodes,
  forms a Redis Cluster with ``redis-cli --cluster create`` and yields a
  :class:`RedisClusterHandle`: the ``redis+cluster://`` URL, the nodes, their live
  roles, and the means to kill a node, wait for its replica's promotion and start
  it again. :func:`key_slot` is the cluster's key-to-slot rule.

Every service takes ``host`` (the address it binds) and ``wrap`` (an argv prefix
put before each command, e.g. ``("ip", "netns", "exec", "ns1")`` to run it in a
network namespace, where ``host`` is an address of that namespace). With ``wrap``
every check and command goes through it too (``redis-cli`` under the wrap), since
the caller's namespace may not reach ``host``; the wrap must exec the command, not
fork it, so that the child this module holds is the server itself.

None removes anything it did not create, and none leaves a process behind:
each stops its children in a ``finally`` block, and every child still running when
the interpreter exits is killed by an :mod:`atexit` hook. In addition the Neo4j
launcher stops by itself when its stdin (a pipe from this process) is closed,
which also covers this process being killed outright.

Only the standard library is used. For developers::

    python tests/services.py neo4j    # or: redis, redis-cluster
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import pathlib
import queue
import random
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

__all__ = [
    "ClusterNode",
    "RedisClusterHandle",
    "RedisCommandError",
    "key_slot",
    "neo4j_server",
    "redis_cluster",
    "redis_cluster_service",
    "redis_server",
]

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

REDIS_COMMAND_TIMEOUT = 5.0
"""Seconds one command to a Redis node may take (connecting included)."""

REDIS_CLUSTER_FORM_TIMEOUT = 30.0
"""Seconds allowed for ``redis-cli --cluster create``, and again for the cluster to get healthy."""

CLUSTER_SLOTS = 16384
"""Hash slots of a Redis Cluster (cluster spec, "Key distribution model")."""

CLUSTER_BUS_PORT_OFFSET = 10000
"""A node's cluster bus listens on its port plus this (Redis's default ``cluster-port 0``)."""

CLUSTER_PORTS = range(10000, 22000)
"""Ports the cluster nodes are picked from: with their bus ports (+10000) they stay below
Linux's ephemeral range (32768-60999), so outgoing connections do not take them."""

LOCALHOST = "127.0.0.1"
"""The default ``host`` of every service."""

STOP_TIMEOUT = 30.0
"""Seconds a child may take to stop after SIGTERM before it is killed."""

_START_ATTEMPTS = 3
"""Attempts to start a server when its freshly picked port was taken meanwhile."""

_TAIL_LINES = 40
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PORT_IN_USE = re.compile(r"address already in use", re.IGNORECASE)

_POLL_INTERVAL = 0.05
"""Seconds between two looks at a server that is not ready yet."""

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


def free_port(host: str = LOCALHOST) -> int:
    """Returns a TCP port on ``host`` (an address of this namespace) that was free a moment ago."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _netloc(host: str, port: int) -> str:
    """Returns ``host:port`` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port_is_free(host: str, port: int) -> bool:
    """Tells whether ``port`` can be bound on ``host`` (an address of this namespace) now."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _pick_port(host: str, wrap: Sequence[str]) -> int:
    """Returns a port for a server on ``host`` that was free a moment ago.

    Under a ``wrap`` the host's namespace is not this one, so the port is only a
    random pick (free on this namespace's loopback): the caller retries on a
    conflict, as it must anyway.

    Args:
        host: The address the server will bind.
        wrap: The argv prefix the server runs under.

    Returns:
        The port.
    """
    return free_port() if wrap else free_port(host)


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


def _start_neo4j(
    home: pathlib.Path, log_path: pathlib.Path, host: str, wrap: Sequence[str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Starts the launcher on a fresh port and waits for its ``READY`` line.

    Args:
        home: The DBMS home directory.
        log_path: Receives the JVM's stderr.
        host: The address Bolt listens on and advertises.
        wrap: Argv prefix put before the ``java`` command.

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
    port = _pick_port(host, wrap)
    classpath = os.pathsep.join([str(jar), str(jar.parent / "lib" / "*")])
    command = [
        *wrap, java, *NEO4J_JVM_OPTIONS, "-cp", classpath, NEO4J_MAIN_CLASS, str(home), str(port)
    ]  # fmt: skip
    if host != LOCALHOST:
        command.append(host)  # the launcher's optional third argument
    child = _spawn(command, log_path=log_path, stdout_pipe=True, stdin_pipe=True, cwd=home)
    assert child.stdout is not None
    try:
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(
            target=_read_lines, args=(child.stdout, lines), name="neo4j-stdout", daemon=True
        ).start()
        url = f"bolt://{_netloc(host, port)}"
        expected = f"READY bolt://{host}:{port}"
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
                return child, url
    except BaseException:
        _stop(child)
        raise


@contextlib.contextmanager
def neo4j_server(
    workdir: pathlib.Path, *, host: str = LOCALHOST, wrap: Sequence[str] = ()
) -> Iterator[str]:
    """Runs an embedded Neo4j 5.26 (community) with Bolt on a free port of ``host``.

    Authentication is disabled: connect with ``auth=None``. The data lives in
    ``workdir/neo4j`` (Neo4j's own logs in ``workdir/neo4j/logs``) and the
    JVM's stderr goes to ``workdir/neo4j-server.log``; both are left in place.
    The launcher is built with Maven first if needed (see
    :func:`build_neo4j_launcher`).

    Args:
        workdir: An existing directory for the server's files.
        host: The address Bolt listens on and advertises.
        wrap: Argv prefix put before the ``java`` command (see the module docstring);
            readiness is still the launcher's ``READY`` line on its stdout.

    Yields:
        The Bolt URL, ``bolt://HOST:PORT``.

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
        lambda: _start_neo4j(home, log_path, host, tuple(wrap)),
        f"Neo4j test server (see {log_path})",
    )
    try:
        yield url
    finally:
        _stop(child)


# --------------------------------------------------------------------------- redis


class RedisCommandError(RuntimeError):
    """A Redis node answered a command with an error reply; the message is the reply's text."""


_REDIS_ERROR_REPLY = re.compile(r"^[A-Z][A-Z_]+ ")
"""An error reply as ``redis-cli -e`` prints it on stderr (``ERR …``, ``MOVED …``), as opposed
to its own complaints (``Could not connect …``) or the wrap's."""


def _redis_executable(name: str) -> str:
    """Returns the path of ``redis-server`` or ``redis-cli``.

    Args:
        name: The program.

    Returns:
        Its path.

    Raises:
        RuntimeError: It is not on PATH.
    """
    executable = shutil.which(name)
    if executable is None:
        raise RuntimeError(
            f"'{name}' is not on PATH; install it (Debian: apt-get install redis-server, "
            "or run scripts/install-test-deps.sh)"
        )
    return executable


def _encode_command(args: Sequence[str]) -> bytes:
    """Returns a command as a RESP array of bulk strings (RESP2 spec, "Sending commands")."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
    return b"".join(parts)


def _read_reply(stream: IO[bytes]) -> str:
    """Reads one RESP2 reply and renders it as ``redis-cli --raw`` prints it.

    Simple and bulk strings as they are, integers in decimal, a nil as ``""``, an
    array as its elements one per line.

    Args:
        stream: The connection, buffered.

    Returns:
        The rendered reply.

    Raises:
        RedisCommandError: The reply (or an element of it) is an error.
        ConnectionError: The connection closed mid-reply or sent something that is not RESP2.
    """
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the connection closed before a complete reply")
    kind, body = line[:1], line[1:-2].decode("utf-8", errors="replace")
    if kind in (b"+", b":"):
        return body
    if kind == b"-":
        raise RedisCommandError(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return ""
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("the connection closed before a complete reply")
        return data[:-2].decode("utf-8", errors="replace")
    if kind == b"*":
        return "\n".join(_read_reply(stream) for _ in range(max(int(body), 0)))
    raise ConnectionError(f"not a RESP2 reply: {line!r}")


def _socket_command(host: str, port: int, args: Sequence[str], timeout: float) -> str:
    """Sends one command over a fresh TCP connection (stdlib RESP2); see :func:`_command`."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_encode_command(args))
        with sock.makefile("rb") as stream:
            return _read_reply(stream)


def _cli_command(
    wrap: Sequence[str], host: str, port: int, args: Sequence[str], timeout: float
) -> str:
    """Sends one command with ``redis-cli -e --raw`` run under ``wrap``; see :func:`_command`."""
    command = [*wrap, _redis_executable("redis-cli"), "-e", "--raw", "-h", host, "-p", str(port)]
    command += args
    try:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise TimeoutError(f"{' '.join(command)} took longer than {timeout:g} s") from error
    if result.returncode == 0:
        # redis-cli ends every reply with a newline of its own.
        return result.stdout.decode("utf-8", errors="replace").removesuffix("\n")
    stderr = result.stderr.decode("utf-8", errors="replace").strip()
    if _REDIS_ERROR_REPLY.match(stderr):
        raise RedisCommandError(stderr)
    raise ConnectionError(
        f"{' '.join(command)} failed with exit code {result.returncode}: {stderr or '(no output)'}"
    )


def _command(
    host: str,
    port: int,
    wrap: Sequence[str],
    args: Sequence[str],
    timeout: float = REDIS_COMMAND_TIMEOUT,
) -> str:
    """Sends one command to a Redis server and returns its reply as text.

    Without ``wrap`` the command goes over a socket from this process; with one it
    goes through ``redis-cli`` run under the wrap, since this namespace may not
    reach ``host``. Both give the same text.

    Args:
        host: The server's address.
        port: The server's port.
        wrap: The argv prefix the server runs under.
        args: The command and its arguments.
        timeout: Seconds the whole exchange may take.

    Returns:
        The reply as ``redis-cli --raw`` prints it, without the newline it appends:
        strings as they are (``CLUSTER NODES`` keeps its final newline), integers in
        decimal, a nil as ``""``, an array's elements one per line.

    Raises:
        RedisCommandError: The server answered with an error.
        OSError: The server could not be reached (:class:`ConnectionError`) or did
            not answer in time (:class:`TimeoutError`).
    """
    if wrap:
        return _cli_command(wrap, host, port, args, timeout)
    return _socket_command(host, port, args, timeout)


def _redis_ping(
    port: int, timeout: float = 1.0, *, host: str = LOCALHOST, wrap: Sequence[str] = ()
) -> bool:
    """Sends one ``PING`` to host:port and tells whether ``PONG`` came back.

    Args:
        port: The server's port.
        timeout: Seconds the exchange may take.
        host: The server's address.
        wrap: The argv prefix the server runs under (see :func:`_command`).

    Returns:
        Whether the server answered ``PONG``.
    """
    try:
        return _command(host, port, wrap, ("PING",), timeout) == "PONG"
    except (OSError, RedisCommandError):
        return False


def _wait_for_ping(
    child: subprocess.Popen[bytes],
    host: str,
    port: int,
    wrap: Sequence[str],
    log_path: pathlib.Path,
) -> None:
    """Waits until a freshly started ``redis-server`` answers ``PING``.

    Args:
        child: The server (possibly under a wrap).
        host: The address it binds.
        port: The port it binds.
        wrap: The argv prefix it runs under.
        log_path: Its output.

    Raises:
        _PortInUseError: The port (or its cluster bus port) was taken before Redis could bind it.
        RuntimeError: The server died or did not answer within :data:`REDIS_START_TIMEOUT`
            seconds (the message carries the tail of its log).
    """
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    while not _redis_ping(port, host=host, wrap=wrap):
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
        time.sleep(_POLL_INTERVAL)


def _start_redis(
    executable: str,
    workdir: pathlib.Path,
    log_path: pathlib.Path,
    host: str,
    wrap: Sequence[str],
) -> tuple[subprocess.Popen[bytes], int]:
    """Starts ``redis-server`` on a fresh port and waits until it answers ``PING``.

    Args:
        executable: Path of ``redis-server``.
        workdir: The server's working directory (``--dir``).
        log_path: Receives the server's output.
        host: The address it binds.
        wrap: Argv prefix put before the command.

    Returns:
        The running server and its port.

    Raises:
        _PortInUseError: The port was taken before Redis could bind it.
        RuntimeError: The server died or did not answer in time.
    """
    port = _pick_port(host, wrap)
    command = [
        *wrap,
        executable,
        "--port", str(port),
        "--bind", host,
        "--protected-mode", "no",  # else Redis 7 refuses clients off loopback, --bind or not
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip
    child = _spawn(command, log_path=log_path, cwd=workdir)
    try:
        _wait_for_ping(child, host, port, wrap, log_path)
        return child, port
    except BaseException:
        _stop(child)
        raise


@contextlib.contextmanager
def redis_server(
    workdir: pathlib.Path, *, host: str = LOCALHOST, wrap: Sequence[str] = ()
) -> Iterator[str]:
    """Runs ``redis-server`` without persistence on a free port of ``host``.

    The server's output goes to ``workdir/redis-server.log``, which is left in
    place.

    Args:
        workdir: An existing directory, the server's ``--dir``.
        host: The address it binds.
        wrap: Argv prefix put before the command (see the module docstring); the
            readiness check (``redis-cli ping``) runs under it too.

    Yields:
        The URL of database 0, ``redis://HOST:PORT/0``.

    Raises:
        RuntimeError: ``redis-server`` is not on PATH, or it died or did not
            answer ``PING`` within :data:`REDIS_START_TIMEOUT` seconds.
    """
    executable = _redis_executable("redis-server")
    workdir = workdir.resolve()
    log_path = _new_log(workdir, "redis-server")
    child, port = _retry_on_port_conflict(
        lambda: _start_redis(executable, workdir, log_path, host, tuple(wrap)),
        f"redis-server (see {log_path})",
    )
    try:
        yield f"redis://{_netloc(host, port)}/0"
    finally:
        _stop(child)


# --------------------------------------------------------------------------- redis cluster


def _crc16_table() -> tuple[int, ...]:
    """The lookup table of CRC16/XMODEM (polynomial 0x1021, no reflection)."""
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def _crc16(data: bytes) -> int:
    """CRC16/XMODEM of ``data`` (``_crc16(b"123456789") == 0x31C3``)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: str | bytes) -> int:
    """Returns the hash slot a Redis Cluster keeps a key in.

    The slot is CRC16/XMODEM of the key modulo 16384, where a key with a hash tag
    is hashed by its tag alone: the bytes between its first ``{`` and the first
    ``}`` after it, if there are any (``{}x`` has no tag, ``a{b}{c}`` has ``b``).
    Source: the Redis Cluster specification, "Key distribution model" and "Hash
    tags" (``keyHashSlot`` in ``cluster.c``).

    Args:
        key: The key; a ``str`` is hashed as UTF-8.

    Returns:
        The slot, in ``0..16383``.
    """
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % CLUSTER_SLOTS


@dataclasses.dataclass(eq=False)
class ClusterNode:
    """One ``redis-server`` of a :func:`redis_cluster`; compared by identity.

    Attributes:
        host: The address it binds.
        port: Its client port; its cluster bus listens on ``port + 10000``.
        process: Its process (running, or killed); :meth:`RedisClusterHandle.restart`
            replaces it.
        node_id: Its cluster node id (40 hex digits); kept across restarts in
            its ``nodes-PORT.conf``.
        log_path: Its output, appended to by every start.
        argv: The command line that starts it, wrap included.
        wrap: The argv prefix it runs under; commands to it go through it too.
    """

    host: str
    port: int
    process: subprocess.Popen[bytes] = dataclasses.field(repr=False)
    node_id: str
    log_path: pathlib.Path = dataclasses.field(repr=False)
    argv: tuple[str, ...] = dataclasses.field(repr=False)
    wrap: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    @property
    def address(self) -> str:
        """``host:port``, as a URL writes it."""
        return _netloc(self.host, self.port)

    def alive(self) -> bool:
        """Tells whether its process is running."""
        return self.process.poll() is None


@dataclasses.dataclass(frozen=True)
class _NodeEntry:
    """One line of ``CLUSTER NODES``: a node as the answering node sees it.

    Source: the ``CLUSTER NODES`` command reference (serialization format).
    """

    node_id: str
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]
    """Inclusive slot ranges it serves; slots being imported or migrated are left out."""

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags


def _parse_cluster_nodes(text: str) -> list[_NodeEntry]:
    """Parses a ``CLUSTER NODES`` reply.

    Args:
        text: The reply: one line per node, ``id ip:port@bus flags master ping pong
            epoch link slot…``.

    Returns:
        One entry per line.
    """
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        ranges = []
        for token in fields[8:]:
            if token.startswith("["):
                continue  # [slot->-id] / [slot-<-id]: a slot on the move
            first, _, last = token.partition("-")
            ranges.append((int(first), int(last or first)))
        entries.append(
            _NodeEntry(
                node_id=fields[0],
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(ranges),
            )
        )
    return entries


def _parse_info(text: str) -> dict[str, str]:
    """Parses an ``INFO`` or ``CLUSTER INFO`` reply into its ``field:value`` pairs."""
    fields = {}
    for line in text.splitlines():
        name, colon, value = line.strip().partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value
    return fields


def _slot_owners(view: Sequence[_NodeEntry]) -> list[str | None]:
    """Returns, for every slot, the id of the master that serves it in ``view`` (or ``None``)."""
    owners: list[str | None] = [None] * CLUSTER_SLOTS
    for entry in view:
        if entry.is_master:
            for first, last in entry.slots:
                owners[first : last + 1] = [entry.node_id] * (last - first + 1)
    return owners


@dataclasses.dataclass(frozen=True)
class _Kill:
    """What :meth:`RedisClusterHandle.kill` noted for :meth:`RedisClusterHandle.wait_promoted`."""

    at: float
    """``time.monotonic()`` right after the SIGKILL."""
    slots: tuple[tuple[int, int], ...]
    """The slot ranges the node served (empty for a replica)."""
    replica_ids: frozenset[str]
    """The ids of its replicas at that moment."""


class RedisClusterHandle:
    """A running :func:`redis_cluster`: its URL, its nodes, their live roles, and failures.

    Roles are never cached: each reading method sends a few commands to the nodes
    (:meth:`command`), and sees what they say at that moment.

    Attributes:
        url: ``redis+cluster://H:P1,H:P2,…``, the masters at formation, in start
            order: the URL Starling accepts.
        nodes: Every node (masters and replicas) in start order, killed ones included.
    """

    def __init__(self, nodes: list[ClusterNode]) -> None:
        self.nodes = nodes
        self.url = ""  # set by redis_cluster once the cluster has formed
        self._kills: dict[str, _Kill] = {}

    def __repr__(self) -> str:
        return f"RedisClusterHandle({self.url!r})"

    def command(self, node: ClusterNode, *args: str, timeout: float = REDIS_COMMAND_TIMEOUT) -> str:
        """Sends one command to a node and returns its reply as text.

        Over a socket from this process, or with ``redis-cli`` under the node's wrap
        when it has one (this namespace may not reach it).

        Args:
            node: The node.
            *args: The command and its arguments, e.g. ``"CLUSTER", "INFO"``.
            timeout: Seconds the exchange may take.

        Returns:
            The reply as ``redis-cli --raw`` prints it, without its final newline.

        Raises:
            RedisCommandError: The node answered with an error.
            OSError: The node could not be reached or did not answer in time.
        """
        return _command(node.host, node.port, node.wrap, args, timeout)

    def live_nodes(self) -> list[ClusterNode]:
        """The nodes whose process runs, in start order."""
        return [node for node in self.nodes if node.alive()]

    def _node(self, node_id: str | None) -> ClusterNode | None:
        return next((node for node in self.nodes if node.node_id == node_id), None)

    def _view(self) -> list[_NodeEntry]:
        """``CLUSTER NODES`` as the first live node that answers sees it.

        Raises:
            RuntimeError: No live node answered.
        """
        errors = []
        for node in self.live_nodes():
            try:
                return _parse_cluster_nodes(self.command(node, "CLUSTER", "NODES"))
            except (OSError, RedisCommandError) as error:
                errors.append(f"{node.address}: {error}")
        raise RuntimeError(f"no live cluster node answered CLUSTER NODES ({'; '.join(errors)})")

    def _role(self, master: bool) -> list[ClusterNode]:
        view = {entry.node_id: entry for entry in self._view()}
        return [
            node
            for node in self.live_nodes()
            if (entry := view.get(node.node_id)) and entry.is_master == master and not entry.failed
        ]

    def masters(self) -> list[ClusterNode]:
        """The live nodes that are masters now, in start order.

        Read with ``CLUSTER NODES`` from the first live node that answers; a node it
        flags ``fail`` is left out.

        Raises:
            RuntimeError: No live node answered.
        """
        return self._role(master=True)

    def replicas(self) -> list[ClusterNode]:
        """The live nodes that are replicas now, in start order; read as :meth:`masters` is."""
        return self._role(master=False)

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        """The live nodes that replicate ``master`` now; read as :meth:`masters` is."""
        ids = {entry.node_id for entry in self._view() if entry.master_id == master.node_id}
        return [node for node in self.live_nodes() if node.node_id in ids]

    def master_of(self, slot: int) -> ClusterNode:
        """The node that serves a slot now, as the first live node that answers sees it.

        Between a master's death and its replica's promotion that is the dead master.

        Args:
            slot: A hash slot (see :func:`key_slot`).

        Returns:
            The node.

        Raises:
            ValueError: ``slot`` is not in ``0..16383``.
            LookupError: No node serves it.
            RuntimeError: No live node answered.
        """
        if not 0 <= slot < CLUSTER_SLOTS:
            raise ValueError(f"slot {slot} is not in 0..{CLUSTER_SLOTS - 1}")
        node = self._node(_slot_owners(self._view())[slot])
        if node is None:
            raise LookupError(f"no node of {self.url} serves slot {slot}")
        return node

    def kill(self, node: ClusterNode) -> None:
        """Kills a node with SIGKILL, the way a crashed host dies: no shutdown, no goodbye.

        Notes the moment, and the slots and replicas the node had, for
        :meth:`wait_promoted`.

        Args:
            node: A running node.

        Raises:
            ValueError: The node is not running.
            RuntimeError: No live node answered ``CLUSTER NODES`` before the kill.
        """
        if not node.alive():
            raise ValueError(f"{node} is not running")
        view = self._view()
        entry = next((entry for entry in view if entry.node_id == node.node_id), None)
        slots = entry.slots if entry is not None and entry.is_master else ()
        replicas = frozenset(entry.node_id for entry in view if entry.master_id == node.node_id)
        node.process.kill()
        self._kills[node.node_id] = _Kill(time.monotonic(), slots, replicas)
        node.process.wait()
        _stop(node.process)  # forgets the child

    def wait_promoted(
        self, killed: ClusterNode, timeout: float = REDIS_CLUSTER_FORM_TIMEOUT
    ) -> tuple[ClusterNode, float]:
        """Waits until a replica of a killed master has taken over its slots.

        Done when every live node says ``cluster_state:ok`` and sees all the slots
        the killed master served served by one node that was its replica.

        Args:
            killed: A master killed with :meth:`kill`.
            timeout: Seconds to wait.

        Returns:
            The new master, and the seconds from the kill to the moment this saw the
            takeover (which includes up to one polling round).

        Raises:
            ValueError: ``killed`` was not killed with :meth:`kill`, or was no master
                with slots then.
            RuntimeError: No takeover within ``timeout`` (the message says what was
                missing and carries the tails of the live nodes' logs).
        """
        kill = self._kills.get(killed.node_id)
        if kill is None or killed.alive():
            raise ValueError(f"{killed} was not killed with kill()")
        if not kill.slots:
            raise ValueError(f"{killed} served no slots when it was killed")
        deadline = time.monotonic() + timeout
        while True:
            problem, promoted = self._promotion_problem(kill)
            if promoted is not None:
                return promoted, time.monotonic() - kill.at
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"no replica of {killed} took over its slots within {timeout:g} s: "
                    f"{problem}\n{self._live_logs()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _promotion_problem(self, kill: _Kill) -> tuple[str, None] | tuple[None, ClusterNode]:
        """Returns what keeps the killed master's slots from being taken over, or the new master."""
        slots = [slot for first, last in kill.slots for slot in range(first, last + 1)]
        agreed: str | None = None
        for node in self.live_nodes():
            try:
                info = _parse_info(self.command(node, "CLUSTER", "INFO"))
                owners = _slot_owners(_parse_cluster_nodes(self.command(node, "CLUSTER", "NODES")))
            except (OSError, RedisCommandError) as error:
                return f"{node.address} did not answer: {error}", None
            if info.get("cluster_state") != "ok":
                return f"{node.address} says cluster_state:{info.get('cluster_state')}", None
            seen = {owners[slot] for slot in slots}
            if len(seen) != 1 or (owner := seen.pop()) not in kill.replica_ids:
                return f"{node.address} sees the slots served by {sorted(map(str, seen))}", None
            if agreed not in (None, owner):
                return "the live nodes disagree about the new master", None
            agreed = owner
        promoted = self._node(agreed)
        if promoted is None:
            return "no live node answered", None
        return None, promoted

    def restart(self, node: ClusterNode) -> None:
        """Starts a killed node again with its command line and its ``nodes-PORT.conf``.

        It rejoins under its old id; a former master comes back as a replica of the
        node that took its slots. Returns once it answers ``PING``; :meth:`wait_ok`
        waits until it has rejoined.

        Args:
            node: A node that is not running.

        Raises:
            ValueError: The node is running.
            RuntimeError: It died or did not answer in time, or its port was taken
                while it was down (the message carries the tail of its log).
        """
        if node.alive():
            raise ValueError(f"{node} is running")
        child = _spawn(node.argv, log_path=node.log_path, cwd=node.log_path.parent)
        try:
            _wait_for_ping(child, node.host, node.port, node.wrap, node.log_path)
        except _PortInUseError as error:
            _stop(child)
            raise RuntimeError(
                f"the port of {node} was taken while it was down; its log ({node.log_path}) "
                f"ends with:\n{_tail(node.log_path)}"
            ) from error
        except BaseException:
            _stop(child)
            raise
        node.process = child
        self._kills.pop(node.node_id, None)

    def wait_ok(self, timeout: float = REDIS_CLUSTER_FORM_TIMEOUT) -> float:
        """Waits until the live nodes form a healthy cluster.

        Healthy: every live node says ``cluster_state:ok``, sees all 16384 slots
        served (``cluster_slots_ok``), knows every node and flags no live one as
        failing; all agree who serves which slot and who is a master; every live master
        serves slots
        and every live replica has ``master_link_status:up``.

        Args:
            timeout: Seconds to wait.

        Returns:
            The seconds it took.

        Raises:
            RuntimeError: Not healthy within ``timeout`` (the message says what was
                missing and carries the tails of the live nodes' logs).
        """
        started = time.monotonic()
        while (problem := self._health_problem()) is not None:
            if time.monotonic() - started >= timeout:
                raise RuntimeError(
                    f"the Redis Cluster was not healthy within {timeout:g} s: {problem}\n"
                    f"{self._live_logs()}"
                )
            time.sleep(_POLL_INTERVAL)
        return time.monotonic() - started

    def _health_problem(self) -> str | None:
        """Returns what keeps the cluster from being healthy (see :meth:`wait_ok`), or ``None``."""
        live = self.live_nodes()
        if not live:
            return "no node is running"
        live_ids = {node.node_id for node in live}
        slot_maps = set()
        for node in live:
            try:
                info = _parse_info(self.command(node, "CLUSTER", "INFO"))
                view = _parse_cluster_nodes(self.command(node, "CLUSTER", "NODES"))
                me = next(entry for entry in view if "myself" in entry.flags)
                link = "up"
                if not me.is_master:
                    replication = _parse_info(self.command(node, "INFO", "replication"))
                    link = replication.get("master_link_status", "?")
            except (OSError, RedisCommandError, StopIteration) as error:
                return f"{node.address} did not answer: {error!r}"
            if info.get("cluster_state") != "ok":
                return f"{node.address} says cluster_state:{info.get('cluster_state')}"
            if info.get("cluster_slots_ok") != str(CLUSTER_SLOTS):
                return f"{node.address} sees {info.get('cluster_slots_ok')} slots served"
            if info.get("cluster_known_nodes") != str(len(self.nodes)):
                return f"{node.address} knows {info.get('cluster_known_nodes')} nodes"
            if me.is_master and not me.slots:
                return f"{node.address} is a master without slots"
            if link != "up":
                return f"{node.address} is a replica with master_link_status:{link}"
            for entry in view:
                if entry.node_id in live_ids and entry.flags & {"fail", "fail?"}:
                    return f"{node.address} flags live node {entry.node_id} {','.join(entry.flags)}"
            # Slots and roles: a node learns another's role by gossip, so a new replica
            # may still look like a master (without slots) to the others for a while.
            slot_maps.add(
                (
                    tuple(sorted((e.node_id, e.slots) for e in view if e.slots)),
                    tuple(sorted((e.node_id, e.is_master) for e in view if e.node_id in live_ids)),
                )
            )
        if len(slot_maps) > 1:
            return "the live nodes disagree about who serves which slot or who is a master"
        return None

    def _live_logs(self, lines: int = 8) -> str:
        """The tails of the live nodes' logs, for an error message."""
        return "\n".join(
            f"--- {node.address} ({node.log_path}):\n{_tail(node.log_path, lines)}"
            for node in self.live_nodes()
        )


_port_random = random.Random()
"""Picks cluster ports; private, so that tests seeding :mod:`random` do not make them collide."""


def _pick_cluster_port(host: str, wrap: Sequence[str], taken: set[int]) -> int:
    """Returns a port from :data:`CLUSTER_PORTS` for a cluster node.

    Without a wrap the port and its bus port were both free on ``host`` a moment
    ago; under one they are a random pick, and a conflict shows in the node's log.

    Args:
        host: The address the node binds.
        wrap: The argv prefix it runs under.
        taken: Ports already given to this cluster's nodes.

    Returns:
        The port.

    Raises:
        RuntimeError: No free pair was found in 100 picks.
    """
    for _ in range(100):
        port = _port_random.choice(CLUSTER_PORTS)
        if port in taken:
            continue
        if wrap or all(_port_is_free(host, p) for p in (port, port + CLUSTER_BUS_PORT_OFFSET)):
            return port
    raise RuntimeError(f"no free port pair (P and P+{CLUSTER_BUS_PORT_OFFSET}) on {host}")


def _start_cluster_node(
    executable: str,
    workdir: pathlib.Path,
    host: str,
    wrap: tuple[str, ...],
    node_timeout_ms: int,
    taken: set[int],
) -> ClusterNode:
    """Starts one cluster-enabled ``redis-server`` on a fresh port and waits until it answers.

    Args:
        executable: Path of ``redis-server``.
        workdir: Where its ``nodes-PORT.conf``, its directory ``PORT/`` and its log go.
        host: The address it binds.
        wrap: Argv prefix put before the command.
        node_timeout_ms: Its ``cluster-node-timeout``, in milliseconds.
        taken: Ports already given to this cluster's nodes; the new one is added.

    Returns:
        The node, not yet part of a cluster.

    Raises:
        _PortInUseError: Its port or bus port was taken before it could bind them.
        RuntimeError: It died or did not answer in time.
    """
    port = _pick_cluster_port(host, wrap, taken)
    taken.add(port)
    directory = workdir / str(port)
    directory.mkdir(exist_ok=True)
    log_path = _new_log(workdir, f"redis-{port}")
    argv = (
        *wrap,
        executable,
        "--port", str(port),
        "--bind", host,
        "--protected-mode", "no",  # else Redis 7 refuses clients off loopback, --bind or not
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
        "--cluster-node-timeout", str(node_timeout_ms),
        "--cluster-require-full-coverage", "no",
        "--cluster-replica-validity-factor", "0",
        "--repl-diskless-sync-delay", "0",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--daemonize", "no",
        "--logfile", "",
    )  # fmt: skip
    child = _spawn(argv, log_path=log_path, cwd=directory)
    try:
        _wait_for_ping(child, host, port, wrap, log_path)
        node_id = _command(host, port, wrap, ("CLUSTER", "MYID"))
    except BaseException:
        _stop(child)
        raise
    return ClusterNode(host, port, child, node_id, log_path, argv, wrap)


def _create_cluster(
    redis_cli: str, nodes: Sequence[ClusterNode], replicas: int, log_path: pathlib.Path
) -> None:
    """Runs ``redis-cli --cluster create`` over the nodes, under their wrap.

    Args:
        redis_cli: Path of ``redis-cli``.
        nodes: The fresh nodes; ``redis-cli`` makes masters and replicas of them.
        replicas: Replicas per master.
        log_path: Receives ``redis-cli``'s output.

    Raises:
        RuntimeError: ``redis-cli`` failed or took longer than
            :data:`REDIS_CLUSTER_FORM_TIMEOUT` seconds (the message carries its output's tail).
    """
    command = [
        *nodes[0].wrap,
        redis_cli,
        "--cluster", "create",
        *(f"{node.host}:{node.port}" for node in nodes),
        "--cluster-replicas", str(replicas),
        "--cluster-yes",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=REDIS_CLUSTER_FORM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(
                f"redis-cli --cluster create took longer than {REDIS_CLUSTER_FORM_TIMEOUT:.0f} s; "
                f"its output ({log_path}) ends with:\n{_tail(log_path)}"
            ) from error
    if result.returncode != 0:
        raise RuntimeError(
            f"redis-cli --cluster create failed with exit code {result.returncode}; "
            f"its output ({log_path}) ends with:\n{_tail(log_path)}"
        )


def _stop_nodes(nodes: Sequence[ClusterNode]) -> None:
    """Sends SIGTERM to every running node at once, then waits for each (see :func:`_stop`)."""
    for node in nodes:
        if node.alive():
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        _stop(node.process)


@contextlib.contextmanager
def redis_cluster(
    workdir: pathlib.Path,
    *,
    masters: int = 3,
    replicas: int = 1,
    host: str = LOCALHOST,
    wrap: Sequence[str] = (),
    node_timeout_ms: int = 1000,
) -> Iterator[RedisClusterHandle]:
    """Runs a Redis Cluster of ``masters × (1 + replicas)`` nodes, without persistence.

    Each node is a ``redis-server`` on a port from :data:`CLUSTER_PORTS` (bus port
    +10000) with ``cluster-require-full-coverage no`` (the covered slots keep
    serving while others are down), ``cluster-replica-validity-factor 0`` (a
    replica always stands for election, however long it was cut off) and
    ``repl-diskless-sync-delay 0`` (a replica's full sync starts at once, not after
    the default 5 s wait for more replicas). The
    cluster is formed with ``redis-cli --cluster create`` and is yielded once
    healthy (see :meth:`RedisClusterHandle.wait_ok`). In ``workdir``: each node's
    ``nodes-PORT.conf``, directory ``PORT/`` and output ``redis-PORT.log``, and
    ``redis-cluster-create.log``; all are left in place.

    Args:
        workdir: An existing directory for the nodes' files.
        masters: Masters (and shards); at least 3.
        replicas: Replicas per master.
        host: The address every node binds.
        wrap: Argv prefix put before every command (see the module docstring).
        node_timeout_ms: ``cluster-node-timeout`` in milliseconds: how long a node
            may be unreachable before it is flagged failing; a failover takes about
            two of these.

    Yields:
        The handle; its ``url`` is ``redis+cluster://`` and the masters' addresses.

    Raises:
        ValueError: Fewer than 3 masters or a negative number of replicas.
        RuntimeError: ``redis-server`` or ``redis-cli`` is not on PATH, a node died
            or did not answer, or the cluster did not form and become healthy within
            :data:`REDIS_CLUSTER_FORM_TIMEOUT` seconds (the message says what was
            missing and carries the tails of the logs).
    """
    if masters < 3:
        raise ValueError(f"a Redis Cluster needs at least 3 masters, not {masters}")
    if replicas < 0:
        raise ValueError(f"replicas must be 0 or more, not {replicas}")
    executable = _redis_executable("redis-server")
    redis_cli = _redis_executable("redis-cli")
    workdir = workdir.resolve()
    wrap = tuple(wrap)
    nodes: list[ClusterNode] = []
    taken: set[int] = set()
    try:
        for _ in range(masters * (1 + replicas)):
            nodes.append(
                _retry_on_port_conflict(
                    lambda: _start_cluster_node(
                        executable, workdir, host, wrap, node_timeout_ms, taken
                    ),
                    f"Redis Cluster node (see {workdir})",
                )
            )
        _create_cluster(redis_cli, nodes, replicas, _new_log(workdir, "redis-cluster-create"))
        cluster = RedisClusterHandle(nodes)
        cluster.wait_ok(REDIS_CLUSTER_FORM_TIMEOUT)
        formed = cluster.masters()
        if len(formed) != masters:
            raise RuntimeError(
                f"redis-cli --cluster create made {len(formed)} masters, not {masters} "
                f"(see {workdir})"
            )
        cluster.url = "redis+cluster://" + ",".join(node.address for node in formed)
        yield cluster
    finally:
        _stop_nodes(nodes)


@contextlib.contextmanager
def redis_cluster_service(workdir: pathlib.Path) -> Iterator[str]:
    """Runs :func:`redis_cluster` with its defaults and yields only its URL.

    The shape of the other services, for the session fixture and the command line.

    Args:
        workdir: An existing directory for the nodes' files.

    Yields:
        ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3``.

    Raises:
        RuntimeError: As :func:`redis_cluster`.
    """
    with redis_cluster(workdir) as cluster:
        yield cluster.url


# --------------------------------------------------------------------------- command line

SERVICES: dict[str, Callable[[pathlib.Path], contextlib.AbstractContextManager[str]]] = {
    "neo4j": neo4j_server,
    "redis": redis_server,
    "redis-cluster": redis_cluster_service,
}
"""The services :func:`main` runs, by name."""


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
    parser.add_argument("service", choices=list(SERVICES))
    parser.add_argument(
        "--workdir",
        type=pathlib.Path,
        help="directory for the service's files (default: a temporary one, removed at the end)",
    )
    args = parser.parse_args(argv)
    service = SERVICES[args.service]

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
