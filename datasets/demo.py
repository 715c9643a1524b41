"""The demo world: the real follow graph and real stories, joined by SYNTHETIC seeded steps.

Real: the SNAP Slashdot follow graph (users, ``FOLLOWS``), the Hacker News
and Medium stories and the Reddit posts (``Post``, ``Topic``, ``Publication``,
``TAGGED``, ``PUBLISHED_IN``). Nothing in those files says which Slashdot user
wrote a story or who recommended or read what, so these steps are SYNTHETIC,
deterministic for a given ``seed`` (and numpy's PCG64 streams), and named so
wherever they are shown (``docs/data.md`` has the full list):

1. author mapping (stream ``[seed, 1]``): story authors ranked by story count
   (descending, ties in a seeded shuffle) are mapped one to one onto users
   ranked by follower count (descending, ties by id): the i-th most prolific
   author becomes the i-th most followed user, who ``WROTE`` their stories;
2. ``RECOMMENDED {at}`` (stream ``[seed, 2]``): each story is recommended by
   ``k`` of its author's followers drawn without replacement, ``k`` =
   :func:`recommenders_wanted` capped by the follower count, ``at`` =
   ``published_at`` + a uniform offset within :data:`WEEK_SECONDS`;
3. ``READ {at}`` (same draw): every recommender read the story at the moment
   they recommended it, and up to as many other followers (drawn in the same
   sample) read it at ``published_at`` + a uniform offset within a week;
4. ``FOLLOWS_TOPIC`` / ``FOLLOWS_PUBLICATION``: a user follows a topic
   (publication) when they recommended at least :data:`FOLLOW_THRESHOLD`
   stories tagged with it (published in it);
5. Reddit author mapping (stream ``[seed, 5]``): the Reddit posts' authors,
   ranked the same way, are mapped onto the next users of the same ranking,
   after those step 1 took (one graph user per author across the world);
6. Reddit ``RECOMMENDED`` and ``READ`` (stream ``[seed, 6]``): as steps 2
   and 3, with :func:`reddit_recommenders_wanted`; step 4 counts them too.

The Reddit steps come after the others, on streams of their own, so adding
the Reddit posts left every HN and Medium draw as it was, and building over a
world built without them adds only what they bring.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trio

from datasets.importers import (
    EdgeList,
    EdgeListReport,
    GraphImport,
    import_edge_list,
    read_edge_list,
)
from datasets.stories import Story, StoryReport, read_hn, read_medium, read_reddit
from datasets.story_import import StoryImport, import_stories
from stores.graph import GraphStore, ImportSummary

__all__ = [
    "FILES",
    "DemoPlan",
    "DemoSummary",
    "build_demo_world",
    "plan_demo_world",
    "recommenders_wanted",
    "reddit_recommenders_wanted",
]

FILES = {
    "graph": "soc-Slashdot0902.txt",
    "hn": "hacker_news.csv",
    "medium": "medium_articles_datascience_2020.csv",
    "reddit": "reddit_posts_au_2025.csv",
}
"""The real data files the demo world reads from its data directory."""

WEEK_SECONDS = 7 * 24 * 3600
"""Recommendations and extra reads happen within a week of publication."""

HN_POINTS_PER_RECOMMENDER = 4
"""One recommender per 4 HN points beyond the submitter's own first point."""

MEDIUM_CLAPS_PER_RECOMMENDER = 50
"""One recommender per 50 claps: a Medium reader may clap at most 50 times a story."""

REDDIT_SCORE_PER_RECOMMENDER = 4
"""One recommender per 4 points of Reddit score beyond the submitter's own upvote (as HN)."""

FOLLOW_THRESHOLD = 3
"""Recommending this many stories of a topic (publication) makes a user follow it."""

Step = Callable[[str, int | None], None]
"""Told ``(what the next step does, how many items it handles or None)``."""

Pairs = list[tuple[str, str]]
Ints = npt.NDArray[np.int64]


def recommenders_wanted(story: Story) -> int:
    """How many recommenders a story should get, before the cap by follower count.

    Hacker News (ids ``hn:``): ``ceil((points - 1) / 4)``: a post starts with
    its submitter's own point; HN has no follow graph, so which share of
    upvoters follows the submitter is unknown, and 4 keeps the demo world at
    about a quarter of a million recommendations. Everything else (Medium):
    ``ceil(claps / 50)``, the fewest readers who could have given the claps.
    """
    if story.id.startswith("hn:"):
        return math.ceil(max(story.claps - 1, 0) / HN_POINTS_PER_RECOMMENDER)
    return math.ceil(story.claps / MEDIUM_CLAPS_PER_RECOMMENDER)


def reddit_recommenders_wanted(story: Story) -> int:
    """How many recommenders a Reddit post should get, before the cap by follower count.

    ``ceil((score - 1) / 4)`` (``claps`` holds the score), the Hacker News
    rule: a Reddit post, too, starts with its submitter's own upvote, and
    which share of its voters follows the submitter is unknown.
    """
    return math.ceil(max(story.claps - 1, 0) / REDDIT_SCORE_PER_RECOMMENDER)


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """The SYNTHETIC part of the demo world.

    ``recommended`` and ``read`` come in draw order (stories by id); the
    follow lists are sorted.

    Attributes:
        seed: the seed it was drawn with.
        authors: story author → graph user id (steps 1 and 5).
        recommended: ``(user, post)`` pairs (steps 2 and 6: HN and Medium
            first, then Reddit), with ``recommended_at`` in epoch seconds.
        read: ``(user, post)`` pairs (steps 3 and 6), with ``read_at``.
        follows_topic: ``(user, topic)`` pairs (step 4).
        follows_publication: ``(user, publication)`` pairs (step 4).
    """

    seed: int
    authors: dict[str, str] = field(repr=False)
    recommended: Pairs = field(repr=False)
    recommended_at: list[int] = field(repr=False)
    read: Pairs = field(repr=False)
    read_at: list[int] = field(repr=False)
    follows_topic: Pairs = field(repr=False)
    follows_publication: Pairs = field(repr=False)


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What :func:`build_demo_world` read, planned and wrote.

    Attributes:
        seed: the seed of every synthetic step.
        edges: the follow graph file's report; ``follow_graph`` what it wrote.
        hn, medium, reddit: the story files' reports; ``stories`` what they
            wrote (all three).
        mapped_authors: story authors mapped onto graph users (SYNTHETIC),
            Reddit's included.
        recommended, read, follows_topic, follows_publication: what the
            SYNTHETIC relationships wrote.
    """

    seed: int
    edges: EdgeListReport
    follow_graph: GraphImport
    hn: StoryReport
    medium: StoryReport
    reddit: StoryReport
    stories: StoryImport
    mapped_authors: int
    recommended: ImportSummary
    read: ImportSummary
    follows_topic: ImportSummary
    follows_publication: ImportSummary

    def imports(self) -> tuple[tuple[str, ImportSummary], ...]:
        """Every write as ``(what, created vs existing)``, synthetic ones marked so (for tables)."""
        return (
            ("users", self.follow_graph.users),
            ("follows", self.follow_graph.follows),
            ("posts", self.stories.posts),
            ("topics", self.stories.topics),
            ("publications", self.stories.publications),
            ("TAGGED", self.stories.tagged),
            ("PUBLISHED_IN", self.stories.published_in),
            ("story authors' users", self.stories.users),
            (f"WROTE (SYNTHETIC authors, seed {self.seed})", self.stories.wrote),
            (f"RECOMMENDED (SYNTHETIC, seed {self.seed})", self.recommended),
            (f"READ (SYNTHETIC, seed {self.seed})", self.read),
            (f"FOLLOWS_TOPIC (SYNTHETIC, seed {self.seed})", self.follows_topic),
            (f"FOLLOWS_PUBLICATION (SYNTHETIC, seed {self.seed})", self.follows_publication),
        )


async def build_demo_world(
    graph: GraphStore,
    data_dir: Path,
    *,
    seed: int = 42,
    on_step: Step | None = None,
) -> DemoSummary:
    """Build the demo world in ``graph`` from the real files in ``data_dir``.

    Idempotent: the plan is a function of the files and ``seed``, and every
    write skips what is stored, so building twice gives the same graph (a
    second build reports everything as existing).

    Args:
        graph: the store (its schema is ensured here).
        data_dir: a directory holding the :data:`FILES`.
        seed: the seed of every synthetic step.
        on_step: called before each step with its description and item count.

    Raises:
        OSError: a file cannot be read.
        stores.errors.QueryError, stores.errors.BackendUnavailable: the store failed.
    """

    def step(what: str, count: int | None = None) -> None:
        if on_step is not None:
            on_step(what, count)

    await graph.ensure_schema()
    step(f"reading {FILES['graph']}")
    edges = await trio.to_thread.run_sync(read_edge_list, data_dir / FILES["graph"])
    step("importing users and follows", len(edges.pairs))
    follow_graph = await import_edge_list(graph, edges)
    step(f"reading {FILES['hn']}, {FILES['medium']} and {FILES['reddit']}")
    hn, hn_report = await trio.to_thread.run_sync(read_hn, data_dir / FILES["hn"])
    medium, medium_report = await trio.to_thread.run_sync(read_medium, data_dir / FILES["medium"])
    reddit, reddit_report = await trio.to_thread.run_sync(read_reddit, data_dir / FILES["reddit"])
    stories = hn + medium
    step(f"planning the synthetic world (seed {seed})", len(stories) + len(reddit))
    plan = await trio.to_thread.run_sync(
        functools.partial(plan_demo_world, edges, stories, seed, reddit=reddit)
    )
    step("importing stories (authors mapped: SYNTHETIC)", len(stories) + len(reddit))
    imported = await import_stories(graph, stories + reddit, authors=plan.authors)
    step("importing RECOMMENDED (SYNTHETIC)", len(plan.recommended))
    recommended = await graph.import_relationships(
        "RECOMMENDED", plan.recommended, {"at": plan.recommended_at}
    )
    step("importing READ (SYNTHETIC)", len(plan.read))
    read = await graph.import_relationships("READ", plan.read, {"at": plan.read_at})
    step("importing FOLLOWS_TOPIC and FOLLOWS_PUBLICATION (SYNTHETIC)")
    follows_topic = await graph.import_relationships("FOLLOWS_TOPIC", plan.follows_topic)
    follows_publication = await graph.import_relationships(
        "FOLLOWS_PUBLICATION", plan.follows_publication
    )
    return DemoSummary(
        seed=seed,
        edges=edges.report,
        follow_graph=follow_graph,
        hn=hn_report,
        medium=medium_report,
        reddit=reddit_report,
        stories=imported,
        mapped_authors=len(plan.authors),
        recommended=recommended,
        read=read,
        follows_topic=follows_topic,
        follows_publication=follows_publication,
    )


def plan_demo_world(
    edges: EdgeList,
    stories: Sequence[Story],
    seed: int = 42,
    *,
    reddit: Sequence[Story] = (),
) -> DemoPlan:
    """Draw the SYNTHETIC steps of the demo world (pure; CPU-bound, run it in a thread).

    Stories are visited in id order, so the plan does not depend on their
    order in ``stories``. One pass of numpy draws per story; everything else
    is vectorized.

    Args:
        edges: the follow graph (``(follower, followed)`` pairs).
        stories: distinct HN and Medium stories (steps 1 to 3).
        seed: the seed of every step (see the module docstring).
        reddit: distinct Reddit posts (steps 5 and 6): mapped onto the users
            after those ``stories`` took, drawn on streams of their own, so
            that they change nothing of the plan for ``stories``.

    Returns:
        The plan, identical for identical inputs and seed (on one numpy version).

    Raises:
        ValueError: a story that gets recommenders has no ``published_at``.
    """
    users = edges.users  # sorted by id
    index = {user: position for position, user in enumerate(users)}
    follower = np.fromiter((index[a] for a, _ in edges.pairs), np.int64, len(edges.pairs))
    followed = np.fromiter((index[b] for _, b in edges.pairs), np.int64, len(edges.pairs))
    followers = _Followers(
        index=index,
        pool=follower[np.lexsort((follower, followed))],  # each user's followers, by id
        starts=np.concatenate(([0], np.cumsum(np.bincount(followed, minlength=len(users))))),
    )
    counts = np.diff(followers.starts)

    authors = _map_authors(stories, users, counts, np.random.default_rng([seed, 1]))
    authors |= _map_authors(
        reddit, users, counts, np.random.default_rng([seed, 5]), taken=len(authors)
    )

    ordered = sorted(stories, key=lambda story: story.id)
    reddit_ordered = sorted(reddit, key=lambda story: story.id)
    draws = [
        _draw(ordered, 0, authors, followers, recommenders_wanted, [seed, 2]),
        _draw(
            reddit_ordered,
            len(ordered),
            authors,
            followers,
            reddit_recommenders_wanted,
            [seed, 6],
        ),
    ]
    ordered += reddit_ordered
    if not any(len(draw.reader) for draw in draws):
        return DemoPlan(seed, authors, [], [], [], [], [], [])
    reader = np.concatenate([draw.reader for draw in draws])
    post = np.concatenate([draw.post for draw in draws])
    recommend = np.concatenate([draw.recommends for draw in draws])
    published = np.array([s.published_at or 0 for s in ordered], np.int64)
    at = published[post] + np.concatenate([draw.offset for draw in draws])

    names = np.array(users, dtype=object)
    ids = np.array([s.id for s in ordered], dtype=object)
    read = list(zip(names[reader].tolist(), ids[post].tolist(), strict=True))
    recommended = [pair for pair, flag in zip(read, recommend.tolist(), strict=True) if flag]
    return DemoPlan(
        seed=seed,
        authors=authors,
        recommended=recommended,
        recommended_at=at[recommend].tolist(),
        read=read,
        read_at=at.tolist(),
        follows_topic=_followed(
            names, reader[recommend], post[recommend], [s.tags for s in ordered]
        ),
        follows_publication=_followed(
            names,
            reader[recommend],
            post[recommend],
            [(s.publication,) if s.publication is not None else () for s in ordered],
        ),
    )


@dataclass(frozen=True, slots=True)
class _Followers:
    """Each user's followers: ``pool[starts[i]:starts[i + 1]]`` follow user ``i``, by id.

    Attributes:
        index: user id → user index (position in the sorted user list).
        pool: follower indexes, ``int64[follows]``.
        starts: ``int64[users + 1]``.
    """

    index: dict[str, int] = field(repr=False)
    pool: Ints = field(repr=False)
    starts: Ints = field(repr=False)

    def of(self, user: str) -> Ints:
        """The indexes of ``user``'s followers, ascending."""
        position = self.index[user]
        return self.pool[self.starts[position] : self.starts[position + 1]]


@dataclass(frozen=True, slots=True)
class _Draw:
    """Steps 2-3 (or 6) for some stories: one row per reader, all arrays of one length.

    Attributes:
        reader: user indexes.
        post: story indexes (into the plan's ordered stories).
        offset: seconds after publication, in [0, WEEK_SECONDS).
        recommends: whether the reader also recommended the story.
    """

    reader: Ints
    post: Ints
    offset: Ints
    recommends: npt.NDArray[np.bool_]


def _draw(
    ordered: Sequence[Story],
    first: int,
    authors: dict[str, str],
    followers: _Followers,
    wanted: Callable[[Story], int],
    stream: list[int],
) -> _Draw:
    """Steps 2 and 3 for ``ordered`` (sorted by id), whose story indexes start at ``first``.

    For each story, ``min(followers, 2k)`` of its mapped author's followers
    are drawn without replacement (``k`` = ``wanted(story)`` capped by the
    follower count), the first ``k`` of them recommend it; each gets a
    uniform offset in ``[0, WEEK_SECONDS)``.

    Raises:
        ValueError: a story that gets recommenders has no ``published_at``.
    """
    draw = np.random.default_rng(stream)
    readers: list[Ints] = [np.zeros(0, np.int64)]
    offsets: list[Ints] = [np.zeros(0, np.int64)]
    story_of: list[Ints] = [np.zeros(0, np.int64)]
    recommends: list[npt.NDArray[np.bool_]] = [np.zeros(0, np.bool_)]
    for position, story in enumerate(ordered, start=first):
        user = authors.get(story.author)
        if user is None:
            continue
        pool = followers.of(user)
        k = min(len(pool), wanted(story))
        if k == 0:
            continue
        if story.published_at is None:
            raise ValueError(f"story {story.id!r} has recommenders but no published_at")
        chosen = draw.choice(pool, size=min(len(pool), 2 * k), replace=False)
        readers.append(chosen)
        offsets.append(draw.integers(0, WEEK_SECONDS, size=len(chosen)))
        story_of.append(np.full(len(chosen), position))
        recommends.append(np.arange(len(chosen)) < k)
    return _Draw(
        reader=np.concatenate(readers),
        post=np.concatenate(story_of),
        offset=np.concatenate(offsets),
        recommends=np.concatenate(recommends),
    )


def _followed(
    names: npt.NDArray[np.object_],
    user: Ints,
    story: Ints,
    things: Sequence[tuple[str, ...]],
) -> Pairs:
    """Step 4: ``(user, thing)`` for each thing of at least FOLLOW_THRESHOLD of a user's stories.

    Args:
        names: user ids by user index.
        user, story: one recommendation per position (indexes).
        things: the tags (or the publication) of each story, by story index.
    """
    vocabulary = sorted({thing for group in things for thing in group})
    if not vocabulary or not len(user):
        return []
    code = {thing: position for position, thing in enumerate(vocabulary)}
    sizes = np.array([len(group) for group in things], np.int64)
    flat = np.array([code[thing] for group in things for thing in group], np.int64)
    first = np.concatenate(([0], np.cumsum(sizes)))
    # Expand each recommendation into one row per thing of its story.
    repeat = sizes[story]
    rows = np.repeat(np.arange(len(user)), repeat)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(repeat) - repeat, repeat)
    keys = user[rows] * len(vocabulary) + flat[first[story[rows]] + within]
    distinct, votes = np.unique(keys, return_counts=True)
    kept = distinct[votes >= FOLLOW_THRESHOLD]
    return sorted(
        zip(
            names[kept // len(vocabulary)].tolist(),
            [vocabulary[i] for i in (kept % len(vocabulary)).tolist()],
            strict=True,
        )
    )


def _map_authors(
    stories: Sequence[Story],
    users: list[str],
    followers: Ints,
    rng: np.random.Generator,
    *,
    taken: int = 0,
) -> dict[str, str]:
    """Steps 1 and 5: the i-th most prolific author → the i-th most followed user not taken.

    Args:
        stories: the stories whose authors are mapped.
        users: user ids, sorted.
        followers: each user's follower count, by user index.
        rng: the step's stream (it shuffles authors of equal story counts).
        taken: how many of the most followed users an earlier mapping took.

    Authors beyond the number of users stay unmapped: they become users of
    their own (without followers, so their stories get no recommenders).
    """
    story_counts: dict[str, int] = {}
    for story in stories:
        story_counts[story.author] = story_counts.get(story.author, 0) + 1
    names = sorted(story_counts)
    shuffled = [names[i] for i in rng.permutation(len(names))]
    ranked_authors = sorted(
        shuffled, key=lambda name: -story_counts[name]
    )  # stable: ties stay shuffled
    ranked_users = np.lexsort((np.arange(len(users)), -followers))  # users are sorted by id
    return {
        author: users[user]
        for author, user in zip(ranked_authors, ranked_users[taken:].tolist(), strict=False)
    }
