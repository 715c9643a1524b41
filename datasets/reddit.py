"""Real Reddit comment threads read from the shared data set (``reddit_comments_au_2025.csv``).

Source: ``reddit_comments_au_2025.csv`` (``../shared/data``; Reddit via the
Arctic Shift archive, see its README): 3,480 comments on 71 of the 95 posts
of ``reddit_posts_au_2025.csv`` (the other 24 have none), header
``id,post_id,author,body,score,created_utc,parent_id,subreddit,date``, bodies
quoted over several lines. The comments are real text by real users: show
them as data only.

Each comment becomes one event on channel ``post:<post_id>``::

    {"type": "comment", "id", "post", "parent", "user", "text", "score", "subreddit", "at"}

``parent`` is the post id for a top-level comment, else the parent comment's
id; ``at`` is ``created_utc`` (epoch seconds, UTC); ``user`` is left out when
the author is ``[deleted]`` or empty. The server adds ``author`` to an event
that names a ``user`` (:mod:`actors.realtime.transform`).

A looping replay plays the busiest threads round after round, side by side
(:func:`loop_round`): round 1 publishes their comments under their own ids,
round ``r`` (2, 3, …) each of them once more as a :class:`Rerun` with the
fresh id ``<id>-r<r>`` (its parent renamed alike), so that no two events
share an id.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from actors.ids import ID, ID_RULE
from datasets.importers import MAX_REPORTED, MalformedInput
from datasets.stories import csv_records

COLUMNS: Final = (
    "id",
    "post_id",
    "author",
    "body",
    "score",
    "created_utc",
    "parent_id",
    "subreddit",
)
"""Columns read; others (``date``) are ignored."""
ANONYMOUS: Final = frozenset({"", "[deleted]"})
"""Authors that name nobody: the event gets no ``user``."""
LOOP_THREADS: Final = 3
"""How many of the busiest threads a looping replay plays again after its first pass."""


class CommentFileError(ValueError):
    """The file cannot be read as comments at all: empty, or its header lacks a column.

    Attributes:
        hint: one line telling a person what to try next.
    """

    hint = "expected a CSV with the columns " + ",".join(COLUMNS)


@dataclass(frozen=True, slots=True)
class Comment:
    """One Reddit comment.

    Attributes:
        id: the comment id (``oajf2ct``).
        post: the id of the post (thread) it belongs to.
        parent: the parent comment's id, or the post's id for a top-level comment.
        user: the author's name, ``None`` for ``[deleted]`` or empty.
        text: the body, as written (Markdown, several lines).
        score: Reddit's score (up minus down votes) when archived; may be negative.
        created_utc: when it was written, epoch seconds UTC.
        subreddit: where (``AusFinance``).
    """

    id: str
    post: str
    parent: str
    user: str | None
    text: str
    score: int
    created_utc: float
    subreddit: str

    @property
    def channel(self) -> str:
        """The channel its event goes to: ``post:<post>``."""
        return f"post:{self.post}"

    def event(self) -> dict[str, Any]:
        """The event's data (module docstring)."""
        data: dict[str, Any] = {
            "type": "comment",
            "id": self.id,
            "post": self.post,
            "parent": self.parent,
        }
        if self.user is not None:
            data["user"] = self.user
        data.update(text=self.text, score=self.score, subreddit=self.subreddit, at=self.created_utc)
        return data


@dataclass(frozen=True, slots=True)
class CommentReport:
    """What reading a comment file found.

    Attributes:
        rows: data records read (the header and blank lines excluded).
        kept: comments returned.
        malformed: records skipped as malformed.
        examples: up to :data:`MAX_REPORTED` ``(line number, reason)`` of them.
    """

    rows: int
    kept: int
    malformed: int
    examples: tuple[tuple[int, str], ...] = ()


def read_comments(path: Path) -> list[Comment]:
    """The comments of ``path``, oldest first (by ``created_utc``, then ``id``).

    Malformed rows are skipped (:func:`read_comment_file` counts them).

    Blocking file I/O: call it in ``trio.to_thread.run_sync`` from async code.

    Raises:
        CommentFileError: the file is empty, or its header lacks a column of :data:`COLUMNS`.
        OSError: the file cannot be read.
    """
    return read_comment_file(path)[0]


def read_comment_file(path: Path) -> tuple[list[Comment], CommentReport]:
    """:func:`read_comments`, and a report of the rows read and skipped.

    A record is malformed (skipped and counted) when it is not valid CSV or
    UTF-8, has another number of fields than the header, or when ``id``,
    ``post_id`` or ``parent_id`` breaks the id rule (:mod:`actors.ids`), ``score``
    is not an integer, or ``created_utc`` is not a finite number. Line numbers
    are those a record starts on, the header being line 1.

    Raises:
        CommentFileError, OSError: as :func:`read_comments`.
    """
    comments: list[Comment] = []
    rows = malformed = 0
    examples: list[tuple[int, str]] = []
    for line, record in _records(path):
        rows += 1
        try:
            if isinstance(record, str):
                raise ValueError(record)
            comments.append(_comment(record))
        except ValueError as exc:
            malformed += 1
            if len(examples) < MAX_REPORTED:
                examples.append((line, str(exc)))
    comments.sort(key=lambda comment: (comment.created_utc, comment.id))
    report = CommentReport(
        rows=rows, kept=len(comments), malformed=malformed, examples=tuple(examples)
    )
    return comments, report


def busiest_threads(comments: Iterable[Comment], count: int = LOOP_THREADS) -> list[str]:
    """The post ids of the ``count`` threads with the most comments, busiest first (ties by id).

    On the real file: ``1rt3kyh`` (199 comments), then ``1qjiwo4`` and
    ``1r37dfd`` (198 each, as are ``1rs4vyy`` and ``1sa2z5t``, later by id).
    """
    sizes = Counter(comment.post for comment in comments)
    return sorted(sizes, key=lambda post: (-sizes[post], post))[:count]


def rerun_id(id: str, round: int) -> str:
    """A comment's (or parent's) id in ``round`` of a loop: ``id``, or ``<id>-r<round>`` after 1.

    Raises:
        ValueError: ``round`` < 1, or the new id breaks the id rule
            (:mod:`actors.ids`: ``id`` is too long).
    """
    if round < 1:
        raise ValueError(f"round must be >= 1, got {round!r}")
    if round == 1:
        return id
    fresh = f"{id}-r{round}"
    if not ID.fullmatch(fresh):
        raise ValueError(f"{fresh[:80]!r} is not {ID_RULE}")
    return fresh


@dataclass(frozen=True, slots=True)
class Rerun:
    """A comment as a round of a looping replay publishes it: the same thread and text.

    Shaped like :class:`Comment` for the replayer (``id``, ``channel``,
    ``created_utc``, ``event()``).

    Attributes:
        comment: the original comment.
        round: the round: 1 keeps the comment's id, 2 or more gives it a fresh one.
        created_utc: when the round schedules it, epoch seconds: the comment's
            own time moved by its thread's offset (:func:`loop_round`). The
            event's ``at`` stays the time the comment was written.
    """

    comment: Comment
    round: int
    created_utc: float

    @property
    def id(self) -> str:
        """The comment's id in round 1, ``<comment id>-r<round>`` after."""
        return rerun_id(self.comment.id, self.round)

    @property
    def channel(self) -> str:
        """The original's channel, ``post:<post>``: the post is the same."""
        return self.comment.channel

    def event(self) -> dict[str, Any]:
        """The original's event with the fresh ``id``; ``parent`` renamed when it is a comment."""
        data = self.comment.event()
        data["id"] = self.id
        if self.comment.parent != self.comment.post:
            data["parent"] = rerun_id(self.comment.parent, self.round)
        return data


def loop_round(comments: Iterable[Comment], threads: Sequence[str], round: int) -> list[Rerun]:
    """Round ``round`` of a looping replay: every comment of ``threads``, fresh ids after round 1.

    The threads are played side by side: each thread's times are moved so
    that it starts when the first of them starts (``created_utc`` - the
    thread's first ``created_utc`` + the earliest first ``created_utc``),
    keeping the gaps within a thread. So the busiest thread is live for the
    whole round rather than for its share of a round played thread after
    thread, and a round lasts as long as its longest thread.

    Args:
        comments: from :func:`read_comments`.
        threads: post ids (from :func:`busiest_threads`).
        round: 1 for the comments as they are, 2 for the first repeat, then 3, ….

    Returns:
        The reruns in the order to publish them: by moved time, then thread
        (in ``threads`` order), then time and id within the thread.

    Raises:
        ValueError: as :func:`rerun_id` (checked on every id before anything is returned).
    """
    order = {post: position for position, post in enumerate(threads)}
    chosen = [comment for comment in comments if comment.post in order]
    starts: dict[str, float] = {}
    for comment in chosen:
        starts[comment.post] = min(starts.get(comment.post, math.inf), comment.created_utc)
    origin = min(starts.values(), default=0.0)
    reruns = [
        Rerun(comment, round, comment.created_utc - starts[comment.post] + origin)
        for comment in chosen
    ]
    reruns.sort(
        key=lambda rerun: (
            rerun.created_utc,
            order[rerun.comment.post],
            rerun.comment.created_utc,
            rerun.comment.id,
        )
    )
    for rerun in reruns:
        rerun.event()  # every fresh id checked now, not mid-replay
    return reruns


def _records(path: Path) -> Iterator[tuple[int, dict[str, str] | str]]:
    """``(first line, the record by column, or why it cannot be read)`` for each data record.

    Raises:
        CommentFileError: the file is empty, or its header lacks a column of :data:`COLUMNS`.
    """
    try:
        yield from csv_records(path, COLUMNS)
    except MalformedInput as bad:
        raise CommentFileError(f"{path}: {bad.reason}") from None


def _comment(record: dict[str, str]) -> Comment:
    """One comment from its record.

    Raises:
        ValueError: a malformed field; the message names it.
    """
    for name in ("id", "post_id", "parent_id"):
        if not ID.fullmatch(record[name]):
            raise ValueError(f"{name} {record[name][:80]!r} is not {ID_RULE}")
    try:
        score = int(record["score"])
    except ValueError:
        raise ValueError(f"score {record['score'][:40]!r} is not an integer") from None
    try:
        created = float(record["created_utc"])
    except ValueError:
        created = math.nan
    if not math.isfinite(created):
        raise ValueError(f"created_utc {record['created_utc'][:40]!r} is not a number")
    author = record["author"].strip()
    return Comment(
        id=record["id"],
        post=record["post_id"],
        parent=record["parent_id"],
        user=None if author in ANONYMOUS else author,
        text=record["body"],
        score=score,
        created_utc=created,
        subreddit=record["subreddit"],
    )
