"""The social graph's schema, declared once for every graph backend.

Ladybug needs typed node and relationship tables before anything is written;
Neo4j is schema-free but wants uniqueness constraints on ids. Both are derived
from the declarations here, so the domain model lives in one place.

Source: the GoSocial model in Medium's "GoSocial" post (users, posts,
follows, recommends) extended by the DESIGN.md node and relationship list,
``MUTED {at}`` (a user hiding an author from their feeds) and ``BLOCKS {at}``
(a user refusing another: no follows either way, no posts in either's feeds).

Adding a type here is enough for an existing graph: both adapters' ``ensure_schema``
create only what is missing (Ladybug: ``CREATE … TABLE IF NOT EXISTS``; Neo4j
needs nothing for a relationship type), and the server ensures the schema
each time it opens the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PropertyType = Literal["STRING", "INT64", "DOUBLE", "STRING[]", "TIMESTAMP"]


@dataclass(frozen=True, slots=True)
class NodeType:
    """A node label with its primary key and typed properties."""

    label: str
    key: str
    properties: tuple[tuple[str, PropertyType], ...] = ()


@dataclass(frozen=True, slots=True)
class RelationshipType:
    """A directed relationship type between two labels, with typed properties."""

    type: str
    source: str
    target: str
    properties: tuple[tuple[str, PropertyType], ...] = ()


@dataclass(frozen=True, slots=True)
class GraphSchema:
    """Node and relationship types of one graph."""

    nodes: tuple[NodeType, ...]
    relationships: tuple[RelationshipType, ...]

    def node(self, label: str) -> NodeType:
        """Return the node type called ``label``.

        Raises:
            KeyError: no such label.
        """
        for node in self.nodes:
            if node.label == label:
                return node
        raise KeyError(label)

    def relationship(self, type_: str) -> RelationshipType:
        """Return the relationship type called ``type_``.

        Raises:
            KeyError: no such relationship type.
        """
        for rel in self.relationships:
            if rel.type == type_:
                return rel
        raise KeyError(type_)


SOCIAL_SCHEMA = GraphSchema(
    nodes=(
        NodeType("User", "id"),
        NodeType(
            "Post",
            "id",
            (
                ("author", "STRING"),
                ("title", "STRING"),
                ("url", "STRING"),
                ("tags", "STRING[]"),
                ("publication", "STRING"),
                ("published_at", "INT64"),
                ("reading_time", "DOUBLE"),
                ("claps", "INT64"),
            ),
        ),
        NodeType("Topic", "name"),
        NodeType("Publication", "name"),
    ),
    relationships=(
        RelationshipType("FOLLOWS", "User", "User"),
        RelationshipType("RECOMMENDED", "User", "Post", (("at", "INT64"),)),
        RelationshipType("WROTE", "User", "Post"),
        RelationshipType("TAGGED", "Post", "Topic"),
        RelationshipType("PUBLISHED_IN", "Post", "Publication"),
        RelationshipType("FOLLOWS_TOPIC", "User", "Topic"),
        RelationshipType("FOLLOWS_PUBLICATION", "User", "Publication"),
        RelationshipType("READ", "User", "Post", (("at", "INT64"),)),
        RelationshipType("MUTED", "User", "User", (("at", "INT64"),)),
        RelationshipType("BLOCKS", "User", "User", (("at", "INT64"),)),
    ),
)
