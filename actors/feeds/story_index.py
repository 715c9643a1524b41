"""The story index actor: owns the :class:`~actors.feeds.catalog.Catalog` and keeps it current.

At start it loads every story and recommendation from the graph (one read of
each, logged with counts and seconds). If the graph cannot be read then, it
starts empty and retries on the next :class:`GetView`, answering
:class:`IndexUnavailable` meanwhile: an outage is a reply, not a crash loop.

The feed event router hands it the social events that change the catalog:
``published`` (the first chunk carries the story's fields), ``recommended``,
``unrecommended`` and ``deleted``. It is the catalog's only writer; builders
read :class:`~actors.feeds.catalog.CatalogView` objects it hands out.

The trending stories (the trending provider) are computed from a view at most
every ``trending_every`` seconds, in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
import trio

from actors.feeds import queries
from actors.feeds.catalog import Catalog, CatalogView, StoryRecord
from actors.feeds.errors import IndexUnavailable
from actors.feeds.messages import GetView
from actors.feeds.pipeline import PipelineParams, trending
from actors.runtime import Actor
from actors.social.events import PostDeleted, Published, Recommended, Unrecommended
from stores.errors import BackendUnavailable
from stores.graph import GraphStore, Row

log = structlog.get_logger(__name__)

INDEX_EVENTS = ("published", "recommended", "unrecommended", "deleted")
"""The social event kinds the story index applies."""


class StoryIndex(Actor[Any]):
    """The columnar story catalog as an actor.

    Args:
        store: the graph to load from; ``None`` to serve ``catalog`` as given
            (the benchmark's synthetic catalogs).
        params: pipeline parameters (trending size and half-life).
        catalog: a prepared catalog (only with ``store=None``).
        trending_every: seconds a computed trending list is reused.
        clock: epoch seconds now.
        name: the actor's name.

    Replies:
        ``(CatalogView, int64[k] trending story indices)`` to :class:`GetView`.

    Raises (as replies):
        IndexUnavailable: the catalog is not loaded and the graph cannot be read.
    """

    def __init__(
        self,
        store: GraphStore | None,
        params: PipelineParams,
        *,
        catalog: Catalog | None = None,
        trending_every: float = 30.0,
        clock: Callable[[], float] = time.time,
        name: str = "story_index",
    ) -> None:
        super().__init__(name, mailbox_size=1024)
        self._store = store
        self._params = params
        self._trending_every = trending_every
        self._clock = clock
        self.catalog = catalog or Catalog()
        self._loaded = store is None
        self._trending: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self._trending_at = -float("inf")

    async def on_start(self) -> None:
        if self._store is None:
            return
        self.catalog = Catalog()
        self._loaded = False
        self._trending_at = -float("inf")
        try:
            await self._load()
        except IndexUnavailable as outage:
            log.warning("story index starts empty; will retry on demand", error=str(outage))

    async def handle(self, message: Any) -> Any:
        match message:
            case GetView():
                if not self._loaded:
                    await self._load()
                return self.catalog.view(), await self._current_trending()
            case Published(chunk=0) as published:
                self.catalog.add_stories(
                    [
                        StoryRecord(
                            id=published.post,
                            author=published.author,
                            published_at=published.published_at,
                            tags=published.tags,
                            publication=published.publication,
                            reading_time=published.reading_time,
                        )
                    ]
                )
            case Published():
                pass  # later chunks of a fan-out carry followers only
            case Recommended(user, post):
                self.catalog.recommend(user, post)
            case Unrecommended(user, post):
                self.catalog.unrecommend(user, post)
            case PostDeleted(post):
                self.catalog.delete(post)
            case _:
                raise TypeError(f"{self.name} cannot handle {type(message).__name__}")
        return None

    async def _load(self) -> None:
        assert self._store is not None
        started = time.perf_counter()
        session = self._store.session()
        try:
            stories = await session.read(queries.STORIES)
            edges = await session.read(queries.RECOMMENDATIONS)
        except BackendUnavailable as exc:
            raise IndexUnavailable(f"cannot load the story index: {exc}") from exc
        finally:
            session.close()
        # Building ~10^5-10^6 rows into numpy is CPU work: off the trio thread.
        catalog, kept = await trio.to_thread.run_sync(build_catalog, stories, edges)
        self.catalog, self._loaded = catalog, True
        log.info(
            "story index loaded",
            stories=len(catalog),
            recommendations=kept,
            seconds=round(time.perf_counter() - started, 2),
        )

    async def _current_trending(self) -> npt.NDArray[np.int64]:
        now = trio.current_time()
        if now - self._trending_at >= self._trending_every:
            view = self.catalog.view()
            self._trending = await trio.to_thread.run_sync(
                trending, view, self._clock(), self._params
            )
            self._trending_at = now
        return self._trending

    def view(self) -> CatalogView:
        """The catalog as it is now (for tests and the benchmark)."""
        return self.catalog.view()


def build_catalog(stories: list[Row], edges: list[Row]) -> tuple[Catalog, int]:
    """A catalog from the rows of :data:`queries.STORIES` and :data:`queries.RECOMMENDATIONS`.

    Returns:
        The catalog and the number of recommendation edges kept.
    """
    catalog = Catalog()
    catalog.add_stories(
        StoryRecord(
            id=row["id"],
            author=row["author"],
            published_at=row["published_at"] or 0,
            tags=tuple(row["tags"] or ()),
            publication=row["publication"],
            reading_time=row["reading_time"],
            claps=row["claps"] or 0,
            url=row["url"],
        )
        for row in stories
    )
    kept = catalog.load_recommendations((row["user"], row["post"]) for row in edges)
    return catalog, kept
