"""The feed actors' own rules: idle expiry, LRU cap, crash isolation, the remote scorer.

These run the real feeds subtree over an in-memory catalog (the story index
with ``store=None``), the in-process cache and a context source that answers
from a dict: a test double of the graph for the actors' timing and
supervision logic, which tests/test_feeds.py covers on the real graphs. Time
rules run on the autojump clock; the remote scorer talks to a real model
service over HTTP (Starlette on hypercorn, in the test).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.bus import EventBus
from actors.feeds import (
    Catalog,
    Feeds,
    FeedSettings,
    GetFeed,
    LinearScorer,
    PipelineParams,
    RawContext,
    RemoteScorer,
    StoryIndex,
    StoryRecord,
    feeds_subtree,
)
from actors.runtime import ActorCrashed
from actors.social import NotFound
from protocols.http import HttpServer
from stores.memory import MemoryCache
from supervisor import Supervisor

EPOCH = 1_700_000_000.0
PARAMS = PipelineParams(trending_count=0, diversity_max=10, diversity_window=10)


class DictContext:
    """Answers user contexts from a dict; ``crasher`` raises a bug."""

    def __init__(self, contexts: dict[str, RawContext]) -> None:
        self.contexts = contexts
        self.loads = 0

    async def load(self, user: str) -> RawContext:
        await trio.lowlevel.checkpoint()
        self.loads += 1
        if user == "crasher":
            raise RuntimeError("a bug in the context source")
        if user not in self.contexts:
            raise NotFound("user", user)
        return self.contexts[user]


def catalog() -> Catalog:
    result = Catalog()
    result.add_stories(
        StoryRecord(f"p{i}", f"a{i % 5}", int(EPOCH - 3600 * i), claps=i) for i in range(40)
    )
    return result


def context(*authors: str) -> RawContext:
    return RawContext(following=list(authors), topics=[], publications=[], muted=[], read=[])


@asynccontextmanager
async def running_feeds(
    remote: RemoteScorer | None = None, **settings: Any
) -> AsyncIterator[tuple[Feeds, Supervisor, DictContext]]:
    users = {name: context("a1", "a2", "a3") for name in ["u1", "u2", "u3", "u4"]}
    source = DictContext(users)
    supervisor, feeds = feeds_subtree(
        store=None,
        bus=EventBus(),
        context=source,
        cache=MemoryCache(),
        settings=FeedSettings(params=PARAMS, **settings),
        scorer=LinearScorer.from_file(),
        remote=remote,
        index=StoryIndex(None, PARAMS, catalog=catalog(), clock=lambda: EPOCH),
        clock=lambda: EPOCH + trio.current_time(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        try:
            yield feeds, supervisor, source
        finally:
            supervisor.request_stop()


def builders(supervisor: Supervisor) -> list[tuple[str, str, int]]:
    """``(id, state, restarts)`` of the live feed builders."""
    tree = supervisor.statistics()
    inner = next(child for child in tree.children if child.id == "feed_builders")
    assert inner.detail is not None
    return [(c.id, c.state, c.restarts) for c in inner.detail.children]  # type: ignore[union-attr]


async def test_an_idle_builder_stops_and_a_new_one_serves_the_cached_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A builder stops 5 min after its last request; the next one starts and reads the cache."""
    async with running_feeds() as (feeds, supervisor, source):
        first = await feeds.page("u1", GetFeed(5))
        assert first.cached is False
        assert await feeds.live() == 1
        await trio.sleep(299)
        assert await feeds.live() == 1
        await trio.sleep(2)
        await trio.testing.wait_all_tasks_blocked()
        assert await feeds.live() == 0
        assert builders(supervisor) == []
        again = await feeds.page("u1", GetFeed(5))
        assert again.snapshot == first.snapshot
        assert again.cached is True
        assert source.loads == 1  # served from the cache, not ranked again


async def test_a_snapshot_older_than_the_ttl_is_ranked_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Within the TTL a first page reuses the snapshot; after it, the feed is ranked again."""
    async with running_feeds(idle_timeout=3600) as (feeds, _, _):
        first = await feeds.page("u1", GetFeed(5))
        await trio.sleep(599)
        assert (await feeds.page("u1", GetFeed(5))).snapshot == first.snapshot
        await trio.sleep(2)
        later = await feeds.page("u1", GetFeed(5))
        assert later.snapshot != first.snapshot
        assert later.cached is False


async def test_the_least_recently_used_builder_goes_past_the_cap() -> None:
    """With max_live=2, a third user's builder stops the least recently used one."""
    async with running_feeds(max_live=2) as (feeds, supervisor, _):
        await feeds.page("u1", GetFeed(5))
        await feeds.page("u2", GetFeed(5))
        await feeds.page("u1", GetFeed(5))  # u2 is now the least recently used
        await feeds.page("u3", GetFeed(5))
        await trio.testing.wait_all_tasks_blocked()
        assert await feeds.live() == 2
        assert sorted(child[0].split("#")[0] for child in builders(supervisor)) == ["u1", "u3"]


async def test_a_crashing_build_fails_its_call_and_restarts_that_builder_alone() -> None:
    """A bug in one user's build is an ActorCrashed for that call; other builders carry on."""
    async with running_feeds() as (feeds, supervisor, _):
        fine = await feeds.page("u1", GetFeed(5))
        with pytest.raises(ActorCrashed, match="RuntimeError"):
            await feeds.page("crasher", GetFeed(5))
        await trio.testing.wait_all_tasks_blocked()
        states = {
            child_id.split("#")[0]: (state, restarts)
            for child_id, state, restarts in builders(supervisor)
        }
        assert states["crasher"] == ("running", 1)
        assert states["u1"] == ("running", 0)
        assert (await feeds.page("u1", GetFeed(5))).snapshot == fine.snapshot
        with pytest.raises(NotFound):
            await feeds.page("nobody", GetFeed(5))
        assert supervisor.statistics().is_healthy()


@asynccontextmanager
async def model_service(behaviour: dict[str, str]) -> AsyncIterator[str]:
    """A JSON-RPC model service scoring ``-age`` (newest first); ``behaviour['mode']`` breaks it.

    In ``slow`` mode it answers only when the service stops: later than any client timeout.
    """
    stopping = trio.Event()

    async def score(request: Request) -> Response:
        body = json.loads(await request.body())
        mode = behaviour["mode"]
        if mode == "slow":
            await stopping.wait()
        if mode == "garbage":
            return Response(b"not json", media_type="application/json")
        if mode == "short":
            return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": {"scores": [1]}})
        names = body["params"]["names"]
        age = names.index("log_age_hours")
        scores = [-row[age] for row in body["params"]["features"]]
        return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": {"scores": scores}})

    server = HttpServer(
        Starlette(routes=[Route("/score", score, methods=["POST"])]), host="127.0.0.1", port=0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield f"{server.binds[0]}/score"
        finally:
            stopping.set()
            server.request_stop()


async def test_the_remote_scorer_ranks_and_falls_back_when_the_service_fails() -> None:
    """Scores come from the model service; a slow, garbled or short answer falls back to local."""
    behaviour = {"mode": "ok"}
    async with model_service(behaviour) as url:
        remote = RemoteScorer(url, LinearScorer.from_file(), timeout=1.0)
        async with running_feeds(remote=remote) as (feeds, _, _):
            page = await feeds.page("u1", GetFeed(40))
            posts = [item.post for item in page.items]
            ages = [int(post[1:]) for post in posts]
            assert ages == sorted(ages)  # newest (smallest i) first: the service's order
            assert remote.statistics().remote == 1
            for mode in ["slow", "garbage", "short"]:
                behaviour["mode"] = mode
                await feeds.invalidate("u1")
                again = await feeds.page("u1", GetFeed(40))
                assert len(again.items) == len(page.items)
            assert remote.statistics().fallbacks == {"timeout": 1, "bad_answer": 2}
        await remote.aclose()


def test_remote_scorer_sends_only_the_best_rows_of_a_large_ranking() -> None:
    """Above max_rows the local scorer picks the rows sent; the rest score -inf."""
    local = LinearScorer(np.array([1, 0, 0, 0, 0, 0, 0, 0], np.float32), 0.0, logistic=False)
    remote = RemoteScorer("http://127.0.0.1:9/score", local, max_rows=3)
    features = np.zeros((6, 8), np.float32)
    features[:, 0] = [5, 1, 4, 0, 3, 2]

    async def main() -> np.ndarray:
        async def fake_rows(rows: np.ndarray) -> np.ndarray:
            await trio.lowlevel.checkpoint()
            return rows[:, 0] * 10

        remote._score_rows = fake_rows  # type: ignore[method-assign]
        return await remote.score(features)

    scores = trio.run(main)
    assert scores.tolist() == [50, -np.inf, 40, -np.inf, 30, -np.inf]


def test_feed_events_cross_processes_intact() -> None:
    """Every domain event survives the Pub/Sub encoding, tuples and defaults included."""
    from actors.social import events as ev
    from actors.social.events import decode_event, encode_event

    events = [
        ev.Followed("a", "b", 1), ev.Unfollowed("a", "b", 2), ev.Recommended("a", "p", 3),
        ev.Unrecommended("a", "p", 4), ev.Muted("a", "b", 5), ev.Unmuted("a", "b", 6),
        ev.Blocked("a", "b", 11), ev.Unblocked("a", "b", 12), ev.PostRead("a", "p", 7),
        ev.PostDeleted("p", "b", 8),
        ev.Published("p", "a", 9, ("b", "c"), 0, 1, ("ml",), "pub", 4.5),
        ev.Published("q", "a", 10, (), 0, 1),
    ]  # fmt: skip
    for event in events:
        assert decode_event(encode_event("me", event)) == ("me", event)
