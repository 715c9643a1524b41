"""Stream partitions (stores/partitions.py): keys, slots, entry ids. Pure logic, no Redis."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from stores.partitions import Partitions, key_slot_of, partition_of, partition_tag
from tests.services import key_slot


def test_one_partition_is_the_plain_stream() -> None:
    """With one partition keys and ids are exactly those of a single Redis."""
    one = Partitions(1)
    assert one.keys("starling:events") == ("starling:events",)
    assert one.of("post:1") == 0
    assert one.qualify("1-0", 0) == "1-0"
    assert one.split("1-0") == (0, "1-0")
    assert one.index_of_key("starling:events") is None


def test_each_partition_is_one_slot_and_the_slots_spread_evenly() -> None:
    """Partition i's keys share a slot, in the i-th band of the slot space, so the equal
    contiguous ranges of a 3-master cluster hold 4 of 12 partitions each."""
    twelve = Partitions(12)
    for index in range(12):
        keys = [twelve.key(name, index) for name in ("starling:events", "starling:offsets")]
        slots = {key_slot_of(key) for key in keys}
        assert len(slots) == 1
        (slot,) = slots
        assert index * 16384 // 12 <= slot < (index + 1) * 16384 // 12
        assert twelve.index_of_key(keys[0]) == index
    masters = Counter(key_slot_of(twelve.key("s", i)) * 3 // 16384 for i in range(12))
    assert sorted(masters.values()) == [4, 4, 4]


def test_the_slot_rule_is_redis_clusters() -> None:
    """key_slot_of agrees with the test service's independent CRC16 (itself checked against
    CLUSTER KEYSLOT on a real cluster)."""
    for key in ["starling:events", "a{b}c", "{}x", "x{}{y}", "starling:events:{3.10}", "ü{ß}"]:
        assert key_slot_of(key) == key_slot(key)


def test_a_channel_always_maps_to_one_partition_by_crc32() -> None:
    """The documented rule, for producers in other languages: CRC-32 of the UTF-8 name."""
    for channel in ["post:1", "user:alice", "following:bob", "circle:ä"]:
        assert partition_of(channel, 12) == zlib.crc32(channel.encode()) % 12
        assert Partitions(12).of(channel) == partition_of(channel, 12)
    assert Partitions(12).of(None) == 0
    spread = Counter(partition_of(f"post:{n}", 12) for n in range(12_000))
    assert min(spread.values()) > 800  # about 1,000 each


def test_entry_ids_carry_their_partition() -> None:
    """Ids of different partitions never collide; a malformed one is refused clearly."""
    six = Partitions(6)
    assert six.qualify("1700000000000-0", 5) == "1700000000000-0@5"
    assert six.split("1700000000000-0@5") == (5, "1700000000000-0")
    for bad in ["1700000000000-0", "1-0@6", "1-0@x"]:
        with pytest.raises(ValueError, match="names no partition"):
            six.split(bad)


def test_foreign_keys_are_not_partitions() -> None:
    """Only this layout's own tags name a partition."""
    six = Partitions(6)
    assert six.index_of_key("starling:events:{9.0}") is None
    assert six.index_of_key("starling:events:{x}") is None
    assert six.index_of_key("starling:events:{2.999}") is None
    assert six.index_of_key(f"any:{{{partition_tag(2, 6)}}}") == 2  # any stream's partition 2


def test_bad_counts_are_refused() -> None:
    for count in (0, 16385):
        with pytest.raises(ValueError, match="between 1 and 16384"):
            Partitions(count)
    with pytest.raises(ValueError, match="does not exist"):
        partition_tag(3, 3)
