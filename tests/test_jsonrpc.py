"""The JSON-RPC 2.0 codec and dispatcher, without sockets (spec sections 4-6)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.jsonrpc import Dispatcher, JsonRpcError, NoParams, not_found


class Echo(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    text: str
    times: int = 1


def make_dispatcher() -> Dispatcher[None]:
    rpc: Dispatcher[None] = Dispatcher(max_batch=5)

    async def echo(params: Echo, context: None) -> str:
        return params.text * params.times

    async def missing(params: NoParams, context: None) -> None:
        raise not_found("user", "42")

    async def broken(params: NoParams, context: None) -> None:
        raise ZeroDivisionError("bug")

    rpc.add("echo", Echo, echo)
    rpc.add("missing", NoParams, missing)
    rpc.add("broken", NoParams, broken)
    return rpc


async def call(payload: Any, raw: bool = False) -> Any:
    body = payload if raw else json.dumps(payload).encode()
    reply = await make_dispatcher().handle(body, None)
    return None if reply is None else json.loads(reply)


async def test_request_by_name() -> None:
    """A request with named params gets its result and its id back."""
    reply = await call({"jsonrpc": "2.0", "id": "a", "method": "echo",
                        "params": {"text": "hi", "times": 2}})  # fmt: skip
    assert reply == {"jsonrpc": "2.0", "result": "hihi", "id": "a"}


async def test_request_by_position() -> None:
    """Positional params are matched to the struct's fields in order."""
    reply = await call({"jsonrpc": "2.0", "id": 1, "method": "echo", "params": ["ho", 3]})
    assert reply["result"] == "hohoho"


async def test_notification_gets_no_reply() -> None:
    """A request without an id is a notification: nothing is sent back, even on error."""
    assert await call({"jsonrpc": "2.0", "method": "echo", "params": {"text": "x"}}) is None
    assert await call({"jsonrpc": "2.0", "method": "nope"}) is None


async def test_parse_error() -> None:
    """Bytes that are not JSON get -32700 with a null id."""
    reply = await call(b'{"jsonrpc": "2.0", "method"', raw=True)
    assert reply["error"]["code"] == -32700
    assert reply["id"] is None


@pytest.mark.parametrize(
    "payload",
    [
        42,
        "text",
        {"jsonrpc": "1.0", "id": 1, "method": "echo"},
        {"id": 1, "method": "echo"},
        {"jsonrpc": "2.0", "id": 1, "method": 7},
        {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": "x"},
        {"jsonrpc": "2.0", "id": {"no": 1}, "method": "echo"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "echo"},
    ],
)
async def test_invalid_request(payload: Any) -> None:
    """Anything but a well-formed request object gets -32600 with a detail."""
    reply = await call(payload)
    assert reply["error"]["code"] == -32600
    assert reply["error"]["data"]["detail"]


async def test_unknown_method() -> None:
    """An unknown method gets -32601 naming it."""
    reply = await call({"jsonrpc": "2.0", "id": 1, "method": "nope"})
    assert reply["error"] == {"code": -32601, "message": "Method not found",
                              "data": {"method": "nope"}}  # fmt: skip


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"text": 5},
        {"text": "x", "times": "2"},
        {"text": "x", "extra": True},
        ["a", 1, "too many"],
    ],
)
async def test_invalid_params(params: Any) -> None:
    """Missing, mistyped, unknown or surplus params get -32602 with the reason."""
    reply = await call({"jsonrpc": "2.0", "id": 1, "method": "echo", "params": params})
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["detail"]


async def test_application_error_carries_a_data_object() -> None:
    """A handler's JsonRpcError is the reply: -32004 with data.id."""
    reply = await call({"jsonrpc": "2.0", "id": 9, "method": "missing"})
    assert reply["error"]["code"] == -32004
    assert reply["error"]["data"] == {"kind": "user", "id": "42"}
    assert reply["id"] == 9


async def test_a_bug_is_an_internal_error_not_a_crash() -> None:
    """An unexpected exception in a handler becomes -32603 and the dispatcher carries on."""
    reply = await call({"jsonrpc": "2.0", "id": 1, "method": "broken"})
    assert reply["error"]["code"] == -32603
    assert reply["error"]["data"] == {"type": "ZeroDivisionError"}


async def test_batch_answers_each_request_in_order() -> None:
    """A batch gets one reply per request (none for notifications), invalid members included."""
    reply = await call([
        {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"text": "a"}},
        {"jsonrpc": "2.0", "method": "echo", "params": {"text": "notify"}},
        1,
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
    ])  # fmt: skip
    assert [r.get("result") for r in reply] == ["a", None, None]
    assert [r.get("error", {}).get("code") for r in reply] == [None, -32600, -32601]


async def test_empty_and_oversize_batches_are_invalid() -> None:
    """An empty batch and a batch over the limit each get a single -32600."""
    assert (await call([]))["error"]["code"] == -32600
    request = {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"text": "a"}}
    reply = await call([request] * 6)
    assert reply["error"]["code"] == -32600
    assert "limit of 5" in reply["error"]["data"]["detail"]


async def test_batch_of_notifications_gets_no_reply() -> None:
    """A batch made only of notifications is answered with nothing."""
    note = {"jsonrpc": "2.0", "method": "echo", "params": {"text": "a"}}
    assert await call([note, note]) is None


def test_duplicate_registration_is_refused() -> None:
    """A method name can be registered once."""
    rpc = make_dispatcher()
    with pytest.raises(ValueError, match="already registered"):
        rpc.add("echo", Echo, lambda params, context: None)  # type: ignore[arg-type,return-value]


def test_error_object_shape() -> None:
    """Error objects omit data when there is none (spec 5.1)."""
    assert JsonRpcError(-32000, "x").to_object() == {"code": -32000, "message": "x"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
async def test_arbitrary_bytes_always_get_a_well_formed_reply(payload: bytes) -> None:
    """Whatever bytes arrive, the reply is None or valid JSON-RPC, never an exception."""
    reply = await make_dispatcher().handle(payload, None)
    if reply is not None:
        decoded = json.loads(reply)
        for item in decoded if isinstance(decoded, list) else [decoded]:
            assert item["jsonrpc"] == "2.0"
            assert ("result" in item) != ("error" in item)
