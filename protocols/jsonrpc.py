"""JSON-RPC 2.0: a pure codec and dispatcher, shared by HTTP and WebSocket.

Source: the JSON-RPC 2.0 Specification (jsonrpc.org/specification), sections
4 (request), 4.1 (notification), 4.2 (parameter structures), 5 (response),
5.1 (error object) and 6 (batch).

Error codes::

    -32700  Parse error        the payload is not JSON
    -32600  Invalid Request    not a request object (or an empty batch)
    -32601  Method not found
    -32602  Invalid params     params missing, of the wrong type, or unknown
    -32603  Internal error     a bug or a backend failure; the server stays up
    -32000..-32099             application errors; ``data`` is always an object

A method is registered with the :class:`msgspec.Struct` type of its params;
params are decoded into it once, at the boundary, and a handler only ever
sees a valid struct.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import structlog
import trio

log = structlog.get_logger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: Application errors (the -32000..-32099 "server error" range).
SERVICE_UNAVAILABLE = -32001
NOT_FOUND = -32004

MAX_BATCH = 100

ParamsT = TypeVar("ParamsT", bound=msgspec.Struct)
ContextT = TypeVar("ContextT")


class NoParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Params of a method that takes none."""


class JsonRpcError(Exception):
    """An error reply: raise it from a handler to answer with this error object.

    Args:
        code: a JSON-RPC error code (see the module docstring).
        message: a short sentence.
        data: extra detail; application errors always carry an object.
    """

    def __init__(self, code: int, message: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = dict(data) if data is not None else None

    def to_object(self) -> dict[str, Any]:
        """The error object of the response (spec section 5.1)."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def not_found(kind: str, id: str) -> JsonRpcError:
    """The application error for an unknown id: ``-32004`` with ``data.id``."""
    return JsonRpcError(NOT_FOUND, f"{kind} not found", {"kind": kind, "id": id})


Handler = Callable[[ParamsT, ContextT], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method(Generic[ParamsT, ContextT]):
    """A registered method: its name, params type and handler."""

    name: str
    params: type[ParamsT]
    handler: Handler[ParamsT, ContextT]
    description: str = ""


_NO_ID = object()
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def _response(id: Any, *, result: Any = None, error: JsonRpcError | None = None) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "error": error.to_object(), "id": id}
    return {"jsonrpc": "2.0", "result": result, "id": id}


def _valid_id(id: Any) -> bool:
    return id is None or isinstance(id, str) or (isinstance(id, int) and not isinstance(id, bool))


class Dispatcher(Generic[ContextT]):
    """Decodes JSON-RPC payloads, calls the registered handlers, encodes the replies.

    The context (for HTTP: who is calling) is passed to every handler untouched.

    Args:
        max_batch: most requests in one batch; a larger batch is an Invalid Request.
    """

    def __init__(self, *, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self.methods: dict[str, Method[Any, ContextT]] = {}
        self.on_call: Callable[[str, float, str], None] | None = None

    def add(
        self,
        name: str,
        params: type[ParamsT],
        handler: Handler[ParamsT, ContextT],
        *,
        description: str = "",
    ) -> None:
        """Register ``handler`` for ``name``; its params are decoded into ``params``.

        Raises:
            ValueError: ``name`` is already registered.
        """
        if name in self.methods:
            raise ValueError(f"method {name!r} is already registered")
        self.methods[name] = Method(name, params, handler, description)

    async def handle(self, payload: bytes, context: ContextT) -> bytes | None:
        """Answer one payload: a request, a notification or a batch.

        Returns:
            The encoded response, or ``None`` when nothing is to be sent back
            (a notification, or a batch of notifications only).
        """
        try:
            message = _decoder.decode(payload)
        except msgspec.DecodeError as exc:
            error = JsonRpcError(PARSE_ERROR, "Parse error", {"detail": str(exc)})
            return _encoder.encode(_response(None, error=error))
        if isinstance(message, list):
            return await self._handle_batch(message, context)
        reply = await self.handle_message(message, context)
        return None if reply is None else _encoder.encode(reply)

    async def _handle_batch(self, batch: list[Any], context: ContextT) -> bytes | None:
        if not batch:
            error = JsonRpcError(INVALID_REQUEST, "Invalid Request", {"detail": "empty batch"})
            return _encoder.encode(_response(None, error=error))
        if len(batch) > self.max_batch:
            detail = f"batch of {len(batch)} requests exceeds the limit of {self.max_batch}"
            error = JsonRpcError(INVALID_REQUEST, "Invalid Request", {"detail": detail})
            return _encoder.encode(_response(None, error=error))
        replies: list[dict[str, Any] | None] = [None] * len(batch)

        async def answer(index: int, message: Any) -> None:
            replies[index] = await self.handle_message(message, context)

        async with trio.open_nursery() as nursery:
            for index, message in enumerate(batch):
                nursery.start_soon(answer, index, message)
        answered = [reply for reply in replies if reply is not None]
        return _encoder.encode(answered) if answered else None

    async def handle_message(self, message: Any, context: ContextT) -> dict[str, Any] | None:
        """Answer one decoded request object; ``None`` for a notification."""
        if not isinstance(message, dict):
            return _invalid(None, "a request must be a JSON object")
        id = message.get("id", _NO_ID)
        notification = id is _NO_ID
        reply_id = None if notification else id
        if not notification and not _valid_id(id):
            return _invalid(None, "id must be a string, an integer or null")
        if message.get("jsonrpc") != "2.0":
            return _invalid(reply_id, 'jsonrpc must be exactly "2.0"')
        name = message.get("method")
        if not isinstance(name, str):
            return _invalid(reply_id, "method must be a string")
        params = message.get("params", {})
        if not isinstance(params, dict | list):
            return _invalid(reply_id, "params must be an object or an array")
        try:
            result = await self._call(name, params, context)
        except JsonRpcError as error:
            return None if notification else _response(reply_id, error=error)
        return None if notification else _response(reply_id, result=result)

    async def _call(self, name: str, params: dict[str, Any] | list[Any], context: ContextT) -> Any:
        method = self.methods.get(name)
        if method is None:
            raise JsonRpcError(METHOD_NOT_FOUND, "Method not found", {"method": name})
        decoded = decode_params(method.params, params)
        started = trio.current_time()
        outcome = "ok"
        try:
            return await method.handler(decoded, context)
        except JsonRpcError as error:
            outcome = "error" if error.code <= INTERNAL_ERROR else "app_error"
            raise
        except Exception as exc:
            outcome = "error"
            log.exception("method failed", method=name)
            raise JsonRpcError(
                INTERNAL_ERROR, "Internal error", {"type": type(exc).__name__}
            ) from exc
        finally:
            if self.on_call is not None:
                self.on_call(name, trio.current_time() - started, outcome)


def decode_params(type_: type[ParamsT], params: dict[str, Any] | list[Any]) -> ParamsT:
    """Decode params by name (an object) or by position (an array) into ``type_``.

    Raises:
        JsonRpcError: ``-32602`` naming the offending field.
    """
    if isinstance(params, list):
        fields = type_.__struct_fields__
        if len(params) > len(fields):
            raise JsonRpcError(
                INVALID_PARAMS,
                "Invalid params",
                {"detail": f"expected at most {len(fields)} positional params, got {len(params)}"},
            )
        params = dict(zip(fields, params, strict=False))
    try:
        return msgspec.convert(params, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params", {"detail": str(exc)}) from None


def _invalid(id: Any, detail: str) -> dict[str, Any]:
    return _response(id, error=JsonRpcError(INVALID_REQUEST, "Invalid Request", {"detail": detail}))


def encode(value: Any) -> bytes:
    """Encode ``value`` as JSON (structs, dataclasses, dicts, lists)."""
    return _encoder.encode(value)
