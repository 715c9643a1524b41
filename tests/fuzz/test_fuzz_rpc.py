"""``POST /rpc`` fuzzed: the whole server in this process, garbage over real HTTP.

The server runs on the test's trio thread (:func:`tests.in_process.serving`); the
cases run in a worker thread with blocking clients (:mod:`tests.fuzz.live`). Every
reply must be a valid JSON-RPC 2.0 response to its payload, or the documented HTTP
status (docs/api.md: 204 for notifications only, 413 over ``--max-body-bytes``, 405 for
another verb, 400 for HTTP that is not HTTP), and afterwards ``system.health`` shows
every child running and none restarted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.budget import fuzzing
from tests.fuzz.corpus import NASTIES, MiB, check_replies, mutated, payloads, request
from tests.fuzz.live import post, raw_http, tree_problems
from tests.in_process import serving

LIMIT = 1 * MiB
"""``--max-body-bytes`` by default."""


def check_post(client: httpx.Client, payload: bytes) -> None:
    """POST ``payload``: 413 over the body limit, else 200 with a valid answer or 204."""
    status, body = post(client, payload)
    if len(payload) > LIMIT:
        assert status == 413, (status, body[:200])
        assert json.loads(body)["error"]["code"] == -32600
        return
    assert status in (200, 204), (payload[:200], status, body[:200])
    check_replies(payload, body if status == 200 else None)


async def test_every_nasty_gets_a_valid_reply_and_nothing_restarts(tmp_path: Path) -> None:
    """Each hand-picked nasty POSTed to ``/rpc`` gets 413 (over 1 MiB) or a valid JSON-RPC answer, and no child of the tree restarts."""  # noqa: E501
    async with serving(tmp_path) as server:

        def run() -> list[str]:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for name, payload in NASTIES:
                    try:
                        check_post(client, payload)
                    except AssertionError as failed:
                        raise AssertionError(f"nasty {name!r}: {failed}") from None
                return tree_problems(client)

        assert await trio.to_thread.run_sync(run) == []


async def test_random_payloads_get_valid_replies_and_nothing_restarts(tmp_path: Path) -> None:
    """Random JSON-RPC payloads (envelopes with garbage inside, batches of mixed garbage, mutated bytes) POSTed to ``/rpc`` each get a valid JSON-RPC answer, and no child restarts."""  # noqa: E501
    async with serving(tmp_path) as server:

        def run() -> list[str]:
            with httpx.Client(base_url=server.url, timeout=30) as client:

                @fuzzing(200)
                @given(payloads())
                def case(payload: bytes) -> None:
                    check_post(client, payload)

                case()
                return tree_problems(client)

        assert await trio.to_thread.run_sync(run) == []


def _status(response: bytes) -> int | None:
    """The status of the first response in ``response``: ``None`` when nothing came, 0 for
    HTTP/2 frames (hypercorn speaks h2c to a client that opens with its preface).

    Asserts no response is a 5xx but 501 (a transfer coding the server does not know:
    RFC 9112 section 6.1 asks for it).
    """
    if not response:
        return None
    if response.startswith(b"\x00"):
        return 0
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    assert not re.search(rb"HTTP/1\.1 5(?!01)\d\d ", response), response[:300]
    return int(response[9:12])


def _http(body: bytes = b"{}", *headers: bytes, line: bytes = b"POST /rpc HTTP/1.1") -> bytes:
    head = [line, b"Host: fuzz", *headers]
    if not any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers):
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _upgrade(query: bytes) -> bytes:
    """A WebSocket upgrade request for ``/ws`` with ``query``."""
    return (
        b"GET /ws" + query + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


MALFORMED_HTTP = [
    pytest.param(b"GARBAGE\r\n\r\n", {400, None}, id="garbage-line"),
    pytest.param(b"\x00\x01\x02\r\n\r\n", {400, None}, id="binary-line"),
    pytest.param(b"GET /\r\n\r\n", {400, None}, id="http-0.9"),
    pytest.param(_http(line=b"POST /rpc HTTP/9.9"), {200, 400, 505, None}, id="version"),
    pytest.param(_http(line=b"POST /rpc\xff HTTP/1.1"), {400, None}, id="target-not-ascii"),
    pytest.param(
        _http(line=b"POST " + b"/rpc" * 30_000 + b" HTTP/1.1"),
        {400, 414, 431, None},
        id="target-120-kb",
    ),
    pytest.param(_http(b"{}", b"X-Long: " + b"a" * 100_000), {400, 431, None}, id="header-100-kb"),
    pytest.param(_http(b"{}", b"No colon here"), {400, None}, id="header-no-colon"),
    pytest.param(_http(b"{}", b"X-Nul: a\x00b"), {400, None}, id="header-nul"),
    pytest.param(_http(b"{}", b"Content-Length: -1"), {400, None}, id="length-negative"),
    pytest.param(_http(b"{}", b"Content-Length: abc"), {400, None}, id="length-words"),
    pytest.param(
        _http(b"{}", b"Content-Length: 99999999999999999999999"), {400, 413, None}, id="length-huge"
    ),
    pytest.param(
        _http(b"{}", b"Content-Length: 2", b"Content-Length: 3"), {400, None}, id="length-twice"
    ),
    pytest.param(_http(b"{}", b"Content-Length: 10"), {200, 400, None}, id="length-short-body"),
    pytest.param(
        _http(b"zz\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"),
        {400, None},
        id="chunk-size-words",
    ),
    pytest.param(
        _http(b"2\r\n{}\r\n", b"Transfer-Encoding: chunked"),
        {200, 400, None},
        id="chunked-unfinished",
    ),
    pytest.param(
        _http(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: gzip"),
        {400, 501, None},
        id="coding-unknown",
    ),
    pytest.param(
        _http(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked", b"Content-Length: 9"),
        {200, 400, None},
        id="chunked-and-length",
    ),
    pytest.param(_http(b"x" * (LIMIT + 1)), {413}, id="body-over-limit"),
    pytest.param(
        _http(b"100001\r\n" + b"x" * (LIMIT + 1) + b"\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"),
        {413},
        id="chunked-over-limit",
    ),
    pytest.param(_http(b"{}", line=b"PUT /rpc HTTP/1.1"), {405}, id="put"),
    pytest.param(_http(b"", line=b"GET /rpc HTTP/1.1"), {405}, id="get"),
    pytest.param(_http(request(), b"Expect: 100-continue"), {100, 200}, id="expect-continue"),
    pytest.param(_http(request()) + _http(b"[]"), {200}, id="pipelined"),
    pytest.param(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        {0, 400, None},
        id="h2-preface-garbage",
    ),
    pytest.param(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", {400}, id="ws-no-upgrade"),
    pytest.param(
        b"GET /ws?token=\xff HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
        {400, None},
        id="ws-bad-upgrade",
    ),
    pytest.param(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 99\r\n\r\n",
        {400, 426, None},
        id="ws-version",
    ),
    pytest.param(_upgrade(b"?token=%ff%fe&token=&token"), {101}, id="ws-odd-query"),
    pytest.param(_upgrade(b"?" + b"a=%00&" * 2_000), {101, 400, 431, None}, id="ws-long-query"),
]


@pytest.mark.parametrize(("data", "allowed"), MALFORMED_HTTP)
async def test_malformed_http_gets_a_4xx_and_nothing_restarts(
    tmp_path: Path, data: bytes, allowed: set[int | None]
) -> None:
    """HTTP that breaks the protocol gets its 4xx (or the connection closed unanswered), never a 5xx, and no child restarts."""  # noqa: E501
    async with serving(tmp_path) as server:

        def run() -> list[str]:
            response = raw_http(server.url, data, responses=max(1, data.count(b"POST /rpc")))
            assert _status(response) in allowed, response[:300]
            with httpx.Client(base_url=server.url, timeout=30) as client:
                return tree_problems(client)

        assert await trio.to_thread.run_sync(run) == []


async def test_mutated_http_requests_never_get_a_5xx(tmp_path: Path) -> None:
    """A valid ``POST /rpc`` cut, or with bytes put in or replaced anywhere (request line, headers, body), is answered without a 5xx, and no child restarts."""  # noqa: E501
    valid = _http(request("social.counts", {"user": "alice"}))
    async with serving(tmp_path) as server:

        def run() -> list[str]:
            @fuzzing(100)
            @given(st.one_of(mutated(valid), mutated(valid).flatmap(mutated)))
            def case(data: bytes) -> None:
                status = _status(raw_http(server.url, data))
                assert status is None or status < 500, (data, status)

            case()
            with httpx.Client(base_url=server.url, timeout=30) as client:
                return tree_problems(client)

        assert await trio.to_thread.run_sync(run) == []
