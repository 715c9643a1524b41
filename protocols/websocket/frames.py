"""Server-to-client WebSocket frames, built once and shared (RFC 6455 section 5.2).

A server frame is never masked (section 5.1), so the bytes of a frame do not
depend on the connection they go to: the publisher builds a publication's
frame once and hands the same ``bytes`` object to every subscriber of its
channel (:func:`pub_frame`). The header is 2 bytes for payloads up to 125
bytes, 4 up to 65,535 and 10 beyond (section 5.2, "Payload length")::

    0x81            FIN + opcode 0x1 (text)
    len | 126 | 127 payload length, then 0, 2 or 8 bytes of extended length (network order)
    payload         UTF-8 JSON

permessage-deflate is not offered, so RSV1 is always 0. Client frames are
parsed by wsproto (:mod:`protocols.websocket.edge`); control frames to the
client (pong, close) are built by wsproto too.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocols.websocket.wire import GapNotice, Notification, PresenceChange, Unsubscribed

_TEXT: Final = 0x81
_encode = msgspec.json.Encoder().encode

_PUB_HEAD: Final = b'{"jsonrpc":"2.0","method":"pub","params":{"channel":'
_PUB_OFFSET: Final = b',"offset":'
_PUB_DATA: Final = b',"data":'
_PUB_END: Final = b"}}"


def text_header(length: int) -> bytes:
    """The header of an unmasked, final text frame whose payload is ``length`` bytes."""
    if length < 126:
        return bytes((_TEXT, length))
    if length < 65_536:
        return bytes((_TEXT, 126)) + length.to_bytes(2, "big")
    return bytes((_TEXT, 127)) + length.to_bytes(8, "big")


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload`` (UTF-8 JSON bytes)."""
    return text_header(len(payload)) + payload


def pub_notification(channel: str, offset: int, data: bytes) -> bytes:
    """One ``pub`` notification (params :class:`~protocols.websocket.wire.Pub`), ``data``
    spliced in as is.

    ``{"jsonrpc":"2.0","method":"pub","params":{"channel":…,"offset":…,"data":…}}``

    Args:
        channel: the channel name (its JSON encoding is spliced).
        offset: the publication's offset in the channel.
        data: the rendered JSON object (the transformer rendered it once).
    """
    return b"".join(
        (_PUB_HEAD, _encode(channel), _PUB_OFFSET, b"%d" % offset, _PUB_DATA, data, _PUB_END)
    )


def gap_frame(channel: str, first: int, last: int, epoch: str) -> bytes:
    """The ``gap`` notice: offsets ``first..last`` of ``channel`` will never arrive here.

    ``{"jsonrpc":"2.0","method":"gap","params":{"channel":…,"first":…,"last":…,"epoch":…}}``
    The client reloads the channel's state from the application (as after
    ``recovered: false``) and keeps its subscription: the next ``pub`` has
    offset ``last + 1``.
    """
    notice = Notification(method="gap", params=GapNotice(channel, first, last, epoch))
    return text_frame(_encode(notice))


def unsubscribed_frame(channel: str, reason: str) -> bytes:
    """The ``unsubscribed`` push: the server ended the subscription to ``channel``.

    ``{"jsonrpc":"2.0","method":"unsubscribed","params":{"channel":…,"reason":…}}``
    """
    return text_frame(
        _encode(Notification(method="unsubscribed", params=Unsubscribed(channel, reason)))
    )


def presence_frame(method: str, channel: str, user: str, connections: int) -> bytes:
    """A ``join`` or ``leave`` push (``method``): ``user`` came to or left ``channel``.

    ``{"jsonrpc":"2.0","method":"join","params":{"channel":…,"user":…,"connections":…}}``
    Built once per change and shared by the channel's presence subscribers
    (:class:`actors.realtime.presence.PresenceTracker`).
    """
    change = PresenceChange(channel, user, connections)
    return text_frame(_encode(Notification(method=method, params=change)))


def pub_frame(channel: str, offset: int, data: bytes) -> bytes:
    """The wire frame of one publication: :func:`pub_notification` as a text frame.

    Built once per publication by the publisher (its ``render``) and shared
    by every subscriber: cost O(len(data)), one allocation.
    """
    return text_frame(pub_notification(channel, offset, data))
