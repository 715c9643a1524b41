"""Rate limits: the token bucket and its map with the clock passed in, the session's -32011
replies without sockets, and one end-to-end run through ``starling serve`` (``/ws`` and
``POST /rpc``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from click.testing import CliRunner
from trio_websocket import open_websocket_url
from wsproto import ConnectionType
from wsproto.connection import Connection as FrameParser
from wsproto.events import TextMessage

from actors.realtime import Position, Publication, Recovery
from auth.tokens import issue_token
from cli import main
from cli.guards import Guards
from client import websocket_url
from protocols.jsonrpc import RATE_LIMITED
from protocols.ratelimit import (
    NO_RATE_LIMITS,
    BucketMap,
    Rate,
    RateLimiter,
    RateLimits,
    TokenBucket,
    retry_after_ms,
)
from protocols.websocket.session import Session
from settings import ServeOptions
from tests.in_process import serving

SECRET = b"r" * 32
NOW = 1_700_000_000.0
EIGHT_A_SECOND = Rate(per_second=8, burst=3)
"""Its waits (1/8 s) and the times below are exact in binary floating point."""


# -- the bucket, the map, the limiter: pure, the clock passed in ---------------------------


def test_a_full_bucket_lets_its_burst_through_then_says_how_long_to_wait() -> None:
    """A bucket of burst 3 at 8/s admits 3 requests at once, then refuses the 4th with a
    wait of 0.125 s and takes nothing for it."""
    bucket = TokenBucket(EIGHT_A_SECOND, NOW)
    assert [bucket.take(NOW) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(NOW) == 0.125
    assert bucket.take(NOW) == 0.125  # the refusal took nothing
    assert bucket.tokens(NOW) == 0.0


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    """An empty bucket gains 8 tokens a second: 0.0625 s later one half, 0.125 s later one
    request; after an hour it holds its burst of 3, never more."""
    bucket = TokenBucket(EIGHT_A_SECOND, NOW)
    for _ in range(3):
        bucket.take(NOW)
    assert bucket.take(NOW + 0.0625) == 0.0625
    assert bucket.take(NOW + 0.125) == 0.0
    assert bucket.tokens(NOW + 3600) == 3.0


def test_a_clock_that_goes_back_refills_nothing() -> None:
    """A ``now`` earlier than the last one (a wall clock stepped back) gains no token."""
    bucket = TokenBucket(EIGHT_A_SECOND, NOW)
    for _ in range(3):
        bucket.take(NOW)
    assert bucket.take(NOW - 60) == 0.125
    assert bucket.take(NOW + 0.125) == 0.0


def test_retry_after_is_whole_milliseconds_rounded_up() -> None:
    """A wait of 0.1001 s is 101 ms, and any wait at least 1 ms."""
    assert (retry_after_ms(0.1001), retry_after_ms(1e-9), retry_after_ms(2.0)) == (101, 1, 2000)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("50/100", Rate(per_second=50, burst=100)), ("0.5/1", Rate(per_second=0.5, burst=1))],
)
def test_a_rate_is_read_as_rate_slash_burst(text: str, rate: Rate) -> None:
    """``RATE/BURST`` reads back into the rate it prints as."""
    assert Rate.parse(text) == rate
    assert Rate.parse(str(rate)) == rate


@pytest.mark.parametrize("text", ["50", "0/10", "10/0", "x/1", "-1/5", "inf/5"])
def test_a_malformed_rate_is_refused(text: str) -> None:
    """A rate without a burst, a zero, a negative or an infinite value is a ValueError."""
    with pytest.raises(ValueError, match=r"RATE/BURST|must be|could not convert|invalid literal"):
        Rate.parse(text)


def test_off_means_no_limit() -> None:
    """``off`` (any case) parses as no rate at all."""
    assert Rate.parse("off") is None
    assert Rate.parse(" OFF ") is None


def test_the_bucket_map_keeps_at_most_its_cap_least_recently_used_out_first() -> None:
    """With a cap of 2, a third key evicts the key used least recently (not the oldest
    made), and an evicted key comes back with a full bucket."""
    buckets = BucketMap(EIGHT_A_SECOND, max_entries=2)
    for _ in range(3):
        buckets.bucket("a", NOW).take(NOW)
    buckets.bucket("b", NOW).take(NOW)
    buckets.bucket("a", NOW)  # a is now the most recently used
    buckets.bucket("c", NOW)
    assert (len(buckets), "a" in buckets, "b" in buckets, buckets.evictions) == (2, True, False, 1)
    assert buckets.bucket("a", NOW).take(NOW) > 0  # a kept its empty bucket
    buckets.bucket("b", NOW)  # evicts c
    assert buckets.bucket("b", NOW).tokens(NOW) == 3.0


def test_twenty_times_more_users_than_the_cap_keep_the_map_at_its_cap() -> None:
    """20,000 users calling once each leave the per-token map at its ``max_tracked`` of 1,000
    buckets, the other 19,000 evicted."""
    limiter = RateLimiter(RateLimits(max_tracked=1_000))
    for n in range(20_000):
        limiter.admit(NOW, None, f"user-{n}")
    statistics = limiter.statistics()
    assert (statistics.tracked_tokens, statistics.evictions) == (1_000, 19_000)


def test_users_are_limited_per_connection_and_per_token_services_not_by_default() -> None:
    """By default a user's connection gets its burst of 100 then waits; two connections of
    one user share the user's 200; a service's connection is never limited."""
    limiter = RateLimiter()
    first = limiter.connection_bucket(NOW, privileged=False)
    second = limiter.connection_bucket(NOW, privileged=False)
    third = limiter.connection_bucket(NOW, privileged=False)
    assert [limiter.admit(NOW, first, "alice") for _ in range(100)] == [0.0] * 100
    assert limiter.admit(NOW, first, "alice") > 0  # the connection's bucket
    assert [limiter.admit(NOW, second, "alice") for _ in range(100)] == [0.0] * 100
    assert limiter.admit(NOW, third, "alice") > 0  # the user's bucket: 200 used
    assert third is not None
    assert third.tokens(NOW) == 100  # given back: not the connection's
    assert limiter.admit(NOW, third, "bob") == 0.0  # another user is not affected

    service = limiter.connection_bucket(NOW, privileged=True)
    assert service is None
    waits = [limiter.admit(NOW, service, "feeds", privileged=True) for _ in range(100_000)]
    assert not any(waits)
    assert limiter.statistics().limited == 2


def test_no_rate_limits_means_no_bucket_at_all() -> None:
    """With :data:`NO_RATE_LIMITS`, no connection gets a bucket and no user is tracked."""
    limiter = RateLimiter(NO_RATE_LIMITS)
    assert limiter.connection_bucket(NOW, privileged=False) is None
    assert not any(limiter.admit(NOW, None, "alice") for _ in range(10_000))
    assert limiter.statistics().tracked_tokens == 0


def test_http_clients_are_limited_per_address_only_when_asked() -> None:
    """``rpc_client`` off (the default) admits any address; set, it limits each address
    on its own."""
    assert not any(RateLimiter().admit_client(NOW, "10.0.0.1") for _ in range(10_000))
    limiter = RateLimiter(RateLimits(rpc_client=Rate(per_second=1, burst=2)))
    assert [limiter.admit_client(NOW, "10.0.0.1") for _ in range(3)][2] == 1.0
    assert limiter.admit_client(NOW, "10.0.0.2") == 0.0
    assert limiter.statistics().tracked_clients == 2


def test_the_serve_flags_set_the_rates_and_timeouts() -> None:
    """``Guards.apply`` puts the flags' timeouts and rates in the options ``serve`` runs
    with, the WebSocket ones in its session limits."""
    limits = RateLimits(user_connection=Rate(per_second=5, burst=10), privileged_token=None)
    guards = Guards(
        first_bytes_timeout=1.0,
        keep_alive_timeout=2.0,
        body_timeout=3.0,
        ws_handshake_timeout=4.0,
        ws_auth_timeout=5.0,
        ws_idle_timeout=6.0,
        rate_limits=limits,
    )
    options = guards.apply(ServeOptions())
    assert (options.first_bytes_timeout, options.keep_alive_timeout) == (1.0, 2.0)
    assert (options.body_timeout, options.ws_handshake_timeout) == (3.0, 4.0)
    assert (options.ws_limits.auth_timeout, options.ws_limits.idle_timeout) == (5.0, 6.0)
    assert options.rate_limits is limits


def test_a_malformed_rate_flag_is_a_usage_error(runner: CliRunner) -> None:
    """``starling serve --rate-user-token 100`` (no burst) stops before serving, exit code 2,
    saying what a rate looks like."""
    result = runner.invoke(main, ["serve", "--rate-user-token", "100"])
    assert result.exit_code == 2
    assert "RATE/BURST" in result.output


# -- the session: -32011 replies, sans I/O -----------------------------------------------


class _NoHub:
    """A hub the sessions here never reach (they call ping and connect only)."""

    def subscribe(self, session: Session, channel: str, /) -> Position:
        raise AssertionError("not used")

    def unsubscribe(self, session: Session, channel: str, /) -> None:
        pass

    def position(self, channel: str, /) -> Position:
        raise AssertionError("not used")

    def since(self, channel: str, offset: int, epoch: str, /) -> Recovery:
        raise AssertionError("not used")

    def latest(self, channel: str, limit: int, /) -> list[Publication]:
        raise AssertionError("not used")


def _session(limiter: RateLimiter, *, service: bool = False) -> Session:
    token = issue_token(SECRET, "alice", ttl_seconds=3600, now=NOW, service=service)
    return Session(_NoHub(), SECRET, NOW, token=token, rate_limiter=limiter)


def _replies(session: Session) -> list[Any]:
    """Every message the session queued, decoded as a client reads them."""
    chunks = session.data_to_send()
    data = b"".join(bytes(chunk) for chunk in chunks)
    session.sent(len(data))
    parser = FrameParser(ConnectionType.CLIENT)
    parser.receive_data(data)
    return [json.loads(e.data) for e in parser.events() if isinstance(e, TextMessage)]


def _ping(id: int | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": "ping"}
    if id is not None:
        request["id"] = id
    return request


def test_a_request_over_the_rate_gets_32011_with_retry_after_and_the_session_stays_open() -> None:
    """In a batch of 5 pings at burst 3, 8/s, the last two get -32011 ``rate limited`` with
    ``retry_after_ms`` 125 (each member counts); 0.125 s later a ping is answered again."""
    limits = RateLimits(user_connection=EIGHT_A_SECOND, user_token=None)
    session = _session(RateLimiter(limits))
    session.receive_text(json.dumps([_ping(n) for n in range(5)]), NOW)
    (batch,) = _replies(session)
    assert [reply.get("result") for reply in batch[:3]] == [{}, {}, {}]
    refused = {
        "code": RATE_LIMITED,
        "message": "rate limited",
        "data": {"retry_after_ms": 125},
    }
    assert [(reply["id"], reply["error"]) for reply in batch[3:]] == [(3, refused), (4, refused)]
    assert session.close_reason(NOW) is None
    session.receive_text(json.dumps(_ping(9)), NOW + 0.125)
    assert _replies(session) == [{"jsonrpc": "2.0", "result": {}, "id": 9}]


def test_a_notification_over_the_rate_is_not_run_but_counted() -> None:
    """Notifications are never answered, limited or not: the ones over the rate are counted
    in the limiter's statistics."""
    limiter = RateLimiter(RateLimits(user_connection=EIGHT_A_SECOND, user_token=None))
    session = _session(limiter)
    for _ in range(5):
        session.receive_text(json.dumps(_ping()), NOW)
    assert _replies(session) == []
    assert limiter.statistics().limited == 2


def test_a_service_token_is_not_limited_by_the_user_rate() -> None:
    """A session opened with a service token takes no token from a user's bucket: 1,000
    pings at once are all answered."""
    limits = RateLimits(user_connection=EIGHT_A_SECOND, user_token=EIGHT_A_SECOND)
    session = _session(RateLimiter(limits), service=True)
    for n in range(10):
        session.receive_text(json.dumps([_ping(100 * n + i) for i in range(100)]), NOW)
    replies = [reply for batch in _replies(session) for reply in batch]
    assert len(replies) == 1_000
    assert all("result" in reply for reply in replies)


def test_before_authentication_the_connection_has_the_user_rate() -> None:
    """An unauthenticated session is limited like a user's connection (its ``connect``
    attempts too), and authenticating as a service lifts the limit."""
    limiter = RateLimiter(RateLimits(user_connection=EIGHT_A_SECOND, user_token=None))
    session = Session(_NoHub(), SECRET, NOW, rate_limiter=limiter)
    session.receive_text(json.dumps([_ping(n) for n in range(4)]), NOW)
    (batch,) = _replies(session)
    assert batch[3]["error"]["code"] == RATE_LIMITED
    service = issue_token(SECRET, "feeds", ttl_seconds=3600, now=NOW, service=True)
    session.receive_text(
        json.dumps({"jsonrpc": "2.0", "id": 5, "method": "connect", "params": {"token": service}}),
        NOW + 0.125,
    )
    assert _replies(session)[0]["result"]["user"] == "feeds"
    session.receive_text(json.dumps([_ping(n) for n in range(50)]), NOW + 0.125)
    (batch,) = _replies(session)
    assert all("result" in reply for reply in batch)


# -- end to end: starling serve, /ws and POST /rpc ------------------------------------------


async def test_a_flooding_user_is_limited_while_another_is_served(tmp_path: Path) -> None:
    """Through ``starling serve`` with a user rate of 5/s, burst 5: a user's client flooding
    pings on ``/ws`` gets -32011 with ``retry_after_ms``, stays connected and is answered
    again after waiting; another user's client is answered all along; ``POST /rpc`` over
    its per-address rate gets 429 with ``Retry-After`` and a -32011 body, on a keep-alive
    connection that is then answered again."""
    rate = Rate(per_second=5, burst=5)
    limits = RateLimits(user_connection=rate, user_token=rate, rpc_client=rate)
    with trio.fail_after(60):
        async with serving(tmp_path, rate_limits=limits) as server:
            url = websocket_url(server.url)
            async with (
                open_websocket_url(f"{url}?token={server.token('mallory')}") as flood,
                open_websocket_url(f"{url}?token={server.token('alice')}") as calm,
            ):
                await flood.send_message(json.dumps([_ping(n) for n in range(50)]))
                replies = json.loads(await flood.get_message())
                refused = [reply for reply in replies if "error" in reply]
                assert len(refused) == 45
                assert {reply["error"]["code"] for reply in refused} == {RATE_LIMITED}
                wait = max(reply["error"]["data"]["retry_after_ms"] for reply in refused)
                for n in range(5):
                    await calm.send_message(json.dumps(_ping(n)))
                    assert json.loads(await calm.get_message())["result"] == {}
                await trio.sleep(wait / 1000)
                await flood.send_message(json.dumps(_ping(99)))
                assert json.loads(await flood.get_message()) == {
                    "jsonrpc": "2.0",
                    "result": {},
                    "id": 99,
                }

            body = {"jsonrpc": "2.0", "id": 1, "method": "system.health"}
            async with httpx.AsyncClient(base_url=server.url) as http:
                answers = [await http.post("/rpc", json=body) for _ in range(6)]
                assert [answer.status_code for answer in answers] == [200] * 5 + [429]
                limited = answers[-1]
                assert limited.json()["error"]["code"] == RATE_LIMITED
                assert int(limited.headers["retry-after"]) >= 1
                await trio.sleep(limited.json()["error"]["data"]["retry_after_ms"] / 1000)
                assert "connection" not in limited.headers  # kept open (no "close")
                assert (await http.post("/rpc", json=body)).status_code == 200
