"""Ladybug adapter of the graph port: an embedded Cypher database on disk.

Ladybug is the maintained fork of Kùzu. Its tables are typed, so
:meth:`LadybugGraph.ensure_schema` creates one node table per
:class:`~stores.schema.NodeType` (keyed by its string primary key) and one
relationship table per :class:`~stores.schema.RelationshipType`.

Threads: the engine blocks, so every unit of work is one
``trio.to_thread.run_sync`` call under the store's ``CapacityLimiter``. A
:class:`LadybugSession` owns one ``ladybug.Connection``, created lazily inside
its first thread call and used by one call at a time. Successive calls may
land on different worker threads: a connection keeps no thread-local state
(checked against ladybug 0.22 by creating nodes through one connection from
three threads in turn), so that is safe as long as calls never overlap, which
the session's lock guarantees. Store-level work (schema, ping, imports) opens
a short-lived connection inside its thread call and closes it there. trio
does not abandon a worker thread, so a cancelled caller waits for its query to
end: the query timeout bounds that wait.

Prepared statements: a session prepares each statement once on its
connection and keeps it (at most :data:`MAX_PREPARED`), keyed by the query
text and by how the engine types the parameters (see :func:`_binding`), so a
repeated query skips parsing and planning, and :meth:`LadybugSession.fetch`
returns the engine's rows as they come (lists), without a dict per row.

Transactions: each query runs in its own auto-committed transaction. The
engine allows one write transaction at a time and fails a second one at once
("Only one write transaction at a time is allowed"), so the store serializes
its writes with a ``trio.Lock``: concurrent writers wait instead. Reads run
beside a write on their own snapshot. ``COPY`` is atomic: a failed bulk load
leaves the table as it was.

Timeouts: every query stops after ``query_timeout`` seconds. Store-level work
uses the engine's own timeout (``Connection.set_query_timeout``); session
queries are stopped by the store's :class:`_Watchdog` instead, because the
engine's timeout sends each query through its task scheduler, which doubled
the CPU of a small read and serialized the readers (see :class:`_Watchdog`).

Dialect notes (what differs from :mod:`stores.neo4j`):

* A node returned whole becomes the dict of its non-null properties, as the
  Neo4j driver's ``Record.data()`` gives it; the engine's internal ``_ID`` /
  ``_LABEL`` / ``_SRC`` / ``_DST`` entries are dropped. A relationship returned
  whole becomes the dict of its properties, but Neo4j gives a
  ``(start, type, end)`` tuple: return relationship properties instead.
* Unaliased columns are named differently (``COUNT_STAR()`` here,
  ``count(*)`` there): alias every returned column.
* :meth:`LadybugSession.read` does not enforce read-only access (Neo4j does).
* Several statements separated by ``;`` run here, and the rows of the last one
  are returned; Neo4j rejects them. Send one statement per call.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Container, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import ladybug
import trio

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
from stores.schema import SOCIAL_SCHEMA, GraphSchema, NodeType, PropertyType, RelationshipType

__all__ = ["LadybugGraph", "LadybugSession"]

T = TypeVar("T")

SECONDS_TO_MS = 1000

# Schema property types → Ladybug column types (the names happen to agree today;
# the table keeps the mapping in one place if either side changes).
COLUMN_TYPES: dict[PropertyType, str] = {
    "STRING": "STRING",
    "INT64": "INT64",
    "DOUBLE": "DOUBLE",
    "STRING[]": "STRING[]",
    "TIMESTAMP": "TIMESTAMP",
}

MAX_PREPARED = 256
"""Prepared statements a session keeps on its connection; past it, the oldest is dropped."""

WATCHDOG_INTERVAL = 1.0
"""Seconds between the watchdog's looks at the running session queries (at most)."""

PAIR_BASE = 2**32
"""Packs the table offsets of a relationship's two ends into one INT64 (tables < 2**32 nodes)."""

# Keys of the dicts the engine returns for node and relationship values that
# are not properties.
_INTERNAL_KEYS = frozenset({"_ID", "_LABEL", "_SRC", "_DST"})


class LadybugGraph:
    """A graph store in a Ladybug database file; implements ``GraphStore``.

    Open it with :meth:`open`; close it with :meth:`aclose`.

    Attributes:
        schema: the node and relationship types of this graph.
    """

    dialect = "ladybug"

    def __init__(
        self,
        database: ladybug.Database,
        path: Path,
        *,
        schema: GraphSchema,
        max_threads: int,
        query_timeout: float,
    ) -> None:
        """Wrap an open database; use :meth:`open` instead."""
        self.schema = schema
        self._database = database
        self._path = path.absolute()
        self._limiter = trio.CapacityLimiter(max_threads)
        self._write_lock = trio.Lock()
        self._query_timeout = query_timeout
        self._sessions: set[LadybugSession] = set()
        self._watchdog = _Watchdog(query_timeout)
        self._in_flight = 0
        self._idle = trio.Event()
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        schema: GraphSchema = SOCIAL_SCHEMA,
        max_threads: int = 4,
        query_timeout: float = 30.0,
    ) -> LadybugGraph:
        """Open (or create) the database at ``path`` in a worker thread.

        Args:
            path: the database file (with ``.wal`` beside it); created if
                missing, its directory must exist.
            schema: the graph's node and relationship types.
            max_threads: how many queries may run at once (worker threads).
            query_timeout: server-side limit of each query, in seconds.

        Raises:
            BackendUnavailable: another process holds the database lock.
            ConfigError: ``path`` cannot be used as a database.
        """
        if max_threads < 1 or query_timeout <= 0:
            raise ConfigError("max_threads must be >= 1 and query_timeout > 0")
        try:
            database = await trio.to_thread.run_sync(ladybug.Database, str(path))
        except RuntimeError as exc:
            if "lock" in str(exc).lower():
                raise BackendUnavailable(f"{path}: {exc}") from exc
            raise ConfigError(f"{path}: {exc}") from exc
        return cls(
            database,
            path,
            schema=schema,
            max_threads=max_threads,
            query_timeout=query_timeout,
        )

    @property
    def url(self) -> str:
        """``ladybug://`` followed by the absolute database path."""
        return f"ladybug://{self._path.resolve()}"

    def session(self) -> LadybugSession:
        """Open a session (one connection, created on first use) for one actor.

        Raises:
            trio.ClosedResourceError: the store is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("graph store is closed")
        session = LadybugSession(self)
        self._sessions.add(session)
        return session

    async def ensure_schema(self) -> None:
        """Create the node and relationship tables that are missing.

        Existing tables are left as they are, even if their columns differ.

        Raises:
            QueryError: the engine rejected a table definition.
        """
        statements = [_node_table(node) for node in self.schema.nodes]
        statements += [_rel_table(rel) for rel in self.schema.relationships]

        def create(conn: ladybug.Connection) -> None:
            for statement in statements:
                _rows(conn, statement)

        await self._with_connection(create, write=True)

    async def ping(self) -> None:
        """Run ``RETURN 1`` on a fresh connection.

        Raises:
            BackendUnavailable: the database does not answer.
        """
        try:
            await self._with_connection(lambda conn: _rows(conn, "RETURN 1 AS ok"), write=False)
        except QueryError as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def import_nodes(
        self,
        label: str,
        keys: Iterable[str],
        properties: PropertyColumns | None = None,
    ) -> ImportSummary:
        """Create the nodes of ``label`` whose keys are missing, with one ``COPY``.

        Reads the label's stored keys and copies in the missing nodes (see
        :func:`_copy` for the bulk path); stored nodes keep their properties.
        Reads every key of the label, so it is meant for bulk loads, not for a
        few nodes. The whole import, checks and deduplication included, runs
        in one worker thread.

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
            QueryError: the engine rejected the load; nothing was written.
        """
        node = self.schema.node(label)

        def load(conn: ladybug.Connection) -> ImportSummary:
            given = list(keys)
            wanted = first_indices(given)
            check_keys(wanted)
            columns = check_properties(node.properties, properties, len(given), node.label)
            stored = set(
                _single(
                    conn,
                    f"MATCH (n:{quote_name(node.label)}) RETURN collect(n.{quote_name(node.key)})",
                )
            )
            missing = [index for key, index in wanted.items() if key not in stored]
            kinds: list[PropertyType] = ["STRING", *(kind for _, kind in node.properties)]
            values: list[list[Any]] = [[given[i] for i in missing]]
            values += [_column(columns.get(name), missing) for name, _ in node.properties]
            self._copy(conn, quote_name(node.label), kinds, values)
            return ImportSummary(created=len(missing), existing=len(wanted) - len(missing))

        return await self._with_connection(load, write=True)

    async def import_relationships(
        self,
        type_: str,
        pairs: Sequence[tuple[str, str]],
        properties: PropertyColumns | None = None,
    ) -> ImportSummary:
        """Create the missing relationships ``(source)-[:type_]->(target)``, with one ``COPY``.

        Checks every end node first, reads the pairs already stored for
        ``type_``, and copies in the missing ones (see :func:`_copy`); stored
        relationships keep their properties. Reads every node of both end
        labels and every relationship of ``type_``, so it is meant for bulk
        loads.

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
                engine rejected the load; either way nothing was written.
        """
        rel = self.schema.relationship(type_)
        source, target = self.schema.node(rel.source), self.schema.node(rel.target)

        def load(conn: ladybug.Connection) -> ImportSummary:
            wanted = first_indices(pairs)
            check_keys(key for pair in wanted for key in pair)
            columns = check_properties(rel.properties, properties, len(pairs), rel.type)
            sources = _offsets_of(conn, source)
            targets = sources if target == source else _offsets_of(conn, target)
            _check_endpoints(rel, list(wanted), sources, targets)
            stored = set(
                _single(
                    conn,
                    f"MATCH (a:{quote_name(source.label)})-[:{quote_name(rel.type)}]->"
                    f"(b:{quote_name(target.label)}) "
                    f"RETURN collect(offset(id(a)) * {PAIR_BASE} + offset(id(b)))",
                )
            )
            missing = [
                index
                for (a, b), index in wanted.items()
                if sources[a] * PAIR_BASE + targets[b] not in stored
            ]
            kinds: list[PropertyType] = ["STRING", "STRING", *(k for _, k in rel.properties)]
            values: list[list[Any]] = [
                [pairs[i][0] for i in missing],
                [pairs[i][1] for i in missing],
            ]
            values += [_column(columns.get(name), missing) for name, _ in rel.properties]
            self._copy(conn, quote_name(rel.type), kinds, values)
            return ImportSummary(created=len(missing), existing=len(wanted) - len(missing))

        return await self._with_connection(load, write=True)

    async def aclose(self) -> None:
        """Wait for the calls in flight, then close every session and the database.

        Idempotent. Calls made after it starts raise ``trio.ClosedResourceError``.
        """
        if self._closed:
            return
        self._closed = True
        if self._in_flight:
            await self._idle.wait()
        self._watchdog.stop()
        connections = [s._take_connection() for s in self._sessions]
        self._sessions.clear()

        def close() -> None:
            for conn in connections:
                if conn is not None:
                    conn.close()
            self._database.close()

        await trio.to_thread.run_sync(close)

    # -- internals -------------------------------------------------------

    def _copy(
        self,
        conn: ladybug.Connection,
        table: str,
        kinds: Sequence[PropertyType],
        columns: Sequence[Sequence[Any]],
    ) -> None:
        """``COPY table FROM`` the rows of ``columns`` (every column of the table, in order).

        Two bulk paths (worker thread, write lock held):

        * a temporary CSV file (fast: 300k relationships in about 1 s), quoted
          so that an empty string and null differ (``""`` vs an empty field)
          and read with ``escape='"'`` so a backslash is an ordinary character;
        * when a ``STRING[]`` column holds a value, ``COPY FROM (UNWIND $rows
          ...)`` from a query parameter: Ladybug's CSV list literal keeps the
          quotes of an element and trims its spaces, so a list of arbitrary
          strings has no CSV spelling (checked on ladybug 0.22). It is slower:
          the 36k real posts with every property take about 6 s, most of it
          converting the parameter. That COPY runs on a connection of its
          own: re-running the same parameterized ``COPY FROM`` query on one
          connection crashes ladybug 0.22 (segmentation fault).
        """
        if not columns[0]:
            return
        lists = any(
            kind == "STRING[]" and any(value is not None for value in column)
            for kind, column in zip(kinds, columns, strict=True)
        )
        if lists:
            fields = [f"c{index}" for index in range(len(columns))]
            rows = [dict(zip(fields, row, strict=True)) for row in zip(*columns, strict=True)]
            returned = ", ".join(f"r.{field}" for field in fields)
            with self._connect() as fresh:
                _rows(
                    fresh,
                    f"COPY {table} FROM (UNWIND $rows AS r RETURN {returned})",
                    {"rows": rows},
                )
            return
        formats = [_CSV_FORMATS[kind] for kind in kinds]
        with tempfile.TemporaryDirectory(prefix="starling-import-") as directory:
            path = Path(directory) / "rows.csv"
            with path.open("w", encoding="utf-8", newline="") as file:
                for row in zip(*columns, strict=True):
                    fields = [
                        "" if value is None else render(value)
                        for render, value in zip(formats, row, strict=True)
                    ]
                    file.write(",".join(fields) + "\n")
            literal = str(path).replace("\\", "\\\\").replace("'", "\\'")
            _rows(
                conn,
                f"COPY {table} FROM '{literal}' "
                "(header=false, parallel=false, escape='\"', auto_detect=false)",
            )

    def _connect(
        self, *, exec_threads: int | None = None, engine_timeout: bool = True
    ) -> ladybug.Connection:
        """Open a connection (in a worker thread).

        Args:
            exec_threads: engine threads one query may use (``None``: all cores).
                Sessions use 1: their queries are small and run concurrently
                across sessions, and letting each fan out over every core made
                4 concurrent readers 2-3x slower (720 vs 2,351 counts/s alone,
                2,111 vs 3,562 with four threads, measured on soc-Slashdot0902).
            engine_timeout: set the engine's query timeout; sessions pass
                ``False`` and are bounded by the :class:`_Watchdog` instead.
        """
        conn = ladybug.Connection(self._database)
        if engine_timeout:
            conn.set_query_timeout(round(self._query_timeout * SECONDS_TO_MS))
        if exec_threads is not None:
            conn.set_max_threads_for_exec(exec_threads)
        return conn

    async def _with_connection(self, work: Callable[[ladybug.Connection], T], *, write: bool) -> T:
        """Run ``work`` on a connection opened and closed inside one thread call."""

        def call() -> T:
            with self._connect() as conn:
                return work(conn)

        return await self._run(call, write=write)

    async def _run(self, call: Callable[[], T], *, write: bool) -> T:
        """Run ``call`` in a worker thread: the one way into the engine.

        Raises:
            trio.ClosedResourceError: the store is closed.
            QueryError: the engine raised (its message, plus the timeout when
                the query was interrupted).
        """
        if self._closed:
            raise trio.ClosedResourceError("graph store is closed")
        if not self._in_flight:
            self._idle = trio.Event()
        self._in_flight += 1
        try:
            if write:
                async with self._write_lock:
                    return await trio.to_thread.run_sync(call, limiter=self._limiter)
            return await trio.to_thread.run_sync(call, limiter=self._limiter)
        except RuntimeError as exc:
            message = str(exc)
            if message.startswith("Interrupted"):
                message = f"{message} (query timeout {self._query_timeout:g} s)"
            raise QueryError(message) from exc
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()


class LadybugSession:
    """One actor's connection to a :class:`LadybugGraph`; implements ``GraphSession``.

    The connection keeps the statements it prepared (see the module docstring).

    Attributes:
        prepares: statements prepared on this session's connections so far
            (a repeated query with parameters of the same types prepares none).
    """

    def __init__(self, graph: LadybugGraph) -> None:
        """Bind to ``graph``; use :meth:`LadybugGraph.session` instead."""
        self._graph = graph
        self._conn: ladybug.Connection | None = None
        # (text, _binding(params)) -> the statement prepared on _conn, or the text
        # itself when it cannot be prepared (several statements, an error the text
        # path reports); dropped with the connection.
        self._prepared: dict[tuple[str, tuple[tuple[str, str], ...]], Statement] = {}
        self._lock = trio.Lock()  # one call at a time on the connection
        self._closed = False
        self.prepares = 0

    async def read(self, cypher: str, params: Params | None = None) -> list[Row]:
        """Run a query and return its rows as dicts keyed by column name.

        Raises:
            trio.ClosedResourceError: the session or its store is closed.
            QueryError: the engine rejected the query or it ran past the timeout.
        """
        return await self._call(cypher, params, write=False, shape=_dicts)

    async def fetch(self, cypher: str, params: Params | None = None) -> Table:
        """Run a query and return its columns and rows as the engine gives them (lists).

        Raises:
            trio.ClosedResourceError: the session or its store is closed.
            QueryError: the engine rejected the query or it ran past the timeout.
        """
        return await self._call(cypher, params, write=False, shape=_table)

    async def write(self, cypher: str, params: Params | None = None) -> list[Row]:
        """Run a query in one write transaction and return its rows.

        Waits while another write of the same store runs.

        Raises:
            trio.ClosedResourceError: the session or its store is closed.
            QueryError: the engine rejected the query or it ran past the timeout.
        """
        return await self._call(cypher, params, write=True, shape=_dicts)

    def close(self) -> None:
        """Release the connection (idempotent); a call in flight releases it when done."""
        self._closed = True
        if not self._lock.locked():
            self._release()

    async def _call(
        self,
        cypher: str,
        params: Params | None,
        *,
        write: bool,
        shape: Callable[[Table], T],
    ) -> T:
        """One worker-thread call: prepare (first time), execute under the watchdog, shape."""
        async with self._lock:
            if self._closed:
                raise trio.ClosedResourceError("graph session is closed")
            arguments = dict(params or {})
            watchdog = self._graph._watchdog

            def call() -> T:
                conn = self._conn
                if conn is None:
                    conn = self._conn = self._graph._connect(exec_threads=1, engine_timeout=False)
                watchdog.enter(conn)
                try:
                    result = conn.execute(self._statement(conn, cypher, arguments), arguments)
                finally:
                    watchdog.leave(conn)
                return shape(_collect(result))

            try:
                return await self._graph._run(call, write=write)
            finally:
                if self._closed:
                    self._release()

    def _statement(
        self, conn: ladybug.Connection, cypher: str, arguments: dict[str, Any]
    ) -> Statement:
        """The statement prepared for ``cypher`` and these argument types (worker thread).

        Prepared with the arguments themselves, as the engine types them then.
        Text whose arguments cannot be keyed, or that does not prepare, runs as
        text (the engine's own path: its error, or its ``;``-separated statements).
        """
        binding = _binding(arguments)
        if binding is None:
            return cypher
        key = (cypher, binding)
        statement = self._prepared.get(key)
        if statement is None:
            prepared = ladybug.PreparedStatement(conn, cypher, arguments)
            self.prepares += 1
            statement = prepared if prepared.is_success() else cypher
            if len(self._prepared) >= MAX_PREPARED:
                del self._prepared[next(iter(self._prepared))]
            self._prepared[key] = statement
        return statement

    def _take_connection(self) -> ladybug.Connection | None:
        """Detach the connection for the store to close; the session is closed."""
        self._closed = True
        self._prepared.clear()
        conn, self._conn = self._conn, None
        return conn

    def _release(self) -> None:
        # No call is in flight, so closing only frees memory (about 0.1 ms).
        conn = self._take_connection()
        if conn is not None:
            conn.close()
        self._graph._sessions.discard(self)


Statement = ladybug.PreparedStatement | str
"""What a session executes: a statement prepared on its connection, or query text."""


class _Watchdog:
    """Interrupts session queries that run past the query timeout: one daemon thread per store.

    Why not the engine's timeout: with ``Connection.set_query_timeout`` set,
    ladybug 0.22 runs each query on its task scheduler's thread and the caller
    waits for it, about 16 context switches per query. A ``COUNTS`` read took
    478 µs of CPU instead of 195 µs on one connection, and four connections
    together ran 3,233 instead of 5,270 queries/s (demo world, 2 cores). So a
    session query runs on the calling worker thread with no engine timeout,
    and this thread, looking every ``interval`` seconds, calls
    ``Connection.interrupt()`` on each connection whose query has run
    ``timeout`` seconds or more; it repeats until the call returns (an
    interrupt that arrives while the query compiles is cleared when execution
    starts). The engine then raises ``Interrupted``, which the store reports
    as :class:`~stores.errors.QueryError`. A query is therefore stopped
    between ``timeout`` and ``timeout + interval`` seconds after it started.

    The registry lock is held while interrupting, so a connection is only
    interrupted while the call that registered it is still inside
    :meth:`enter` / :meth:`leave`: never the next query on the connection.
    Per query the cost is two uncontended lock round trips and a dict update.

    Args:
        timeout: seconds a session query may run.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.interval = min(WATCHDOG_INTERVAL, timeout / 4)
        self._running: dict[int, tuple[float, ladybug.Connection]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def enter(self, conn: ladybug.Connection) -> None:
        """``conn`` starts a query now (worker thread); starts the watchdog's thread once."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            self._running[id(conn)] = (deadline, conn)
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._watch, name="ladybug-watchdog", daemon=True
                )
                self._thread.start()

    def leave(self, conn: ladybug.Connection) -> None:
        """``conn``'s query returned (or raised)."""
        with self._lock:
            del self._running[id(conn)]

    def stop(self) -> None:
        """Let the thread end within ``interval`` seconds (idempotent)."""
        self._stopping.set()

    def _watch(self) -> None:
        while not self._stopping.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                for deadline, conn in self._running.values():
                    if now >= deadline:
                        conn.interrupt()


# -- queries and bulk loads (run in worker threads) ----------------------------


def _fetch(conn: ladybug.Connection, cypher: str, params: dict[str, Any] | None = None) -> Table:
    """Execute ``cypher`` as text; the columns and rows of its (last) result."""
    return _collect(conn.execute(cypher, params or {}))


def _rows(conn: ladybug.Connection, cypher: str, params: dict[str, Any] | None = None) -> list[Row]:
    """Execute ``cypher`` and return its rows as dicts keyed by column name."""
    return _dicts(_fetch(conn, cypher, params))


def _collect(results: ladybug.QueryResult | list[ladybug.QueryResult]) -> Table:
    """The columns and rows of the (last) result, every result closed."""
    if not isinstance(results, list):
        results = [results]
    try:
        last = results[-1]
        return Table(tuple(last.get_column_names()), cast("list[list[Any]]", last.get_all()))
    finally:
        for result in results:
            result.close()


def _table(table: Table) -> Table:
    return table


def _dicts(table: Table) -> list[Row]:
    """Rows as dicts; a node becomes the dict of its non-null properties (see the module)."""
    columns = table.columns
    return [
        {column: _plain(value) for column, value in zip(columns, row, strict=True)}
        for row in table.rows
    ]


def _binding(params: dict[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """How the engine types ``params`` when it prepares a statement with them; ``None``: not
    a key a prepared statement may be cached under (a value other than str, int, float, bool).

    ladybug 0.22 types an int parameter by the width of the value it is
    prepared with (INT8 for 5, INT16 for 300 …), and "reusing a prepared
    statement across those widths corrupts later executions because
    updateParameter() mutates the value without revalidating the logical type"
    (ladybug/connection.py, ``_pybind_value_signature``). So a statement is
    prepared with its first call's values and cached per width, as the
    engine's own implicit cache does; lists, maps and nulls take the engine's
    text path.
    """
    binding = []
    for name, value in params.items():
        kind = type(value)
        if kind is str:
            binding.append((name, "s"))
        elif kind is int:
            binding.append((name, _int_width(value)))
        elif kind is float:
            binding.append((name, "d"))
        elif kind is bool:
            binding.append((name, "b"))
        else:
            return None
    return tuple(binding)


def _int_width(value: int) -> str:
    """The engine's type for an int parameter of this value (ladybug 0.22, see :func:`_binding`)."""
    if -(2**7) <= value < 2**7:
        return "int8"
    if 0 <= value < 2**8:
        return "uint8"
    if -(2**15) <= value < 2**15:
        return "int16"
    if 0 <= value < 2**16:
        return "uint16"
    if -(2**31) <= value < 2**31:
        return "int32"
    if 0 <= value < 2**32:
        return "uint32"
    return "int64"


def _plain(value: Any) -> Any:
    """A node or relationship value as the dict of its non-null properties."""
    if isinstance(value, dict):
        if "_LABEL" in value:
            return {
                key: _plain(item)
                for key, item in value.items()
                if key not in _INTERNAL_KEYS and item is not None
            }
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _single(conn: ladybug.Connection, cypher: str) -> list[Any]:
    """The one list value a ``RETURN collect(...)`` query returns.

    Converting one list is several times faster than converting as many rows.
    """
    return cast("list[Any]", _fetch(conn, cypher).rows[0][0])


def _offsets_of(conn: ladybug.Connection, node: NodeType) -> dict[str, int]:
    """Primary key → offset of every node of ``node``'s table.

    Offsets name nodes inside the engine; they hold still while no write
    runs, and the store's write lock is held through an import.
    """
    table = _fetch(
        conn, f"MATCH (n:{quote_name(node.label)}) RETURN n.{quote_name(node.key)}, offset(id(n))"
    )
    return {key: offset for key, offset in table.rows}


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _no_csv(value: object) -> str:
    raise AssertionError(f"{value!r} has no CSV spelling here")


# CSV spelling of a non-null value per column type (null is an empty field).
# The parallel CSV reader splits quoted fields that contain a newline, hence
# ``parallel=false`` in the COPY. A STRING[] value sends the rows through the
# parameter path instead, and TIMESTAMP values are refused by check_properties.
_CSV_FORMATS: dict[PropertyType, Callable[[Any], str]] = {
    "STRING": _quoted,
    "INT64": str,
    "DOUBLE": repr,
    "STRING[]": _no_csv,
    "TIMESTAMP": _no_csv,
}


def _column(values: list[Any] | None, rows: list[int]) -> list[Any]:
    """The values of ``rows`` in a property column, or nulls if it was not given."""
    if values is None:
        return [None] * len(rows)
    return [values[row] for row in rows]


def _check_endpoints(
    rel: RelationshipType,
    pairs: Sequence[tuple[str, str]],
    sources: Container[str],
    targets: Container[str],
) -> None:
    """Raise QueryError naming the first missing end node, and how many are missing."""
    missing = [(rel.source, a) for a, _ in pairs if a not in sources]
    missing += [(rel.target, b) for _, b in pairs if b not in targets]
    if missing:
        label, key = missing[0]
        raise QueryError(
            f"cannot import {rel.type}: no {label} node with key {key!r}"
            f" ({len(set(missing))} missing in all)"
        )


def _node_table(node: NodeType) -> str:
    columns = [f"{quote_name(node.key)} STRING"]
    columns += [f"{quote_name(name)} {COLUMN_TYPES[kind]}" for name, kind in node.properties]
    columns.append(f"PRIMARY KEY({quote_name(node.key)})")
    return f"CREATE NODE TABLE IF NOT EXISTS {quote_name(node.label)}({', '.join(columns)})"


def _rel_table(rel: RelationshipType) -> str:
    columns = [f"FROM {quote_name(rel.source)} TO {quote_name(rel.target)}"]
    columns += [f"{quote_name(name)} {COLUMN_TYPES[kind]}" for name, kind in rel.properties]
    return f"CREATE REL TABLE IF NOT EXISTS {quote_name(rel.type)}({', '.join(columns)})"
