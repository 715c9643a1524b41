"""Importers of real data into the graph store.

Edge lists (SNAP's format and its cousins): one edge per line, the first two
fields are the source and target ids, separated by whitespace or a comma;
lines starting with ``#`` or ``%`` are comments; a first line whose two fields
are not both numeric is a header. A user cannot follow themself, so
self-loops are skipped and counted (SNAP soc-Slashdot0902 has 78,303).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from actors.ids import ID, ID_RULE
from stores.graph import GraphStore, ImportSummary

#: Ids are opaque strings of 1-64 of these characters.
_SPLIT = re.compile(rb"[\s,]+")
MAX_REPORTED = 20
HEADER_WORDS = frozenset(
    {
        b"source", b"target", b"src", b"dst", b"from", b"to", b"follower", b"followee",
        b"fromnodeid", b"tonodeid", b"node1", b"node2", b"u", b"v", b"id1", b"id2",
    }
)  # fmt: skip
"""First-line fields that ``--header auto`` takes for column names whatever the ids are."""

Header = Literal["auto", "yes", "no"]
"""``yes``: the first data line is column names; ``no``: it is an edge; ``auto``: it is
column names if its fields are :data:`HEADER_WORDS`, or if they are not numbers while the
next line's are (SNAP-style numeric ids under a named header)."""


class MalformedInput(ValueError):
    """A line that cannot be read (raised with ``strict=True``).

    Attributes:
        path: the file.
        line: its 1-based line number.
        reason: what is wrong with it.
    """

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EdgeListReport:
    """What reading an edge list found.

    Attributes:
        lines: lines read, comments and header included.
        edges: distinct edges kept.
        users: distinct users named by the kept edges.
        self_loops: ``a a`` lines skipped.
        duplicates: repeated edges skipped.
        malformed: malformed lines skipped.
        examples: up to 20 ``(line number, reason)`` of the malformed lines.
        header: the header line skipped, ``(line number, its text)``, or ``None``.
    """

    lines: int
    edges: int
    users: int
    self_loops: int
    duplicates: int
    malformed: int
    examples: tuple[tuple[int, str], ...] = ()
    header: tuple[int, str] | None = None


@dataclass(frozen=True, slots=True)
class EdgeList:
    """The distinct edges of a file, the users they name, and the report."""

    pairs: list[tuple[str, str]] = field(repr=False)
    users: list[str] = field(repr=False)
    report: EdgeListReport


def _numeric(value: bytes) -> bool:
    return value.lstrip(b"-+").isdigit()


def _named(fields: list[bytes]) -> bool:
    """Whether the fields of a first line are column names (:data:`HEADER_WORDS`)."""
    return len(fields) == 2 and all(field.lower() in HEADER_WORDS for field in fields)


def _is_header(first: list[bytes], second: list[bytes] | None, header: Header) -> bool:
    """Whether the first data line is a header (:data:`Header`)."""
    if header != "auto":
        return header == "yes"
    if _named(first):
        return True
    words = len(first) == 2 and not (_numeric(first[0]) or _numeric(first[1]))
    return words and second is not None and len(second) == 2 and all(map(_numeric, second))


def read_edge_list(
    path: Path,
    *,
    undirected: bool = False,
    strict: bool = False,
    header: Header = "auto",
    on_progress: Callable[[int], None] | None = None,
) -> EdgeList:
    """Read an edge list file: ``source target`` per line, blank or separated by commas.

    Lines starting with ``#`` or ``%`` are comments. A line with one field, or
    more than two (a weight or a time column), is malformed: Starling's follows
    carry no weight.

    Args:
        path: the file (any line ending).
        undirected: store each edge in both directions.
        strict: raise on the first malformed line instead of skipping it.
        header: whether the first data line is column names (:data:`Header`).
        on_progress: called with the bytes read since the last call.

    Raises:
        MalformedInput: with ``strict``, the first malformed line.
        OSError: the file cannot be read.
    """
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []
    lines = self_loops = duplicates = malformed = 0
    examples: list[tuple[int, str]] = []
    skipped: tuple[int, str] | None = None
    first: tuple[int, list[bytes]] | None = None  # the first data line, until the second
    data_lines = 0
    pending_progress = 0

    def reject(number: int, reason: str) -> None:
        nonlocal malformed
        if strict:
            raise MalformedInput(path, number, reason)
        malformed += 1
        if len(examples) < MAX_REPORTED:
            examples.append((number, reason))

    def take(number: int, fields: list[bytes]) -> None:
        nonlocal self_loops, duplicates
        if len(fields) != 2:
            reject(number, f"expected two fields, source and target; got {len(fields)}")
            return
        try:
            source, target = fields[0].decode(), fields[1].decode()
        except UnicodeDecodeError:
            reject(number, "ids must be UTF-8")
            return
        if not (ID.fullmatch(source) and ID.fullmatch(target)):
            reject(number, f"ids must be {ID_RULE}")
            return
        if source == target:
            self_loops += 1
            return
        for edge in ((source, target), (target, source)) if undirected else ((source, target),):
            if edge in seen:
                duplicates += 1
            else:
                seen.add(edge)
                pairs.append(edge)

    def settle(second: list[bytes] | None) -> None:
        """Decide about the first data line once the second is known (or there is none)."""
        nonlocal skipped
        assert first is not None
        number, fields = first
        if _is_header(fields, second, header):
            skipped = (number, b" ".join(fields).decode(errors="replace")[:80])
        else:
            take(number, fields)

    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            lines = number
            pending_progress += len(raw)
            if on_progress is not None and pending_progress >= 1 << 20:
                on_progress(pending_progress)
                pending_progress = 0
            line = raw.strip()
            if not line or line[:1] in (b"#", b"%"):
                continue
            fields = _SPLIT.split(line)
            data_lines += 1
            if data_lines == 1:
                first = (number, fields)
                continue
            if data_lines == 2:
                settle(fields)
            take(number, fields)
    if data_lines == 1:
        settle(None)
    if on_progress is not None and pending_progress:
        on_progress(pending_progress)
    users = sorted({user for pair in pairs for user in pair})
    report = EdgeListReport(
        lines=lines,
        edges=len(pairs),
        users=len(users),
        self_loops=self_loops,
        duplicates=duplicates,
        malformed=malformed,
        examples=tuple(examples),
        header=skipped,
    )
    return EdgeList(pairs, users, report)


@dataclass(frozen=True, slots=True)
class GraphImport:
    """What an edge-list import wrote: users and follows, created vs already present."""

    users: ImportSummary
    follows: ImportSummary


async def import_edge_list(store: GraphStore, edges: EdgeList) -> GraphImport:
    """Write the users and ``FOLLOWS`` edges of ``edges`` through the bulk path.

    Idempotent: what is already stored is skipped.
    """
    users = await store.import_nodes("User", edges.users)
    follows = await store.import_relationships("FOLLOWS", edges.pairs)
    return GraphImport(users, follows)
