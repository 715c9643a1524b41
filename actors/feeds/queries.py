"""The Cypher the feed actors read (the same text on Ladybug and Neo4j).

The story index loads :data:`STORIES` and :data:`RECOMMENDATIONS` once at
start; a feed build reads the user's context (:data:`USER_CONTEXT` queries),
concurrently, through the graph reader pool.
"""

from __future__ import annotations

STORIES = (
    "MATCH (p:Post) RETURN p.id AS id, p.author AS author, p.published_at AS published_at, "
    "p.tags AS tags, p.publication AS publication, p.reading_time AS reading_time, "
    "p.claps AS claps, p.url AS url"
)
RECOMMENDATIONS = "MATCH (u:User)-[:RECOMMENDED]->(p:Post) RETURN u.id AS user, p.id AS post"

USER = "MATCH (u:User {id: $user}) RETURN u.id AS id"
FOLLOWING = "MATCH (:User {id: $user})-[:FOLLOWS]->(f:User) RETURN f.id AS id"
TOPICS = "MATCH (:User {id: $user})-[:FOLLOWS_TOPIC]->(t:Topic) RETURN t.name AS id"
PUBLICATIONS = (
    "MATCH (:User {id: $user})-[:FOLLOWS_PUBLICATION]->(p:Publication) RETURN p.name AS id"
)
MUTED = "MATCH (:User {id: $user})-[:MUTED]->(m:User) RETURN m.id AS id"
BLOCKED = "MATCH (:User {id: $user})-[:BLOCKS]-(b:User) RETURN DISTINCT b.id AS id"
"""The users ``$user`` blocks or is blocked by (a block hides posts both ways)."""
READ = "MATCH (:User {id: $user})-[:READ]->(p:Post) RETURN p.id AS id"

USER_CONTEXT = {
    "user": USER,
    "following": FOLLOWING,
    "topics": TOPICS,
    "publications": PUBLICATIONS,
    "muted": MUTED,
    "blocked": BLOCKED,
    "read": READ,
}
"""Name → query of each part of a user's context; each returns rows ``{id}``."""
