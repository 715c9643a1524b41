"""The graph contract, run on every backend: embedded Ladybug and a real Neo4j.

Each Ladybug case gets a fresh database under ``tmp_path``. The Neo4j server
is shared by the whole test session, so each case works under its own
uuid-prefixed keys, filters its reads by that prefix and deletes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from stores.errors import BackendUnavailable, QueryError
from stores.graph import GraphStore, ImportSummary, Table
from stores.ladybug import LadybugGraph
from stores.neo4j import Neo4jGraph

Open = Callable[..., Awaitable[GraphStore]]
Keys = Callable[[str], str]

TITLE = "Graphs, «quoted» 'n' \"escaped\", \\ and a\nnewline"


@pytest.fixture(
    params=[
        "ladybug",
        pytest.param("neo4j", marks=pytest.mark.neo4j),
        pytest.param("neo4j-routing", marks=pytest.mark.neo4j),
    ]
)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The backend under test and where it lives: a path, a Bolt URL, or the same server
    through a ``neo4j://`` routing URL (the driver asks it for a routing table and sends
    reads to readers and writes to the writer, as a cluster would have them routed)."""
    if request.param == "ladybug":
        return "ladybug", str(tmp_path / "graph")
    url: str = request.getfixturevalue("neo4j_url")
    if request.param == "neo4j-routing":
        return "neo4j", "neo4j://" + url.split("://", 1)[1]
    return "neo4j", url


@pytest.fixture
async def open_graph(target: tuple[str, str]) -> AsyncIterator[Open]:
    """Opens the backend under test with its schema ensured; closes it afterwards."""
    opened: list[GraphStore] = []

    async def open_(*, query_timeout: float = 30.0) -> GraphStore:
        kind, where = target
        store: GraphStore
        if kind == "ladybug":
            store = await LadybugGraph.open(Path(where), query_timeout=query_timeout)
        else:
            store = await Neo4jGraph.open(where, query_timeout=query_timeout)
        opened.append(store)
        await store.ensure_schema()
        return store

    try:
        yield open_
    finally:
        for store in reversed(opened):
            await store.aclose()


@pytest.fixture
async def graph(open_graph: Open) -> GraphStore:
    """The backend under test, with default settings."""
    return await open_graph()


@pytest.fixture
def key() -> Keys:
    """Makes keys unique to this test: ``key("alice")`` → ``"<uuid>-alice"``."""
    prefix = uuid.uuid4().hex
    return lambda name: f"{prefix}-{name}"


async def test_ensure_schema_is_idempotent(graph: GraphStore, key: Keys) -> None:
    """Ensuring the schema again changes nothing and the store stays usable."""
    await graph.ensure_schema()
    await graph.ensure_schema()

    assert await graph.import_nodes("User", [key("a")]) == ImportSummary(created=1, existing=0)
    await graph.ping()


async def test_write_then_read_round_trips_parameters(graph: GraphStore, key: Keys) -> None:
    """String, int and list-of-strings parameters written are read back, and filter reads."""
    session = graph.session()
    written = await session.write(
        "CREATE (p:Post {id: $id, title: $title, claps: $claps, tags: $tags}) RETURN p.id AS id",
        {"id": key("p"), "title": TITLE, "claps": 42, "tags": ["a", "b"]},
    )
    rows = await session.read(
        "MATCH (p:Post) WHERE p.id = $id AND p.claps >= $min AND $tag IN p.tags "
        "RETURN p.title AS title, p.claps AS claps, p.tags AS tags",
        {"id": key("p"), "min": 40, "tag": "b"},
    )

    assert written == [{"id": key("p")}]
    assert rows == [{"title": TITLE, "claps": 42, "tags": ["a", "b"]}]


async def test_fetch_returns_value_rows_in_return_order(graph: GraphStore, key: Keys) -> None:
    """fetch gives the column names once and each row as a list of values, in RETURN order."""
    await graph.import_nodes("User", [key("b"), key("a")])
    session = graph.session()
    query = (
        "MATCH (u:User) WHERE u.id STARTS WITH $prefix "
        "RETURN u.id AS id, size(u.id) AS length ORDER BY id"
    )

    table = await session.fetch(query, {"prefix": key("")})
    empty = await session.fetch(query, {"prefix": key("none")})

    length = len(key("a"))
    assert table == Table(("id", "length"), [[key("a"), length], [key("b"), length]])
    assert table.column("id") == [key("a"), key("b")]
    assert table.dicts() == await session.read(query, {"prefix": key("")})
    assert empty == Table(("id", "length"), [])


# Neo4j only: Ladybug does not enforce read-only access (see stores/ladybug.py).
@pytest.mark.parametrize("target", [pytest.param("neo4j", marks=pytest.mark.neo4j)], indirect=True)
async def test_read_refuses_a_write(graph: GraphStore, key: Keys) -> None:
    """A write sent as a read is refused on Neo4j (read access) and writes nothing there."""
    session = graph.session()

    with pytest.raises(QueryError):
        await session.read("CREATE (u:User {id: $id}) RETURN u.id AS id", {"id": key("w")})
    assert await session.read("MATCH (u:User {id: $id}) RETURN u.id AS id", {"id": key("w")}) == []


async def test_list_parameter_selects_listed_nodes(graph: GraphStore, key: Keys) -> None:
    """A list-of-strings parameter in ``IN`` selects exactly the listed nodes."""
    await graph.import_nodes("User", [key(name) for name in "abcd"])

    rows = await graph.session().read(
        "MATCH (u:User) WHERE u.id IN $ids RETURN u.id AS id ORDER BY id",
        {"ids": [key("d"), key("b"), key("zz")]},
    )

    assert rows == [{"id": key("b")}, {"id": key("d")}]


async def test_order_by_skip_limit_pages_in_order(graph: GraphStore, key: Keys) -> None:
    """ORDER BY, SKIP and LIMIT with int parameters return one page of rows in order."""
    await graph.import_nodes("User", [key(f"{i:02d}") for i in range(10)])

    rows = await graph.session().read(
        "MATCH (u:User) WHERE u.id STARTS WITH $prefix "
        "RETURN u.id AS id ORDER BY id DESC SKIP $skip LIMIT $limit",
        {"prefix": key(""), "skip": 2, "limit": 3},
    )

    assert rows == [{"id": key("07")}, {"id": key("06")}, {"id": key("05")}]


async def test_follow_counts_with_optional_match(graph: GraphStore, key: Keys) -> None:
    """OPTIONAL MATCH counts zero followers and followings for a user with none."""
    await graph.import_nodes("User", [key("alone"), key("a"), key("b"), key("c")])
    await graph.import_relationships("FOLLOWS", [(key("a"), key("c")), (key("b"), key("c"))])
    session = graph.session()
    query = (
        "MATCH (u:User {id: $id}) "
        "OPTIONAL MATCH (f:User)-[:FOLLOWS]->(u) WITH u, count(f) AS followers "
        "OPTIONAL MATCH (u)-[:FOLLOWS]->(g:User) "
        "RETURN followers, count(g) AS following"
    )

    assert await session.read(query, {"id": key("alone")}) == [{"followers": 0, "following": 0}]
    assert await session.read(query, {"id": key("c")}) == [{"followers": 2, "following": 0}]
    assert await session.read(query, {"id": key("a")}) == [{"followers": 0, "following": 1}]


async def test_post_tags_round_trip(graph: GraphStore, key: Keys) -> None:
    """A Post's ``tags`` (STRING[]) keep their order; a whole node reads as its set properties."""
    session = graph.session()
    await session.write(
        "CREATE (:Post {id: $id, tags: $tags, reading_time: $minutes})",
        {"id": key("p"), "tags": ["zeta", "alpha", "zeta"], "minutes": 4.5},
    )

    rows = await session.read("MATCH (p:Post {id: $id}) RETURN p", {"id": key("p")})

    assert rows == [{"p": {"id": key("p"), "tags": ["zeta", "alpha", "zeta"], "reading_time": 4.5}}]


async def test_import_nodes_is_idempotent(graph: GraphStore, key: Keys) -> None:
    """Importing nodes twice creates them once; duplicates in the input count once."""
    keys = [key(f"u{i}") for i in range(50)]

    first = await graph.import_nodes("User", [*keys, keys[0], keys[1]])
    second = await graph.import_nodes("User", keys)
    rows = await graph.session().read(
        "MATCH (u:User) WHERE u.id STARTS WITH $prefix RETURN count(u) AS n", {"prefix": key("")}
    )

    assert first == ImportSummary(created=50, existing=0)
    assert second == ImportSummary(created=0, existing=50)
    assert rows == [{"n": 50}]


async def test_import_relationships_skips_duplicates(graph: GraphStore, key: Keys) -> None:
    """Relationship pairs repeated in the input or already stored are created once."""
    a, b, c = key("a"), key("b"), key("c")
    await graph.import_nodes("User", [a, b, c])

    first = await graph.import_relationships("FOLLOWS", [(a, b), (a, b), (b, c)])
    second = await graph.import_relationships("FOLLOWS", [(a, b), (c, a), (c, a)])
    rows = await graph.session().read(
        "MATCH (x:User)-[:FOLLOWS]->(y:User) WHERE x.id STARTS WITH $prefix "
        "RETURN x.id AS source, y.id AS target ORDER BY source, target",
        {"prefix": key("")},
    )

    assert first == ImportSummary(created=2, existing=0)
    assert second == ImportSummary(created=1, existing=1)
    assert rows == [
        {"source": a, "target": b},
        {"source": b, "target": c},
        {"source": c, "target": a},
    ]


async def test_import_relationships_with_properties(graph: GraphStore, key: Keys) -> None:
    """A relationship type with properties imports its pairs with the properties null."""
    await graph.import_nodes("User", [key("u")])
    await graph.import_nodes("Post", [key("p")])

    summary = await graph.import_relationships("READ", [(key("u"), key("p"))])
    rows = await graph.session().read(
        "MATCH (u:User {id: $id})-[r:READ]->(p:Post) RETURN p.id AS post, r.at AS at",
        {"id": key("u")},
    )

    assert summary == ImportSummary(created=1, existing=0)
    assert rows == [{"post": key("p"), "at": None}]


POST_COLUMNS = {
    "title": [TITLE, "", None],
    "tags": [["a, b", 'say "hi"', "[x]", " padded ", "", "'q'", "back\\slash"], [], None],
    "published_at": [-(2**63), 2**63 - 1, None],
    "reading_time": [4, 0.1, None],
    "claps": [0, 12, None],
}


async def test_import_nodes_with_properties_round_trips(graph: GraphStore, key: Keys) -> None:
    """Typed property columns (tricky strings and lists, int extremes, nulls) read back exactly."""
    posts = [key("p0"), key("p1"), key("p2")]

    summary = await graph.import_nodes("Post", posts, POST_COLUMNS)
    rows = await graph.session().read(
        "MATCH (p:Post) WHERE p.id STARTS WITH $prefix RETURN p ORDER BY p.id", {"prefix": key("")}
    )

    assert summary == ImportSummary(created=3, existing=0)
    assert [row["p"] for row in rows] == [
        {
            "id": posts[0],
            "title": TITLE,
            "tags": ["a, b", 'say "hi"', "[x]", " padded ", "", "'q'", "back\\slash"],
            "published_at": -(2**63),
            "reading_time": 4.0,
            "claps": 0,
        },
        {
            "id": posts[1],
            "title": "",
            "tags": [],
            "published_at": 2**63 - 1,
            "reading_time": 0.1,
            "claps": 12,
        },
        {"id": posts[2]},
    ]


async def test_import_scalar_properties_and_odd_keys(graph: GraphStore, key: Keys) -> None:
    """Scalar columns without lists, and keys holding commas, quotes and newlines, round-trip."""
    odd = [key('a, "b"\n\\c'), key("plain")]

    await graph.import_nodes("Topic", odd)
    await graph.import_nodes("Post", [key("p")], {"title": ['x,"y"\r\nz\\'], "claps": [3]})
    topics = await graph.session().read(
        "MATCH (t:Topic) WHERE t.name STARTS WITH $prefix RETURN t.name AS name ORDER BY name",
        {"prefix": key("")},
    )
    posts = await graph.session().read("MATCH (p:Post {id: $id}) RETURN p", {"id": key("p")})

    assert [row["name"] for row in topics] == sorted(odd)
    assert posts == [{"p": {"id": key("p"), "title": 'x,"y"\r\nz\\', "claps": 3}}]


async def test_import_keeps_stored_properties(graph: GraphStore, key: Keys) -> None:
    """Stored nodes and relationships keep their properties; the first of duplicates wins."""
    user, post = key("u"), key("p")
    await graph.import_nodes("User", [user])

    first = await graph.import_nodes("Post", [post, post], {"title": ["first", "second"]})
    again = await graph.import_nodes("Post", [post], {"title": ["changed"], "claps": [9]})
    read = await graph.import_relationships("READ", [(user, post), (user, post)], {"at": [1, 2]})
    reread = await graph.import_relationships("READ", [(user, post)], {"at": [3]})
    rows = await graph.session().read(
        "MATCH (u:User {id: $id})-[r:READ]->(p:Post) "
        "RETURN p.title AS title, p.claps AS claps, r.at AS at",
        {"id": user},
    )

    assert (first, again) == (ImportSummary(1, 0), ImportSummary(0, 1))
    assert (read, reread) == (ImportSummary(1, 0), ImportSummary(0, 1))
    assert rows == [{"title": "first", "claps": None, "at": 1}]


async def test_import_relationship_property_columns(graph: GraphStore, key: Keys) -> None:
    """A relationship property column is stored per pair, null where the value is None."""
    users, posts = [key("u0"), key("u1")], [key("p0"), key("p1")]
    await graph.import_nodes("User", users)
    await graph.import_nodes("Post", posts)
    pairs = [(users[0], posts[0]), (users[0], posts[1]), (users[1], posts[0])]

    summary = await graph.import_relationships("RECOMMENDED", pairs, {"at": [10, None, -5]})
    rows = await graph.session().read(
        "MATCH (u:User)-[r:RECOMMENDED]->(p:Post) WHERE u.id STARTS WITH $prefix "
        "RETURN u.id AS user, p.id AS post, r.at AS at ORDER BY user, post",
        {"prefix": key("")},
    )

    assert summary == ImportSummary(created=3, existing=0)
    assert [(row["user"], row["post"], row["at"]) for row in rows] == [
        (users[0], posts[0], 10),
        (users[0], posts[1], None),
        (users[1], posts[0], -5),
    ]


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"votes": [1]}, "no properties"),
        ({"claps": [1, 2]}, "column of 1"),
        ({"claps": ["1"]}, "expected an int"),
        ({"claps": [True]}, "expected an int"),
        ({"claps": [2**63]}, "INT64"),
        ({"reading_time": ["4"]}, "expected a float"),
        ({"tags": ["ab"]}, "list of str"),
        ({"tags": [["a", 1]]}, "list of str"),
        ({"title": [b"x"]}, "expected a str"),
        ({"title": "x"}, "column of 1"),
    ],
)
async def test_import_rejects_bad_property_columns(
    graph: GraphStore, key: Keys, properties: dict[str, Any], message: str
) -> None:
    """An undeclared, misaligned or mistyped property column raises ValueError, writing nothing."""
    with pytest.raises(ValueError, match=message):
        await graph.import_nodes("Post", [key("p")], properties)
    rows = await graph.session().read(
        "MATCH (p:Post {id: $id}) RETURN p.id AS id", {"id": key("p")}
    )

    assert rows == []


async def test_import_relationships_requires_end_nodes(graph: GraphStore, key: Keys) -> None:
    """An import with a missing end node raises QueryError naming it and writes nothing."""
    await graph.import_nodes("User", [key("a"), key("b")])

    with pytest.raises(QueryError, match=key("ghost")):
        await graph.import_relationships(
            "FOLLOWS", [(key("a"), key("b")), (key("b"), key("ghost"))]
        )
    rows = await graph.session().read(
        "MATCH (x:User {id: $id}) OPTIONAL MATCH (x)-[:FOLLOWS]->(y:User) RETURN count(y) AS n",
        {"id": key("a")},
    )

    assert rows == [{"n": 0}]


async def test_import_rejects_empty_keys(graph: GraphStore, key: Keys) -> None:
    """Empty keys are refused with ValueError before anything is written."""
    with pytest.raises(ValueError, match="non-empty"):
        await graph.import_nodes("User", [key("a"), ""])
    with pytest.raises(ValueError, match="non-empty"):
        await graph.import_relationships("FOLLOWS", [(key("a"), "")])


async def test_syntax_error_is_query_error(graph: GraphStore) -> None:
    """A query the backend cannot parse raises QueryError on reads and writes."""
    session = graph.session()

    with pytest.raises(QueryError):
        await session.read("MATCH (u:User RETURN u")
    with pytest.raises(QueryError):
        await session.write("CREATE (u:User {id: )")


async def test_query_past_timeout_is_query_error(open_graph: Open) -> None:
    """A query running past the server-side timeout is stopped and raises QueryError."""
    graph = await open_graph(query_timeout=0.2)

    with trio.fail_after(20), pytest.raises(QueryError):
        await graph.session().read(
            "UNWIND range(1, 100000) AS a UNWIND range(1, 100000) AS b RETURN sum(a * b) AS s"
        )


async def test_a_session_serves_again_after_a_timeout(open_graph: Open) -> None:
    """The query after one stopped by the timeout runs to its answer on the same session."""
    graph = await open_graph(query_timeout=0.2)
    session = graph.session()
    slow = "UNWIND range(1, 100000) AS a UNWIND range(1, 100000) AS b RETURN sum(a * b) AS s"

    with trio.fail_after(20), pytest.raises(QueryError):
        await session.fetch(slow)
    table = await session.fetch("UNWIND range(1, 1000) AS x RETURN sum(x) AS s")

    assert table.rows == [[500500]]


async def test_ladybug_session_reuses_its_prepared_statements(tmp_path: Path) -> None:
    """A repeated query reuses the statement its session prepared; an int of another width
    (which the engine types differently) gets its own, and every call answers right."""
    graph = await LadybugGraph.open(tmp_path / "graph")
    try:
        session = graph.session()
        first = "UNWIND range(1, 1000) AS x RETURN x ORDER BY x LIMIT $n"

        answers = [len((await session.fetch(first, {"n": n})).rows) for n in (5, 7, 300, 5, 299)]
        prepared_after_limits = session.prepares
        await session.fetch("RETURN $word AS word", {"word": "a"})
        await session.fetch("RETURN $word AS word", {"word": "b"})

        assert answers == [5, 7, 300, 5, 299]
        assert prepared_after_limits == 2  # 5 and 7 are INT8, 300 and 299 INT16
        assert session.prepares == 3
    finally:
        await graph.aclose()


async def test_concurrent_writes_all_commit(graph: GraphStore, key: Keys) -> None:
    """Writes from several sessions at once all commit (Ladybug queues them, Neo4j runs them)."""
    sessions = [graph.session() for _ in range(3)]

    async def create(index: int) -> None:
        session = sessions[index % len(sessions)]
        await session.write("CREATE (:User {id: $id})", {"id": key(f"w{index}")})

    async with trio.open_nursery() as nursery:
        for index in range(30):
            nursery.start_soon(create, index)
    rows = await sessions[0].read(
        "MATCH (u:User) WHERE u.id STARTS WITH $prefix RETURN count(u) AS n", {"prefix": key("")}
    )

    assert rows == [{"n": 30}]


async def test_closed_session_and_store_refuse_calls(graph: GraphStore) -> None:
    """Closing is idempotent, and a closed session or store refuses further calls."""
    session = graph.session()
    await session.read("RETURN 1 AS one")
    session.close()
    session.close()

    with pytest.raises(trio.ClosedResourceError):
        await session.read("RETURN 1 AS one")
    await graph.aclose()
    await graph.aclose()
    with pytest.raises(trio.ClosedResourceError):
        graph.session()


async def test_ping_answers(graph: GraphStore) -> None:
    """A reachable backend answers ping."""
    await graph.ping()


async def test_unreachable_neo4j_is_backend_unavailable() -> None:
    """Ping on a Neo4j that refuses connections raises BackendUnavailable within seconds."""
    graph = await Neo4jGraph.open("bolt://127.0.0.1:1", connect_timeout=1.0)
    try:
        with trio.fail_after(5), pytest.raises(BackendUnavailable):
            await graph.ping()
    finally:
        await graph.aclose()
