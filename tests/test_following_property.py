"""``following:`` fan-out against a plain model (hypothesis).

For a random follow graph and a random sequence of follows, unfollows and activities,
each ``following:<f>`` channel receives, from the real transformer and the real
:class:`~actors.realtime.following.FollowingIndex`, exactly the activities a plain model
computes from the graph at each activity's time (the actors ``f`` followed then, never
``f``'s own), in order, with consecutive offsets.
"""

from __future__ import annotations

import json
from typing import Any

import hypothesis.strategies as st
import trio
from hypothesis import given, settings

from actors.realtime.following import FollowingIndex
from actors.realtime.nozzle import Batch
from actors.realtime.transform import Rendered
from actors.realtime.transformer import Transformer
from stores.memory import MemoryCache, MemorySequencer, MemoryStream
from stores.stream import StreamEntry

USERS = [f"u{n}" for n in range(6)]
user = st.sampled_from(USERS)
operation = st.one_of(
    st.tuples(st.just("follow"), user, user),
    st.tuples(st.just("unfollow"), user, user),
    st.tuples(st.just("activity"), user, st.sampled_from(["comment", "recommended"])),
)


class Captured:
    """A fan-out that keeps what the transformer delivers."""

    def __init__(self) -> None:
        self.items: list[Rendered] = []

    async def deliver(self, batch: list[Rendered]) -> None:
        self.items += batch

    async def announce(self, batches: list[list[Rendered]]) -> None:
        await trio.lowlevel.checkpoint()


async def run(
    edges: set[tuple[str, str]], operations: list[tuple[str, str, str]]
) -> tuple[dict[str, list[Any]], dict[str, list[Rendered]]]:
    graph = set(edges)
    index = FollowingIndex()
    for listener in USERS:
        index.add(listener, {b for a, b in graph if a == listener})
    captured = Captured()
    transformer = Transformer(
        MemoryStream(), MemorySequencer(), MemoryCache(), captured, following=index
    )
    expected: dict[str, list[Any]] = {f"following:{u}": [] for u in USERS}
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(transformer.run)
        for n, (op, a, b) in enumerate(operations):
            if op == "follow" and a != b:
                graph.add((a, b))
                index.followed(a, b)
            elif op == "unfollow":
                graph.discard((a, b))
                index.unfollowed(a, b)
            elif op == "activity":
                data = {"type": b, "user": a, "post": "p", "n": n}
                for follower, followee in sorted(graph):
                    if followee == a and follower != a:
                        expected[f"following:{follower}"].append(n)
                fields = {"channel": "post:p", "data": json.dumps(data)}
                await ref.call(Batch((StreamEntry(f"{n + 1}-0", fields),)))
        nursery.cancel_scope.cancel()
    received: dict[str, list[Rendered]] = {f"following:{u}": [] for u in USERS}
    for item in captured.items:
        if item.channel.startswith("following:"):
            received[item.channel].append(item)
    return expected, received


@settings(max_examples=60, deadline=None)
@given(
    edges=st.sets(st.tuples(user, user).filter(lambda e: e[0] != e[1]), max_size=20),
    operations=st.lists(operation, max_size=40),
)
def test_each_following_channel_gets_what_the_model_computes(
    edges: set[tuple[str, str]], operations: list[tuple[str, str, str]]
) -> None:
    """Every following:<f> channel receives exactly the model's activities, in order, with
    offsets 1, 2, 3 …"""
    expected, received = trio.run(run, edges, operations)
    for channel, items in received.items():
        assert [json.loads(item.data)["n"] for item in items] == expected[channel], channel
        assert [item.offset for item in items] == list(range(1, len(items) + 1)), channel
