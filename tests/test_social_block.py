"""Blocks in the social graph, end to end, on both graph backends.

Each test runs the real readers and writer behind the handle (:func:`running_social`)
over an empty graph: a fresh Ladybug database under ``tmp_path``, or the
Neo4j server shared by the test session, where every id carries a prefix
unique to the test (as in :mod:`tests.social_world`). What a write did is
checked with a direct read of the graph, never through the code under test;
what it published, by draining the test's bus subscription. The last test
runs the whole server (embedded graph) and calls over ``/ws`` with a user's
token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from trio_websocket import open_websocket_url

from actors.social import (
    Block,
    Blocked,
    BlockedError,
    Follow,
    Followed,
    InvalidArgument,
    Neighbours,
    NotFound,
    Unblock,
    Unblocked,
    Unfollowed,
    UsersPage,
)
from client import websocket_url
from stores.graph import Row
from tests.in_process import invoke_in_thread, serving
from tests.social_world import Rpc, Social, World, new_users


async def query(social: Social, cypher: str, **params: Any) -> list[Row]:
    """Read the graph directly, on a session of its own."""
    session = social.store.session()
    try:
        return await session.read(cypher, params)
    finally:
        session.close()


async def blocks(social: Social, *users: str) -> list[tuple[str, str, int]]:
    """The ``BLOCKS`` edges from ``users`` as ``(blocker, blocked, at)``, sorted."""
    rows = await query(
        social,
        "MATCH (a:User)-[k:BLOCKS]->(b:User) WHERE a.id IN $users "
        "RETURN a.id AS blocker, b.id AS blocked, k.at AS at",
        users=list(users),
    )
    return sorted((row["blocker"], row["blocked"], row["at"]) for row in rows)


async def follows(social: Social, *users: str) -> list[tuple[str, str]]:
    """The ``FOLLOWS`` edges from ``users`` as ``(follower, followee)``, sorted."""
    rows = await query(
        social,
        "MATCH (a:User)-[:FOLLOWS]->(b:User) WHERE a.id IN $users "
        "RETURN a.id AS follower, b.id AS followee",
        users=list(users),
    )
    return sorted((row["follower"], row["followee"]) for row in rows)


# -- the social graph --------------------------------------------------------------


async def test_block_creates_one_edge_and_a_repeat_changes_nothing(
    social: Social, world: World
) -> None:
    """A new block writes one BLOCKS edge stamped then and publishes Blocked; a repeat does neither."""  # noqa: E501
    user, other = await new_users(social, world, "user", "other")
    social.clock.now = 500

    assert await social.call(Block(user, other)) is True
    assert await social.call(Block(user, other)) is False

    assert await blocks(social, user, other) == [(user, other, 500)]
    assert social.received() == [Blocked(user, other, 500)]


@pytest.mark.parametrize(
    ("blocker_follows", "blocked_follows"),
    [(True, True), (True, False), (False, True), (False, False)],
    ids=["both-ways", "blocker-only", "blocked-only", "none"],
)
async def test_block_removes_the_follows_both_ways_and_publishes_them_first(
    social: Social, world: World, blocker_follows: bool, blocked_follows: bool
) -> None:
    """A block removes each follow between the two users, publishing Blocked and then
    Unfollowed for each (the blocker's first), and leaves their other follows alone."""
    a, b, c = await new_users(social, world, "a", "b", "c")
    for follower, followee in [(a, c), (c, b), (c, a), (b, c)]:
        await social.call(Follow(follower, followee))
    if blocker_follows:
        await social.call(Follow(a, b))
    if blocked_follows:
        await social.call(Follow(b, a))
    social.received()
    social.clock.now = 900

    assert await social.call(Block(a, b)) is True

    expected: list[object] = []
    if blocker_follows:
        expected.append(Unfollowed(a, b, 900))
    if blocked_follows:
        expected.append(Unfollowed(b, a, 900))
    assert social.received() == [Blocked(a, b, 900), *expected]
    assert await follows(social, a, b, c) == sorted([(a, c), (c, b), (c, a), (b, c)])


async def test_a_block_refuses_follows_either_way(social: Social, world: World) -> None:
    """While a block stands neither user may follow the other: BlockedError, no edge, no event."""
    blocker, blocked, third = await new_users(social, world, "blocker", "blocked", "third")
    await social.call(Block(blocker, blocked))
    social.received()

    for follower, followee in [(blocked, blocker), (blocker, blocked)]:
        with pytest.raises(BlockedError) as refused:
            await social.call(Follow(follower, followee))
        assert (refused.value.follower, refused.value.followee) == (follower, followee)
    assert await social.call(Follow(blocked, third)) is True

    assert await follows(social, blocker, blocked) == [(blocked, third)]
    assert [type(event) for event in social.received()] == [Followed]
    assert social.writer.statistics().state == "running"


async def test_unblock_removes_the_block_and_restores_no_follow(
    social: Social, world: World
) -> None:
    """Unblocking removes the edge once and publishes Unblocked; the removed follows stay
    removed, and a follow is allowed again."""
    a, b = await new_users(social, world, "a", "b")
    await social.call(Follow(a, b))
    await social.call(Follow(b, a))
    await social.call(Block(a, b))
    social.received()
    social.clock.now = 1200

    assert await social.call(Unblock(a, b)) is True
    assert await social.call(Unblock(a, b)) is False

    assert social.received() == [Unblocked(a, b, 1200)]
    assert await blocks(social, a, b) == []
    assert await follows(social, a, b) == []
    assert await social.call(Follow(b, a)) is True


async def test_each_user_blocks_on_their_own(social: Social, world: World) -> None:
    """A block has a direction: when both block each other, one unblock leaves the other's
    block, which still refuses follows."""
    a, b = await new_users(social, world, "a", "b")
    social.clock.now = 100

    assert await social.call(Block(a, b)) is True
    assert await social.call(Block(b, a)) is True
    assert await social.call(Unblock(a, b)) is True

    assert await blocks(social, a, b) == [(b, a, 101)]
    with pytest.raises(BlockedError):
        await social.call(Follow(a, b))


async def test_blocking_pages_list_whom_a_user_blocks(social: Social, world: World) -> None:
    """Neighbours "blocking" pages through the users one blocks in id order, each once, on
    small pages and on pages split into key ranges; who blocks the user is not listed."""
    user, blocker = await new_users(social, world, "user", "blocker")
    blocked = [world.id(f"b{i:03}") for i in range(150)]
    await social.store.import_nodes("User", blocked)
    await social.store.import_relationships(
        "BLOCKS", [(user, other) for other in blocked], {"at": [1] * len(blocked)}
    )
    await social.call(Block(blocker, user))

    for limit in (7, 100):  # 100 > page_chunk 64: read in ranges by several readers
        seen: list[str] = []
        after = ""
        while True:
            page: UsersPage = await social.call(Neighbours(user, "blocking", limit, after))
            seen += page.users
            if page.last is None:
                break
            after = page.last
        assert seen == sorted(blocked), limit

    assert await social.call(Neighbours(blocker, "blocking", 10)) == UsersPage((user,), None)


async def test_unknown_users_are_not_found(social: Social, world: World) -> None:
    """Each block write names the unknown user, and publishes nothing."""
    (user,) = await new_users(social, world, "user")
    ghost = world.id("ghost")
    cases = [Block(user, ghost), Block(ghost, user), Unblock(user, ghost), Unblock(ghost, user)]
    for request in cases:
        with pytest.raises(NotFound) as missing:
            await social.call(request)
        assert (missing.value.kind, missing.value.id) == ("user", ghost), request
    with pytest.raises(NotFound):
        await social.call(Neighbours(ghost, "blocking", 10))

    assert social.received() == []


async def test_blocking_yourself_is_invalid(social: Social, world: World) -> None:
    """A user cannot block themself, and the refusal writes and publishes nothing."""
    (user,) = await new_users(social, world, "user")

    with pytest.raises(InvalidArgument):
        await social.call(Block(user, user))

    assert await blocks(social, user) == []
    assert social.received() == []
    assert social.writer.statistics().state == "running"


# -- JSON-RPC ----------------------------------------------------------------------


async def test_rpc_methods_answer_with_their_result_shape(rpc: Rpc, world: World) -> None:
    """social.block/unblock/blocking answer as documented, and a follow across a block is
    -32003 "forbidden" with data.reason "blocked"."""
    user, one, two = await new_users(rpc.social, world, "user", "one", "two")
    block = {"user": user, "blocked": one}

    assert await rpc.result("social.block", block) == {"created": True}
    assert await rpc.result("social.block", block) == {"created": False}
    assert await rpc.result("social.block", {"user": user, "blocked": two}) == {"created": True}
    first = await rpc.result("social.blocking", {"user": user, "limit": 1})
    assert first["users"] == [one]
    second = await rpc.result(
        "social.blocking", {"user": user, "limit": 1, "cursor": first["next_cursor"]}
    )
    assert second == {"users": [two], "next_cursor": None}
    error = await rpc.error("social.follow", {"follower": one, "followee": user})
    assert error == {"code": -32003, "message": "forbidden", "data": {"reason": "blocked"}}
    assert await rpc.result("social.unblock", block) == {"removed": True}
    assert await rpc.result("social.unblock", block) == {"removed": False}
    assert await rpc.result("social.blocking", {"user": user}) == {
        "users": [two],
        "next_cursor": None,
    }

    kinds = [event.kind for event in rpc.social.received()]
    assert kinds == ["blocked", "blocked", "unblocked"]


async def test_rpc_bad_input_gets_clear_errors(rpc: Rpc, world: World) -> None:
    """An unknown user is -32004 naming it; blocking yourself, a malformed id, a missing or
    unknown param and a foreign cursor are -32602; none publishes anything."""
    (user,) = await new_users(rpc.social, world, "user")
    ghost = world.id("ghost")
    unknown: list[tuple[str, dict[str, Any]]] = [
        ("social.block", {"user": user, "blocked": ghost}),
        ("social.block", {"user": ghost, "blocked": user}),
        ("social.unblock", {"user": user, "blocked": ghost}),
        ("social.blocking", {"user": ghost}),
    ]
    for method, params in unknown:
        error = await rpc.error(method, params)
        assert error["code"] == -32004, (method, params)
        assert error["data"] == {"kind": "user", "id": ghost}, (method, params)

    self_block = await rpc.error("social.block", {"user": user, "blocked": user})
    assert self_block["data"] == {"detail": "a user cannot block themself"}
    invalid: list[tuple[str, dict[str, Any]]] = [
        ("social.block", {"user": user, "blocked": user}),
        ("social.block", {"user": user, "blocked": "bad id!"}),
        ("social.block", {"user": user}),
        ("social.unblock", {"user": user, "blocked": ghost, "at": 1}),
        ("social.blocking", {"user": user, "cursor": "bm9wZQ"}),
        ("social.blocking", {"user": user, "limit": 0}),
    ]
    for method, params in invalid:
        error = await rpc.error(method, params)
        assert error["code"] == -32602, (method, params)

    assert rpc.social.received() == []


# -- over /ws, with a user's token ------------------------------------------------------


async def test_a_users_token_blocks_only_for_itself(tmp_path: Path) -> None:
    """Over /ws, user 1's token may block and list blocks as user 1; blocking or listing as
    user 2 gets -32003 naming the acting param."""
    edges = tmp_path / "edges.txt"
    edges.write_text("1 2\n2 1\n2 3\n")
    directory = tmp_path / "data"
    loaded = await invoke_in_thread(
        CliRunner(), ["load", "graph", str(edges), "--data-dir", str(directory)]
    )
    assert loaded.exit_code == 0, loaded.output

    def request(id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}

    with trio.fail_after(30):
        async with serving(directory) as server:
            url = f"{websocket_url(server.url)}?token={server.token('1')}"
            async with open_websocket_url(url) as ws:
                await ws.send_message(
                    json.dumps(
                        [
                            request(1, "social.block", {"user": "1", "blocked": "2"}),
                            request(2, "social.block", {"user": "2", "blocked": "3"}),
                            request(3, "social.blocking", {"user": "2"}),
                        ]
                    )
                )
                mine, theirs, their_list = json.loads(await ws.get_message())
                await ws.send_message(json.dumps(request(4, "social.blocking", {"user": "1"})))
                listed = json.loads(await ws.get_message())
                follow = request(5, "social.follow", {"follower": "1", "followee": "2"})
                await ws.send_message(json.dumps(follow))
                refused = json.loads(await ws.get_message())

    assert mine["result"] == {"created": True}
    assert theirs["error"]["code"] == their_list["error"]["code"] == -32003
    assert theirs["error"]["data"]["reason"] == (
        "social.block acts for user = the token's user only"
    )
    assert listed["result"] == {"users": ["2"], "next_cursor": None}
    assert refused["error"] == {
        "code": -32003,
        "message": "forbidden",
        "data": {"reason": "blocked"},
    }
