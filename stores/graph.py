"""The graph port: parameterized Cypher on a property graph, plus bulk import.

Two adapters implement it: :mod:`stores.ladybug` (embedded, the default) and
:mod:`stores.neo4j` (production). Both run the same domain Cypher; where the
dialects differ, the difference lives in the adapter module.

Every method is one unit of work run in a worker thread under the adapter's
``CapacityLimiter``; a :class:`GraphSession` is owned by one actor and its
driver objects never cross threads.

Two shapes of result: :meth:`GraphSession.read` gives one dict per row (the
convenient form, nodes normalized across dialects); :meth:`GraphSession.fetch`
gives a :class:`Table`, the rows as the driver returns them (one list of
values per row, the column names once), for the hot paths that read a few
scalar columns and should not pay a dict per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from stores.schema import GraphSchema, PropertyType

T = TypeVar("T")

Row = dict[str, Any]
Params = Mapping[str, Any]
PropertyColumns = Mapping[str, Sequence[Any]]
"""Property name → one value per imported key or pair, aligned with them (``None``: null)."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What a bulk import wrote and skipped.

    Attributes:
        created: items newly written.
        existing: items already present (skipped, so imports are idempotent).
    """

    created: int
    existing: int


@dataclass(frozen=True, slots=True)
class Table:
    """A query's result as the driver returns it: column names once, one list of values per row.

    Values are what the driver gives for scalars, lists and maps; return
    properties, not whole nodes or relationships (their shapes differ by
    backend; :meth:`GraphSession.read` normalizes nodes).

    Attributes:
        columns: the ``RETURN`` aliases, in order.
        rows: one list of values per row, aligned with ``columns``.
    """

    columns: tuple[str, ...]
    rows: list[list[Any]]

    def column(self, name: str) -> list[Any]:
        """Every row's value of column ``name``, in row order (one pass).

        Raises:
            ValueError: no such column.
        """
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def dicts(self) -> list[Row]:
        """The rows as dicts keyed by column name (one dict per row: for cold paths)."""
        columns = self.columns
        return [dict(zip(columns, row, strict=True)) for row in self.rows]


class GraphSession(Protocol):
    """A reader's or writer's handle on the graph; owned by one actor."""

    async def read(self, cypher: str, params: Params | None = None) -> list[Row]:
        """Run a read query and return its rows as dicts keyed by column name.

        Raises:
            stores.errors.QueryError: the backend rejected the query.
            stores.errors.BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def fetch(self, cypher: str, params: Params | None = None) -> Table:
        """Run a read query and return its rows as the driver gives them (no per-row dict).

        The statement is prepared once per connection (Ladybug) or sent as the
        same text so that the server's plan cache serves it (Neo4j): pass
        constant query text and vary only the parameters.

        Raises:
            stores.errors.QueryError: the backend rejected the query.
            stores.errors.BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def write(self, cypher: str, params: Params | None = None) -> list[Row]:
        """Run a write query in one transaction and return its rows.

        Raises:
            stores.errors.QueryError: the backend rejected the query.
            stores.errors.BackendUnavailable: the backend cannot be reached.
        """
        ...

    def close(self) -> None:
        """Release the session's connection (idempotent)."""
        ...


class GraphStore(Protocol):
    """A graph database behind the social graph's readers and writer."""

    schema: GraphSchema
    #: ``"ladybug"`` or ``"neo4j"``: lets a query module keep per-dialect
    #: forms in one place where one text cannot serve both well.
    dialect: str

    @property
    def url(self) -> str:
        """The URL this store was opened with, without credentials."""
        ...

    async def ensure_schema(self) -> None:
        """Create the node/relationship types, keys and indexes that are missing."""
        ...

    def session(self) -> GraphSession:
        """Open a session for one actor."""
        ...

    async def ping(self) -> None:
        """Check the backend answers a trivial query.

        Raises:
            stores.errors.BackendUnavailable: it does not.
        """
        ...

    async def import_nodes(
        self,
        label: str,
        keys: Iterable[str],
        properties: PropertyColumns | None = None,
    ) -> ImportSummary:
        """Create the nodes of ``label`` whose keys are missing (bulk path).

        Nodes already stored are skipped and keep their properties: an import
        never updates, so importing twice gives the same graph.

        Args:
            label: a node label declared in :attr:`schema`.
            keys: primary-key values; duplicates are ignored (the first one
                and its properties win).
            properties: optional columns of declared properties, each as long
                as ``keys`` (see :func:`check_properties` for the types);
                properties left out are null.

        Returns:
            ``created + existing`` is the number of distinct keys.

        Raises:
            KeyError: ``label`` is not declared in the schema.
            ValueError: a key is empty or not a string, or a property column
                is undeclared, of the wrong length or holds a wrongly typed value.
            trio.ClosedResourceError: the store is closed.
        """
        ...

    async def import_relationships(
        self,
        type_: str,
        pairs: Sequence[tuple[str, str]],
        properties: PropertyColumns | None = None,
    ) -> ImportSummary:
        """Create the relationships ``(source)-[:type_]->(target)`` that are missing.

        Both end nodes must exist. Duplicates (in ``pairs`` or already stored)
        are skipped, so importing twice gives the same graph; ``created +
        existing`` is the number of distinct pairs. A stored relationship keeps
        its properties; in ``pairs``, the first of duplicates wins.

        Args:
            type_: a relationship type declared in :attr:`schema`.
            pairs: ``(source key, target key)``.
            properties: optional columns of declared properties, each as long
                as ``pairs``; properties left out are null.

        Raises:
            KeyError: ``type_`` is not declared in the schema.
            ValueError: a key is empty or not a string, or a property column
                is undeclared, of the wrong length or holds a wrongly typed value.
            stores.errors.QueryError: an end node is missing (nothing is written).
            trio.ClosedResourceError: the store is closed.
        """
        ...

    async def aclose(self) -> None:
        """Close the driver or database (idempotent)."""
        ...


def check_keys(keys: Iterable[object]) -> None:
    """Raise ValueError unless every key is a non-empty string (shared by the adapters)."""
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError(f"graph keys must be non-empty strings, got {key!r}")


def quote_name(name: str) -> str:
    """A schema name as a Cypher identifier in backquotes (both dialects accept it)."""
    return "`" + name.replace("`", "``") + "`"


def first_indices(items: Iterable[T]) -> dict[T, int]:
    """Each distinct item → the index of its first occurrence, in first-seen order."""
    indices: dict[T, int] = {}
    for index, item in enumerate(items):
        indices.setdefault(item, index)
    return indices


def check_properties(
    declared: Sequence[tuple[str, PropertyType]],
    properties: PropertyColumns | None,
    length: int,
    owner: str,
) -> dict[str, list[Any]]:
    """Check bulk-import property columns against their declared types.

    Accepted values per declared type (``None`` is null for every type):
    ``STRING``: ``str``; ``INT64``: ``int`` (not ``bool``) in the signed
    64-bit range; ``DOUBLE``: ``float`` or ``int`` (stored as a float, NaN and
    infinities included); ``STRING[]``: a ``list`` or ``tuple`` of ``str``.
    ``TIMESTAMP`` properties cannot be bulk-imported.

    Args:
        declared: the ``(name, type)`` properties of the node or relationship type.
        properties: property name → one value per item, or ``None``.
        length: how many items (keys or pairs) the columns must align with.
        owner: the label or type, for error messages.

    Returns:
        The given columns as lists of normalized values (lists for
        ``STRING[]``, floats for ``DOUBLE``), in declaration order.

    Raises:
        ValueError: a column is undeclared or of another length, or a value
            does not fit its type (the message names the column and index).
    """
    if not properties:
        return {}
    kinds = dict(declared)
    undeclared = sorted(set(properties) - set(kinds))
    if undeclared:
        raise ValueError(f"{owner} has no properties {undeclared}; declared: {sorted(kinds)}")
    columns: dict[str, list[Any]] = {}
    for name, kind in declared:
        if name not in properties:
            continue
        values = properties[name]
        if isinstance(values, str | bytes) or len(values) != length:
            raise ValueError(f"{owner}.{name}: expected a column of {length} values")
        convert = _CONVERTERS.get(kind)
        if convert is None:
            raise ValueError(f"{owner}.{name}: {kind} properties cannot be bulk-imported")
        column: list[Any] = []
        for index, value in enumerate(values):
            try:
                column.append(None if value is None else convert(value))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{owner}.{name}[{index}] = {value!r}: {exc}") from None
        columns[name] = column
    return columns


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a str")
    return value


def _int64(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an int")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("out of the INT64 range")
    return value


def _double(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a float")
    return float(value)


def _strings(value: object) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise TypeError("expected a list of str")
    return list(value)


_CONVERTERS: dict[PropertyType, Callable[[object], Any]] = {
    "STRING": _string,
    "INT64": _int64,
    "DOUBLE": _double,
    "STRING[]": _strings,
}
