"""The social graph's Cypher, shared by every graph backend.

Each statement was run on both Ladybug 0.22 and Neo4j 5.26 with the same
results, so there is no per-dialect text. The rules that make that work:

- both ends of every relationship pattern carry a label (Ladybug picks the
  relationship table from them);
- every returned column has an alias (unaliased names differ);
- one statement per call (Ladybug runs ``;``-separated statements, Neo4j
  refuses them);
- no ``NULL`` parameter in a predicate such as ``$x IS NULL OR …`` (Ladybug
  cannot type it): ``""`` is the sentinel for "no bound", which no id equals;
- ``COUNT { }`` and ``EXISTS { }`` subqueries, ``OPTIONAL MATCH … WHERE``,
  ``MERGE … ON CREATE SET`` and ``coalesce`` behave alike;
- ``ORDER BY`` never meets a ``NULL`` it must place (their place differs):
  times are read through ``coalesce(…, 0)``;
- list parameters are homogeneous (Ladybug types a list by its elements).

A statement that finds nothing to act on returns no rows; the caller then
asks :data:`USER_EXISTS` / :data:`POST_EXISTS` which id was missing, so the
common path is one round trip.
"""

from __future__ import annotations

import functools

from actors.social.messages import Direction

# -- existence -------------------------------------------------------------------

USER_EXISTS = "MATCH (u:User {id: $id}) RETURN u.id AS id"
POST_EXISTS = "MATCH (p:Post {id: $id}) RETURN p.id AS id"

# -- counts and neighbour lists ---------------------------------------------------

COUNTS = """
MATCH (u:User {id: $user})
RETURN COUNT { MATCH (u)-[:FOLLOWS]->(:User) } AS following,
       COUNT { MATCH (u)<-[:FOLLOWS]-(:User) } AS followers
"""

COUNTS_MANY = """
UNWIND $users AS id
MATCH (u:User {id: id})
RETURN id,
       COUNT { MATCH (u)-[:FOLLOWS]->(:User) } AS following,
       COUNT { MATCH (u)<-[:FOLLOWS]-(:User) } AS followers
"""
""":data:`COUNTS` of several users in one statement (a reader's batch of ``Counts``)."""

# ``u`` is the user asked about and ``f`` a neighbour, in either direction.
_NEIGHBOUR: dict[Direction, str] = {
    "following": "(u)-[:FOLLOWS]->(f:User)",
    "followers": "(f:User)-[:FOLLOWS]->(u)",
    "blocking": "(u)-[:BLOCKS]->(f:User)",
}

PAGE: dict[Direction, str] = {
    direction: f"""
MATCH (u:User {{id: $user}})
OPTIONAL MATCH {pattern}
WHERE f.id > $after
RETURN f.id AS id
ORDER BY id
LIMIT $limit
"""
    for direction, pattern in _NEIGHBOUR.items()
}
"""A page after ``$after``: no rows for an unknown user, one ``NULL`` id for an empty page."""

NEIGHBOUR_COUNT: dict[Direction, str] = {
    direction: f"""
MATCH (u:User {{id: $user}})
RETURN COUNT {{ MATCH {pattern} }} AS n
"""
    for direction, pattern in _NEIGHBOUR.items()
}
"""How many neighbours ``$user`` has (no rows if unknown)."""

PIVOT: dict[Direction, str] = {
    direction: f"""
MATCH (u:User {{id: $user}})
MATCH {pattern}
WHERE f.id > $after
RETURN f.id AS id
ORDER BY id
SKIP $skip
LIMIT 1
"""
    for direction, pattern in _NEIGHBOUR.items()
}
"""The neighbour at position ``$skip`` (0-based) after ``$after``, by id: a range boundary."""

RANGE: dict[Direction, str] = {
    direction: f"""
MATCH (u:User {{id: $user}})
MATCH {pattern}
WHERE f.id > $after AND f.id >= $low AND ($high = '' OR f.id < $high)
RETURN f.id AS id
ORDER BY id
"""
    for direction, pattern in _NEIGHBOUR.items()
}
"""The neighbours in ``[$low, $high)`` after ``$after``; ``$high = ''``: no upper bound."""

# -- recommendations ---------------------------------------------------------------

RECOMMENDERS = """
MATCH (p:Post {id: $post})
WITH p, COUNT { MATCH (:User)-[:RECOMMENDED]->(p) } AS total
OPTIONAL MATCH (u:User)-[r:RECOMMENDED]->(p)
RETURN total, u.id AS id, coalesce(r.at, 0) AS at
ORDER BY at DESC, id
LIMIT $limit
"""
"""The most recent recommenders of a post and their total; one ``NULL`` row if none."""

FRIENDS_WHO_RECOMMENDED = """
MATCH (u:User {id: $user}), (p:Post {id: $post})
OPTIONAL MATCH (u)-[:FOLLOWS]->(f:User)-[r:RECOMMENDED]->(p)
RETURN f.id AS id, coalesce(r.at, 0) AS at
ORDER BY at DESC, id
"""
"""Every followed user who recommended the post, most recent first; one ``NULL`` row if none."""

# -- who to follow -------------------------------------------------------------------

_FRIENDS_OF_FRIENDS = """
MATCH (:User {id: $user})-[:FOLLOWS]->(:User)-[:FOLLOWS]->(s:User)
WITH s, count(*) AS mutual
MATCH (u:User {id: $user})
WHERE s <> u AND NOT EXISTS { MATCH (u)-[:FOLLOWS]->(s) }
"""

WHO_TO_FOLLOW_TOP = (
    _FRIENDS_OF_FRIENDS
    + """WITH s, mutual
ORDER BY mutual DESC
LIMIT $window
MATCH (t:User)
WHERE id(t) = id(s)
RETURN t.id AS id, mutual
"""
)
"""The ``$window`` candidates with the most mutual follows (ties cut anywhere), and their ids.

Friends of friends not followed yet, grouped by the candidate node alone
(grouping with ``u`` in scope makes Ladybug's hash aggregate carry it).
Ladybug reads a property of a bound node as early as it can, so
``RETURN s.id`` after the ``LIMIT`` would read the id of every candidate
(20,000 for a user following 1,000) before ranking, which is two thirds of
the query's time; re-finding the few survivors by internal id (``id(t) =
id(s)``) defers that read, and Neo4j plans it as a ``NodeByIdSeek``. The
internal id never leaves the statement, the use Neo4j 5's deprecation of
``id()`` leaves safe (``elementId`` does not exist on Ladybug).
"""

WHO_TO_FOLLOW = (
    _FRIENDS_OF_FRIENDS
    + """RETURN s.id AS id, mutual
ORDER BY mutual DESC, id
LIMIT $limit
"""
)
"""The exact suggestions, by mutual count then id (the fallback of :data:`WHO_TO_FOLLOW_TOP`)."""

_NEO4J_FRIENDS_OF_FRIENDS = """
MATCH (u:User {id: $user})-[:FOLLOWS]->(:User)-[:FOLLOWS]->(s:User)
WHERE s <> u AND NOT EXISTS { MATCH (u)-[:FOLLOWS]->(s) }
WITH s, count(*) AS mutual
"""

WHO_TO_FOLLOW_BY_DIALECT: dict[str, tuple[str, str]] = {
    "ladybug": (WHO_TO_FOLLOW_TOP, WHO_TO_FOLLOW),
    "neo4j": (
        _NEO4J_FRIENDS_OF_FRIENDS
        + "ORDER BY mutual DESC\nLIMIT $window\nRETURN s.id AS id, mutual\n",
        _NEO4J_FRIENDS_OF_FRIENDS
        + "RETURN s.id AS id, mutual\nORDER BY mutual DESC, id\nLIMIT $limit\n",
    ),
}
"""``(top, exact)`` who-to-follow queries per graph dialect: the one place they differ.

Neo4j 5 plans the shared form badly: it re-seeks ``u`` by index and runs the
``NOT EXISTS`` for every candidate after aggregating (825,541 db hits for a
user following 930; ~650 ms on the test server). Binding ``u`` once and
filtering the paths before aggregating takes ~124 ms there. On Ladybug the
same rewrite is slower (41 vs 27 ms for that user, one engine thread), so
each backend keeps its best form; both return the same rows.
"""

# -- posts ---------------------------------------------------------------------------

GET_POST = """
MATCH (p:Post {id: $post})
RETURN p.id AS id, p.author AS author, p.title AS title, p.url AS url, p.tags AS tags,
       p.publication AS publication, p.published_at AS published_at,
       p.reading_time AS reading_time, p.claps AS claps,
       COUNT { MATCH (:User)-[:RECOMMENDED]->(p) } AS recommendations
"""

# -- writes --------------------------------------------------------------------------

FOLLOW = """
MATCH (a:User {id: $follower}), (b:User {id: $followee})
WHERE NOT EXISTS { MATCH (a)-[:BLOCKS]-(b) }
WITH a, b, COUNT { MATCH (a)-[:FOLLOWS]->(b) } AS before
MERGE (a)-[:FOLLOWS]->(b)
RETURN before = 0 AS changed
"""
"""A follow: no rows if an end is unknown or a block stands between them (either way)."""

UNFOLLOW = """
MATCH (a:User {id: $follower}), (b:User {id: $followee})
WITH a, b, COUNT { MATCH (a)-[:FOLLOWS]->(b) } AS before
OPTIONAL MATCH (a)-[r:FOLLOWS]->(b)
DELETE r
RETURN before > 0 AS changed
"""

RECOMMEND = """
MATCH (u:User {id: $user}), (p:Post {id: $post})
WITH u, p, COUNT { MATCH (u)-[:RECOMMENDED]->(p) } AS before
MERGE (u)-[r:RECOMMENDED]->(p)
ON CREATE SET r.at = $at
RETURN before = 0 AS changed
"""

UNRECOMMEND = """
MATCH (u:User {id: $user}), (p:Post {id: $post})
WITH u, p, COUNT { MATCH (u)-[:RECOMMENDED]->(p) } AS before
OPTIONAL MATCH (u)-[r:RECOMMENDED]->(p)
DELETE r
RETURN before > 0 AS changed
"""

MUTE = """
MATCH (u:User {id: $user}), (a:User {id: $author})
WITH u, a, COUNT { MATCH (u)-[:MUTED]->(a) } AS before
MERGE (u)-[m:MUTED]->(a)
ON CREATE SET m.at = $at
RETURN before = 0 AS changed
"""

UNMUTE = """
MATCH (u:User {id: $user}), (a:User {id: $author})
WITH u, a, COUNT { MATCH (u)-[:MUTED]->(a) } AS before
OPTIONAL MATCH (u)-[m:MUTED]->(a)
DELETE m
RETURN before > 0 AS changed
"""

UNBLOCK = """
MATCH (u:User {id: $blocker}), (b:User {id: $blocked})
WITH u, b, COUNT { MATCH (u)-[:BLOCKS]->(b) } AS before
OPTIONAL MATCH (u)-[k:BLOCKS]->(b)
DELETE k
RETURN before > 0 AS changed
"""

MARK_READ = """
MATCH (u:User {id: $user}), (p:Post {id: $post})
WITH u, p, COUNT { MATCH (u)-[:READ]->(p) } AS before
MERGE (u)-[r:READ]->(p)
ON CREATE SET r.at = $at
RETURN before = 0 AS changed
"""
"""Edge writes: no rows if an end is unknown, else ``changed``."""

BLOCK = """
MATCH (u:User {id: $blocker}), (b:User {id: $blocked})
WITH u, b, COUNT { MATCH (u)-[:BLOCKS]->(b) } AS before,
     COUNT { MATCH (u)-[:FOLLOWS]->(b) } AS following,
     COUNT { MATCH (b)-[:FOLLOWS]->(u) } AS followed
MERGE (u)-[k:BLOCKS]->(b)
ON CREATE SET k.at = $at
WITH u, b, before, following, followed
OPTIONAL MATCH (u)-[f:FOLLOWS]->(b)
DELETE f
WITH DISTINCT u, b, before, following, followed
OPTIONAL MATCH (b)-[g:FOLLOWS]->(u)
DELETE g
WITH DISTINCT before, following, followed
RETURN before = 0 AS changed, following > 0 AS unfollowed, followed > 0 AS unfollowed_back
"""
"""A block and the removal of the follows between the two users, both ways, in one statement.

No rows if an end is unknown; else one row: ``changed`` (the block is new),
``unfollowed`` (a follow of ``$blocker`` → ``$blocked`` was removed) and
``unfollowed_back`` (one of ``$blocked`` → ``$blocker`` was). Each direction
is deleted by a directed match of its own: Ladybug refuses to delete through
an undirected pattern.
"""

DELETE_POST = """
MATCH (p:Post {id: $post})
WITH p, p.author AS author
DETACH DELETE p
RETURN author
"""
"""Delete a post and all its edges; no rows if unknown, else its ``author`` read before.

Every post carries its author's id (:func:`create_post` and
``datasets.story_import`` write it beside the ``WROTE`` edge). Topics and
publications stay: other posts may share them.
"""

POST_PROPERTIES = ("url", "publication", "reading_time")
"""Optional post properties, written only when given (no ``NULL`` parameters)."""


@functools.lru_cache(maxsize=16)
def create_post(present: frozenset[str], *, tags: bool) -> str:
    """The statement that writes a post, its ``WROTE`` edge, topics and publication.

    One statement, so one transaction: the post appears whole or not at all.
    It returns one row (``id``) when it wrote the post, and none when the
    author is unknown or the id is taken.

    Args:
        present: which of :data:`POST_PROPERTIES` are given; their values go
            in parameters of the same names. A ``publication`` is also
            merged as a node and linked.
        tags: ``$tags`` (distinct, non-empty) name topics to ``MERGE`` and link.

    Raises:
        ValueError: ``present`` names a property that is not optional.
    """
    unknown = set(present) - set(POST_PROPERTIES)
    if unknown:
        raise ValueError(f"not optional post properties: {sorted(unknown)}")
    properties = ["id: $id", "author: $author", "title: $title", "published_at: $published_at"]
    properties += [f"{name}: ${name}" for name in POST_PROPERTIES if name in present]
    properties += ["tags: $tags", "claps: 0"] if tags else ["claps: 0"]
    lines = [
        "MATCH (a:User {id: $author})",
        "WHERE NOT EXISTS { MATCH (x:Post {id: $id}) }",
        f"CREATE (a)-[:WROTE]->(p:Post {{{', '.join(properties)}}})",
    ]
    if "publication" in present:
        lines += [
            "MERGE (pub:Publication {name: $publication})",
            "CREATE (p)-[:PUBLISHED_IN]->(pub)",
        ]
    if tags:
        lines += [
            "WITH p",
            "UNWIND $tags AS tag",
            "MERGE (t:Topic {name: tag})",
            "CREATE (p)-[:TAGGED]->(t)",
        ]
    lines.append("RETURN DISTINCT p.id AS id")
    return "\n".join(lines)
