"""The presence view and its diff (:class:`actors.realtime.roster.Roster`): pure, no I/O.

A roster merges one channel's local connections and the other processes' counts; every
operation returns the join or leave it makes, so these tests read like the pushes a
presence subscriber would receive.
"""

from __future__ import annotations

from actors.realtime.roster import Change, Roster


def join(user: str, connections: int = 1) -> Change:
    return Change("join", user, connections)


def leave(user: str) -> Change:
    return Change("leave", user, 0)


def test_a_user_joins_once_with_their_first_connection_and_leaves_with_their_last() -> None:
    """Two local connections of one user make one join (count 1) and one leave, when the
    second closes; the count in between is in the view, not a change."""
    roster = Roster()

    assert roster.enter("1") == join("1")
    assert roster.enter("1") is None
    assert roster.view == {"1": 2}
    assert roster.exit("1") is None
    assert roster.view == {"1": 1}
    assert roster.exit("1") == leave("1")
    assert roster.view == {}


def test_counts_sum_local_and_remote_connections_of_a_user() -> None:
    """A user with a tab here and two on another process is one user with three
    connections; their join came with the first, wherever it was."""
    roster = Roster()

    assert roster.apply("b", "1", 2, now=1.0) == join("1", 2)
    assert roster.enter("1") is None
    assert roster.enter("2") == join("2")
    assert (roster.users, roster.connections) == (2, 4)
    assert roster.view == {"1": 3, "2": 1}


def test_a_user_leaves_only_when_no_process_has_them() -> None:
    """The user leaves when the last origin that had them says 0, not before."""
    roster = Roster()
    roster.apply("b", "1", 1, now=1.0)
    roster.apply("c", "1", 1, now=1.0)

    assert roster.apply("b", "1", 0, now=2.0) is None
    assert roster.apply("c", "1", 0, now=2.0) == leave("1")
    assert roster.remote == {}


def test_a_store_read_without_an_origin_synthesizes_its_users_leaves() -> None:
    """When a process's entries vanish from the store (it died), a read makes its users
    leave, except those present elsewhere, leaves in user order."""
    roster = Roster(loaded=True)
    roster.apply("dead", "3", 1, now=1.0)
    roster.apply("dead", "1", 1, now=1.0)
    roster.apply("dead", "2", 1, now=1.0)
    roster.apply("alive", "2", 1, now=1.0)

    changes = roster.replace({"alive": {"2": 1}}, started=5.0)

    assert changes == [leave("1"), leave("3")]
    assert roster.view == {"2": 1}
    assert roster.remote == {"alive": {"2": 1}}


def test_a_store_read_brings_the_joins_that_were_missed() -> None:
    """Users the announcements did not bring (a lost message, a roster made before it was
    loaded) join with the read, which also marks the roster loaded."""
    roster = Roster()
    roster.enter("1")

    changes = roster.replace({"b": {"2": 1, "1": 1}, "c": {"3": 2}}, started=1.0)

    assert changes == [join("2"), join("3", 2)]
    assert roster.loaded
    assert roster.view == {"1": 2, "2": 1, "3": 2}


def test_an_announcement_newer_than_a_read_wins_over_it() -> None:
    """A leave heard while a read was on its way is not undone by the older snapshot, and
    a join heard meanwhile is not taken away by it: no spurious join or leave."""
    roster = Roster(loaded=True)
    roster.apply("b", "1", 1, now=1.0)

    assert roster.apply("b", "1", 0, now=3.0) == leave("1")
    assert roster.apply("b", "2", 1, now=3.0) == join("2")
    # The read started at 2.0, before both announcements: it still has 1, not yet 2.
    assert roster.replace({"b": {"1": 1}}, started=2.0) == []
    assert roster.view == {"2": 1}
    # A later read is the truth again.
    assert roster.replace({"b": {"2": 1}}, started=4.0) == []
    assert roster.replace({}, started=5.0) == [leave("2")]


def test_an_announcement_older_than_a_read_yields_to_it() -> None:
    """What was announced before a read started is in the read: the read's counts stand."""
    roster = Roster(loaded=True)
    roster.apply("b", "1", 1, now=1.0)

    assert roster.replace({"b": {"1": 4}}, started=2.0) == []
    assert roster.view == {"1": 4}
