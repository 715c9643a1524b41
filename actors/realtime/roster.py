"""One channel's presence as one process sees it, and the joins and leaves it makes: pure.

A :class:`Roster` merges what the process knows of a channel's members:

- ``local``: its own connections per user (sessions that subscribed with
  ``presence: true``), exact and immediate;
- ``remote``: the other processes' (origins') counts, from their Pub/Sub
  announcements (immediate) and the presence store (read every few seconds,
  which also says when an origin's entries expired: the process died).

The *view* is the sum per user over both, and is what the process's presence
subscribers have been told. Every operation updates the view and returns the
:class:`Change` it made, if any: a user **joins** when their count goes from 0
to at least 1 and **leaves** when it goes back to 0, so several connections of
one user (tabs, processes) make one join and one leave; a count that changes
between non-zero values is not a change (the view still holds it, for
``presence``).

A store read is a snapshot that may be older than an announcement heard while
it was on its way. :meth:`Roster.replace` therefore takes the time the read
started and keeps, per origin and user, what was announced after it: an origin
writes the store *before* it announces, so an announcement heard before the
read started is already in the snapshot, and one heard after is newer than it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

JOIN: Literal["join"] = "join"
LEAVE: Literal["leave"] = "leave"


@dataclass(frozen=True, slots=True)
class Change:
    """A user joined (``connections`` >= 1, the count then) or left (``connections`` 0)."""

    kind: Literal["join", "leave"]
    user: str
    connections: int


class Roster:
    """One channel's members: local connections, other origins' counts, the merged view.

    Attributes:
        local: this process's connections per user (counts >= 1).
        remote: ``origin → user → connections`` of the other processes (counts >= 1).
        view: the merged count per user (>= 1), as told to the presence subscribers.
        loaded: whether the store was read since the roster was made (the remote part
            is known).
    """

    __slots__ = ("_heard", "loaded", "local", "remote", "view")

    _heard: dict[tuple[str, str], float]

    def __init__(self, *, loaded: bool = False) -> None:
        self.local: dict[str, int] = {}
        self.remote: dict[str, dict[str, int]] = {}
        self.view: dict[str, int] = {}
        self.loaded = loaded
        self._heard = {}

    @property
    def users(self) -> int:
        """Distinct users present."""
        return len(self.view)

    @property
    def connections(self) -> int:
        """Connections present, over every user."""
        return sum(self.view.values())

    def enter(self, user: str) -> Change | None:
        """One more local connection of ``user``; a join if it is their first anywhere."""
        self.local[user] = self.local.get(user, 0) + 1
        return self._settle(user)

    def exit(self, user: str) -> Change | None:
        """One local connection of ``user`` fewer; a leave if it was their last anywhere.

        Raises:
            KeyError: ``user`` has no local connection.
        """
        left = self.local[user] - 1
        if left:
            self.local[user] = left
        else:
            del self.local[user]
        return self._settle(user)

    def apply(self, origin: str, user: str, connections: int, now: float) -> Change | None:
        """``origin`` announced it has ``connections`` of ``user`` (0: none), heard at ``now``."""
        self._heard[origin, user] = now
        users = self.remote.get(origin)
        if connections > 0:
            if users is None:
                users = self.remote[origin] = {}
            users[user] = connections
        elif users is not None:
            users.pop(user, None)
            if not users:
                del self.remote[origin]
        return self._settle(user)

    def replace(self, entries: Mapping[str, Mapping[str, int]], started: float) -> list[Change]:
        """Take the other origins' counts from a store read that started at ``started``.

        A user an origin announced after ``started`` keeps the announced count; every
        other count is the read's, and an origin the read does not have is gone (its
        entries expired: the process died), so its users leave unless present elsewhere.
        Marks the roster loaded.

        Args:
            entries: ``origin → user → connections``, without this process's own origin.
            started: when the read was sent, on the clock of :meth:`apply`'s ``now``.

        Returns:
            The leaves, then the joins, each in user order.
        """
        self.loaded = True
        heard = self._heard
        touched: set[str] = set()
        for origin in set(self.remote) | set(entries):
            before = self.remote.pop(origin, {})
            read = entries.get(origin, {})
            after = {}
            for user in before.keys() | read.keys():
                newer = heard.get((origin, user), started) > started
                count = before.get(user, 0) if newer else read.get(user, 0)
                if count > 0:
                    after[user] = count
            if after:
                self.remote[origin] = after
            if before != after:
                touched |= before.keys() | after.keys()
        self._heard = {key: at for key, at in heard.items() if at > started}
        return self._settle_all(touched)

    def _settle_all(self, users: Iterable[str]) -> list[Change]:
        changes = [change for user in sorted(users) if (change := self._settle(user)) is not None]
        return [c for c in changes if c.kind == LEAVE] + [c for c in changes if c.kind == JOIN]

    def _settle(self, user: str) -> Change | None:
        """Bring ``user``'s view count up to date; the change it makes, if any."""
        count = self.local.get(user, 0)
        for users in self.remote.values():
            count += users.get(user, 0)
        before = self.view.get(user, 0)
        if count:
            self.view[user] = count
        else:
            self.view.pop(user, None)
        if not before and count:
            return Change(JOIN, user, count)
        if before and not count:
            return Change(LEAVE, user, 0)
        return None
