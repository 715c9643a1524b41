"""The sequencer port: per-channel offsets and epochs, shared by every process.

Realtime channels number their publications 1, 2, 3 … and name the lifetime
of that numbering with an *epoch* (Centrifugo's stream position,
https://centrifugal.dev/docs/server/history_and_recovery). When several
Starling processes transform events of one channel, the numbers must come
from one place: Redis (``HINCRBY`` on one hash, the epoch set once with
``HSETNX`` on another), or the process itself with the in-process backend.

Epochs are derived, not stored: a channel's epoch is a hash of the
sequencer's *generation* (a random name set once, ``SET NX`` in Redis) and
the channel name (:func:`channel_epoch`). So every process knows a channel's
epoch without a round trip, even before its first publication (a subscriber
to a new channel learns the epoch its publications will carry), and when the
offsets are lost (Redis flushed) the generation goes with them, the next
call sets a new one, and every channel's epoch changes with its numbering.

Adapters: :class:`stores.memory.MemorySequencer`, :class:`stores.redis.RedisSequencer`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import NamedTuple, Protocol

OFFSETS_KEY = "starling:offsets"
GENERATION_KEY = "starling:generation"


def new_epoch() -> str:
    """A fresh epoch name: 8 hex digits."""
    return secrets.token_hex(4)


def new_generation() -> str:
    """A fresh generation name: 16 hex digits."""
    return secrets.token_hex(8)


def channel_epoch(generation: str, channel: str) -> str:
    """The epoch of ``channel`` in ``generation``: 8 hex digits of BLAKE2b."""
    return hashlib.blake2b(f"{generation}\x00{channel}".encode(), digest_size=4).hexdigest()


class NumberedEntry(NamedTuple):
    """An event appended with its number (:meth:`Sequencer.append_numbered`)."""

    entry: str
    """Its stream entry id."""
    offset: int
    """Its offset in its channel."""
    epoch: str
    """Its channel's epoch."""


class Sequencer(Protocol):
    """Hands out per-channel offsets."""

    async def append_numbered(
        self, stream: str, events: Sequence[tuple[str, bytes]]
    ) -> list[NumberedEntry]:
        """Number ``events`` (``(channel, data)`` pairs, data UTF-8 JSON) and append them
        to ``stream``, in one atomic step: each channel's offsets follow the order its
        events enter the stream, however many processes append at once.

        Each entry has the fields ``channel``, ``data``, ``offset`` (decimal) and ``gen``
        (the generation its epoch derives from, :func:`channel_epoch`).

        Raises:
            stores.errors.BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def next_offsets(self, channels: Sequence[str]) -> list[tuple[int, str]]:
        """The next offset and the epoch of each channel in ``channels``, in order.

        A channel named twice gets two consecutive offsets. Offsets start at 1
        in a new epoch.

        Raises:
            stores.errors.BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def refresh(self) -> str:
        """Read (or set, when there is none) the generation; return it.

        Call it once before :meth:`epoch`; :meth:`next_offsets` refreshes too.

        Raises:
            stores.errors.BackendUnavailable: the backend cannot be reached.
        """
        ...

    def epoch(self, channel: str) -> str:
        """``channel``'s epoch in the generation last read (no I/O).

        Raises:
            RuntimeError: no generation read yet (call :meth:`refresh`).
        """
        ...
