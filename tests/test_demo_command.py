"""``starling demo`` as a newcomer runs it: a real process on the real data, and what it
prints pasted into a shell.

The command builds the demo world (about 20 s), serves it, replays the Reddit threads and
prints a dashboard URL, a token, three curl calls and a tail command. This test runs each
printed command as printed (through ``sh``), checks every curl answers a JSON-RPC result, the
tail prints live comments of the thread, the pages load, and Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.services import free_port

pytestmark = pytest.mark.slow

STARTUP = 180.0
"""Seconds the demo may take to build its world and start (20-30 s here)."""


def test_the_demo_prints_commands_that_work_when_pasted(tmp_path: Path, data_dir: Path) -> None:
    """Every printed curl answers a result, the printed tail shows the thread's comments when
    pasted into a shell whose PATH lacks the virtualenv, the printed dashboard and demo URLs
    serve those pages (their titles and scripts), the demo page opens on the tailed thread and
    posts.get answers it (a real post), and SIGINT stops the demo cleanly."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    path = ":".join(p for p in os.environ.get("PATH", "").split(":") if p != bin_dir)
    env = os.environ | {"PATH": path, "COLUMNS": "400"}
    stderr = (tmp_path / "demo.err").open("w+")
    demo = subprocess.Popen(
        [sys.executable, "-c", "from cli import main; main()", "demo",
         "--data-dir", str(tmp_path / "data"), "--source", str(data_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP
        text = ""
        while " tail post:" not in text:
            assert demo.poll() is None, f"the demo exited: {text[-2000:]}"
            assert time.monotonic() < deadline, f"the demo did not start: {text[-2000:]}"
            time.sleep(0.5)
            text = (tmp_path / "demo.err").read_text()
        lines = [line.strip() for line in text.splitlines()]
        curls = [line for line in lines if line.startswith("curl ")]
        assert len(curls) == 3
        for command in curls:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
            reply = json.loads(done.stdout)
            assert "result" in reply, (command, reply)
        (tail,) = [line for line in lines if " tail post:" in line]
        assert tail.split()[0] != "starling"  # not on this shell's PATH: the script's path
        tail += f" --limit 2 --data-dir {tmp_path / 'data'}"
        done = subprocess.run(
            tail, shell=True, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        published = [json.loads(line) for line in done.stdout.splitlines()]
        thread = re.search(r"post:(\S+)", tail)
        assert thread is not None
        assert [p["data"]["type"] for p in published] == ["comment", "comment"]
        assert {p["channel"] for p in published} == {f"post:{thread.group(1)}"}
        (page,) = [line.split()[-1] for line in lines if line.startswith("demo page")]
        (dashboard,) = [line.split()[-1] for line in lines if line.startswith("dashboard")]
        for url, title, script in (
            (page, "Starling — demo", "demo.js"),
            (dashboard, "Starling — operator dashboard", "dashboard.js"),
        ):
            response = httpx.get(url, timeout=10)
            assert response.status_code == 200, url
            assert f"<title>{title}</title>" in response.text, url
            assert f'<script src="/static/{script}"></script>' in response.text, url
        assert page.endswith(f"&post={thread.group(1)}"), page
        body = {"jsonrpc": "2.0", "id": 1, "method": "posts.get", "params": {"post": "1rt3kyh"}}
        post = httpx.post(page.split("/demo")[0] + "/rpc", json=body, timeout=10).json()
        assert post["result"]["title"] == "I'm an Australian Wholesale Fuel Trader - AMA", post
        token = next(line.split()[-1] for line in lines if line.startswith("token"))
        assert token.count(".") == 2
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            code = demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
        stderr.close()
    assert code == 0


def test_the_demo_survives_restarts_of_the_listener_and_the_whole_tree(
    tmp_path: Path, data_dir: Path
) -> None:
    """``system.restart`` of ``api``, then of the root, is answered; the demo process keeps
    serving on its port, its replay keeps publishing (the printed tail reads comments after
    the restarts), and SIGINT still stops it cleanly."""
    port = free_port()
    stderr = (tmp_path / "demo.err").open("w+")
    demo = subprocess.Popen(
        [sys.executable, "-c", "from cli import main; main()", "demo",
         "--data-dir", str(tmp_path / "data"), "--source", str(data_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP
        text = ""
        while " tail post:" not in text:
            assert demo.poll() is None, f"the demo exited: {text[-2000:]}"
            assert time.monotonic() < deadline, f"the demo did not start: {text[-2000:]}"
            time.sleep(0.5)
            text = (tmp_path / "demo.err").read_text()
        for restarts, path in enumerate(("api", "root"), 1):  # each restarts api once
            body = {"jsonrpc": "2.0", "id": 1, "method": "system.restart", "params": {"path": path}}
            reply = httpx.post(f"{url}/rpc", json=body, timeout=30).json()
            assert reply["result"]["scheduled"] is True, reply
            deadline = time.monotonic() + 60
            while True:  # the restart begins after the reply: wait for it to be over
                assert demo.poll() is None, (tmp_path / "demo.err").read_text()[-2000:]
                assert time.monotonic() < deadline, "the server did not come back"
                time.sleep(0.2)
                try:
                    health = httpx.get(f"{url}/health", timeout=5)
                except httpx.TransportError:
                    continue
                restarted = json.loads(health.text)
                api = next(child for child in restarted["children"] if child["id"] == "api")
                if health.status_code == 200 and api["restarts_total"] == restarts:
                    break
        (tail,) = [line.strip() for line in text.splitlines() if " tail post:" in line]
        done = subprocess.run(
            f"{tail} --limit 2 --data-dir {tmp_path / 'data'}",
            shell=True, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        published = [json.loads(line) for line in done.stdout.splitlines()]
        assert [p["data"]["type"] for p in published] == ["comment", "comment"]
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            code = demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
        stderr.close()
    assert code == 0
