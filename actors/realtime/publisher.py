"""The publisher: channel → local subscriber sessions, over the channels' histories.

The last stage of the realtime pipeline (DESIGN.md, "Realtime"): it takes a
rendered publication, adds it to its channel's :class:`Histories` (which
numbers it, or keeps the number the shared sequencer gave it) and offers the
same bytes to every session of this process subscribed to the channel, in
one synchronous step::

    publish(channel, data)            ─▶ Histories.append ─┐
    put(channel, offset, epoch, data) ─▶ Histories.put    ─┴▶ render(channel, offset, data), once
                                                             ─▶ each subscriber: session.offer(…)
                                                                (it queues the same bytes)

``render`` turns a publication into the bytes a subscriber's connection
writes (:func:`protocols.websocket.frames.pub_frame`: the whole WebSocket
frame). It runs once per publication that has local subscribers, never per
subscriber: per delivery the publisher does one ``offer`` call, which is a
dict lookup and a deque append in the session.

It is the :class:`protocols.websocket.session.Hub` the sessions call (``subscribe``,
``unsubscribe``, ``position``, ``since``, ``latest``), typed here by the
structural :class:`Subscriber` so that ``actors/`` does not import
``protocols/``.

Ordering (the Hub contract): appending and offering happen with no
checkpoint in between, and ``subscribe`` registers the session and reads the
channel's position with none either. So a subscriber is offered exactly the
publications appended after its ``subscribe`` returned, each once, in offset
order, and the position it got is the offset just before the first one.

Never blocks: :meth:`Publisher.publish` does no I/O and awaits nothing. A
session whose outbox would overflow refuses the offer and closes itself with
4008 (slow consumer); the publisher then drops it from every channel at once
(it will never accept again, even if its writer is stuck on a full socket),
counts it, and goes on to the next subscriber. One slow client never slows
the others.

A plain object, not an :class:`~actors.runtime.Actor`: the sessions call the
hub synchronously while they answer a frame (a ``subscribe`` reply carries
the position *and* recovery, decided at once), and an actor's mailbox would
put a queue and a checkpoint between ``subscribe`` and the publications,
breaking the ordering above. Every method is synchronous and short, so
trio's cooperative scheduling already gives what a mailbox would: one call
at a time, no interleaving. The rule that replaces the mailbox: **one owner,
the trio thread** — the WebSocket adapter and whatever feeds it (the
transformer, a Pub/Sub bridge) call it from tasks of the same ``trio.run``,
never from a worker thread (use ``trio.from_thread.run_sync`` there). A
producer that wants backpressure or supervision wraps it in a small actor
whose ``handle`` calls :meth:`Publisher.publish`.

Times: ``now`` arguments and the ``clock`` are seconds on one clock that
never goes backwards, ``trio.current_time()`` by default, as
:class:`Histories` asks (history ttl).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import trio

from actors.realtime.channels import SYSTEM_PREFIX
from actors.realtime.history import Histories, Position, Publication, Recovery
from actors.realtime.latency import LatencyWindow
from actors.realtime.ordering import ReorderBuffer
from actors.realtime.receipts import Receipts
from actors.realtime.transform import Rendered
from actors.realtime.transformer import Deliver
from actors.runtime import Actor, ActorRef, ActorUnavailable
from stores.sequence import Sequencer

SLOW_CONSUMER: Final = 4008
"""The close code of a slow consumer (``protocols.websocket.codes.CLOSE_SLOW_CONSUMER``;
actors/ does not import protocols/)."""

Render = Callable[[str, int, bytes], bytes]
"""``render(channel, offset, data) -> bytes``: a publication as its subscribers receive it."""

RenderGap = Callable[[str, int, int, str], bytes]
"""``render_gap(channel, first, last, epoch) -> bytes``: the notice that offsets
``first..last`` of ``channel`` will never be delivered here."""


class _Closing(Protocol):
    @property
    def close(self) -> tuple[int, str] | None:
        """The close decided, ``(code, reason)``, or ``None``."""
        ...


class Subscriber(Protocol):
    """What the publisher needs of a session (:class:`protocols.websocket.Session` is one)."""

    def offer(self, channel: str, offset: int, frame: bytes, /) -> bool:
        """Queue one rendered publication without blocking; ``False`` if refused (closing, slow)."""
        ...

    @property
    def subscriptions(self) -> frozenset[str]:
        """The channels the session is subscribed to."""
        ...

    def statistics(self) -> _Closing:
        """A snapshot whose ``close`` tells why the session is closing."""
        ...


@dataclass(frozen=True, slots=True)
class PublisherStatistics:
    """A snapshot of a :class:`Publisher`.

    Attributes:
        channels: channels with at least one local subscriber.
        subscribers: (session, channel) subscriptions, over all channels.
        published: publications appended, on the product's channels (``post:``, ``user:``).
        delivered: offers accepted by sessions (one per subscriber per publication).
        slow_disconnects: sessions that refused an offer because their outbox
            was full (close 4008), and were dropped.
        gaps: times :meth:`Publisher.put` met offsets missing before the one it got
            (the subscribers of the channel were told, see :meth:`Publisher.put`).
        missed: publications those gaps left out, in all.
        system_published: publications on ``system:`` channels (the operators' own
            telemetry, :mod:`observability.dashboard`), kept apart from ``published``.
    """

    channels: int
    subscribers: int
    published: int
    delivered: int
    slow_disconnects: int
    gaps: int = 0
    missed: int = 0
    system_published: int = 0


class Publisher:
    """See the module docstring.

    Args:
        render: a publication as its subscribers receive it (the module
            docstring); called once per publication with local subscribers.
        render_gap: the notice a channel's subscribers get when publications
            were lost before this process got them (:meth:`put`); none when ``None``.
        histories: the channels' histories; a fresh :class:`Histories` with
            its defaults when ``None``.
        clock: seconds, never going backwards; the time of ``since`` and
            ``latest`` (and of ``publish`` when it is given no ``now``).
    """

    def __init__(
        self,
        render: Render,
        histories: Histories | None = None,
        *,
        render_gap: RenderGap | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.render = render
        self.render_gap = render_gap
        self.histories = Histories() if histories is None else histories
        self._clock = clock
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._subscriptions = 0
        self._published = 0
        self._system_published = 0
        self._delivered = 0
        self._slow = 0
        self._gaps = 0
        self._missed = 0

    # -- producers ----------------------------------------------------------------

    def publish(self, channel: str, data: bytes, now: float | None = None) -> Publication:
        """Append ``data`` to ``channel`` and offer it to its local subscribers, in one step.

        Never blocks. A subscriber that refuses (its outbox is full, or it is
        closing) is dropped from every channel.

        Args:
            channel: a valid channel name (:func:`~actors.realtime.channels.parse_channel`;
                not checked here: the transformer validated it).
            data: the rendered JSON object, the same bytes for every subscriber.
            now: seconds on the publisher's clock; read from it when ``None``.

        Returns:
            The publication, with its offset in the channel.
        """
        publication = self.histories.append(channel, data, self._clock() if now is None else now)
        if channel.startswith(SYSTEM_PREFIX):
            self._system_published += 1
        else:
            self._published += 1
        self._offer(channel, publication)
        return publication

    def put(
        self, channel: str, offset: int, epoch: str, data: bytes, now: float | None = None
    ) -> Publication | None:
        """Like :meth:`publish`, for a publication numbered elsewhere (the shared sequencer).

        The history takes it as :meth:`Histories.put` says (a new epoch
        restarts the channel, a gap forgets what came before it); a duplicate
        (``offset`` at or below the channel's top) is dropped and offered to
        nobody. Feed it each channel's publications in offset order
        (:class:`~actors.realtime.ordering.ReorderBuffer`).

        A gap (``offset`` past the top + 1 in the same epoch: publications lost
        on the way here, e.g. a Pub/Sub relay that fell behind) is never
        silent: it is counted, the subscribers of the channel get the
        ``render_gap`` notice before this publication (they reload from the
        application, as after ``recovered: false``), and a recovery from
        before the gap answers ``recovered: false``.

        Empty ``data`` is a *break* (:meth:`ChannelHistory.skip`): the channel's
        history ends there, nothing is offered, ``None`` is returned.

        Args:
            channel: a valid channel name (not checked here).
            offset: the publication's offset from the sequencer.
            epoch: the channel's epoch from the sequencer.
            data: the rendered JSON object; ``b""`` for a break.
            now: seconds on the publisher's clock; read from it when ``None``.

        Returns:
            The publication, or ``None`` for a duplicate.
        """
        if not data:  # a break (ChannelHistory.skip): nothing to offer
            self.histories.channel(channel).skip(offset, epoch)
            return None
        top, known = self.histories.position(channel)
        if known == epoch and 0 < top < offset - 1:
            self._gap(channel, top + 1, offset - 1, epoch)
        publication = self.histories.put(
            channel, offset, epoch, data, self._clock() if now is None else now
        )
        if publication is not None:
            self._published += 1
            self._offer(channel, publication)
        return publication

    # -- the Hub (protocols.websocket.session.Hub) ---------------------------------

    def subscribe(self, session: Subscriber, channel: str, /) -> Position:
        """Start offering ``channel``'s new publications to ``session``; its position now.

        Idempotent. Creates the channel's history if new, so the position
        carries the epoch the first publication will have.
        """
        subscribers = self._subscribers.setdefault(channel, set())
        if session not in subscribers:
            subscribers.add(session)
            self._subscriptions += 1
        return self.histories.position(channel)

    def unsubscribe(self, session: Subscriber, channel: str, /) -> None:
        """Stop offering ``channel`` to ``session``; nothing if it was not subscribed."""
        subscribers = self._subscribers.get(channel)
        if subscribers is None or session not in subscribers:
            return
        subscribers.remove(session)
        self._subscriptions -= 1
        if not subscribers:
            del self._subscribers[channel]

    def position(self, channel: str, /) -> Position:
        """The channel's top offset and epoch (:meth:`Histories.position`)."""
        return self.histories.position(channel)

    def since(self, channel: str, offset: int, epoch: str, /) -> Recovery:
        """What a client that last saw ``offset`` in ``epoch`` missed (:meth:`Histories.since`)."""
        return self.histories.since(channel, offset, epoch, self._clock())

    def latest(self, channel: str, limit: int, /) -> Sequence[Publication]:
        """The newest ``limit`` publications, oldest first (:meth:`Histories.latest`)."""
        return self.histories.latest(channel, limit, self._clock())

    # -- figures ------------------------------------------------------------------

    def subscribers(self, channel: str) -> int:
        """How many local sessions are subscribed to ``channel``."""
        return len(self._subscribers.get(channel, ()))

    def subscribed_channels(self, prefix: str) -> list[str]:
        """The channels with local subscribers whose names start with ``prefix``
        (O(channels with subscribers))."""
        return [channel for channel in self._subscribers if channel.startswith(prefix)]

    def channels_by_kind(self) -> dict[str, int]:
        """Subscriptions per channel kind (``post``, ``user``, ``following`` …), O(channels)."""
        kinds: dict[str, int] = {}
        for channel, subscribers in self._subscribers.items():
            kind = channel[: channel.find(":")]
            kinds[kind] = kinds.get(kind, 0) + len(subscribers)
        return kinds

    def statistics(self) -> PublisherStatistics:
        """A snapshot of the publisher's figures (O(1))."""
        return PublisherStatistics(
            channels=len(self._subscribers),
            subscribers=self._subscriptions,
            published=self._published,
            delivered=self._delivered,
            slow_disconnects=self._slow,
            gaps=self._gaps,
            missed=self._missed,
            system_published=self._system_published,
        )

    # -- internals ----------------------------------------------------------------

    def _offer(self, channel: str, publication: Publication) -> None:
        """Offer ``publication`` to every local subscriber; drop those that refuse."""
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return
        offset = publication.offset
        frame = self.render(channel, offset, publication.data)
        refused: list[Subscriber] = []
        for subscriber in subscribers:
            if not subscriber.offer(channel, offset, frame):
                refused.append(subscriber)
        self._delivered += len(subscribers) - len(refused)
        for subscriber in refused:
            self._drop(subscriber, channel)

    def _gap(self, channel: str, first: int, last: int, epoch: str) -> None:
        """Count a gap and tell the channel's subscribers (module docstring of :meth:`put`)."""
        self._gaps += 1
        self._missed += last - first + 1
        subscribers = self._subscribers.get(channel)
        if not subscribers or self.render_gap is None:
            return
        notice = self.render_gap(channel, first, last, epoch)
        refused = [s for s in subscribers if not s.offer(channel, last, notice)]
        for subscriber in refused:
            self._drop(subscriber, channel)

    def _drop(self, subscriber: Subscriber, channel: str) -> None:
        """Forget a session that refused an offer: it is closing and never accepts again."""
        close = subscriber.statistics().close
        if close is not None and close[0] == SLOW_CONSUMER:
            self._slow += 1
        # Its own channel list, plus this one in case it already forgot it.
        for name in subscriber.subscriptions | {channel}:
            self.unsubscribe(subscriber, name)


@dataclass(frozen=True, slots=True)
class Expire:
    """Tick: release what waited ``reorder_wait`` seconds for a gap to fill."""


class PublisherActor(Actor[Any]):
    """Feeds the :class:`Publisher` rendered events, in offset order per channel.

    Handles :class:`~actors.realtime.transformer.Deliver` (reply ``None`` once
    every local subscriber's outbox has the events) and :class:`Expire`
    (sent by its own ticker while something waits for a gap). The
    :class:`Publisher` and its histories live outside the actor, so a restart
    keeps the subscribers and the history.

    Args:
        publisher: the hub the WebSocket sessions use.
        sequencer: read once at start, so that channels not yet published to
            report the epoch their publications will carry.
        receipts: told of every event released.
        reorder_wait: seconds an early event waits for the ones before it.

    Where a channel's order starts: after the top of its history when the
    history holds publications of the event's epoch, else at offset 1. So
    when this process meets a channel mid-life (it started after the
    channel's first publications, or the history was evicted), its first
    event waits ``reorder_wait`` seconds for offsets that will never come,
    once; in exchange, events of a new channel numbered by two transformers
    (or processes) at once are never taken for duplicates.
    """

    def __init__(
        self,
        publisher: Publisher,
        sequencer: Sequencer,
        receipts: Receipts,
        *,
        reorder_wait: float,
        name: str = "publisher",
        mailbox_size: int = 64,
    ) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        self.publisher = publisher
        self._sequencer = sequencer
        self._receipts = receipts
        self.reorder = ReorderBuffer(wait=reorder_wait, first=self._first_offset)
        self.latency = LatencyWindow()

    def _first_offset(self, channel: str, epoch: str) -> int:
        top, known = self.publisher.position(channel)
        return top + 1 if known == epoch and top > 0 else 1

    async def on_start(self) -> None:
        await self._sequencer.refresh()

    async def run(
        self, *, task_status: trio.TaskStatus[ActorRef[Any]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the actor and its reorder ticker."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick)
            await super().run(task_status=task_status)
            nursery.cancel_scope.cancel()

    async def _tick(self) -> None:
        period = max(self.reorder.wait / 2, 0.01)
        while True:
            await trio.sleep(period)
            if self.reorder.waiting():
                # Busy (it expires with its next tick) or not running yet: skip.
                with contextlib.suppress(trio.WouldBlock, ActorUnavailable):
                    self.ref.send_nowait(Expire())

    async def handle(self, message: Any) -> Any:
        now = trio.current_time()
        match message:
            case Deliver(items):
                push = self.reorder.push
                released: list[Rendered] = []
                for item in items:
                    released += push(item, now)
                self._release(released, now)
            case Expire():
                self._release(self.reorder.expire(now), now)
            case _:
                raise TypeError(f"{self.name} cannot handle {type(message).__name__}")
        return None

    def _release(self, items: list[Rendered], now: float) -> None:
        for item in items:
            self.publisher.put(item.channel, item.offset, item.epoch, item.data, now)
            self._receipts.record(item)
        if items:
            self.latency.record([item.entry for item in items], time.time() * 1000)
