"""A private ``redis-server`` with the production persistence setting, which a test may restart.

``--appendonly yes --appendfsync everysec`` (docs/operations.md, "Redis
persistence"): every write is in the append-only file, flushed to disk once a
second. :meth:`AofRedis.stop` is a clean shutdown (SIGTERM: Redis flushes the
file and exits), :meth:`AofRedis.kill` a crash (SIGKILL: up to the last second of
writes may be lost); :meth:`AofRedis.start` brings it back on the same port with
the same files. The session's shared Redis (``tests/services.py``, no
persistence) is never stopped.

Not a test module: the reliability tests import it from here.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.services import free_port

__all__ = ["AofRedis"]

START = 30.0
"""Seconds Redis may take to answer PING (it replays its append-only file first)."""
STOP = 30.0
"""Seconds Redis may take to exit after SIGTERM."""


class AofRedis:
    """``redis-server`` on a fixed loopback port, its files and log in ``directory``.

    Args:
        directory: its ``--dir`` (the append-only files) and ``redis.log``.

    Raises:
        RuntimeError: ``redis-server`` is not on PATH.
    """

    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("'redis-server' is not on PATH (scripts/install-test-deps.sh)")
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port and files) and wait until it answers PING.

        Raises:
            RuntimeError: it exited, or did not answer within :data:`START` seconds.
        """
        command = [
            self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        with (self.directory / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=1.0, socket_timeout=1.0)
        deadline = time.monotonic() + START
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass  # not listening yet, or still loading its file
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.directory}/redis.log")
            time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): Redis writes what it has and exits."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def kill(self) -> None:
        """A crash (SIGKILL): writes of the last second may not be on disk."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
