"""One ``starling serve`` process for a benchmark: started on a free port, waited for until
``/health`` answers 200, stopped gracefully (SIGINT, then killed after a timeout)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from bench.realtime import free_port, starling_command


@contextlib.contextmanager
def serve_process(
    options: Sequence[str],
    *,
    data_dir: Path,
    log: Path,
    secret: str,
    start_timeout: float,
    stop_timeout: float,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``starling serve --port <free> --data-dir data_dir *options``, its output in ``log``,
    without the caller's ``STARLING_*`` variables but ``STARLING_SECRET=secret``; yields
    the process and its base URL (``http://127.0.0.1:PORT``) once ``/health`` answers.

    Raises:
        RuntimeError: it exited or did not answer within ``start_timeout`` seconds (the
            message ends with the log's tail).
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARLING_")}
    env["STARLING_SECRET"] = secret
    command = [*starling_command(), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with log.open("wb") as out:
        process = subprocess.Popen([*command, *options], stdout=out, stderr=out, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while not healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"starling serve did not start:\n{log_tail(log)}")
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def healthy(url: str) -> bool:
    """Whether ``url``'s ``/health`` answers 200 within 2 s."""
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def log_tail(log: Path) -> str:
    """The last 3,000 characters of ``log``."""
    return log.read_text(errors="replace")[-3000:]
