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

from stores.graph import GraphStore, ImportSummary

#: Ids are opaque strings of 1-64 of these characters.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_SPLIT = re.compile(rb"[\s,]+")
MAX_REPORTED = 20


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
        header: whether a header line was skipped.
    """

    lines: int
    edges: int
    users: int
    self_loops: int
    duplicates: int
    malformed: int
    examples: tuple[tuple[int, str], ...] = ()
    header: bool = False


@dataclass(frozen=True, slots=True)
class EdgeList:
    """The distinct edges of a file, the users they name, and the report."""

    pairs: list[tuple[str, str]] = field(repr=False)
    users: list[str] = field(repr=False)
    report: EdgeListReport


def _numeric(value: bytes) -> bool:
    return value.lstrip(b"-+").isdigit()


def read_edge_list(
    path: Path,
    *,
    undirected: bool = False,
    strict: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> EdgeList:
    """Read an edge list file.

    Args:
        path: the file (any line ending).
        undirected: store each edge in both directions.
        strict: raise on the first malformed line instead of skipping it.
        on_progress: called with the bytes read since the last call.

    Raises:
        MalformedInput: with ``strict``, the first malformed line.
        OSError: the file cannot be read.
    """
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []
    lines = self_loops = duplicates = malformed = 0
    examples: list[tuple[int, str]] = []
    header = False
    first_data_line = True
    pending_progress = 0

    def reject(number: int, reason: str) -> None:
        nonlocal malformed
        if strict:
            raise MalformedInput(path, number, reason)
        malformed += 1
        if len(examples) < MAX_REPORTED:
            examples.append((number, reason))

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
            fields = _SPLIT.split(line, maxsplit=2)
            if first_data_line:
                first_data_line = False
                if len(fields) >= 2 and not (_numeric(fields[0]) and _numeric(fields[1])):
                    header = True
                    continue
            if len(fields) < 2:
                reject(number, "expected two fields: source and target")
                continue
            try:
                source, target = fields[0].decode(), fields[1].decode()
            except UnicodeDecodeError:
                reject(number, "ids must be UTF-8")
                continue
            if not (ID_PATTERN.fullmatch(source) and ID_PATTERN.fullmatch(target)):
                reject(number, "ids must be 1-64 characters of [A-Za-z0-9_.:@-]")
                continue
            if source == target:
                self_loops += 1
                continue
            for edge in ((source, target), (target, source)) if undirected else ((source, target),):
                if edge in seen:
                    duplicates += 1
                else:
                    seen.add(edge)
                    pairs.append(edge)
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
        header=header,
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
