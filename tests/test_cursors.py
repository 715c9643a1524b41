"""The one page-cursor codec (protocols/cursors.py) and the feed's cursors built on it."""

from __future__ import annotations

import pytest

from protocols.cursors import decode_cursor, encode_cursor
from protocols.jsonrpc import JsonRpcError
from protocols.methods.feeds import feed_cursor, read_feed_cursor


def test_a_cursor_round_trips_its_kind_and_fields() -> None:
    """A cursor gives back exactly the fields it was made with, ids with colons included."""
    cursor = encode_cursor("f1", "user:42", "0123abcd", 40)
    assert decode_cursor(cursor, "f1", 3) == ["user:42", "0123abcd", "40"]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "abc",
        "!!!",
        encode_cursor("u1", "a"),
        encode_cursor("f1", "a", "b"),
        encode_cursor("f1", "a", "b", "1")[:-3] + "!!!",
    ],
)
def test_anything_else_is_a_malformed_cursor(cursor: str) -> None:
    """Another kind, another field count, or text this server did not make: -32602."""
    with pytest.raises(JsonRpcError) as caught:
        decode_cursor(cursor, "f1", 3)
    assert caught.value.code == -32602
    assert caught.value.data == {"detail": "malformed cursor"}


def test_a_field_with_the_separator_is_refused() -> None:
    """A field containing "/" cannot be encoded (ids never contain it)."""
    with pytest.raises(ValueError, match="must not contain"):
        encode_cursor("u1", "a/b")


def test_a_feed_cursor_names_its_user_snapshot_and_position() -> None:
    """A feed cursor reads back as (snapshot, position) for its user, and is refused to another."""
    cursor = feed_cursor("user:42", "0123abcd", 40)
    assert read_feed_cursor(cursor, "user:42") == ("0123abcd", 40)
    with pytest.raises(JsonRpcError, match="Invalid params") as caught:
        read_feed_cursor(cursor, "user:43")
    assert caught.value.data == {"detail": "the cursor is another user's"}
    with pytest.raises(JsonRpcError):
        read_feed_cursor(encode_cursor("f1", "user:42", "snap", "-1"), "user:42")
