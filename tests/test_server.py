"""The server end to end: real hypercorn, real HTTP, the embedded Ladybug graph."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from click.testing import CliRunner

from actors.social import GraphReader
from cli import main
from datasets.importers import import_edge_list, read_edge_list
from server import limit_malloc_arenas, serve
from settings import ServeOptions, Settings
from stores.backends import default_graph_url
from supervisor import Supervisor

EDGES = "source target\na b\na c\nb c\nc a\nd a\n"


@dataclass
class Running:
    root: Supervisor
    url: str
    client: httpx.AsyncClient

    async def rpc(self, method: str, params: Any = None, id: Any = 1) -> Any:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            body["params"] = params
        response = await self.client.post("/rpc", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def reader(self, index: int) -> GraphReader:
        (social,) = [handle for id, handle in self.root.which_children() if id == "social"]
        return social._children[index].handle._actor  # type: ignore[no-any-return]


def settings_for(directory: Path, **overrides: Any) -> Settings:
    return Settings(
        data_dir=directory,
        graph_url=default_graph_url(directory),
        redis_url="memory://",
        **overrides,
    )


async def start(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[Running]:
    root: Supervisor = await nursery.start(serve, settings, ServeOptions(port=0, readers=2))
    (api,) = [child for child in root.statistics().children if child.id == "api"]
    url = api.detail.binds[0]
    async with httpx.AsyncClient(base_url=url) as client:
        yield Running(root, url, client)
    root.request_stop()


async def load(directory: Path, text: str) -> None:
    (directory / "edges.txt").write_text(text)
    graph = await settings_for(directory).open_graph()
    try:
        await import_edge_list(graph, read_edge_list(directory / "edges.txt"))
    finally:
        await graph.aclose()


@pytest.fixture
async def server(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Running]:
    await load(tmp_path, EDGES)
    async for running in start(nursery, settings_for(tmp_path)):
        yield running


async def test_health_shows_the_tree(server: Running) -> None:
    """GET /health answers 200 with the supervision tree and every subtree running."""
    response = await server.client.get("/health")
    assert response.status_code == 200
    tree = response.json()
    assert tree["status"] == "ok"
    assert [child["id"] for child in tree["children"]] == [
        "stores", "social", "feeds", "realtime", "api", "dashboard"
    ]  # fmt: skip
    social = tree["children"][1]
    assert [child["id"] for child in social["children"]] == [
        "graph_reader-0", "graph_reader-1", "graph_writer"
    ]  # fmt: skip
    assert social["children"][0]["mailbox_size"] == 32


async def test_counts_and_following(server: Running) -> None:
    """social.counts and social.following answer from the graph; unknown users get -32004."""
    reply = await server.rpc("social.counts", {"user": "a"})
    assert reply["result"] == {"following": 2, "followers": 2}
    reply = await server.rpc("social.following", {"user": "a"})
    assert reply["result"] == {"users": ["b", "c"], "next_cursor": None}
    reply = await server.rpc("social.counts", {"user": "zed"})
    assert reply["error"]["code"] == -32004
    assert reply["error"]["data"]["id"] == "zed"
    reply = await server.rpc("social.following", {"user": "zed"})
    assert reply["error"]["code"] == -32004


async def test_following_pages_are_complete(server: Running) -> None:
    """Paging with limit=1 walks every followed user once, then next_cursor is null."""
    users, cursor = [], None
    while True:
        page = await server.rpc("social.following", {"user": "a", "limit": 1, "cursor": cursor})
        users += page["result"]["users"]
        cursor = page["result"]["next_cursor"]
        if cursor is None:
            break
    assert users == ["b", "c"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", -32700),
        (b"[]", -32600),
        (b'"just a string"', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "social.nope"}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "social.counts", "params": {}}', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "social.counts", "params": {"user": 7}}', -32602),
        (b'{"jsonrpc":"2.0","id":1,"method":"social.counts","params":{"user":"bad id!"}}', -32602),
        (b'{"jsonrpc":"2.0","id":1,"method":"social.following",'
         b'"params":{"user":"a","limit":0}}', -32602),
        (b'{"jsonrpc":"2.0","id":1,"method":"social.following",'
         b'"params":{"user":"a","cursor":"!!"}}', -32602),
    ],
)  # fmt: skip
async def test_bad_input_gets_the_right_error(server: Running, body: bytes, code: int) -> None:
    """Malformed JSON, non-requests, unknown methods and bad params each get their error code."""
    response = await server.client.post("/rpc", content=body)
    assert response.status_code == 200
    assert response.json()["error"]["code"] == code
    assert (await server.client.get("/health")).json()["status"] == "ok"


async def test_body_over_the_limit_is_refused(server: Running) -> None:
    """A body over --max-body-bytes gets HTTP 413 with a JSON-RPC error, and nothing crashes."""
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"system.health","params":{"pad":"'
        + b"x" * (2 << 20)
        + b'"}}'
    )
    response = await server.client.post("/rpc", content=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == -32600
    assert (await server.rpc("system.stats"))["result"]["actors"]


async def test_notification_gets_204(server: Running) -> None:
    """A notification is executed and answered with an empty 204."""
    body = {"jsonrpc": "2.0", "method": "social.counts", "params": {"user": "a"}}
    response = await server.client.post("/rpc", json=body)
    assert response.status_code == 204
    assert response.content == b""


async def test_batch_over_http(server: Running) -> None:
    """A batch gets one reply per request, in order."""
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "social.counts", "params": {"user": "d"}},
        {"jsonrpc": "2.0", "id": 2, "method": "social.counts", "params": {"user": "x"}},
    ]
    replies = (await server.client.post("/rpc", json=batch)).json()
    assert replies[0]["result"] == {"following": 1, "followers": 0}
    assert replies[1]["error"]["code"] == -32004


async def test_wrong_http_method(server: Running) -> None:
    """GET /rpc is 405, an unknown path 404."""
    assert (await server.client.get("/rpc")).status_code == 405
    assert (await server.client.get("/nowhere")).status_code == 404


async def test_crashed_reader_is_restarted_and_counted(server: Running) -> None:
    """A graph reader that crashes is restarted, and the restart shows in /health and /metrics."""
    reader = server.reader(0)
    await reader.ref.send(object())  # a message no reader understands: a bug, so a crash
    with trio.fail_after(5):
        # Polls /health as an operator would: the restart (after a real backoff
        # delay) has no event an outside observer could wait on.
        while True:
            tree = (await server.client.get("/health")).json()
            node = tree["children"][1]["children"][0]
            if node["restarts_total"] == 1 and node["state"] == "running":
                break
            await trio.sleep(0.01)
    assert node["state"] == "running"
    assert node["last_error"]["type"] == "TypeError"
    assert tree["children"][1]["restarts_in_window"] == 1
    metrics = (await server.client.get("/metrics")).text
    assert 'starling_child_restarts_total{path="root/social/graph_reader-0"} 1.0' in metrics
    assert (await server.rpc("social.counts", {"user": "a"}))["result"]["following"] == 2


async def test_metrics_count_calls_by_method(server: Running) -> None:
    """/metrics counts RPC calls by method and outcome and exposes mailbox gauges."""
    await server.rpc("social.counts", {"user": "a"})
    await server.rpc("social.counts", {"user": "nobody"})
    text = (await server.client.get("/metrics")).text
    assert 'starling_rpc_calls_total{method="social.counts",outcome="ok"} 1.0' in text
    assert 'starling_rpc_calls_total{method="social.counts",outcome="app_error"} 1.0' in text
    assert 'starling_mailbox_used{path="root/social/graph_reader-1"}' in text
    assert "starling_healthy 1.0" in text


async def test_api_key_is_required_when_set(tmp_path: Path, nursery: trio.Nursery) -> None:
    """With STARLING_API_KEY set, /rpc needs the bearer key: none or a wrong one gets 401."""
    await load(tmp_path, EDGES)
    async for running in start(nursery, settings_for(tmp_path, api_key="s3cret")):
        body = {"jsonrpc": "2.0", "id": 1, "method": "system.stats"}
        assert (await running.client.post("/rpc", json=body)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await running.client.post("/rpc", json=body, headers=wrong)).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert (await running.client.post("/rpc", json=body, headers=right)).status_code == 200


async def test_without_a_key_only_loopback_clients_are_served(tmp_path: Path) -> None:
    """Without an API key, a client that is not on loopback gets 403."""
    from protocols.app import create_app
    from protocols.methods import Services

    root = Supervisor("root")
    reader = GraphReader("graph_reader-0", None)  # type: ignore[arg-type]
    app = create_app(Services(tree=root.statistics, social=reader.ref))
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://starling") as client:
        response = await client.post("/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "x"})
    assert response.status_code == 403
    assert "loopback" in response.json()["error"]["data"]["detail"]


def independent_counts(path: Path) -> tuple[Counter[str], Counter[str], dict[str, set[str]]]:
    """Following/follower counts and followed sets straight from the file."""
    following: Counter[str] = Counter()
    followers: Counter[str] = Counter()
    followed: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        source, target = line.split()
        if source != target and target not in followed.setdefault(source, set()):
            followed[source].add(target)
            following[source] += 1
            followers[target] += 1
    return following, followers, followed


@pytest.mark.slow
async def test_real_slashdot_graph_over_rpc(
    slashdot_dir: Path, data_dir: Path, nursery: trio.Nursery
) -> None:
    """On SNAP Slashdot, sampled users' counts and complete following lists match the file."""
    following, followers, followed = independent_counts(data_dir / "soc-Slashdot0902.txt")
    users = sorted(set(following) | set(followers), key=int)
    sample = [*random.Random(42).sample(users, 40), "0", max(following, key=following.__getitem__)]
    async for running in start(nursery, settings_for(slashdot_dir)):
        for user in sample:
            reply = await running.rpc("social.counts", {"user": user})
            assert reply["result"] == {"following": following[user], "followers": followers[user]}
            pages, cursor = [], None
            while True:
                params = {"user": user, "limit": 100, "cursor": cursor}
                result = (await running.rpc("social.following", params))["result"]
                pages += result["users"]
                if (cursor := result["next_cursor"]) is None:
                    break
            assert pages == sorted(followed.get(user, set()))


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    """`starling serve` exits 0 on SIGTERM after stopping its tree."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--data-dir", str(tmp_path), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STARLING_API_KEY": ""},
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "starling is serving" in line:
            break
    process.send_signal(signal.SIGTERM)
    remaining = process.communicate(timeout=30)[1]
    assert process.returncode == 0, "".join(lines) + remaining
    events = [json.loads(line)["event"] for line in remaining.splitlines() if line.startswith("{")]
    assert events[-2:] == ["stopping", "stopped"]


def test_dead_backend_is_one_clear_line(tmp_path: Path) -> None:
    """A Neo4j URL where nothing listens makes `serve` exit 1 with one error line, no traceback."""
    process = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--data-dir", str(tmp_path),
         "--graph-url", "bolt://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert process.returncode == 1
    assert "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines()[-1].startswith("error: ")


async def test_feed_over_http_with_its_metrics(server: Running) -> None:
    """A published post reaches a follower's feed.get over HTTP; /metrics counts the ranking."""
    reply = await server.rpc(
        "posts.publish", {"author": "b", "post": {"id": "hello", "title": "Hello"}}
    )
    assert reply["result"]["post"] == "hello"
    # The published event reaches the story index asynchronously, through a real
    # server's tasks and threads; no event is observable from here, so poll briefly.
    for _ in range(100):
        reply = await server.rpc("feed.get", {"user": "a", "limit": 5})
        if reply["result"]["items"]:
            break
        await server.rpc("feed.invalidate", {"user": "a"})
        await trio.sleep(0.01)
    result = reply["result"]
    assert [item["post"] for item in result["items"]] == ["hello"]
    assert "followed author" in result["items"][0]["reasons"]
    assert result["next_cursor"] is None
    reply = await server.rpc("feed.get", {"user": "nobody"})
    assert reply["error"]["code"] == -32004
    text = (await server.client.get("/metrics")).text
    assert 'starling_feed_builds_total{outcome="ok"}' in text
    assert "starling_feed_builders_live 1.0" in text
    tree = (await server.client.get("/health")).json()
    feeds = tree["children"][2]
    assert [child["id"] for child in feeds["children"]] == [
        "story_index", "feed_builders", "feed_registry", "feed_events"
    ]  # fmt: skip


def test_loading_into_a_directory_a_server_holds_names_that_server(tmp_path: Path) -> None:
    """`starling load graph` into the data directory of a running `starling serve` exits 1
    with one line naming the server's process and the ways out, not "is the backend running"."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--data-dir", str(tmp_path), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STARLING_API_KEY": ""},
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:
            if "starling is serving" in line:
                break
        edges = tmp_path / "edges.txt"
        edges.write_text("1 2\n")
        loaded = subprocess.run(
            [sys.executable, "-m", "cli", "load", "graph", str(edges), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert loaded.returncode == 1
    last = loaded.stderr.strip().splitlines()[-1]
    assert f"the data directory is held by process {process.pid}" in last
    assert "cli serve --data-dir" in last
    assert "is the backend running" not in last


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_arenas_are_limited_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """glibc takes the arena limit (mallopt answers 1); an operator's ``MALLOC_ARENA_MAX``
    wins, and the process's malloc is left as glibc set it from the environment."""
    assert limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False


def test_a_negative_reorder_wait_is_a_usage_error(runner: CliRunner) -> None:
    """``starling serve --reorder-wait -1`` stops before serving, exit code 2, naming it."""
    result = runner.invoke(main, ["serve", "--reorder-wait", "-1"])
    assert result.exit_code == 2
    assert "reorder_wait must be >= 0" in result.output
