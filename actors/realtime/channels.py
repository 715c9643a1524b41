"""Channel names and who may subscribe to them: pure functions, no I/O.

Three kinds of channel::

    post:<id>    comments and reactions on one post; anyone may subscribe
    user:<id>    one user's own notifications and feed updates; only that user
    system:<id>  the server's own figures (supervision tree, rates); operators only

An id follows the one id rule (:data:`actors.ids.ID`: 1-64 characters of
``[A-Za-z0-9_.:@-]``). The kind is what comes before the first colon, so
``post:a:b`` is the post ``a:b``.

Centrifugo draws the same line with channel namespaces and its user-limited
channels (``#``), see https://centrifugal.dev/docs/server/channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from actors.ids import ID, ID_RULE

ChannelKind = Literal["post", "user", "system"]
_KINDS: dict[str, ChannelKind] = {"post": "post", "user": "user", "system": "system"}
SYSTEM_PREFIX = "system:"
"""The prefix of the operators' channels (the server's own telemetry)."""


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel name.

    Attributes:
        kind: ``"post"``, ``"user"`` or ``"system"``.
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
        name: ``"post:<id>"``, ``"user:<id>"`` or ``"system:<id>"``.

    Raises:
        ValueError: the kind is not ``post``, ``user`` or ``system``, or the id does not
            follow the id rule (:data:`actors.ids.ID`); the message says which.
    """
    prefix, colon, id = name.partition(":")
    kind = _KINDS.get(prefix)
    if not colon or kind is None:
        raise ValueError(
            f"channel {name[:80]!r}: expected 'post:<id>', 'user:<id>' or 'system:<id>'"
        )
    if not ID.fullmatch(id):
        raise ValueError(f"channel {name[:80]!r}: the id must be {ID_RULE}")
    return Channel(kind=kind, id=id)


def may_subscribe(channel: Channel, user: str, *, operator: bool = False) -> bool:
    """Whether ``user`` may subscribe to ``channel``.

    Args:
        channel: a parsed channel.
        user: the authenticated user id (from a verified token).
        operator: the token carries the operator role.

    Returns:
        ``True`` for any ``post:`` channel; for ``user:<id>``, only if ``user == id``;
        for ``system:<id>``, only for an operator.
    """
    if channel.kind == "post":
        return True
    if channel.kind == "system":
        return operator
    return channel.id == user
