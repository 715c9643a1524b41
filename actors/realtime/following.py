"""Who follows whom among the users listening to ``following:``: the fan-out index. Pure.

``following:<me>`` delivers every activity of the users ``<me>`` follows. The
fan-out is done **on write, to the followers that listen** (Twitter's timeline
fan-out restricted to online users): when an activity of ``A`` enters the
pipeline, the transformer looks up ``A``'s *listening* followers here (one dict
lookup) and adds one event per follower, on ``following:<follower>``. Nothing is
written for followers who do not listen, so an author with 500,000 followers of
whom 40 listen costs 40 events, and a user who follows 5,000 authors costs one
index entry of 5,000 names, loaded once when they start listening.

The index holds, for each *listening* user (a ``following:`` subscription
somewhere in the cluster, or one that ended less than the grace period ago, see
:class:`~actors.realtime.audience.Audience`), the set of users they follow, and
the reverse map ``author → listening followers``. Follows and unfollows change
both at once.

An activity is an event on a ``post:`` channel whose data has a ``type`` in
:data:`ACTIVITY_TYPES` and names its actor in ``user`` (the realtime bridge
writes ``published`` and ``recommended``; ``comment`` comes from whoever
publishes comments). The actor never receives their own activity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from actors.realtime.channels import FOLLOWING_PREFIX, POST_PREFIX

ACTIVITY_TYPES: Final = frozenset({"published", "recommended", "comment"})
"""The ``type`` of the ``post:`` events that are fanned out to ``following:`` channels."""


class FollowingIndex:
    """Listening users → whom they follow, and authors → their listening followers.

    One owner (the audience actor) writes it; the transformers read it, all on the
    trio thread. Every method is O(size of its arguments).
    """

    __slots__ = ("_audience", "_followees")

    def __init__(self) -> None:
        self._followees: dict[str, set[str]] = {}
        self._audience: dict[str, set[str]] = {}

    def __contains__(self, user: object) -> bool:
        return user in self._followees

    def __len__(self) -> int:
        return len(self._followees)

    @property
    def listeners(self) -> frozenset[str]:
        """The users the index holds."""
        return frozenset(self._followees)

    def followees(self, user: str) -> frozenset[str]:
        """Whom ``user`` follows, if ``user`` is in the index (empty otherwise)."""
        return frozenset(self._followees.get(user, ()))

    def audience(self, author: str) -> Iterable[str]:
        """The listening followers of ``author`` (a live view: copy it before awaiting)."""
        return self._audience.get(author, ())

    def add(self, user: str, followees: Iterable[str]) -> None:
        """Hold ``user``, who follows ``followees`` (replaces what was held for ``user``)."""
        self.remove(user)
        held = self._followees[user] = set(followees)
        for author in held:
            self._audience.setdefault(author, set()).add(user)

    def remove(self, user: str) -> None:
        """Forget ``user`` (nothing if not held)."""
        for author in self._followees.pop(user, ()):
            followers = self._audience.get(author)
            if followers is not None:
                followers.discard(user)
                if not followers:
                    del self._audience[author]

    def followed(self, follower: str, followee: str) -> bool:
        """``follower`` now follows ``followee``; ``True`` if ``follower`` is held."""
        held = self._followees.get(follower)
        if held is None:
            return False
        held.add(followee)
        self._audience.setdefault(followee, set()).add(follower)
        return True

    def unfollowed(self, follower: str, followee: str) -> bool:
        """``follower`` stopped following ``followee``; ``True`` if ``follower`` is held."""
        held = self._followees.get(follower)
        if held is None:
            return False
        held.discard(followee)
        followers = self._audience.get(followee)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._audience[followee]
        return True


def activity_actor(channel: str, data: dict[str, Any]) -> str | None:
    """The actor of an activity event (``data["user"]``), or ``None`` if it is not one."""
    if not channel.startswith(POST_PREFIX) or data.get("type") not in ACTIVITY_TYPES:
        return None
    user = data.get("user")
    return user if isinstance(user, str) else None


def recipients(index: FollowingIndex, channel: str, data: dict[str, Any]) -> list[str]:
    """The ``following:`` channels an event on ``channel`` is fanned out to, sorted.

    Empty unless the event is an activity (:func:`activity_actor`); never the actor's own.
    """
    actor = activity_actor(channel, data)
    if actor is None:
        return []
    return sorted(FOLLOWING_PREFIX + user for user in index.audience(actor) if user != actor)
