"""Presence: who is on a channel, live, on every process (``subscribe {channel, presence: true}``).

A child of the ``realtime`` subtree. The WebSocket sessions of this process
call it synchronously (the session's :class:`~protocols.websocket.session.Presence`):
:meth:`PresenceTracker.enter` when a subscription with ``presence: true``
starts, :meth:`PresenceTracker.exit` when it ends (unsubscribe, revocation,
close). Its I/O runs in its own tasks::

    session ─enter/exit─▶ Roster of the channel (pure, :mod:`~actors.realtime.roster`)
                            ├─▶ join/leave pushes to this process's presence subscribers, at once
                            └─▶ dirty ─writer─▶ store.update (this origin's counts)
                                               └─▶ PUBLISH starling:presence (the changes)
    other processes ─starling:presence─▶ listener ─▶ Roster.apply ─▶ pushes
    every interval ─ticker─▶ store.refresh (our entries live on)
                           └▶ store.read (every tracked channel) ─▶ Roster.replace ─▶ pushes
                              (a dead process's entries expired: its users leave)

**Join and leave.** A user joins a channel when their first connection with
``presence: true`` enters it, on any process, and leaves when their last one
leaves: several tabs of one user make one join and one leave. The pushes go to
the channel's *presence subscribers* (the sessions subscribed to it with
``presence: true``), in the order the changes happen on this process. A
subscriber receives its own user's join (Centrifugo sends join to every
subscriber, the new one included), after its ``subscribe`` reply; it never
receives its own leave (it is no longer subscribed). A change of count that is
neither (a second tab) is not pushed; ``presence`` shows it.

**Across processes** (Redis): each process is an *origin* (a random name per
life) and keeps its own counts in the :class:`~stores.presence.PresenceStore`,
in entries that expire ``ttl = expiry - interval`` seconds after their last
write, refreshed every ``interval = expiry / 5`` seconds. Changes are written
first, then announced on :data:`TOPIC`, so the other processes push them at
once. For every channel it tracks (one with local presence subscribers, or
asked about lately), a process re-reads the store every ``interval`` and
diffs it against what its subscribers were told: a process that died stopped
refreshing, its entries expired, and its users leave, at most ``expiry``
seconds after it died (``ttl`` until the entries expire, plus at most one
``interval`` until the next read). Announcements lost on the way are made up
the same way (a missed join arrives with the next read). A process that
stops cleanly closes its connections first, so its users leave at once.

Cost: nothing per publication (the publisher never sees presence); per
subscribe or unsubscribe with presence, a dict update, one push per presence
subscriber of the channel when a user joins or leaves, and a share of one
batched store write and one Pub/Sub message; per ``interval``, one refresh of
this process's entries and one read of the tracked channels (two pipelined
round trips on Redis).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec
import structlog
import trio

from actors.realtime.roster import JOIN, Change, Roster
from stores.errors import StoreError
from stores.presence import PresenceEntries, PresenceStore
from stores.pubsub import PubSub

log = structlog.get_logger(__name__)

SECONDS: Final = 1.0
TOPIC: Final = "starling:presence"
"""The Pub/Sub topic of presence changes between processes (Redis only)."""
DEFAULT_EXPIRY: Final = 15 * SECONDS


class PresenceUnavailable(Exception):
    """The presence store cannot be read now (a ``presence`` request answers -32001)."""


class Member(Protocol):
    """A presence subscriber, as the tracker needs it
    (:class:`protocols.websocket.session.Session` is one)."""

    @property
    def user(self) -> str | None:
        """The authenticated user."""
        ...

    def notify(self, channel: str, frame: bytes, /) -> bool:
        """Queue a push about a subscribed ``channel``; ``False`` if refused (closing, slow)."""
        ...


RenderPresence = Callable[[str, str, str, int], bytes]
"""``render(method, channel, user, connections) -> bytes``: the frame of a ``join`` or
``leave`` push (:func:`protocols.websocket.frames.presence_frame`)."""


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """The presence knobs.

    Attributes:
        expiry: seconds after which a dead process's users have left everywhere
            (the store's entries live ``expiry - interval``, refreshed every
            ``interval = expiry / 5``).

    Raises:
        ValueError: ``expiry`` is not positive.
    """

    expiry: float = DEFAULT_EXPIRY

    def __post_init__(self) -> None:
        if not self.expiry > 0:
            raise ValueError(f"presence expiry must be > 0 seconds, got {self.expiry!r}")

    @property
    def interval(self) -> float:
        """Seconds between two refreshes of this process's entries and two reads."""
        return self.expiry / 5

    @property
    def ttl(self) -> float:
        """Seconds an entry lives in the store after its last write or refresh."""
        return self.expiry - self.interval


@dataclass(frozen=True, slots=True)
class PresenceStatistics:
    """A snapshot of the tracker.

    Attributes:
        sets: channels with a presence subscriber on this process.
        members: presence subscriptions on this process (connection, channel).
        tracked: channels whose roster this process keeps.
        joins, leaves: users that joined and left the tracked channels, as seen here.
        expired: of those leaves, the ones a store read found (a process died).
        join_pushes, leave_pushes: ``join`` and ``leave`` frames queued to subscribers.
        writes: store writes (each a batch of changes); store_errors: failed store calls.
    """

    name: str
    state: str
    sets: int
    members: int
    tracked: int
    joins: int
    leaves: int
    expired: int
    join_pushes: int
    leave_pushes: int
    writes: int
    store_errors: int


class _Changes(msgspec.Struct, array_like=True, frozen=True):
    """An origin's new counts, ``(channel, user, connections)``, after a store write."""

    origin: str
    changes: list[tuple[str, str, int]]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Changes).decode


class PresenceTracker:
    """See the module docstring.

    Args:
        store: the presence store (every process of one Redis shares it).
        render: the frame of a ``join``/``leave`` push.
        pubsub: the other processes' changes (``None``: this process is alone; no
            store reads then).
        origin: this process's name on the store and the topic, for this life.
        settings: the knobs.
    """

    name = "presence"

    def __init__(
        self,
        store: PresenceStore,
        render: RenderPresence,
        *,
        pubsub: PubSub | None,
        origin: str,
        settings: PresenceSettings | None = None,
    ) -> None:
        self.settings = settings or PresenceSettings()
        self._store = store
        self._render = render
        self._pubsub = pubsub
        self._origin = origin
        self._rosters: dict[str, Roster] = {}
        self._members: dict[str, dict[Member, str]] = {}
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._full = False
        self._written: dict[str, dict[str, int]] = {}
        self._wake = trio.Event()
        self._stop = trio.Event()
        self._state = "new"
        self._memberships = 0
        self.joins = 0
        self.leaves = 0
        self.expired = 0
        self.join_pushes = 0
        self.leave_pushes = 0
        self.writes = 0
        self.store_errors = 0

    # -- the session's Presence (protocols.websocket.session.Presence) -------------------

    def needs_load(self, channel: str, /) -> bool:
        """Whether a subscription with presence to ``channel`` must first wait for
        :meth:`load` (other processes may have members there that this one does not know)."""
        if self._pubsub is None:
            return False
        roster = self._rosters.get(channel)
        return roster is None or not roster.loaded

    async def load(self, channel: str, /) -> None:
        """Read ``channel``'s members on the other processes, so that a subscriber that enters
        next is not told of them as joins. On a store outage, the roster starts without them
        and the next read brings them (as joins)."""
        if not self.needs_load(channel):
            await trio.lowlevel.checkpoint()
            return
        self._active.add(channel)
        try:
            await self._fetch(channel, track=True)
        except StoreError as outage:
            self.store_errors += 1
            log.warning("presence not loaded", channel=channel, error=str(outage))

    async def read(self, channel: str, /) -> Mapping[str, int]:
        """``channel``'s users and their connections, over every process.

        Raises:
            PresenceUnavailable: the store could not be read.
        """
        roster = self._rosters.get(channel)
        if roster is not None and roster.loaded:
            await trio.lowlevel.checkpoint()
            return dict(roster.view)
        if self._pubsub is None:
            await trio.lowlevel.checkpoint()
            return dict(roster.view) if roster is not None else {}
        try:
            return await self._fetch(channel, track=False)
        except StoreError as outage:
            self.store_errors += 1
            raise PresenceUnavailable(str(outage)) from outage

    def view(self, channel: str, /) -> Mapping[str, int] | None:
        """``channel``'s users and connections as this process's subscribers were told (no
        I/O), or ``None`` if this process does not know them (:meth:`read` then)."""
        roster = self._rosters.get(channel)
        return roster.view if roster is not None and roster.loaded else None

    def enter(self, member: Member, channel: str, /) -> None:
        """``member`` subscribed to ``channel`` with presence: count its connection, and
        push a join to the channel's presence subscribers (``member`` included) if it is
        its user's first. Idempotent."""
        user = member.user
        if user is None:
            return
        members = self._members.setdefault(channel, {})
        if member in members:
            return
        members[member] = user
        self._memberships += 1
        roster = self._rosters.get(channel)
        if roster is None:
            roster = self._rosters[channel] = Roster(loaded=self._pubsub is None)
        self._active.add(channel)
        self._changed(channel)
        change = roster.enter(user)
        if change is not None:
            self._emit(channel, [change])

    def exit(self, member: Member, channel: str, /) -> None:
        """``member``'s presence subscription to ``channel`` ended: uncount its connection,
        and push a leave to the other presence subscribers if it was its user's last.
        Nothing if it was not entered."""
        members = self._members.get(channel)
        if members is None:
            return
        user = members.pop(member, None)
        if user is None:
            return
        self._memberships -= 1
        if not members:
            del self._members[channel]
        self._changed(channel)
        change = self._rosters[channel].exit(user)
        if change is not None:
            self._emit(channel, [change])

    # -- pushes --------------------------------------------------------------------------

    def _emit(self, channel: str, changes: Sequence[Change]) -> None:
        """Count ``changes`` and push them to ``channel``'s presence subscribers, in order;
        a subscriber that refuses (closing, slow) leaves the channel's presence at once."""
        refused: dict[Member, None] = {}
        for change in changes:
            joined = change.kind == JOIN
            if joined:
                self.joins += 1
            else:
                self.leaves += 1
            members = self._members.get(channel)
            if not members:
                continue
            frame = self._render(change.kind, channel, change.user, change.connections)
            pushed = 0
            for member in members:
                if member in refused:
                    continue
                if member.notify(channel, frame):
                    pushed += 1
                else:
                    refused[member] = None
            if joined:
                self.join_pushes += pushed
            else:
                self.leave_pushes += pushed
        for member in refused:
            self.exit(member, channel)

    # -- the store and the other processes ---------------------------------------------

    def _changed(self, channel: str) -> None:
        self._dirty.add(channel)
        self._wake.set()

    def _others(self, entries: PresenceEntries) -> PresenceEntries:
        entries.pop(self._origin, None)
        return entries

    async def _fetch(self, channel: str, *, track: bool) -> dict[str, int]:
        """Read ``channel`` from the store: its users and connections over every process.

        Loads the channel's roster if it has one not loaded yet, or makes one if ``track``.

        Raises:
            stores.errors.StoreError: the store failed.
        """
        started = trio.current_time()
        (entries,) = await self._store.read([channel])
        others = self._others(entries)
        roster = self._rosters.get(channel)
        if roster is None and track:
            roster = self._rosters[channel] = Roster()
        if roster is None:
            merged: dict[str, int] = {}
            for users in others.values():
                for user, connections in users.items():
                    merged[user] = merged.get(user, 0) + connections
            return merged
        if not roster.loaded:
            self._emit(channel, roster.replace(others, started))
        return dict(roster.view)

    async def _flush(self) -> bool:
        """Write the dirty channels' local counts, then announce them; whether it worked."""
        if not self._dirty:
            return True
        dirty, self._dirty = self._dirty, set()
        full, self._full = self._full, False
        changes: dict[str, dict[str, int]] = {}
        for channel in dirty:
            roster = self._rosters.get(channel)
            desired = roster.local if roster is not None else {}
            written = self._written.get(channel, {})
            diff = {u: n for u, n in desired.items() if full or written.get(u) != n}
            diff.update((u, 0) for u in written if u not in desired)
            if diff:
                changes[channel] = diff
        if not changes:
            return True
        believed = {channel: bool(self._written.get(channel)) for channel in changes}
        try:
            vanished = await self._store.update(self._origin, changes, ttl=self.settings.ttl)
        except BaseException as failure:  # cancelled too: written again at the next flush
            self._dirty |= dirty
            self._full |= full
            if not isinstance(failure, StoreError):
                raise
            self.store_errors += 1
            log.warning("presence not written", error=str(failure))
            return False
        self.writes += 1
        for channel, diff in changes.items():
            written = self._written.setdefault(channel, {})
            for user, connections in diff.items():
                if connections:
                    written[user] = connections
                else:
                    written.pop(user, None)
            if not written:
                del self._written[channel]
        for channel in vanished:
            if believed[channel]:  # the store lost our entry: write all of it again
                self._written.pop(channel, None)
                self._changed(channel)
        await self._announce(changes)
        return True

    async def _announce(self, changes: Mapping[str, Mapping[str, int]]) -> None:
        if self._pubsub is None:
            return
        flat = [(c, u, n) for c, counts in changes.items() for u, n in counts.items()]
        try:
            await self._pubsub.publish(TOPIC, _encode(_Changes(self._origin, flat)))
        except StoreError as outage:  # the others' next reads make up for it
            self.store_errors += 1
            log.warning("presence changes not announced", error=str(outage))

    async def _tick(self) -> None:
        """Refresh this process's entries; forget the rosters nobody used since the last tick;
        read the others' entries of every tracked channel and push what changed."""
        ours = list(self._written)
        if ours:
            try:
                missing = await self._store.refresh(self._origin, ours, ttl=self.settings.ttl)
            except StoreError as outage:
                self.store_errors += 1
                log.warning("presence not refreshed", error=str(outage))
                missing = []
            for channel in missing:  # expired (a stall longer than ttl) or lost
                self._written.pop(channel, None)
                self._changed(channel)
        for channel in list(self._rosters):
            if channel not in self._active and channel not in self._members:
                del self._rosters[channel]
        self._active = set()
        channels = list(self._rosters)
        if self._pubsub is None or not channels:
            return
        started = trio.current_time()
        try:
            found = await self._store.read(channels)
        except StoreError as outage:
            self.store_errors += 1
            log.warning("presence not read", error=str(outage))
            return
        for channel, entries in zip(channels, found, strict=True):
            roster = self._rosters.get(channel)
            if roster is None:
                continue
            changes = roster.replace(self._others(entries), started)
            self.expired += sum(change.kind != JOIN for change in changes)
            self._emit(channel, changes)

    def _heard(self, message: _Changes) -> None:
        now = trio.current_time()
        for channel, user, connections in message.changes:
            roster = self._rosters.get(channel)
            if roster is not None:
                change = roster.apply(message.origin, user, connections, now)
                if change is not None:
                    self._emit(channel, [change])

    # -- the tasks -----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[PresenceTracker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen to the other processes, write, refresh and read, until stopped; then write
        what is left (bounded by the supervisor's shutdown).

        After a restart (the state lives outside this task) every channel is written again
        in full; the next tick's read makes up for the changes not heard meanwhile.
        """
        self._stop = trio.Event()
        self._dirty |= set(self._written) | set(self._members)
        self._full = True
        self._wake.set()
        async with trio.open_nursery() as nursery:
            if self._pubsub is not None:
                await nursery.start(self._listen, self._pubsub)
            nursery.start_soon(self._writer)
            nursery.start_soon(self._ticker)
            self._state = "running"
            task_status.started(self)
            await self._stop.wait()
            nursery.cancel_scope.cancel()
        await self._flush()  # the connections closed first: their users leave at once
        self._state = "stopped"

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if not await self._flush():
                await trio.sleep(self.settings.interval)
                self._wake.set()

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.settings.interval)
            await self._tick()

    async def _listen(
        self, pubsub: PubSub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with pubsub.subscribe(TOPIC) as messages:
            task_status.started()
            async for message in messages:
                try:
                    changes = _decode(message.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as bad:
                    log.warning("not a presence message; dropped", error=str(bad))
                    continue
                if changes.origin != self._origin:
                    self._heard(changes)

    def request_stop(self) -> None:
        """Stop: write the last changes, then return."""
        self._state = "stopping"
        self._stop.set()

    def statistics(self) -> PresenceStatistics:
        """A snapshot of the figures (O(1))."""
        return PresenceStatistics(
            self.name,
            self._state,
            len(self._members),
            self._memberships,
            len(self._rosters),
            self.joins,
            self.leaves,
            self.expired,
            self.join_pushes,
            self.leave_pushes,
            self.writes,
            self.store_errors,
        )
