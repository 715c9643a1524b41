"""The realtime protocol's wire structs, defined once for the server and the client.

Params (client → server; unknown fields refused), results and server pushes
(server → client; a client ignores fields it does not know, so a newer
server may add some). ``data`` is generic: the server splices pre-rendered
JSON (:class:`msgspec.Raw`), a client decodes it (``Any``)::

    connect      ConnectParams {token}                   → ConnectResult {user, expires_at}
    subscribe    SubscribeParams {channel, since?, presence?} → SubscribeResult
    unsubscribe  UnsubscribeParams {channel}              → Empty {}
    history      HistoryParams {channel, since?, limit?}  → HistoryResult
    presence     PresenceParams {channel}                 → PresenceResult {users, total}
    presence_stats PresenceParams {channel}               → PresenceStatsResult {users, connections}
    ping         {}                                       → Empty {}
    pub          (push) Pub {channel, offset, data}
    gap          (push) GapNotice {channel, first, last, epoch}
    join, leave  (push) PresenceChange {channel, user, connections}

The session (:mod:`protocols.websocket.session`) says what each means.
"""

from __future__ import annotations

from typing import Annotated, Final, Generic, TypeVar

import msgspec

MAX_HISTORY_LIMIT: Final = 100
"""Most publications in one ``history`` reply: a channel's whole history."""
MAX_PRESENCE_USERS: Final = 1000
"""Most users listed in one ``presence`` reply (``total`` counts them all)."""

DataT = TypeVar("DataT")


class Since(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The last publication a client saw: its offset and the channel's epoch then."""

    offset: Annotated[int, msgspec.Meta(ge=0)]
    epoch: Annotated[str, msgspec.Meta(max_length=64)]


class ConnectParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``connect``: a token from :func:`auth.tokens.issue_token`."""

    token: str


class SubscribeParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``subscribe``: a channel name, to recover the last position seen, and whether to be
    in the channel's presence (and get its ``join``/``leave`` pushes)."""

    channel: str
    since: Since | None = None
    presence: bool = False


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


class PresenceParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``presence`` and ``presence_stats``: a channel name."""

    channel: str


class PresenceUser(msgspec.Struct, frozen=True):
    """One user present on a channel and their connections (tabs, over every process)."""

    user: str
    connections: int


class PresenceResult(msgspec.Struct, frozen=True):
    """``presence``: the users present, in user id order (at most
    :data:`MAX_PRESENCE_USERS`), and how many there are in all."""

    users: list[PresenceUser]
    total: int


class PresenceStatsResult(msgspec.Struct, frozen=True):
    """``presence_stats``: distinct users present and their connections in all."""

    users: int
    connections: int


class PresenceChange(msgspec.Struct, frozen=True):
    """The params of a ``join`` push (``connections`` >= 1: the user's count then) or a
    ``leave`` push (``connections`` 0) on a channel subscribed with ``presence: true``."""

    channel: str
    user: str
    connections: int


class Unsubscribed(msgspec.Struct, frozen=True):
    """The params of an ``unsubscribed`` push: the server ended the subscription to
    ``channel`` (``reason``: ``"unfollowed"``, ``"blocked"``); it is not renewed."""

    channel: str
    reason: str


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """A server push: a JSON-RPC notification (no ``id``)."""

    jsonrpc: str = "2.0"
    method: str
    params: msgspec.Struct
