"""The graph port: parameterized Cypher on a property graph, plus bulk import.

Two adapters implement it: :mod:`stores.ladybug` (embedded, the default) and
:mod:`stores.neo4j` (production). Both run the same domain Cypher; where the
dialects differ, the difference lives in the adapter module.

Every method is one unit of work run in a worker thread under the adapter's
``CapacityLimiter``; a :class:`GraphSession` is owned by one actor and its
driver objects never cross threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stores.schema import GraphSchema

Row = dict[str, Any]
Params = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What a bulk import wrote and skipped.

    Attributes:
        created: items newly written.
        existing: items already present (skipped, so imports are idempotent).
    """

    created: int
    existing: int


class GraphSession(Protocol):
    """A reader's or writer's handle on the graph; owned by one actor."""

    async def read(self, cypher: str, params: Params | None = None) -> list[Row]:
        """Run a read query and return its rows as dicts keyed by column name.

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
    """A graph database behind the social service."""

    schema: GraphSchema

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

    async def import_nodes(self, label: str, keys: Iterable[str]) -> ImportSummary:
        """Create the nodes of ``label`` whose keys are missing (bulk path).

        Args:
            label: a node label declared in :attr:`schema`.
            keys: primary-key values; duplicates are ignored.

        Returns:
            ``created + existing`` is the number of distinct keys.

        Raises:
            KeyError: ``label`` is not declared in the schema.
            ValueError: a key is empty or not a string.
            trio.ClosedResourceError: the store is closed.
        """
        ...

    async def import_relationships(
        self, type_: str, pairs: Sequence[tuple[str, str]]
    ) -> ImportSummary:
        """Create the relationships ``(source)-[:type_]->(target)`` that are missing.

        Both end nodes must exist. Duplicates (in ``pairs`` or already stored)
        are skipped, so importing twice gives the same graph; ``created +
        existing`` is the number of distinct pairs. Relationship properties
        are left null.

        Raises:
            KeyError: ``type_`` is not declared in the schema.
            ValueError: a key is empty or not a string.
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
