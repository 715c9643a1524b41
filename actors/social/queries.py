"""The social graph's Cypher, shared by every graph backend.

Both Ladybug and Neo4j 5 accept these as written: labelled end nodes (Ladybug
needs them to pick the relationship table), ``COUNT { }`` subqueries, and
string comparison for keyset pagination (``f.id > $after`` with ``""`` for the
first page, since Ladybug cannot type a ``NULL`` parameter in ``IS NULL OR``).
"""

from __future__ import annotations

COUNTS = """
MATCH (u:User {id: $user})
RETURN COUNT { MATCH (u)-[:FOLLOWS]->(:User) } AS following,
       COUNT { MATCH (u)<-[:FOLLOWS]-(:User) } AS followers
"""

FOLLOWING_PAGE = """
MATCH (u:User {id: $user})-[:FOLLOWS]->(f:User)
WHERE f.id > $after
RETURN f.id AS id
ORDER BY id
LIMIT $limit
"""

USER_EXISTS = """
MATCH (u:User {id: $user})
RETURN u.id AS id
"""
