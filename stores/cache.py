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

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool:
        """Store ``value`` under ``key`` only if no live value is there (Redis ``SET NX PX``).

        A claim shared by every process of one backend: of several ``add`` of one
        key within ``ttl``, exactly one returns ``True``.

        Args:
            ttl: time to live in seconds. Must be > 0.

        Returns:
            Whether this call stored the value (``False``: the key was held, untouched).

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        ...
