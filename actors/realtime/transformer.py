"""The transformer actor: validates, enriches and renders each event once, then fans it out.

For each :class:`~actors.realtime.nozzle.Batch` from the nozzle:

1. validate every entry (:func:`~actors.realtime.transform.parse_entry`);
   poison entries are acknowledged, counted and logged, never retried;
2. enrich: the display fields of the users the batch names, one cache read
   per batch (``get_many``) behind a small in-process LRU;
2b. fan out activities: an activity of user ``A`` on a ``post:`` channel is
   also published on ``following:<f>`` for each listening follower ``f`` of
   ``A`` (:mod:`actors.realtime.following`: one dict lookup per event, the
   payload rendered once for all of them);
3. number: events numbered as they were appended keep their offset and
   epoch; the others get the next offsets of their channels from the
   sequencer (one round trip per batch, one ``HINCRBY`` per channel; Redis
   when processes share it);
4. render each payload to bytes once;
5. deliver (:class:`Fanout`): to this process's publisher, and wait until
   its subscribers' outboxes have the batch;
6. ship, off the critical path: a task of the transformer announces the
   batch to the other processes (one Pub/Sub message per batch, when they
   share Redis) and then acknowledges its entries (one ``XACK`` for every
   batch waiting), so the next batch is transformed while Redis answers.
   At least once: a crash before the ``XACK`` leaves the entries pending, and
   the nozzle reclaims them. What was delivered here but not yet announced
   (Redis went away in between, or a restart stopped the shipping task) stays
   with the transformer object and is announced first when it runs again: the
   other processes' reorder buffers get those offsets as soon as Redis answers,
   instead of skipping them and dropping the reclaimed entries 30 s later.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import structlog
import trio

from actors.realtime.following import FollowingIndex, recipients
from actors.realtime.nozzle import Batch
from actors.realtime.streams import GROUP, STREAM, TOPIC
from actors.realtime.transform import (
    Parsed,
    PoisonEvent,
    Rendered,
    encode_batch,
    parse_entry,
    profile_key,
    render,
)
from actors.runtime import Actor, ActorRef
from stores.cache import Cache
from stores.pubsub import PubSub
from stores.sequence import Sequencer
from stores.stream import Stream

log = structlog.get_logger(__name__)

PROFILE_TTL = 60.0
"""Seconds a user's display fields are reused before they are read again."""
MERGE_BATCHES = 16
"""Most queued nozzle batches transformed as one (:meth:`Transformer.handle_batch`)."""
SHIPPING_QUEUE = 16
"""Delivered batches waiting to be announced and acknowledged (then the transformer waits;
batches left over from an earlier run may add to them once)."""

_Shipment = tuple[list[Rendered], list[str]]
"""A delivered batch (empty: only poison entries) and the stream entries to acknowledge."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """Rendered events for the publisher, in offset order per channel; reply ``None``."""

    items: tuple[Rendered, ...]


class Fanout(Protocol):
    """Where rendered batches go."""

    async def deliver(self, batch: list[Rendered]) -> None:
        """Hand ``batch`` to this process's publisher; return once it is taken."""
        ...

    async def announce(self, batches: list[list[Rendered]]) -> None:
        """Tell the other processes (nothing when there are none); return once sent."""
        ...


class LocalFanout:
    """To this process's publisher (the embedded default)."""

    def __init__(self, publisher: ActorRef[Any]) -> None:
        self._publisher = publisher

    async def deliver(self, batch: list[Rendered]) -> None:
        """Call the publisher; it replies once every subscriber's outbox has the batch."""
        await self._publisher.call(Deliver(tuple(batch)))

    async def announce(self, batches: list[list[Rendered]]) -> None:
        """No other process."""
        await trio.lowlevel.checkpoint()


class SharedFanout:
    """To this process's publisher directly, and to every other process's through one
    Pub/Sub message per batch (tagged with ``origin``, so this process's relay skips it).

    Args:
        pubsub: the shared Pub/Sub.
        publisher: this process's publisher actor.
        origin: this process's name on the topic (unique per process life).
    """

    def __init__(self, pubsub: PubSub, publisher: ActorRef[Any], origin: str) -> None:
        self._pubsub = pubsub
        self._publisher = publisher
        self._origin = origin

    async def deliver(self, batch: list[Rendered]) -> None:
        """Call the local publisher; it replies once every subscriber's outbox has the batch."""
        await self._publisher.call(Deliver(tuple(batch)))

    async def announce(self, batches: list[list[Rendered]]) -> None:
        """Publish each batch on :data:`~actors.realtime.transform.TOPIC`, in order."""
        for batch in batches:
            await self._pubsub.publish(TOPIC, encode_batch(batch, self._origin))


@dataclass(frozen=True, slots=True)
class TransformerStatistics:
    """The transformer's figures plus the actor's."""

    name: str
    state: str
    messages_handled: int
    mailbox_used: int
    mailbox_size: int
    mailbox_peak: int
    last_error: str | None
    events: int
    poison: int
    batches: int


class Transformer(Actor[Any]):
    """See the module docstring.

    Args:
        stream: to acknowledge entries.
        sequencer: numbers events per channel.
        cache: users' display fields.
        fanout: where rendered batches go.
        following: the listening followers of each author (``None``: no ``following:``
            fan-out).
        merge_entries: most entries of queued batches transformed as one (the nozzle's
            batch size: merging small batches never makes a bigger delivery than one full).
    """

    def __init__(
        self,
        stream: Stream,
        sequencer: Sequencer,
        cache: Cache,
        fanout: Fanout,
        *,
        name: str = "transformer",
        mailbox_size: int = 4,
        max_profiles: int = 10_000,
        following: FollowingIndex | None = None,
        merge_entries: int = 256,
    ) -> None:
        super().__init__(name, mailbox_size=mailbox_size, max_batch=MERGE_BATCHES)
        self._merge_entries = merge_entries
        self._following = following
        self.fanned_out = 0
        self._stream = stream
        self._sequencer = sequencer
        self._cache = cache
        self._fanout = fanout
        self._profiles: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._max_profiles = max_profiles
        self.events = 0
        self.poison = 0
        self.batches = 0
        # Delivered, not yet announced and acknowledged; kept across runs (module docstring).
        self._unshipped: deque[_Shipment] = deque()
        self._shipped = trio.lowlevel.ParkingLot()  # what waits for _unshipped to change
        self._closing = False

    async def run(
        self, *, task_status: trio.TaskStatus[ActorRef[Any]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the actor and its shipping task (module docstring, step 6)."""
        self._closing = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ship)
            await super().run(task_status=task_status)
            self._closing = True  # stopped normally: the shipper finishes what waits, then ends
            self._shipped.unpark_all()

    async def _ship(self) -> None:
        """Announce and acknowledge what the transformer delivered, in order, in bulk; a
        shipment leaves :attr:`_unshipped` only once Redis took both."""
        unshipped = self._unshipped
        while True:
            if not unshipped:
                if self._closing:
                    return
                await self._shipped.park()
                continue
            waiting = list(unshipped)
            batches = [batch for batch, _ in waiting if batch]
            if batches:
                await self._fanout.announce(batches)
            await self._stream.ack(STREAM, GROUP, [i for _, ids in waiting for i in ids])
            for _ in waiting:
                unshipped.popleft()
            self._shipped.unpark_all()

    async def handle(self, message: Any) -> Any:
        match message:
            case Batch(entries):
                await self._transform([(entry.id, entry.fields) for entry in entries])
            case _:
                raise TypeError(f"{self.name} cannot handle {type(message).__name__}")

    def batch_key(self, request: Any) -> object | None:
        return Batch if isinstance(request, Batch) else None

    async def handle_batch(self, requests: list[Any]) -> list[Any]:
        """Transform the small batches queued together (the nozzles of several partitions) as
        one, up to ``merge_entries`` entries: one sequencer round trip, one delivery, one
        announcement for all of them; a delivery is never bigger than a full nozzle batch.
        Each channel's entries still come in stream order (a channel is in one partition,
        read by one nozzle, whose batches queue in order)."""
        merged: list[tuple[str, Any]] = []
        for batch in requests:
            if merged and len(merged) + len(batch.entries) > self._merge_entries:
                await self._transform(merged)
                merged = []
            merged += [(entry.id, entry.fields) for entry in batch.entries]
        await self._transform(merged)
        return [None] * len(requests)

    async def _transform(self, entries: list[tuple[str, Any]]) -> None:
        parsed: list[Parsed] = []
        for entry_id, fields in entries:
            try:
                parsed.append(parse_entry(entry_id, fields))
            except PoisonEvent as poison:
                self.poison += 1
                log.warning(
                    "poison event acknowledged and dropped", entry=entry_id, error=str(poison)
                )
        if parsed:
            profiles = await self._display_fields(parsed)
            events = self._with_followers(parsed)
            numbers = await self._numbers(events)
            batch = []
            last: Parsed | None = None
            data = b""
            for event, (offset, epoch) in zip(events, numbers, strict=True):
                if event.data is not (last.data if last is not None else None):
                    data = render(event, profiles)  # once per event, shared by its fan-out
                last = event
                batch.append(Rendered(event.channel, offset, epoch, event.entry, data))
            await self._fanout.deliver(batch)
        else:
            batch = []
        while len(self._unshipped) >= SHIPPING_QUEUE:
            await self._shipped.park()  # backpressure: the shipper is behind
        self._unshipped.append((batch, [entry_id for entry_id, _ in entries]))
        self._shipped.unpark_all()
        self.events += len(parsed)
        self.batches += 1

    def _with_followers(self, parsed: list[Parsed]) -> list[Parsed]:
        """``parsed``, each activity followed by its copies for ``following:`` channels.

        A copy has the activity's data (the same object) and the entry id
        ``<entry>/f``, so the producer's receipt names the ``post:`` event.
        """
        index = self._following
        if index is None or not len(index):
            return parsed
        events: list[Parsed] = []
        for event in parsed:
            events.append(event)
            channels = recipients(index, event.channel, event.data)
            if channels:
                entry = event.entry + "/f"
                events += [Parsed(entry, channel, event.data, event.raw) for channel in channels]
                self.fanned_out += len(channels)
        return events

    async def _numbers(self, events: list[Parsed]) -> list[tuple[int, str]]:
        """Each event's offset and epoch: its own, or the sequencer's (one call for the rest)."""
        unnumbered = [event.channel for event in events if event.offset is None]
        given = iter(await self._sequencer.next_offsets(unnumbered) if unnumbered else ())
        numbers = []
        for event in events:
            if event.offset is not None and event.epoch is not None:
                numbers.append((event.offset, event.epoch))
            else:
                numbers.append(next(given))
        return numbers

    async def _display_fields(self, events: list[Parsed]) -> dict[str, dict[str, Any]]:
        users = {e.data["user"] for e in events if isinstance(e.data.get("user"), str)}
        now = time.monotonic()
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for user in users:
            cached = self._profiles.get(user)
            if cached is not None and now - cached[0] < PROFILE_TTL:
                found[user] = cached[1]
            else:
                missing.append(user)
        if missing:
            values = await self._cache.get_many([profile_key(user) for user in missing])
            for user, value in zip(missing, values, strict=True):
                profile = _profile(user, value)
                found[user] = profile
                self._profiles[user] = (now, profile)
                self._profiles.move_to_end(user)
            while len(self._profiles) > self._max_profiles:
                self._profiles.popitem(last=False)
        return found

    def statistics(self) -> TransformerStatistics:  # type: ignore[override]
        """The actor's snapshot plus events, poison events and batches."""
        base = super().statistics()
        return TransformerStatistics(
            base.name,
            base.state,
            base.messages_handled,
            base.mailbox_used,
            base.mailbox_size,
            base.mailbox_peak,
            base.last_error,
            self.events,
            self.poison,
            self.batches,
        )


def _profile(user: str, value: bytes | None) -> dict[str, Any]:
    """A user's display fields from the cache, or ``{"id": user}``."""
    if value is not None:
        try:
            decoded = msgspec.json.decode(value)
        except msgspec.DecodeError:
            decoded = None
        if isinstance(decoded, dict):
            return {"id": user, **decoded}
    return {"id": user}
