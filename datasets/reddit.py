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
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from datasets.importers import MalformedInput
from datasets.stories import csv_records

MAX_REPORTED: Final = 20
"""Malformed rows and failed events described in a report (all are counted)."""

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
ID: Final = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
"""Channel and user ids (``actors.realtime.channels.CHANNEL_ID``)."""
ANONYMOUS: Final = frozenset({"", "[deleted]"})
"""Authors that name nobody: the event gets no ``user``."""


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
    ``post_id`` or ``parent_id`` is not 1-64 of ``[A-Za-z0-9_.:@-]``, ``score``
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
            raise ValueError(f"{name} {record[name][:80]!r} is not 1-64 of [A-Za-z0-9_.:@-]")
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
