"""The pages' routes: what each page is made of, the static files, the API the pages call,
and the token routes guarded like ``/rpc``.

What a page must contain is read from the served HTML (title, stylesheet, scripts,
element ids) and from its served scripts (the token route, the JSON-RPC methods, the
channel); each is then checked against the running server, so a page that loads a
missing script, looks up an element it lacks or calls a method the server does not
have fails here, without a browser (``tests/test_browser.py`` runs them in one).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from auth.tokens import verify_token
from observability.dashboard import CHANNEL, SERIES_CHANNEL
from protocols.app import STATIC
from tests.in_process import Server, serving

TIMEOUT = 30.0
"""Seconds any one test may take."""
METHOD_NOT_FOUND = -32601


@dataclass(frozen=True)
class Page:
    """What one page must be: its title, its own script and the token route that script uses."""

    path: str
    title: str
    script: str
    token_route: str
    rpc_methods: frozenset[str]


PAGES = [
    Page(
        "/dashboard",
        "Starling — operator dashboard",
        "dashboard.js",
        "/dashboard/token",
        frozenset({"system.restart"}),
    ),
    Page(
        "/demo",
        "Starling — demo",
        "demo.js",
        "/demo/token?user=",
        frozenset({"social.following", "feed.get", "feed.invalidate", "posts.get"}),
    ),
]
WS_METHODS = {"subscribe", "unsubscribe", "history", "presence", "ping"}
"""What the shared client (``starling.js``) sends over ``/ws``."""
RPC_CALL = re.compile(r'\brpc(?:Batch)?\("([\w.]+)"')
"""A JSON-RPC call in a page's script: ``rpc("method", …)`` or ``rpcBatch("method", […])``."""
CHANNEL_TEMPLATE = re.compile(r"`(\w+):\$\{")
"""A channel name a page's script builds, as a template literal (``post:${post}``)."""
PRESENCE_SUBSCRIBE = re.compile(r"session\.subscribe\((\w+), undefined, \{ presence: true \}\)")
"""A subscription with presence in a page's script: ``session.subscribe(channel, undefined,
{ presence: true })``."""
PUSH_HANDLED = re.compile(r'method [!=]== "(\w+)"')
"""A server push a script tells apart: ``method === "join"`` or ``method !== "gap"``."""
PAINT_SECONDS = 0.6
"""How soon a new dashboard viewer gets its first snapshot (the reporter looks every 0.1 s;
the next interval would be up to 1 s away)."""


class Html(HTMLParser):
    """The parts of a page the tests read: title, stylesheets, scripts and element ids."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.title = ""
        self.stylesheets: list[str] = []
        self.scripts: list[str] = []
        self.ids: set[str] = set()
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if (id := attributes.get("id")) is not None:
            self.ids.add(id)
        if tag == "title":
            self._in_title = True
        elif tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes["href"] or "")
        elif tag == "script" and attributes.get("src"):
            self.scripts.append(attributes["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def looked_up_ids(script: str) -> set[str]:
    """The element ids a script looks up: ``getElementById("x")`` and ``querySelector("#x …")``."""
    by_id = re.findall(r'getElementById\("([\w-]+)"\)', script)
    by_selector = re.findall(r'querySelector(?:All)?\("#([\w-]+)', script)
    return {*by_id, *by_selector}


def by_page(page: Page) -> str:
    return page.path


async def fetch_page(client: httpx.AsyncClient, page: Page) -> tuple[Html, str]:
    """The page's parsed HTML and its own script's text, both as served."""
    response = await client.get(page.path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    script = await client.get(f"/static/{page.script}")
    assert script.status_code == 200
    return Html(response.text), script.text


@pytest.mark.parametrize("page", PAGES, ids=by_page)
async def test_each_page_has_its_title_stylesheet_scripts_and_elements(
    tmp_path: Path, page: Page
) -> None:
    """A page is HTML with its title, the shared stylesheet, the shared client then its own
    script, and every element its script looks up by id."""
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as client:
            html, script = await fetch_page(client, page)
    assert html.title == page.title
    assert html.stylesheets == ["/static/starling.css"]
    assert html.scripts == ["/static/starling.js", f"/static/{page.script}"]
    wanted = looked_up_ids(script)
    assert "connection" in wanted  # the badge both pages update: the regex reads the script
    assert wanted <= html.ids, f"{page.script} looks up ids the page lacks: {wanted - html.ids}"


async def test_static_files_are_served_as_they_are_on_disk(tmp_path: Path) -> None:
    """Every file the pages load is served from /static byte for byte, as JavaScript or CSS;
    a file that is not there is 404."""
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as client:
            loaded: set[str] = set()
            for page in PAGES:
                html, _ = await fetch_page(client, page)
                loaded |= {*html.stylesheets, *html.scripts}
            assets = ("starling.css", "starling.js", "dashboard.js", "demo.js")
            assert loaded == {f"/static/{name}" for name in assets}
            for path in sorted(loaded):
                response = await client.get(path)
                assert response.status_code == 200, path
                kind = "text/css" if path.endswith(".css") else "javascript"
                assert kind in response.headers["content-type"], (path, response.headers)
                assert response.content == (STATIC / Path(path).name).read_bytes(), path
            assert (await client.get("/static/nothing.js")).status_code == 404


_ids = itertools.count(1)


async def ws_call(ws: WebSocketConnection, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Send one JSON-RPC request over ``ws``; its reply (publications before it are skipped)."""
    id = next(_ids)
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": id, "method": method,
                                      "params": params}))  # fmt: skip
    while True:
        decoded = json.loads(await ws.get_message())
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if message.get("id") == id:
                return dict(message)


async def rpc_error_code(client: httpx.AsyncClient, method: str) -> int | None:
    """The error code ``/rpc`` answers ``method`` with (no params), ``None`` for a result."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}
    reply = (await client.post("/rpc", json=body)).json()
    return reply["error"]["code"] if "error" in reply else None


async def test_the_pages_call_only_what_the_server_has(tmp_path: Path) -> None:
    """Each page's script gets its WebSocket token from its own token route, which answers one;
    every JSON-RPC method the scripts call over /rpc, and every one the shared client sends over
    /ws, is one the server has; the dashboard's channel is one its operator token may read."""
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as client:
            shared = (await client.get("/static/starling.js")).text
            assert set(re.findall(r'send\("([\w.]+)"', shared)) == WS_METHODS
            tokens: dict[str, str] = {}
            for page in PAGES:
                _, script = await fetch_page(client, page)
                assert re.findall(r"connect\([`\"]([^`\"$]+)", script) == [page.token_route]
                called = set(RPC_CALL.findall(script))
                assert called == page.rpc_methods
                for method in sorted(called):
                    assert await rpc_error_code(client, method) != METHOD_NOT_FOUND, method
                assert await rpc_error_code(client, "no.such_method") == METHOD_NOT_FOUND
                route = page.token_route + ("alice" if page.token_route.endswith("=") else "")
                tokens[page.path] = (await client.get(route)).json()["token"]
            dashboard = (await client.get("/static/dashboard.js")).text
            assert f'const CHANNEL = "{CHANNEL}";' in dashboard
            assert f'const SERIES = "{SERIES_CHANNEL}";' in dashboard
            await check_ws_methods(server, tokens["/dashboard"])
    assert verify_token(server.secret, tokens["/dashboard"]).operator is True
    assert verify_token(server.secret, tokens["/demo"]).user == "alice"


async def check_ws_methods(server: Server, operator_token: str) -> None:
    """Over /ws with ``operator_token``: no method the shared client sends is unknown, and
    subscriptions to the dashboard's two channels are granted."""
    url = f"{server.url.replace('http', 'ws', 1)}/ws?token={operator_token}"
    async with open_websocket_url(url) as ws:
        for method in sorted(WS_METHODS):
            reply = await ws_call(ws, method, {})
            assert reply.get("error", {}).get("code") != METHOD_NOT_FOUND, (method, reply)
        assert (await ws_call(ws, "no.such_method", {}))["error"]["code"] == METHOD_NOT_FOUND
        for channel in (SERIES_CHANNEL, CHANNEL):
            reply = await ws_call(ws, "subscribe", {"channel": channel})
            assert "result" in reply, reply


async def next_publication(ws: WebSocketConnection, channel: str) -> dict[str, Any]:
    """The params of the next ``pub`` on ``channel`` (other frames are skipped)."""
    while True:
        decoded = json.loads(await ws.get_message())
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if message.get("method") == "pub" and message["params"]["channel"] == channel:
                return dict(message["params"])


async def test_a_dashboard_viewer_is_painted_at_once_with_the_points_so_far(
    tmp_path: Path,
) -> None:
    """Opened as dashboard.js opens it (the series' history, the series since that history, then
    the snapshots), a viewer gets a whole snapshot within PAINT_SECONDS; the chart points of the
    history and of that snapshot come oldest first, each once, the last the snapshot's own."""
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as client:
            token = (await client.get("/dashboard/token")).json()["token"]
            url = f"{server.url.replace('http', 'ws', 1)}/ws?token={token}"
            async with open_websocket_url(url) as ws:
                history = (await ws_call(ws, "history", {"channel": SERIES_CHANNEL}))["result"]
                since = {"offset": history["offset"], "epoch": history["epoch"]}
                reply = await ws_call(ws, "subscribe", {"channel": SERIES_CHANNEL, "since": since})
                assert reply["result"]["recovered"] is True, reply
                assert "result" in await ws_call(ws, "subscribe", {"channel": CHANNEL})
                with trio.fail_after(PAINT_SECONDS):
                    snapshot = (await next_publication(ws, CHANNEL))["data"]
    assert snapshot["tree"]["id"] == "root"
    assert {"rates", "latency_ms", "ws", "feeds", "rpc"} <= snapshot.keys()
    batched = [
        p["data"]["points"] for p in history["publications"] + reply["result"]["publications"]
    ]
    points = [point for batch in batched for point in batch] + snapshot["points"]
    ats = [point["at"] for point in points]
    assert ats
    assert ats == sorted(set(ats)), ats
    assert snapshot["points"][-1]["at"] == snapshot["at"]
    chart = {"p50", "p99", "p99.9", "events_in", "deliveries_out", "rpc_calls", "ws_open"}
    assert chart <= points[-1].keys()


async def test_token_routes_follow_the_api_key(tmp_path: Path) -> None:
    """With an API key, the token routes refuse callers without it (401) and give the
    dashboard an operator's token and the demo a user's token with it; a bad user id is 400."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(tmp_path, api_key="k3y") as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            assert (await client.get("/dashboard/token")).status_code == 401
            assert (await client.get("/demo/token?user=alice")).status_code == 401
            key = {"Authorization": "Bearer k3y"}
            token = (await client.get("/dashboard/token", headers=key)).json()["token"]
            assert verify_token(server.secret, token).operator is True
            token = (await client.get("/demo/token?user=alice", headers=key)).json()["token"]
            claims = verify_token(server.secret, token)
            assert (claims.user, claims.operator) == ("alice", False)
            bad = await client.get("/demo/token?user=no%20spaces", headers=key)
            assert bad.status_code == 400


async def next_push(ws: WebSocketConnection, method: str) -> dict[str, Any]:
    """The params of the next push ``method`` (``join``, ``leave``…; other frames are skipped)."""
    while True:
        decoded = json.loads(await ws.get_message())
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if message.get("method") == method:
                return dict(message["params"])


async def test_the_demo_subscribes_to_what_a_user_token_may_read_with_presence(
    tmp_path: Path,
) -> None:
    """The demo's script subscribes to ``user:<me>``, ``following:<me>`` and ``post:<id>`` (the
    last with ``presence: true``), reads ``presence`` and tells ``join``, ``leave`` and
    ``unsubscribed`` pushes apart (the shared client drops an ``unsubscribed`` channel); with the
    token the page gets, the server grants each subscription, and its ``presence`` reply and
    ``join``/``leave`` pushes carry the fields the script reads."""
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as client:
            _, script = await fetch_page(client, PAGES[1])
            shared = (await client.get("/static/starling.js")).text
            assert set(CHANNEL_TEMPLATE.findall(script)) == {"user", "following", "post"}
            (variable,) = PRESENCE_SUBSCRIBE.findall(script)
            assert f"const {variable} = `post:${{post}}`;" in script
            assert "session.presence(" in script
            assert {"join", "leave", "unsubscribed"} <= set(PUSH_HANDLED.findall(script))
            assert 'message.method === "unsubscribed") channels.delete(' in shared
            ws_url = f"{server.url.replace('http', 'ws', 1)}/ws?token="
            alice = (await client.get("/demo/token?user=alice")).json()["token"]
            bob = (await client.get("/demo/token?user=bob")).json()["token"]
            async with open_websocket_url(ws_url + alice) as ws:
                for channel in ("user:alice", "following:alice"):
                    assert "result" in await ws_call(ws, "subscribe", {"channel": channel})
                params = {"channel": "post:p1", "presence": True}
                assert "result" in await ws_call(ws, "subscribe", params)
                present = await ws_call(ws, "presence", {"channel": "post:p1"})
                assert present["result"] == {"users": [{"user": "alice", "connections": 1}],
                                             "total": 1}  # fmt: skip
                async with open_websocket_url(ws_url + bob) as other:
                    assert "result" in await ws_call(other, "subscribe", params)
                    joined = await next_push(ws, "join")
                left = await next_push(ws, "leave")
    assert joined == {"channel": "post:p1", "user": "bob", "connections": 1}
    assert left == {"channel": "post:p1", "user": "bob", "connections": 0}
