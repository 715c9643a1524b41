"""The edge-list importer: parsing rules, and a real load of SNAP Slashdot into Ladybug."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from datasets.importers import MalformedInput, import_edge_list, read_edge_list
from stores.ladybug import LadybugGraph

SAMPLE = """\
# a comment
% another comment
source,target
1,2
1 3
2\t3\r
3 3
1 2
4
bad id! 5
2,1,extra,fields
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edges.txt"
    path.write_text(text)
    return path


def test_parsing_rules(tmp_path: Path) -> None:
    """Comments and the header are skipped; self-loops, duplicates and bad lines (one field,
    a bad id, more than two fields) are counted."""
    edges = read_edge_list(write(tmp_path, SAMPLE))
    assert edges.pairs == [("1", "2"), ("1", "3"), ("2", "3")]
    assert edges.users == ["1", "2", "3"]
    report = edges.report
    assert report.header == (3, "source target")
    assert (report.self_loops, report.duplicates, report.malformed) == (1, 1, 3)
    assert [number for number, _ in report.examples] == [9, 10, 11]
    assert report.examples[2][1] == "expected two fields, source and target; got 4"
    assert report.lines == 11


@pytest.mark.parametrize(
    ("text", "header", "follows", "skipped"),
    [
        ("alice bob\nbob carol\n", "auto", 2, None),
        ("source target\nalice bob\n", "auto", 1, (1, "source target")),
        ("FromNodeId\tToNodeId\n1\t2\n", "auto", 1, (1, "FromNodeId ToNodeId")),
        ("who whom\n1 2\n2 3\n", "auto", 2, (1, "who whom")),
        ("alice bob\n", "auto", 1, None),
        ("alice bob\nbob carol\n", "yes", 1, (1, "alice bob")),
        ("source target\n1 2\n", "no", 2, None),
    ],
)
def test_header_auto_yes_no(
    tmp_path: Path, text: str, header: Any, follows: int, skipped: tuple[int, str] | None
) -> None:
    """auto skips column names (known words, or words above numeric ids) and keeps an edge of
    named ids; yes always skips the first line; no never does; the report names the line."""
    edges = read_edge_list(write(tmp_path, text), header=header)
    assert len(edges.pairs) == follows
    assert edges.report.header == skipped
    assert edges.report.malformed == 0


def test_undirected_stores_both_directions(tmp_path: Path) -> None:
    """With undirected=True each edge is kept both ways, once."""
    edges = read_edge_list(write(tmp_path, "1 2\n2 1\n"), undirected=True)
    assert sorted(edges.pairs) == [("1", "2"), ("2", "1")]
    assert edges.report.duplicates == 2


def test_strict_stops_at_the_first_malformed_line(tmp_path: Path) -> None:
    """With strict=True the first malformed line raises with its number."""
    with pytest.raises(MalformedInput, match=r"edges.txt:9: expected two fields"):
        read_edge_list(write(tmp_path, SAMPLE), strict=True)


def test_progress_reports_every_byte(tmp_path: Path) -> None:
    """The progress callback is told every byte read, in total."""
    path = write(tmp_path, SAMPLE)
    seen: list[int] = []
    read_edge_list(path, on_progress=seen.append)
    assert sum(seen) == path.stat().st_size


@pytest.mark.slow
async def test_slashdot_loads_completely_and_idempotently(
    slashdot_dir: Path, data_dir: Path
) -> None:
    """Real SNAP Slashdot loads every edge but the self-loops, and a reload adds nothing."""
    edges = read_edge_list(data_dir / "soc-Slashdot0902.txt")
    assert (edges.report.users, edges.report.edges, edges.report.self_loops) == (
        82_168,
        870_161,
        78_303,
    )
    graph = await LadybugGraph.open(slashdot_dir / "graph")
    try:
        await graph.ensure_schema()
        again = await import_edge_list(graph, edges)
        assert (again.users.created, again.follows.created) == (0, 0)
        assert (again.users.existing, again.follows.existing) == (82_168, 870_161)
        rows = await graph.session().read("MATCH (:User)-[f:FOLLOWS]->(:User) RETURN count(f) AS n")
        assert rows[0]["n"] == 870_161
    finally:
        await graph.aclose()


def test_load_graph_says_which_line_it_took_for_a_header(tmp_path: Path) -> None:
    """``starling load graph`` keeps both follows of named ids (no header taken), and says
    "skipped line 1 as a header" when --header auto takes one."""
    from click.testing import CliRunner

    from cli import main

    runner = CliRunner()
    names = write(tmp_path, "alice bob\nbob carol\n")
    plain = runner.invoke(main, ["load", "graph", str(names), "--data-dir", str(tmp_path / "a")])
    assert plain.exit_code == 0, plain.output
    assert "as a header" not in plain.output
    assert re.search(r"follows created\W+2\b", plain.output), plain.output

    named = tmp_path / "named.csv"
    named.write_text("source,target\nalice,bob\n")
    result = runner.invoke(main, ["load", "graph", str(named), "--data-dir", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "skipped line 1 as a header (--header auto): 'source target'" in result.output
