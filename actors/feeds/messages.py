"""Messages of the feed actors (frozen; replies noted per message).

- to the story index: :class:`GetView` → ``(CatalogView, trending int64[k])``;
  the social events ``published`` / ``recommended`` / ``unrecommended`` /
  ``deleted`` (no reply);
- to the feed registry: :class:`Lookup` → the user's builder ``ActorRef``;
  :class:`BuilderStopped`; :class:`LiveFeeds` → ``int``; the social events that
  concern a user's feed (routed to that user's live builder);
- to a feed builder: :class:`GetFeed` → :class:`~actors.feeds.snapshot.FeedPage`;
  :class:`Invalidate` → ``None``; the routed social events (no reply).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GetView:
    """Ask the story index for a view of the catalog and the trending stories."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """Ask the registry for ``user``'s feed builder (started on demand)."""

    user: str


@dataclass(frozen=True, slots=True)
class BuilderStopped:
    """A feed builder tells the registry it stopped (idle or evicted)."""

    user: str
    builder: Any


@dataclass(frozen=True, slots=True)
class LiveFeeds:
    """Ask the registry how many feed builders are live."""


@dataclass(frozen=True, slots=True)
class GetFeed:
    """A page of the feed: the first (``snapshot`` ``None``) or one from a cursor.

    Attributes:
        limit: stories wanted.
        snapshot: the snapshot a cursor names, or ``None`` for a first page.
        position: where in that snapshot the page starts.
    """

    limit: int
    snapshot: str | None = None
    position: int = 0


@dataclass(frozen=True, slots=True)
class Invalidate:
    """Forget the ranked feed: the next first page is ranked afresh."""
