"""The reorder buffer: each channel's publications leave in offset order, once."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.realtime.ordering import ReorderBuffer
from actors.realtime.transform import Rendered


def item(offset: int, channel: str = "post:1", epoch: str = "e") -> Rendered:
    return Rendered(channel, offset, epoch, f"{offset}-0", b"{}")


def offsets(items: list[Rendered]) -> list[int]:
    return [i.offset for i in items]


def test_in_order_passes_through_and_duplicates_drop() -> None:
    """In-order publications are released at once; a repeated offset is dropped and counted."""
    buffer = ReorderBuffer()
    assert offsets(buffer.push(item(1), 0.0)) == [1]
    assert offsets(buffer.push(item(2), 0.0)) == [2]
    assert buffer.push(item(2), 0.0) == []
    assert buffer.duplicates == 1


def test_an_early_publication_waits_for_the_gap() -> None:
    """Offset 3 before 2 waits; when 2 arrives both leave in order."""
    buffer = ReorderBuffer()
    buffer.push(item(1), 0.0)
    assert buffer.push(item(3), 0.0) == []
    assert buffer.waiting() == 1
    assert offsets(buffer.push(item(2), 0.1)) == [2, 3]
    assert buffer.waiting() == 0


def test_a_gap_is_skipped_after_the_wait() -> None:
    """A missing offset is given up after ``wait`` seconds, not before."""
    buffer = ReorderBuffer(wait=0.5)
    buffer.push(item(1), 0.0)
    buffer.push(item(3), 1.0)
    buffer.push(item(4), 1.2)
    assert buffer.expire(1.4) == []
    assert offsets(buffer.expire(1.5)) == [3, 4]
    assert buffer.gaps == 1
    assert buffer.push(item(2), 2.0) == []  # too late: counted as a duplicate


def test_channels_and_epochs_are_independent() -> None:
    """Each channel has its own order; a new epoch restarts it."""
    buffer = ReorderBuffer()
    assert offsets(buffer.push(item(7, "post:a"), 0.0)) == [7]
    assert offsets(buffer.push(item(1, "post:b"), 0.0)) == [1]
    assert offsets(buffer.push(item(1, "post:a", epoch="f"), 0.0)) == [1]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.randoms(use_true_random=False), st.integers(0, 2))
def test_any_shuffle_within_reach_comes_out_in_order(
    count: int, rng: random.Random, duplicates: int
) -> None:
    """Offsets 2..n shuffled (after 1), with duplicates, leave exactly once and in order."""
    buffer = ReorderBuffer()
    released = offsets(buffer.push(item(1), 0.0))
    rest = list(range(2, count + 1)) + [rng.randint(1, count) for _ in range(duplicates)]
    rng.shuffle(rest)
    for offset in rest:
        released += offsets(buffer.push(item(offset), 0.0))
    assert released == list(range(1, count + 1))


def test_the_first_hint_orders_a_new_channel_numbered_twice_at_once() -> None:
    """With ``first`` saying a new channel starts at 1, a later batch (3, 4) that arrives
    before the earlier one (1, 2) waits for it instead of making it look like duplicates."""
    buffer = ReorderBuffer(first=lambda channel, epoch: 1)
    assert buffer.push(item(3), 0.0) == []
    assert buffer.push(item(4), 0.0) == []
    assert offsets(buffer.push(item(1), 0.0)) == [1]
    assert offsets(buffer.push(item(2), 0.0)) == [2, 3, 4]
    assert buffer.duplicates == 0


def test_a_channel_met_mid_life_waits_once_then_starts_where_it_is() -> None:
    """A channel whose offsets 1..9 went by before this process (hint 1, first event 10)
    is released after ``wait``, counted as one gap, then flows without waiting."""
    buffer = ReorderBuffer(wait=0.5, first=lambda channel, epoch: 1)
    assert buffer.push(item(10), 0.0) == []
    assert buffer.expire(0.4) == []
    assert offsets(buffer.expire(0.5)) == [10]
    assert buffer.gaps == 1
    assert offsets(buffer.push(item(11), 0.6)) == [11]


def test_forgetting_a_channel_releases_what_it_holds() -> None:
    """Past ``max_channels`` the channel met first is forgotten; its early publications are
    released (the gap skipped), never dropped; only held channels are expired."""
    buffer = ReorderBuffer(max_channels=1, first=lambda channel, epoch: 1)
    assert buffer.push(item(2, "post:a"), 0.0) == []
    released = buffer.push(item(1, "post:b"), 0.0)
    assert [(i.channel, i.offset) for i in released] == [("post:a", 2), ("post:b", 1)]
    assert (buffer.gaps, buffer.waiting()) == (1, 0)
    assert buffer.expire(10.0) == []
