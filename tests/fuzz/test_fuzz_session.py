"""The sans-I/O WebSocket session fuzzed: random frame texts and events, no socket.

A :class:`~protocols.websocket.session.Session` over a real
:class:`~actors.realtime.Publisher` as its hub, with a dispatcher of methods shaped
like the real ones (each :class:`~protocols.jsonrpc.Access`), a gate and a presence
that answer every way they can, and a rate limiter. Hypothesis drives it with random
texts (JSON-RPC payloads around its methods, corpus nasties, lone surrogates),
binary frames, publications, partial socket writes, time passing, revocations and
the edge's completion of calls. The session must never raise; every byte it queues
must parse, as a client parses it (wsproto), as a frame whose text is a valid
JSON-RPC response or push; its outbox stays within its limit; nothing but control
frames is queued once a close is decided.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any, Final

import jwt
import msgspec
import trio
from hypothesis import event, given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from actors.realtime import Histories, Publisher
from actors.realtime.channels import GraphUnavailable
from actors.realtime.presence import PresenceUnavailable
from auth.tokens import issue_token
from protocols.jsonrpc import Access, Dispatcher, JsonRpcError, NoParams
from protocols.ratelimit import RateLimiter
from protocols.websocket.frames import pub_frame
from protocols.websocket.session import Call, Deferred, Limits, PendingCalls, Session
from tests.fuzz.budget import fuzzing
from tests.fuzz.corpus import NASTIES, SESSION_METHODS, check_message, check_reply, payload_texts

SECRET: Final = b"f" * 32
NOW: Final = 1_700_000_000.0
LIMITS: Final = Limits(
    auth_timeout=10,
    idle_timeout=60,
    max_frame_bytes=2048,
    max_outbox_bytes=4096,
    max_subscriptions=3,
    max_batch_requests=5,
)


class UserParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    user: str


class FollowParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    follower: str
    followee: str


def dispatcher() -> Dispatcher[None]:
    """Methods of each access: public reads, acting for oneself, operators only, a bug."""
    rpc: Dispatcher[None] = Dispatcher()

    async def counts(params: UserParams, context: None) -> dict[str, Any]:
        return {"user": params.user, "following": 1}

    async def follow(params: FollowParams, context: None) -> dict[str, Any]:
        if params.follower == params.followee:
            raise JsonRpcError(-32602, "Invalid params", {"detail": "yourself"})
        return {"created": True}

    async def health(params: NoParams, context: None) -> dict[str, Any]:
        return {"status": "ok"}

    async def broken(params: NoParams, context: None) -> None:
        raise ZeroDivisionError("a bug")

    rpc.add("social.counts", UserParams, counts, access=Access.USERS)
    rpc.add("social.follow", FollowParams, follow, access=Access.SELF, acting="follower")
    rpc.add("system.health", NoParams, health)
    rpc.add("posts.broken", NoParams, broken, access=Access.USERS)
    return rpc


RPC: Final = dispatcher()
METHODS: Final = SESSION_METHODS | {m.name: m.params.__struct_fields__ for m in RPC}


class Gate:
    """The graph's say: refuses ``circle:x``, cannot tell for ``circle:down``, asks for every
    ``circle:`` and ``following:`` channel."""

    def needs_check(self, user: str, channel: str, /) -> bool:
        return channel.startswith(("circle:", "following:"))

    async def check(self, user: str, channel: str, /) -> str | None:
        await trio.lowlevel.checkpoint()
        if channel == "circle:down":
            raise GraphUnavailable("the graph is down")
        return "not a follower" if channel == "circle:x" else None


class Presence:
    """Who is on a channel: loads ``post:`` channels first, cannot read ``post:down``."""

    def needs_load(self, channel: str, /) -> bool:
        return channel.startswith("post:")

    async def load(self, channel: str, /) -> None:
        await trio.lowlevel.checkpoint()

    async def read(self, channel: str, /) -> Mapping[str, int]:
        await trio.lowlevel.checkpoint()
        if channel == "post:down":
            raise PresenceUnavailable("the presence store is down")
        return {"alice": 1, "bob": 2}

    def view(self, channel: str, /) -> Mapping[str, int] | None:
        return None

    def enter(self, session: Session, channel: str, /) -> None:
        pass

    def exit(self, session: Session, channel: str, /) -> None:
        pass


TOKENS: Final = [
    issue_token(SECRET, "alice", ttl_seconds=3600, now=NOW),
    issue_token(SECRET, "bob", ttl_seconds=3600, now=NOW),
    issue_token(SECRET, "ops", ttl_seconds=3600, now=NOW, operator=True),
    issue_token(SECRET, "svc", ttl_seconds=3600, now=NOW, service=True),
    issue_token(SECRET, "alice", ttl_seconds=5, now=NOW),  # expires during the case
    issue_token(SECRET, "alice", ttl_seconds=1, now=NOW - 10),  # expired
    issue_token(b"another secret, 32 bytes long...", "alice", ttl_seconds=3600, now=NOW),
    "not.a.token",
    "",
]
CHANNELS: Final = [
    "post:1",
    "post:down",
    "user:alice",
    "user:bob",
    "system:dashboard",
    "following:alice",
    "circle:bob",
    "circle:x",
    "circle:down",
]


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", "surrogateescape")  # what no client can send: still no crash


channels = st.sampled_from(["post:1"] * 8 + ["user:alice"] * 3 + CHANNELS)


@st.composite
def reaching(draw: st.DrawFn) -> str:
    """A request whose params reach its handler: a token, a channel in the right field."""
    method = draw(st.sampled_from(["subscribe"] * 5 + [*SESSION_METHODS, *(m.name for m in RPC)]))
    params: dict[str, Any] = {}
    if method == "connect":
        params = {"token": draw(st.sampled_from(TOKENS))}
    elif method in ("subscribe", "history"):
        since = draw(
            st.none() | st.fixed_dictionaries({"offset": st.integers(0, 5), "epoch": st.text()})
        )
        params = {"channel": draw(channels), "since": since}
        if method == "subscribe":
            params["presence"] = draw(st.booleans())
    elif method in ("unsubscribe", "presence", "presence_stats"):
        params = {"channel": draw(channels)}
    elif method == "social.counts":
        params = {"user": draw(st.sampled_from(["alice", "bob"]))}
    elif method == "social.follow":
        users = st.sampled_from(["alice", "bob"])
        params = {"follower": draw(users), "followee": draw(users)}
    return json.dumps(
        {"jsonrpc": "2.0", "id": draw(st.integers(0, 3)), "method": method, "params": params}
    )


texts = st.one_of(
    reaching(),
    reaching(),
    payload_texts(METHODS),
    st.sampled_from([_text(p) for _, p in NASTIES if len(p) < 100_000]),
    st.text(max_size=50),
)

_WEIGHTS: Final = [  # percent of the steps
    (40, st.tuples(st.just("text"), texts)),
    (12, st.tuples(st.just("publish"), channels)),
    (3, st.tuples(st.just("burst"), st.integers(1, 60))),
    (12, st.tuples(st.just("write"), st.integers(0, 600) | st.none())),
    (15, st.tuples(st.just("complete"), st.just(None))),
    (6, st.tuples(st.just("tick"), st.floats(0, 4))),
    (5, st.tuples(st.just("revoke"), st.sampled_from(CHANNELS))),
    (5, st.tuples(st.just("pong"), st.binary(max_size=125))),
    (1, st.tuples(st.just("bytes"), st.just(None))),
    (1, st.tuples(st.just("going_away"), st.just(None))),
]
_SUBSCRIBED: Final = [
    ("text", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "connect", "params": [TOKENS[0]]})),
    ("text", json.dumps({"jsonrpc": "2.0", "id": 2, "method": "subscribe", "params": ["post:1"]})),
]
"""Where half the cases start: alice, subscribed to ``post:1`` (so publications reach her)."""
operations = st.lists(
    st.sampled_from([step for weight, step in _WEIGHTS for _ in range(weight)]).flatmap(
        lambda step: step
    ),
    min_size=8,
    max_size=25,
)


class Client:
    """The client's end: what the session wrote, parsed with wsproto as a client does."""

    def __init__(self) -> None:
        self.parser = FrameProtocol(client=True, extensions=[])
        self.parts: list[str] = []

    def write(self, session: Session, limit: int | None) -> None:
        """One socket write of at most ``limit`` bytes (all when ``None``)."""
        data = b"".join(bytes(chunk) for chunk in session.data_to_send())[:limit]
        session.sent(len(data))
        self.parser.receive_bytes(data)
        for frame in self.parser.received_frames():
            if frame.opcode in (Opcode.TEXT, Opcode.CONTINUATION):
                assert isinstance(frame.payload, str)
                self.parts.append(frame.payload)
                if frame.message_finished:
                    check_message("".join(self.parts))
                    self.parts.clear()
            else:
                assert frame.opcode in (Opcode.PONG, Opcode.CLOSE), frame


async def complete(session: Session, pending: PendingCalls) -> None:
    """What the gateway does with a frame's calls (``_run_calls``), in order."""
    replies: dict[int, dict[str, Any] | None] = {}
    verdicts: dict[int, str | Exception | None] = {}
    reads: dict[int, Mapping[str, int]] = {}
    gate, presence = Gate(), Presence()
    for index, call in pending.calls:
        if isinstance(call, Call):
            replies[index] = await RPC.reply(call.method, call.params, call.request, None)
            continue
        assert isinstance(call, Deferred)
        user = session.user
        assert user is not None
        if call.gate:
            try:
                verdicts[index] = await gate.check(user, call.channel)
            except GraphUnavailable as outage:
                verdicts[index] = outage
                continue
            if verdicts[index] is not None:
                continue
        if call.presence == "load":
            await presence.load(call.channel)
        elif call.presence == "read":
            try:
                reads[index] = await presence.read(call.channel)
            except PresenceUnavailable as outage:
                verdicts[index] = outage
    session.complete(pending, replies, verdicts, reads)


@fuzzing(200)
@given(st.sampled_from([None, *TOKENS]), st.booleans(), operations)
async def test_random_frames_and_events_never_raise_and_queue_only_valid_json_rpc(
    token: str | None, subscribed: bool, steps: list[tuple[str, Any]]
) -> None:
    """Whatever texts, binary frames, publications, writes, time and revocations reach a session, it never raises, every frame it queues parses as a valid JSON-RPC response or push, its outbox stays within max_outbox_bytes (plus the control frames queued), and once a close is decided only control frames are queued."""  # noqa: E501
    clock = itertools.count()
    hub = Publisher(pub_frame, Histories(size=5), clock=lambda: float(next(clock)))
    session = Session(
        hub,
        SECRET,
        NOW,
        token=token,
        limits=LIMITS,
        rpc=RPC,
        gate=Gate(),
        presence=Presence(),
        rate_limiter=RateLimiter(),
    )
    client = Client()
    now = NOW
    control = 0
    waiting: list[PendingCalls] = []
    for step, value in (_SUBSCRIBED if subscribed else []) + steps:
        queued = session.statistics().frames_queued
        closing = session.closing
        if step == "text":
            session.receive_text(value, now)
        elif step == "bytes":
            session.receive_bytes(b"\x00", now)
        elif step == "publish":
            hub.publish(value, json.dumps({"n": queued}).encode())
        elif step == "burst":  # many at once, unread: the outbox may fill (4008)
            for n in range(value):
                hub.publish("post:1", json.dumps({"n": n, "pad": "x" * 100}).encode())
        elif step == "write":
            client.write(session, value)
        elif step == "tick":
            now += value
            session.close_reason(now)
        elif step == "complete":
            for pending in waiting:
                event(f"completed: {type(pending.slots[0]).__name__}")
                await complete(session, pending)
            waiting.clear()
        elif step == "revoke":
            session.revoke(value, "unfollowed")
        elif step == "pong":
            session.queue_control(b"\x8a" + bytes((len(value),)) + value)
            control += 2 + len(value)
        elif step == "going_away":
            session.going_away()
        waiting += session.take_calls()
        figures = session.statistics()
        assert 0 <= figures.pending_bytes <= LIMITS.max_outbox_bytes + control, figures
        if closing is not None and step != "pong":
            assert figures.frames_queued == queued, (step, "a frame queued after the close")
    client.write(session, None)
    event(f"close {session.closing}")  # what the cases reached: --hypothesis-show-statistics
    event(f"pushes queued: {bool(session.statistics().pushes_queued)}")
    session.close()
    assert session.subscriptions == frozenset()
    assert hub.statistics().subscribers == 0


claim_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=70),
    st.lists(st.integers(), max_size=2),
    st.just(NOW + 60),
    st.sampled_from(["alice", "operator", "service", "user"]),
)
signed_tokens = st.builds(
    lambda claims: jwt.encode(claims, SECRET, algorithm="HS256"),
    st.fixed_dictionaries(
        {}, optional={name: claim_values for name in ("sub", "exp", "iat", "nbf", "role", "aud")}
    ),
)


@fuzzing(300)
@given(signed_tokens | st.text(max_size=40), st.booleans())
def test_any_token_authenticates_or_is_refused(token: str, query: bool) -> None:
    """A token with any claims, signed with the server's secret or not, as ``?token=`` or in ``connect``, authenticates the session or is refused (close 4001/4003, or a -32003 reply), never raises."""  # noqa: E501
    hub = Publisher(pub_frame, Histories(size=5), clock=lambda: 0.0)
    session = Session(hub, SECRET, NOW, token=token if query else None, limits=LIMITS)
    if not query:
        request = {"jsonrpc": "2.0", "id": 1, "method": "connect", "params": {"token": token}}
        session.receive_text(json.dumps(request), NOW)
        data = b"".join(bytes(chunk) for chunk in session.data_to_send())
        reply = json.loads(data[2:] if data[1] < 126 else data[4:])
        check_reply(reply)
        assert ("result" in reply) == (session.user is not None), reply
        if "error" in reply:
            assert reply["error"]["code"] == -32003, reply
    if session.user is None:
        assert session.closing in (None, (4001, "invalid token"), (4003, "token expired"))
    else:
        assert isinstance(session.user, str)
        assert session.closing is None
