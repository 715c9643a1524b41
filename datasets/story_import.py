"""Writing stories into the graph: posts, their authors, topics and publications.

One story becomes a ``Post`` node with every schema property, its author's
``(User)-[:WROTE]->(Post)``, a ``Topic {name}`` and ``(Post)-[:TAGGED]->(Topic)``
per tag, and a ``Publication {name}`` with ``(Post)-[:PUBLISHED_IN]->(Publication)``.
Everything goes through the store's bulk path, so importing twice gives the
same graph, and stored nodes and relationships keep their properties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.ids import ID, ID_RULE
from datasets.stories import Story
from stores.graph import GraphStore, ImportSummary, check_properties
from stores.schema import PropertyType

__all__ = ["StoryImport", "import_stories"]


@dataclass(frozen=True, slots=True)
class StoryImport:
    """What :func:`import_stories` wrote: created vs already present, per kind."""

    users: ImportSummary
    posts: ImportSummary
    topics: ImportSummary
    publications: ImportSummary
    wrote: ImportSummary
    tagged: ImportSummary
    published_in: ImportSummary


@dataclass(frozen=True, slots=True)
class _Rows:
    """The checked stories as the node keys, property columns and pairs to import."""

    users: list[str]
    posts: list[str]
    properties: dict[str, list[Any]] = field(repr=False)
    topics: list[str]
    publications: list[str]
    wrote: list[tuple[str, str]]
    tagged: list[tuple[str, str]]
    published_in: list[tuple[str, str]]


async def import_stories(
    graph: GraphStore,
    stories: Iterable[Story],
    *,
    authors: Mapping[str, str] | None = None,
) -> StoryImport:
    """Write ``stories`` into ``graph``, creating the author ``User`` nodes that are missing.

    Every story is checked before anything is written. The writes are
    several bulk imports (nodes first, then relationships): a backend failure
    part-way leaves the earlier ones written, and importing again completes
    the load.

    Args:
        graph: the store, its schema ensured.
        stories: distinct stories (as the readers of :mod:`datasets.stories` return them).
        authors: story author → graph user id. A mapped story is written by
            that user, and its ``Post.author`` is that user too, so the
            property and the ``WROTE`` relationship agree; unmapped authors
            are users under their own id.

    Returns:
        created vs already present for every node label and relationship type.

    Raises:
        ValueError: two stories share an id, or a story or a mapped author
            has an invalid key, an empty tag or publication, or a property of
            the wrong type (nothing is written).
        stores.errors.QueryError, stores.errors.BackendUnavailable: the store failed.
    """
    declared = graph.schema.node("Post").properties
    rows = await trio.to_thread.run_sync(_rows, list(stories), dict(authors or {}), declared)
    users = await graph.import_nodes("User", rows.users)
    topics = await graph.import_nodes("Topic", rows.topics)
    publications = await graph.import_nodes("Publication", rows.publications)
    posts = await graph.import_nodes("Post", rows.posts, rows.properties)
    return StoryImport(
        users=users,
        posts=posts,
        topics=topics,
        publications=publications,
        wrote=await graph.import_relationships("WROTE", rows.wrote),
        tagged=await graph.import_relationships("TAGGED", rows.tagged),
        published_in=await graph.import_relationships("PUBLISHED_IN", rows.published_in),
    )


def _rows(
    stories: list[Story],
    authors: dict[str, str],
    declared: Sequence[tuple[str, PropertyType]],
) -> _Rows:
    """Check every story and lay them out for the bulk imports (CPU-bound: run in a thread).

    Raises:
        ValueError: see :func:`import_stories`.
    """
    seen: set[str] = set()
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "author",
            "title",
            "url",
            "tags",
            "publication",
            "published_at",
            "reading_time",
            "claps",
        )
    }
    wrote: list[tuple[str, str]] = []
    tagged: list[tuple[str, str]] = []
    published_in: list[tuple[str, str]] = []
    for story in stories:
        _check(story)
        if story.id in seen:
            raise ValueError(f"two stories have the id {story.id!r}")
        seen.add(story.id)
        author = authors.get(story.author, story.author)
        if not isinstance(author, str) or not author:
            raise ValueError(f"story {story.id!r}: author maps to {author!r}, not a user id")
        wrote.append((author, story.id))
        tagged += [(story.id, tag) for tag in story.tags]
        if story.publication is not None:
            published_in.append((story.id, story.publication))
        columns["author"].append(author)
        columns["title"].append(story.title)
        columns["url"].append(story.url)
        columns["tags"].append(list(story.tags))
        columns["publication"].append(story.publication)
        columns["published_at"].append(story.published_at)
        columns["reading_time"].append(story.reading_time)
        columns["claps"].append(story.claps)
    check_properties(declared, columns, len(wrote), "Post")
    return _Rows(
        users=list(dict.fromkeys(author for author, _ in wrote)),
        posts=[post for _, post in wrote],
        properties=columns,
        topics=list(dict.fromkeys(topic for _, topic in tagged)),
        publications=list(dict.fromkeys(name for _, name in published_in)),
        wrote=wrote,
        tagged=list(dict.fromkeys(tagged)),
        published_in=published_in,
    )


def _check(story: Story) -> None:
    """Raise ValueError unless ``story`` has valid keys and typed properties."""
    where = f"story {story.id!r}"
    for name, key in (("id", story.id), ("author", story.author)):
        if not isinstance(key, str) or not ID.fullmatch(key):
            raise ValueError(f"{where}: {name} must be {ID_RULE}")
    if not isinstance(story.title, str) or not (story.url is None or isinstance(story.url, str)):
        raise ValueError(f"{where}: title and url must be strings")
    if not isinstance(story.tags, tuple) or not all(
        isinstance(tag, str) and tag for tag in story.tags
    ):
        raise ValueError(f"{where}: tags must be a tuple of non-empty strings")
    if story.publication is not None and (
        not isinstance(story.publication, str) or not story.publication
    ):
        raise ValueError(f"{where}: publication must be a non-empty string or None")
    if isinstance(story.claps, bool) or not isinstance(story.claps, int) or story.claps < 0:
        raise ValueError(f"{where}: claps must be an int >= 0")
    if story.published_at is not None and (
        isinstance(story.published_at, bool) or not isinstance(story.published_at, int)
    ):
        raise ValueError(f"{where}: published_at must be epoch seconds (int) or None")
    if story.reading_time is not None and (
        isinstance(story.reading_time, bool) or not isinstance(story.reading_time, int | float)
    ):
        raise ValueError(f"{where}: reading_time must be minutes (float) or None")
