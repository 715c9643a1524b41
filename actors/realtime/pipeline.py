"""The realtime subtree: stream → nozzle → transformer → publisher, under one supervisor.

Disqus's realtime pipeline (https://blog.disqus.com/scaling-realtime-at-disqus)
as Starling's ``realtime`` subtree, ``rest_for_one`` with the consumers first,
so a restarted stage restarts every stage that feeds it::

    realtime                 rest_for_one
    ├── publisher            PublisherActor: puts rendered events in offset order into
    │                        the Publisher (histories + local WebSocket sessions)
    ├── relay                (Redis only) Pub/Sub topic starling:realtime → publisher
    │                        (the other processes' batches; its own are delivered directly)
    ├── audience             the graph's say: following: listeners (the index the
    │                        transformers fan activities out with), circle:/post: access,
    │                        revocations on unfollow and block
    ├── transformer-0..N-1   validate, enrich, number, render once, fan out, then ack
    ├── nozzle               XREADGROUP batches from starling:events → transformers
    │                        (on a Redis Cluster: nozzle-0..P-1, one per stream partition)
    ├── realtime_events      domain events (follows, recommends, posts) → the stream
    ├── feed_stale           posts and recommendations → coalesced feed.stale notices to
                             connected users (:mod:`~actors.realtime.stale`)
    └── presence             who is on a channel: join/leave pushes, the presence store,
                             the other processes' changes (:mod:`~actors.realtime.presence`)

The path of one event::

    producer ─XADD─▶ starling:events ─▶ nozzle ─Batch─▶ transformer
        ├─▶ Deliver ─▶ this process's publisher
        └─▶ Redis: PUBLISH starling:realtime ─▶ relay (in every other process) ─▶ publisher
    publisher ─▶ ReorderBuffer (offset order per channel) ─▶ Publisher.put ─▶ sessions' outboxes

At least once: the transformer acknowledges a batch only after the fan-out
took it (the local publisher replied, and Redis accepted the Pub/Sub
message for the other processes); a batch lost with a crashed transformer stays pending and the
nozzle reclaims it after ``reclaim_idle`` seconds (it is then numbered
again: a subscriber may see a duplicate, never a gap it is not told of).

Where each part lives: :mod:`~actors.realtime.nozzle`,
:mod:`~actors.realtime.transformer` (pure work in :mod:`~actors.realtime.transform`),
:mod:`~actors.realtime.publisher` (the hub and its actor),
:mod:`~actors.realtime.relay`, :mod:`~actors.realtime.receipts`,
:mod:`~actors.realtime.audience` and :mod:`~actors.realtime.following`,
:mod:`~actors.realtime.latency`, the shared names in :mod:`~actors.realtime.streams`;
this module holds the settings, the handle and the subtree.

:class:`Realtime` is what the API holds: the publisher (the WebSocket
sessions' hub), :meth:`Realtime.publish` for ``realtime.publish``, and the
figures.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
import trio

from actors.bus import EventBus
from actors.realtime.audience import Audience, AudienceSettings
from actors.realtime.bridge import RealtimeBridge
from actors.realtime.history import DEFAULT_MAX_CHANNELS, DEFAULT_SIZE, Histories
from actors.realtime.nozzle import Nozzle
from actors.realtime.presence import PresenceSettings, PresenceTracker, RenderPresence
from actors.realtime.publisher import Publisher, PublisherActor, Render, RenderGap
from actors.realtime.receipts import Accepted, Receipts
from actors.realtime.relay import Relay
from actors.realtime.stale import StaleNotifier
from actors.realtime.streams import STREAM
from actors.realtime.transform import MAX_DATA_BYTES, PoisonEvent, check_event
from actors.realtime.transformer import LocalFanout, SharedFanout, Transformer
from actors.social.events import SocialEvent
from actors.social.pool import ReaderPool
from stores.cache import Cache
from stores.errors import BackendUnavailable
from stores.presence import PresenceStore
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
        following_grace: seconds a ``following:`` listener stays fanned out to after
            its last subscription ended (:class:`~actors.realtime.audience.AudienceSettings`).
        feed_stale_window: seconds between two ``feed.stale`` notices to one user
            (:mod:`~actors.realtime.freshness`).
        presence_expiry: seconds after which the users of a process that died have left
            every channel's presence (:class:`~actors.realtime.presence.PresenceSettings`).
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
    following_grace: float = 300 * SECONDS
    feed_stale_window: float = 5 * SECONDS
    presence_expiry: float = 15 * SECONDS

    def __post_init__(self) -> None:
        if self.transformers < 1 or self.batch < 1:
            raise ValueError("transformers and batch must be >= 1")
        if not (self.block > 0 and self.reclaim_idle > 0 and self.reclaim_every > 0):
            raise ValueError("block, reclaim_idle and reclaim_every must be > 0 seconds")
        if not (self.reorder_wait >= 0 and self.publish_timeout > 0):
            raise ValueError("reorder_wait must be >= 0 and publish_timeout > 0 seconds")
        if not self.feed_stale_window > 0:
            raise ValueError("feed_stale_window must be > 0 seconds")
        if not self.presence_expiry > 0:
            raise ValueError("presence_expiry must be > 0 seconds")


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


class StreamUnavailable(Exception):
    """The event stream cannot be reached (``stores.errors.BackendUnavailable``): nothing
    was appended; retry later."""


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
        presence_sets: channels with a presence subscriber on this process.
        presence_joins, presence_leaves: ``join`` and ``leave`` pushes queued to them.
        subscriptions_by_kind: local subscriptions per channel kind (``post``, ``user``,
            ``following``, ``circle``, ``system``).
        fanned_out: ``following:`` copies of activities the transformers made.
        unsubscribed: subscriptions the audience ended (``unsubscribed`` pushes).
        feed_stale: ``feed.stale`` notices this process appended.
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
    presence_sets: int = 0
    presence_joins: int = 0
    presence_leaves: int = 0
    subscriptions_by_kind: dict[str, int] = field(default_factory=dict)
    fanned_out: int = 0
    unsubscribed: int = 0
    feed_stale: int = 0


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
    nozzles: Sequence[Nozzle]
    relay: Relay | None = None
    audience: Audience | None = None
    presence: PresenceTracker | None = None
    stale: StaleNotifier | None = None

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
            StreamUnavailable: the stream cannot be reached.
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
        try:
            numbered = await self.sequencer.append_numbered(STREAM, encoded)
        except BackendUnavailable as outage:
            raise StreamUnavailable(str(outage)) from outage
        try:
            with trio.fail_after(self.settings.publish_timeout):
                return [await self.receipts.wait(entry.entry) for entry in numbered]
        except trio.TooSlowError:
            raise PublishTimeout(self.settings.publish_timeout) from None

    def _presence_figures(self) -> dict[str, int]:
        if self.presence is None:
            return {}
        figures = self.presence.statistics()
        return {
            "presence_sets": figures.sets,
            "presence_joins": figures.join_pushes,
            "presence_leaves": figures.leave_pushes,
        }

    def statistics(self) -> RealtimeStatistics:
        """A snapshot of the pipeline's figures (O(transformers + subscribed channels))."""
        nozzles = [nozzle.statistics() for nozzle in self.nozzles]
        publisher = self.publisher.statistics()
        return RealtimeStatistics(
            read=sum(nozzle.read for nozzle in nozzles),
            reclaimed=sum(nozzle.reclaimed for nozzle in nozzles),
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
            **self._presence_figures(),
            subscriptions_by_kind=self.publisher.channels_by_kind(),
            fanned_out=sum(t.fanned_out for t in self.transformers),
            unsubscribed=self.audience.revoked if self.audience is not None else 0,
            feed_stale=self.stale.sent if self.stale is not None else 0,
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
    origin: str | None = None,
    presence: PresenceStore | None = None,
    render_presence: RenderPresence | None = None,
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
            bridge and the audience (``following:`` and ``circle:`` channels); without
            them there is neither.
        origin: this process's name on the Pub/Sub topics (random when ``None``); the
            feeds' event router must use the same one.
        presence, render_presence: the presence store and the frame of a ``join``/``leave``
            push (:func:`protocols.websocket.frames.presence_frame`); with both, a
            presence tracker (the last child).
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
    origin = origin or secrets.token_hex(8)  # this process on Pub/Sub, for this life
    fanout = (
        SharedFanout(pubsub, publisher_actor.ref, origin)
        if shared
        else LocalFanout(publisher_actor.ref)
    )
    graph_audience = None
    if bus is not None and readers is not None:
        graph_audience = Audience(
            readers,
            publisher,
            sequencer,
            fanout,
            cache,
            bus,
            pubsub=pubsub if shared else None,
            origin=origin,
            settings=AudienceSettings(grace=settings.following_grace),
        )
    partitions = stream.partitions(STREAM)
    transformers = [
        Transformer(
            stream,
            sequencer,
            cache,
            fanout,
            name=f"transformer-{i}",
            mailbox_size=max(4, len(partitions)),  # a batch of each nozzle may wait
            merge_entries=settings.batch,
            following=graph_audience.index if graph_audience is not None else None,
        )
        for i in range(settings.transformers)
    ]
    nozzles = [
        Nozzle(
            stream,
            [transformer.ref for transformer in transformers],
            consumer=settings.consumer,
            batch=settings.batch,
            block=settings.block,
            reclaim_idle=settings.reclaim_idle,
            reclaim_every=settings.reclaim_every,
            partition=partition,
            name="nozzle" if len(partitions) == 1 else f"nozzle-{index}",
        )
        for index, partition in enumerate(partitions)
    ]
    children = [ChildSpec(publisher_actor.name, publisher_actor.run)]
    relay = None
    if shared:
        relay = Relay(pubsub, publisher_actor.ref, origin)
        children.append(ChildSpec(relay.name, relay.run))
    if graph_audience is not None:
        children.append(ChildSpec(graph_audience.name, graph_audience.run))
    children += [ChildSpec(t.name, t.run) for t in transformers]
    children += [ChildSpec(nozzle.name, nozzle.run) for nozzle in nozzles]
    stale = None
    if bus is not None and readers is not None:
        bridge = RealtimeBridge(bus, stream, readers)
        children.append(ChildSpec(bridge.name, bridge.run))
        stale = StaleNotifier(
            bus,
            publisher,
            sequencer,
            cache,
            readers,
            window=settings.feed_stale_window,
            pubsub=pubsub if shared else None,
            origin=origin,
        )
        children.append(ChildSpec(stale.name, stale.run))
    tracker = None
    if presence is not None and render_presence is not None:
        tracker = PresenceTracker(
            presence,
            render_presence,
            pubsub=pubsub if shared else None,
            origin=origin,
            settings=PresenceSettings(expiry=settings.presence_expiry),
        )
        children.append(ChildSpec(tracker.name, tracker.run))
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
        nozzles,
        relay,
        graph_audience,
        tracker,
        stale,
    )
    return supervisor, handle
