"""Channel names and who may subscribe to them: pure functions, no I/O.

Five kinds of channel::

    post:<id>       comments and reactions on one post; anyone may subscribe (unless the
                    post's author blocked them: a graph rule, see ASK_GRAPH)
    user:<id>       one user's own notifications and feed updates; only that user
    following:<id>  every activity of the users <id> follows (published, recommended,
                    comment), fanned out by the server; only that user
    circle:<id>     what <id> publishes for their followers; <id> and their followers
                    (a graph rule, checked at subscribe time and kept current)
    system:<id>     the server's own figures (supervision tree, rates); operators only

An id follows the one id rule (:data:`actors.ids.ID`: 1-64 characters of
``[A-Za-z0-9_.:@-]``). The kind is what comes before the first colon, so
``post:a:b`` is the post ``a:b``.

Centrifugo draws the same line with channel namespaces and its user-limited
channels (``#``), see https://centrifugal.dev/docs/server/channels.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from actors.ids import ID, ID_RULE

ChannelKind = Literal["post", "user", "following", "circle", "system"]
_KINDS: dict[str, ChannelKind] = {
    "post": "post",
    "user": "user",
    "following": "following",
    "circle": "circle",
    "system": "system",
}
SYSTEM_PREFIX = "system:"
"""The prefix of the operators' channels (the server's own telemetry)."""
FOLLOWING_PREFIX = "following:"
"""The prefix of the channels the server fans activities out to (nobody publishes there)."""
CIRCLE_PREFIX = "circle:"
"""The prefix of the followers-only channels."""
POST_PREFIX = "post:"
"""The prefix of the posts' channels."""
USER_PREFIX = "user:"
"""The prefix of the users' own channels (notifications, feed freshness)."""


class GraphUnavailable(Exception):
    """The graph could not rule on a subscription now (its readers are down or busy)."""


class Access(enum.Enum):
    """What the channel rules say about a subscription, before the graph is asked."""

    ALLOWED = "allowed"
    """The rule allows it (the graph may still refuse a ``post:`` channel, see
    :meth:`~actors.realtime.audience.Audience.needs_check`)."""
    REFUSED = "refused"
    """Never this user's channel."""
    ASK_GRAPH = "ask_graph"
    """Only the graph can tell (``circle:<author>``: is the user a follower?)."""


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel name.

    Attributes:
        kind: ``"post"``, ``"user"``, ``"following"``, ``"circle"`` or ``"system"``.
        id: the post or user id, ``^[A-Za-z0-9_.:@-]{1,64}$``.
    """

    kind: ChannelKind
    id: str

    @property
    def name(self) -> str:
        """The channel's name, ``"<kind>:<id>"``; :func:`parse_channel` reads it back."""
        return f"{self.kind}:{self.id}"

    def __str__(self) -> str:
        return self.name


def parse_channel(name: str) -> Channel:
    """The :class:`Channel` that ``name`` names.

    Args:
        name: ``"<kind>:<id>"``, kind one of :data:`ChannelKind`.

    Raises:
        ValueError: the kind is not one of :data:`ChannelKind`, or the id does not
            follow the id rule (:data:`actors.ids.ID`); the message says which.
    """
    prefix, colon, id = name.partition(":")
    kind = _KINDS.get(prefix)
    if not colon or kind is None:
        raise ValueError(
            f"channel {name[:80]!r}: expected 'post:<id>', 'user:<id>', 'following:<id>', "
            "'circle:<id>' or 'system:<id>'"
        )
    if not ID.fullmatch(id):
        raise ValueError(f"channel {name[:80]!r}: the id must be {ID_RULE}")
    return Channel(kind=kind, id=id)


def subscribe_access(channel: Channel, user: str, *, operator: bool = False) -> Access:
    """What the channel rules say about ``user`` subscribing to ``channel``.

    Args:
        channel: a parsed channel.
        user: the authenticated user id (from a verified token).
        operator: the token carries the operator role.

    Returns:
        ``post:`` → ALLOWED; ``user:<id>`` and ``following:<id>`` → ALLOWED only for
        ``user == id``; ``circle:<id>`` → ALLOWED for its author, ASK_GRAPH for anyone
        else (a follower the author did not block); ``system:`` → ALLOWED for operators.
        REFUSED otherwise.
    """
    kind = channel.kind
    if kind == "post":
        return Access.ALLOWED
    if kind == "system":
        return Access.ALLOWED if operator else Access.REFUSED
    if kind == "circle":
        return Access.ALLOWED if channel.id == user else Access.ASK_GRAPH
    return Access.ALLOWED if channel.id == user else Access.REFUSED


def may_subscribe(channel: Channel, user: str, *, operator: bool = False) -> bool:
    """Whether the channel rules alone let ``user`` subscribe to ``channel``.

    :func:`subscribe_access` without the graph: ``circle:`` channels of others are
    refused here (the WebSocket session asks the graph through the audience).
    """
    return subscribe_access(channel, user, operator=operator) is Access.ALLOWED
