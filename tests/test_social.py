"""The social graph on both graph backends, against answers computed from the data file.

The graph is a real slice of SNAP soc-Slashdot0902 (see
:mod:`tests.social_world`), loaded once per backend for the whole module;
every test runs the real readers and writer under a supervisor, called
through the :class:`actors.social.Social` handle as the API calls them.
Tests that write create their own users and posts (unique names), so they
never change what the other tests expect.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.runtime import Actor, ActorCrashed
from actors.social import (
    AlreadyExists,
    Counts,
    CountsResult,
    DeletePost,
    Follow,
    Followed,
    FriendsWhoRecommended,
    GetPost,
    InvalidArgument,
    Neighbours,
    NotFound,
    PostDeleted,
    PostDraft,
    Publish,
    Published,
    RankedUsers,
    ReaderPool,
    Recommend,
    Recommended,
    Recommenders,
    Suggestion,
    Unfollow,
    Unfollowed,
    Unrecommend,
    Unrecommended,
    UsersPage,
    WhoToFollow,
    WorkerCrashed,
    WorkerUnavailable,
)
from actors.social import Social as SocialHandle
from actors.social.messages import Direction
from actors.social.reads import top_suggestions
from tests.social_world import Social, World, load_world

MOST_FOLLOWED = "398"  # 1,767 followers and 1,770 followings in the slice


@pytest.fixture(scope="module", params=["ladybug", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> World:
    """The Slashdot slice, loaded once per backend."""
    kind: str = request.param
    if kind == "ladybug":
        where = str(tmp_path_factory.mktemp("social") / "graph")
    else:
        where = request.getfixturevalue("neo4j_url")
    return load_world(kind, where, uuid.uuid4().hex[:8], data_dir)


async def new_users(social: Social, world: World, *names: str) -> list[str]:
    """Create users unique to this test; return their ids."""
    tag = uuid.uuid4().hex[:6]
    ids = [world.id(f"{tag}-{name}") for name in names]
    await social.store.import_nodes("User", ids)
    return ids


async def walk(social: Social, user: str, direction: Direction, limit: int) -> list[str]:
    """Every id of ``user``'s neighbour list, page after page."""
    users: list[str] = []
    after = ""
    for _ in range(10_000):
        page: UsersPage = await social.call(Neighbours(user, direction, limit, after))
        assert len(page.users) <= limit
        users += page.users
        if page.last is None:
            return users
        assert page.last == page.users[-1]
        after = page.last
    raise AssertionError("paging did not end")


def sample(world: World, count: int, seed: int = 7) -> list[str]:
    """``count`` users of the slice picked at random (seeded), plus the most followed one."""
    return [*random.Random(seed).sample(world.users, count), world.id(MOST_FOLLOWED)]


async def test_counts_match_the_edges(social: Social, world: World) -> None:
    """social counts equal the numbers of distinct followings and followers in the file."""
    for user in sample(world, 40):
        result = await social.call(Counts(user))
        expected = CountsResult(
            len(world.expected.following[user]), len(world.expected.followers[user])
        )
        assert result == expected, user


async def test_concurrent_counts_are_batched_and_each_gets_its_own_answer(
    social: Social, world: World
) -> None:
    """60 Counts sent at once (an unknown id among them) are answered by fewer statements than
    calls (the counts waiting in a reader share one), and each caller gets its own user's
    counts; the unknown id alone gets NotFound."""
    users = sample(world, 59)
    missing = f"nobody-{uuid.uuid4().hex[:8]}"
    answers: dict[str, Any] = {}
    statements = 0
    original = type(social.readers[0]).handle_batch

    async def counting(reader: Any, requests: list[Any]) -> list[Any]:
        nonlocal statements
        statements += 1
        return await original(reader, requests)

    async def ask(user: str) -> None:
        try:
            answers[user] = await social.call(Counts(user))
        except NotFound as error:
            answers[user] = error

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(social.readers[0]), "handle_batch", counting)
        async with trio.open_nursery() as nursery:
            for user in [*users, missing]:
                nursery.start_soon(ask, user)
    for user in users:
        expected = (len(world.expected.following[user]), len(world.expected.followers[user]))
        assert answers[user] == CountsResult(*expected), user
    assert isinstance(answers[missing], NotFound)
    assert answers[missing].id == missing
    assert 1 <= statements < 59  # at least two counts shared a statement


@pytest.mark.parametrize("direction", ["following", "followers"])
async def test_pages_are_complete_and_duplicate_free(
    social: Social, world: World, direction: Direction
) -> None:
    """Walking pages of any size yields the whole neighbour list once, ascending by id."""
    neighbours = world.expected.following if direction == "following" else world.expected.followers
    big, mid = world.id(MOST_FOLLOWED), world.id("17")  # about 1,770 and 370 neighbours
    cases = [(big, 300), (big, 1000), (mid, 64), (mid, 65)]  # pages of 64+ ids are split
    cases += [(user, limit) for user in sample(world, 6, seed=3)[:-1] for limit in (1, 7)]
    for user, limit in cases:
        users = await walk(social, user, direction, limit)
        assert users == sorted(neighbours[user]), (user, limit)


async def test_large_pages_are_gathered_from_several_readers(social: Social, world: World) -> None:
    """A 1,000-id page is read as key ranges spread over more than one reader."""
    before = [reader.statistics().messages_handled for reader in social.readers]
    page = await social.call(Neighbours(world.id(MOST_FOLLOWED), "followers", 1000))
    after = [reader.statistics().messages_handled for reader in social.readers]
    busy = [b - a for a, b in zip(before, after, strict=True)]

    assert len(page.users) == 1000
    assert page.users == tuple(sorted(world.expected.followers[world.id(MOST_FOLLOWED)])[:1000])
    assert sum(count > 0 for count in busy) >= 2, busy


async def test_who_to_follow_matches_friends_of_friends(social: Social, world: World) -> None:
    """Suggestions are the unfollowed friends of friends, by mutual count then id."""
    for user in [*sample(world, 8, seed=11), world.id("17"), world.id("405")]:
        for limit in (10, 100):
            suggestions = await social.call(WhoToFollow(user, limit))
            expected = world.expected.who_to_follow(user, limit)
            assert suggestions == tuple(Suggestion(u, m) for u, m in expected), (user, limit)


@pytest.mark.parametrize(
    ("mutuals", "limit", "decided"),
    [
        ([5, 4, 3, 2, 1], 2, True),  # the 2nd (4) beats everything left out (<= 1)
        ([5, 4, 4, 4, 4], 2, False),  # another 4 may have been cut, with a smaller id
        ([3, 3, 3], 2, True),  # not a full window: every candidate is there
    ],
)
def test_top_suggestions_decide_only_when_no_tie_is_cut(
    mutuals: list[int], limit: int, decided: bool
) -> None:
    """Top candidates by mutual count decide the suggestions unless a tie straddles the cut."""
    rows = [(f"u{9 - i}", m) for i, m in enumerate(mutuals)]

    result = top_suggestions(rows, limit=limit, window=5)

    if decided:
        assert (
            result
            == tuple(
                sorted(
                    (Suggestion(id, mutual) for id, mutual in rows),
                    key=lambda s: (-s.mutual, s.user),
                )
            )[:limit]
        )
    else:
        assert result is None


async def test_recommenders_and_friends_who_recommended(social: Social, world: World) -> None:
    """Recommenders come most recent first with their total; friends are the followed ones among them."""  # noqa: E501
    rng = random.Random(5)
    author = world.id("405")
    result = await social.call(Publish(author, PostDraft(title="On graphs")))
    post = result.post
    recommenders = rng.sample(world.users, 60)
    recommenders.append(world.id("226"))  # followed by 398
    times: dict[str, int] = {}
    for index, user in enumerate(recommenders):
        social.clock.now = 1_000 + (index // 3)  # groups of three share a time: ties by id
        assert await social.call(Recommend(user, post)) is True
        times[user] = 1_000 + (index // 3)
    assert await social.call(Recommend(recommenders[0], post)) is False

    order = sorted(times, key=lambda user: (-times[user], user))
    assert await social.call(Recommenders(post, 20)) == RankedUsers(tuple(order[:20]), 61)
    for user in [world.id(MOST_FOLLOWED), world.id("17"), *rng.sample(world.users, 5)]:
        friends = [r for r in order if r in world.expected.following[user]]
        answer = await social.call(FriendsWhoRecommended(user, post, 5))
        assert answer == RankedUsers(tuple(friends[:5]), len(friends)), user
    assert (await social.call(FriendsWhoRecommended(world.id(MOST_FOLLOWED), post, 20))).total > 0

    assert await social.call(Unrecommend(order[0], post)) is True
    assert await social.call(Unrecommend(order[0], post)) is False
    after = await social.call(Recommenders(post, 3))
    assert after == RankedUsers(tuple(order[1:4]), 60)
    assert (await social.call(GetPost(post))).recommendations == 60


async def test_recommenders_of_a_post_nobody_recommended(social: Social, world: World) -> None:
    """A post without recommendations has no recommenders and no friends who recommended it."""
    result = await social.call(Publish(world.id("17"), PostDraft(title="Quiet")))

    assert await social.call(Recommenders(result.post, 20)) == RankedUsers((), 0)
    answer = await social.call(FriendsWhoRecommended(world.id(MOST_FOLLOWED), result.post, 20))
    assert answer == RankedUsers((), 0)


async def test_follow_and_unfollow_publish_events_once(social: Social, world: World) -> None:
    """A new follow and its removal each say so and publish one event; repeats change nothing."""
    a, b = await new_users(social, world, "a", "b")
    social.clock.now = 500

    assert await social.call(Follow(a, b)) is True
    assert await social.call(Follow(a, b)) is False
    assert await social.call(Counts(a)) == CountsResult(following=1, followers=0)
    assert await social.call(Neighbours(b, "followers", 10)) == UsersPage((a,), None)
    assert await social.call(Unfollow(a, b)) is True
    assert await social.call(Unfollow(a, b)) is False
    assert await social.call(Counts(b)) == CountsResult(following=0, followers=0)
    assert social.received() == [Followed(a, b, 500), Unfollowed(a, b, 502)]


async def test_recommend_events(social: Social, world: World) -> None:
    """Recommending and withdrawing publish one event each, stamped with the writer's clock."""
    (user,) = await new_users(social, world, "reader")
    post = (await social.call(Publish(world.id("17"), PostDraft(title="T")))).post
    social.received()
    social.clock.now = 900

    assert await social.call(Recommend(user, post)) is True
    assert await social.call(Unrecommend(user, post)) is True
    assert social.received() == [Recommended(user, post, 900), Unrecommended(user, post, 901)]


async def test_publish_notifies_every_follower_exactly_once(social: Social, world: World) -> None:
    """Publishing as the most followed user sends each of its followers in exactly one chunk."""
    author = world.id(MOST_FOLLOWED)
    followers = world.expected.followers[author]
    social.received()

    result = await social.call(Publish(author, PostDraft(title="Big news", id=world.id("news"))))
    events = [event for event in social.received() if isinstance(event, Published)]
    notified = Counter(user for event in events for user in event.followers)

    assert result.post == world.id("news")
    assert result.followers_notified == len(followers) == 1767
    assert set(notified) == followers
    assert set(notified.values()) == {1}
    chunks = len(events)
    assert chunks >= 18  # 1,767 followers in chunks of about 100
    assert sorted(event.chunk for event in events) == list(range(chunks))
    assert {(e.post, e.author, e.chunks) for e in events} == {(result.post, author, chunks)}


async def test_publish_without_followers_yields_one_empty_chunk(
    social: Social, world: World
) -> None:
    """An author nobody follows publishes one event with no followers."""
    (author,) = await new_users(social, world, "lonely")

    result = await social.call(Publish(author, PostDraft(title="Hello?")))
    events = [event for event in social.received() if isinstance(event, Published)]

    assert result.followers_notified == 0
    assert [(e.followers, e.chunk, e.chunks) for e in events] == [((), 0, 1)]


async def test_publish_writes_the_post_topics_and_publication(social: Social, world: World) -> None:
    """A published post reads back whole, linked to its author, topics and publication."""
    author = world.id("17")
    social.clock.now = 1234
    draft = PostDraft(
        title="Graphs «in» trio",
        url="https://example.com/p",
        tags=("graphs", "trio", "graphs"),
        publication=f"{world.prefix} Weekly",
        reading_time=4.5,
    )

    result = await social.call(Publish(author, draft))
    view = await social.call(GetPost(result.post))
    session = social.store.session()
    topics = await session.read(
        "MATCH (:User {id: $a})-[:WROTE]->(p:Post {id: $p})-[:TAGGED]->(t:Topic) "
        "RETURN t.name AS name ORDER BY name",
        {"a": author, "p": result.post},
    )
    publication = await session.read(
        "MATCH (p:Post {id: $p})-[:PUBLISHED_IN]->(x:Publication) RETURN x.name AS name",
        {"p": result.post},
    )

    assert result.post.startswith("gen")
    assert (view.id, view.author, view.title, view.url) == (
        result.post, author, draft.title, draft.url
    )  # fmt: skip
    assert view.tags == ("graphs", "trio")
    assert (view.publication, view.published_at, view.reading_time) == (
        draft.publication, 1234, 4.5
    )  # fmt: skip
    assert (view.claps, view.recommendations) == (0, 0)
    assert [row["name"] for row in topics] == ["graphs", "trio"]
    assert publication == [{"name": draft.publication}]


async def test_publish_refuses_a_taken_id_and_an_unknown_author(
    social: Social, world: World
) -> None:
    """Publishing an id twice is AlreadyExists; an unknown author is NotFound, and nothing is written."""  # noqa: E501
    post = world.id(f"dup-{uuid.uuid4().hex[:6]}")
    await social.call(Publish(world.id("17"), PostDraft(title="first", id=post)))

    with pytest.raises(AlreadyExists) as taken:
        await social.call(Publish(world.id("17"), PostDraft(title="second", id=post)))
    with pytest.raises(NotFound) as missing:
        await social.call(Publish(world.id("nobody"), PostDraft(title="x", id=post + "x")))

    assert (taken.value.kind, taken.value.id) == ("post", post)
    assert (missing.value.kind, missing.value.id) == ("user", world.id("nobody"))
    assert (await social.call(GetPost(post))).title == "first"
    with pytest.raises(NotFound):
        await social.call(GetPost(post + "x"))


async def test_unknown_ids_are_not_found(social: Social, world: World) -> None:
    """Every operation names the unknown user or post it was asked about."""
    user, ghost = world.id("17"), world.id("ghost")
    post = (await social.call(Publish(user, PostDraft(title="T")))).post
    cases = [
        (Counts(ghost), "user", ghost),
        (Neighbours(ghost, "following", 10), "user", ghost),
        (Neighbours(ghost, "followers", 500), "user", ghost),
        (Follow(user, ghost), "user", ghost),
        (Follow(ghost, user), "user", ghost),
        (Unfollow(user, ghost), "user", ghost),
        (Recommend(ghost, post), "user", ghost),
        (Recommend(user, "no-post"), "post", "no-post"),
        (Unrecommend(user, "no-post"), "post", "no-post"),
        (Recommenders("no-post", 5), "post", "no-post"),
        (FriendsWhoRecommended(ghost, post, 5), "user", ghost),
        (FriendsWhoRecommended(user, "no-post", 5), "post", "no-post"),
        (WhoToFollow(ghost, 5), "user", ghost),
        (GetPost("no-post"), "post", "no-post"),
    ]
    for request, kind, id in cases:
        with pytest.raises(NotFound) as missing:
            await social.call(request)
        assert (missing.value.kind, missing.value.id) == (kind, id), request


async def test_following_yourself_is_invalid(social: Social, world: World) -> None:
    """A user cannot follow themself, and the refusal changes nothing."""
    user = world.id("17")

    with pytest.raises(InvalidArgument):
        await social.call(Follow(user, user))
    assert social.received() == []
    assert social.writer.statistics().state == "running"


async def test_a_crashing_reader_is_restarted(social: Social, world: World) -> None:
    """A query the backend rejects crashes its reader (a bug); it is restarted and serves again."""
    with pytest.raises(ActorCrashed):
        await social.pool.read("MATCH (u:User RETURN u", {})
    with trio.fail_after(5):
        # Polls as an operator would: the restart (after a real backoff delay)
        # has no event an outside observer could wait on.
        while True:
            if sum(child.restarts for child in social.supervisor.statistics().children):
                break
            await trio.sleep(0.01)
    assert await social.call(Counts(world.id("17"))) == CountsResult(
        len(world.expected.following[world.id("17")]),
        len(world.expected.followers[world.id("17")]),
    )


# -- the lean read path -------------------------------------------------------------


def handled(social: Social) -> dict[str, int]:
    """Messages each actor of the social subtree has handled so far, by name."""
    actors = [*social.readers, social.writer]
    return {actor.name: actor.statistics().messages_handled for actor in actors}


async def test_a_read_crosses_one_mailbox(social: Social, world: World) -> None:
    """The subtree is readers and the writer only, and each read is one message to one reader."""
    user = world.id("17")
    before = handled(social)

    for request in [
        Counts(user),
        Neighbours(user, "followers", 10),
        WhoToFollow(user, 10),
        FriendsWhoRecommended(user, "no-such-post", 5),
    ]:
        with contextlib.suppress(NotFound):
            await social.call(request)
    after = handled(social)

    assert [child.id for child in social.supervisor.statistics().children] == [
        "graph_reader-0", "graph_reader-1", "graph_reader-2", "graph_writer"
    ]  # fmt: skip
    assert sum(after.values()) - sum(before.values()) == 4
    assert after["graph_writer"] == before["graph_writer"]


async def test_a_fan_out_finishes_when_its_caller_gives_up(social: Social, world: World) -> None:
    """A publish whose caller is cancelled still tells every follower, once."""
    author = world.id(MOST_FOLLOWED)
    followers = world.expected.followers[author]
    (user,) = await new_users(social, world, "later")
    social.received()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(social.handle.call, Publish(author, PostDraft(title="Left behind")))
        await trio.testing.wait_all_tasks_blocked()  # the writer has it: the caller waits
        nursery.cancel_scope.cancel()
    await social.call(Follow(user, author))  # the writer's next message: after the fan-out
    events = [event for event in social.received() if isinstance(event, Published)]
    notified = Counter(follower for event in events for follower in event.followers)

    assert set(notified) == followers
    assert set(notified.values()) == {1}


async def test_a_posts_fan_out_precedes_its_deletion(social: Social, world: World) -> None:
    """A delete sent while its post fans out is published after every chunk of the fan-out."""
    author, post = world.id(MOST_FOLLOWED), world.id(f"gone-{uuid.uuid4().hex[:6]}")
    social.received()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(social.call, Publish(author, PostDraft(title="Oops", id=post)))
        await trio.testing.wait_all_tasks_blocked()
        assert await social.call(DeletePost(post)) is True
    kinds = [type(event) for event in social.received()]

    assert kinds[-1] is PostDeleted
    assert kinds[:-1] == [Published] * (len(kinds) - 1)
    assert len(kinds) - 1 >= 18  # 1,767 followers in chunks of about 100


class Broken(Actor[Any]):
    """A stand-in reader or writer whose every handler fails, as a bug would."""

    async def handle(self, message: Any) -> Any:
        raise RuntimeError("a bug")


async def test_the_handle_names_the_failed_worker(nursery: trio.Nursery) -> None:
    """A reader crashing on a read is WorkerCrashed; an actor that is down is WorkerUnavailable."""
    reader, writer = Broken("graph_reader-0"), Broken("graph_writer")
    handle = SocialHandle(ReaderPool([reader.ref]), writer.ref)

    async def crash_once() -> None:
        with pytest.raises(RuntimeError):
            await reader.run()

    nursery.start_soon(crash_once)
    await trio.testing.wait_all_tasks_blocked()

    with pytest.raises(WorkerCrashed):
        await handle.call(Counts("a"))
    with pytest.raises(WorkerUnavailable):
        await handle.call(Counts("a"))  # the reader is gone now, and nobody restarts it
    with pytest.raises(WorkerUnavailable):
        await handle.call(Follow("a", "b"))
