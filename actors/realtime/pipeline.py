"""The realtime subtree: stream → nozzle → transformer → publisher, under one supervisor.

Disqus's realtime pipeline (https://blog.disqus.com/scaling-realtime-at-disqus)
as Starling's ``realtime`` subtree, ``rest_for_one`` with the consumers first,
so a restarted stage restarts every stage that feeds it::

    realtime                 rest_for_one
    ├── publisher            PublisherActor: puts rendered events in offset order into
    │                        the Publisher (histories + local WebSocket sessions)
    ├── relay                (Redis only) Pub/Sub topic starling:realtime → publisher
    │                        (the other processes' batches; its own are delivered directly)
    ├── transformer-0..N-1   validate, enrich, number, render once, fan out, then ack
    ├── nozzle               XREADGROUP batches from starling:events → transformers
    └── realtime_events      domain events (follows, recommends, posts) → the stream

The path of one event::

    producer ─XADD─▶ starling:events ─▶ nozzle ─Batch─▶ transformer
        ├─▶ Deliver ─▶ this process's publisher
        └─▶ Redis: PUBLISH starling:realtime ─▶ relay (in every other process) ─▶ publisher
    publisher ─▶ ReorderBuffer (offset order per channel) ─▶ Publisher.put ─▶ sessions' outboxes

At least once: the transformer acknowledges a batch only after the fan-out
took it (the local publisher replied, or Redis accepted the Pub/Sub
message); a batch lost with a crashed transformer stays pending and the
nozzle reclaims it after ``reclaim_idle`` seconds (it is then numbered
again: a subscriber may see a duplicate, never a gap it is not told of).

:class:`Realtime` is what the API holds: the publisher (the WebSocket
sessions' hub), :meth:`Realtime.publish` for ``realtime.publish``, and the
figures.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
import trio
from hdrh.histogram import HdrHistogram

from actors.bus import EventBus
from actors.realtime.bridge import RealtimeBridge
from actors.realtime.history import DEFAULT_MAX_CHANNELS, DEFAULT_SIZE, Histories
from actors.realtime.nozzle import Nozzle
from actors.realtime.ordering import ReorderBuffer
from actors.realtime.publisher import Publisher, Render, RenderGap
from actors.realtime.transform import (
    MAX_DATA_BYTES,
    STREAM,
    TOPIC,
    PoisonEvent,
    Rendered,
    check_event,
    decode_batch,
)
from actors.realtime.transformer import Deliver, LocalFanout, SharedFanout, Transformer
from actors.runtime import Actor, ActorRef, ActorUnavailable
from actors.social.events import SocialEvent
from actors.social.pool import ReaderPool
from stores.cache import Cache
from stores.pubsub import PubSub
from stores.sequence import Sequencer
from stores.stream import Stream
from supervisor import Backoff, ChildSpec, Strategy, Supervisor

log = structlog.get_logger(__name__)

_encode = msgspec.json.Encoder().encode

SECONDS = 1.0


def default_consumer() -> str:
    """This process's name in the consumer group: ``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class RealtimeSettings:
    """The realtime subtree's knobs.

    Attributes:
        transformers: transformer actors; a channel always goes to the same one.
            One by default: its Redis round trips are on the trio thread and cheap,
            and with the Go subscribers one gave a lower p99 than two (28 vs 85 ms
            at 8,000 events/s).
        batch: most stream entries per nozzle read.
        block: longest nozzle wait for a first entry, seconds.
        reclaim_idle: seconds an entry stays pending before another reader takes it.
        reclaim_every: seconds between reclaim passes.
        reorder_wait: longest wait, seconds, for a gap in a channel's offsets to fill.
        history_size: publications kept per channel for recovery.
        history_ttl: seconds a publication is kept, or ``None`` (ring size only).
        max_channels: channels with a history at once (least recently used go).
        publish_timeout: seconds ``realtime.publish`` waits for its event to be published.
        consumer: this process's name in the consumer group.
    """

    transformers: int = 1
    batch: int = 1024
    block: float = 1 * SECONDS
    reclaim_idle: float = 30 * SECONDS
    reclaim_every: float = 10 * SECONDS
    reorder_wait: float = 0.5 * SECONDS
    history_size: int = DEFAULT_SIZE
    history_ttl: float | None = None
    max_channels: int = 10 * DEFAULT_MAX_CHANNELS
    publish_timeout: float = 5 * SECONDS
    consumer: str = field(default_factory=default_consumer)

    def __post_init__(self) -> None:
        if self.transformers < 1 or self.batch < 1:
            raise ValueError("transformers and batch must be >= 1")
        if not (self.block > 0 and self.reclaim_idle > 0 and self.reclaim_every > 0):
            raise ValueError("block, reclaim_idle and reclaim_every must be > 0 seconds")
        if not (self.reorder_wait >= 0 and self.publish_timeout > 0):
            raise ValueError("reorder_wait must be >= 0 and publish_timeout > 0 seconds")


class InvalidEvent(ValueError):
    """An event ``realtime.publish`` refuses: a malformed channel, data not a JSON object …

    Attributes:
        index: which event of a ``publish_many`` call (0 for ``publish``).
    """

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


class PublishTimeout(Exception):
    """The event is in the stream but was not published within ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"not published within {seconds:g} s (it is in the stream)")
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class Accepted:
    """Where a published event landed.

    Attributes:
        channel: its channel.
        offset: its offset in the channel.
        epoch: the channel's epoch.
        entry: its stream entry id.
    """

    channel: str
    offset: int
    epoch: str
    entry: str


class Receipts:
    """Stream entry id → where the publisher put it, for producers waiting on their event.

    Keeps the last ``keep`` receipts, so a producer that starts waiting after
    its event was already published still finds it. Trio thread only.
    """

    def __init__(self, keep: int = 65_536) -> None:
        self._keep = keep
        self._done: OrderedDict[str, Rendered] = OrderedDict()
        self._waiting: dict[str, trio.Event] = {}

    def record(self, item: Rendered) -> None:
        """Note that ``item`` was published (the first time only)."""
        if item.entry in self._done:
            return
        self._done[item.entry] = item
        if len(self._done) > self._keep:
            self._done.popitem(last=False)
        waiting = self._waiting.pop(item.entry, None)
        if waiting is not None:
            waiting.set()

    async def wait(self, entry: str) -> Accepted:
        """Wait until ``entry`` is published; cancel from outside to give up."""
        while (item := self._done.get(entry)) is None:
            event = self._waiting.setdefault(entry, trio.Event())
            try:
                await event.wait()
            finally:
                if not event.is_set():
                    self._waiting.pop(entry, None)
        return Accepted(item.channel, item.offset, item.epoch, item.entry)


class LatencyWindow:
    """Stream-to-publish latency of recent events, in milliseconds (HdrHistogram).

    An event's latency is the wall clock when the publisher offered it to
    the local subscribers minus the time in its stream entry id (the
    milliseconds part, set by XADD or the in-process stream). Percentiles
    cover the last ``window`` to ``2 × window`` seconds: two histograms take
    turns, the older one dropped at each turn.

    Args:
        window: seconds per histogram.
        clock: seconds, never going backwards (``time.monotonic``).
    """

    def __init__(self, window: float = 10.0, clock: Any = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._turn = clock() + window
        self._current = HdrHistogram(1, 3_600_000, 2)
        self._previous = HdrHistogram(1, 3_600_000, 2)

    def record(self, entries: Sequence[str], now_ms: float) -> None:
        """Record the events of stream entries ``entries``, published at ``now_ms`` (epoch ms)."""
        self._rotate()
        counts: dict[str, int] = {}
        for entry in entries:
            stamp = entry[: entry.find("-")]
            counts[stamp] = counts.get(stamp, 0) + 1
        now = int(now_ms)
        for stamp, count in counts.items():
            if stamp.isdigit():
                self._current.record_value(min(max(1, now - int(stamp)), 3_600_000), count)

    def percentiles(self, *percentiles: float) -> dict[str, float]:
        """``{"p50": ms, …}`` over the window; zeros when nothing was recorded."""
        self._rotate()
        both = HdrHistogram(1, 3_600_000, 2)
        both.add(self._previous)
        both.add(self._current)
        return {f"p{p:g}": float(both.get_value_at_percentile(p)) for p in percentiles}

    def _rotate(self) -> None:
        now = self._clock()
        if now < self._turn:
            return
        if now >= self._turn + self.window:  # idle for a whole window: both are old
            self._current.reset()
        self._previous, self._current = self._current, self._previous
        self._current.reset()
        self._turn = now + self.window


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


@dataclass(frozen=True, slots=True)
class RelayStatistics:
    """The relay's figures: batches and events passed on, messages that were not batches,
    and batches its subscription buffer dropped while the publisher was behind."""

    name: str
    state: str
    batches: int
    events: int
    malformed: int
    dropped: int = 0


class Relay:
    """Passes the rendered batches of every process (Redis Pub/Sub) to this process's publisher.

    Pub/Sub is fire-and-forget: when the publisher falls behind for long, the
    subscription's bounded buffer drops its oldest batches (and if Redis's
    own buffer for this subscriber overflows, Redis drops the connection and
    the relay restarts). Either way the publications lost are found by
    offset: the reorder buffer waits for them, then the publisher counts the
    gap and tells the channel's subscribers (:meth:`Publisher.put`). The
    batches dropped here are counted in :attr:`dropped`.

    Args:
        pubsub: the Pub/Sub port (Redis).
        publisher: the publisher actor.
    """

    name = "relay"

    def __init__(self, pubsub: PubSub, publisher: ActorRef[Any], origin: str) -> None:
        self._pubsub = pubsub
        self._publisher = publisher
        self._origin = origin
        self._scope = trio.CancelScope()
        self._state = "new"
        self.batches = 0
        self.events = 0
        self.malformed = 0
        self.dropped = 0
        self._dropped_before = 0

    async def run(self, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, report ready, relay until stopped."""
        self._scope = trio.CancelScope()
        with self._scope:
            async with self._pubsub.subscribe(TOPIC) as messages:
                self._state = "running"
                task_status.started(self)
                self._dropped_before = self.dropped
                async for message in messages:
                    self.dropped = self._dropped_before + messages.statistics().dropped
                    try:
                        origin, items = decode_batch(message.data)
                    except msgspec.DecodeError as error:
                        self.malformed += 1
                        log.warning("not a rendered batch; dropped", topic=TOPIC, error=str(error))
                        continue
                    if origin == self._origin:
                        continue  # this process's own batch: its transformer delivered it
                    await self._publisher.send(Deliver(tuple(items)))
                    self.batches += 1
                    self.events += len(items)
        self._state = "stopped"

    def request_stop(self) -> None:
        """Stop relaying."""
        self._state = "stopping"
        self._scope.cancel()

    def statistics(self) -> RelayStatistics:
        """A snapshot of the figures."""
        return RelayStatistics(
            self.name, self._state, self.batches, self.events, self.malformed, self.dropped
        )


@dataclass(frozen=True, slots=True)
class RealtimeStatistics:
    """The pipeline's figures, for ``system.stats``, ``/metrics`` and the benchmark.

    Attributes:
        read: stream entries the nozzle read (reclaimed ones included).
        reclaimed: entries reclaimed from dead or stalled readers.
        events: valid events transformed.
        poison: invalid events acknowledged and dropped.
        published: events put into this process's histories.
        delivered: offers accepted by local sessions.
        slow_disconnects: sessions dropped for a full outbox.
        reorder_gaps: offset gaps skipped after ``reorder_wait``.
        gaps: gaps the subscribers were told of (``gap`` notices).
        missed: publications those gaps left out.
        relay_dropped: Pub/Sub batches the relay's buffer dropped (0 without Redis).
        duplicates: events dropped because their offset was already published.
        channels: channels with local subscribers.
        subscribers: local (session, channel) subscriptions.
        latency_ms: stream-to-publish latency over the last 10-20 s, ``{"p50", "p99",
            "p99.9"}`` in milliseconds (:class:`LatencyWindow`).
    """

    read: int
    reclaimed: int
    events: int
    poison: int
    published: int
    delivered: int
    slow_disconnects: int
    reorder_gaps: int
    gaps: int
    missed: int
    relay_dropped: int
    duplicates: int
    channels: int
    subscribers: int
    latency_ms: dict[str, float]


@dataclass(eq=False)
class Realtime:
    """What the API needs of the realtime subtree (see the module docstring)."""

    publisher: Publisher
    stream: Stream
    sequencer: Sequencer
    receipts: Receipts
    settings: RealtimeSettings
    publisher_actor: PublisherActor
    transformers: Sequence[Transformer]
    nozzle: Nozzle
    relay: Relay | None = None

    async def publish(self, channel: str, data: Mapping[str, Any]) -> Accepted:
        """Append one event to the stream; return where it was published.

        ``publish_many`` of one event (the same errors).
        """
        (accepted,) = await self.publish_many([(channel, data)])
        return accepted

    async def publish_many(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Accepted]:
        """Append events to the stream, numbered as they enter it; return where each landed.

        The events are validated first (all or none enter), encoded once
        (msgspec), then numbered and appended in one atomic step
        (:meth:`stores.sequence.Sequencer.append_numbered`: one ``FCALL`` on
        Redis): each channel's offsets follow the order its events entered the
        stream, whichever processes append. Returns once every event is published.

        Args:
            events: ``(channel, data)`` pairs; channel ``post:<id>`` or ``user:<id>``,
                data a JSON object of at most 64 KiB encoded.

        Raises:
            InvalidEvent: an event has a malformed channel or data (``index`` says which).
            stores.errors.BackendUnavailable: the stream cannot be reached.
            PublishTimeout: not all published within ``publish_timeout`` seconds
                (they are in the stream and will be, at least once).
        """
        encoded = []
        for index, (channel, data) in enumerate(events):
            try:
                encoded.append((check_event(channel), _encode(data)))
            except (PoisonEvent, TypeError) as invalid:
                raise InvalidEvent(str(invalid), index) from None
            if len(encoded[-1][1]) > MAX_DATA_BYTES:
                size = len(encoded[-1][1])
                raise InvalidEvent(f"data is {size} bytes; at most {MAX_DATA_BYTES}", index)
        numbered = await self.sequencer.append_numbered(STREAM, encoded)
        try:
            with trio.fail_after(self.settings.publish_timeout):
                return [await self.receipts.wait(entry.entry) for entry in numbered]
        except trio.TooSlowError:
            raise PublishTimeout(self.settings.publish_timeout) from None

    def statistics(self) -> RealtimeStatistics:
        """A snapshot of the pipeline's figures (O(transformers))."""
        nozzle = self.nozzle.statistics()
        publisher = self.publisher.statistics()
        return RealtimeStatistics(
            read=nozzle.read,
            reclaimed=nozzle.reclaimed,
            events=sum(t.events for t in self.transformers),
            poison=sum(t.poison for t in self.transformers),
            published=publisher.published,
            delivered=publisher.delivered,
            slow_disconnects=publisher.slow_disconnects,
            reorder_gaps=self.publisher_actor.reorder.gaps,
            gaps=publisher.gaps,
            missed=publisher.missed,
            relay_dropped=self.relay.dropped if self.relay is not None else 0,
            duplicates=self.publisher_actor.reorder.duplicates,
            channels=publisher.channels,
            subscribers=publisher.subscribers,
            latency_ms=self.publisher_actor.latency.percentiles(50, 99, 99.9),
        )


def realtime_subtree(
    *,
    stream: Stream,
    pubsub: PubSub,
    sequencer: Sequencer,
    cache: Cache,
    shared: bool,
    settings: RealtimeSettings,
    render: Render,
    render_gap: RenderGap | None = None,
    bus: EventBus[SocialEvent] | None = None,
    readers: ReaderPool | None = None,
) -> tuple[Supervisor, Realtime]:
    """The ``realtime`` supervisor and the handle the API uses (module docstring).

    Args:
        stream, pubsub, sequencer, cache: the key-value backend's ports.
        shared: whether other processes share the backend (Redis): then batches
            cross processes by Pub/Sub and a relay feeds the publisher.
        settings: the knobs.
        render: a publication as the sessions write it
            (:func:`protocols.websocket.frames.pub_frame`), once per publication.
        render_gap: the notice subscribers get when publications were lost on
            the way (:func:`protocols.websocket.frames.gap_frame`).
        bus, readers: the social event bus and readers, for the domain-event
            bridge; without them there is no bridge.
    """
    histories = Histories(
        max_channels=settings.max_channels,
        size=settings.history_size,
        ttl=settings.history_ttl,
        epochs=sequencer.epoch,
    )
    publisher = Publisher(render, histories, render_gap=render_gap)
    receipts = Receipts()
    publisher_actor = PublisherActor(
        publisher, sequencer, receipts, reorder_wait=settings.reorder_wait
    )
    origin = secrets.token_hex(8)  # this process on the Pub/Sub topic, for this life
    fanout = (
        SharedFanout(pubsub, publisher_actor.ref, origin)
        if shared
        else LocalFanout(publisher_actor.ref)
    )
    transformers = [
        Transformer(stream, sequencer, cache, fanout, name=f"transformer-{i}")
        for i in range(settings.transformers)
    ]
    nozzle = Nozzle(
        stream,
        [transformer.ref for transformer in transformers],
        consumer=settings.consumer,
        batch=settings.batch,
        block=settings.block,
        reclaim_idle=settings.reclaim_idle,
        reclaim_every=settings.reclaim_every,
    )
    children = [ChildSpec(publisher_actor.name, publisher_actor.run)]
    relay = None
    if shared:
        relay = Relay(pubsub, publisher_actor.ref, origin)
        children.append(ChildSpec(relay.name, relay.run))
    children += [ChildSpec(t.name, t.run) for t in transformers]
    children.append(ChildSpec(nozzle.name, nozzle.run))
    if bus is not None and readers is not None:
        bridge = RealtimeBridge(bus, stream, readers)
        children.append(ChildSpec(bridge.name, bridge.run))
    supervisor = Supervisor(
        "realtime",
        children,
        strategy=Strategy.REST_FOR_ONE,
        intensity=10,
        period=30,
        backoff=Backoff(initial=0.2, factor=2, maximum=10),
    )
    handle = Realtime(
        publisher,
        stream,
        sequencer,
        receipts,
        settings,
        publisher_actor,
        transformers,
        nozzle,
        relay,
    )
    return supervisor, handle
