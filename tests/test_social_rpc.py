"""The social methods over JSON-RPC: params, results, error codes, HTTP end to end, outages.

The dispatcher tests call :meth:`Dispatcher.handle` with raw JSON bytes over
the real social subtree (embedded Ladybug, the Slashdot slice of
:mod:`tests.social_world`); one test runs the whole server (hypercorn, real
HTTP); the outage test puts a TCP proxy between the Neo4j driver and a real
Neo4j, cuts it and restores it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.runtime import Actor
from protocols.methods import CallContext, Services, build_dispatcher
from server import serve
from settings import ServeOptions, Settings
from supervisor import Supervisor
from tests.social_world import Rpc, World, load_world, running_social, services_for

MOST_FOLLOWED = "398"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> World:
    """The Slashdot slice in an embedded Ladybug database, loaded once."""
    where = str(tmp_path_factory.mktemp("social-rpc") / "graph")
    return load_world("ladybug", where, "s", data_dir)


@pytest.fixture
async def rpc(world: World) -> AsyncIterator[Rpc]:
    """The JSON-RPC dispatcher over the social subtree on the slice."""
    store = await world.open()
    try:
        async with running_social(store) as social:
            yield Rpc(build_dispatcher(services_for(social)), social)
    finally:
        await store.aclose()


async def test_every_method_answers_with_its_result_shape(rpc: Rpc, world: World) -> None:
    """Each social method answers with exactly the fields it documents."""
    user, friend, author = world.id("1001"), world.id("1004"), world.id(MOST_FOLLOWED)
    expected = world.expected
    assert friend not in expected.following[user]

    assert await rpc.result("social.follow", {"follower": user, "followee": friend}) == {
        "created": True
    }
    assert await rpc.result("social.unfollow", {"follower": user, "followee": friend}) == {
        "removed": True
    }
    assert await rpc.result("social.counts", {"user": author}) == {
        "following": len(expected.following[author]),
        "followers": len(expected.followers[author]),
    }
    page = await rpc.result("social.followers", {"user": author, "limit": 3})
    assert page["users"] == sorted(expected.followers[author])[:3]
    assert isinstance(page["next_cursor"], str)
    following = await rpc.result("social.following", {"user": user})
    assert following == {"users": sorted(expected.following[user]), "next_cursor": None}
    suggestions = await rpc.result("social.who_to_follow", {"user": user, "limit": 3})
    assert suggestions == {
        "suggestions": [{"user": u, "mutual": m} for u, m in expected.who_to_follow(user, 3)]
    }
    post = {"title": "Shapes", "tags": ["a", "b"], "reading_time": 3}
    published = await rpc.result("posts.publish", {"author": author, "post": post})
    assert set(published) == {"post", "followers_notified"}
    assert published["followers_notified"] == len(expected.followers[author])
    post_id = published["post"]
    recommender = sorted(expected.following[user])[0]
    assert await rpc.result("social.recommend", {"user": recommender, "post": post_id}) == {
        "created": True
    }
    assert await rpc.result("social.recommenders", {"post": post_id}) == {
        "users": [recommender],
        "total": 1,
    }
    friends = await rpc.result("social.friends_who_recommended", {"user": user, "post": post_id})
    assert friends == {"users": [recommender], "total": 1}
    view = await rpc.result("posts.get", {"post": post_id})
    assert view == {
        "id": post_id,
        "author": author,
        "title": "Shapes",
        "url": None,
        "tags": ["a", "b"],
        "publication": None,
        "published_at": view["published_at"],
        "reading_time": 3.0,
        "claps": 0,
        "recommendations": 1,
    }
    assert isinstance(view["published_at"], int)
    assert await rpc.result("social.unrecommend", {"user": recommender, "post": post_id}) == {
        "removed": True
    }


async def test_cursor_pages_cover_the_followers(rpc: Rpc, world: World) -> None:
    """Following next_cursor from page to page returns every follower once, in id order."""
    author = world.id(MOST_FOLLOWED)
    users: list[str] = []
    cursor = None
    while True:
        page = await rpc.result(
            "social.followers", {"user": author, "limit": 400, "cursor": cursor}
        )
        users += page["users"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert users == sorted(world.expected.followers[author])


BAD_PARAMS = [
    ("social.follow", {"follower": "s:1"}),
    ("social.follow", {"follower": "s:1", "followee": "s:2", "extra": 1}),
    ("social.follow", {"follower": "s:1", "followee": "bad id!"}),
    ("social.follow", {"follower": "s:1", "followee": "x" * 65}),
    ("social.follow", {"follower": "s:1", "followee": "s:1"}),
    ("social.unfollow", {"follower": 1, "followee": "s:2"}),
    ("social.following", {"user": "s:1", "limit": 0}),
    ("social.followers", {"user": "s:1", "limit": 1001}),
    ("social.followers", {"user": "s:1", "cursor": "nonsense"}),
    ("social.counts", {}),
    ("social.recommend", {"user": "s:1"}),
    ("social.recommenders", {"post": "p", "limit": 101}),
    ("social.recommenders", {"post": "p", "limit": 0}),
    ("social.friends_who_recommended", {"user": "s:1", "post": "p", "limit": 101}),
    ("social.who_to_follow", {"user": "s:1", "limit": 101}),
    ("social.who_to_follow", {"user": "s:1", "limit": "10"}),
    ("posts.publish", {"author": "s:1", "post": {}}),
    ("posts.publish", {"author": "s:1", "post": {"title": ""}}),
    ("posts.publish", {"author": "s:1", "post": {"title": "t", "tags": ["t"] * 21}}),
    ("posts.publish", {"author": "s:1", "post": {"title": "t", "reading_time": -1}}),
    ("posts.publish", {"author": "s:1", "post": {"title": "t", "id": "bad id"}}),
    ("posts.publish", {"author": "s:1", "post": {"title": "t", "color": "red"}}),
    ("posts.get", {"post": ""}),
]


@pytest.mark.parametrize(("method", "params"), BAD_PARAMS)
async def test_bad_params_are_invalid_params(rpc: Rpc, method: str, params: dict[str, Any]) -> None:
    """Missing, unknown, mistyped or out-of-range params, and following yourself, get -32602."""
    error = await rpc.error(method, params)

    assert error["code"] == -32602, error


UNKNOWN = [
    ("social.follow", {"follower": "s:1", "followee": "s:ghost"}, "s:ghost"),
    ("social.unfollow", {"follower": "s:ghost", "followee": "s:1"}, "s:ghost"),
    ("social.following", {"user": "s:ghost"}, "s:ghost"),
    ("social.followers", {"user": "s:ghost", "limit": 1000}, "s:ghost"),
    ("social.counts", {"user": "s:ghost"}, "s:ghost"),
    ("social.recommend", {"user": "s:1", "post": "no-post"}, "no-post"),
    ("social.unrecommend", {"user": "s:ghost", "post": "no-post"}, "s:ghost"),
    ("social.recommenders", {"post": "no-post"}, "no-post"),
    ("social.friends_who_recommended", {"user": "s:1", "post": "no-post"}, "no-post"),
    ("social.who_to_follow", {"user": "s:ghost"}, "s:ghost"),
    ("posts.publish", {"author": "s:ghost", "post": {"title": "t"}}, "s:ghost"),
    ("posts.get", {"post": "no-post"}, "no-post"),
]


@pytest.mark.parametrize(("method", "params", "missing"), UNKNOWN)
async def test_unknown_ids_are_not_found(
    rpc: Rpc, method: str, params: dict[str, Any], missing: str
) -> None:
    """An unknown user or post gets -32004 naming the id."""
    error = await rpc.error(method, params)

    assert error["code"] == -32004, error
    assert error["data"]["id"] == missing


async def test_a_taken_post_id_is_already_exists(rpc: Rpc, world: World) -> None:
    """Publishing with an id that is taken gets -32009 naming the post."""
    params: dict[str, Any] = {
        "author": world.id("17"),
        "post": {"title": "t", "id": f"p-{uuid.uuid4().hex}"},
    }
    await rpc.result("posts.publish", params)

    error = await rpc.error("posts.publish", params)

    assert error["code"] == -32009
    assert error["data"] == {"kind": "post", "id": params["post"]["id"]}


async def test_system_stats_show_the_bus(rpc: Rpc, world: World) -> None:
    """system.stats reports the event bus: published events by kind and each subscriber."""
    await rpc.result("posts.publish", {"author": world.id("17"), "post": {"title": "t"}})

    stats = await rpc.result("system.stats")

    kinds = dict(stats["bus"]["by_kind"])
    assert kinds["published"] >= 1
    assert stats["bus"]["subscribers"][0]["name"] == "test"


class Crashing(Actor[Any]):
    """An actor whose every handler fails, as a bug would."""

    async def handle(self, message: Any) -> Any:
        raise RuntimeError("a bug")


async def test_a_crash_is_internal_error_and_a_stopped_service_is_unavailable(
    nursery: trio.Nursery,
) -> None:
    """A crash behind a method is -32603 naming the error type; a service that is down is -32001."""
    crashing = Crashing("social")
    rpc_crash = build_dispatcher(Services(tree=Supervisor("root").statistics, social=crashing.ref))
    down = Crashing("social")
    rpc_down = build_dispatcher(Services(tree=Supervisor("root").statistics, social=down.ref))
    body = b'{"jsonrpc":"2.0","id":1,"method":"social.counts","params":{"user":"a"}}'

    async def run_once() -> None:
        with pytest.raises(RuntimeError):
            await crashing.run()

    nursery.start_soon(run_once)
    await trio.testing.wait_all_tasks_blocked()
    crash = json.loads(await rpc_crash.handle(body, CallContext("127.0.0.1")) or b"")
    unavailable = json.loads(await rpc_down.handle(body, CallContext("127.0.0.1")) or b"")

    assert crash["error"]["code"] == -32603
    assert crash["error"]["data"] == {"type": "RuntimeError"}
    assert unavailable["error"]["code"] == -32001
    assert unavailable["error"]["message"] == "service unavailable"


# -- the whole server over HTTP ----------------------------------------------------


async def test_social_methods_over_http(
    world: World, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The server answers the social methods over real HTTP as the file says, and stays healthy."""
    settings = Settings(
        data_dir=tmp_path, graph_url=f"ladybug://{world.where}", redis_url="memory://"
    )
    root: Supervisor = await nursery.start(serve, settings, ServeOptions(port=0, readers=3))
    (api,) = [child for child in root.statistics().children if child.id == "api"]
    author, user = world.id(MOST_FOLLOWED), world.id("17")
    expected = world.expected
    try:
        async with httpx.AsyncClient(base_url=api.detail.binds[0]) as client:

            async def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
                body = {"jsonrpc": "2.0", "id": "x", "method": method, "params": params}
                response = await client.post("/rpc", json=body)
                assert response.status_code == 200
                reply: dict[str, Any] = response.json()
                return reply

            counts = await call("social.counts", {"user": author})
            assert counts["result"] == {
                "following": len(expected.following[author]),
                "followers": len(expected.followers[author]),
            }
            page = await call("social.followers", {"user": author, "limit": 1000})
            assert page["result"]["users"] == sorted(expected.followers[author])[:1000]
            suggestions = await call("social.who_to_follow", {"user": user, "limit": 5})
            assert suggestions["result"]["suggestions"] == [
                {"user": u, "mutual": m} for u, m in expected.who_to_follow(user, 5)
            ]
            published = await call("posts.publish", {"author": author, "post": {"title": "t"}})
            assert published["result"]["followers_notified"] == 1767
            post = published["result"]["post"]
            friend = sorted(expected.following[user])[0]
            await call("social.recommend", {"user": friend, "post": post})
            friends = await call("social.friends_who_recommended", {"user": user, "post": post})
            assert friends["result"] == {"users": [friend], "total": 1}
            self_follow = await call("social.follow", {"follower": user, "followee": user})
            assert self_follow["error"]["code"] == -32602
            unknown = await call("posts.get", {"post": "nope"})
            assert unknown["error"]["code"] == -32004
            health = (await client.get("/health")).json()
            assert health["status"] == "ok"
            social = next(child for child in health["children"] if child["id"] == "social")
            assert [child["id"] for child in social["children"]] == [
                "graph_reader-0", "graph_reader-1", "graph_reader-2", "graph_writer"
            ]  # fmt: skip
    finally:
        root.request_stop()
