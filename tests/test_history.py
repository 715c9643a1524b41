"""Channel history and recovery (offsets, epochs, ring, ttl, LRU channels) and channel names."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from actors.realtime import (
    Channel,
    ChannelHistory,
    Histories,
    HistoriesStatistics,
    Position,
    Publication,
    Recovery,
    may_subscribe,
    new_epoch,
    parse_channel,
)


def counter_epochs() -> Iterator[str]:
    return (f"e{n}" for n in itertools.count(1))


def _by_name(epochs: Iterator[str]) -> Callable[[str], str]:
    """An ``epochs`` argument for :class:`Histories` that ignores the channel name."""
    return lambda _channel: next(epochs)


def filled(count: int, *, size: int = 100, ttl: float | None = None) -> ChannelHistory:
    """A history with epoch ``"e"`` and ``count`` publications ``b"1"``... appended at t = 1, 2, ..."""  # noqa: E501
    history = ChannelHistory(size=size, ttl=ttl, epoch="e")
    for n in range(1, count + 1):
        history.append(str(n).encode(), now=float(n))
    return history


def offsets(recovery: Recovery) -> list[int]:
    return [publication.offset for publication in recovery.publications]


def test_offsets_start_at_1_and_grow_by_one() -> None:
    """The first publication gets offset 1, each next one the previous plus one; the position follows."""  # noqa: E501
    history = ChannelHistory(epoch="e")
    assert history.position() == Position(0, "e")

    first = history.append(b"a", now=10.0)
    second = history.append(b"b", now=11.5)

    assert first == Publication(offset=1, data=b"a", time=10.0)
    assert second == Publication(offset=2, data=b"b", time=11.5)
    assert history.position() == (2, "e")


def test_default_epoch_is_8_random_hex_characters() -> None:
    """Without an injected epoch, each history gets its own 8-hex-character epoch."""
    epochs = {ChannelHistory().epoch for _ in range(20)} | {new_epoch()}

    assert len(epochs) == 21
    assert all(len(epoch) == 8 and int(epoch, 16) >= 0 for epoch in epochs)


def test_ring_keeps_only_the_last_size_publications() -> None:
    """The history holds the newest ``size`` publications while offsets keep counting."""
    history = filled(10, size=3)

    assert [p.offset for p in history.latest(100, now=10.0)] == [8, 9, 10]
    assert [p.data for p in history.latest(2, now=10.0)] == [b"9", b"10"]
    assert history.latest(0, now=10.0) == ()
    assert history.position() == (10, "e")
    with pytest.raises(ValueError, match="limit"):
        history.latest(-1, now=10.0)


def test_recovery_gives_exactly_what_was_missed() -> None:
    """A client at a held offset in the current epoch gets every later publication, oldest first."""
    history = filled(5)

    recovery = history.since(2, "e", now=5.0)

    assert recovery.recovered
    assert offsets(recovery) == [3, 4, 5]
    assert (recovery.offset, recovery.epoch) == (5, "e")
    assert offsets(history.since(0, "e", now=5.0)) == [1, 2, 3, 4, 5]


def test_recovery_of_an_up_to_date_client_is_empty_but_recovered() -> None:
    """A client at the top, including a channel with no publication yet, recovers with nothing."""
    assert filled(5).since(5, "e", now=5.0) == Recovery(True, (), 5, "e")
    assert filled(0).since(0, "e", now=5.0) == Recovery(True, (), 0, "e")


def test_recovery_fails_when_missed_publications_left_the_ring() -> None:
    """If any missed publication was pushed out of the ring, nothing is replayed and recovered is False."""  # noqa: E501
    history = filled(10, size=3)  # holds 8, 9, 10

    assert history.since(6, "e", now=10.0) == Recovery(False, (), 10, "e")
    assert history.since(0, "e", now=10.0) == Recovery(False, (), 10, "e")
    assert offsets(history.since(7, "e", now=10.0)) == [8, 9, 10]  # exactly at the edge


def test_recovery_fails_on_another_epoch() -> None:
    """A client from another epoch is told it cannot recover, even at an offset that exists now."""
    history = filled(5)

    assert history.since(3, "old", now=5.0) == Recovery(False, (), 5, "e")
    assert history.since(5, "old", now=5.0) == Recovery(False, (), 5, "e")


def test_recovery_fails_when_the_client_is_ahead() -> None:
    """An offset above the top (the client saw a history this one is not) is not recovered."""
    assert filled(5).since(6, "e", now=5.0) == Recovery(False, (), 5, "e")
    assert filled(0).since(1, "e", now=5.0) == Recovery(False, (), 0, "e")
    with pytest.raises(ValueError, match="offset"):
        filled(5).since(-1, "e", now=5.0)


def test_ttl_expires_old_publications() -> None:
    """A publication is held for ``ttl`` seconds after it was appended; recovering across an expired one fails."""  # noqa: E501
    history = filled(4, ttl=10.0)  # appended at t = 1, 2, 3, 4

    assert offsets(history.since(0, "e", now=10.9)) == [1, 2, 3, 4]
    assert history.since(0, "e", now=11.0) == Recovery(False, (), 4, "e")  # 1 expired at t = 11
    assert offsets(history.since(1, "e", now=11.0)) == [2, 3, 4]
    assert [p.offset for p in history.latest(10, now=13.5)] == [4]
    assert history.since(4, "e", now=100.0) == Recovery(True, (), 4, "e")
    assert history.latest(10, now=100.0) == ()
    assert history.append(b"5", now=100.0).offset == 5  # offsets survive expiry


def test_bad_bounds_are_refused() -> None:
    """A ring smaller than one, a ttl that is not positive, or no room for channels is a ValueError."""  # noqa: E501
    with pytest.raises(ValueError, match="size"):
        ChannelHistory(size=0)
    with pytest.raises(ValueError, match="ttl"):
        ChannelHistory(ttl=0.0)
    with pytest.raises(ValueError, match="max_channels"):
        Histories(max_channels=0)
    with pytest.raises(ValueError, match="size"):
        Histories(size=0)


def test_histories_are_made_on_first_use_per_channel() -> None:
    """Each channel gets its own history with its own epoch and offsets, made the first time it is used."""  # noqa: E501
    histories = Histories(epochs=_by_name(counter_epochs()))

    assert histories.append("post:1", b"a", now=1.0).offset == 1
    assert histories.append("post:1", b"b", now=2.0).offset == 2
    assert histories.position("post:2") == (0, "e2")  # a subscriber learns the epoch up front
    assert histories.append("post:2", b"c", now=3.0).offset == 1
    assert histories.position("post:1") == (2, "e1")
    assert offsets(histories.since("post:1", 1, "e1", now=3.0)) == [2]
    assert [p.data for p in histories.latest("post:1", 1, now=3.0)] == [b"b"]
    assert "post:1" in histories
    assert "post:3" not in histories
    assert len(histories) == 2


def test_lru_eviction_gives_the_channel_a_new_epoch() -> None:
    """Past ``max_channels`` the least recently used channel is dropped; when it comes back, old positions no longer recover."""  # noqa: E501
    histories = Histories(max_channels=2, epochs=_by_name(counter_epochs()))
    histories.append("post:a", b"1", now=1.0)  # epoch e1
    histories.append("post:b", b"1", now=2.0)  # epoch e2
    histories.position("post:a")  # a is now more recently used than b
    histories.append("post:c", b"1", now=3.0)  # epoch e3, evicts b

    assert "post:b" not in histories
    assert "post:a" in histories
    recovery = histories.since("post:b", 1, "e2", now=4.0)  # recreated (evicts a): epoch e4
    assert recovery == Recovery(False, (), 0, "e4")
    assert histories.statistics() == HistoriesStatistics(
        channels=2, max_channels=2, created=4, evicted=2, appended=3, retained=1
    )


def test_channel_names_parse() -> None:
    """``post:<id>`` and ``user:<id>`` parse to their kind and id; the id may itself hold colons."""
    assert parse_channel("post:42") == Channel("post", "42")
    assert parse_channel("user:alice@example.org") == Channel("user", "alice@example.org")
    assert parse_channel("post:medium:a1b2") == Channel("post", "medium:a1b2")
    assert parse_channel("user:" + "u" * 64).id == "u" * 64
    assert str(parse_channel("post:42")) == "post:42"


@pytest.mark.parametrize(
    "name",
    ["", "post", "post:", "comment:1", "Post:1", ":1", "post:a b", "user:é", "user:" + "u" * 65],
)
def test_bad_channel_names_are_refused(name: str) -> None:
    """A name of another kind, or with an empty, too long or ill-charactered id, is a ValueError saying why."""  # noqa: E501
    with pytest.raises(ValueError, match="channel"):
        parse_channel(name)


def test_who_may_subscribe() -> None:
    """Anyone may subscribe to a post channel; a user channel is for its own user only."""
    assert may_subscribe(parse_channel("post:42"), "alice")
    assert may_subscribe(parse_channel("user:alice"), "alice")
    assert not may_subscribe(parse_channel("user:alice"), "bob")
    assert not may_subscribe(parse_channel("user:alice"), "Alice")


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=60),
    size=st.integers(min_value=1, max_value=20),
    ttl=st.none() | st.floats(min_value=0.5, max_value=50.0),
    back=st.integers(min_value=-3, max_value=70),
    same_epoch=st.booleans(),
    later=st.floats(min_value=0.0, max_value=60.0),
)
def test_since_is_exact_or_nothing(
    gaps: list[float],
    size: int,
    ttl: float | None,
    back: int,
    same_epoch: bool,
    later: float,
) -> None:
    """For any appends and any offset, ``since`` returns exactly the later publications in order, or none with recovered=False."""  # noqa: E501
    history = ChannelHistory(size=size, ttl=ttl, epoch="e")
    now = 0.0
    appended: list[Publication] = []
    for gap in gaps:
        now += gap
        appended.append(history.append(f"{len(appended) + 1}".encode(), now=now))
    now += later
    asked = max(len(appended) - back, 0)  # from 3 ahead of the top down to 0

    recovery = history.since(asked, "e" if same_epoch else "x", now=now)

    missed = [p for p in appended if p.offset > asked]
    held = appended[-size:]
    if ttl is not None:
        held = [p for p in held if p.time > now - ttl]
    possible = same_epoch and asked <= len(appended) and all(p in held for p in missed)
    assert (recovery.offset, recovery.epoch) == (len(appended), "e")
    if recovery.recovered:
        assert list(recovery.publications) == missed
    else:
        assert recovery.publications == ()
    assert recovery.recovered == possible
    event(f"recovered={recovery.recovered}")


def test_put_takes_numbers_from_elsewhere_and_never_hides_a_gap() -> None:
    """Numbered elsewhere: duplicates are ignored, a gap or a new epoch forgets the past."""
    history = ChannelHistory(size=10, epoch="e1")
    assert history.put(1, "e1", b"a", 0.0) is not None
    assert history.put(2, "e1", b"b", 0.0) is not None
    assert history.put(2, "e1", b"b", 0.0) is None  # duplicate
    assert [p.offset for p in history.since(0, "e1", 0.0).publications] == [1, 2]
    assert history.put(5, "e1", b"e", 0.0) is not None  # 3 and 4 never came
    recovery = history.since(2, "e1", 0.0)
    assert recovery.recovered is False
    assert recovery.publications == ()
    assert history.since(4, "e1", 0.0).recovered is True
    assert history.put(1, "e2", b"x", 0.0) is not None  # the sequencer's epoch changed
    assert history.position() == (1, "e2")
    assert history.since(5, "e1", 0.0).recovered is False
