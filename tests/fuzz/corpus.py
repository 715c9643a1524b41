"""What the fuzz tests throw: hand-picked nasties and hypothesis strategies for JSON-RPC.

Not a test module. :data:`NASTIES` are payloads a careless decoder trips on (deep
nesting, huge numbers, lone surrogates, invalid UTF-8, NUL bytes, 10 MB strings,
duplicate keys, wrong types everywhere, unknown methods, batches of mixed garbage);
:func:`payloads` draws JSON-RPC payloads around the real method tables, mostly
well-formed envelopes with garbage inside, sometimes garbage bytes, sometimes a
mutation of either; :func:`check_replies` says whether a reply body is valid
JSON-RPC 2.0 for the payload it answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from hypothesis import strategies as st

from protocols.jsonrpc import MAX_BATCH
from protocols.methods import Services, build_dispatcher

MiB: Final = 1 << 20
DEEP: Final = 5_000
"""Nesting depth of the deep payloads: past msgspec's recursion limit, inside 1 MiB."""

UNSAFE: Final = frozenset({"system.restart", "system.fault"})
"""Methods never drawn at random: a valid call restarts a child or injects a fault, which
is what they are for (the corpus calls them with invalid params only)."""

RPC_METHODS: Final[dict[str, tuple[str, ...]]] = {
    method.name: method.params.__struct_fields__
    # Registering reads no service: stand-ins do to list the methods.
    for method in build_dispatcher(Services(tree=lambda: None, social=None))  # type: ignore[arg-type,return-value]
    if method.name not in UNSAFE
}
"""The ``POST /rpc`` methods (those of ``/ws`` too) and their params' field names."""

SESSION_METHODS: Final[dict[str, tuple[str, ...]]] = {
    "connect": ("token",),
    "subscribe": ("channel", "since", "presence"),
    "unsubscribe": ("channel",),
    "history": ("channel", "since", "limit"),
    "presence": ("channel",),
    "presence_stats": ("channel",),
    "ping": (),
}
"""The WebSocket session's own methods (:mod:`protocols.websocket.session`)."""


def request(method: Any = "system.health", params: Any = None, id: Any = 1) -> bytes:
    """One request object's JSON (``params`` left out when ``None``, ``id`` when ``...``)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not ...:
        message["id"] = id
    return json.dumps(message).encode()


def _with(field: str, raw: bytes) -> bytes:
    """A ``system.health`` request whose ``field`` is the raw JSON text ``raw``."""
    return b'{"jsonrpc":"2.0","method":"system.health","id":1,"%s":%s}' % (field.encode(), raw)


_DEEP_ARRAY = b"[" * DEEP + b"]" * DEEP
_DEEP_OBJECT = b'{"a":' * DEEP + b"1" + b"}" * DEEP
_BIG = b"9" * 5_000  # past Python's 4,300-digit int conversion limit
_TEN_MB = "x" * (10 * MiB)

NASTIES: Final[list[tuple[str, bytes]]] = [
    # empty, blank, NUL
    ("empty", b""),
    ("blank", b" \t\r\n "),
    ("nul", b"\x00"),
    ("nul-after-json", request() + b"\x00"),
    ("nul-escape-in-method", request("system.health\u0000")),
    ("nul-in-params", request("social.counts", {"user": "a\u0000b"})),
    ("bom", b"\xef\xbb\xbf" + request()),
    # invalid UTF-8 and surrogates
    ("invalid-utf8", b"\xff\xfe\xfd"),
    ("invalid-utf8-in-method", b'{"jsonrpc":"2.0","method":"\xff","id":1}'),
    ("invalid-utf8-in-batch-member", b'[{"jsonrpc":"2.0","method":"\xff","id":1}]'),
    ("invalid-utf8-in-unknown-key", b'{"jsonrpc":"2.0","method":"system.health","\xffid":1}'),
    (
        "invalid-utf8-in-named-params",
        b'{"jsonrpc":"2.0","method":"social.counts","params":{"user":"\x80lice"},"id":1}',
    ),
    (
        "invalid-utf8-in-positional-params",
        b'{"jsonrpc":"2.0","method":"social.counts","params":["\x80lice"],"id":1}',
    ),
    ("overlong-utf8", b'{"jsonrpc":"2.0","method":"\xc0\xaf","id":1}'),
    ("truncated-utf8", b'{"jsonrpc":"2.0","method":"\xe2\x82","id":1}'),
    ("surrogate-bytes", b'{"jsonrpc":"2.0","method":"\xed\xa0\x80","id":1}'),
    ("lone-surrogate-method", b'{"jsonrpc":"2.0","method":"\\ud800","id":1}'),
    ("lone-surrogate-id", b'{"jsonrpc":"2.0","method":"system.health","id":"\\udc00"}'),
    (
        "lone-surrogate-param",
        b'{"jsonrpc":"2.0","method":"social.counts","params":{"user":"\\ud800"},"id":1}',
    ),
    ("surrogate-pair", request("social.counts", {"user": "\U0001f600"})),
    # deep nesting
    ("deep-open", b"[" * 100_000),
    ("deep-array", _DEEP_ARRAY),
    ("deep-object", _DEEP_OBJECT),
    ("deep-params", _with("params", _DEEP_ARRAY)),
    ("deep-positional-params", _with("params", b"[" + _DEEP_ARRAY + b"]")),
    (
        "deep-named-params",
        b'{"jsonrpc":"2.0","method":"social.counts","id":1,"params":{"user":%s}}' % _DEEP_OBJECT,
    ),
    ("deep-id", _with("id", _DEEP_ARRAY)),
    ("deep-extra-field", _with("extra", _DEEP_OBJECT)),
    ("deep-batch-member", b"[" + request() + b"," + _DEEP_ARRAY + b"]"),
    ("deep-in-batch-member", b"[" + _with("extra", _DEEP_ARRAY) + b"]"),
    (
        "deep-publish-data",
        b'{"jsonrpc":"2.0","method":"realtime.publish","id":1,"params":{"channel":"post:1","data":{"a":%s}}}'
        % _DEEP_ARRAY,
    ),
    # huge numbers
    ("huge-float", b"1e400"),
    ("huge-float-id", _with("id", b"1e400")),
    ("tiny-float-id", _with("id", b"1e-400")),
    ("huge-int-id", _with("id", _BIG)),
    ("huge-negative-int-id", _with("id", b"-" + _BIG)),
    ("big-int-id", _with("id", b"123456789012345678901234567890")),
    ("negative-zero-id", _with("id", b"-0")),
    ("float-id", _with("id", b"1.0")),
    ("huge-positional", b'{"jsonrpc":"2.0","method":"social.counts","id":1,"params":[1e400]}'),
    (
        "huge-int-positional",
        b'{"jsonrpc":"2.0","method":"social.counts","id":1,"params":[%s]}' % _BIG,
    ),
    (
        "huge-limit",
        b'{"jsonrpc":"2.0","method":"social.following","id":1,"params":{"user":"a","limit":%s}}'
        % _BIG,
    ),
    (
        "huge-float-limit",
        b'{"jsonrpc":"2.0","method":"feed.get","id":1,"params":{"user":"a","limit":1e400}}',
    ),
    (
        "huge-in-publish-data",
        b'{"jsonrpc":"2.0","method":"realtime.publish","id":1,"params":{"channel":"post:1","data":{"n":1e400,"m":%s}}}'
        % _BIG,
    ),
    ("nan-literal", _with("id", b"NaN")),
    ("infinity-literal", b'{"jsonrpc":"2.0","method":"social.counts","id":1,"params":[Infinity]}'),
    # 10 MB strings (over the 1 MiB body and the 64 KiB frame limits) and 900 KB ones
    ("ten-mb-method", request(_TEN_MB)),
    ("ten-mb-param", request("social.counts", {"user": _TEN_MB})),
    ("ten-mb-id", request(id=_TEN_MB)),
    ("900-kb-method", request("x" * 900_000)),
    ("900-kb-param", request("social.counts", {"user": "u" * 900_000})),
    # duplicate keys
    ("duplicate-jsonrpc", b'{"jsonrpc":"2.0","jsonrpc":"1.0","method":"system.health","id":1}'),
    ("duplicate-id", b'{"jsonrpc":"2.0","method":"system.health","id":1,"id":"two"}'),
    ("duplicate-method", b'{"jsonrpc":"2.0","method":"nope","method":"system.health","id":1}'),
    (
        "duplicate-params",
        b'{"jsonrpc":"2.0","method":"social.counts","params":{"user":"a"},"params":[1],"id":1}',
    ),
    (
        "duplicate-param-field",
        b'{"jsonrpc":"2.0","method":"social.counts","params":{"user":"a","user":5},"id":1}',
    ),
    # wrong types everywhere
    ("top-number", b"42"),
    ("top-string", b'"text"'),
    ("top-null", b"null"),
    ("top-true", b"true"),
    ("jsonrpc-number", b'{"jsonrpc":2.0,"method":"system.health","id":1}'),
    ("jsonrpc-null", b'{"jsonrpc":null,"method":"system.health","id":1}'),
    ("jsonrpc-missing", b'{"method":"system.health","id":1}'),
    ("method-null", request(None)),
    ("method-number", request(7)),
    ("method-array", request(["system.health"])),
    ("method-object", request({"name": "system.health"})),
    ("method-missing", b'{"jsonrpc":"2.0","id":1}'),
    ("params-string", request(params="x")),
    ("params-number", request(params=1)),
    ("params-true", request(params=True)),
    ("params-null", b'{"jsonrpc":"2.0","method":"system.health","params":null,"id":1}'),
    ("id-array", request(id=[])),
    ("id-object", request(id={})),
    ("id-true", request(id=True)),
    ("id-null", request(id=None)),
    ("wrong-param-types", request("social.follow", {"follower": 1, "followee": ["b"]})),
    ("wrong-positional-types", request("social.following", [None, "ten", {}])),
    ("too-many-positional", request("social.counts", ["a", "b", "c"])),
    ("unknown-param", request("social.counts", {"user": "a", "admin": True})),
    ("bad-id-param", request("social.counts", {"user": "../../etc/passwd"})),
    ("bad-channel", request("realtime.publish", {"channel": "chat:1", "data": {}})),
    ("data-not-object", request("realtime.publish", {"channel": "post:1", "data": [1]})),
    ("publish-many-empty", request("realtime.publish_many", {"events": []})),
    ("restart-wrong-type", request("system.restart", {"path": 1})),
    ("restart-empty-path", request("system.restart", {"path": ""})),
    ("restart-no-such-child", request("system.restart", {"path": "no/such/child"})),
    ("fault-wrong-kind", request("system.fault", {"path": "no/such/child", "kind": "boom"})),
    # unknown methods
    ("method-empty", request("")),
    ("method-blank", request(" ")),
    ("method-discover", request("rpc.discover")),
    ("method-prefix", request("system.")),
    ("method-dunder", request("__class__")),
    ("method-upper", request("SYSTEM.HEALTH")),
    ("method-trailing-space", request("system.health ")),
    ("notification-unknown", request("nope", id=...)),
    ("notification", request(id=...)),
    # not JSON
    ("truncated", request()[:-3]),
    ("trailing-garbage", request() + b" x"),
    ("two-values", request() + request()),
    ("comment", b'{"jsonrpc":"2.0" /* hi */,"method":"system.health","id":1}'),
    ("single-quotes", b"{'jsonrpc':'2.0','method':'system.health','id':1}"),
    ("unquoted-keys", b'{jsonrpc:"2.0",method:"system.health",id:1}'),
    # batches
    ("batch-empty", b"[]"),
    ("batch-number", b"[1]"),
    ("batch-null", b"[null]"),
    ("batch-nested-empty", b"[[]]"),
    ("batch-empty-object", b"[{}]"),
    ("batch-nested", b"[[" + request() + b"]]"),
    ("batch-full", b"[" + b",".join([request(id=n) for n in range(MAX_BATCH)]) + b"]"),
    ("batch-over", b"[" + b",".join([request(id=n) for n in range(MAX_BATCH + 1)]) + b"]"),
    ("batch-notifications", b"[" + request(id=...) + b"," + request("nope", id=...) + b"]"),
    (
        "batch-mixed-garbage",
        b"["
        + b",".join(
            [
                request(id="a"),
                b"1",
                b'"x"',
                b"{}",
                b"null",
                request(id=...),
                request("nope", id="b"),
                request("social.counts", {"user": 5}, id="c"),
                _with("id", b"1e400"),
                request(id=[]),
                b'{"jsonrpc":"2.0","method":"system.health","id":"d","id":"e"}',
            ]
        )
        + b"]",
    ),
]
"""``(name, payload)``: every one must get a valid JSON-RPC reply (or the documented HTTP
status, or close code), never a crash."""


# -- hypothesis strategies --------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "2.0", "alice", "post:1", "user:alice", "\x00", "é" * 3])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
"""Any JSON value (no NaN): what a field holds when the caller got its type wrong."""

ids = st.sampled_from(["alice", "bob", "1", "42", "hn:1", "u_1.x@y-z", "a" * 64, "a" * 65, ""])
channels = st.sampled_from(
    [
        "post:1",
        "post:hn:1",
        "user:alice",
        "user:bob",
        "system:dashboard",
        "following:alice",
        "following:bob",
        "circle:bob",
        "chat:1",
        "post:",
        "post:" + "x" * 70,
        "",
    ]
)
plausible = st.one_of(
    ids,
    channels,
    st.integers(min_value=-3, max_value=200),
    st.booleans(),
    st.fixed_dictionaries(
        {"offset": st.integers(min_value=-2, max_value=10**20), "epoch": st.text(max_size=70)}
    ),
    st.dictionaries(st.sampled_from(["user", "n", "text", "author"]), json_scalars, max_size=3),
)
"""Values of the right kind for some field, often wrong for the one they land in."""


@st.composite
def params_for(draw: st.DrawFn, fields: Sequence[str]) -> Any:
    """Params for a method with ``fields``: by name (some fields, maybe one unknown), by
    position, or any JSON value."""
    value = st.one_of(plausible, json_values)
    shape = draw(st.sampled_from(["named", "named", "positional", "garbage"]))
    if shape == "named":
        chosen = draw(st.lists(st.sampled_from(fields), unique=True)) if fields else []
        named = {name: draw(value) for name in chosen}
        if draw(st.integers(0, 9)) == 0:
            named[draw(st.text(max_size=6))] = draw(value)
        return named
    if shape == "positional":
        return draw(st.lists(value, max_size=len(fields) + 1))
    return draw(json_values)


@st.composite
def request_pairs(draw: st.DrawFn, methods: dict[str, tuple[str, ...]]) -> list[tuple[str, Any]]:
    """One request object as ``(key, value)`` pairs (a key may repeat: JSON allows it)."""
    name = draw(st.sampled_from(sorted(methods)) | st.text(max_size=12))
    pairs: list[tuple[str, Any]] = []
    if draw(st.integers(0, 9)):
        pairs.append(("jsonrpc", "2.0"))
    elif draw(st.booleans()):
        pairs.append(("jsonrpc", draw(json_values)))
    pairs.append(("method", name if draw(st.integers(0, 19)) else draw(json_values)))
    if draw(st.integers(0, 4)):
        pairs.append(("params", draw(params_for(methods.get(name, ())))))
    kind = draw(st.integers(0, 9))
    if kind < 6:
        pairs.append(("id", draw(st.integers(-(2**63), 2**63) | st.text(max_size=8))))
    elif kind < 8:
        pairs.append(("id", draw(json_values)))
    pairs = draw(st.permutations(pairs))
    if pairs and draw(st.integers(0, 14)) == 0:  # a duplicate key
        key, _ = draw(st.sampled_from(pairs))
        pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(json_values)))
    return pairs


def _object(pairs: list[tuple[str, Any]], ascii: bool) -> str:
    inner = ",".join(
        f"{json.dumps(key, ensure_ascii=ascii)}:{json.dumps(value, ensure_ascii=ascii)}"
        for key, value in pairs
    )
    return "{" + inner + "}"


@st.composite
def payload_texts(draw: st.DrawFn, methods: dict[str, tuple[str, ...]]) -> str:
    """A JSON-RPC payload's text: one request, a batch (members sometimes garbage), or any
    JSON value."""
    ascii = draw(st.booleans())
    member = request_pairs(methods).map(lambda pairs: _object(pairs, ascii))
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return draw(member)
    if kind < 9:
        garbage = json_values.map(lambda value: json.dumps(value, ensure_ascii=ascii))
        members = draw(st.lists(member | garbage, max_size=6))
        return "[" + ",".join(members) + "]"
    return json.dumps(draw(json_values), ensure_ascii=ascii)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` cut, with bytes put in, or with bytes replaced."""
    kind = draw(st.sampled_from(["cut", "insert", "replace"]))
    at = draw(st.integers(0, len(data)))
    if kind == "cut":
        return data[:at]
    chunk = draw(st.binary(min_size=1, max_size=4))
    return data[:at] + chunk + data[at + (len(chunk) if kind == "replace" else 0) :]


@st.composite
def payloads(draw: st.DrawFn, methods: dict[str, tuple[str, ...]] = RPC_METHODS) -> bytes:
    """A JSON-RPC payload as bytes: mostly JSON, sometimes mutated, sometimes random bytes
    or a nasty."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(st.sampled_from([p for _, p in NASTIES if len(p) < 100_000]))
    data = draw(payload_texts(methods)).encode()
    return draw(mutated(data)) if kind < 5 else data


# -- what a valid answer is ----------------------------------------------------------------


def _parsed(payload: bytes) -> Any:
    """``payload`` as Python's strict JSON reads it (``...`` when it is not JSON)."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    def number(text: str) -> Any:
        return int(text) if len(text) < 4_000 else float(text)  # past int()'s digit limit

    try:  # msgspec checks the UTF-8 of the strings it reads, not of the keys it skips
        text = payload.decode("utf-8", "replace")
        return json.loads(text, parse_constant=refuse, parse_int=number)
    except (ValueError, RecursionError):
        return ...


def _id(message: Any) -> Any:
    """The reply id a request object may get back (``...``: none it could be echoed)."""
    if isinstance(message, dict):
        id = message.get("id")
        if isinstance(id, str) or (isinstance(id, int) and not isinstance(id, bool)):
            return id
    return ...


def _notification(message: Any) -> bool:
    return isinstance(message, dict) and "id" not in message


def check_reply(reply: Any) -> None:
    """Assert ``reply`` is one JSON-RPC 2.0 response object (spec sections 5, 5.1)."""
    assert isinstance(reply, dict), reply
    assert reply.get("jsonrpc") == "2.0", reply
    assert "id" in reply, reply
    assert isinstance(reply["id"], str | int | None), reply
    assert not isinstance(reply["id"], bool), reply
    assert ("result" in reply) != ("error" in reply), reply
    assert set(reply) <= {"jsonrpc", "id", "result", "error"}, reply
    if "error" in reply:
        error = reply["error"]
        assert isinstance(error, dict), reply
        assert isinstance(error.get("code"), int), reply
        assert not isinstance(error["code"], bool), reply
        assert isinstance(error.get("message"), str), reply
        assert error["message"], reply
        assert set(error) <= {"code", "message", "data"}, reply
        assert isinstance(error.get("data", {}), dict), reply


PUSHES: Final = frozenset({"pub", "gap", "join", "leave", "unsubscribed"})
"""The notifications the WebSocket server sends (:mod:`protocols.websocket.wire`)."""


def check_message(message: str) -> None:
    """Assert a WebSocket text message from the server is a JSON-RPC response, a batch of
    them, or a push (a notification of :data:`PUSHES`)."""
    decoded = json.loads(message)
    for item in decoded if isinstance(decoded, list) else [decoded]:
        if isinstance(item, dict) and "method" in item:
            assert item["method"] in PUSHES, item
            assert "id" not in item, item
        else:
            check_reply(item)


def check_replies(payload: bytes, body: bytes | str | None) -> list[dict[str, Any]]:
    """Assert ``body`` is a valid answer to ``payload``; return its response objects.

    ``None`` (HTTP 204, or no frame) only for a notification or a batch of
    notifications; a single response for anything but a batch of more than one valid
    JSON value, one per answered member for a batch; a reply's ``id`` is ``null`` or the
    id of a request it answers.
    """
    sent = _parsed(payload)
    if body is None:
        members = sent if isinstance(sent, list) else [sent]
        assert sent is not ..., (payload[:200], "no reply to what is not JSON")
        assert members, (payload[:200], "no reply to an empty batch")
        assert all(_notification(m) for m in members), (payload[:200], "unanswered request")
        return []
    decoded = json.loads(body)
    replies = decoded if isinstance(decoded, list) else [decoded]
    assert replies, (payload[:200], "an empty batch reply")
    for reply in replies:
        check_reply(reply)
    if isinstance(decoded, list):
        assert isinstance(sent, list), (payload[:200], "a batch reply to a non-batch")
        assert len(replies) <= len(sent), (payload[:200], decoded)
        echoed = {_id(member) for member in sent}
    else:
        echoed = {_id(sent)}
    for reply in replies:
        assert reply["id"] is None or reply["id"] in echoed, (payload[:200], reply)
    return replies
