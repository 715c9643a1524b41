"""JSON-RPC 2.0: one envelope, method tables and dispatch, for HTTP and the WebSocket alike.

Source: the JSON-RPC 2.0 Specification (jsonrpc.org/specification), sections
4 (request), 4.1 (notification), 4.2 (parameter structures), 5 (response),
5.1 (error object) and 6 (batch).

A payload is decoded once into :class:`Request` envelopes whose ``params``
stay raw (:class:`msgspec.Raw`); the method is looked up by name, and its
params are decoded straight from those raw bytes by the method's own
decoder into its :class:`msgspec.Struct` type (by name, or by position from
an array). A handler only ever sees a valid struct. ``POST /rpc`` runs the
methods of a :class:`Dispatcher` (:mod:`protocols.methods`); the WebSocket
session (:mod:`protocols.websocket.session`) answers its own methods
(``connect``, ``subscribe`` …) from a :class:`MethodTable` of its own and
hands every other method to the same dispatcher, so one method answers the
same way on both.

Error codes, every one Starling answers::

    -32700  Parse error             the payload is not JSON
    -32600  Invalid Request         not a request object, an empty batch, a batch too long
    -32601  Method not found        data.method
    -32602  Invalid params          params missing, of the wrong type, or unknown; data.detail
    -32603  Internal error          a bug; the server stays up; data.type
    -32001  service unavailable     the actor or backend behind the method is down; retry
    -32002  timeout                 no reply within the call timeout
    -32003  unauthorized/forbidden  the caller may not do this; data.reason
    -32004  not found               data: {kind, id}
    -32005  too many subscriptions  data.limit
    -32006  unrecoverable position  data: the channel's current {offset, epoch}
    -32009  already exists          data: {kind, id}
    -32010  snapshot expired        data.snapshot
    -32011  rate limited            over the caller's rate (:mod:`protocols.ratelimit`);
                                    data.retry_after_ms; the connection stays open
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

import msgspec
import structlog
import trio

log = structlog.get_logger(__name__)

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# Application errors (the -32000..-32099 "server error" range).
SERVICE_UNAVAILABLE: Final = -32001
TIMEOUT: Final = -32002
UNAUTHORIZED: Final = -32003
FORBIDDEN: Final = -32003
"""The same code as :data:`UNAUTHORIZED`; the message says "forbidden"."""
NOT_FOUND: Final = -32004
TOO_MANY_SUBSCRIPTIONS: Final = -32005
UNRECOVERABLE_POSITION: Final = -32006
ALREADY_EXISTS: Final = -32009
SNAPSHOT_EXPIRED: Final = -32010
RATE_LIMITED: Final = -32011

MAX_BATCH: Final = 100
"""Most requests in one batch, by default."""

ParamsT = TypeVar("ParamsT", bound=msgspec.Struct)
ContextT = TypeVar("ContextT")
HandlerT = TypeVar("HandlerT")


class NoParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Params of a method that takes none."""


class Request(msgspec.Struct, frozen=True):
    """The envelope of one request (spec section 4); ``params`` left raw, decoded by method.

    Attributes:
        jsonrpc: must be exactly ``"2.0"``.
        method: the method's name.
        params: the params' JSON text: an object (by name) or an array (by position).
        id: a string, an integer or ``null``; absent (:data:`msgspec.UNSET`) for a notification.
    """

    jsonrpc: str
    method: str
    params: msgspec.Raw = msgspec.Raw(b"{}")
    id: int | str | msgspec.UnsetType | None = msgspec.UNSET

    @property
    def notification(self) -> bool:
        """Whether no reply is wanted (no ``id``, spec section 4.1)."""
        return self.id is msgspec.UNSET

    @property
    def reply_id(self) -> int | str | None:
        """The id its reply carries (``None`` for a notification)."""
        return None if self.id is msgspec.UNSET else self.id


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


class Malformed(Exception):
    """A payload or request that is not JSON-RPC 2.0: :attr:`reply` is the error reply."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply["error"]["message"])
        self.reply = reply


def not_found(kind: str, id: str) -> JsonRpcError:
    """The application error for an unknown id: ``-32004`` with ``data.id``."""
    return JsonRpcError(NOT_FOUND, f"{kind} not found", {"kind": kind, "id": id})


def rate_limited(retry_after_ms: int) -> JsonRpcError:
    """``-32011`` ``rate limited``: the caller may try again in ``retry_after_ms`` milliseconds."""
    return JsonRpcError(RATE_LIMITED, "rate limited", {"retry_after_ms": retry_after_ms})


def invalid_params(detail: str, **data: Any) -> JsonRpcError:
    """``-32602`` with ``data.detail`` (and any other ``data`` fields given)."""
    return JsonRpcError(INVALID_PARAMS, "Invalid params", {"detail": detail, **data})


# -- replies ------------------------------------------------------------------------


def result_reply(id: Any, result: Any) -> dict[str, Any]:
    """A success response (spec section 5)."""
    return {"jsonrpc": "2.0", "result": result, "id": id}


def error_reply(id: Any, error: JsonRpcError) -> dict[str, Any]:
    """An error response (spec sections 5 and 5.1)."""
    return {"jsonrpc": "2.0", "error": error.to_object(), "id": id}


def invalid_request(id: Any, detail: str) -> dict[str, Any]:
    """A ``-32600`` response with ``data.detail``."""
    return error_reply(id, JsonRpcError(INVALID_REQUEST, "Invalid Request", {"detail": detail}))


_encoder = msgspec.json.Encoder()
_payloads = msgspec.json.Decoder(list[msgspec.Raw] | Request)
_requests = msgspec.json.Decoder(Request)
_anything = msgspec.json.Decoder()


def encode(value: Any) -> bytes:
    """Encode ``value`` as JSON (structs, dataclasses, dicts, lists)."""
    return _encoder.encode(value)


# -- decoding -----------------------------------------------------------------------


def decode_payload(payload: bytes | str) -> Request | list[msgspec.Raw]:
    """One request, or a batch whose members are still raw (:func:`decode_request` each).

    Raises:
        Malformed: not JSON (-32700), or not a request object or an array (-32600).
    """
    try:
        return _payloads.decode(payload)
    except msgspec.ValidationError as exc:
        raise Malformed(_invalid(payload, exc)) from None
    except (msgspec.DecodeError, UnicodeEncodeError, RecursionError) as exc:
        error = JsonRpcError(PARSE_ERROR, "Parse error", {"detail": _detail(exc)})
        raise Malformed(error_reply(None, error)) from None


def decode_request(raw: msgspec.Raw) -> Request:
    """One member of a batch.

    Raises:
        Malformed: not a request object (-32600), or not JSON (-32700: a batch's members
            are skipped over, not checked, until they are decoded one by one).
    """
    try:
        return _requests.decode(raw)
    except msgspec.ValidationError as exc:
        raise Malformed(_invalid(raw, exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:  # the batch skipped it unchecked
        error = JsonRpcError(PARSE_ERROR, "Parse error", {"detail": _detail(exc)})
        raise Malformed(error_reply(None, error)) from None


def check_request(request: Request) -> None:
    """The envelope rules msgspec's types do not say (spec section 4).

    Raises:
        Malformed: ``jsonrpc`` is not ``"2.0"`` (-32600).
    """
    if request.jsonrpc != "2.0":
        raise Malformed(invalid_request(request.reply_id, 'jsonrpc must be exactly "2.0"'))


def _invalid(raw: bytes | str | msgspec.Raw, error: msgspec.ValidationError) -> dict[str, Any]:
    """The -32600 reply to a request that failed validation, with its id if it has a valid one."""
    detail = str(error)
    if "`$.id`" in detail or detail.endswith("at `$.id`"):
        detail = "id must be a string, an integer or null"
    try:
        message = _anything.decode(raw)
    except (msgspec.DecodeError, UnicodeEncodeError, RecursionError):
        return invalid_request(None, detail)
    if not isinstance(message, dict):
        return invalid_request(None, "a request must be a JSON object")
    id = message.get("id")
    valid = isinstance(id, str) or (isinstance(id, int) and not isinstance(id, bool))
    return invalid_request(id if valid else None, detail)


TOO_DEEP: Final = "JSON nested too deeply"
"""The detail of a payload msgspec cannot decode without overflowing the stack (it raises
:class:`RecursionError` at about a thousand levels of arrays or objects)."""


def _detail(error: Exception) -> str:
    """What was wrong with a payload msgspec refused."""
    return TOO_DEEP if isinstance(error, RecursionError) else str(error)


class Access(enum.Enum):
    """Who may call a method with a token (on ``/ws``, and on ``POST /rpc`` with a bearer
    token; the API key, or a loopback client when no key is set, may call every method).

    OPERATORS: operator and service tokens only (``system.*``, publishing on any channel …).
    SELF: also a user's token, when the method's :attr:`Method.acting` param names that user
        (``social.follow`` with ``follower`` = the token's user …).
    USERS: any authenticated token (reads of public data: ``posts.get``, ``social.counts`` …).
    """

    OPERATORS = "operators"
    SELF = "self"
    USERS = "users"


@dataclass(frozen=True, slots=True)
class Method(Generic[HandlerT]):
    """A registered method.

    Attributes:
        name: its name, ``domain.verb``.
        params: the :class:`msgspec.Struct` type its params are decoded into.
        handler: what answers it.
        description: one line for the method list.
        access: who may call it over the WebSocket.
        acting: for :attr:`Access.SELF`, the param that names who acts (``user``, ``follower``).
    """

    name: str
    params: type[msgspec.Struct]
    handler: HandlerT
    description: str = ""
    access: Access = Access.OPERATORS
    acting: str | None = None
    _decoder: msgspec.json.Decoder[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(self.params))
        if (self.access is Access.SELF) != (self.acting is not None):
            raise ValueError(f"{self.name}: Access.SELF and acting go together")
        if self.acting is not None and self.acting not in self.params.__struct_fields__:
            raise ValueError(f"{self.name}: {self.acting!r} is not a param")

    def decode(self, raw: msgspec.Raw) -> Any:
        """The params, decoded once from their raw JSON: by name, or by position.

        Raises:
            JsonRpcError: ``-32600`` when params are neither an object nor an array,
                ``-32602`` naming the offending field (or nested too deeply, or a number
                out of range), ``-32700`` for bytes that are not UTF-8.
        """
        first = bytes(memoryview(raw)[:1])
        if first == b"{":
            try:
                return self._decoder.decode(raw)
            except (msgspec.ValidationError, RecursionError) as exc:
                raise invalid_params(_detail(exc)) from None
            except msgspec.DecodeError as exc:  # bad UTF-8: the envelope skipped params unchecked
                raise JsonRpcError(PARSE_ERROR, "Parse error", {"detail": str(exc)}) from None
        if first != b"[":
            raise JsonRpcError(
                INVALID_REQUEST,
                "Invalid Request",
                {"detail": "params must be an object or an array"},
            )
        try:
            positional = _anything.decode(raw)
        except (msgspec.ValidationError, RecursionError) as exc:  # 1e400; nested too deeply
            raise invalid_params(_detail(exc)) from None
        except msgspec.DecodeError as exc:
            raise JsonRpcError(PARSE_ERROR, "Parse error", {"detail": str(exc)}) from None
        fields = self.params.__struct_fields__
        if len(positional) > len(fields):
            detail = f"expected at most {len(fields)} positional params, got {len(positional)}"
            raise invalid_params(detail)
        try:
            return msgspec.convert(
                dict(zip(fields, positional, strict=False)), self.params, strict=True
            )
        except (msgspec.ValidationError, RecursionError) as exc:
            raise invalid_params(_detail(exc)) from None

    def permits(self, user: str, params: Any, *, privileged: bool) -> bool:
        """Whether a token of ``user`` may call it with ``params``.

        Args:
            privileged: the token is an operator's or a service's.
        """
        if privileged or self.access is Access.USERS:
            return True
        if self.access is Access.SELF:
            return bool(getattr(params, self.acting or "", None) == user)
        return False

    def refusal(self, user: str, params: Any, *, privileged: bool) -> JsonRpcError | None:
        """``None`` if a token of ``user`` may call it with ``params`` (:meth:`permits`), else
        the -32003 ``forbidden`` error whose ``data.reason`` says who may."""
        if self.permits(user, params, privileged=privileged):
            return None
        reason = (
            f"{self.name} is for operators and services"
            if self.acting is None
            else f"{self.name} acts for {self.acting} = the token's user only"
        )
        return JsonRpcError(FORBIDDEN, "forbidden", {"reason": reason})


@dataclass(frozen=True, slots=True)
class Caller:
    """Whom a bearer token authenticated on ``POST /rpc`` (:meth:`Dispatcher.handle`).

    Attributes:
        user: the token's user (``sub``).
        privileged: an operator's or a service's token: every method.
    """

    user: str
    privileged: bool = False


class MethodTable(Generic[HandlerT]):
    """Methods by name."""

    def __init__(self) -> None:
        self._methods: dict[str, Method[HandlerT]] = {}

    def add(
        self,
        name: str,
        params: type[msgspec.Struct],
        handler: HandlerT,
        *,
        description: str = "",
        access: Access = Access.OPERATORS,
        acting: str | None = None,
    ) -> None:
        """Register ``handler`` for ``name``; its params are decoded into ``params``.

        Raises:
            ValueError: ``name`` is already registered, or ``access``/``acting`` disagree.
        """
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        self._methods[name] = Method(name, params, handler, description, access, acting)

    @property
    def methods(self) -> Mapping[str, Method[HandlerT]]:
        """The methods by name (read only)."""
        return MappingProxyType(self._methods)

    def get(self, name: str) -> Method[HandlerT] | None:
        """The method called ``name``, if registered."""
        return self._methods.get(name)

    def lookup(self, name: str) -> Method[HandlerT]:
        """The method called ``name``.

        Raises:
            JsonRpcError: -32601 naming it.
        """
        method = self._methods.get(name)
        if method is None:
            raise JsonRpcError(METHOD_NOT_FOUND, "Method not found", {"method": name})
        return method

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[Method[HandlerT]]:
        return iter(self._methods.values())

    def __len__(self) -> int:
        return len(self._methods)


Handler = Callable[[Any, ContextT], Awaitable[Any]]
"""``async def handler(params: SomeStruct, context) -> result`` (a JSON-encodable value)."""


class Dispatcher(MethodTable[Handler[ContextT]], Generic[ContextT]):
    """Answers JSON-RPC payloads with the registered async handlers.

    The context (who is calling) is passed to every handler untouched.

    Args:
        max_batch: most requests in one batch; a larger batch is an Invalid Request.

    Attributes:
        on_call: called once per call that reached a handler, with ``(method,
            seconds, outcome)``; outcome ``ok`` | ``app_error`` | ``error``.
    """

    def __init__(self, *, max_batch: int = MAX_BATCH) -> None:
        super().__init__()
        self.max_batch = max_batch
        self.on_call: Callable[[str, float, str], None] | None = None

    async def handle(
        self, payload: bytes, context: ContextT, *, caller: Caller | None = None
    ) -> bytes | None:
        """Answer one payload: a request, a notification or a batch (``POST /rpc``).

        The calls of a batch run concurrently; their replies keep the batch's order.

        Args:
            payload: the request body.
            context: handed to every handler.
            caller: a token's user: each method checks its :class:`Access` first
                (-32003 ``forbidden``); ``None``: a trusted caller, every method.

        Returns:
            The encoded response, or ``None`` when nothing is to be sent back
            (a notification, or a batch of notifications only).
        """
        try:
            message = decode_payload(payload)
        except Malformed as malformed:
            return _encoder.encode(malformed.reply)
        if isinstance(message, Request):
            reply = await self.answer(message, context, caller=caller)
            return None if reply is None else _encoder.encode(reply)
        if not message:
            return _encoder.encode(invalid_request(None, "empty batch"))
        if len(message) > self.max_batch:
            detail = f"batch of {len(message)} requests exceeds the limit of {self.max_batch}"
            return _encoder.encode(invalid_request(None, detail))
        replies: list[dict[str, Any] | None] = [None] * len(message)

        async def answer(index: int, raw: msgspec.Raw) -> None:
            try:
                request = decode_request(raw)
            except Malformed as malformed:
                replies[index] = malformed.reply
            else:
                replies[index] = await self.answer(request, context, caller=caller)

        async with trio.open_nursery() as nursery:
            for index, raw in enumerate(message):
                nursery.start_soon(answer, index, raw)
        answered = [reply for reply in replies if reply is not None]
        return _encoder.encode(answered) if answered else None

    async def answer(
        self, request: Request, context: ContextT, *, caller: Caller | None = None
    ) -> dict[str, Any] | None:
        """The reply to one decoded request; ``None`` for a notification (even on error).

        Args:
            caller: as :meth:`handle`.
        """
        try:
            check_request(request)
            method = self.lookup(request.method)
            params = method.decode(request.params)
            if caller is not None:
                refused = method.refusal(caller.user, params, privileged=caller.privileged)
                if refused is not None:
                    raise refused
        except Malformed as malformed:
            return malformed.reply
        except JsonRpcError as error:
            return None if request.notification else error_reply(request.reply_id, error)
        return await self.reply(method, params, request, context)

    async def reply(
        self, method: Method[Handler[ContextT]], params: Any, request: Request, context: ContextT
    ) -> dict[str, Any] | None:
        """Run ``method`` on params already decoded; the reply (``None`` for a notification)."""
        try:
            result = await self.invoke(method, params, context)
        except JsonRpcError as error:
            return None if request.notification else error_reply(request.reply_id, error)
        return None if request.notification else result_reply(request.reply_id, result)

    async def invoke(
        self, method: Method[Handler[ContextT]], params: Any, context: ContextT
    ) -> Any:
        """Run the handler; a bug becomes -32603 (logged once), and :attr:`on_call` hears of it.

        Raises:
            JsonRpcError: the handler's error, or -32603 for any other exception.
        """
        started = trio.current_time()
        outcome = "ok"
        try:
            return await method.handler(params, context)
        except JsonRpcError as error:
            outcome = "error" if error.code <= INTERNAL_ERROR else "app_error"
            raise
        except Exception as exc:
            outcome = "error"
            log.exception("method failed", method=method.name)
            raise JsonRpcError(
                INTERNAL_ERROR, "Internal error", {"type": type(exc).__name__}
            ) from exc
        finally:
            if self.on_call is not None:
                self.on_call(method.name, trio.current_time() - started, outcome)
