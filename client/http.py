"""JSON-RPC 2.0 over HTTP (``POST /rpc``): one call, or a batch with one :class:`Reply` each.

::

    async with open_client("http://127.0.0.1:8080", api_key=key) as http:
        accepted = await rpc(http, "realtime.publish", {"channel": "post:1", "data": {...}})
        replies = await rpc_batch(http, [("realtime.publish", {...}), ...])  # one Reply each
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import msgspec

from client.errors import HttpError, ProtocolError, RpcError, Unreachable

SECONDS: Final = 1.0
DEFAULT_HTTP_TIMEOUT: Final = 30 * SECONDS
"""Longer than the server's publish timeout (5 s) and call timeout (10 s)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One call's outcome in a batch: its ``result``, or its ``error``."""

    result: Any = None
    error: RpcError | None = None

    def unwrap(self) -> Any:
        """The result.

        Raises:
            RpcError: the call failed.
        """
        if self.error is not None:
            raise self.error
        return self.result


Params = Mapping[str, Any] | Sequence[Any] | None

encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder()


def open_client(
    url: str,
    *,
    api_key: str | None = None,
    timeout: float = DEFAULT_HTTP_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An HTTP client for :func:`rpc` and :func:`rpc_batch` (use it as ``async with``).

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
        api_key: sent as ``Authorization: Bearer <key>`` (the server's STARLING_API_KEY).
        timeout: seconds to connect, and to wait for each reply.
        transport: an httpx transport instead of the network (tests: ``httpx.MockTransport``).
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(
        base_url=url, headers=headers, timeout=httpx.Timeout(timeout), transport=transport
    )


def request(id: int, method: str, params: Params) -> dict[str, Any]:
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        request["params"] = params
    return request


async def _post(client: httpx.AsyncClient, body: Any) -> Any:
    """POST ``body`` to ``/rpc``; the decoded JSON reply (``None`` for a 204).

    Raises:
        Unreachable: no connection, or no reply in time.
        HttpError: a status other than 200/204.
        ProtocolError: the reply is not JSON.
    """
    url = str(client.base_url).rstrip("/") + "/rpc"  # as httpx merges "/rpc" into it
    try:
        response = await client.post(
            "/rpc", content=encoder.encode(body), headers={"Content-Type": "application/json"}
        )
    except httpx.TimeoutException as exc:
        raise Unreachable(
            url, f"no reply in time ({type(exc).__name__})", hint="the server is overloaded?"
        ) from exc
    except httpx.TransportError as exc:
        raise Unreachable(url, str(exc) or type(exc).__name__) from exc
    if response.status_code == 204:
        return None
    if response.status_code != 200:
        raise HttpError(response.status_code, _detail(response), url=url)
    try:
        return decoder.decode(response.content)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"{url} answered something that is not JSON: {exc}") from None


def _detail(response: httpx.Response) -> str:
    """The ``data.detail`` (or message) of an HTTP error's JSON-RPC body, else its text."""
    try:
        error = decoder.decode(response.content).get("error", {})
        detail = error.get("data", {}).get("detail") or error.get("message")
    except (msgspec.DecodeError, AttributeError):
        detail = None
    return str(detail) if detail else " ".join(response.text.split())[:200]


def _result(reply: Any, what: str) -> Reply:
    if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0":
        raise ProtocolError(f"{what}: not a JSON-RPC 2.0 response: {reply!r:.200}")
    if "error" in reply:
        return Reply(error=RpcError.from_object(reply["error"], what=what))
    if "result" not in reply:
        raise ProtocolError(f"{what}: a response with neither result nor error")
    return Reply(result=reply["result"])


async def rpc(client: httpx.AsyncClient, method: str, params: Params = None) -> Any:
    """Call ``method`` on ``POST /rpc``; its result.

    Args:
        client: from :func:`open_client` (its base URL and key are used).
        method: the method name, e.g. ``realtime.publish``.
        params: by name (a mapping) or by position (a sequence), or none.

    Raises:
        RpcError: the server answered with a JSON-RPC error.
        HttpError: 401 (key missing or wrong), 403 (not loopback and no key set),
            413 (body over the server's limit), or any other status but 200.
        Unreachable: no connection, or no reply in time.
        ProtocolError: the reply is not a JSON-RPC 2.0 response.
    """
    return _result(await _post(client, request(0, method, params)), method).unwrap()


async def rpc_batch(client: httpx.AsyncClient, calls: Sequence[tuple[str, Params]]) -> list[Reply]:
    """Call several methods in one JSON-RPC batch (spec section 6); one :class:`Reply` per call.

    The server may run a batch's calls concurrently and in any order (the
    spec allows it, Starling does): calls whose order matters (two
    publications on one channel) belong in successive batches.

    Args:
        client: from :func:`open_client`.
        calls: ``(method, params)`` pairs, at most the server's batch limit
            (``protocols.jsonrpc.MAX_BATCH``, 100).

    Returns:
        The replies in the order of ``calls``; a failed call's :class:`Reply` holds its
        :class:`RpcError` (the other calls were still made).

    Raises:
        RpcError: the batch as a whole was refused (e.g. longer than the server's limit).
        HttpError, Unreachable, ProtocolError: as :func:`rpc`.
    """
    if not calls:
        return []
    body = [request(id, method, params) for id, (method, params) in enumerate(calls)]
    replies = await _post(client, body)
    if isinstance(replies, dict):  # the batch as a whole was refused
        _result(replies, f"a batch of {len(calls)}").unwrap()
    if not isinstance(replies, list):
        raise ProtocolError(f"a batch was answered with {replies!r:.200}")
    by_id: dict[int, Reply] = {}
    for reply in replies:
        id = reply.get("id") if isinstance(reply, dict) else None
        if not isinstance(id, int) or not 0 <= id < len(calls) or id in by_id:
            raise ProtocolError(f"unexpected reply in a batch: {reply!r:.200}")
        by_id[id] = _result(reply, calls[id][0])
    if len(by_id) != len(calls):
        raise ProtocolError(f"{len(calls) - len(by_id)} calls of a batch got no reply")
    return [by_id[id] for id in range(len(calls))]
