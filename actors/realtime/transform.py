"""The transformer's pure work: validate a stream entry, enrich it, render its payload once.

A stream entry of ``starling:events`` has two fields, ``channel`` (a
``post:`` or ``user:`` channel name, see :mod:`actors.realtime.channels`;
``system:`` channels are published by the server itself) and ``data`` (a JSON object, at
most :data:`MAX_DATA_BYTES`), and, when it was numbered as it was appended
(:meth:`stores.sequence.Sequencer.append_numbered`: ``realtime.publish``,
``FCALL starling_publish``), ``offset`` (decimal) and ``gen`` (the generation
its epoch derives from). An entry that breaks these rules is *poison*:
the transformer acknowledges it, counts it and logs it once, and never
retries it.

Enrichment: an event whose data names a ``user`` gets ``author`` display
fields from the cache (``starling:profile:<user>``, a JSON object written by
whoever owns profiles: the application that knows its users), or ``{"id": user}`` when
there is none. The payload is rendered to bytes here, once; every subscriber
of the channel is sent those same bytes (Disqus: "render once, fan out").

Wire form of a rendered batch between processes (Redis Pub/Sub topic
:data:`TOPIC`): msgpack ``[origin, [[channel, offset, epoch, entry_id, data]…]]``,
``origin`` naming the process that sent it (its own relay skips it: that
process delivered the batch locally already).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from actors.realtime.channels import parse_channel
from actors.realtime.streams import PROFILE_PREFIX
from stores.sequence import channel_epoch

MAX_DATA_BYTES = 64 * 1024


class PoisonEvent(ValueError):
    """A stream entry that can never be delivered (bad channel, data not a JSON object …)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A valid event before enrichment.

    Attributes:
        entry: the stream entry id.
        channel: the channel name.
        data: the decoded data object.
        raw: the data as it came (re-used when enrichment adds nothing).
        offset: its offset, when it was numbered as it was appended, else ``None``.
        epoch: its channel's epoch then, else ``None``.
    """

    entry: str
    channel: str
    data: dict[str, Any]
    raw: bytes
    offset: int | None = None
    epoch: str | None = None


class Rendered(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One event ready to publish: where, its number, and the payload bytes.

    Not tracked by the garbage collector (strings, ints and bytes only): the
    receipts keep tens of thousands of them.
    """

    channel: str
    offset: int
    epoch: str
    entry: str
    data: bytes


class _Batch(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A rendered batch on the wire: who sent it, and the events."""

    origin: str
    items: list[Rendered]


_decoder = msgspec.json.Decoder()
_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(_Batch)


def check_event(channel: str) -> str:
    """``channel``, if events may be published on it (``post:``, ``user:``, ``circle:``).

    Raises:
        PoisonEvent: a malformed channel name, a ``system:`` channel, or a
            ``following:`` channel (the server fans activities out there itself).
    """
    try:
        kind = parse_channel(channel).kind
    except ValueError as exc:
        raise PoisonEvent(str(exc)) from None
    if kind == "system" or kind == "following":
        raise PoisonEvent(f"channel {channel!r}: {kind}: channels are the server's own")
    return channel


def parse_entry(entry: str, fields: Mapping[str, str]) -> Parsed:
    """Validate one stream entry.

    Raises:
        PoisonEvent: a missing or malformed ``channel`` or ``data``.
    """
    channel = fields.get("channel")
    data = fields.get("data")
    if channel is None or data is None:
        raise PoisonEvent("an event needs the fields 'channel' and 'data'")
    check_event(channel)
    try:
        raw = data.encode()
    except UnicodeEncodeError:  # bytes that were not UTF-8, as the stream port decodes them
        raise PoisonEvent("data is not UTF-8") from None
    if len(raw) > MAX_DATA_BYTES:
        raise PoisonEvent(f"data is {len(raw)} bytes; at most {MAX_DATA_BYTES}")
    try:
        decoded = _decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:  # 1e400 too; or nested too deeply
        raise PoisonEvent(f"data is not JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise PoisonEvent("data must be a JSON object")
    offset = fields.get("offset")
    if offset is None:
        return Parsed(entry, channel, decoded, raw)
    generation = fields.get("gen")
    if not (_OFFSET.fullmatch(offset) and int(offset) > 0 and generation):
        raise PoisonEvent("offset must be a positive integer, with its generation 'gen'")
    try:
        epoch = _epoch(generation, channel)
    except UnicodeEncodeError:
        raise PoisonEvent("gen is not UTF-8") from None
    return Parsed(entry, channel, decoded, raw, int(offset), epoch)


_OFFSET = re.compile(r"[0-9]{1,18}")
"""An offset as the sequencer writes it: ASCII digits, at most 18 of them (below 2**63, what
msgpack and the stores hold); ``str.isdigit`` also takes "²", which ``int`` refuses."""


_epochs: dict[tuple[str, str], str] = {}


def _epoch(generation: str, channel: str) -> str:
    """:func:`stores.sequence.channel_epoch`, remembered (a hash per event otherwise)."""
    key = (generation, channel)
    epoch = _epochs.get(key)
    if epoch is None:
        if len(_epochs) >= 100_000:
            _epochs.clear()
        epoch = _epochs[key] = channel_epoch(generation, channel)
    return epoch


def profile_key(user: str) -> str:
    """The cache key of a user's display fields."""
    return f"{PROFILE_PREFIX}{user}"


def render(event: Parsed, profiles: Mapping[str, dict[str, Any]]) -> bytes:
    """The payload bytes of ``event``, with ``author`` added when it names a ``user``."""
    user = event.data.get("user")
    if not isinstance(user, str) or "author" in event.data:
        return event.raw
    author = profiles.get(user) or {"id": user}
    return msgspec.json.encode({**event.data, "author": author})


def encode_batch(batch: list[Rendered], origin: str) -> bytes:
    """The Pub/Sub message of a rendered batch sent by process ``origin``."""
    return _batch_encoder.encode(_Batch(origin, batch))


def decode_batch(message: bytes) -> tuple[str, list[Rendered]]:
    """The origin and the events of a rendered batch's Pub/Sub message.

    Raises:
        msgspec.DecodeError: not a batch.
    """
    batch = _batch_decoder.decode(message)
    return batch.origin, batch.items
