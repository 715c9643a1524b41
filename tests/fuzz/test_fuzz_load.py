"""``starling load`` fuzzed: edge lists and story files with garbage lines, every format.

The contract (cli/load.py, datasets/importers.py, datasets/stories.py): a malformed
line or record is skipped and counted (``--strict``: the load stops at it with one
``error:`` line naming it), a file that cannot be read at all (no header) is one
``error:`` line, never a traceback; and every story or edge a reader keeps can be
written, so that one bad row never aborts a load half-way (the importer checks every
story before writing anything). Readers get random files from hypothesis; the command
gets a corpus of garbage files, and the graph is read back afterwards.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import pytest
import trio
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from actors.ids import ID
from cli import main
from datasets.importers import Header, MalformedInput, read_edge_list
from datasets.stories import READERS, StoryFormat, read_stories
from datasets.story_import import import_stories
from stores.graph import ImportSummary, PropertyColumns
from stores.ladybug import LadybugGraph
from stores.schema import SOCIAL_SCHEMA
from tests.fuzz.budget import fuzzing

# -- edge lists ----------------------------------------------------------------------------

ids = st.sampled_from(["1", "2", "3", "42", "alice", "bob", "u_1.x@y-z", "a" * 64])
bad_ids = st.sampled_from(["a" * 65, "a/b", "é", "\x00", "", "a b", "#x", "1;2"])
edge_lines = st.one_of(
    st.builds(
        lambda a, b, sep: f"{a}{sep}{b}".encode(),
        ids,
        ids,
        st.sampled_from([" ", "\t", ",", " , ", "  "]),
    ),
    st.builds(lambda a: f"{a} {a}".encode(), ids),  # a self-loop
    st.builds(lambda a, b: f"{a} {b}".encode(), ids | bad_ids, bad_ids),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"# a comment",
            b"% another",
            b"source target",
            b"FromNodeId\tToNodeId",
            b"1 2 3",
            b"1",
            b"1,2,0.5",
            b"\xff \xfe",
            b"1 \xc0\xaf",
            b"\x00 \x00",
            b"1\x002 3",
            b"9" * 100 + b" 1",
            b"\xef\xbb\xbf1 2",
        ]
    ),
    st.binary(max_size=20),
)
edge_files = st.builds(
    lambda lines, ending, last: ending.join(lines) + (ending if last else b""),
    st.lists(edge_lines, max_size=25),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.booleans(),
)


@fuzzing(300)
@given(edge_files, st.booleans(), st.sampled_from(["auto", "yes", "no"]))
def test_an_edge_list_of_garbage_is_read_line_by_line(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, undirected: bool, header: Header
) -> None:
    """Any edge list reads without an exception: every data line is the header, malformed, a self-loop, a duplicate or kept, the kept edges are distinct valid follows, and ``strict`` either stops at a malformed line or keeps the same edges."""  # noqa: E501
    path = tmp_path_factory.mktemp("edges") / "edges.txt"
    path.write_bytes(content)
    edges = read_edge_list(path, undirected=undirected, header=header)
    report = edges.report
    data_lines = sum(
        1 for line in io.BytesIO(content) if line.strip() and line.strip()[:1] not in (b"#", b"%")
    )
    skipped = (report.header is not None) + report.malformed + report.self_loops
    assert (data_lines - skipped) * (2 if undirected else 1) == report.duplicates + report.edges
    assert len(set(edges.pairs)) == len(edges.pairs) == report.edges
    assert all(ID.fullmatch(a) and ID.fullmatch(b) and a != b for a, b in edges.pairs)
    assert sorted({user for pair in edges.pairs for user in pair}) == edges.users
    assert len(report.examples) == min(report.malformed, 20)
    strictly = functools.partial(
        read_edge_list, path, undirected=undirected, strict=True, header=header
    )
    if report.malformed:
        with pytest.raises(MalformedInput) as stopped:
            strictly()
        assert stopped.value.line == report.examples[0][0], (stopped.value, report)
    else:
        assert strictly().pairs == edges.pairs


# -- story files ---------------------------------------------------------------------------

COLUMNS: Final[dict[StoryFormat, tuple[str, ...]]] = {
    "canonical": (
        "id",
        "author",
        "title",
        "tags",
        "publication",
        "published_at",
        "reading_time",
        "claps",
        "url",
    ),
    "hn": ("id", "title", "url", "num_points", "num_comments", "author", "created_at"),
    "medium": ("title", "article_url", "claps", "reading_time", "date", "tag_list"),
    "reddit": (
        "id",
        "title",
        "text",
        "author",
        "score",
        "upvote_ratio",
        "num_comments",
        "created_utc",
        "subreddit",
        "url",
        "permalink",
        "date",
    ),
}
NASTY_FIELDS: Final = [
    "", " ", "\x00", '"', "a\nb", "a,b", "é", "\udcff", "1e400", "1e300", "-1e300", "9" * 30,
    "9" * 19, "-1", "NaN", "inf", "-0", "[deleted]", "http://[::1/x", "https://", "{[]}",
    "{{}}", "[1,", "['a', 1]", "['a', 'b']", "0000-00-00", "2020-02-30", "9999-12-31",
    "0001-01-01T00:00:00+14:00", "8/4/2016 11:52", "13/45/2016 99:99", "1/1/0001 0:00",
    "1" * 70, "a" * 65, "x" * 300,
]  # fmt: skip
PLAUSIBLE: Final[dict[str, Any]] = {
    "id": st.sampled_from(["1", "42", "hn:1", "abc_9", "1rt3kyh"]),
    "author": st.sampled_from(["alice", "bob", "[deleted]", "é"]),
    "title": st.text(max_size=20),
    "tags": st.sampled_from(["", "a|b", "a||a", "|"]),
    "publication": st.sampled_from(["", "pub", "Medium"]),
    "published_at": st.sampled_from(["", "2020-01-01", "2020-01-01T10:00:00", "1600000000"]),
    "reading_time": st.sampled_from(["", "1", "4.5", "0"]),
    "claps": st.sampled_from(["", "0", "12"]),
    "url": st.sampled_from(
        ["", "https://example.com/x", "https://medium.com/@a/x", "https://medium.com/pub/x"]
    ),
    "num_points": st.sampled_from(["0", "5"]),
    "num_comments": st.sampled_from(["0", "3"]),
    "created_at": st.sampled_from(["8/4/2016 11:52", "11/6/2016 1:30"]),
    "article_url": st.sampled_from(
        [
            "https://towardsdatascience.com/x-1",
            "https://medium.com/@k3no/y",
            "https://medium.com/pub/z",
        ]
    ),
    "date": st.sampled_from(["2020-01-01", "2020-12-31"]),
    "tag_list": st.sampled_from(["[]", "['Data Science']", "['A', 'B']"]),
    "text": st.text(max_size=10),
    "score": st.sampled_from(["0", "-3", "100"]),
    "upvote_ratio": st.sampled_from(["0.5", "1"]),
    "created_utc": st.sampled_from(["1743000000.0", "1743000000"]),
    "subreddit": st.sampled_from(["australia", "", "a b"]),
    "permalink": st.sampled_from(["", "/r/australia/comments/1rt3kyh/x/"]),
}


nasty_values = st.sampled_from(NASTY_FIELDS) | st.text(max_size=8)


@st.composite
def records(draw: st.DrawFn, columns: tuple[str, ...]) -> list[str]:
    """A record of plausible values but for one to three columns: a nasty or random text
    (so that a bad value meets a record that gets as far as its column)."""
    row = [draw(PLAUSIBLE[column]) for column in columns]
    for _ in range(draw(st.integers(0, 3))):
        row[draw(st.integers(0, len(columns) - 1))] = draw(nasty_values)
    return row


@st.composite
def story_files(draw: st.DrawFn, format: StoryFormat) -> bytes:
    """A CSV of ``format``: its header, then records of every kind of wrong, some raw bytes."""
    columns = COLUMNS[format]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(columns)
    lines = [text.getvalue().encode()]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind < 7:
            row = draw(records(columns))
            if kind == 6:  # a field too many or too few
                row = row[:-1] if draw(st.booleans()) else [*row, "extra"]
            record = io.StringIO()
            csv.writer(record).writerow(row)
            lines.append(record.getvalue().encode("utf-8", "surrogateescape"))
        elif kind == 7:
            lines.append(draw(st.binary(max_size=30)) + b"\n")
        elif kind == 8:
            lines.append(b'"unterminated,' + b"x" * draw(st.integers(0, 5)) + b"\n")
        else:
            lines.append(b"\xff\xfe," * len(columns) + b"\n")
    return b"".join(lines)


class CheckingGraph:
    """A graph store that writes nothing and says everything was created: for
    :func:`import_stories`, which checks every story before it writes."""

    schema = SOCIAL_SCHEMA

    async def import_nodes(
        self, label: str, keys: Iterable[str], properties: PropertyColumns | None = None
    ) -> ImportSummary:
        await trio.lowlevel.checkpoint()
        return ImportSummary(created=len(list(keys)), existing=0)

    async def import_relationships(
        self,
        type_: str,
        pairs: Sequence[tuple[str, str]],
        properties: PropertyColumns | None = None,
    ) -> ImportSummary:
        await trio.lowlevel.checkpoint()
        return ImportSummary(created=len(pairs), existing=0)


def check_story_file(path: Path, format: StoryFormat) -> None:
    """Read ``path``: a clear :class:`MalformedInput` (no usable header), or a report whose
    counts add up and stories the importer takes; ``strict`` stops at the first malformed
    record or reads the same."""
    try:
        stories, report = read_stories(path, format)
    except MalformedInput as refused:
        refusal: str | None = refused.reason
    else:
        refusal = None
    if refusal is not None:
        assert re.search("no header|unreadable header|header lacks", refusal), refusal
        return
    assert report.rows == report.kept + report.duplicates + report.malformed, report
    assert len(stories) == report.kept
    trio.run(import_stories, CheckingGraph(), stories)  # type: ignore[arg-type]  # a part of GraphStore
    if report.malformed:
        with pytest.raises(MalformedInput) as stopped:
            read_stories(path, format, strict=True)
        assert stopped.value.line == report.examples[0][0], (stopped.value, report)
    else:
        assert read_stories(path, format, strict=True)[0] == stories


@pytest.mark.parametrize("format", sorted(READERS))
@fuzzing(100)
@given(data=st.data())
def test_a_story_file_of_garbage_is_read_record_by_record(
    tmp_path_factory: pytest.TempPathFactory, format: StoryFormat, data: st.DataObject
) -> None:
    """Any story file of a format reads without an exception but a clear header error: its records are kept, duplicates or malformed, every story kept can be imported, and ``strict`` stops at the first malformed record."""  # noqa: E501
    path = tmp_path_factory.mktemp("stories") / "stories.csv"
    path.write_bytes(data.draw(story_files(format)))
    check_story_file(path, format)


def _csv(format: StoryFormat, *rows: dict[str, str]) -> bytes:
    """A CSV of ``format`` with ``rows`` (missing fields: a plausible value)."""
    defaults = {
        "canonical": {"id": "p1", "author": "alice"},
        "hn": {"id": "1", "created_at": "8/4/2016 11:52", "num_points": "1", "author": "a"},
        "medium": {"article_url": "https://medium.com/@a/x", "date": "2020-01-01",
                   "claps": "1", "reading_time": "1", "tag_list": "[]"},
        "reddit": {"id": "r1", "author": "a", "score": "1", "created_utc": "1743000000",
                   "subreddit": "australia", "url": "https://example.com"},
    }[format]  # fmt: skip
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS[format], restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow(defaults | row)
    return text.getvalue().encode()


ANOTHER: Final[dict[StoryFormat, dict[str, str]]] = {
    "canonical": {"id": "p2"},
    "hn": {"id": "2"},
    "medium": {"article_url": "https://medium.com/@b/y"},
    "reddit": {"id": "r2"},
}
"""A good record of each format, another story than :func:`_csv`'s default."""
REGRESSIONS: Final = [
    pytest.param("medium", {"tag_list": "{[]}"}, id="medium-tags-unhashable"),
    pytest.param("medium", {"article_url": "http://[::1/x"}, id="medium-bad-ipv6"),
    pytest.param("hn", {"id": "1" * 70}, id="hn-id-over-64"),
    pytest.param("reddit", {"score": "9" * 30}, id="reddit-score-huge"),
    pytest.param("reddit", {"created_utc": "1e300"}, id="reddit-time-huge"),
    pytest.param("canonical", {"published_at": "9" * 19}, id="canonical-time-19-digits"),
]


@pytest.mark.parametrize(("format", "bad"), REGRESSIONS)
def test_one_bad_record_is_skipped_not_fatal(
    tmp_path: Path, format: StoryFormat, bad: dict[str, str]
) -> None:
    """A record the fuzzer found to break a load (a tag list that is a set of lists, a URL that is not one, an id or a number too long for the graph) is one malformed record, next to a good one that is kept and imports."""  # noqa: E501
    path = tmp_path / "stories.csv"
    path.write_bytes(_csv(format, bad, ANOTHER[format]))
    _, report = read_stories(path, format)
    assert (report.malformed, report.kept) == (1, 1), report
    check_story_file(path, format)


# -- the command -----------------------------------------------------------------------------


async def _count(directory: Path, label: str) -> int:
    graph = await LadybugGraph.open(directory / "graph")
    try:
        rows = await graph.session().read(f"MATCH (n:{label}) RETURN count(n) AS n")
        return int(rows[0]["n"])
    finally:
        await graph.aclose()


def _loaded(directory: Path, label: str) -> int:
    """How many ``label`` nodes the graph in ``directory`` holds (0 if there is none)."""
    if not (directory / "graph").exists():
        return 0
    return trio.run(_count, directory, label)


def _one_clear_line(output: str) -> str:
    """The ``error:`` line of a failed command: one line, no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


GRAPH_FILES: Final = [
    pytest.param(
        b"1 2\n1 2 3\n\xff \xfe\n2 3\n" + b"a" * 65 + b" 1\n3 3\n", False, 3, 3, id="garbage-lines"
    ),
    pytest.param(bytes(range(256)) * 8, False, 0, None, id="binary"),
    pytest.param(b"", False, 0, 0, id="empty"),
    pytest.param(b"\x00" * 1000, False, 0, 1, id="nul-bytes"),
    pytest.param(b"source target\r1 2\r\n2 3\n", False, 2, 1, id="cr-line-ending"),
    pytest.param(b"1 2\nnot an edge at all\n2 3\n", True, 0, None, id="strict-stops"),
]


@pytest.mark.parametrize(("content", "strict", "users", "malformed"), GRAPH_FILES)
def test_load_graph_of_garbage_skips_and_counts_or_stops_cleanly(
    runner: CliRunner,
    tmp_path: Path,
    content: bytes,
    strict: bool,
    users: int,
    malformed: int | None,
) -> None:
    """``starling load graph`` on a file of garbage loads the valid edges and prints how many lines it skipped, or with ``--strict`` prints one ``error:`` line naming the line and writes nothing."""  # noqa: E501
    path = tmp_path / "edges.txt"
    path.write_bytes(content)
    data = tmp_path / "data"
    args = ["load", "graph", str(path), "--data-dir", str(data)] + ["--strict"] * strict
    result = runner.invoke(main, args)
    if strict:
        assert result.exit_code == 1, result.output
        assert re.search(r"edges\.txt:2: ", _one_clear_line(result.output))
        assert _loaded(data, "User") == 0
        return
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    expected = read_edge_list(path).report.malformed if malformed is None else malformed
    assert re.search(rf"malformed lines skipped\s*\|?\s*{expected:,}\b", result.output), (
        result.output
    )
    assert _loaded(data, "User") == users


_BAD_RECORDS: Final[list[tuple[StoryFormat, list[dict[str, str]]]]] = [
    ("canonical", [{"id": "a" * 65}, {"claps": "-1"}, {"published_at": "2020-02-30"}]),
    ("hn", [{"created_at": "13/45/2016 99:99"}, {"num_points": "1e400"}]),
    ("medium", [{"tag_list": "{[]}"}, {"article_url": "http://[::1/x"}, {"date": ""}]),
    ("reddit", [{"score": "9" * 30}, {"created_utc": "nan"}, {"subreddit": ""}]),
]
"""Records each format must skip, behind a good one."""
STORY_FILES: Final = [
    pytest.param("canonical", b"", False, id="empty"),
    pytest.param("hn", b"\xff\xfe\x00garbage\n1,2,3\n", False, id="no-header"),
    pytest.param("medium", b'"unterminated header\n', False, id="unterminated-header"),
    pytest.param("reddit", b"id," + b"x" * 200_000 + b"\n", False, id="header-field-too-big"),
    *(
        pytest.param(
            format,
            _csv(format, {}, *bad),
            strict,
            id=f"{format}-{'strict' if strict else 'garbage'}",
        )
        for format, bad in _BAD_RECORDS
        for strict in (False, True)
    ),
]


@pytest.mark.parametrize(("format", "content", "strict"), STORY_FILES)
def test_load_stories_of_garbage_skips_and_counts_or_stops_cleanly(
    runner: CliRunner, tmp_path: Path, format: StoryFormat, content: bytes, strict: bool
) -> None:
    """``starling load stories`` on a file of garbage in each format loads the valid stories and says how many records it skipped, or prints one ``error:`` line (no usable header; the first malformed record with ``--strict``) and writes nothing."""  # noqa: E501
    path = tmp_path / "stories.csv"
    path.write_bytes(content)
    data = tmp_path / "data"
    args = ["load", "stories", str(path), "--format", format, "--data-dir", str(data)]
    result = runner.invoke(main, args + ["--strict"] * strict)
    try:
        stories, report = read_stories(path, format)
    except MalformedInput:
        assert result.exit_code == 1, result.output
        assert "header" in _one_clear_line(result.output)
        assert _loaded(data, "Post") == 0
        return
    if strict:
        assert result.exit_code == 1, result.output
        assert f"stories.csv:{report.examples[0][0]}:" in _one_clear_line(result.output)
        assert _loaded(data, "Post") == 0
        return
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert f"{report.kept:,} stories kept" in result.output
    assert f"{report.malformed:,} malformed rows skipped" in result.output
    assert report.malformed > 0
    assert report.kept == 1
    assert _loaded(data, "Post") == len(stories)
