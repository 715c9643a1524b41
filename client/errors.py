"""The client's errors, as httpx draws them; each carries a ``hint`` for a person.

::

    ClientError          base; ``hint``: one line telling a person what to try
    ├── Unreachable      no connection: refused, unresolvable, timed out, dropped mid-request
    ├── HttpError        an HTTP status other than 200/204 (401, 403, 413 …), or a
    │                    WebSocket handshake refused; ``status``, ``detail``
    ├── RpcError         a JSON-RPC error reply; ``code``, ``message``, ``data``
    ├── Closed           the server closed the WebSocket and the tail will not reconnect
    │   │                (``reconnect=False``, or a code no retry cures); ``code``, ``reason``
    │   └── AuthError    4001 invalid token or authentication timeout, 4003 token expired
    └── ProtocolError    the server's reply is not JSON-RPC 2.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from protocols.websocket.codes import (
    CLOSE_TOKEN_EXPIRED,
)

_SERVE_HINT = "is `starling serve` running, and is the URL right?"


class ClientError(Exception):
    """Base of this module's errors.

    Attributes:
        hint: one line telling a person what to try next.
    """

    hint: str = "run with --debug for details"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class Unreachable(ClientError):
    """No connection to the server: refused, unresolvable, timed out, or dropped mid-request.

    Attributes:
        url: what was being reached (a WebSocket URL never shows its token).
    """

    hint = _SERVE_HINT

    def __init__(self, url: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"cannot connect to {url}: {reason}", hint=hint)
        self.url = url


class HttpError(ClientError):
    """The server answered with an HTTP error status (``/rpc``, or the WebSocket handshake).

    Attributes:
        status: the HTTP status code.
        detail: the server's explanation (the JSON-RPC error's ``data.detail``), or ``""``.
    """

    _HINTS: Final = {
        401: "pass the server's key: --api-key or STARLING_API_KEY",
        403: "the server has no API key set and serves loopback clients only",
        404: "is the URL that of a Starling server?",
        413: "send smaller requests (the server's --max-body-bytes)",
    }

    def __init__(self, status: int, detail: str, *, url: str = "") -> None:
        where = f" from {url}" if url else ""
        text = f"HTTP {status}{where}" + (f": {detail}" if detail else "")
        super().__init__(text, hint=self._HINTS.get(status))
        self.status = status
        self.detail = detail


class RpcError(ClientError):
    """A JSON-RPC error reply (jsonrpc.org/specification section 5.1).

    Attributes:
        code: the error code (``protocols.jsonrpc``, ``protocols.methods``,
            ``protocols.websocket.session``).
        message: the error's short sentence.
        data: the error's ``data`` object (``{}`` when it has none).
    """

    _HINTS: Final = {
        -32003: "a user:<id> channel needs a token of that user",
        -32602: "channels are post:<id> or user:<id>; ids are 1-64 of [A-Za-z0-9_.:@-]",
        -32601: "is the server a Starling of this version?",
        -32001: "the server is degraded: retry later (see /health)",
        -32002: "the server is slow: the event is in the stream and will be published",
    }

    def __init__(
        self, code: int, message: str, data: Mapping[str, Any] | None = None, *, what: str = ""
    ) -> None:
        self.code = code
        self.message = message
        self.data: dict[str, Any] = dict(data or {})
        explained = next(
            (str(self.data[key]) for key in ("detail", "reason", "channel") if key in self.data),
            None,
        )
        text = f"{what}: " if what else ""
        text += f"{message} ({code})" + (f": {explained}" if explained else "")
        super().__init__(text, hint=self._HINTS.get(code))

    @classmethod
    def from_object(cls, error: Any, *, what: str = "") -> RpcError:
        """The exception for a reply's ``error`` member.

        Raises:
            ProtocolError: ``error`` is not an error object.
        """
        if not isinstance(error, dict):
            raise ProtocolError(f"error is not an object: {error!r:.200}")
        code, message, data = error.get("code"), error.get("message"), error.get("data")
        if not isinstance(code, int) or not isinstance(message, str):
            raise ProtocolError(f"malformed error object: {error!r:.200}")
        return cls(code, message, data if isinstance(data, dict) else None, what=what)


class Closed(ClientError):
    """The server closed the WebSocket and :func:`tail` does not reconnect.

    Attributes:
        code: the close code (1006 when the connection ended without one).
        reason: the close reason the server gave, or ``""``.
    """

    def __init__(self, code: int, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"the server closed the connection: {code} {reason}".rstrip(), hint=hint)
        self.code = code
        self.reason = reason


class AuthError(Closed):
    """The server refused the token: close 4001 (invalid, or no auth in time) or 4003 (expired)."""

    def __init__(self, code: int, reason: str) -> None:
        hint = (
            "mint a fresh token: `starling token USER`"
            if code == CLOSE_TOKEN_EXPIRED
            else "the token must be signed with the server's secret: "
            "`starling token USER` with the server's --data-dir or STARLING_SECRET"
        )
        super().__init__(code, reason, hint=hint)


class ProtocolError(ClientError):
    """The server's reply is not JSON-RPC 2.0 (or not the reply to what was asked)."""
