"""The security doors: which token, key or address gets through which route, the token
secret's rotation end to end, and that no secret, key or token reaches a log line or a reply.

Where what the wire says matters (close codes, HTTP statuses, error bodies), a real server
runs in this process (hypercorn, the owned WebSocket edge, the embedded graph); where the
peer's address must be chosen (a client that is not on loopback, one behind a proxy), the
ASGI app is called over httpx's transport. docs/operations.md ("Security") and docs/api.md
("Authentication and tokens", the method table) say what is proved here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
import trio
from click.testing import CliRunner
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from actors.realtime import Position, Publication, Recovery
from actors.runtime import Actor
from auth.tokens import Keyring, issue_token, verify_token
from client import websocket_url
from protocols.app import AppConfig, RouteAccess, create_app
from protocols.jsonrpc import Access
from protocols.methods import Services, build_dispatcher
from protocols.websocket.codes import CLOSE_TOKEN_EXPIRED, CLOSE_UNAUTHENTICATED
from protocols.websocket.session import Limits, Session
from settings import Settings
from stores.backends import redact
from supervisor import Supervisor
from tests.in_process import Server, load_edges, serving
from tests.ws_client import Client

TIMEOUT = 60.0
"""Seconds any one test may take."""
KEY = "the-api-key-" + "k" * 20
EDGES = "a b\nb c\n"
ROOT = Path(__file__).resolve().parents[1]


# -- tokens that must get nowhere ----------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None) -> str:
    """A token with any header and claims; signed HMAC-SHA256 with ``key``, or unsigned."""
    signing_input = ".".join(b64(json.dumps(part).encode()) for part in (header, claims))
    signature = b"" if key is None else hmac.digest(key, signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(signature)}"


def bad_tokens(secret: bytes) -> dict[str, tuple[str, bool]]:
    """Tokens no door may take, by name: ``(token, expired)``; every one but ``expired``
    is invalid. Each names the user ``a`` (who exists) unless its claims are the fault."""
    now = int(time.time())
    claims = {"sub": "a", "iat": now, "exp": now + 600}
    valid = issue_token(secret, "a")
    header, payload, signature = valid.split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    mallory = issue_token(secret, "mallory").split(".")[1]
    return {
        "alg none": (forge({"alg": "none", "typ": "JWT"}, claims), False),
        "HS512 with the secret": (jwt.encode(claims, secret * 2, algorithm="HS512"), False),
        "RS256 header over an HMAC": (forge({"alg": "RS256", "typ": "JWT"}, claims, secret), False),
        "forged signature": (f"{header}.{payload}.{flipped}", False),
        "claims swapped under a signature": (f"{header}.{mallory}.{signature}", False),
        "another secret": (issue_token(b"another-secret-" * 3, "a"), False),
        "no sub": (jwt.encode({"exp": now + 600}, secret, algorithm="HS256"), False),
        "no exp": (jwt.encode({"sub": "a"}, secret, algorithm="HS256"), False),
        "sub not an id": (jwt.encode({"sub": "a b", "exp": now + 600}, secret, "HS256"), False),
        "exp not a number": (jwt.encode({"sub": "a", "exp": "soon"}, secret, "HS256"), False),
        "nbf ahead": (jwt.encode({**claims, "nbf": now + 300}, secret, "HS256"), False),
        "garbage": ("not.a.token", False),
        "expired": (issue_token(secret, "a", ttl_seconds=60, now=now - 120), True),
    }


def rpc_body(method: str, params: Any = None, id: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def bearer(credentials: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credentials}"}


async def closed_with(ws: WebSocketConnection) -> tuple[int, str | None]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:  # noqa: PT012 (read until it closes)
        while True:
            await ws.get_message()
    reason = closed.value.reason
    return reason.code, reason.reason


def ws_url(server: Server, token: str | None = None) -> str:
    return websocket_url(server.url) + (f"?token={token}" if token is not None else "")


async def test_bad_tokens_are_refused_on_every_door(tmp_path: Path) -> None:
    """Each bad token (alg none, HS512, an RS256 header over an HMAC, a forged signature,
    claims swapped under a signature, another secret, a missing or ill-typed claim, nbf
    ahead, garbage; expired) is refused on /ws as ``?token=`` (close 4001 "invalid token",
    4003 "token expired"), by ``connect`` (-32003 "unauthorized", data.reason "token
    invalid" / "token expired") and on POST /rpc as a bearer (HTTP 401, -32003)."""
    data = await load_edges(tmp_path, EDGES)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(data, api_key=KEY) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            for name, (token, expired) in bad_tokens(server.secret).items():
                close = (
                    (CLOSE_TOKEN_EXPIRED, "token expired")
                    if expired
                    else (CLOSE_UNAUTHENTICATED, "invalid token")
                )
                async with open_websocket_url(ws_url(server, token)) as ws:
                    assert await closed_with(ws) == close, name
                async with open_websocket_url(ws_url(server)) as ws:
                    error = (await Client(ws).call("connect", token=token))["error"]
                    assert (error["code"], error["message"]) == (-32003, "unauthorized"), name
                    reason = "token expired" if expired else "token invalid"
                    assert error["data"]["reason"] == reason, name
                    assert (await Client(ws).call("subscribe", channel="post:p"))["error"][
                        "data"
                    ] == {"reason": "not authenticated"}, name
                response = await http.post(
                    "/rpc", json=rpc_body("social.counts", {"user": "a"}), headers=bearer(token)
                )
                assert response.status_code == 401, name
                error = response.json()["error"]
                detail = "bearer token expired" if expired else "bearer token invalid"
                assert (error["code"], error["data"]["detail"]) == (-32003, detail), name


async def test_a_token_for_a_user_the_graph_does_not_hold(tmp_path: Path) -> None:
    """A token for a user the graph does not hold authenticates (Starling does not read the
    graph at connect): its own ``user:`` channel can be subscribed to and stays silent, other
    users' channels stay forbidden, and every method acting for it answers -32004 "user not
    found" on /ws and on /rpc alike, creating nothing."""
    data = await load_edges(tmp_path, EDGES)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(data, api_key=KEY) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            ghost = issue_token(server.secret, "ghost")
            async with open_websocket_url(ws_url(server)) as ws:
                client = Client(ws)
                assert (await client.call("connect", token=ghost))["result"]["user"] == "ghost"
                assert "result" in await client.call("subscribe", channel="user:ghost")
                refused = await client.call("subscribe", channel="user:a")
                assert refused["error"]["code"] == -32003
                for method, params in (
                    ("social.follow", {"follower": "ghost", "followee": "a"}),
                    ("posts.publish", {"author": "ghost", "post": {"title": "boo"}}),
                    ("feed.get", {"user": "ghost"}),
                ):
                    error = (await client.call(method, **params))["error"]
                    assert error["data"] == {"kind": "user", "id": "ghost"}, method
                assert await client.quiet(0.5) == []
            follow = rpc_body("social.follow", {"follower": "ghost", "followee": "a"})
            reply = (await http.post("/rpc", json=follow, headers=bearer(ghost))).json()
            assert reply["error"]["code"] == -32004
            counts = rpc_body("social.counts", {"user": "ghost"})
            reply = (await http.post("/rpc", json=counts, headers=bearer(KEY))).json()
            assert reply["error"]["data"] == {"kind": "user", "id": "ghost"}


# -- POST /rpc: the API key, loopback, bearer tokens ---------------------------------


async def test_http_rpc_with_an_api_key_and_with_tokens(tmp_path: Path) -> None:
    """With an API key set, POST /rpc without it (or with a wrong one) is HTTP 401 / -32003;
    with it every method answers, ``system.*`` included; a user's token gets what acts for
    that user and the public reads, and -32003 "forbidden" (data.reason) for the rest, also
    inside a batch; an operator's or a service's token gets every method."""
    data = await load_edges(tmp_path, EDGES)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(data, api_key=KEY) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):

            async def post(body: Any, headers: dict[str, str] | None = None) -> Any:
                response = await http.post("/rpc", json=body, headers=headers or {})
                return response.status_code, response.json()

            stats = rpc_body("system.stats")
            for headers in ({}, bearer("wrong"), bearer(KEY + "x"), {"Authorization": KEY}):
                status, reply = await post(stats, headers)
                assert status == 401
                assert reply["error"]["code"] == -32003
                assert reply["error"]["data"] == {"detail": "bearer key required"}
            status, reply = await post(stats, bearer(KEY))
            assert (status, "uptime_seconds" in reply["result"]) == (200, True)

            user = bearer(issue_token(server.secret, "a"))
            mine = rpc_body("social.follow", {"follower": "a", "followee": "c"})
            theirs = rpc_body("social.follow", {"follower": "b", "followee": "a"}, id=2)
            public = rpc_body("social.counts", {"user": "b"}, id=3)
            status, replies = await post([mine, theirs, public, {**stats, "id": 4}], user)
            assert status == 200
            assert [r.get("result") for r in replies] == [
                {"created": True}, None, {"following": 1, "followers": 1}, None
            ]  # fmt: skip
            assert replies[1]["error"] == {
                "code": -32003,
                "message": "forbidden",
                "data": {"reason": "social.follow acts for follower = the token's user only"},
            }
            assert replies[3]["error"]["data"] == {
                "reason": "system.stats is for operators and services"
            }
            for role, follower in (("operator", "b"), ("service", "c")):
                token = bearer(issue_token(server.secret, role, **{role: True}))
                status, reply = await post(stats, token)
                assert "uptime_seconds" in reply["result"], role
                follow = rpc_body("social.follow", {"follower": follower, "followee": "a"})
                status, reply = await post(follow, token)
                assert reply["result"] == {"created": True}, role


def services() -> Services:
    """Services over a tree that never runs and a social actor that never starts: enough
    for the doors (what gets through answers; nothing here needs a graph)."""
    return Services(tree=Supervisor("root").statistics, social=Actor[object]("social").ref)


def asgi_client(app: Any, address: str) -> httpx.AsyncClient:
    """An HTTP client of ``app`` seen from ``address``."""
    transport = httpx.ASGITransport(app=app, client=(address, 40_000))
    return httpx.AsyncClient(transport=transport, base_url="http://starling")


REMOTE = "192.0.2.7"
PROXY_HEADERS = [{"X-Forwarded-For": REMOTE}, {"Forwarded": f"for={REMOTE}"}, {"X-Real-IP": REMOTE}]


async def test_without_an_api_key_rpc_answers_loopback_and_tokens_only() -> None:
    """Without an API key, POST /rpc answers a loopback client (every method), refuses a
    remote client or a loopback peer that a proxy's header shows to be relaying (403,
    -32003), and answers a remote client's valid token by that token's rights."""
    secret = b"s" * 32
    app = create_app(services(), secret=secret)
    health = rpc_body("system.health")
    async with asgi_client(app, "127.0.0.1") as local, asgi_client(app, REMOTE) as remote:
        assert "result" in (await local.post("/rpc", json=health)).json()
        for client, headers in [(remote, {}), *((local, h) for h in PROXY_HEADERS)]:
            response = await client.post("/rpc", json=health, headers=headers)
            assert response.status_code == 403, headers
            assert response.json()["error"]["code"] == -32003
        user = bearer(issue_token(secret, "a"))
        reply = (await remote.post("/rpc", json=health, headers=user)).json()
        assert reply["error"]["data"]["reason"] == "system.health is for operators and services"
        operator = bearer(issue_token(secret, "ops", operator=True))
        assert "result" in (await remote.post("/rpc", json=health, headers=operator)).json()


def test_the_access_table_of_api_md_is_the_code() -> None:
    """docs/api.md's method table gives every registered method, and its access column
    ("ops", "users", "self: `param`") is the method's Access and acting param."""
    methods = build_dispatcher(services()).methods
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    table = text[text.index("\n## Methods\n") : text.index("\n### System\n")]
    documented: dict[str, str] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("[`"):
            for name in re.findall(r"\[`([a-z_.]+)`\]", cells[0]):
                documented[name] = cells[2]
    assert sorted(documented) == sorted(methods)
    for name, method in methods.items():
        expected = {
            Access.OPERATORS: "ops",
            Access.USERS: "users",
            Access.SELF: f"self: `{method.acting}`",
        }[method.access]
        assert documented[name] == expected, name


# -- /health, /metrics and the token routes ------------------------------------------


@pytest.mark.parametrize("route", ["/health", "/metrics"])
@pytest.mark.parametrize(
    ("access", "address", "headers", "allowed"),
    [
        (RouteAccess.OPEN, REMOTE, {}, True),
        (RouteAccess.LOOPBACK, "127.0.0.1", {}, True),
        (RouteAccess.LOOPBACK, "::1", {}, True),
        (RouteAccess.LOOPBACK, REMOTE, {}, False),
        (RouteAccess.LOOPBACK, "127.0.0.1", {"X-Forwarded-For": REMOTE}, False),
        (RouteAccess.LOOPBACK, REMOTE, bearer(KEY), True),
        (RouteAccess.KEY, "127.0.0.1", {}, False),
        (RouteAccess.KEY, REMOTE, bearer("wrong"), False),
        (RouteAccess.KEY, REMOTE, bearer(KEY), True),
    ],
)
async def test_health_and_metrics_answer_whom_their_access_allows(
    route: str, access: RouteAccess, address: str, headers: dict[str, str], allowed: bool
) -> None:
    """``--health-access`` / ``--metrics-access``: open answers anyone; loopback a loopback
    client not behind a proxy, or the key; key the key only; refusals are 401 (key) or 403
    (loopback) with a -32003 body."""
    config = AppConfig(api_key=KEY, health_access=access, metrics_access=access)
    app = create_app(services(), config)
    async with asgi_client(app, address) as client:
        response = await client.get(route, headers=headers)
    if allowed:
        assert response.status_code in (200, 503)  # 503: the tree here never started
    else:
        assert response.status_code == (401 if access is RouteAccess.KEY else 403)
        assert response.json()["error"]["code"] == -32003


def test_key_access_without_an_api_key_is_refused(runner: CliRunner) -> None:
    """``key`` access with no API key set is a ValueError for the app and a usage error
    (exit 2) for ``starling serve``, before anything is opened."""
    from cli import main

    with pytest.raises(ValueError, match="needs an API key"):
        AppConfig(metrics_access=RouteAccess.KEY)
    result = runner.invoke(main, ["serve", "--metrics-access", "key"], env={"STARLING_API_KEY": ""})
    assert result.exit_code == 2
    assert "needs an API key" in result.output


@pytest.mark.parametrize("route", ["/dashboard/token", "/demo/token?user=alice"])
async def test_the_token_routes_answer_the_key_or_loopback_never_a_token(route: str) -> None:
    """The routes that mint tokens answer, without an API key, loopback clients only (not a
    proxied one, not a remote one, whatever token it shows), and with one, its holders only
    (not a loopback client without it, not an operator's token)."""
    secret = b"s" * 32
    operator = bearer(issue_token(secret, "ops", operator=True))
    open_app = create_app(services(), secret=secret)
    async with asgi_client(open_app, "127.0.0.1") as local, asgi_client(open_app, REMOTE) as far:
        token = (await local.get(route)).json()["token"]
        assert verify_token(secret, token).user in {"dashboard", "alice"}
        assert (await local.get(route, headers={"X-Forwarded-For": REMOTE})).status_code == 403
        assert (await far.get(route)).status_code == 403
        assert (await far.get(route, headers=operator)).status_code == 403
    keyed_app = create_app(services(), AppConfig(api_key=KEY), secret=secret)
    async with asgi_client(keyed_app, "127.0.0.1") as local, asgi_client(keyed_app, REMOTE) as far:
        assert (await local.get(route)).status_code == 401
        assert (await far.get(route, headers=operator)).status_code == 401
        assert (await far.get(route, headers=bearer(KEY))).status_code == 200


# -- rotation of the token secret ----------------------------------------------------


class NoHub:
    """A hub for sessions that only authenticate."""

    def subscribe(self, session: Session, channel: str, /) -> Position:
        raise AssertionError("not subscribed in these tests")

    def unsubscribe(self, session: Session, channel: str, /) -> None:
        raise AssertionError("not subscribed in these tests")

    def position(self, channel: str, /) -> Position:
        raise AssertionError("not read in these tests")

    def since(self, channel: str, offset: int, epoch: str, /) -> Recovery:
        raise AssertionError("not read in these tests")

    def latest(self, channel: str, limit: int, /) -> list[Publication]:
        raise AssertionError("not read in these tests")


def test_a_session_of_the_previous_secret_ends_with_its_grace() -> None:
    """A WebSocket session authenticated by a token of the previous secret closes with 4003
    when the grace ends, though the token's own ``exp`` is later; after the grace the same
    token is refused at once (4001)."""
    now, until = 1_700_000_000.0, 1_700_000_600.0
    keyring = Keyring(b"new" * 11, b"old" * 11, until)
    old = issue_token(b"old" * 11, "alice", ttl_seconds=3600, now=now)

    session = Session(NoHub(), keyring, now, token=old, limits=Limits(idle_timeout=3600))
    assert session.deadline == until
    assert (session.user, session.expires_at) == ("alice", until)
    assert session.close_reason(until - 1) is None
    assert session.close_reason(until) == (CLOSE_TOKEN_EXPIRED, "token expired")
    late = Session(NoHub(), keyring, until, token=old)
    assert late.close_reason(until) == (CLOSE_UNAUTHENTICATED, "invalid token")


async def test_rotation_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving with ``STARLING_SECRET`` = new and ``STARLING_PREVIOUS_SECRET`` = old: during
    the grace both secrets' tokens get through /ws and /rpc and the token routes mint with
    the new one; with the grace over, the old secret's tokens are refused (4001, HTTP 401)
    and the new one's still get through."""
    new, old = "new-secret-" + "n" * 24, "old-secret-" + "o" * 24
    monkeypatch.setenv("STARLING_SECRET", new)
    monkeypatch.setenv("STARLING_PREVIOUS_SECRET", old)
    counts = rpc_body("social.counts", {"user": "a"})
    for grace, accepted in ((3600.0, True), (-1.0, False)):
        (tmp_path / str(grace)).mkdir()
        data = await load_edges(tmp_path / str(grace), EDGES)
        with trio.fail_after(TIMEOUT):
            async with (
                serving(data, previous_secret_until=time.time() + grace) as server,
                httpx.AsyncClient(base_url=server.url) as http,
            ):
                for secret, good in ((old.encode(), accepted), (new.encode(), True)):
                    token = issue_token(secret, "a")
                    async with open_websocket_url(ws_url(server)) as ws:
                        reply = await Client(ws).call("connect", token=token)
                        assert ("result" in reply) is good, (grace, secret)
                    response = await http.post("/rpc", json=counts, headers=bearer(token))
                    assert response.status_code == (200 if good else 401), (grace, secret)
                minted = (await http.get("/demo/token?user=a")).json()["token"]
                assert verify_token(new.encode(), minted).user == "a"


# -- nothing secret in a log line or a reply -----------------------------------------


def secret_material(*values: str | bytes) -> Iterator[str]:
    """What must never be written: each value, and of a token each part of 8+ characters
    but the header (the same for every HS256 token)."""
    for value in values:
        text = value.decode() if isinstance(value, bytes) else value
        yield text
        if text.count(".") == 2:
            yield from (part for part in text.split(".")[1:] if len(part) >= 8)


def assert_none_in(texts: list[str], material: list[str]) -> None:
    leaked = sorted({m for m in material for text in texts if m and m in text})
    assert not leaked, f"secret material written: {leaked}"


async def test_no_secret_key_or_token_reaches_a_log_line_or_a_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server_logs: Any
) -> None:
    """With a known secret, previous secret and API key, the failures that log or answer
    with an error (wrong keys, bad and expired tokens on /rpc and /ws, forbidden calls,
    refused /metrics and token routes, a restart on request) write none of them, and no
    token sent, to any log line or error reply."""
    current, previous = f"current-{secrets.token_hex(16)}", f"previous-{secrets.token_hex(16)}"
    monkeypatch.setenv("STARLING_SECRET", current)
    monkeypatch.setenv("STARLING_PREVIOUS_SECRET", previous)
    data = await load_edges(tmp_path, EDGES)
    replies: list[str] = []
    sent: list[str] = []
    options = {"previous_secret_until": time.time() + 600, "metrics_access": RouteAccess.KEY}
    with trio.fail_after(TIMEOUT):
        async with (
            serving(data, api_key=KEY, **options) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            user = issue_token(current.encode(), "a")
            old = issue_token(previous.encode(), "b")
            sent += [user, old, *(token for token, _ in bad_tokens(current.encode()).values())]
            wrong_keys = [KEY[:-1], KEY + "x", KEY.upper(), f"{KEY}.{KEY}.{KEY}"]
            headers = [
                {},
                *(bearer(key) for key in wrong_keys),
                {"Authorization": KEY},
                {"Authorization": f"Basic {KEY}"},
                *(bearer(token) for token in sent),
            ]
            for header in headers:
                for method in ("system.stats", "social.follow", "system.restart"):
                    params = {"follower": "b", "followee": "c"} if "follow" in method else {}
                    body = rpc_body(method, params)
                    replies.append((await http.post("/rpc", json=body, headers=header)).text)
                for route in ("/metrics", "/dashboard/token", "/demo/token?user=a"):
                    replies.append((await http.get(route, headers=header)).text)
            for token in sent:
                if token not in (user, old):
                    async with open_websocket_url(ws_url(server, token)) as ws:
                        await closed_with(ws)
                async with open_websocket_url(ws_url(server)) as ws:
                    client = Client(ws)
                    replies.append(json.dumps(await client.call("connect", token=token)))
                    replies.append(json.dumps(await client.call("connect", token=user)))
                    replies.append(json.dumps(await client.call("connect", token=old)))
                    replies.append(json.dumps(await client.call("system.stats")))
            restart = rpc_body("system.restart", {"path": "social/graph_reader-0"})
            reply = (await http.post("/rpc", json=restart, headers=bearer(KEY))).json()
            assert "result" in reply, reply
    logs = server_logs()
    assert "restarting on request" in logs  # the capture works
    assert "starling is serving" in logs
    assert_none_in([logs, *replies], list(secret_material(current, previous, KEY, *sent)))


def test_urls_are_redacted_of_passwords_in_user_info_and_query() -> None:
    """redact hides the password of the user info and of ``password``-like query parameters,
    keeps the rest as written (IPv6 brackets, a port it cannot parse, ``unix:///``), and never
    raises, even on a URL that does not parse."""
    cases = {
        "redis://:hunter2@h:6379/0": "redis://:***@h:6379/0",
        "redis://u:hunter2@[::1]:6379": "redis://u:***@[::1]:6379",
        "redis://h:6379/0?db=1&password=hunter2": "redis://h:6379/0?db=1&password=***",
        "unix:///tmp/r.sock?password=hunter2": "unix:///tmp/r.sock?password=***",
        "redis://:hunter2@h:99999/0": "redis://:***@h:99999/0",
        "redis://:p@ss@h/0": "redis://:***@h/0",
        "bolt://neo4j:hunter2@db:7687": "bolt://neo4j:***@db:7687",
        "redis://u@h/0": "redis://u@h/0",
        "memory://": "memory://",
        "redis://:hunter2@[::1": "redis://***",
    }
    for url, redacted in cases.items():
        assert redact(url) == redacted, url


def test_settings_and_app_config_never_show_secrets_in_a_repr() -> None:
    """``repr`` of the settings and of the app's config names no API key, no Neo4j password
    and no URL (which may hold a Redis password)."""
    settings = Settings(
        Path("/data"),
        "bolt://db:7687",
        "redis://:hunter2@h/0",
        neo4j_user="neo4j",
        neo4j_password="neo4j-password",
        api_key=KEY,
    )
    shown = repr(settings) + repr(AppConfig(api_key=KEY))
    for value in ("hunter2", "neo4j-password", KEY):
        assert value not in shown


@pytest.mark.redis
async def test_a_redis_outage_never_shows_the_redis_password(
    redis_url: str, tmp_path: Path, server_logs: Any
) -> None:
    """With a password in the Redis URL, /health shows it as ``***``, and when Redis refuses
    the server (its user disabled, its connections killed) neither the logs nor the -32001
    reply of a publish name it."""
    import redis

    password = f"redis-pw-{secrets.token_hex(8)}"
    admin = redis.Redis.from_url(redis_url)
    admin.flushall()
    admin.execute_command("ACL", "SETUSER", "leaky", "on", f">{password}", "~*", "&*", "+@all")
    parts = urlsplit(redis_url)
    url = f"redis://leaky:{password}@{parts.hostname}:{parts.port}/0"
    data = await load_edges(tmp_path, EDGES)
    replies: list[str] = []
    try:
        with trio.fail_after(TIMEOUT):
            async with (
                serving(data, redis_url=url, monitor_interval=0.2) as server,
                httpx.AsyncClient(base_url=server.url) as http,
            ):
                health = (await http.get("/health")).text
                assert f"leaky:***@{parts.hostname}" in health
                replies.append(health)
                admin.execute_command("ACL", "SETUSER", "leaky", "off")
                admin.execute_command("CLIENT", "KILL", "USER", "leaky")
                publish = rpc_body("realtime.publish", {"channel": "post:p", "data": {"n": 1}})
                reply = (await http.post("/rpc", json=publish)).json()
                assert reply["error"]["code"] == -32001, reply
                replies.append(json.dumps(reply))
                health = ""
                for _ in range(100):  # the cache monitor fails within its 0.2 s ping interval
                    response = await http.get("/health")
                    if response.status_code == 503:
                        health = response.text
                        break
                    await trio.sleep(0.1)
                assert '"status":"degraded"' in health
                replies.append(health)
    finally:
        admin.execute_command("ACL", "DELUSER", "leaky")
    logs = server_logs()
    assert "leaky:***@" in logs
    assert_none_in([logs, *replies], [password])
