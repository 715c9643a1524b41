"""Channel history with offsets and epochs, for recovery after a reconnect.

Follows Centrifugo's history and recovery design
(https://centrifugal.dev/docs/server/history_and_recovery):

- every publication in a channel gets an **offset**, 1 for the first and one
  more for each next one; a channel with no publication yet is at offset 0;
- an **epoch** (a random string) names one lifetime of a channel's history:
  when the history is lost (here: its channel was evicted from the
  :class:`Histories` registry, or the process restarted) it comes back with a
  new epoch, so clients can tell that offsets from before mean nothing now;
- the history keeps the last ``size`` publications, each for at most ``ttl``
  seconds if a ttl is set;
- a client that reconnects sends the offset and epoch of the last publication
  it saw; :meth:`ChannelHistory.since` gives it *exactly* the publications it
  missed, or tells it that it cannot (``recovered=False``, no publications:
  never a partial replay, which would hide a gap). The client then reloads
  its state from the application, the source of truth.

Pure: no I/O, no trio. Times are ``now`` floats in seconds passed in by the
caller from one clock that never goes backwards (``trio.current_time()``),
so tests are deterministic. The owner (the publisher actor) serialises calls.
"""

from __future__ import annotations

import itertools
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

DEFAULT_SIZE = 100
"""Publications kept per channel."""
DEFAULT_MAX_CHANNELS = 1_000
"""Channels with a history at once; about ``size`` × payload bytes each at worst."""


def new_epoch() -> str:
    """A fresh random epoch: 8 hex characters (32 bits) from :mod:`secrets`."""
    return secrets.token_hex(4)


def _check_bounds(size: int, ttl: float | None) -> None:
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")


class Publication(msgspec.Struct, frozen=True, gc=False):
    """One message in a channel's history.

    Not tracked by the cyclic garbage collector (``gc=False``: it holds an int,
    bytes and a float): a server keeps a hundred per channel, and tracked they
    made every full collection walk them all (pauses of 50-150 ms, the p99 of
    the realtime benchmark at low rates).

    Attributes:
        offset: its place in the channel, 1 for the first publication.
        data: the rendered payload, as sent to subscribers.
        time: when it was appended, in seconds on the caller's clock.
    """

    offset: int
    data: bytes
    time: float


class Position(NamedTuple):
    """Where a channel's history stands: what a subscriber keeps to recover later.

    Attributes:
        offset: the offset of the newest publication, 0 if there is none yet.
        epoch: the history's epoch.
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """The answer to a ``since`` request.

    Attributes:
        recovered: ``True`` if ``publications`` is exactly what the client
            missed (possibly nothing); ``False`` if that cannot be known or
            given, and then ``publications`` is empty.
        publications: the missed publications, oldest first.
        offset: the channel's current top offset (see :class:`Position`).
        epoch: the channel's current epoch.
    """

    recovered: bool
    publications: tuple[Publication, ...]
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class HistoriesStatistics:
    """A snapshot of a :class:`Histories` registry.

    Attributes:
        channels: channels with a history now.
        max_channels: most channels kept at once.
        created: histories created (including re-creations after eviction).
        evicted: histories evicted as least recently used.
        appended: publications appended, over all channels.
        retained: publications held now (some may have outlived the ttl and
            not been dropped yet: expiry is lazy).
    """

    channels: int
    max_channels: int
    created: int
    evicted: int
    appended: int
    retained: int


class ChannelHistory:
    """One channel's bounded history: a ring of its last publications.

    Args:
        size: most publications kept (the oldest is dropped first).
        ttl: seconds a publication is kept after it was appended; ``None``
            keeps it until the ring pushes it out.
        epoch: this history's epoch; a fresh random one (:func:`new_epoch`) by default.

    Raises:
        ValueError: ``size`` < 1, or ``ttl`` is not positive.
    """

    __slots__ = ("_ring", "_top", "epoch", "size", "ttl")

    def __init__(
        self, *, size: int = DEFAULT_SIZE, ttl: float | None = None, epoch: str | None = None
    ) -> None:
        _check_bounds(size, ttl)
        self.size = size
        self.ttl = ttl
        self.epoch = new_epoch() if epoch is None else epoch
        self._ring: deque[Publication] = deque(maxlen=size)
        self._top = 0

    def append(self, data: bytes, now: float) -> Publication:
        """Add a publication at the next offset, dropping the oldest if the ring is full.

        Args:
            data: the rendered payload.
            now: the current time, in seconds.

        Returns:
            The new publication, offset = previous top + 1.
        """
        self._expire(now)
        self._top += 1
        publication = Publication(offset=self._top, data=data, time=now)
        self._ring.append(publication)
        return publication

    def put(self, offset: int, epoch: str, data: bytes, now: float) -> Publication | None:
        """Add a publication numbered elsewhere (the sequencer shared by several processes).

        - a new ``epoch`` replaces the history: it restarts at ``offset``;
        - an ``offset`` at or below the top is a duplicate: ignored, ``None``;
        - an ``offset`` past the next one leaves a gap: what came before it is
          forgotten, so no recovery can silently skip the missing ones.

        Returns:
            The new publication, or ``None`` for a duplicate.
        """
        self._expire(now)
        if epoch != self.epoch:
            self.epoch = epoch
            self._ring.clear()
            self._top = offset - 1
        elif offset <= self._top:
            return None
        elif offset > self._top + 1:
            self._ring.clear()
            self._top = offset - 1
        self._top = offset
        publication = Publication(offset=offset, data=data, time=now)
        self._ring.append(publication)
        return publication

    def skip(self, offset: int, epoch: str) -> bool:
        """Mark a break at ``offset``: publications before it can no longer be recovered.

        The channel lost continuity there (a ``following:`` channel nobody listened
        to for a while, so activities were not fanned out to it): the history is
        emptied and its top set to ``offset``, so a recovery from before ``offset``
        answers ``recovered=False`` and one from ``offset`` on works as usual.
        An ``offset`` at or below the top (same epoch) is a duplicate and ignored.

        Returns:
            Whether the break was taken.
        """
        if epoch == self.epoch and offset <= self._top:
            return False
        self.epoch = epoch
        self._ring.clear()
        self._top = offset
        return True

    def since(self, offset: int, epoch: str, now: float) -> Recovery:
        """What a client that last saw ``offset`` in ``epoch`` missed.

        Args:
            offset: the offset of the last publication the client saw (0: none).
            epoch: the epoch the client saw it in.
            now: the current time, in seconds.

        Returns:
            ``recovered=True`` and every publication with an offset above
            ``offset``, oldest first, if the epochs match and all of them are
            still held (none at all if the client is up to date).
            ``recovered=False`` and no publication if the epoch differs,
            ``offset`` is ahead of the top, or some missed publication has
            left the history (ring bound or ttl).

        Raises:
            ValueError: ``offset`` is negative.
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset!r}")
        self._expire(now)
        top = self._top
        if epoch != self.epoch or offset > top:
            return Recovery(False, (), top, self.epoch)
        oldest = self._ring[0].offset if self._ring else top + 1
        if offset + 1 < oldest:
            return Recovery(False, (), top, self.epoch)
        missed = tuple(itertools.islice(self._ring, offset + 1 - oldest, None))
        return Recovery(True, missed, top, self.epoch)

    def latest(self, limit: int, now: float) -> tuple[Publication, ...]:
        """The newest ``limit`` publications still held, oldest first (a ``history`` request).

        Args:
            limit: most publications to return; 0 returns none.
            now: the current time, in seconds.

        Raises:
            ValueError: ``limit`` is negative.
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit!r}")
        self._expire(now)
        skip = max(len(self._ring) - limit, 0)
        return tuple(itertools.islice(self._ring, skip, None))

    def position(self) -> Position:
        """The top offset (0 before the first publication) and the epoch."""
        return Position(self._top, self.epoch)

    def retained(self) -> int:
        """Publications held now, including expired ones not dropped yet."""
        return len(self._ring)

    def _expire(self, now: float) -> None:
        """Drop the publications older than ``ttl``: a prefix, as times only grow."""
        if self.ttl is None:
            return
        deadline = now - self.ttl
        ring = self._ring
        while ring and ring[0].time <= deadline:
            ring.popleft()


class Histories:
    """The histories of all channels: channel name → :class:`ChannelHistory`.

    A channel's history is created the first time the channel is used (an
    append, a subscribe asking for its position, a recovery or a history
    request), so that a subscriber learns the epoch before the first
    publication. At most ``max_channels`` are kept: making room evicts the
    least recently used one, and a channel that comes back gets a new epoch,
    which makes its old subscribers' recoveries fail instead of skipping what
    was lost. Channel names are not checked here (see
    :func:`actors.realtime.channels.parse_channel`).

    Args:
        max_channels: most channels with a history at once.
        size: publications kept per channel.
        ttl: seconds a publication is kept, or ``None``.
        epochs: the epoch of a channel whose history is being created, given its
            name; a fresh random one (:func:`new_epoch`) by default. The realtime
            pipeline passes :meth:`stores.sequence.Sequencer.epoch`, so a
            subscriber to a channel not yet published to learns the epoch its
            publications will carry.

    Raises:
        ValueError: ``max_channels`` < 1, or ``size``/``ttl`` as for :class:`ChannelHistory`.
    """

    def __init__(
        self,
        *,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        size: int = DEFAULT_SIZE,
        ttl: float | None = None,
        epochs: Callable[[str], str] = lambda _channel: new_epoch(),
    ) -> None:
        if max_channels < 1:
            raise ValueError(f"max_channels must be >= 1, got {max_channels!r}")
        _check_bounds(size, ttl)
        self.max_channels = max_channels
        self.size = size
        self.ttl = ttl
        self._epochs = epochs
        self._channels: OrderedDict[str, ChannelHistory] = OrderedDict()
        self._created = 0
        self._evicted = 0
        self._appended = 0

    def channel(self, name: str) -> ChannelHistory:
        """The history of ``name``, created if new, marked most recently used.

        Creating a history when ``max_channels`` are held evicts the least
        recently used one first.
        """
        history = self._channels.get(name)
        if history is not None:
            self._channels.move_to_end(name)
            return history
        if len(self._channels) >= self.max_channels:
            self._channels.popitem(last=False)
            self._evicted += 1
        history = ChannelHistory(size=self.size, ttl=self.ttl, epoch=self._epochs(name))
        self._channels[name] = history
        self._created += 1
        return history

    def append(self, name: str, data: bytes, now: float) -> Publication:
        """Append to ``name``'s history (see :meth:`ChannelHistory.append`)."""
        self._appended += 1
        return self.channel(name).append(data, now)

    def put(
        self, name: str, offset: int, epoch: str, data: bytes, now: float
    ) -> Publication | None:
        """Add a publication numbered elsewhere (see :meth:`ChannelHistory.put`)."""
        publication = self.channel(name).put(offset, epoch, data, now)
        if publication is not None:
            self._appended += 1
        return publication

    def since(self, name: str, offset: int, epoch: str, now: float) -> Recovery:
        """Recover ``name`` from ``offset``/``epoch`` (see :meth:`ChannelHistory.since`)."""
        return self.channel(name).since(offset, epoch, now)

    def latest(self, name: str, limit: int, now: float) -> tuple[Publication, ...]:
        """The newest publications of ``name`` (see :meth:`ChannelHistory.latest`)."""
        return self.channel(name).latest(limit, now)

    def position(self, name: str) -> Position:
        """The position of ``name`` (see :meth:`ChannelHistory.position`)."""
        return self.channel(name).position()

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` has a history now (does not mark it used)."""
        return name in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    def statistics(self) -> HistoriesStatistics:
        """A snapshot of the registry's figures (walks every channel: O(channels))."""
        return HistoriesStatistics(
            channels=len(self._channels),
            max_channels=self.max_channels,
            created=self._created,
            evicted=self._evicted,
            appended=self._appended,
            retained=sum(history.retained() for history in self._channels.values()),
        )
