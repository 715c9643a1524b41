"""The host harness (tests/hosts.py): namespaces that reach each other only by address, a
host kill that ends its processes and no one else's, and nothing left behind.

Each test makes its own :class:`~tests.hosts.Network` (about half a second) and runs
small Python programs on its hosts; together they take a few seconds. They need root
and ``ip``: skipped otherwise, failed with ``CI=true``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hosts import PREFIX, Host, Network, _namespaces, _root_links, require_namespaces
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]

LISTEN = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    connection, peer = server.accept()
    connection.sendall(peer[0].encode())
    connection.close()
"""
"""Listens on ADDRESS PORT; tells each client the address it came from."""

CONNECT = """
import socket, sys
try:
    address, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with socket.create_connection((address, port), timeout=timeout) as connection:
        print("peer", connection.recv(100).decode())
except OSError as error:
    print("error", type(error).__name__)
"""
"""Connects to ADDRESS PORT within TIMEOUT seconds; prints what the listener said, or the error."""


@pytest.fixture(autouse=True)
def _namespaces_possible() -> None:
    require_namespaces()


def _listen(host: Host, address: str, port: int) -> subprocess.Popen[bytes]:
    process = host.spawn([sys.executable, "-c", LISTEN, address, str(port)], stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"listening\n"
    return process


def _connect(wrap: tuple[str, ...], address: str, port: int, timeout: float = 5.0) -> str:
    command = [*wrap, sys.executable, "-c", CONNECT, address, str(port), str(timeout)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def _run_is_gone(run: str) -> bool:
    names = [*_namespaces(), *_root_links()]
    return not [name for name in names if name.startswith(f"{PREFIX}{run}")]


def test_two_hosts_reach_each_other_by_address_and_not_over_loopback() -> None:
    """A listener on host a's address is reached from host b (which it sees come from b's own address) and from the test process, while a listener on a's loopback is refused to b, whose loopback is its own."""  # noqa: E501
    port = free_port()
    with Network() as network:
        a, b = network.host("a"), network.host("b")
        assert a.address != b.address
        _listen(a, a.address, port)
        _listen(a, "127.0.0.1", port + 1)
        assert _connect(b.wrap, a.address, port) == f"peer {b.address}"
        assert _connect((), a.address, port) == f"peer {network.address}"
        assert _connect(b.wrap, "127.0.0.1", port + 1) == "error ConnectionRefusedError"
        assert _connect(a.wrap, "127.0.0.1", port + 1) == "peer 127.0.0.1"


def test_a_cut_host_is_silent_until_restored() -> None:
    """After ``Host.cut`` a connection to the host's listener from another host gets no answer at all (it times out, nothing is refused), and after ``Host.restore`` it is answered again."""  # noqa: E501
    port = free_port()
    with Network() as network:
        a, b = network.host("a"), network.host("b")
        _listen(a, a.address, port)
        assert _connect(b.wrap, a.address, port) == f"peer {b.address}"
        a.cut()
        assert _connect(b.wrap, a.address, port, timeout=1.0) == "error TimeoutError"
        a.restore()
        assert _connect(b.wrap, a.address, port) == f"peer {b.address}"


def test_kill_ends_every_process_of_a_host_and_nothing_else(tmp_path: Path) -> None:
    """``Host.kill`` SIGKILLs every process in the host's namespace, its children and a detached grandchild too, while a process on another host and one of the test's own keep running."""  # noqa: E501
    family = "sleep 300 & setsid sleep 300 & wait"
    with Network() as network:
        a, b = network.host("a"), network.host("b")
        parent = a.spawn(["sh", "-c", family], log_path=tmp_path / "a.log")
        alone = a.spawn(["sleep", "300"])
        other = b.spawn(["sleep", "300"])
        own = subprocess.Popen(["sleep", "300"])
        try:
            deadline = time.monotonic() + 10
            while len(a.pids()) < 4 and time.monotonic() < deadline:  # sh, its 2 sleeps, 1 alone
                time.sleep(0.01)
            on_a = a.pids()
            killed = a.kill()
            assert set(on_a) <= set(killed)
            assert a.pids() == []
            assert parent.returncode == alone.returncode == -signal.SIGKILL
            assert other.poll() is None
            assert own.poll() is None
            assert b.pids() == [other.pid]
        finally:
            own.kill()
            own.wait()


def test_leaving_a_network_removes_every_namespace_link_and_bridge_it_made() -> None:
    """After a ``Network`` block ends, by an exception here, with processes still running on its hosts, none of its namespaces (the switch with its bridge, the hosts) and not its link in the root namespace remain."""  # noqa: E501
    with pytest.raises(RuntimeError, match="the test failed"), Network() as network:  # noqa: PT012
        a = network.host("a")
        network.host("b")
        a.spawn(["sleep", "300"])
        assert len(network.namespaces()) == 3
        assert f"{PREFIX}{network.run}" in _root_links()
        raise RuntimeError("the test failed")
    assert _run_is_gone(network.run)


def _abandon(how: str) -> str:
    """Run a process that makes a network with a host running a sleep, then ends by
    ``how`` (``kill``: SIGKILL, no clean-up at all; ``exit``: returns without leaving the
    network); the network's run id."""
    script = f"""
import os, signal
from pathlib import Path
from tests.hosts import Network
network = Network().__enter__()
network.host("a").spawn(["sleep", "300"], log_path=Path(os.devnull))
print(network.run, flush=True)
if {how!r} == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout, done.stderr
    return done.stdout.split()[0]


def test_a_run_killed_outright_is_swept_by_the_next_network() -> None:
    """A test process killed with SIGKILL inside a ``Network`` leaves its namespaces (and a process on its host), and the next ``Network`` removes them all, by their prefix and dead owner."""  # noqa: E501
    run = _abandon("kill")
    assert not _run_is_gone(run)
    with Network():
        assert _run_is_gone(run)


def test_an_interpreter_exiting_inside_a_network_removes_it() -> None:
    """A process that exits without leaving its ``Network`` block leaves nothing behind (the atexit hook)."""  # noqa: E501
    assert _run_is_gone(_abandon("exit"))
