"""The WebSocket client protocol without sockets: auth, channels, recovery, outbox, limits.

Every time is passed in explicitly (epoch seconds); the hub is a real
:class:`actors.realtime.Histories` behind the :class:`protocols.websocket.session.Hub`
interface. What a session writes is read back as a client reads it: wsproto's
client-side frame parser over the bytes of :meth:`Session.data_to_send`.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection as FrameParser
from wsproto.events import TextMessage

from actors.realtime import Histories, Position, Publication, Recovery
from auth.tokens import issue_token
from protocols.jsonrpc import Access, Dispatcher, NoParams
from protocols.websocket.codes import (
    CLOSE_IDLE,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNSUPPORTED_DATA,
)
from protocols.websocket.frames import pub_frame, pub_notification
from protocols.websocket.session import DEFAULT_LIMITS, KiB, Limits, Session

SECRET = b"s" * 32
NOW = 1_700_000_000.0
TTL = 3600


class MemoryHub:
    """The publisher side in memory: a real ``Histories`` and a subscriber registry.

    ``publish`` appends and offers to every subscriber in one step, as the
    :class:`~protocols.ws_session.Hub` contract asks.
    """

    def __init__(self, *, size: int = 100) -> None:
        epochs = (f"e{n}" for n in itertools.count(1))
        self.histories = Histories(size=size, epochs=lambda _channel: next(epochs))
        self.subscribers: defaultdict[str, set[Session]] = defaultdict(set)
        self.now = 0.0

    def subscribe(self, session: Session, channel: str, /) -> Position:
        self.subscribers[channel].add(session)
        return self.histories.position(channel)

    def unsubscribe(self, session: Session, channel: str, /) -> None:
        self.subscribers[channel].discard(session)

    def position(self, channel: str, /) -> Position:
        return self.histories.position(channel)

    def since(self, channel: str, offset: int, epoch: str, /) -> Recovery:
        return self.histories.since(channel, offset, epoch, self.now)

    def latest(self, channel: str, limit: int, /) -> Sequence[Publication]:
        return self.histories.latest(channel, limit, self.now)

    def publish(self, channel: str, data: Any) -> Publication:
        publication = self.histories.append(channel, json.dumps(data).encode(), self.now)
        frame = pub_frame(channel, publication.offset, publication.data)
        for session in self.subscribers[channel]:
            session.offer(channel, publication.offset, frame)
        return publication


class Wire:
    """The client's end of a session's output: bytes written, parsed by wsproto as a client."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.parser = FrameParser(ConnectionType.CLIENT)
        self.messages: deque[bytes] = deque()
        self.writes = 0
        self.before_reply: list[Any] = []
        self._parts: list[str] = []

    def write(self, limit: int | None = None) -> int:
        """Write the session's output as one socket write taking at most ``limit`` bytes."""
        chunks = self.session.data_to_send()
        data = b"".join(bytes(chunk) for chunk in chunks)[:limit]
        if not data:
            return 0
        self.writes += 1
        self.session.sent(len(data))
        self.parser.receive_data(data)
        for event in self.parser.events():
            assert isinstance(event, TextMessage), event
            self._parts.append(event.data)
            if event.message_finished:
                self.messages.append("".join(self._parts).encode())
                self._parts.clear()
        return len(data)

    def take(self) -> bytes | None:
        """The next whole text message the client has, writing the session's output if none."""
        if not self.messages:
            self.write()
        return self.messages.popleft() if self.messages else None


_wires: dict[Session, Wire] = {}


def wire(session: Session) -> Wire:
    """The one :class:`Wire` of ``session``."""
    if session not in _wires:
        _wires[session] = Wire(session)
    return _wires[session]


def take_frame(session: Session) -> bytes | None:
    """The next text message ``session`` wrote, as the client reads it, or ``None``."""
    return wire(session).take()


def token(user: str = "alice", *, ttl: int = TTL, now: float = NOW) -> str:
    return issue_token(SECRET, user, ttl_seconds=ttl, now=now)


def open_session(
    hub: MemoryHub | None = None, *, user: str | None = "alice", limits: Limits = DEFAULT_LIMITS
) -> Session:
    """A session opened at ``NOW``, authenticated by ``?token=`` as ``user`` (``None``: not)."""
    return Session(
        hub or MemoryHub(),
        SECRET,
        NOW,
        token=None if user is None else token(user),
        limits=limits,
    )


def frames(session: Session) -> list[Any]:
    """Every frame waiting, decoded."""
    out = []
    while (frame := take_frame(session)) is not None:
        out.append(json.loads(frame))
    return out


def call(session: Session, method: str, params: Any = None, *, now: float = NOW) -> Any:
    """Send one request with id 1 and return its decoded reply.

    Frames queued ahead of the reply (pushes) are read first and kept in
    ``wire(session).before_reply``.
    """
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        message["params"] = params
    session.receive_text(json.dumps(message), now)
    client = wire(session)
    client.before_reply = []
    while (frame := take_frame(session)) is not None:
        reply = json.loads(frame)
        if isinstance(reply, dict) and reply.get("id") == 1:
            return reply
        client.before_reply.append(reply)
    raise AssertionError("no reply")


def result(session: Session, method: str, params: Any = None, *, now: float = NOW) -> Any:
    reply = call(session, method, params, now=now)
    assert "error" not in reply, reply
    return reply["result"]


def error(session: Session, method: str, params: Any = None, *, now: float = NOW) -> Any:
    reply = call(session, method, params, now=now)
    assert "result" not in reply, reply
    return reply["error"]


def pubs(frame: Any) -> list[tuple[str, int, Any]]:
    """The ``(channel, offset, data)`` of every ``pub`` notification in one frame."""
    messages = frame if isinstance(frame, list) else [frame]
    assert all(m["method"] == "pub" and "id" not in m for m in messages)
    return [(m["params"]["channel"], m["params"]["offset"], m["params"]["data"]) for m in messages]


# -- authentication ----------------------------------------------------------------


def test_connect_with_a_valid_token_authenticates() -> None:
    """``connect`` with a valid token names the user and its expiry, and opens the other methods."""
    session = open_session(user=None)

    assert result(session, "connect", {"token": token("alice")}) == {
        "user": "alice",
        "expires_at": NOW + TTL,
    }
    assert session.user == "alice"
    assert session.expires_at == NOW + TTL
    assert result(session, "subscribe", {"channel": "post:1"})["channel"] == "post:1"


def test_token_at_connect_time_authenticates() -> None:
    """A valid ``?token=`` given to the constructor authenticates without a ``connect``."""
    session = open_session(user="bob")

    assert session.user == "bob"
    assert session.close_reason(NOW) is None


def test_connect_with_an_expired_token_is_unauthorized() -> None:
    """An expired token gets -32003 "unauthorized" (reason "token expired") and leaves the session unauthenticated."""  # noqa: E501
    session = open_session(user=None)

    err = error(session, "connect", {"token": token(ttl=10, now=NOW - 20)})

    assert err == {"code": -32003, "message": "unauthorized", "data": {"reason": "token expired"}}
    assert session.user is None
    assert session.close_reason(NOW) is None


def test_connect_with_an_invalid_token_is_unauthorized() -> None:
    """A token signed with another secret gets -32003 "unauthorized" (reason "token invalid")."""
    session = open_session(user=None)
    forged = issue_token(b"o" * 32, "alice", now=NOW)

    err = error(session, "connect", {"token": forged})

    assert (err["code"], err["message"], err["data"]["reason"]) == (
        -32003,
        "unauthorized",
        "token invalid",
    )
    assert session.user is None


def test_before_auth_only_connect_and_ping_are_served() -> None:
    """Without a token, ``ping`` works but ``subscribe`` and ``history`` are refused with -32003."""
    session = open_session(user=None)

    assert result(session, "ping") == {}
    for method in ("subscribe", "history"):
        err = error(session, method, {"channel": "post:1"})
        assert err["code"] == -32003
        assert err["data"] == {"reason": "not authenticated"}
    assert session.subscriptions == frozenset()


def test_auth_timeout_closes_4001() -> None:
    """A session not authenticated within ``auth_timeout`` seconds is told to close with 4001."""
    session = open_session(user=None, limits=Limits(auth_timeout=5))

    assert session.deadline == NOW + 5
    assert session.close_reason(NOW + 4.999) is None
    assert session.close_reason(NOW + 5) == (4001, "authentication timeout")
    assert session.close_reason(NOW + 6) == (CLOSE_UNAUTHENTICATED, "authentication timeout")


def test_authenticated_session_has_no_auth_timeout() -> None:
    """Once authenticated, the auth timeout no longer applies."""
    session = open_session(user=None, limits=Limits(auth_timeout=5, idle_timeout=100))
    result(session, "connect", {"token": token()}, now=NOW + 1)

    assert session.close_reason(NOW + 50) is None


def test_bad_token_at_connect_time_closes_at_once() -> None:
    """An invalid ``?token=`` closes with 4001, an expired one with 4003, before any frame."""
    invalid = Session(MemoryHub(), SECRET, NOW, token="not.a.token")
    expired = Session(MemoryHub(), SECRET, NOW, token=token(ttl=1, now=NOW - 5))

    assert invalid.close_reason(NOW) == (CLOSE_UNAUTHENTICATED, "invalid token")
    assert expired.close_reason(NOW) == (CLOSE_TOKEN_EXPIRED, "token expired")
    assert take_frame(invalid) is None


def test_token_expiry_closes_4003() -> None:
    """When ``now`` reaches the token's ``exp`` the session is told to close with 4003."""
    session = open_session(limits=Limits(idle_timeout=10 * TTL))

    assert session.deadline == NOW + TTL
    assert session.close_reason(NOW + TTL - 1) is None
    assert session.close_reason(NOW + TTL) == (4003, "token expired")


def test_connect_again_refreshes_the_expiry_for_the_same_user_only() -> None:
    """A second ``connect`` with a newer token of the same user moves the expiry; another user's token is forbidden."""  # noqa: E501
    session = open_session(limits=Limits(idle_timeout=10 * TTL))
    later = NOW + TTL - 10

    result(session, "connect", {"token": token(now=later)}, now=later)
    err = error(session, "connect", {"token": token("mallory", now=later)}, now=later)

    assert session.expires_at == later + TTL
    assert session.close_reason(NOW + TTL) is None
    assert (err["code"], err["message"]) == (-32003, "forbidden")
    assert session.user == "alice"


# -- channels --------------------------------------------------------------------


def test_post_channels_are_public() -> None:
    """Any user may subscribe to a ``post:`` channel; the reply gives its position."""
    session = open_session(user="bob")

    assert result(session, "subscribe", {"channel": "post:42"}) == {
        "channel": "post:42",
        "offset": 0,
        "epoch": "e1",
    }
    assert session.subscriptions == {"post:42"}


def test_own_user_channel_is_allowed() -> None:
    """A user may subscribe to its own ``user:<id>`` channel."""
    session = open_session(user="alice")

    assert result(session, "subscribe", {"channel": "user:alice"})["channel"] == "user:alice"


def test_another_users_channel_is_forbidden() -> None:
    """Subscribing to another user's channel gets -32003 "forbidden" and subscribes nothing."""
    hub = MemoryHub()
    session = open_session(hub, user="alice")

    err = error(session, "subscribe", {"channel": "user:bob"})

    assert err == {"code": -32003, "message": "forbidden", "data": {"channel": "user:bob"}}
    assert session.subscriptions == frozenset()
    assert not hub.subscribers["user:bob"]


def test_system_channels_are_for_operators_only() -> None:
    """``system:`` channels refuse a user's token and accept an operator's (``role``
    claim), by ``?token=`` and by ``connect``."""
    session = open_session(user="alice")
    err = error(session, "subscribe", {"channel": "system:dashboard"})
    assert (err["code"], err["message"]) == (-32003, "forbidden")
    operator = Session(
        MemoryHub(), SECRET, NOW, token=issue_token(SECRET, "ops", now=NOW, operator=True)
    )
    assert result(operator, "subscribe", {"channel": "system:dashboard"})["offset"] == 0
    later = Session(MemoryHub(), SECRET, NOW)
    result(later, "connect", {"token": issue_token(SECRET, "ops", now=NOW, operator=True)})
    assert result(later, "subscribe", {"channel": "system:dashboard"})["offset"] == 0


@pytest.mark.parametrize("name", ["room:1", "post:", "post", "post:a b", "user:" + "x" * 65])
def test_malformed_channel_names_are_invalid_params(name: str) -> None:
    """A malformed channel name gets -32602 with a detail."""
    session = open_session()

    err = error(session, "subscribe", {"channel": name})

    assert err["code"] == -32602
    assert "channel" in err["data"]["detail"]


def test_subscribing_twice_is_idempotent() -> None:
    """A second subscribe to a channel succeeds, keeps one subscription and queues nothing twice."""
    hub = MemoryHub()
    session = open_session(hub)
    first = result(session, "subscribe", {"channel": "post:1"})
    hub.publish("post:1", {"n": 1})
    frames(session)
    hub.publish("post:1", {"n": 2})

    again = result(session, "subscribe", {"channel": "post:1"})

    assert first == {"channel": "post:1", "offset": 0, "epoch": "e1"}
    assert again == {"channel": "post:1", "offset": 2, "epoch": "e1"}
    assert session.subscriptions == {"post:1"}
    assert [pubs(f) for f in wire(session).before_reply] == [[("post:1", 2, {"n": 2})]]
    assert frames(session) == []


def test_subscribing_twice_with_since_recovers_up_to_what_was_delivered() -> None:
    """A repeated subscribe with ``since`` recovers up to what precedes its reply; later pushes continue from there."""  # noqa: E501
    hub = MemoryHub()
    session = open_session(hub)
    result(session, "subscribe", {"channel": "post:1"})
    hub.publish("post:1", {"n": 1})
    hub.publish("post:1", {"n": 2})
    frames(session)
    hub.publish("post:1", {"n": 3})

    again = result(
        session, "subscribe", {"channel": "post:1", "since": {"offset": 0, "epoch": "e1"}}
    )

    assert again["recovered"] is True
    assert [p["offset"] for p in again["publications"]] == [1, 2, 3]
    assert again["offset"] == 3
    hub.publish("post:1", {"n": 4})
    assert [pubs(f) for f in frames(session)] == [[("post:1", 4, {"n": 4})]]


def test_max_subscriptions() -> None:
    """Past ``max_subscriptions`` channels, subscribe gets -32005; re-subscribing a held one still works."""  # noqa: E501
    session = open_session(limits=Limits(max_subscriptions=2))
    result(session, "subscribe", {"channel": "post:1"})
    result(session, "subscribe", {"channel": "post:2"})

    err = error(session, "subscribe", {"channel": "post:3"})

    assert err == {"code": -32005, "message": "too many subscriptions", "data": {"limit": 2}}
    assert result(session, "subscribe", {"channel": "post:2"})["channel"] == "post:2"
    result(session, "unsubscribe", {"channel": "post:1"})
    assert result(session, "subscribe", {"channel": "post:3"})["channel"] == "post:3"


def test_unsubscribe_stops_delivery_after_its_reply() -> None:
    """Publications queued before ``unsubscribe`` precede its reply; none of that channel follow it, the others go on."""  # noqa: E501
    hub = MemoryHub()
    session = open_session(hub)
    result(session, "subscribe", {"channel": "post:1"})
    result(session, "subscribe", {"channel": "post:2"})
    hub.publish("post:1", {"n": 1})
    hub.publish("post:2", {"n": 1})

    assert result(session, "unsubscribe", {"channel": "post:1"}) == {}
    hub.publish("post:1", {"n": 2})
    hub.publish("post:2", {"n": 2})

    assert [pubs(f) for f in wire(session).before_reply] == [
        [("post:1", 1, {"n": 1})],
        [("post:2", 1, {"n": 1})],
    ]
    assert [pubs(f) for f in frames(session)] == [[("post:2", 2, {"n": 2})]]
    assert session not in hub.subscribers["post:1"]


def test_close_leaves_every_channel() -> None:
    """``close()`` unsubscribes the session from every channel in the hub and stops output."""
    hub = MemoryHub()
    woken = []
    session = Session(hub, SECRET, NOW, token=token(), on_ready=lambda: woken.append(1))
    result(session, "subscribe", {"channel": "post:1"})
    result(session, "subscribe", {"channel": "user:alice"})
    hub.publish("post:1", {"n": 1})
    frames(session)
    woken.clear()

    session.close()
    session.close()

    assert not hub.subscribers["post:1"]
    assert not hub.subscribers["user:alice"]
    assert take_frame(session) is None
    assert session.close_reason(NOW) == (1000, "closed")
    assert woken == [], "the writer is gone: close() does not wake it"


# -- recovery and history -----------------------------------------------------------


def test_subscribe_since_recovers_what_was_missed() -> None:
    """Subscribing with the last seen offset and epoch returns exactly the missed publications."""
    hub = MemoryHub()
    for n in range(1, 6):
        hub.publish("post:1", {"n": n})
    session = open_session(hub)

    reply = result(
        session, "subscribe", {"channel": "post:1", "since": {"offset": 3, "epoch": "e1"}}
    )

    assert reply == {
        "channel": "post:1",
        "offset": 5,
        "epoch": "e1",
        "recovered": True,
        "publications": [{"offset": 4, "data": {"n": 4}}, {"offset": 5, "data": {"n": 5}}],
    }


def test_subscribe_since_another_epoch_is_not_recovered() -> None:
    """A ``since`` from another epoch gets ``recovered: false`` and no publication."""
    hub = MemoryHub()
    hub.publish("post:1", {"n": 1})
    session = open_session(hub)

    reply = result(
        session, "subscribe", {"channel": "post:1", "since": {"offset": 0, "epoch": "old"}}
    )

    assert reply["recovered"] is False
    assert reply["publications"] == []
    assert (reply["offset"], reply["epoch"]) == (1, "e1")


def test_subscribe_since_beyond_the_ring_is_not_recovered() -> None:
    """A ``since`` older than the history holds cannot be recovered (no partial replay)."""
    hub = MemoryHub(size=3)
    for n in range(1, 8):
        hub.publish("post:1", {"n": n})
    session = open_session(hub)

    reply = result(
        session, "subscribe", {"channel": "post:1", "since": {"offset": 2, "epoch": "e1"}}
    )

    assert (reply["recovered"], reply["publications"], reply["offset"]) == (False, [], 7)


def test_recovered_then_live_publications_arrive_once_in_order() -> None:
    """After a recovering subscribe, its reply comes first and live pushes continue after it."""
    hub = MemoryHub()
    hub.publish("post:1", {"n": 1})
    session = open_session(hub)
    session.receive_text(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "subscribe",
                "params": {"channel": "post:1", "since": {"offset": 0, "epoch": "e1"}},
            }
        ),
        NOW,
    )
    hub.publish("post:1", {"n": 2})

    reply, push = frames(session)

    assert [p["offset"] for p in reply["result"]["publications"]] == [1]
    assert pubs(push) == [("post:1", 2, {"n": 2})]


def test_history_latest() -> None:
    """``history`` gives the newest ``limit`` publications, oldest first, and the position."""
    hub = MemoryHub()
    for n in range(1, 6):
        hub.publish("post:1", {"n": n})
    session = open_session(hub)

    reply = result(session, "history", {"channel": "post:1", "limit": 2})
    everything = result(session, "history", {"channel": "post:1"})

    assert reply == {
        "publications": [{"offset": 4, "data": {"n": 4}}, {"offset": 5, "data": {"n": 5}}],
        "offset": 5,
        "epoch": "e1",
    }
    assert [p["offset"] for p in everything["publications"]] == [1, 2, 3, 4, 5]
    assert session.subscriptions == frozenset()


def test_history_since_pages_forward() -> None:
    """``history`` with ``since`` gives the first ``limit`` publications after it."""
    hub = MemoryHub()
    for n in range(1, 6):
        hub.publish("post:1", {"n": n})
    session = open_session(hub)

    page = result(
        session, "history", {"channel": "post:1", "since": {"offset": 1, "epoch": "e1"}, "limit": 2}
    )

    assert [p["offset"] for p in page["publications"]] == [2, 3]
    assert (page["offset"], page["epoch"]) == (5, "e1")


def test_history_since_a_lost_position_is_an_error() -> None:
    """``history`` since a position the channel no longer holds gets -32006 with the current position."""  # noqa: E501
    hub = MemoryHub()
    hub.publish("post:1", {"n": 1})
    session = open_session(hub)

    err = error(session, "history", {"channel": "post:1", "since": {"offset": 0, "epoch": "gone"}})

    assert err == {
        "code": -32006,
        "message": "unrecoverable position",
        "data": {"channel": "post:1", "offset": 1, "epoch": "e1"},
    }


@pytest.mark.parametrize("limit", [0, 101, -1, "10", 1.5])
def test_history_limit_outside_1_to_100_is_invalid(limit: Any) -> None:
    """A ``history`` limit that is not an integer in 1..100 gets -32602."""
    session = open_session()

    assert error(session, "history", {"channel": "post:1", "limit": limit})["code"] == -32602


def test_history_obeys_channel_permissions() -> None:
    """``history`` of another user's channel is forbidden, as subscribing is."""
    session = open_session(user="alice")

    assert error(session, "history", {"channel": "user:bob"})["message"] == "forbidden"


# -- pushes and the outbox -------------------------------------------------------------


def test_pub_frame_is_the_spliced_data_equal_to_json_dumps() -> None:
    """A ``pub`` frame splices the rendered bytes and equals what ``json.dumps`` gives for the message."""  # noqa: E501
    session = open_session()
    result(session, "subscribe", {"channel": "post:x.y@z"})
    data = {"text": 'héllo "there"', "n": [1, 2.5, None], "nested": {"ok": True}}
    rendered = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    assert session.offer("post:x.y@z", 12, pub_frame("post:x.y@z", 12, rendered)) is True
    frame = take_frame(session)

    expected = {
        "jsonrpc": "2.0",
        "method": "pub",
        "params": {"channel": "post:x.y@z", "offset": 12, "data": data},
    }
    assert frame == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    assert frame == pub_notification("post:x.y@z", 12, rendered)
    assert rendered in frame


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 70_000])
def test_pub_frames_of_every_header_size_parse(size: int) -> None:
    """Frames with 7-bit, 16-bit and 64-bit payload lengths are read back whole by wsproto."""
    session = open_session(limits=Limits(max_outbox_bytes=1 << 20))
    result(session, "subscribe", {"channel": "post:1"})
    rendered = json.dumps({"pad": "x" * size}).encode()

    session.offer("post:1", 1, pub_frame("post:1", 1, rendered))

    assert take_frame(session) == pub_notification("post:1", 1, rendered)


def test_subscribers_of_a_channel_are_offered_the_same_frame_object() -> None:
    """Every subscriber queues the publisher's one frame object: built once, never copied."""
    hub = MemoryHub()
    sessions = [open_session(hub) for _ in range(3)]
    for session in sessions:
        result(session, "subscribe", {"channel": "post:1"})
    hub.publish("post:1", {"n": 1})

    heads = [session.data_to_send()[0] for session in sessions]

    assert all(head is heads[0] for head in heads)


def test_pending_pushes_leave_in_one_write_one_frame_each() -> None:
    """Three pending pushes go out in one write as three frames, one notification each, in offset order."""  # noqa: E501
    hub = MemoryHub()
    session = open_session(hub)
    result(session, "subscribe", {"channel": "post:1"})
    for n in range(1, 4):
        hub.publish("post:1", {"n": n})
    client = wire(session)
    writes = client.writes

    got = [json.loads(frame) for frame in iter(lambda: take_frame(session), None)]

    assert client.writes == writes + 1
    assert [pubs(message) for message in got] == [[("post:1", n, {"n": n})] for n in (1, 2, 3)]
    assert session.pending_bytes == 0


def test_one_write_takes_at_most_max_frames_buffers() -> None:
    """``data_to_send`` gives at most ``max_frames`` buffers; the rest follow in order."""
    hub = MemoryHub(size=200)
    session = open_session(hub)
    result(session, "subscribe", {"channel": "post:1"})
    for n in range(1, 11):
        hub.publish("post:1", {"n": n})

    assert len(session.data_to_send(max_frames=4)) == 4
    offsets = [offset for frame in frames(session) for _, offset, _ in pubs(frame)]
    assert offsets == list(range(1, 11))


@given(cuts=st.lists(st.integers(1, 97), min_size=1, max_size=40))
def test_a_partial_write_resumes_exactly_where_it_stopped(cuts: list[int]) -> None:
    """Writes cut at arbitrary byte counts deliver every frame whole, once, in order."""
    hub = MemoryHub()
    session = open_session(hub)
    result(session, "subscribe", {"channel": "post:1"})
    for n in range(1, 8):
        hub.publish("post:1", {"n": n, "pad": "é" * n})
    client = wire(session)

    for cut in cuts:
        client.write(cut)
    got = frames(session)

    assert [offset for frame in got for _, offset, _ in pubs(frame)] == list(range(1, 8))
    assert session.pending_bytes == 0


def test_replies_and_pushes_keep_the_order_they_were_queued_in() -> None:
    """A reply queued after pushes follows them: the outbox is one ordered byte stream."""
    hub = MemoryHub()
    session = open_session(hub)
    result(session, "subscribe", {"channel": "post:1"})
    hub.publish("post:1", {"n": 1})
    hub.publish("post:1", {"n": 2})
    session.receive_text('{"jsonrpc":"2.0","method":"ping","id":"p"}', NOW)

    first, second, reply = frames(session)

    assert [offset for _, offset, _ in pubs(first) + pubs(second)] == [1, 2]
    assert reply == {"jsonrpc": "2.0", "result": {}, "id": "p"}


def test_offers_for_channels_not_subscribed_are_refused() -> None:
    """``offer`` of a channel the session does not hold returns False and queues nothing."""
    session = open_session()

    assert session.offer("post:1", 1, b"{}") is False
    assert take_frame(session) is None


def test_slow_consumer_closes_4008() -> None:
    """When an offer would overflow the byte-bounded outbox, the session closes 4008 and refuses all further offers."""  # noqa: E501
    session = open_session(limits=Limits(max_outbox_bytes=1000))
    result(session, "subscribe", {"channel": "post:1"})
    data = b'{"pad":"' + b"x" * 300 + b'"}'
    size = len(pub_frame("post:1", 1, data))

    accepted = [session.offer("post:1", n, pub_frame("post:1", n, data)) for n in range(1, 5)]

    assert accepted == [True] * (1000 // size) + [False] * (4 - 1000 // size)
    assert session.close_reason(NOW) == (CLOSE_SLOW_CONSUMER, "slow consumer")
    assert session.offer("post:1", 5, b"{}") is False
    assert take_frame(session) is None
    assert session.pending_bytes == 0
    assert session.statistics().peak_pending_bytes <= 1000


def test_closing_finishes_a_frame_already_begun() -> None:
    """A close keeps the rest of a partly written frame (so the close frame after it parses) and drops the frames not begun."""  # noqa: E501
    hub = MemoryHub()
    session = open_session(hub)
    result(session, "subscribe", {"channel": "post:1"})
    for n in range(1, 4):
        hub.publish("post:1", {"n": n})
    client = wire(session)
    client.write(10)

    session.going_away()

    assert [offset for frame in frames(session) for _, offset, _ in pubs(frame)] == [1]
    assert session.pending_bytes == 0


def test_slow_consumer_affects_only_its_own_session() -> None:
    """A slow session is closed while another subscriber of the same channel keeps receiving."""
    hub = MemoryHub()
    slow = open_session(hub, limits=Limits(max_outbox_bytes=300))
    fast = open_session(hub)
    for session in (slow, fast):
        result(session, "subscribe", {"channel": "post:1"})

    for n in range(1, 6):
        hub.publish("post:1", {"n": n, "pad": "x" * 50})
        assert take_frame(fast) is not None

    assert slow.close_reason(NOW) == (CLOSE_SLOW_CONSUMER, "slow consumer")
    assert fast.close_reason(NOW) is None


def test_on_ready_is_called_once_until_the_outbox_empties() -> None:
    """``on_ready`` fires when output appears in an empty outbox, not again until a write emptied it."""  # noqa: E501
    calls = []
    session = Session(MemoryHub(), SECRET, NOW, token=token(), on_ready=lambda: calls.append(1))
    result(session, "subscribe", {"channel": "post:1"})
    assert take_frame(session) is None
    calls.clear()
    frame = pub_frame("post:1", 1, b"{}")

    session.offer("post:1", 1, frame)
    session.offer("post:1", 2, frame)
    assert len(calls) == 1
    wire(session).write(3)  # a partial write: the outbox is not empty
    session.offer("post:1", 3, frame)
    assert len(calls) == 1
    wire(session).write()
    assert session.pending_bytes == 0
    session.offer("post:1", 4, frame)
    assert len(calls) == 2


# -- limits and bad input ------------------------------------------------------------


def test_oversize_frame_closes_1009() -> None:
    """A text frame over ``max_frame_bytes`` UTF-8 bytes closes with 1009, counting bytes not characters."""  # noqa: E501
    limit = 1 * KiB
    fits = open_session(limits=Limits(max_frame_bytes=limit))
    too_big = open_session(limits=Limits(max_frame_bytes=limit))
    ping = '{"jsonrpc":"2.0","method":"ping","id":1,"pad":"'
    padding = limit - len(ping) - 2

    fits.receive_text(ping + "x" * padding + '"}', NOW)
    too_big.receive_text(ping + "é" * (padding // 2 + 1) + '"}', NOW)

    assert fits.close_reason(NOW) is None
    assert frames(fits)[0]["result"] == {}
    assert too_big.close_reason(NOW) == (CLOSE_TOO_BIG, "message too big")
    assert take_frame(too_big) is None


@pytest.mark.parametrize("text", ['{"jsonrpc": "2.0", "method": "ping", ', "", '"\ud800"', "nul"])
def test_malformed_json_is_a_parse_error_and_the_session_stays_usable(text: str) -> None:
    """Malformed JSON gets -32700 with a null id, and the next request is served."""
    session = open_session()

    session.receive_text(text, NOW)
    [reply] = frames(session)

    assert reply["error"]["code"] == -32700
    assert reply["id"] is None
    assert session.close_reason(NOW) is None
    assert result(session, "ping") == {}


def test_unknown_method() -> None:
    """An unknown method gets -32601 naming it."""
    session = open_session()

    assert error(session, "publish", {"channel": "post:1"}) == {
        "code": -32601,
        "message": "Method not found",
        "data": {"method": "publish"},
    }


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"channel": 5},
        {"channel": "post:1", "extra": True},
        {"channel": "post:1", "since": {"offset": -1, "epoch": "e1"}},
        {"channel": "post:1", "since": {"offset": 1}},
    ],
)
def test_bad_params(params: Any) -> None:
    """Missing, ill-typed or unknown params get -32602 with a detail."""
    session = open_session()

    err = error(session, "subscribe", params)

    assert err["code"] == -32602
    assert err["data"]["detail"]
    assert session.subscriptions == frozenset()


def test_params_that_are_not_structured_are_an_invalid_request() -> None:
    """Params that are neither an object nor an array get -32600, as on ``POST /rpc``."""
    session = open_session()

    err = error(session, "subscribe", "post:1")

    assert err["code"] == -32600
    assert err["data"]["detail"] == "params must be an object or an array"


def test_params_by_position() -> None:
    """Params may be given by position, in the order of the struct's fields."""
    session = open_session()

    assert result(session, "subscribe", ["post:1"])["channel"] == "post:1"
    assert error(session, "subscribe", ["post:1", None, 3])["code"] == -32602


@pytest.mark.parametrize(
    ("message", "id"),
    [
        ({"jsonrpc": "1.0", "method": "ping", "id": 3}, 3),
        ({"jsonrpc": "2.0", "method": 5, "id": "a"}, "a"),
        ({"jsonrpc": "2.0", "method": "ping", "id": True}, None),
        (17, None),
    ],
)
def test_invalid_requests(message: Any, id: Any) -> None:
    """A JSON value that is not a valid request gets -32600, with its id when it has a valid one."""
    session = open_session()

    session.receive_text(json.dumps(message), NOW)
    [reply] = frames(session)

    assert reply["error"]["code"] == -32600
    assert reply["id"] == id


def test_batches() -> None:
    """A batch gets one array frame of replies in request order; notifications in it get none."""
    session = open_session()
    batch = [
        {"jsonrpc": "2.0", "method": "ping", "id": 1},
        {"jsonrpc": "2.0", "method": "subscribe", "params": {"channel": "post:1"}},
        {"jsonrpc": "2.0", "method": "nope", "id": 2},
        "junk",
    ]

    session.receive_text(json.dumps(batch), NOW)
    [replies] = frames(session)

    assert [(r["id"], "result" in r) for r in replies] == [(1, True), (2, False), (None, False)]
    assert [r.get("error", {}).get("code") for r in replies] == [None, -32601, -32600]
    assert session.subscriptions == {"post:1"}


def test_empty_or_overlong_batch_is_invalid() -> None:
    """An empty batch, or one over ``max_batch_requests``, gets a single -32600 reply."""
    session = open_session(limits=Limits(max_batch_requests=2))
    ping = {"jsonrpc": "2.0", "method": "ping", "id": 1}

    session.receive_text("[]", NOW)
    session.receive_text(json.dumps([ping] * 3), NOW)

    assert [reply["error"]["code"] for reply in frames(session)] == [-32600, -32600]


def test_notifications_are_served_silently() -> None:
    """A request without an id is executed but gets no reply, even on error."""
    session = open_session()

    session.receive_text(
        '{"jsonrpc":"2.0","method":"subscribe","params":{"channel":"post:1"}}', NOW
    )
    session.receive_text('{"jsonrpc":"2.0","method":"nope"}', NOW)

    assert take_frame(session) is None
    assert session.subscriptions == {"post:1"}


def test_binary_frame_closes_1003() -> None:
    """A binary frame closes the session with 1003."""
    session = open_session()

    session.receive_bytes(b'{"jsonrpc":"2.0","method":"ping","id":1}', NOW)

    assert session.close_reason(NOW) == (CLOSE_UNSUPPORTED_DATA, "binary frames not accepted")


def test_idle_closes_1001() -> None:
    """Nothing heard for more than ``idle_timeout`` seconds closes with 1001; frames and pongs reset it."""  # noqa: E501
    session = open_session(limits=Limits(idle_timeout=60))
    result(session, "ping", now=NOW + 30)
    session.touch(NOW + 50)

    assert session.close_reason(NOW + 110) is None
    assert session.deadline > NOW + 110
    assert session.close_reason(session.deadline) == (CLOSE_IDLE, "idle")


def test_nothing_is_served_once_closing() -> None:
    """After a close is decided, requests are ignored and nothing more is written."""
    session = open_session()
    session.receive_bytes(b"x", NOW)

    session.receive_text('{"jsonrpc":"2.0","method":"ping","id":1}', NOW)

    assert take_frame(session) is None
    assert session.deadline == float("-inf")


# -- properties -----------------------------------------------------------------------

CHANNELS = ("post:a", "post:b", "user:alice")
operations = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.sampled_from(CHANNELS), st.integers(0, 120)),
        st.tuples(st.just("write"), st.just(""), st.integers(1, 400)),
    ),
    max_size=80,
)


@given(ops=operations, max_outbox_bytes=st.integers(150, 4000))
def test_every_offer_is_delivered_once_in_order_while_under_the_bound(
    ops: list[tuple[str, str, int]], max_outbox_bytes: int
) -> None:
    """Any interleaving of offers and partial writes delivers each accepted publication exactly once, in order per channel, and refuses one only when it would overflow the outbox (then closing 4008)."""  # noqa: E501
    session = open_session(limits=Limits(max_outbox_bytes=max_outbox_bytes))
    for channel in CHANNELS:
        result(session, "subscribe", {"channel": channel})
    client = wire(session)
    offsets = dict.fromkeys(CHANNELS, 0)
    accepted: dict[str, list[tuple[int, Any]]] = {channel: [] for channel in CHANNELS}
    received: dict[str, list[tuple[int, Any]]] = {channel: [] for channel in CHANNELS}

    def read() -> None:
        while client.messages:
            for channel, offset, data in pubs(json.loads(client.messages.popleft())):
                received[channel].append((offset, data))

    for op, channel, amount in ops:
        if op == "write":
            client.write(amount)
            read()
            continue
        offsets[channel] += 1
        data = {"o": offsets[channel], "pad": "x" * amount}
        frame = pub_frame(channel, offsets[channel], json.dumps(data).encode())
        was_open = session.close_reason(NOW) is None
        fits = session.pending_bytes + len(frame)
        if session.offer(channel, offsets[channel], frame):
            accepted[channel].append((offsets[channel], data))
        else:
            assert not was_open or fits > max_outbox_bytes, "refused while it fit the outbox"
            assert session.close_reason(NOW) == (CLOSE_SLOW_CONSUMER, "slow consumer")
        assert session.pending_bytes <= max_outbox_bytes
    while client.write():
        read()
    closed = session.close_reason(NOW) is not None
    for channel in CHANNELS:
        got = received[channel]
        # Closing drops what was not begun: then a prefix of what was accepted arrived.
        assert got == (accepted[channel][: len(got)] if closed else accepted[channel])


# -- JSON-RPC methods of the shared dispatcher over the WebSocket ----------------------


class Who(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    user: str


def rpc_table() -> Dispatcher[None]:
    """A dispatcher with one method of each access rule (only looked up, never run here)."""
    rpc: Dispatcher[None] = Dispatcher()

    async def never(params: Any, context: None) -> None:
        raise AssertionError("the session never runs a dispatcher method itself")

    rpc.add("mine", Who, never, access=Access.SELF, acting="user")
    rpc.add("public", Who, never, access=Access.USERS)
    rpc.add("ops", NoParams, never)
    return rpc


def rpc_session(*, operator: bool = False, service: bool = False, user: str = "alice") -> Session:
    claims = issue_token(SECRET, user, ttl_seconds=TTL, now=NOW, operator=operator, service=service)
    return Session(MemoryHub(), SECRET, NOW, token=claims, rpc=rpc_table())


def send(session: Session, message: Any) -> None:
    session.receive_text(json.dumps(message), NOW)


def request(method: str, params: Any, id: int | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if id is not None:
        message["id"] = id
    return message


def test_a_users_token_calls_the_methods_that_act_for_it_and_public_reads() -> None:
    """A user's token may call a SELF method naming itself and a USERS method; each becomes
    one pending call for the edge, with its params decoded, and nothing is answered yet."""
    session = rpc_session()
    send(session, request("mine", {"user": "alice"}, 1))
    send(session, request("public", {"user": "bob"}, 2))

    pending = session.take_calls()

    assert [p.batch for p in pending] == [False, False]
    assert [(c.request.id, c.method.name, c.params) for p in pending for _, c in p.calls] == [
        (1, "mine", Who("alice")),
        (2, "public", Who("bob")),
    ]
    assert frames(session) == []
    assert session.take_calls() == []


@pytest.mark.parametrize(
    ("method", "params", "reason"),
    [
        ("mine", {"user": "bob"}, "mine acts for user = the token's user only"),
        ("ops", {}, "ops is for operators and services"),
    ],
)
def test_a_users_token_is_refused_what_is_not_its_own(
    method: str, params: Any, reason: str
) -> None:
    """Acting for another user, or calling an operators' method, gets -32003 with the reason."""
    session = rpc_session()

    err = error(session, method, params)

    assert err == {"code": -32003, "message": "forbidden", "data": {"reason": reason}}
    assert session.take_calls() == []


@pytest.mark.parametrize("role", ["operator", "service"])
def test_operator_and_service_tokens_may_call_every_method(role: str) -> None:
    """Operator and service tokens may act for anyone and call operators' methods."""
    session = rpc_session(operator=role == "operator", service=role == "service", user="svc")
    send(session, request("mine", {"user": "bob"}, 1))
    send(session, request("ops", {}, 2))

    names = [c.method.name for p in session.take_calls() for _, c in p.calls]

    assert names == ["mine", "ops"]


def test_dispatcher_methods_need_authentication_and_unknown_ones_are_not_found() -> None:
    """Before authentication a dispatcher method gets -32003; an unknown method -32601 always."""
    session = Session(MemoryHub(), SECRET, NOW, rpc=rpc_table())

    assert error(session, "public", {"user": "bob"})["code"] == -32003
    assert error(session, "nope", {})["code"] == -32601
    assert error(rpc_session(), "nope", {})["code"] == -32601


def test_bad_params_of_a_dispatcher_method_are_answered_by_the_session() -> None:
    """Params that do not decode are answered -32602 at once; nothing reaches the edge."""
    session = rpc_session()

    err = error(session, "mine", {"user": 5})

    assert err["code"] == -32602
    assert session.take_calls() == []


def test_a_batch_with_calls_gets_one_reply_array_in_order() -> None:
    """A batch mixing the session's methods, calls and errors is answered once the calls
    ran, as one array in the batch's order (notifications left out)."""
    session = rpc_session()
    send(
        session,
        [
            request("ping", {}, 1),
            request("mine", {"user": "alice"}, 2),
            request("mine", {"user": "bob"}, 3),
            request("public", {"user": "x"}, None),
        ],
    )
    assert frames(session) == []
    (pending,) = session.take_calls()
    assert pending.batch
    assert [index for index, _ in pending.calls] == [1, 3]

    session.complete(pending, {1: {"jsonrpc": "2.0", "result": "two", "id": 2}, 3: None})

    (reply,) = frames(session)
    assert [r.get("result") for r in reply] == [{}, "two", None]
    assert reply[2]["error"]["code"] == -32003
    assert [r["id"] for r in reply] == [1, 2, 3]


def test_replies_to_calls_are_dropped_once_the_session_closes() -> None:
    """A call that ends after the close is decided queues nothing (the client asks again)."""
    session = rpc_session()
    send(session, request("mine", {"user": "alice"}, 1))
    (pending,) = session.take_calls()
    session.going_away()
    drained = frames(session)

    session.complete(pending, {0: {"jsonrpc": "2.0", "result": 1, "id": 1}})

    assert frames(session) == drained == []


# -- the graph's gate: deferred subscribes and revocation ------------------------------


class RecordingGate:
    """A gate that asks for ``circle:`` (ASK_GRAPH) and for the channels in ``check``."""

    def __init__(self, *checked: str) -> None:
        self.checked = set(checked)

    def needs_check(self, user: str, channel: str, /) -> bool:
        return channel in self.checked

    async def check(self, user: str, channel: str, /) -> str | None:
        raise AssertionError("the edge awaits the gate; these tests hand verdicts in")


def gated_session(hub: MemoryHub, *checked: str) -> Session:
    return Session(hub, SECRET, NOW, token=token("alice"), gate=RecordingGate(*checked))


def test_a_graph_ruled_subscribe_waits_for_the_gate_and_registers_when_allowed() -> None:
    """subscribe circle:bob is held (nothing answered, not in the hub) until the gate's
    verdict; allowed, it registers and its reply comes before the channel's first pub."""
    hub = MemoryHub()
    session = gated_session(hub)
    send(session, request("subscribe", {"channel": "circle:bob"}))
    assert frames(session) == []
    (pending,) = session.take_calls()
    assert not hub.subscribers["circle:bob"]

    session.complete(pending, {}, {0: None})
    hub.publish("circle:bob", {"n": 1})

    reply, pub = frames(session)
    assert reply["result"] == {"channel": "circle:bob", "offset": 0, "epoch": "e1"}
    assert pubs(pub) == [("circle:bob", 1, {"n": 1})]


@pytest.mark.parametrize(
    ("verdict", "code", "data"),
    [
        ("not a follower", -32003, {"channel": "circle:bob", "reason": "not a follower"}),
        (
            RuntimeError("graph down"),
            -32001,
            {"channel": "circle:bob", "detail": "graph down"},
        ),
    ],
)
def test_a_refused_or_unanswered_check_is_an_error_and_subscribes_nothing(
    verdict: Any, code: int, data: Any
) -> None:
    """The gate's refusal is -32003 with its reason; a graph that could not tell is -32001;
    either way the session is not subscribed."""
    hub = MemoryHub()
    session = gated_session(hub)
    send(session, request("subscribe", {"channel": "circle:bob"}))
    (pending,) = session.take_calls()

    session.complete(pending, {}, {0: verdict})

    (reply,) = frames(session)
    assert (reply["error"]["code"], reply["error"]["data"]) == (code, data)
    assert session.subscriptions == frozenset()
    assert not hub.subscribers["circle:bob"]


def test_without_a_gate_a_graph_ruled_channel_is_refused_at_once() -> None:
    """With no gate, circle:bob (not the user's own) is -32003; circle:alice is granted."""
    session = open_session()

    assert error(session, "subscribe", {"channel": "circle:bob"})["code"] == -32003
    assert result(session, "subscribe", {"channel": "circle:alice"})["offset"] == 0


def test_a_check_that_ends_after_the_close_subscribes_nothing() -> None:
    """An allowed verdict that arrives once the session is closing registers nothing in the
    hub (no subscription is left behind by a gone connection)."""
    hub = MemoryHub()
    session = gated_session(hub, "post:p1")
    send(session, request("subscribe", {"channel": "post:p1"}))
    (pending,) = session.take_calls()
    session.close()

    session.complete(pending, {}, {0: None})

    assert not hub.subscribers["post:p1"]


def test_revoke_ends_a_subscription_with_an_unsubscribed_push() -> None:
    """revoke leaves the channel in the hub and queues unsubscribed {channel, reason} after
    what was queued before; later publications are not offered; a second revoke is False."""
    hub = MemoryHub()
    session = open_session(hub)
    result(session, "subscribe", {"channel": "circle:alice"})
    hub.publish("circle:alice", {"n": 1})

    assert session.revoke("circle:alice", "blocked") is True
    hub.publish("circle:alice", {"n": 2})

    pub, ended = frames(session)
    assert pubs(pub) == [("circle:alice", 1, {"n": 1})]
    assert ended == {
        "jsonrpc": "2.0",
        "method": "unsubscribed",
        "params": {"channel": "circle:alice", "reason": "blocked"},
    }
    assert session.subscriptions == frozenset()
    assert session.revoke("circle:alice", "blocked") is False
