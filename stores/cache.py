"""The cache port: bytes values under string keys, with a time to live.

Adapters: :class:`stores.memory.MemoryCache` (in-process, the default) and
:class:`stores.redis.RedisCache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Cache(Protocol):
    """A key/value cache with expiry."""

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return the values under ``keys``, in order, ``None`` for each miss."""
        ...

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``.

        Args:
            ttl: time to live in seconds (``None``: no expiry). Must be > 0.

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        ...
