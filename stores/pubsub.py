"""The pub/sub port: fire-and-forget messages on topics, to every live subscriber.

Used to deliver realtime publications to subscribers connected to other
Starling processes (scale-out). Adapters: :class:`stores.memory.MemoryPubSub`
and :class:`stores.redis.RedisPubSub`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """A message received on a topic."""

    topic: str
    data: bytes


class _Dropped(Protocol):
    @property
    def dropped(self) -> int:
        """Messages dropped so far because the buffer was full."""
        ...


class Messages(Protocol):
    """A subscription's messages (an async iterator), and how many its bounded buffer dropped."""

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def __anext__(self) -> Message: ...

    def statistics(self) -> _Dropped:
        """A snapshot with ``dropped``."""
        ...


class PubSub(Protocol):
    """Topic-based publish/subscribe."""

    async def publish(self, topic: str, data: bytes) -> int:
        """Send ``data`` to the current subscribers of ``topic``; return how many got it
        (for Redis: subscribed connections, across processes)."""
        ...

    def subscribe(self, *topics: str) -> AbstractAsyncContextManager[Messages]:
        """Subscribe to ``topics`` for the life of the context.

        The subscription is active when the context is entered: a message
        published after entry is received. The iterator has a bounded buffer;
        a subscriber that does not keep up loses the oldest messages, counted
        in ``statistics().dropped`` (pub/sub is fire-and-forget; the stream is
        the durable path).
        """
        ...
