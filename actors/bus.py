"""The internal event bus: domain events fanned out to in-process subscribers.

Producers (the graph writer, the social service) :meth:`EventBus.publish`
frozen event objects; consumers (feed invalidation, the realtime pipeline)
:meth:`EventBus.subscribe` and read from their own bounded memory channel.
A subscription takes every event, or only the kinds it names (an event's
kind is its ``kind`` attribute, e.g. ``"followed"``).

Backpressure and drops, chosen per subscription (:class:`Overflow`):

- ``WAIT`` (the default): when the subscriber's channel is full, ``publish``
  waits until it has room. Nothing is lost, and a slow subscriber slows the
  publisher down (the graph writer, hence every write): use it for consumers
  that must see every event and keep up, such as a supervised actor that
  forwards events to the stream.
- ``DROP``: when the channel is full, the event is dropped *for that
  subscriber only* and counted in its ``dropped`` figure; the publisher never
  waits. Use it for best-effort consumers (dashboards, caches that can be
  rebuilt).

Subscribers are served one after another, in subscription order, so a
``WAIT`` subscriber that is full delays the delivery to the ones after it.
A subscriber that closes its channel (``subscription.close()`` or leaving
``with subscription:``) is removed at the next publish; :meth:`EventBus.close`
ends every subscription (their iteration stops).

Imports nothing of Starling's: events are any objects with a ``kind``.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Protocol, TypeVar

import trio


class Event(Protocol):
    """What the bus carries: any (frozen) object with a ``kind`` name."""

    @property
    def kind(self) -> str:
        """The event's kind, e.g. ``"followed"``; subscriptions filter on it."""
        ...


EventT = TypeVar("EventT", bound=Event)


class Overflow(enum.Enum):
    """What ``publish`` does when a subscriber's channel is full."""

    WAIT = "wait"
    """Wait for room (backpressure onto the publisher); nothing is lost."""
    DROP = "drop"
    """Drop the event for this subscriber and count it; never wait."""


@dataclass(frozen=True, slots=True)
class SubscriberStatistics:
    """One subscription's figures.

    Attributes:
        name: the subscriber's name (for health output).
        kinds: the kinds it takes, sorted; ``None`` for every kind.
        overflow: ``"wait"`` or ``"drop"``.
        size: its channel's capacity, in events.
        used: events waiting in its channel now.
        peak: most events ever waiting at once.
        delivered: events put in its channel.
        dropped: events dropped because its channel was full (``DROP`` only).
    """

    name: str
    kinds: tuple[str, ...] | None
    overflow: str
    size: int
    used: int
    peak: int
    delivered: int
    dropped: int


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """The bus's figures.

    Attributes:
        published: events published since the bus was made.
        by_kind: ``(kind, count)`` of the published events, sorted by kind.
        subscribers: every open subscription, in subscription order.
    """

    published: int
    by_kind: tuple[tuple[str, int], ...]
    subscribers: tuple[SubscriberStatistics, ...]


class Subscription(Generic[EventT]):
    """The receiving end of one subscriber; iterate it, or call :meth:`receive`.

    Made by :meth:`EventBus.subscribe`. Use it as a context manager (or call
    :meth:`close`) to unsubscribe.
    """

    def __init__(
        self, name: str, *, size: int, kinds: frozenset[str] | None, overflow: Overflow
    ) -> None:
        """Open the channel; use :meth:`EventBus.subscribe` instead."""
        self.name = name
        self.size = size
        self.kinds = kinds
        self.overflow = overflow
        self._send, self._receive = trio.open_memory_channel[EventT](size)
        self.delivered = 0
        self.dropped = 0
        self.peak = 0

    async def receive(self) -> EventT:
        """The next event, waiting for one.

        Raises:
            trio.EndOfChannel: the bus was closed and every event was received.
            trio.ClosedResourceError: this subscription was closed.
        """
        return await self._receive.receive()

    def receive_nowait(self) -> EventT:
        """The next event if one is waiting.

        Raises:
            trio.WouldBlock: none is waiting.
            trio.EndOfChannel: the bus was closed and every event was received.
        """
        return self._receive.receive_nowait()

    def __aiter__(self) -> Subscription[EventT]:
        return self

    async def __anext__(self) -> EventT:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe: the bus stops delivering here (idempotent)."""
        self._receive.close()

    def __enter__(self) -> Subscription[EventT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def wants(self, kind: str) -> bool:
        """Whether events of ``kind`` go to this subscriber."""
        return self.kinds is None or kind in self.kinds

    def statistics(self) -> SubscriberStatistics:
        """This subscription's figures."""
        return SubscriberStatistics(
            name=self.name,
            kinds=None if self.kinds is None else tuple(sorted(self.kinds)),
            overflow=self.overflow.value,
            size=self.size,
            used=self._send.statistics().current_buffer_used,
            peak=self.peak,
            delivered=self.delivered,
            dropped=self.dropped,
        )

    def _is_open(self) -> bool:
        return self._send.statistics().open_receive_channels > 0

    def _note_delivered(self) -> None:
        self.delivered += 1
        used = self._send.statistics().current_buffer_used
        if used > self.peak:
            self.peak = used


class EventBus(Generic[EventT]):
    """Fans published events out to its subscribers' bounded channels.

    See the module docstring for the backpressure and drop policy.
    """

    def __init__(self) -> None:
        self._subscriptions: tuple[Subscription[EventT], ...] = ()
        self._published: Counter[str] = Counter()
        self._closed = False

    def subscribe(
        self,
        name: str,
        *,
        size: int,
        kinds: Collection[str] | None = None,
        overflow: Overflow = Overflow.WAIT,
    ) -> Subscription[EventT]:
        """Open a subscription.

        Args:
            name: shown in :meth:`statistics`.
            size: the channel's capacity, in events (>= 1; never unbounded).
            kinds: the event kinds wanted; ``None`` for every kind.
            overflow: what to do when the channel is full (see :class:`Overflow`).

        Raises:
            ValueError: ``size`` < 1.
            trio.ClosedResourceError: the bus is closed.
        """
        if size < 1 or size == float("inf"):
            raise ValueError(f"size must be a finite count >= 1, got {size}")
        if self._closed:
            raise trio.ClosedResourceError("the event bus is closed")
        wanted = None if kinds is None else frozenset(kinds)
        subscription = Subscription[EventT](name, size=size, kinds=wanted, overflow=overflow)
        self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    async def publish(self, event: EventT) -> None:
        """Deliver ``event`` to every subscriber that wants its kind.

        Waits while a ``WAIT`` subscriber's channel is full; drops it for a
        full ``DROP`` subscriber. Subscribers that closed are removed.

        Raises:
            trio.ClosedResourceError: the bus is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("the event bus is closed")
        kind = event.kind
        self._published[kind] += 1
        gone: list[Subscription[EventT]] = []
        for subscription in self._subscriptions:
            if not subscription.wants(kind):
                continue
            try:
                try:
                    subscription._send.send_nowait(event)
                except trio.WouldBlock:
                    if subscription.overflow is Overflow.DROP:
                        subscription.dropped += 1
                        continue
                    await subscription._send.send(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                gone.append(subscription)
                continue
            subscription._note_delivered()
        if gone:
            self._subscriptions = tuple(s for s in self._subscriptions if s not in gone)

    def close(self) -> None:
        """End every subscription (their iteration stops after the events queued).

        Idempotent; publishing afterwards raises ``trio.ClosedResourceError``.
        """
        self._closed = True
        for subscription in self._subscriptions:
            subscription._send.close()
        self._subscriptions = ()

    def statistics(self) -> BusStatistics:
        """Published counts and every open subscription's figures."""
        return BusStatistics(
            published=sum(self._published.values()),
            by_kind=tuple(sorted(self._published.items())),
            subscribers=tuple(s.statistics() for s in self._subscriptions if s._is_open()),
        )
