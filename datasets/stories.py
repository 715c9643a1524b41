"""Stories from real data sets: one shape, one reader per file format.

Every reader returns ``(stories, report)``: the distinct stories in file
order, and a :class:`StoryReport` of what was kept and skipped. A record is
one CSV row (quoted fields may span lines; CRLF or LF); line numbers are the
physical line a record starts on, the header being line 1. Text is kept as
the file spells it, upstream mojibake included; a record that is not valid
UTF-8 is malformed. With ``strict=True`` the first malformed record raises
:class:`~datasets.importers.MalformedInput`; a file without the expected header
raises it whatever ``strict`` says. Readers block: run them in
``trio.to_thread.run_sync``.

Formats (``docs/data.md`` gives the sources and every rule):

* ``canonical`` — this project's own CSV: header
  ``id,author,title,tags,publication,published_at,reading_time,claps`` in any
  order, plus an optional ``url`` column; ``tags`` separated by ``|``;
  ``published_at`` an ISO-8601 date (midnight UTC), datetime (naive means
  UTC) or integer epoch seconds. Only ``id`` and ``author`` are required, both
  matching :data:`~actors.ids.ID`.
* ``hn`` — Hacker News posts (``id,title,url,num_points,num_comments,author,created_at``).
* ``medium`` — the Medium "Data Science" 2020 archive
  (``title,article_url,claps,reading_time,date,tag_list``).
* ``reddit`` — the Reddit posts about the 2025 US tariffs
  (``id,title,text,author,score,upvote_ratio,num_comments,created_utc,subreddit,url,permalink,date``).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

from actors.ids import ID, ID_RULE
from datasets.importers import MAX_REPORTED, MalformedInput

__all__ = [
    "READERS",
    "Story",
    "StoryFormat",
    "StoryReport",
    "read_canonical",
    "read_hn",
    "read_medium",
    "read_reddit",
    "read_stories",
]

StoryFormat = Literal["canonical", "hn", "medium", "reddit"]

HN_TIMEZONE = ZoneInfo("America/New_York")
"""``created_at`` in the Hacker News file is US Eastern wall-clock time."""

HN_ITEM_URL = "https://news.ycombinator.com/item?id={id}"
"""Where a Hacker News post without a link lives (Ask HN and other text posts)."""

HN_KINDS = re.compile(r"\s*(ask|show|tell|launch)\s+hn\b", re.IGNORECASE)
"""The title prefixes Hacker News itself files posts under: ``Ask HN: …`` → ``ask-hn``."""

TDS_MENU = (
    "Data Science",
    "Machine Learning",
    "Programming",
    "Visualization",
    "Video",
    "★",
    "About",
    "Contribute",
)
"""The towardsdatascience.com navigation menu, scraped as the tag list of 4,314 stories."""

ARCHIVE_TAG = "data-science"
"""The tag the Medium archive was collected under: every story in it carries it."""

REDDIT_TOPIC = "us-tariffs-2025"
"""What the Reddit sample is about (its README: "Reddit posts about the 2025 US tariffs").

Every Reddit post carries it, as every Medium story carries :data:`ARCHIVE_TAG`:
it names the collection, not a judgement of each post (45 of the 95 posts say
"tariff" in their title or text). The file has no flair column, so no post
has another tag."""

REDDIT_SITE = "https://www.reddit.com"
"""Where a ``permalink`` (``/r/<subreddit>/comments/<id>/…``) lives."""


@dataclass(frozen=True, slots=True)
class Story:
    """A story (a post) as the graph stores it.

    Attributes:
        id: graph key, e.g. ``hn:12224879`` or ``md:1f0c3d5e9a2b``.
        author: graph key of the author, e.g. ``hn:ne0phyte`` or ``md:@k3no``.
        title: as the source spells it (may be empty).
        url: the story's address, if known.
        tags: topic names, in source order, without duplicates.
        publication: the publication or site it appeared in, if any.
        published_at: publication time, epoch seconds UTC.
        reading_time: estimated reading time in minutes.
        claps: applause: HN points or Medium claps.
    """

    id: str
    author: str
    title: str
    url: str | None = None
    tags: tuple[str, ...] = ()
    publication: str | None = None
    published_at: int | None = None
    reading_time: float | None = None
    claps: int = 0


@dataclass(frozen=True, slots=True)
class StoryReport:
    """What reading a story file found.

    Attributes:
        rows: data records read (the header and blank lines excluded).
        kept: distinct stories returned.
        duplicates: records whose story id was already kept (the first wins).
        malformed: records skipped as malformed.
        examples: up to 20 ``(line number, reason)`` of the malformed records.
        notes: ``(what, how many)`` of the format's documented adjustments,
            e.g. Medium stories without a named author.
    """

    rows: int
    kept: int
    duplicates: int
    malformed: int
    examples: tuple[tuple[int, str], ...] = ()
    notes: tuple[tuple[str, int], ...] = ()


class _Reject(Exception):
    """A record cannot be read: the reason."""


Record = dict[str, str]
Parser = Callable[[Record, list[str]], Story]
"""Reads one record into a story, appending the notes that apply to it; raises _Reject."""


def read_canonical(path: Path, *, strict: bool = False) -> tuple[list[Story], StoryReport]:
    """Read stories in the canonical CSV format (see the module docstring).

    Empty fields: ``title`` → ``""``, ``url`` / ``publication`` /
    ``published_at`` / ``reading_time`` → ``None``, ``tags`` → ``()``,
    ``claps`` → 0.

    Raises:
        MalformedInput: the header lacks a column, or with ``strict`` the
            first malformed record.
        OSError: the file cannot be read.
    """
    columns: tuple[str, ...] = ("id", "author", "title", "tags", "publication")
    columns += ("published_at", "reading_time", "claps")
    return _read(path, columns, _canonical, strict, optional=("url",))


def read_hn(path: Path, *, strict: bool = False) -> tuple[list[Story], StoryReport]:
    """Read the Hacker News posts file (Kaggle "Hacker News Posts", Dataquest sample).

    Mapping: ``id`` → ``hn:<id>``; ``author`` → ``hn:<author>``;
    ``num_points`` → ``claps``; ``created_at`` (``8/4/2016 11:52``, US
    Eastern; an ambiguous autumn hour is read as the first, daylight-saving
    one) → epoch seconds UTC; ``url`` → ``url``, or the post's HN page when
    empty; the link's host without ``www.`` → ``publication`` (none for text
    posts); ``tags`` only from the title prefixes HN files posts under
    (``ask-hn``, ``show-hn``, ``tell-hn``, ``launch-hn``): HN has no tags.
    ``num_comments`` is not kept; ``reading_time`` is unknown.

    Raises:
        MalformedInput: the header lacks a column, or with ``strict`` the
            first malformed record.
        OSError: the file cannot be read.
    """
    columns = ("id", "title", "url", "num_points", "num_comments", "author", "created_at")
    return _read(path, columns, _hn, strict)


def read_medium(path: Path, *, strict: bool = False) -> tuple[list[Story], StoryReport]:
    """Read the Medium "Data Science" 2020 archive.

    Mapping:

    * ``id``: ``md:`` and the first 12 hex digits of the SHA-1 of
      ``article_url``; a repeated URL is a duplicate.
    * ``publication``: the URL's host without ``www.``, or for
      ``medium.com/<pub>/…`` the first path segment (percent-decoded); none
      for ``medium.com/@user/…``.
    * ``author``: the file has no author column, so ``md:@user`` when the URL
      names one, else the stand-in ``md:pub:<publication>``: the author is
      unknown (counted in the report's notes). A name that is not a valid key
      (:data:`~actors.ids.ID`, e.g. a non-ASCII slug) becomes
      the first 12 hex digits of its SHA-1.
    * ``date`` → midnight UTC; ``claps``, ``reading_time`` (minutes) as they are.
    * ``tag_list`` (a Python list literal) → tags lower-cased, runs of spaces
      as one hyphen. The towardsdatascience.com navigation menu, scraped as
      the tag list of 4,314 stories (:data:`TDS_MENU`), is replaced by the
      archive's own tag ``data-science`` (counted in the notes).

    Raises:
        MalformedInput: the header lacks a column, or with ``strict`` the
            first malformed record.
        OSError: the file cannot be read.
    """
    columns = ("title", "article_url", "claps", "reading_time", "date", "tag_list")
    return _read(path, columns, _medium, strict)


def read_reddit(path: Path, *, strict: bool = False) -> tuple[list[Story], StoryReport]:
    """Read the Reddit posts file (``reddit_posts_au_2025.csv``, via the Arctic Shift archive).

    Mapping:

    * ``id`` → ``Post.id`` as it is (Reddit's base-36 id, e.g. ``1rt3kyh``),
      so that the post and its comments' channel ``post:<id>`` agree; a
      repeated id is a duplicate.
    * ``author`` → ``rd:<author>``; ``[deleted]`` or empty → the stand-in
      ``rd:sub:<subreddit>``: the author is unknown (counted in the notes).
    * ``subreddit`` → ``publication`` ``r/<subreddit>`` (required).
    * ``title`` as it is; ``url`` as it is (the link, which for a text post
      is the post's own page), or ``https://www.reddit.com`` + ``permalink``
      when empty.
    * ``created_utc`` (epoch seconds, a float) → ``published_at``, whole seconds.
    * ``score`` → ``claps``; a negative score becomes 0 (counted in the notes).
    * ``tags``: only :data:`REDDIT_TOPIC`, what the sample is about: the file
      has no flair column.
    * ``text``, ``upvote_ratio``, ``num_comments``, ``date`` are not kept;
      ``reading_time`` is unknown.

    Raises:
        MalformedInput: the header lacks a column, or with ``strict`` the
            first malformed record.
        OSError: the file cannot be read.
    """
    columns = ("id", "title", "author", "score", "created_utc", "subreddit", "url", "permalink")
    return _read(path, columns, _reddit, strict)


READERS: dict[StoryFormat, Callable[..., tuple[list[Story], StoryReport]]] = {
    "canonical": read_canonical,
    "hn": read_hn,
    "medium": read_medium,
    "reddit": read_reddit,
}
"""The reader of each format."""


def read_stories(
    path: Path, format: StoryFormat, *, strict: bool = False
) -> tuple[list[Story], StoryReport]:
    """Read ``path`` with the reader of ``format`` (see :data:`READERS`).

    Raises:
        KeyError: ``format`` is unknown.
        MalformedInput, OSError: as the reader raises them.
    """
    return READERS[format](path, strict=strict)


# -- the shared reading loop ---------------------------------------------------


def _read(
    path: Path,
    columns: tuple[str, ...],
    parse: Parser,
    strict: bool,
    optional: tuple[str, ...] = (),
) -> tuple[list[Story], StoryReport]:
    stories: dict[str, Story] = {}
    notes: Counter[str] = Counter()
    rows = duplicates = malformed = 0
    examples: list[tuple[int, str]] = []
    for line, record in csv_records(path, columns, optional):
        rows += 1
        found: list[str] = []
        try:
            if isinstance(record, str):
                raise _Reject(record)
            story = parse(record, found)
        except _Reject as exc:
            if strict:
                raise MalformedInput(path, line, str(exc)) from None
            malformed += 1
            if len(examples) < MAX_REPORTED:
                examples.append((line, str(exc)))
            continue
        if story.id in stories:
            duplicates += 1
        else:
            stories[story.id] = story
            notes.update(found)
    report = StoryReport(
        rows=rows,
        kept=len(stories),
        duplicates=duplicates,
        malformed=malformed,
        examples=tuple(examples),
        notes=tuple(sorted(notes.items())),
    )
    return list(stories.values()), report


def csv_records(
    path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Iterator[tuple[int, Record | str]]:
    """Yield ``(first line, record as a dict, or the reason it cannot be read)``.

    The CSV reading shared by every importer of real files (stories here, the
    Reddit comments in :mod:`client.replay`): a header naming ``columns``
    (and maybe ``optional``), quoted fields over several lines, a record with
    the wrong number of fields or bytes that are not UTF-8 rejected alone.

    Raises:
        MalformedInput: the file has no header, or it lacks one of ``columns``.
    """
    # surrogateescape: an invalid byte rejects its record, not the whole file.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as file:
        reader = csv.reader(file)
        header: list[str] | None = None
        positions: dict[str, int] = {}
        wanted = columns + optional
        end = 0
        while True:
            start = end + 1
            try:
                fields = next(reader)
            except StopIteration:
                if header is None:
                    raise MalformedInput(path, start, "no header: the file is empty") from None
                return
            except csv.Error as exc:
                end = reader.line_num
                if header is None:
                    raise MalformedInput(path, start, f"unreadable header: {exc}") from None
                yield start, f"unreadable CSV: {exc}"
                continue
            end = reader.line_num
            if not fields:
                continue
            if header is None:
                header = [name.strip() for name in fields]
                missing = [name for name in columns if name not in header]
                if missing:
                    raise MalformedInput(path, start, f"header lacks the columns {missing}")
                positions = {name: header.index(name) for name in wanted if name in header}
                continue
            if len(fields) != len(header):
                yield start, f"expected {len(header)} fields, got {len(fields)}"
                continue
            try:
                "\x00".join(fields).encode("utf-8")
            except UnicodeEncodeError:
                yield start, "not valid UTF-8"
                continue
            yield start, {name: fields[index] for name, index in positions.items()}


# -- per-format parsers ---------------------------------------------------------


def _canonical(record: Record, notes: list[str]) -> Story:
    url = record.get("url", "").strip()
    return Story(
        id=_key(record["id"], "id"),
        author=_key(record["author"], "author"),
        title=record["title"],
        url=url or None,
        tags=_distinct(tag.strip() for tag in record["tags"].split("|")),
        publication=record["publication"].strip() or None,
        published_at=_epoch(record["published_at"]) if record["published_at"].strip() else None,
        reading_time=_minutes(record["reading_time"]) if record["reading_time"].strip() else None,
        claps=_count(record["claps"], "claps") if record["claps"].strip() else 0,
    )


def _hn(record: Record, notes: list[str]) -> Story:
    number = record["id"].strip()
    if not number.isascii() or not number.isdigit():
        raise _Reject(f"id must be a number, got {number!r}")
    created = record["created_at"].strip()
    try:
        local = datetime.strptime(created, "%m/%d/%Y %H:%M").replace(tzinfo=HN_TIMEZONE)
    except ValueError:
        raise _Reject(f"created_at must be like 8/4/2016 11:52, got {created!r}") from None
    link = record["url"].strip()
    if not link:
        notes.append("text posts: url is the HN item page, no publication")
    title = record["title"]
    kind = HN_KINDS.match(title)
    return Story(
        id=_key(f"hn:{number}", "id"),
        author=_key("hn:" + record["author"].strip(), "author"),
        title=title,
        url=link or HN_ITEM_URL.format(id=number),
        tags=(f"{kind.group(1).lower()}-hn",) if kind else (),
        publication=_host(link) if link else None,
        published_at=int(local.timestamp()),
        claps=_count(record["num_points"], "num_points"),
    )


def _medium(record: Record, notes: list[str]) -> Story:
    url = record["article_url"].strip()
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[::1/x": an IPv6 host not closed
        raise _Reject(f"article_url must be the http(s) URL of a story, got {url!r}") from None
    host = _host(url)
    segments = [segment for segment in parts.path.split("/") if segment]
    if parts.scheme not in ("http", "https") or host is None or not segments:
        raise _Reject(f"article_url must be the http(s) URL of a story, got {url!r}")
    first = unquote(segments[0])
    user = first[1:] if first.startswith("@") else None
    publication = (None if user else first) if host == "medium.com" else host
    if user:
        author = _readable_key("md:@", user)
    else:
        author = _readable_key("md:pub:", str(publication))
        notes.append("no named author: publication stand-in md:pub:<publication>")
    try:
        day = date.fromisoformat(record["date"].strip())
    except ValueError:
        raise _Reject(f"date must be YYYY-MM-DD, got {record['date']!r}") from None
    raw_tags = _literal_tags(record["tag_list"])
    if raw_tags == TDS_MENU:
        raw_tags = (ARCHIVE_TAG,)
        notes.append("towardsdatascience.com menu scraped as tags: tags = (data-science,)")
    return Story(
        id="md:" + hashlib.sha1(url.encode("utf-8")).hexdigest()[:12],
        author=author,
        title=record["title"],
        url=url,
        tags=_distinct(re.sub(r"\s+", "-", tag.strip().lower()) for tag in raw_tags),
        publication=publication,
        published_at=_midnight(day),
        reading_time=_minutes(record["reading_time"]),
        claps=_count(record["claps"], "claps"),
    )


def _reddit(record: Record, notes: list[str]) -> Story:
    subreddit = record["subreddit"].strip()
    if not subreddit:
        raise _Reject("subreddit is empty")
    author = record["author"].strip()
    if author in ("", "[deleted]"):
        author_key = _readable_key("rd:sub:", subreddit)
        notes.append("no named author: subreddit stand-in rd:sub:<subreddit>")
    else:
        author_key = _key("rd:" + author, "author")
    try:
        score = int(record["score"].strip())
    except ValueError:
        raise _Reject(f"score must be an integer, got {record['score']!r}") from None
    if not -_INT64 <= score < _INT64:  # the graph's INT64 (claps)
        raise _Reject(f"score must fit in 64 bits, got {record['score']!r}")
    if score < 0:
        notes.append("negative score: claps 0")
    try:
        created = float(record["created_utc"])
    except ValueError:
        created = math.nan
    if not (math.isfinite(created) and -_INT64 <= created < _INT64):
        raise _Reject(f"created_utc must be epoch seconds, got {record['created_utc']!r}")
    link = record["url"].strip()
    permalink = record["permalink"].strip()
    if not link and not permalink:
        raise _Reject("url and permalink are both empty")
    return Story(
        id=_key(record["id"], "id"),
        author=author_key,
        title=record["title"],
        url=link or REDDIT_SITE + permalink,
        tags=(REDDIT_TOPIC,),
        publication=f"r/{subreddit}",
        published_at=math.floor(created),
        claps=max(score, 0),
    )


# -- field rules ------------------------------------------------------------------

_INT64: Final = 2**63
"""Integers the graph stores (``INT64`` properties) are within ``-_INT64 .. _INT64 - 1``."""


def _key(value: str, what: str) -> str:
    key = value.strip()
    if not ID.fullmatch(key):
        raise _Reject(f"{what} must be {ID_RULE}, got {key!r}")
    return key


def _readable_key(prefix: str, name: str) -> str:
    """``prefix + name`` if that is a valid key, else ``prefix`` + 12 hex digits of SHA-1(name)."""
    key = prefix + name
    if ID.fullmatch(key):
        return key
    return prefix + hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]


def _count(value: str, what: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise _Reject(f"{what} must be a whole number >= 0, got {value!r}")
    return int(text)


def _minutes(value: str) -> float:
    try:
        minutes = float(value)
    except ValueError:
        raise _Reject(f"reading_time must be minutes, got {value!r}") from None
    if not math.isfinite(minutes) or minutes < 0:
        raise _Reject(f"reading_time must be finite and >= 0, got {value!r}")
    return minutes


def _midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _epoch(value: str) -> int:
    """Epoch seconds UTC from integer seconds, an ISO-8601 date or an ISO-8601 datetime."""
    text = value.strip()
    if re.fullmatch(r"[+-]?[0-9]{1,18}", text):
        return int(text)
    try:
        if len(text) == 10:
            return _midnight(date.fromisoformat(text))
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Reject(
            f"published_at must be an ISO-8601 date or datetime or epoch seconds, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp())


def _host(url: str) -> str | None:
    """The URL's host, lower-cased, without ``www.``; ``None`` if it has none."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.removeprefix("www.") if host else None


def _literal_tags(value: str) -> tuple[str, ...]:
    try:
        tags = ast.literal_eval(value.strip() or "[]")
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: {[]}
        raise _Reject(f"tag_list must be a Python list of strings, got {value[:80]!r}") from None
    if not isinstance(tags, list | tuple) or not all(isinstance(tag, str) for tag in tags):
        raise _Reject(f"tag_list must be a Python list of strings, got {value[:80]!r}")
    return tuple(tags)


def _distinct(tags: Iterable[str]) -> tuple[str, ...]:
    """Non-empty tags in first-seen order, each once."""
    return tuple(dict.fromkeys(tag for tag in tags if tag))
