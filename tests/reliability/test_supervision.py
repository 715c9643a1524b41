"""Supervision of every child of the running server: operators' restarts and injected faults.

Each test runs the whole server in this process (the embedded graph, the
in-memory stream, ``--fault-injection``) and, after each act, checks that it
serves: ``/health`` answers 200, a JSON-RPC read answers and a WebSocket
subscriber gets a publication (:meth:`Probe.serves`, each step retried within
a bound). Faults count against restart intensity like real ones, so each test
stays within the intensity of every supervisor it touches (the root allows 3
restarts in 30 s).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from client import websocket_url
from supervisor import leaked_tasks
from tests.in_process import serving
from tests.reliability.probe import BOUND, POLL, Probe
from tests.ws_client import Client


def nodes(node: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """``(path, node)`` of every node below ``node``, depth first."""
    found = []
    for child in node.get("children", []):
        path = f"{prefix}/{child['id']}" if prefix else child["id"]
        found.append((path, child))
        found += nodes(child, path)
    return found


async def static_paths(probe: Probe, kind: str | None = None) -> list[str]:
    """The paths of the permanent children (not the feed builders), of ``kind`` if given."""
    tree = await probe.result("system.health", {})
    return [
        path
        for path, node in nodes(tree)
        if node["restart"] == "permanent" and kind in (None, node["kind"])
    ]


def crashed_by_fault(before: int) -> Any:
    """A check of a node: restarted since ``before`` restarts, after an injected fault."""

    def check(node: dict[str, Any]) -> bool:
        error = node["last_error"] or {}
        return bool(node["restarts_total"] > before and error.get("type") == "InjectedFault")

    return check


async def read_all(ws: Any) -> None:
    """Read (and drop) frames for ever: until the connection closes."""
    while True:
        await ws.get_message()


async def closed_with(ws: Any) -> tuple[int, str]:
    """Read frames until the server closes ``ws``; its close code and reason."""
    with trio.fail_after(BOUND), pytest.raises(ConnectionClosed) as closed:
        await read_all(ws)
    reason = closed.value.reason
    assert reason is not None
    return reason.code, reason.reason


async def no_leaked_task() -> None:
    """Wait until no leaked task runs (an ``api`` restart begins after its reply)."""
    with trio.fail_after(BOUND):
        while leaked_tasks():  # noqa: ASYNC110 (a task's end has no event to await)
            await trio.sleep(POLL)


async def test_restarting_every_node_keeps_the_server_serving(probe: Probe) -> None:
    """``system.restart`` of every path of the running tree (a feed builder, each worker and
    supervisor, ``api``, and the root last) answers, and after each the server answers
    ``/health`` 200, a JSON-RPC read and a WebSocket subscribe-and-publish round trip."""
    await probe.result("feed.get", {"user": "a"})  # a dynamic child: feeds/feed_builders/a#1
    paths = await probe.paths()
    assert any("/feed_builders/" in path for path in paths), paths
    await probe.serves()
    for path in [*reversed(paths), "root"]:  # a child before its supervisor
        result = await probe.result("system.restart", {"path": path})
        scheduled = path in ("api", "root")  # they stop what answers: after the reply
        assert (result["path"], result["scheduled"]) == (path, scheduled)
        assert scheduled or result["restarts"] >= 1
        await probe.serves()
    restarts = {path: node["restarts_total"] for path, node in nodes(await probe.node("root"))}
    for path in paths:
        if "/feed_builders/" not in path:  # the feed builder went with its supervisor
            # A child of the root: its own restart, then the root's; deeper: its own.
            assert restarts[path] >= (1 if "/" in path else 2), restarts


async def test_an_api_restart_answers_first_and_serves_the_same_port_after(probe: Probe) -> None:
    """Restarting ``api`` over HTTP, then over an operator's WebSocket, answers the call
    first; open WebSockets close with 1012 "service restart"; the same port then serves
    HTTP and WebSocket clients again."""
    binds = (await probe.node("api"))["binds"]
    async with (
        probe.server.connect("b") as watcher,
        httpx.AsyncClient(base_url=probe.server.url) as keep_alive,
    ):
        assert "result" in await Client(watcher).call("subscribe", channel="post:watched")
        assert (await keep_alive.get("/health")).status_code == 200  # a connection kept open
        body = {"jsonrpc": "2.0", "id": 7, "method": "system.restart", "params": {"path": "api"}}
        reply = (await keep_alive.post("/rpc", json=body)).json()
        assert reply == {
            "jsonrpc": "2.0",
            "result": {"path": "api", "restarts": 0, "scheduled": True},
            "id": 7,
        }
        assert await closed_with(watcher) == (1012, "service restart")
    await probe.serves()
    restarted = await probe.settled("api", lambda node: node["restarts_total"] == 1)
    assert restarted["binds"] == binds

    operator = f"{websocket_url(probe.server.url)}?token={probe.operator_token()}"
    async with open_websocket_url(operator) as ws:
        reply = await Client(ws).call("system.restart", path="api")
        assert reply["result"] == {"path": "api", "restarts": 1, "scheduled": True}
        assert await closed_with(ws) == (1012, "service restart")
    await probe.serves()
    restarted = await probe.settled("api", lambda node: node["restarts_total"] == 2)
    assert restarted["binds"] == binds


async def test_a_handler_fault_crashes_each_worker_and_its_supervisor_restarts_it(
    probe: Probe,
) -> None:
    """``system.fault {kind: handler}`` crashes every static worker in turn (an actor in its
    message handling, a run loop where it waits, ``api`` once it has answered); each is
    restarted by its supervisor with InjectedFault as its last error, and the server
    serves after each."""
    workers = await static_paths(probe, "worker")
    assert {"api", "dashboard", "realtime/publisher", "realtime/nozzle"} <= set(workers)
    for path in workers:
        before = (await probe.node(path))["restarts_total"]
        reply = await probe.result("system.fault", {"path": path, "kind": "handler"})
        assert reply == {"path": path, "kind": "handler"}
        await probe.settled(path, crashed_by_fault(before))
        await probe.serves()


async def test_a_handler_fault_in_a_supervisor_restarts_its_subtree(probe: Probe) -> None:
    """A ``handler`` fault in a supervisor (``realtime``, ``feeds/feed_builders``, ``stores``)
    ends its subtree as a crash; its parent restarts it, and the server serves after each."""
    for path in ("realtime", "feeds/feed_builders", "stores"):
        before = (await probe.node(path))["restarts_total"]
        await probe.result("system.fault", {"path": path, "kind": "handler"})
        await probe.settled(path, crashed_by_fault(before))
        await probe.serves()


async def test_a_start_fault_fails_the_next_start_once_and_the_restart_loop_recovers(
    probe: Probe,
) -> None:
    """``system.fault {kind: start}`` makes the next start of a child raise, once: the
    restart that meets it goes through its supervisor's restart loop (backoff, intensity)
    and the child runs again, ``api`` on the same port, and the server serves."""
    binds = (await probe.node("api"))["binds"]
    paths = [
        "stores/graph",
        "social/graph_reader-0",
        "feeds/story_index",
        "realtime/publisher",
        "realtime/transformer-0",
        "realtime/nozzle",
        "realtime",
        "api",
    ]
    for path in paths:
        before = (await probe.node(path))["restarts_total"]
        reply = await probe.result("system.fault", {"path": path, "kind": "start"})
        assert reply == {"path": path, "kind": "start"}
        assert (await probe.node(path))["restarts_total"] == before  # armed, nothing yet
        await probe.result("system.restart", {"path": path})
        # The operator's restart, the failed start, the restart loop's start.
        node = await probe.settled(path, crashed_by_fault(before + 1))
        assert node["restarts_total"] >= before + 2
        await probe.serves()
    assert (await probe.node("api"))["binds"] == binds


async def test_a_leaked_task_is_cancelled_by_the_restart_of_its_child(probe: Probe) -> None:
    """``system.fault {kind: leak}`` starts a task that never ends inside a child (every
    static worker and supervisor, ``api`` among them); restarting that child cancels it,
    so no task is left behind, and the server serves after each."""
    assert leaked_tasks() == 0
    for path in await static_paths(probe):
        reply = await probe.result("system.fault", {"path": path, "kind": "leak"})
        assert reply == {"path": path, "kind": "leak"}
        assert leaked_tasks() == 1
        await probe.result("system.restart", {"path": path})
        await no_leaked_task()
        await probe.serves()


async def test_stopping_the_server_cancels_leaked_tasks(tmp_path: Any) -> None:
    """Tasks leaked into children (a run loop, an actor, ``api``) end when the server stops."""
    async with serving(tmp_path, fault_injection=True) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for path in ("realtime/nozzle", "social/graph_writer", "api"):
                body = {"jsonrpc": "2.0", "id": 1, "method": "system.fault",
                        "params": {"path": path, "kind": "leak"}}  # fmt: skip
                assert "result" in (await http.post("/rpc", json=body)).json()
        assert leaked_tasks() == 3
    assert leaked_tasks() == 0


async def test_system_fault_is_refused_unless_enabled_and_checks_its_params(
    tmp_path: Any, probe: Probe
) -> None:
    """Without ``--fault-injection``, ``system.fault`` answers -32003 whose reason says how to
    enable it; with it, an unknown path is -32004, the root and an unknown kind -32602."""
    async with (
        serving(tmp_path / "off") as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        body = {"jsonrpc": "2.0", "id": 1, "method": "system.fault",
                "params": {"path": "realtime/nozzle", "kind": "handler"}}  # fmt: skip
        error = (await http.post("/rpc", json=body)).json()["error"]
        assert error["code"] == -32003
        assert "--fault-injection" in error["data"]["reason"]
        assert "STARLING_FAULT_INJECTION=1" in error["data"]["reason"]
    for params, code in [
        ({"path": "realtime/nothing", "kind": "handler"}, -32004),
        ({"path": "root", "kind": "handler"}, -32602),
        ({"path": "realtime/nozzle", "kind": "explode"}, -32602),
    ]:
        reply = await probe.rpc("system.fault", params)
        assert reply["error"]["code"] == code, reply
    await probe.serves()
