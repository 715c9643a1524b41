"""The client library and ``starling token`` / ``starling tail``, against the real server.

Each server test starts ``serve`` in-process (hypercorn on 127.0.0.1, port 0,
the embedded Ladybug graph, in-memory stream) and talks to it over real HTTP
and real WebSockets. The session clocks are the wall clock, so the timeouts
tested here are real and short (idle timeout 0.5 s); every wait is bounded by
``trio.fail_after``. The CLI runs in a worker thread (its own ``trio.run``)
while the server runs in the test's.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from auth.tokens import issue_token, load_secret, verify_token
from cli import main
from client import (
    AuthError,
    Closed,
    HttpError,
    Position,
    Reconnecting,
    RpcError,
    Subscribed,
    TailStatus,
    Unreachable,
    open_client,
    rpc,
    rpc_batch,
    tail,
    websocket_url,
)
from protocols.jsonrpc import MAX_BATCH
from protocols.websocket.session import Limits
from supervisor import Backoff
from tests.in_process import Server, invoke_in_thread, serving

TIMEOUT = 10.0
"""Seconds any one test may take."""
NO_JITTER = Backoff(initial=0.05, factor=2.0, maximum=0.2, jitter=0.0)


@dataclass
class Recorder:
    """Collects a tail's publications and statuses; ``subscribed`` is set once every channel is."""

    channels: int = 1
    pubs: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[TailStatus] = field(default_factory=list)
    subscribed: trio.Event = field(default_factory=trio.Event)
    reconnecting: trio.Event = field(default_factory=trio.Event)

    def on_status(self, status: TailStatus) -> None:
        self.statuses.append(status)
        if isinstance(status, Reconnecting):
            self.reconnecting.set()
        elif sum(isinstance(s, Subscribed) for s in self.statuses) >= self.channels:
            self.subscribed.set()

    def of(self, kind: type[Any]) -> list[Any]:
        return [status for status in self.statuses if isinstance(status, kind)]


async def publish(server: Server, channel: str, *datas: dict[str, Any]) -> list[int]:
    """Publish each of ``datas`` on ``channel``, one call at a time; their offsets."""
    async with open_client(server.url) as client:
        return [
            (await rpc(client, "realtime.publish", {"channel": channel, "data": data}))["offset"]
            for data in datas
        ]


async def test_tail_receives_what_realtime_publish_sends_in_order(tmp_path: Path) -> None:
    """A tail of two channels gets every publication of each once, in offset order, and nothing of other channels."""  # noqa: E501
    recorder = Recorder(channels=2)
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, trio.open_nursery() as nursery:
            results: list[Any] = []

            async def follow() -> None:
                results.append(
                    await tail(
                        server.url,
                        server.token(),
                        ["post:a", "post:b"],
                        recorder.pubs.append,
                        limit=6,
                        on_status=recorder.on_status,
                    )
                )

            nursery.start_soon(follow)
            await recorder.subscribed.wait()
            for n in range(3):
                await publish(server, "post:a", {"n": n, "user": "bob"})
                await publish(server, "post:elsewhere", {"n": n})
                await publish(server, "post:b", {"n": n})
    assert [(p["channel"], p["offset"], p["data"]["n"]) for p in recorder.pubs] == [
        (channel, n + 1, n) for n in range(3) for channel in ("post:a", "post:b")
    ]
    # The server adds display fields to an event that names a user.
    assert recorder.pubs[0]["data"] == {"n": 0, "user": "bob", "author": {"id": "bob"}}
    (result,) = results
    assert (result.received, result.duplicates, result.reconnects) == (6, 0, 0)
    assert {channel: offset for channel, (offset, _) in result.positions.items()} == {
        "post:a": 3,
        "post:b": 3,
    }
    assert [s.recovered for s in recorder.of(Subscribed)] == [None, None]


async def test_tail_since_recovers_what_was_published_in_between(tmp_path: Path) -> None:
    """Tailing again ``since`` the positions a finished tail returned delivers exactly the publications it missed."""  # noqa: E501
    first, second = Recorder(), Recorder()
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, trio.open_nursery() as nursery:
            done = trio.Event()
            positions: dict[str, Position] = {}

            async def follow() -> None:
                result = await tail(
                    server.url, server.token(), ["post:7"], first.pubs.append, limit=2,
                    on_status=first.on_status,
                )  # fmt: skip
                positions.update(result.positions)
                done.set()

            nursery.start_soon(follow)
            await first.subscribed.wait()
            await publish(server, "post:7", {"n": 1}, {"n": 2})
            await done.wait()
            await publish(server, "post:7", {"n": 3}, {"n": 4}, {"n": 5})
            result = await tail(
                server.url, server.token(), ["post:7"], second.pubs.append, since=positions,
                limit=3, on_status=second.on_status,
            )  # fmt: skip
    assert [p["offset"] for p in first.pubs] == [1, 2]
    assert [(p["offset"], p["data"]) for p in second.pubs] == [(n, {"n": n}) for n in (3, 4, 5)]
    (subscribed,) = second.of(Subscribed)
    assert (subscribed.recovered, subscribed.missed) == (True, 3)
    assert result.positions["post:7"] == Position(5, positions["post:7"].epoch)


async def test_tail_reconnects_after_an_idle_close_and_recovers_in_order(tmp_path: Path) -> None:
    """A tail that never pings is closed 1001 by the server; it reconnects and recovers what was published meanwhile, in order, once."""  # noqa: E501
    recorder = Recorder()
    patient = Backoff(initial=1.0, jitter=0.0)  # time enough to publish during the backoff
    with trio.fail_after(TIMEOUT):
        async with (
            serving(tmp_path, ws_limits=Limits(idle_timeout=0.5)) as server,
            trio.open_nursery() as nursery,
        ):

            async def follow() -> None:
                await tail(
                    server.url, server.token(), ["post:9"], recorder.pubs.append, limit=6,
                    ping_interval=60.0, backoff=patient, on_status=recorder.on_status,
                )  # fmt: skip

            nursery.start_soon(follow)
            await recorder.subscribed.wait()
            await publish(server, "post:9", {"n": 1}, {"n": 2}, {"n": 3})
            await recorder.reconnecting.wait()
            await publish(server, "post:9", {"n": 4}, {"n": 5}, {"n": 6})
    assert [(p["offset"], p["data"]["n"]) for p in recorder.pubs] == [(n, n) for n in range(1, 7)]
    (reconnecting, *_) = recorder.of(Reconnecting)
    assert (reconnecting.code, reconnecting.reason, reconnecting.delay) == (1001, "idle", 1.0)
    resubscribed = recorder.of(Subscribed)[1]
    assert (resubscribed.recovered, resubscribed.missed, resubscribed.reconnects) == (True, 3, 1)


async def test_tail_pings_keep_an_idle_session_open(tmp_path: Path) -> None:
    """With pings more often than the server's idle timeout, a quiet tail is never closed."""
    recorder = Recorder()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(tmp_path, ws_limits=Limits(idle_timeout=0.5)) as server,
            trio.open_nursery() as nursery,
        ):

            async def follow() -> None:
                await tail(
                    server.url, server.token(), ["post:1"], recorder.pubs.append, limit=1,
                    ping_interval=0.1, on_status=recorder.on_status,
                )  # fmt: skip

            nursery.start_soon(follow)
            await recorder.subscribed.wait()
            await trio.sleep(1.5)  # three idle timeouts of silence from the publishers
            await publish(server, "post:1", {"late": True})
    assert recorder.of(Reconnecting) == []
    assert recorder.pubs == [{"channel": "post:1", "offset": 1, "data": {"late": True}}]


async def test_tail_retries_a_stopped_server_then_gives_up_after_max_attempts(
    tmp_path: Path,
) -> None:
    """When the server stops, the tail retries with backoff and raises Unreachable after max_attempts."""  # noqa: E501
    recorder = Recorder()
    failure: list[Unreachable] = []
    with trio.fail_after(TIMEOUT):
        # The server stops first (the inner context), the tail goes on in the nursery.
        async with trio.open_nursery() as nursery, serving(tmp_path) as server:

            async def follow() -> None:
                try:
                    await tail(
                        server.url, server.token(), ["post:1"], recorder.pubs.append,
                        max_attempts=2, backoff=NO_JITTER, on_status=recorder.on_status,
                    )  # fmt: skip
                except Unreachable as error:
                    failure.append(error)

            nursery.start_soon(follow)
            await recorder.subscribed.wait()
    (error,) = failure
    assert "gave up after 2 attempts" in str(error)
    # The server closes with 1001 "server shutting down"; then nothing listens (None).
    assert [status.code for status in recorder.of(Reconnecting)] == [1001, None]
    assert [status.attempt for status in recorder.of(Reconnecting)] == [1, 2]


async def test_a_server_that_stops_answering_is_taken_for_dead(nursery: trio.Nursery) -> None:
    """A peer that accepts the WebSocket but answers nothing, not even a ping, ends the tail with 1006 after ping_timeout."""  # noqa: E501
    heard: list[dict[str, Any]] = []

    async def mute(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with contextlib.suppress(ConnectionClosed):
            while True:
                heard.append(json.loads(await ws.get_message()))

    mute_server = await nursery.start(serve_websocket, mute, "127.0.0.1", 0, None)
    with trio.fail_after(TIMEOUT), pytest.raises(Closed) as raised:
        await tail(
            f"http://127.0.0.1:{mute_server.port}", "token", ["post:1"], print,
            reconnect=False, ping_interval=0.1, ping_timeout=0.25,
        )  # fmt: skip
    assert (raised.value.code, raised.value.reason) == (1006, "no reply to a ping within 0.25 s")
    methods = [message["method"] for message in heard]
    assert methods[0] == "subscribe"
    assert methods[1:] == ["ping"] * len(methods[1:])
    assert len(methods[1:]) >= 2  # pings go on every interval while one is unanswered


async def test_invalid_token_raises_auth_error_without_retrying(tmp_path: Path) -> None:
    """A token signed with another secret is closed 4001 and surfaces as AuthError, with no reconnection."""  # noqa: E501
    recorder = Recorder()
    forged = issue_token(b"another secret" * 3, "alice")
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server:
            with pytest.raises(AuthError) as raised:
                await tail(server.url, forged, ["post:1"], recorder.pubs.append,
                           on_status=recorder.on_status)  # fmt: skip
    assert (raised.value.code, raised.value.reason) == (4001, "invalid token")
    assert "starling token" in raised.value.hint
    assert recorder.statuses == []


@pytest.mark.parametrize(
    ("channel", "code", "words"),
    [
        pytest.param("user:bob", -32003, "forbidden", id="another-users-channel"),
        pytest.param("post:not an id", -32602, "Invalid params", id="malformed"),
        pytest.param(
            "topic:1",
            -32602,
            "expected 'post:<id>', 'user:<id>', 'following:<id>', 'circle:<id>' or 'system:<id>'",
            id="unknown-kind",
        ),
    ],
)
async def test_refused_subscribe_raises_rpc_error(
    tmp_path: Path, channel: str, code: int, words: str
) -> None:
    """A subscribe the server refuses raises RpcError with its code and the server's explanation."""
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server:
            with pytest.raises(RpcError) as raised:
                await tail(server.url, server.token("alice"), [channel], print)
    assert raised.value.code == code
    assert words in str(raised.value)
    assert str(raised.value).startswith(f"subscribe {channel}: ")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_no_server_raises_unreachable() -> None:
    """Tailing a port where nothing listens raises Unreachable naming the URL, with the serve hint."""  # noqa: E501
    url = f"http://127.0.0.1:{closed_port()}"
    with trio.fail_after(TIMEOUT), pytest.raises(Unreachable) as raised:
        await tail(url, "token", ["post:1"], print)
    assert raised.value.url == websocket_url(url)
    assert "starling serve" in raised.value.hint


def test_websocket_url_maps_base_urls() -> None:
    """Base URLs of any scheme map to the /ws endpoint; other schemes are refused."""
    assert websocket_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws"
    assert websocket_url("https://example.org/starling/") == "wss://example.org/starling/ws"
    assert websocket_url("ws://h:1/ws") == "ws://h:1/ws"
    with pytest.raises(ValueError, match="expected an http"):
        websocket_url("127.0.0.1:8080")


# -- JSON-RPC over HTTP ---------------------------------------------------------


async def test_rpc_and_rpc_batch_return_results_and_errors(tmp_path: Path) -> None:
    """rpc returns a result or raises RpcError; rpc_batch answers each call in order, failures included."""  # noqa: E501
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, open_client(server.url) as client:
            accepted = await rpc(client, "realtime.publish", {"channel": "post:1", "data": {}})
            assert (accepted["channel"], accepted["offset"]) == ("post:1", 1)
            with pytest.raises(RpcError) as raised:
                await rpc(client, "realtime.publish", {"channel": "post:1", "data": [1]})
            assert raised.value.code == -32602
            assert str(raised.value).startswith("realtime.publish: Invalid params (-32602)")
            replies = await rpc_batch(
                client,
                [
                    ("realtime.publish", {"channel": "post:2", "data": {"n": 1}}),
                    ("no.such.method", None),
                    ("realtime.publish", {"channel": "post:3", "data": {"n": 2}}),
                ],
            )
            assert replies[0].unwrap()["channel"] == "post:2"
            assert replies[1].error is not None
            assert replies[1].error.code == -32601
            assert replies[2].unwrap()["channel"] == "post:3"
            assert await rpc_batch(client, []) == []
            too_many = [("system.health", None)] * (MAX_BATCH + 1)
            with pytest.raises(RpcError) as raised:
                await rpc_batch(client, too_many)
            assert raised.value.code == -32600
            assert "exceeds the limit" in str(raised.value)


async def test_http_errors_are_raised_with_their_status(tmp_path: Path) -> None:
    """A missing or wrong key is HttpError 401, a body over the limit HttpError 413, each with a hint."""  # noqa: E501
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path, api_key="s3cret", max_body_bytes=1000) as server:
            for key in (None, "wrong"):
                async with open_client(server.url, api_key=key) as client:
                    with pytest.raises(HttpError) as raised:
                        await rpc(client, "system.health")
                    assert raised.value.status == 401
                    assert "--api-key" in raised.value.hint
            async with open_client(server.url, api_key="s3cret") as client:
                assert (await rpc(client, "system.health"))["status"] == "ok"
                big = {"channel": "post:1", "data": {"pad": "x" * 2000}}
                with pytest.raises(HttpError) as raised:
                    await rpc(client, "realtime.publish", big)
                assert raised.value.status == 413
                assert "1000 bytes" in raised.value.detail


# -- the command line -------------------------------------------------------------


def lines(result: Result) -> list[str]:
    return result.stdout.splitlines()


def test_token_command_prints_a_token_the_server_accepts(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`starling token USER` prints only a token that verify_token accepts for USER with the data dir's secret and the ttl asked."""  # noqa: E501
    monkeypatch.delenv("STARLING_SECRET", raising=False)
    result = runner.invoke(main, ["token", "alice", "--ttl", "600", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (token,) = lines(result)
    claims = verify_token(load_secret(tmp_path), token)
    assert claims.user == "alice"
    assert 599 <= claims.expires_at - time.time() <= 600
    assert "created a new secret" in result.stderr  # the first time only
    again = runner.invoke(main, ["token", "bob", "--data-dir", str(tmp_path)])
    assert verify_token(load_secret(tmp_path), again.stdout.strip()).user == "bob"
    assert again.stderr == ""


def test_token_command_uses_starling_secret(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With STARLING_SECRET set, the token is signed with it and no secret file is created."""
    monkeypatch.setenv("STARLING_SECRET", "from the environment, 32 bytes!!")
    result = runner.invoke(main, ["token", "alice", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert verify_token(b"from the environment, 32 bytes!!", result.stdout.strip()).user == "alice"
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["token", "bad id!"], "a user id is 1-64", id="token-bad-user"),
        pytest.param(
            ["tail", "chan:1"],
            "expected 'post:<id>', 'user:<id>', 'following:<id>', 'circle:<id>' or 'system:<id>'",
            id="tail-kind",
        ),
        pytest.param(["tail", "post:a b"], "the id must be 1-64", id="tail-bad-id"),
        pytest.param(["tail", "user:a", "user:b"], "a token names one user", id="two-users"),
        pytest.param(["tail", "user:bob", "--user", "alice"], "by bob only", id="not-yours"),
        pytest.param(["tail", "post:1", "--url", "localhost:80"], "expected an http", id="url"),
    ],
)
def test_bad_command_lines_get_one_error_line(
    runner: CliRunner, args: list[str], words: str
) -> None:
    """A bad user, channel or URL is refused before connecting: exit 2 and one `error:` line."""
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert words in line


def test_tail_command_without_a_server_says_so(runner: CliRunner, tmp_path: Path) -> None:
    """`starling tail` against a port where nothing listens exits 1 with one error line and the serve hint."""  # noqa: E501
    url = f"http://127.0.0.1:{closed_port()}"
    result = runner.invoke(main, ["tail", "post:1", "--url", url, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"error: cannot connect to {websocket_url(url)}: ")
    assert error.endswith("(is `starling serve` running, and is the URL right?)")
    assert "Traceback" not in result.output


async def wait_for_subscribers(server: Server, count: int) -> None:
    """Poll ``system.stats`` until ``count`` WebSocket subscriptions exist.

    The CLI runs in another thread and reports only when it ends, so the
    server's own figures are the one observable sign that it subscribed.
    """
    async with open_client(server.url) as client:
        while True:
            if (await rpc(client, "system.stats"))["realtime"]["subscribers"] >= count:
                return
            await trio.sleep(0.01)


async def test_tail_command_prints_each_publication_as_a_json_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`starling tail` mints a token with the data dir's secret and prints one JSON line per publication, notes on stderr."""  # noqa: E501
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, trio.open_nursery() as nursery:
            results: list[Result] = []

            async def run_cli() -> None:
                args = ["tail", "post:x", "user:carol", "--url", server.url,
                        "--data-dir", str(tmp_path), "--limit", "3"]  # fmt: skip
                results.append(await invoke_in_thread(runner, args))

            nursery.start_soon(run_cli)
            await wait_for_subscribers(server, 2)
            await publish(server, "post:x", {"n": 1}, {"text": "ünïcode ✓"})
            await publish(server, "user:carol", {"for": "carol"})
    (result,) = results
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in lines(result)] == [
        {"channel": "post:x", "offset": 1, "data": {"n": 1}},
        {"channel": "post:x", "offset": 2, "data": {"text": "ünïcode ✓"}},
        {"channel": "user:carol", "offset": 1, "data": {"for": "carol"}},
    ]
    assert "tail: subscribed to post:x at offset 0" in result.stderr


async def test_tail_command_with_an_invalid_token_surfaces_the_auth_error(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`starling tail --token` with a token the server rejects exits 1 with the 4001 close and how to mint one."""  # noqa: E501
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server:
            args = ["tail", "post:1", "--url", server.url, "--token", "not-a-token"]
            result = await invoke_in_thread(runner, args)
    assert result.exit_code == 1, result.output
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: the server closed the connection: 4001 invalid token (")
    assert "starling token USER" in error
