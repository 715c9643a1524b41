"""Put each channel's publications back in offset order before they are delivered.

When several processes transform events of one channel, each takes its
offsets from the shared sequencer and then publishes its batch on Redis
Pub/Sub; two batches can reach a subscriber in the other order than their
offsets (process A numbers first, process B publishes first). The publisher
of every process therefore releases a channel's publications only in offset
order: a publication that arrives early waits until the ones before it
arrive, at most ``wait`` seconds; after that the gap is skipped (the history
then refuses recoveries across it, see
:meth:`actors.realtime.history.ChannelHistory.put`). Duplicates (an offset
already released) are dropped.

Where a channel's order starts (the first publication of a channel the
buffer holds no state for, or of a new epoch): at the offset the ``first``
hint gives (the publisher knows its history's top, and with the in-process
sequencer that a new channel starts at 1), else at the first publication
that arrives. Pure: no I/O, times passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from actors.realtime.transform import Rendered


@dataclass
class _Channel:
    epoch: str
    next: int
    early: dict[int, Rendered] = field(default_factory=dict)
    waiting_since: float | None = None


class ReorderBuffer:
    """Releases each channel's publications in offset order (see the module docstring).

    Args:
        wait: longest time, in seconds, an early publication waits for a gap to fill.
        max_channels: channels whose order is remembered (past it, the one met first is
            forgotten: what it holds is released, its gap skipped).
        first: ``first(channel, epoch)``, the offset a channel's order starts at
            when the buffer holds no state for it, or ``None`` when unknown (then
            the first publication to arrive starts it).

    Raises:
        ValueError: ``wait`` < 0 or ``max_channels`` < 1.
    """

    def __init__(
        self,
        *,
        wait: float = 0.5,
        max_channels: int = 100_000,
        first: Callable[[str, str], int | None] | None = None,
    ) -> None:
        if wait < 0 or max_channels < 1:
            raise ValueError("wait must be >= 0 seconds and max_channels >= 1")
        self.wait = wait
        self.max_channels = max_channels
        self._first = first
        self._channels: dict[str, _Channel] = {}
        self._held: set[str] = set()  # channels with early publications
        self.duplicates = 0
        self.gaps = 0

    def push(self, item: Rendered, now: float) -> list[Rendered]:
        """Take one publication; return those now released, in order."""
        released: list[Rendered] = []
        state = self._channels.get(item.channel)
        if state is None or state.epoch != item.epoch:
            if state is None and len(self._channels) >= self.max_channels:
                # Forget the channel met first; what it holds is released, its gap skipped.
                oldest = next(iter(self._channels))
                released += self._skip_gap(oldest, self._channels.pop(oldest))
            start = None if self._first is None else self._first(item.channel, item.epoch)
            state = _Channel(item.epoch, item.offset if start is None else start)
            self._channels[item.channel] = state
            self._held.discard(item.channel)  # a new epoch: the old one's early ones are void
        if item.offset < state.next or item.offset in state.early:
            self.duplicates += 1
            return released
        if item.offset > state.next:
            state.early[item.offset] = item
            self._held.add(item.channel)
            if state.waiting_since is None:
                state.waiting_since = now
            return released
        return released + self._release(item.channel, state, item)

    def expire(self, now: float) -> list[Rendered]:
        """Skip the gaps that have waited ``wait`` seconds; return what that releases.

        Looks only at the channels holding publications, not at every channel.
        """
        released: list[Rendered] = []
        for channel in list(self._held):
            state = self._channels[channel]
            if state.waiting_since is not None and now - state.waiting_since >= self.wait:
                released += self._skip_gap(channel, state)
        return released

    def waiting(self) -> int:
        """Publications held back now."""
        return sum(len(self._channels[channel].early) for channel in self._held)

    def _skip_gap(self, channel: str, state: _Channel) -> list[Rendered]:
        if not state.early:
            return []
        self.gaps += 1
        state.next = min(state.early)
        return self._release(channel, state, state.early.pop(state.next))

    def _release(self, channel: str, state: _Channel, item: Rendered) -> list[Rendered]:
        released = [item]
        state.next = item.offset + 1
        while state.next in state.early:
            released.append(state.early.pop(state.next))
            state.next += 1
        if not state.early:
            state.waiting_since = None
            self._held.discard(channel)
        return released
