"""Hosts for tests: Linux network namespaces on one bridge, which a test creates and removes.

A :class:`Network` is a switch: a namespace of its own holding a bridge, a
``/24`` of 198.18.0.0/15 (RFC 2544, reserved for benchmarking networks, routed
nowhere), and a port for the test process itself (an address in the root
namespace, :attr:`Network.address`), so that the test can reach every host.
:meth:`Network.host` plugs in a :class:`Host`: a namespace with ``lo`` up and a
veth to the bridge carrying the host's own address. A process started on a host
(:meth:`Host.spawn`, or any command prefixed with :attr:`Host.wrap`) sees only
that host's interfaces: its ``127.0.0.1`` is its own, and other hosts reach it by
its address only::

    with Network() as network:
        redis, a, b = network.host("redis"), network.host("a"), network.host("b")
        server = a.spawn(["python", "-m", "http.server", "--bind", a.address, "8000"])
        ...
        a.kill()        # SIGKILL every process in a's namespace: the host died
        b.cut()         # b's cable pulled: nothing reaches it, nothing is refused
        b.restore()

Removal. Leaving the ``with`` block (normally or by an exception) kills every
process left on the hosts and deletes every namespace and link the network made;
an :mod:`atexit` hook does the same when the interpreter exits without leaving it.
A run killed outright (SIGKILL) leaves its namespaces behind: every name starts
with :data:`PREFIX` and the hex pid of the process that made it, and the next
:class:`Network` removes those whose process is gone (never another live run's).

Names. A run's id is ``<pid:06x><4 random hex>``; its namespaces are
``sth<id>-<role>`` (``switch``, or the host's name) and its one link in the root
namespace is ``sth<id>`` (13 characters; an interface name has 15 at most). The
links inside a run's namespaces need no unique names (``eth0`` on each host,
``br0``, ``uplink`` and ``p<N>`` on the switch).

Needs root and iproute2's ``ip``: :func:`require_namespaces` skips the test with
the reason otherwise, or fails it with ``CI=true``. Only the standard library and
pytest. Not a test module: the host tests import it from here.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["PREFIX", "SPACE", "Host", "Network", "require_namespaces"]

PREFIX = "sth"
"""Starts every namespace and root link name a :class:`Network` makes ("starling test host")."""
SPACE = ipaddress.IPv4Network("198.18.0.0/15")
"""Where each network's ``/24`` is drawn from (RFC 2544, section C.2.2)."""
NETNS_DIR = Path("/run/netns")
"""Where ``ip netns add`` mounts the named namespaces."""
KILL_WITHIN = 10.0
"""Seconds :meth:`Host.kill` may take until no process is left in the namespace."""
REAP_WITHIN = 10.0
"""Seconds a spawned process may take to be reaped after its host was killed."""

_NAME = re.compile(r"[a-z][a-z0-9]{0,15}")
_RUN = re.compile(rf"{PREFIX}(?P<pid>[0-9a-f]{{6}})[0-9a-f]{{4}}(?:-[a-z0-9]+)?")


@functools.cache
def _unusable() -> str | None:
    """Why namespaces cannot be made here, or ``None`` (tried once: a namespace made and
    deleted)."""
    if shutil.which("ip") is None:
        return "iproute2's 'ip' is not on PATH (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    probe = f"{PREFIX}{os.getpid():06x}{secrets.token_hex(2)}-probe"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "delete", probe)
    except RuntimeError as error:
        return str(error)
    return None


def require_namespaces() -> None:
    """Skip the calling test (fail it with ``CI=true``) unless namespaces can be made here.

    Raises:
        pytest.skip.Exception, pytest.fail.Exception: not root, no ``ip``, or
            ``ip netns add`` fails (a container without ``CAP_SYS_ADMIN``).
    """
    import pytest

    from tests.conftest import _in_ci  # the suite's one CI rule

    reason = _unusable()
    if reason is None:
        return
    if _in_ci():
        pytest.fail(f"CI=true and host tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"host tests need Linux network namespaces: {reason}")


def _ip(*args: str) -> str:
    """Run ``ip ARGS``; its stdout.

    Raises:
        RuntimeError: ``ip`` failed (the message carries its stderr).
    """
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _pids_in(namespace: str) -> list[int]:
    """The processes whose network namespace is ``namespace`` (as ``ip netns pids``; zombies
    have left theirs and are not counted)."""
    try:
        wanted = os.stat(NETNS_DIR / namespace)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            found = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, or a zombie
        if (found.st_dev, found.st_ino) == (wanted.st_dev, wanted.st_ino):
            pids.append(int(entry))
    return pids


def _kill_all(namespace: str, within: float = KILL_WITHIN) -> list[int]:
    """SIGKILL every process in ``namespace`` until none is left; the pids killed.

    Raises:
        RuntimeError: processes were still there after ``within`` seconds.
    """
    killed: list[int] = []
    deadline = time.monotonic() + within
    while pids := _pids_in(namespace):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if pid not in killed:
                killed.append(pid)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes left in namespace {namespace} after SIGKILL: {pids}")
        time.sleep(0.005)
    return killed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_gone(name: str) -> bool:
    """Whether ``name`` is a :class:`Network`'s namespace or link whose process is gone."""
    match = _RUN.fullmatch(name)
    return match is not None and not _alive(int(match["pid"], 16))


def _namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _root_links() -> list[str]:
    """The names of the root namespace's links (``ip -o link`` prints ``N: name@peer: …``)."""
    return [line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link").splitlines()]


def _delete_namespace(name: str) -> None:
    _kill_all(name)
    with contextlib.suppress(RuntimeError):  # gone meanwhile
        _ip("netns", "delete", name)


def sweep_leftovers() -> list[str]:
    """Remove the namespaces and root links of runs whose process is gone (module docstring).

    Returns:
        What was removed.
    """
    removed = []
    for name in _namespaces():
        if _owner_gone(name):
            _delete_namespace(name)
            removed.append(name)
    for name in _root_links():
        if _owner_gone(name):
            with contextlib.suppress(RuntimeError):  # went with its switch namespace
                _ip("link", "delete", name)
                removed.append(name)
    return removed


def _pick_subnet() -> ipaddress.IPv4Network:
    """A random ``/24`` of :data:`SPACE` that no address of the root namespace is in."""
    used: list[ipaddress.IPv4Network] = []
    for line in _ip("-o", "-4", "addr").splitlines():
        fields = line.split()
        if "inet" in fields:
            used.append(ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).network)
    candidates = list(SPACE.subnets(new_prefix=24))
    random.shuffle(candidates)
    for candidate in candidates:
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise RuntimeError(f"every /24 of {SPACE} is in use in the root namespace")


class Host:
    """One host: a network namespace plugged into a :class:`Network`'s bridge.

    Made by :meth:`Network.host`, never directly.

    Attributes:
        name: its name in the test (``a``, ``redis``, ``clients`` …).
        namespace: its namespace's name (``sth<id>-<name>``).
        address: its IPv4 address on the network, as a string.
    """

    def __init__(self, network: Network, name: str, namespace: str, address: str, port: str):
        self.network = network
        self.name = name
        self.namespace = namespace
        self.address = address
        self._port = port  # its veth's end on the switch
        self._processes: list[subprocess.Popen[bytes]] = []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"

    @property
    def wrap(self) -> tuple[str, ...]:
        """The argv prefix that runs a command on this host: ``("ip", "netns", "exec", ns)``
        (``ip`` execs the command: its pid is the command's)."""
        return ("ip", "netns", "exec", self.namespace)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host.

        Args:
            env: its environment (this process's when ``None``).
            log_path: where its stdout and stderr go (appended); inherited when ``None``.
            stdin: as :class:`subprocess.Popen`'s (``/dev/null`` by default).
            stdout: as :class:`subprocess.Popen`'s, instead of ``log_path`` (stderr still
                goes there).
            cwd: its working directory (this process's when ``None``).

        Returns:
            The process; :meth:`kill` and the network's exit kill and reap it.
        """
        with contextlib.ExitStack() as stack:
            log = stack.enter_context(log_path.open("ab")) if log_path is not None else None
            process = subprocess.Popen(
                [*self.wrap, *argv],
                env=None if env is None else dict(env),
                stdin=stdin,
                stdout=stdout if stdout is not None else log,
                stderr=subprocess.STDOUT if stdout is None and log is not None else log,
                cwd=cwd,
            )
        self._processes.append(process)
        return process

    def pids(self) -> list[int]:
        """The processes running on this host now."""
        return _pids_in(self.namespace)

    def kill(self) -> list[int]:
        """The host dies: SIGKILL every process in its namespace, whoever started it, until
        none is left, and reap those :meth:`spawn` started. Its address and link stay, so
        connections to it are refused (its kernel answers RST), as a restarted machine's
        would be; :meth:`cut` first for a host that goes silent instead.

        Returns:
            The pids killed.

        Raises:
            RuntimeError: processes were still there after :data:`KILL_WITHIN` seconds.
        """
        killed = _kill_all(self.namespace)
        self._reap()
        return killed

    def cut(self) -> None:
        """Pull its cable: its switch port goes down, so nothing reaches it or leaves it, and
        nothing is refused (packets are dropped; ARP for it goes unanswered)."""
        _ip("-n", self.network.switch, "link", "set", "dev", self._port, "down")

    def restore(self) -> None:
        """Plug its cable back in (after :meth:`cut`)."""
        _ip("-n", self.network.switch, "link", "set", "dev", self._port, "up")

    def _reap(self) -> None:
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=REAP_WITHIN)
        self._processes = [process for process in self._processes if process.poll() is None]


class Network:
    """A bridge in a namespace of its own, the hosts on it, and a port for the test process.

    A context manager (module docstring): entering it checks that namespaces can be made
    (:func:`require_namespaces`), removes the leftovers of runs killed outright, and builds
    the switch; leaving it removes everything it made.

    Attributes:
        run: this network's id (``<pid:06x><4 hex>``).
        subnet: its ``/24``.
        switch: the switch namespace's name.
        address: the test process's own address on it (the subnet's ``.254``).
    """

    def __init__(self) -> None:
        self.run = f"{os.getpid():06x}{secrets.token_hex(2)}"
        self.switch = f"{PREFIX}{self.run}-switch"
        self.hosts: dict[str, Host] = {}
        self.subnet = ipaddress.IPv4Network("0.0.0.0/32")
        self.address = ""
        self._uplink = f"{PREFIX}{self.run}"
        self._lock = threading.Lock()
        self._made: list[str] = []  # namespaces, in the order made

    def __enter__(self) -> Network:
        require_namespaces()
        sweep_leftovers()
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _build(self) -> None:
        self.subnet = _pick_subnet()
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "dev", "br0", "up")
        uplink = ("link", "add", self._uplink, "type", "veth")
        _ip(*uplink, "peer", "name", "uplink", "netns", self.switch)
        _ip("-n", self.switch, "link", "set", "dev", "uplink", "master", "br0", "up")
        self.address = str(self.subnet[254])
        _ip("addr", "add", f"{self.address}/{self.subnet.prefixlen}", "dev", self._uplink)
        _ip("link", "set", "dev", self._uplink, "up")

    def host(self, name: str) -> Host:
        """A new host ``name`` on this network, with the next free address.

        Args:
            name: a short lower-case name (a letter, then letters or digits; 16 at most),
                unique in this network.

        Raises:
            ValueError: a bad or taken name, or the subnet is full (253 hosts).
            RuntimeError: ``ip`` failed.
        """
        if not _NAME.fullmatch(name) or name == "switch":
            raise ValueError(f"host name must match {_NAME.pattern} (not 'switch'): {name!r}")
        with self._lock:
            if name in self.hosts:
                raise ValueError(f"host {name!r} exists already")
            index = len(self.hosts) + 1
            if index >= 254:
                raise ValueError(f"{self.subnet} is full")
            namespace = f"{PREFIX}{self.run}-{name}"
            address = str(self.subnet[index])
            host = self.hosts[name] = Host(self, name, namespace, address, f"p{index}")
        _ip("netns", "add", namespace)
        self._made.append(namespace)
        _ip("-n", namespace, "link", "set", "dev", "lo", "up")
        _ip(
            "link", "add", "eth0", "netns", namespace, "type", "veth",
            "peer", "name", f"p{index}", "netns", self.switch,
        )  # fmt: skip
        _ip("-n", self.switch, "link", "set", "dev", f"p{index}", "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "dev", "eth0", "up")
        return host

    def namespaces(self) -> list[str]:
        """The namespaces of this network that exist now."""
        return [name for name in _namespaces() if name.startswith(f"{PREFIX}{self.run}-")]

    def close(self) -> None:
        """Kill every process on the hosts, then delete every namespace and link this network
        made (idempotent; also run at interpreter exit).

        Raises:
            RuntimeError: something could not be removed (the message lists it).
        """
        with self._lock:
            made, self._made = self._made, []
        atexit.unregister(self.close)
        failures = []
        for host in self.hosts.values():
            try:
                _kill_all(host.namespace)
            except RuntimeError as error:
                failures.append(str(error))
            host._reap()
        for name in reversed(made):  # the hosts, then the switch (its bridge and ports)
            try:
                _delete_namespace(name)
            except RuntimeError as error:
                failures.append(str(error))
        if self._uplink in _root_links():  # went with the switch, unless that failed
            try:
                _ip("link", "delete", self._uplink)
            except RuntimeError as error:
                failures.append(str(error))
        if failures:
            raise RuntimeError(f"network {self.run} not fully removed: {failures}")
