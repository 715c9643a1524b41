"""Messages to the social actors (frozen: they are never mutated in flight)."""

from __future__ import annotations

from dataclasses import dataclass

from actors.runtime import Rejection


@dataclass(frozen=True, slots=True)
class Counts:
    """How many users ``user`` follows and how many follow them."""

    user: str


@dataclass(frozen=True, slots=True)
class Following:
    """A page of the users ``user`` follows, ordered by id, strictly after ``after``."""

    user: str
    limit: int
    after: str = ""


@dataclass(frozen=True, slots=True)
class CountsResult:
    """Reply to :class:`Counts`."""

    following: int
    followers: int


@dataclass(frozen=True, slots=True)
class UsersPage:
    """A page of user ids; ``last`` is the id to continue after, ``None`` at the end."""

    users: tuple[str, ...]
    last: str | None


class NotFound(Rejection):
    """An id that is not in the graph (a reply, not a crash)."""

    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"{kind} {id!r} not found")
        self.kind = kind
        self.id = id
