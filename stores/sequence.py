"""The sequencer port: per-channel offsets and epochs, shared by every process.

Realtime channels number their publications 1, 2, 3 … and name the lifetime
of that numbering with an *epoch* (Centrifugo's stream position,
https://centrifugal.dev/docs/server/history_and_recovery). When several
Starling processes transform events of one channel, the numbers must come
from one place: Redis (``HINCRBY`` on one hash, the epoch set once with
``HSETNX`` on another), or the process itself with the in-process backend.

Adapters: :class:`stores.memory.MemorySequencer`, :class:`stores.redis.RedisSequencer`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Protocol

OFFSETS_KEY = "starling:offsets"
EPOCHS_KEY = "starling:epochs"


def new_epoch() -> str:
    """A fresh epoch name: 8 hex digits."""
    return secrets.token_hex(4)


class Sequencer(Protocol):
    """Hands out per-channel offsets."""

    async def next_offsets(self, channels: Sequence[str]) -> list[tuple[int, str]]:
        """The next offset and the epoch of each channel in ``channels``, in order.

        A channel named twice gets two consecutive offsets. Offsets start at 1
        in a new epoch.

        Raises:
            stores.errors.BackendUnavailable: the backend cannot be reached.
        """
        ...
