"""Feed freshness: when to tell a connected user their ranked feed went stale (pure).

A ``feed.stale`` notice on ``user:<id>`` says "``new`` stories arrived for you
since the last notice, for these ``reasons``"; the client shows a "refresh"
banner. The :class:`FreshnessCoalescer` decides when one goes out, at most one
per user per ``window`` seconds::

    note(user, post, reasons, now)
        no notice in the last window   → a notice now (new = 1)
        else                           → held; at the window's end, due(now) gives
                                         one notice of every post held (distinct)

``new`` counts the distinct posts since the last notice to that user; a post the
last notice already counted is not counted again while its window lasts.
``reasons`` are the distinct reasons in the order first seen.

Several processes may hold one user's session (one per device), and every
process sees every event, so each would tell the user. The driver
(:mod:`actors.realtime.stale`) claims the user's window cluster-wide before
sending; a process that lost the claim hands :meth:`FreshnessCoalescer.lost`
the posts the winner told, and keeps the others for its next window's end.

Times are seconds on one clock that never goes backwards
(``trio.current_time()`` in the driver); nothing here does I/O.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

FEED_STALE: Final = "feed.stale"
"""The ``type`` of the notice's data."""

FOLLOWED_AUTHOR: Final = "followed_author"
"""A user the reader follows published."""
FOLLOWED_TOPIC: Final = "followed_topic"
"""A post was tagged with a topic the reader follows."""
FOLLOWED_PUBLICATION: Final = "followed_publication"
"""A post appeared in a publication the reader follows."""
FRIENDS_RECOMMENDED: Final = "friends_recommended"
"""A user the reader follows recommended a post."""

Item = tuple[str, str]
"""``(post, reason)``."""
MAX_HELD_ITEMS: Final = 1_000
"""Most ``(post, reason)`` items held for one user until their window ends; later ones
are not counted (the notice says "at least this many"): a user who follows a firehose
costs a bounded set, whatever the event rate."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One ``feed.stale`` notice for ``user``.

    Attributes:
        user: whom it is for (channel ``user:<user>``).
        items: ``(post, reason)`` pairs, distinct, in the order they were noted.
    """

    user: str
    items: tuple[Item, ...]

    @property
    def posts(self) -> tuple[str, ...]:
        """The distinct posts, in the order first noted."""
        return tuple(dict.fromkeys(post for post, _ in self.items))

    @property
    def new(self) -> int:
        """How many distinct posts."""
        return len(self.posts)

    @property
    def reasons(self) -> tuple[str, ...]:
        """The distinct reasons, in the order first noted."""
        return tuple(dict.fromkeys(reason for _, reason in self.items))

    def data(self) -> dict[str, Any]:
        """The publication's data: ``{"type": "feed.stale", "new": n, "reasons": [...]}``."""
        return {"type": FEED_STALE, "new": self.new, "reasons": list(self.reasons)}


@dataclass(slots=True)
class _Told:
    at: float  # when the last notice went out (here or, after a lost claim, elsewhere)
    posts: frozenset[str]  # the posts it counted


@dataclass(slots=True)
class _Held:
    due: float
    items: dict[Item, None]  # an ordered set


class FreshnessCoalescer:
    """At most one notice per user per ``window`` seconds (see the module docstring).

    Memory: one entry per user told in the last window, plus the posts held
    for users with a notice due (at most :data:`MAX_HELD_ITEMS` items each).

    Args:
        window: seconds, > 0.

    Raises:
        ValueError: ``window`` is not positive.
    """

    def __init__(self, window: float) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        self.window = window
        self._told: OrderedDict[str, _Told] = OrderedDict()  # oldest notice first
        self._held: dict[str, _Held] = {}
        self._deadlines: list[tuple[float, str]] = []  # a heap; stale entries skipped

    @property
    def waiting(self) -> int:
        """Users with a notice due at the end of their window."""
        return len(self._held)

    def note(self, user: str, post: str, reasons: Sequence[str], now: float) -> Notice | None:
        """``post`` makes ``user``'s feed stale, for ``reasons``; the notice to send now, if any.

        Returns:
            A notice of this one post when ``user`` was told nothing in the last
            ``window`` seconds and has nothing held; else ``None`` (held for
            :meth:`due`, or already counted by the last notice).
        """
        items = [(post, reason) for reason in reasons]
        held = self._held.get(user)
        told = self._told.get(user)
        if held is None and (told is None or now >= told.at + self.window):
            notice = Notice(user, tuple(dict.fromkeys(items)))
            self._record(user, now, notice.posts)
            return notice
        assert told is not None  # held only after a notice (_record before _hold)
        if post in told.posts:
            return None
        if held is None:
            held = self._hold(user, told.at + self.window, [])
        if len(held.items) < MAX_HELD_ITEMS:
            held.items.update(dict.fromkeys(items))
        return None

    def due(self, now: float) -> list[Notice]:
        """The notices whose window ended by ``now``, earliest first; each counts as sent."""
        notices = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            due, user = heapq.heappop(deadlines)
            held = self._held.get(user)
            if held is None or held.due != due:
                continue
            del self._held[user]
            notice = Notice(user, tuple(held.items))
            self._record(user, now, notice.posts)
            notices.append(notice)
        while self._told:
            user, told = next(iter(self._told.items()))
            if told.at + self.window > now or user in self._held:
                break
            del self._told[user]
        return notices

    def next_deadline(self) -> float | None:
        """When the earliest held notice is due, or ``None``."""
        deadlines = self._deadlines
        while deadlines:
            due, user = deadlines[0]
            held = self._held.get(user)
            if held is not None and held.due == due:
                return due
            heapq.heappop(deadlines)
        return None

    def lost(self, notice: Notice, told: Collection[str], now: float) -> None:
        """Another process told ``notice.user`` of the posts ``told`` at about ``now``.

        Those posts count as told here too; the notice's other posts are held
        (with anything held since) until ``window`` seconds after ``now``.
        """
        user = notice.user
        self._record(user, now, told)
        rest = [item for item in notice.items if item[0] not in told]
        earlier = self._held.pop(user, None)
        if earlier is not None:
            rest += earlier.items
        if rest:
            self._hold(user, now + self.window, rest[:MAX_HELD_ITEMS])

    def forget(self, user: str) -> None:
        """Drop what is held for ``user`` and when they were last told (they left)."""
        self._held.pop(user, None)
        self._told.pop(user, None)

    def _record(self, user: str, at: float, posts: Collection[str]) -> None:
        self._told[user] = _Told(at, frozenset(posts))
        self._told.move_to_end(user)

    def _hold(self, user: str, due: float, items: Sequence[Item]) -> _Held:
        held = self._held[user] = _Held(due, dict.fromkeys(items))
        heapq.heappush(self._deadlines, (due, user))
        return held
