"""The presence port: who is on a channel, per process, in entries that expire.

Each Starling process (an *origin*, a name it picks for its life) holds, per
channel, the number of its WebSocket connections of each user that asked for
presence there: ``channel → origin → user → connections``. An origin's entry
of a channel expires ``ttl`` seconds after its last write or refresh, so when
a process dies its users vanish from every channel within ``ttl`` without
anyone removing them. The live processes refresh their entries well within
``ttl`` (:class:`actors.realtime.presence.PresenceTracker`).

Adapters: :class:`MemoryPresence` (in-process, below) and
:class:`stores.redis_presence.RedisPresence` (one hash per channel and origin,
keys documented there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import trio

PresenceEntries = dict[str, dict[str, int]]
"""One channel's live entries: ``origin → user → connections`` (every count >= 1)."""


class PresenceStore(Protocol):
    """Per channel and origin, user → connections, each origin's entry expiring on its own."""

    async def update(
        self, origin: str, changes: Mapping[str, Mapping[str, int]], *, ttl: float
    ) -> list[str]:
        """Set ``origin``'s counts: ``changes`` is ``channel → user → connections``.

        A count of 0 removes the user; an entry left with no user is gone. Every
        channel written restarts its entry's expiry at ``ttl`` seconds.

        Args:
            origin: the writing process.
            changes: the new counts (absolute, not deltas).
            ttl: seconds the written entries live unless written or refreshed again; > 0.

        Returns:
            The channels of ``changes`` where ``origin`` had no live entry before
            this write (it expired, was never written, or the store lost it): the
            caller rewrites the whole of its entry there if it believed otherwise.

        Raises:
            ValueError: ``ttl`` is not positive.
            stores.errors.StoreError: the backend failed.
        """
        ...

    async def refresh(self, origin: str, channels: Sequence[str], *, ttl: float) -> list[str]:
        """Restart the expiry of ``origin``'s entries of ``channels`` at ``ttl`` seconds.

        Returns:
            The channels where ``origin`` has no live entry (nothing to refresh).

        Raises:
            ValueError: ``ttl`` is not positive.
            stores.errors.StoreError: the backend failed.
        """
        ...

    async def read(self, channels: Sequence[str]) -> list[PresenceEntries]:
        """The live entries of each of ``channels``, in order (``{}`` for none).

        Raises:
            stores.errors.StoreError: the backend failed.
        """
        ...

    async def remove(self, origin: str, channels: Sequence[str]) -> None:
        """Drop ``origin``'s entries of ``channels`` now (a process that stops cleanly).

        Raises:
            stores.errors.StoreError: the backend failed.
        """
        ...


def check_ttl(ttl: float) -> None:
    """Raise ``ValueError`` unless ``ttl`` (seconds) is positive."""
    if not ttl > 0:
        raise ValueError(f"ttl must be > 0 seconds, got {ttl}")


class _Entry:
    """One origin's users on one channel and when they expire (trio time, seconds)."""

    __slots__ = ("deadline", "users")

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.deadline = 0.0


class MemoryPresence:
    """The presence port in this process; expiry is lazy and measured on ``trio.current_time()``,
    so tests drive it with the autojump clock (as :class:`stores.memory.MemoryCache`)."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, _Entry]] = {}

    def _live(self, channel: str, origin: str, now: float) -> _Entry | None:
        entries = self._channels.get(channel)
        entry = None if entries is None else entries.get(origin)
        if entry is None or entry.deadline > now:
            return entry
        self._drop(channel, origin)
        return None

    def _drop(self, channel: str, origin: str) -> None:
        entries = self._channels.get(channel)
        if entries is not None:
            entries.pop(origin, None)
            if not entries:
                del self._channels[channel]

    async def update(
        self, origin: str, changes: Mapping[str, Mapping[str, int]], *, ttl: float
    ) -> list[str]:
        """See :meth:`PresenceStore.update`."""
        check_ttl(ttl)
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        vanished = []
        for channel, counts in changes.items():
            entry = self._live(channel, origin, now)
            if entry is None:
                vanished.append(channel)
                entry = self._channels.setdefault(channel, {}).setdefault(origin, _Entry())
            for user, connections in counts.items():
                if connections > 0:
                    entry.users[user] = connections
                else:
                    entry.users.pop(user, None)
            entry.deadline = now + ttl
            if not entry.users:
                self._drop(channel, origin)
        return vanished

    async def refresh(self, origin: str, channels: Sequence[str], *, ttl: float) -> list[str]:
        """See :meth:`PresenceStore.refresh`."""
        check_ttl(ttl)
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        missing = []
        for channel in channels:
            entry = self._live(channel, origin, now)
            if entry is None:
                missing.append(channel)
            else:
                entry.deadline = now + ttl
        return missing

    async def read(self, channels: Sequence[str]) -> list[PresenceEntries]:
        """See :meth:`PresenceStore.read`."""
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        found: list[PresenceEntries] = []
        for channel in channels:
            entries: PresenceEntries = {}
            for origin in list(self._channels.get(channel, ())):
                entry = self._live(channel, origin, now)
                if entry is not None:
                    entries[origin] = dict(entry.users)
            found.append(entries)
        return found

    async def remove(self, origin: str, channels: Sequence[str]) -> None:
        """See :meth:`PresenceStore.remove`."""
        await trio.lowlevel.checkpoint()
        for channel in channels:
            self._drop(channel, origin)
