"""Neo4j adapter of the graph port, over the official (blocking) driver.

Threads: every unit of work is one ``trio.to_thread.run_sync`` call under a
``CapacityLimiter`` as large as the driver's connection pool. Inside that call
a driver session is opened, the work runs, and the session is closed: driver
sessions never cross threads, and a :class:`Neo4jSession` holds no driver
object at all (keeping one session per reader saved about 10 µs of a
300 µs read, not worth a session that wanders between worker threads).

Session reads (:meth:`Neo4jSession.read`, :meth:`Neo4jSession.fetch`) run as
one auto-commit query (``Session.run``) in ``READ`` access mode, so
``neo4j://`` routes them to readers and the server refuses a write in them.
That is one round trip (``RUN`` + ``PULL``) where a managed read transaction
takes two (``BEGIN`` + ``RUN`` + ``PULL``, then ``COMMIT``): a ``COUNTS`` read
took 309 µs of client CPU instead of 565 µs on the test server. The query text
is the caller's constant, so the server's plan cache serves every call after
the first, and :meth:`~Neo4jSession.fetch` takes the rows as the driver
decodes them (``Result.values()``), without a dict per row. Writes, imports
and schema changes run in managed transactions (``execute_write``).

Timeouts: each query or transaction carries a server-side timeout
(``neo4j.Query(timeout=...)``, ``neo4j.unit_of_work(timeout=...)``);
connecting and taking a connection from the pool are bounded by
``connect_timeout``; the driver retries a managed transaction's transient
failures (deadlocks, a leader switch, a stale pooled connection) for at most
``max_retry_time`` seconds. An auto-commit read is not retried: it fails once
(``BackendUnavailable``; reads are idempotent, the caller may ask again),
and after a server restart the pool discards the connections the server
dropped, so the next read takes a fresh one (tests/test_social_outage.py).
trio does not abandon a worker thread, so a cancelled caller waits for its
query to end, within those bounds.

Errors: ``ServiceUnavailable`` / ``SessionExpired`` become
:class:`~stores.errors.BackendUnavailable`; ``AuthError`` and driver
configuration errors become :class:`~stores.errors.ConfigError`; every other
``Neo4jError`` or ``DriverError`` becomes :class:`~stores.errors.QueryError`.

Dialect notes (what differs from :mod:`stores.ladybug`): the graph is
schema-free, so :meth:`Neo4jGraph.ensure_schema` only creates a uniqueness
constraint on each label's key (which also makes the ``MERGE`` of the bulk
import an index lookup). A relationship returned whole is a
``(start, type, end)`` tuple: return its properties instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import neo4j
import trio
from neo4j.exceptions import (
    AuthError,
    ConfigurationError,
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
)

from stores.errors import BackendUnavailable, ConfigError, QueryError
from stores.graph import (
    ImportSummary,
    Params,
    PropertyColumns,
    Row,
    Table,
    check_keys,
    check_properties,
    first_indices,
    quote_name,
)
from stores.schema import SOCIAL_SCHEMA, GraphSchema, NodeType, RelationshipType

__all__ = ["Neo4jGraph", "Neo4jSession"]

T = TypeVar("T")

BATCH_SIZE = 10_000
"""Rows per transaction in the bulk import."""

SCHEMES = frozenset({"bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"})
"""Bolt URL schemes (the driver's preview HTTP support is left out)."""

Access = Literal["READ", "WRITE"]


class Neo4jGraph:
    """A graph store on a Neo4j server or cluster; implements ``GraphStore``.

    Open it with :meth:`open`; close it with :meth:`aclose`.

    Attributes:
        schema: the node and relationship types of this graph.
    """

    dialect = "neo4j"

    def __init__(
        self,
        driver: neo4j.Driver,
        url: str,
        *,
        database: str | None,
        schema: GraphSchema,
        max_connections: int,
        query_timeout: float,
    ) -> None:
        """Wrap a driver; use :meth:`open` instead."""
        self.schema = schema
        self._driver = driver
        self._url = url
        self._database = database
        self._limiter = trio.CapacityLimiter(max_connections)
        self._query_timeout = query_timeout
        self._in_flight = 0
        self._idle = trio.Event()
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        schema: GraphSchema = SOCIAL_SCHEMA,
        max_connections: int = 16,
        query_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_retry_time: float = 5.0,
    ) -> Neo4jGraph:
        """Create the driver; it connects on first use (see :meth:`ping`).

        Args:
            url: ``bolt://host:port`` (one server) or ``neo4j://host:port``
                (routing), without credentials: they go in ``user`` / ``password``.
            user: user name; ``None`` connects without authentication.
            password: the user's password.
            database: database name; ``None`` uses the server's default.
            schema: the graph's node and relationship types.
            max_connections: connection pool size, and queries run at once.
            query_timeout: server-side limit of each transaction, in seconds.
            connect_timeout: limit on opening a connection or taking one from
                the pool, in seconds.
            max_retry_time: how long the driver retries a transaction after a
                transient failure, in seconds (0: no retry).

        Raises:
            ConfigError: the URL (one with credentials included) or a setting is
                not usable.
        """
        if max_connections < 1 or query_timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("max_connections must be >= 1, timeouts > 0")
        if urlsplit(url).scheme not in SCHEMES:
            raise ConfigError(f"Neo4j URL scheme must be one of {sorted(SCHEMES)}: {url}")
        if "@" in urlsplit(url).netloc:
            # The driver refuses userinfo too, but echoes the whole URL.
            raise ConfigError("Neo4j URL: pass credentials as user/password, not in the URL")
        auth = neo4j.basic_auth(user, password or "") if user is not None else None

        def create() -> neo4j.Driver:
            return neo4j.GraphDatabase.driver(
                url,
                auth=auth,
                max_connection_pool_size=max_connections,
                connection_timeout=connect_timeout,
                connection_acquisition_timeout=connect_timeout,
                max_transaction_retry_time=max_retry_time,
            )

        try:
            driver = await trio.to_thread.run_sync(create)
        except (ConfigurationError, ValueError) as exc:
            raise ConfigError(f"{url}: {exc}") from exc
        return cls(
            driver,
            url,
            database=database,
            schema=schema,
            max_connections=max_connections,
            query_timeout=query_timeout,
        )

    @property
    def url(self) -> str:
        """The URL this store was opened with, without credentials."""
        return self._url

    def session(self) -> Neo4jSession:
        """Open a session for one actor (it holds no connection between calls).

        Raises:
            trio.ClosedResourceError: the store is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("graph store is closed")
        return Neo4jSession(self)

    async def ensure_schema(self) -> None:
        """Create a uniqueness constraint on each node label's key, if missing.

        Raises:
            QueryError: the server refused (for example, duplicate keys exist).
            BackendUnavailable: the server cannot be reached.
        """
        for node in self.schema.nodes:
            await self._query(
                f"CREATE CONSTRAINT IF NOT EXISTS FOR (n:{quote_name(node.label)}) "
                f"REQUIRE n.{quote_name(node.key)} IS UNIQUE",
                {},
                "WRITE",
            )

    async def ping(self) -> None:
        """Run ``RETURN 1`` in an auto-commit transaction (no driver retry).

        Raises:
            BackendUnavailable: the server cannot be reached.
            ConfigError: the server refused the credentials.
        """

        def call() -> None:
            with self._driver.session(database=self._database) as session:
                session.run(neo4j.Query("RETURN 1", timeout=self._query_timeout)).consume()

        await self._run(call)

    async def import_nodes(
        self,
        label: str,
        keys: Iterable[str],
        properties: PropertyColumns | None = None,
    ) -> ImportSummary:
        """``MERGE`` the nodes of ``label``, ``BATCH_SIZE`` keys per transaction.

        Properties are set ``ON CREATE`` only: a stored node keeps its own.
        Call :meth:`ensure_schema` first: without the key constraint each
        ``MERGE`` scans the label. A failure part-way leaves the earlier
        batches written; importing again completes the load.

        Args:
            label: a node label declared in :attr:`schema`.
            keys: primary-key values, non-empty strings; duplicates are ignored
                (the first one and its properties win).
            properties: columns of declared properties aligned with ``keys``
                (see :func:`stores.graph.check_properties`); others are null.

        Returns:
            ``created + existing`` is the number of distinct keys.

        Raises:
            KeyError: ``label`` is not declared in the schema.
            ValueError: a key is not a non-empty string, or a property column
                does not fit its declaration.
            QueryError: the server rejected a batch.
            BackendUnavailable: the server cannot be reached.
        """
        node = self.schema.node(label)
        rows = await trio.to_thread.run_sync(_node_rows, node, keys, properties)
        key = "r[0]" if properties else "r"  # rows: [key, {property: value}] or key
        cypher = (
            f"UNWIND $rows AS r "
            f"MERGE (n:{quote_name(node.label)} {{{quote_name(node.key)}: {key}}})"
        )
        if properties:
            cypher += " ON CREATE SET n += r[1]"
        created = 0
        for batch in _batches(rows):
            created += await self._count(cypher, batch, "nodes_created")
        return ImportSummary(created=created, existing=len(rows) - created)

    async def import_relationships(
        self,
        type_: str,
        pairs: Sequence[tuple[str, str]],
        properties: PropertyColumns | None = None,
    ) -> ImportSummary:
        """``MERGE`` the relationships ``(source)-[:type_]->(target)``, in batches.

        Every end node is checked before anything is written, so a missing
        one fails the import as it does on Ladybug. Properties are set ``ON
        CREATE`` only. A failure part-way through the writes leaves the
        earlier batches written; importing again completes the load.

        Args:
            type_: a relationship type declared in :attr:`schema`.
            pairs: ``(source key, target key)``; duplicates are ignored (the
                first one and its properties win).
            properties: columns of declared properties aligned with ``pairs``;
                others are null.

        Returns:
            ``created + existing`` is the number of distinct pairs.

        Raises:
            KeyError: ``type_`` is not declared in the schema.
            ValueError: a key is not a non-empty string, or a property column
                does not fit its declaration.
            QueryError: an end node is missing (the message names it), or the
                server rejected a batch.
            BackendUnavailable: the server cannot be reached.
        """
        rel = self.schema.relationship(type_)
        source, target = self.schema.node(rel.source), self.schema.node(rel.target)
        rows, sources, targets = await trio.to_thread.run_sync(
            _relationship_rows, rel, pairs, properties
        )
        await self._check_endpoints(rel, ((source, sources), (target, targets)))
        cypher = (
            f"UNWIND $rows AS r "
            f"MATCH (a:{quote_name(source.label)} {{{quote_name(source.key)}: r[0]}}) "
            f"MATCH (b:{quote_name(target.label)} {{{quote_name(target.key)}: r[1]}}) "
            f"MERGE (a)-[x:{quote_name(rel.type)}]->(b)"
        )
        if properties:
            cypher += " ON CREATE SET x += r[2]"
        created = 0
        for batch in _batches(rows):
            created += await self._count(cypher, batch, "relationships_created")
        return ImportSummary(created=created, existing=len(rows) - created)

    async def aclose(self) -> None:
        """Wait for the calls in flight, then close the driver (idempotent).

        Calls made after it starts raise ``trio.ClosedResourceError``.
        """
        if self._closed:
            return
        self._closed = True
        if self._in_flight:
            await self._idle.wait()
        await trio.to_thread.run_sync(self._driver.close)

    # -- internals -------------------------------------------------------

    async def _read(
        self, cypher: str, params: dict[str, Any], shape: Callable[[neo4j.Result], T]
    ) -> T:
        """Run one auto-commit read (see the module docstring) and ``shape`` its result."""
        query = neo4j.Query(cypher, timeout=self._query_timeout)

        def call() -> T:
            with self._driver.session(
                database=self._database, default_access_mode=neo4j.READ_ACCESS
            ) as session:
                return shape(session.run(query, params))

        return await self._run(call)

    async def _query(self, cypher: str, params: dict[str, Any], access: Access) -> list[Row]:
        """Run one managed transaction and return its rows as dicts."""

        @neo4j.unit_of_work(timeout=self._query_timeout)
        def work(tx: neo4j.ManagedTransaction) -> list[Row]:
            return tx.run(cypher, params).data()

        return await self._run(lambda: self._transaction(work, access))

    async def _count(self, cypher: str, rows: list[Any], counter: str) -> int:
        """Write ``UNWIND $rows`` in one transaction; return one of its counters."""

        @neo4j.unit_of_work(timeout=self._query_timeout)
        def work(tx: neo4j.ManagedTransaction) -> int:
            counters = tx.run(cypher, {"rows": rows}).consume().counters
            return int(getattr(counters, counter))

        return await self._run(lambda: self._transaction(work, "WRITE"))

    async def _check_endpoints(
        self, rel: RelationshipType, ends: Iterable[tuple[NodeType, list[str]]]
    ) -> None:
        """Raise QueryError naming the first missing end node, and how many are missing.

        Args:
            rel: the relationship type being imported.
            ends: each end's node type and its distinct keys.
        """
        missing: list[tuple[str, str]] = []
        for node, keys in ends:
            cypher = (
                f"UNWIND $rows AS k "
                f"OPTIONAL MATCH (n:{quote_name(node.label)} {{{quote_name(node.key)}: k}}) "
                f"WITH k, n WHERE n IS NULL RETURN k"
            )
            for batch in _batches(keys):
                rows = await self._query(cypher, {"rows": batch}, "READ")
                missing += [(node.label, row["k"]) for row in rows]
        if missing:
            label, key = missing[0]
            raise QueryError(
                f"cannot import {rel.type}: no {label} node with key {key!r}"
                f" ({len(set(missing))} missing in all)"
            )

    def _transaction(self, work: Callable[[neo4j.ManagedTransaction], T], access: Access) -> T:
        """Run ``work`` in a managed transaction of a fresh session (worker thread)."""
        with self._driver.session(database=self._database) as session:
            if access == "READ":
                return session.execute_read(work)
            return session.execute_write(work)

    async def _run(self, call: Callable[[], T]) -> T:
        """Run ``call`` in a worker thread: the one way to the server.

        Raises:
            trio.ClosedResourceError: the store is closed.
            BackendUnavailable, ConfigError, QueryError: see the module docstring.
        """
        if self._closed:
            raise trio.ClosedResourceError("graph store is closed")
        if not self._in_flight:
            self._idle = trio.Event()
        self._in_flight += 1
        try:
            with _translated():
                return await trio.to_thread.run_sync(call, limiter=self._limiter)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()


class Neo4jSession:
    """One actor's handle on a :class:`Neo4jGraph`; implements ``GraphSession``.

    It holds no connection: each call takes one from the pool for its query
    or transaction, so calls may overlap.
    """

    def __init__(self, graph: Neo4jGraph) -> None:
        """Bind to ``graph``; use :meth:`Neo4jGraph.session` instead."""
        self._graph = graph
        self._closed = False

    async def read(self, cypher: str, params: Params | None = None) -> list[Row]:
        """Run a read query (auto-commit, read access) and return its rows as dicts.

        Raises:
            trio.ClosedResourceError: the session or its store is closed.
            QueryError: the server rejected the query (a write included), or
                it ran past the timeout.
            BackendUnavailable: the server cannot be reached.
        """
        if self._closed:
            raise trio.ClosedResourceError("graph session is closed")
        return await self._graph._read(cypher, dict(params or {}), _data)

    async def fetch(self, cypher: str, params: Params | None = None) -> Table:
        """Run a read query and return its columns and rows as the driver decodes them.

        Raises:
            trio.ClosedResourceError: the session or its store is closed.
            QueryError: the server rejected the query (a write included), or
                it ran past the timeout.
            BackendUnavailable: the server cannot be reached.
        """
        if self._closed:
            raise trio.ClosedResourceError("graph session is closed")
        return await self._graph._read(cypher, dict(params or {}), _table)

    async def write(self, cypher: str, params: Params | None = None) -> list[Row]:
        """Run a query in one write transaction and return its rows.

        Raises:
            trio.ClosedResourceError: the session or its store is closed.
            QueryError: the server rejected the query or it ran past the timeout.
            BackendUnavailable: the server cannot be reached.
        """
        if self._closed:
            raise trio.ClosedResourceError("graph session is closed")
        return await self._graph._query(cypher, dict(params or {}), "WRITE")

    def close(self) -> None:
        """Mark the session closed (idempotent); it holds nothing to release."""
        self._closed = True


def _data(result: neo4j.Result) -> list[Row]:
    """The rows as dicts (nodes as dicts of their properties), by the driver."""
    return result.data()


def _table(result: neo4j.Result) -> Table:
    """The columns and one list of values per row, by the driver."""
    columns = tuple(result.keys())
    return Table(columns, result.values())


@contextmanager
def _translated() -> Iterator[None]:
    """Translate the driver's exceptions into the store errors."""
    try:
        yield
    except (ServiceUnavailable, SessionExpired) as exc:
        raise BackendUnavailable(str(exc)) from exc
    except (AuthError, ConfigurationError) as exc:
        raise ConfigError(str(exc)) from exc
    except Neo4jError as exc:
        raise QueryError(f"{exc.code}: {exc.message}") from exc
    except DriverError as exc:
        raise QueryError(str(exc)) from exc


def _batches(items: list[T]) -> Iterator[list[T]]:
    for start in range(0, len(items), BATCH_SIZE):
        yield items[start : start + BATCH_SIZE]


def _node_rows(
    node: NodeType, keys: Iterable[str], properties: PropertyColumns | None
) -> list[Any]:
    """The distinct keys in first-seen order, as ``[key, {property: value}]`` with properties.

    CPU-bound: run it in a thread.

    Raises:
        ValueError: a key is not a non-empty string, or a property column does
            not fit its declaration.
    """
    given = list(keys)
    wanted = first_indices(given)
    check_keys(wanted)
    columns = check_properties(node.properties, properties, len(given), node.label)
    if not properties:
        return list(wanted)
    return [
        [key, {name: column[index] for name, column in columns.items()}]
        for key, index in wanted.items()
    ]


def _relationship_rows(
    rel: RelationshipType,
    pairs: Sequence[tuple[str, str]],
    properties: PropertyColumns | None,
) -> tuple[list[list[Any]], list[str], list[str]]:
    """The distinct pairs as ``[source, target]`` rows (plus ``{property: value}``
    with properties), and the distinct keys of each end.

    CPU-bound: run it in a thread.

    Raises:
        ValueError: a key is not a non-empty string, or a property column does
            not fit its declaration.
    """
    wanted = first_indices(pairs)
    check_keys(key for pair in wanted for key in pair)
    columns = check_properties(rel.properties, properties, len(pairs), rel.type)
    sources = list(dict.fromkeys(a for a, _ in wanted))
    targets = list(dict.fromkeys(b for _, b in wanted))
    if not properties:
        return [[a, b] for a, b in wanted], sources, targets
    rows: list[list[Any]] = [
        [a, b, {name: column[index] for name, column in columns.items()}]
        for (a, b), index in wanted.items()
    ]
    return rows, sources, targets
