"""The realtime protocol's wire structs, defined once for the server and the client.

Params (client → server; unknown fields refused), results and server pushes
(server → client; a client ignores fields it does not know, so a newer
server may add some). ``data`` is generic: the server splices pre-rendered
JSON (:class:`msgspec.Raw`), a client decodes it (``Any``)::

    connect      ConnectParams {token}                   → ConnectResult {user, expires_at}
    subscribe    SubscribeParams {channel, since?}        → SubscribeResult
    unsubscribe  UnsubscribeParams {channel}              → Empty {}
    history      HistoryParams {channel, since?, limit?}  → HistoryResult
    ping         {}                                       → Empty {}
    pub          (push) Pub {channel, offset, data}
    gap          (push) GapNotice {channel, first, last, epoch}

The session (:mod:`protocols.websocket.session`) says what each means.
"""

from __future__ import annotations

from typing import Annotated, Final, Generic, TypeVar

import msgspec

MAX_HISTORY_LIMIT: Final = 100
"""Most publications in one ``history`` reply: a channel's whole history."""

DataT = TypeVar("DataT")


class Since(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The last publication a client saw: its offset and the channel's epoch then."""

    offset: Annotated[int, msgspec.Meta(ge=0)]
    epoch: Annotated[str, msgspec.Meta(max_length=64)]


class ConnectParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``connect``: a token from :func:`auth.tokens.issue_token`."""

    token: str


class SubscribeParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``subscribe``: a channel name and, to recover, the last position seen."""

    channel: str
    since: Since | None = None


class UnsubscribeParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``unsubscribe``: a channel name."""

    channel: str


class HistoryParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``history``: a channel, an optional position to read after, at most ``limit`` items."""

    channel: str
    since: Since | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_HISTORY_LIMIT)] = MAX_HISTORY_LIMIT


class PublicationOut(msgspec.Struct, Generic[DataT], frozen=True):
    """A publication in a reply: its offset and its data."""

    offset: int
    data: DataT


class ConnectResult(msgspec.Struct, frozen=True):
    """``connect`` succeeded: who the session is and until when (epoch seconds)."""

    user: str
    expires_at: int


class SubscribeResult(msgspec.Struct, Generic[DataT], frozen=True):
    """``subscribe`` succeeded; ``recovered`` and ``publications`` only if ``since`` was given."""

    channel: str
    offset: int
    epoch: str
    recovered: bool | msgspec.UnsetType = msgspec.UNSET
    publications: list[PublicationOut[DataT]] | msgspec.UnsetType = msgspec.UNSET


class HistoryResult(msgspec.Struct, Generic[DataT], frozen=True):
    """``history``: publications oldest first, and the channel's current position."""

    publications: list[PublicationOut[DataT]]
    offset: int
    epoch: str


class Empty(msgspec.Struct, frozen=True):
    """The ``{}`` result of ``unsubscribe`` and ``ping``."""


class Pub(msgspec.Struct, Generic[DataT], frozen=True):
    """The params of a ``pub`` push: one publication of a subscribed channel.

    Built as bytes by :func:`protocols.websocket.frames.pub_notification` (once per
    publication, shared by every subscriber); this struct is its shape.
    """

    channel: str
    offset: int
    data: DataT


class GapNotice(msgspec.Struct, frozen=True):
    """The params of a ``gap`` push: offsets ``first..last`` of ``channel`` will never arrive;
    the subscription goes on after ``last``."""

    channel: str
    first: int
    last: int
    epoch: str


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """A server push: a JSON-RPC notification (no ``id``)."""

    jsonrpc: str = "2.0"
    method: str
    params: msgspec.Struct
