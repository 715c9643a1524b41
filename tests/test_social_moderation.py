"""Mutes, reads and post deletion, end to end, on both graph backends.

Each test runs the real readers and writer behind the handle (:func:`running_social`)
over an empty graph: a fresh Ladybug database under ``tmp_path``, or the
Neo4j server shared by the test session, where every id carries a prefix
unique to the test (as in :mod:`tests.social_world`). What a write did is
checked with a direct read of the graph, never through the code under test;
what it published, by draining the test's bus subscription.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.social import (
    DeletePost,
    GetPost,
    InvalidArgument,
    MarkRead,
    Mute,
    Muted,
    NotFound,
    PostDeleted,
    PostDraft,
    PostRead,
    Publish,
    Published,
    Recommend,
    Unmute,
    Unmuted,
)
from stores.errors import QueryError
from stores.graph import Row
from stores.ladybug import LadybugGraph
from stores.schema import SOCIAL_SCHEMA, GraphSchema
from tests.social_world import Expected, Rpc, Social, World, new_users, running_social


async def publish(social: Social, author: str, title: str = "T") -> str:
    """Publish a post by ``author``; return its id, leaving no event to drain."""
    post: str = (await social.call(Publish(author, PostDraft(title=title)))).post
    social.received()
    return post


async def query(social: Social, cypher: str, **params: Any) -> list[Row]:
    """Read the graph directly, on a session of its own."""
    session = social.store.session()
    try:
        return await session.read(cypher, params)
    finally:
        session.close()


async def mutes(social: Social, user: str) -> list[Row]:
    """``user``'s ``MUTED`` edges as ``{author, at}``, by author."""
    return await query(
        social,
        "MATCH (:User {id: $user})-[m:MUTED]->(a:User) RETURN a.id AS author, m.at AS at "
        "ORDER BY author",
        user=user,
    )


async def reads(social: Social, user: str) -> list[Row]:
    """``user``'s ``READ`` edges as ``{post, at}``, by post."""
    return await query(
        social,
        "MATCH (:User {id: $user})-[r:READ]->(p:Post) RETURN p.id AS post, r.at AS at "
        "ORDER BY post",
        user=user,
    )


# -- the social graph --------------------------------------------------------------


async def test_mute_and_unmute_change_the_graph_once(social: Social, world: World) -> None:
    """A new mute and its removal each write the graph and publish one event; repeats do neither."""
    user, author = await new_users(social, world, "user", "author")
    social.clock.now = 500

    assert await social.call(Mute(user, author)) is True
    assert await mutes(social, user) == [{"author": author, "at": 500}]
    assert await social.call(Mute(user, author)) is False
    assert await mutes(social, user) == [{"author": author, "at": 500}]
    assert social.received() == [Muted(user, author, 500)]

    assert await social.call(Unmute(user, author)) is True
    assert await mutes(social, user) == []
    assert await social.call(Unmute(user, author)) is False
    assert social.received() == [Unmuted(user, author, 502)]


async def test_mute_is_one_way(social: Social, world: World) -> None:
    """Muting an author hides nothing of the user from the author: the edge has a direction."""
    user, author = await new_users(social, world, "user", "author")

    assert await social.call(Mute(user, author)) is True
    assert await social.call(Mute(author, user)) is True
    assert await social.call(Unmute(user, author)) is True

    assert await mutes(social, user) == []
    assert [row["author"] for row in await mutes(social, author)] == [user]


async def test_mark_read_creates_one_read_edge(social: Social, world: World) -> None:
    """The first read of a post writes a READ edge stamped then and publishes it; a re-read changes nothing."""  # noqa: E501
    user, author = await new_users(social, world, "reader", "author")
    post = await publish(social, author)
    social.clock.now = 700

    assert await social.call(MarkRead(user, post)) is True
    assert await social.call(MarkRead(user, post)) is False

    assert await reads(social, user) == [{"post": post, "at": 700}]
    assert social.received() == [PostRead(user, post, 700)]


async def test_delete_post_removes_it_and_its_edges(social: Social, world: World) -> None:
    """Deleting a post removes it with every edge it had, keeps shared topics, and names its author."""  # noqa: E501
    author, user = await new_users(social, world, "author", "user")
    topic, publication = world.id("topic"), world.id("weekly")
    draft = PostDraft(title="Doomed", tags=(topic,), publication=publication)
    post = (await social.call(Publish(author, draft))).post
    kept = await publish(social, author, "Kept")
    await social.call(Recommend(user, post))
    await social.call(MarkRead(user, post))
    await social.call(MarkRead(user, kept))
    social.received()
    social.clock.now = 900

    assert await social.call(DeletePost(post)) is True

    assert social.received() == [PostDeleted(post, author, 900)]
    assert await query(social, "MATCH (p:Post {id: $p}) RETURN p.id AS id", p=post) == []
    wrote = await query(
        social, "MATCH (:User {id: $a})-[:WROTE]->(p:Post) RETURN p.id AS id", a=author
    )
    assert wrote == [{"id": kept}]
    assert [row["post"] for row in await reads(social, user)] == [kept]
    recommended = await query(
        social, "MATCH (:User {id: $u})-[:RECOMMENDED]->(p:Post) RETURN p.id AS id", u=user
    )
    assert recommended == []
    tagged = await query(
        social, "MATCH (p:Post)-[:TAGGED]->(:Topic {name: $t}) RETURN p.id AS id", t=topic
    )
    assert tagged == []
    assert await query(social, "MATCH (t:Topic {name: $t}) RETURN t.name AS n", t=topic) == [
        {"n": topic}
    ]
    published_in = await query(
        social,
        "MATCH (p:Post)-[:PUBLISHED_IN]->(:Publication {name: $n}) RETURN p.id AS id",
        n=publication,
    )
    assert published_in == []
    with pytest.raises(NotFound) as missing:
        await social.call(GetPost(post))
    assert (missing.value.kind, missing.value.id) == ("post", post)


async def test_deleting_a_post_twice_is_not_found(social: Social, world: World) -> None:
    """A deleted post is unknown to a second delete, which publishes nothing."""
    (author,) = await new_users(social, world, "author")
    post = await publish(social, author)
    assert await social.call(DeletePost(post)) is True
    social.received()

    with pytest.raises(NotFound) as missing:
        await social.call(DeletePost(post))

    assert (missing.value.kind, missing.value.id) == ("post", post)
    assert social.received() == []


async def test_published_carries_the_post_fields(world: World) -> None:
    """Every chunk of a post's fan-out carries its distinct tags, publication and reading time."""
    store = await world.open()
    try:
        async with running_social(store, fanout_chunk=1) as social:
            author, *followers = await new_users(social, world, "author", "f1", "f2", "f3")
            await store.import_relationships("FOLLOWS", [(f, author) for f in followers])
            draft = PostDraft(
                title="Fields",
                tags=("graphs", "trio", "graphs"),
                publication="Weekly",
                reading_time=4.5,
            )
            plain = PostDraft(title="Plain")

            post = (await social.call(Publish(author, draft))).post
            rich = social.received()
            other = (await social.call(Publish(author, plain))).post
            bare = social.received()
    finally:
        await store.aclose()

    assert all(isinstance(event, Published) for event in [*rich, *bare])
    assert len(rich) == len(bare) == 3
    assert {
        (e.post, e.author, e.tags, e.publication, e.reading_time)
        for e in rich
        if isinstance(e, Published)
    } == {(post, author, ("graphs", "trio"), "Weekly", 4.5)}
    assert {
        (e.post, e.tags, e.publication, e.reading_time) for e in bare if isinstance(e, Published)
    } == {(other, (), None, None)}


async def test_unknown_ids_are_not_found(social: Social, world: World) -> None:
    """Each new write names the unknown user or post, and publishes nothing."""
    user, author = await new_users(social, world, "user", "author")
    post = await publish(social, author)
    ghost, no_post = world.id("ghost"), world.id("no-post")
    cases = [
        (Mute(user, ghost), "user", ghost),
        (Mute(ghost, author), "user", ghost),
        (Unmute(user, ghost), "user", ghost),
        (Unmute(ghost, author), "user", ghost),
        (MarkRead(ghost, post), "user", ghost),
        (MarkRead(user, no_post), "post", no_post),
        (DeletePost(no_post), "post", no_post),
    ]
    for request, kind, id in cases:
        with pytest.raises(NotFound) as missing:
            await social.call(request)
        assert (missing.value.kind, missing.value.id) == (kind, id), request

    assert social.received() == []


async def test_muting_yourself_is_invalid(social: Social, world: World) -> None:
    """A user cannot mute themself, and the refusal writes and publishes nothing."""
    (user,) = await new_users(social, world, "user")

    with pytest.raises(InvalidArgument):
        await social.call(Mute(user, user))

    assert await mutes(social, user) == []
    assert social.received() == []
    assert social.writer.statistics().state == "running"


# -- JSON-RPC ----------------------------------------------------------------------


async def test_rpc_methods_answer_with_their_result_shape(rpc: Rpc, world: World) -> None:
    """social.mute/unmute and posts.read/delete answer as documented, and a deleted post is -32004."""  # noqa: E501
    user, author = await new_users(rpc.social, world, "user", "author")
    post = await publish(rpc.social, author)
    mute = {"user": user, "author": author}
    read = {"user": user, "post": post}

    assert await rpc.result("social.mute", mute) == {"created": True}
    assert await rpc.result("social.mute", mute) == {"created": False}
    assert await rpc.result("social.unmute", mute) == {"removed": True}
    assert await rpc.result("social.unmute", mute) == {"removed": False}
    assert await rpc.result("posts.read", read) == {"created": True}
    assert await rpc.result("posts.read", read) == {"created": False}
    assert await rpc.result("posts.delete", {"post": post}) == {"deleted": True}

    for method in ("posts.get", "posts.delete"):
        error = await rpc.error(method, {"post": post})
        assert error["code"] == -32004, method
        assert error["data"] == {"kind": "post", "id": post}
    kinds = [event.kind for event in rpc.social.received()]
    assert kinds == ["muted", "unmuted", "read", "deleted"]


async def test_rpc_unknown_ids_are_not_found(rpc: Rpc, world: World) -> None:
    """An unknown user or post gets -32004 naming its kind and id."""
    user, author = await new_users(rpc.social, world, "user", "author")
    post = await publish(rpc.social, author)
    ghost, no_post = world.id("ghost"), world.id("no-post")
    cases = [
        ("social.mute", {"user": user, "author": ghost}, "user", ghost),
        ("social.mute", {"user": ghost, "author": author}, "user", ghost),
        ("social.unmute", {"user": user, "author": ghost}, "user", ghost),
        ("posts.read", {"user": ghost, "post": post}, "user", ghost),
        ("posts.read", {"user": user, "post": no_post}, "post", no_post),
        ("posts.delete", {"post": no_post}, "post", no_post),
    ]
    for method, params, kind, id in cases:
        error = await rpc.error(method, params)
        assert error["code"] == -32004, (method, params)
        assert error["data"] == {"kind": kind, "id": id}, (method, params)


async def test_rpc_self_mute_and_bad_params_are_invalid_params(rpc: Rpc, world: World) -> None:
    """Muting yourself, and missing, unknown or malformed params, get -32602."""
    (user,) = await new_users(rpc.social, world, "user")
    cases = [
        ("social.mute", {"user": user, "author": user}),
        ("social.mute", {"user": user}),
        ("social.unmute", {"user": user, "author": "bad id!"}),
        ("posts.read", {"user": user, "post": "p", "at": 1}),
        ("posts.delete", {"post": ""}),
        ("posts.delete", {}),
    ]
    for method, params in cases:
        error = await rpc.error(method, params)
        assert error["code"] == -32602, (method, params)

    assert rpc.social.received() == []


# -- an existing database -------------------------------------------------------------


async def test_a_database_made_before_muted_gets_the_table(tmp_path: Path) -> None:
    """A Ladybug database created without MUTED gains it when reopened, keeping its data."""
    path = tmp_path / "graph"
    before = GraphSchema(
        SOCIAL_SCHEMA.nodes,
        tuple(rel for rel in SOCIAL_SCHEMA.relationships if rel.type != "MUTED"),
    )
    old = await LadybugGraph.open(path, schema=before)
    try:
        await old.ensure_schema()
        await old.import_nodes("User", ["a", "b"])
        await old.import_relationships("FOLLOWS", [("a", "b")])
        session = old.session()
        try:
            with pytest.raises(QueryError, match="MUTED"):
                await session.read("MATCH (:User)-[m:MUTED]->(:User) RETURN m.at AS at", {})
        finally:
            session.close()
    finally:
        await old.aclose()
    world = World("ladybug", str(path), "x", [], Expected())

    store = await world.open()
    try:
        async with running_social(store) as social:
            assert await social.call(Mute("a", "b")) is True
            assert [row["author"] for row in await mutes(social, "a")] == ["b"]
            follows = await query(
                social, "MATCH (:User {id: 'a'})-[:FOLLOWS]->(b:User) RETURN b.id AS id"
            )
            assert follows == [{"id": "b"}]
    finally:
        await store.aclose()
