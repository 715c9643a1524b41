"""Stream partitions: how one logical stream is split over the masters of a Redis Cluster.

A Redis Cluster serves each of its 16,384 hash slots from one master, and a
command (or a pipeline, a transaction, a Function call) may only touch keys of
one slot. The event stream ``starling:events`` is therefore split into
*partitions*: partition ``i`` of ``count`` lives under keys that carry the
same hash tag, ``{<tag>}``, and so share a slot:

    starling:events:{<tag>}        the partition's stream (one consumer group each)
    starling:offsets:{<tag>}       the per-channel offsets of its channels
    starling:generation:{<tag>}    the generation its channels' epochs derive from
    starling:master:{<tag>}        the node that last numbered its events (failover check)

A channel always maps to one partition, ``crc32(utf8(channel)) mod count``
(:func:`partition_of`), so its events keep their order: they enter one stream
and one consumer group. Producers outside Starling route the same way
(docs/operations.md, "Redis Cluster").

Tags are chosen so that the partitions' slots are spread evenly over the slot
space (:func:`partition_tag`): partition ``i`` gets the first tag ``i.k``
whose slot falls in the ``i``-th of ``count`` equal bands, so the contiguous
slot ranges ``redis-cli --cluster create`` assigns put ``count / masters``
partitions on each master.

With one partition (a single Redis, the in-process stream) every key is the
plain name and entry ids are Redis's own; with several, an entry id carries
its partition, ``"<ms>-<seq>@<i>"``, so ids of different partitions never
collide (:meth:`Partitions.qualify`).

Source of the slot rule: the Redis Cluster specification, "Key distribution
model" and "Hash tags" (redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = ["Partitions", "key_slot_of", "partition_of", "partition_tag"]


def key_slot_of(key: str) -> int:
    """The Redis Cluster hash slot of ``key`` (CRC16 mod 16,384 of its hash tag or whole name)."""
    return int(key_slot(key.encode(errors="surrogatepass")))


def partition_of(channel: str, count: int) -> int:
    """The partition of ``channel`` among ``count``: CRC-32 of its UTF-8 name, modulo ``count``."""
    if count == 1:
        return 0
    return zlib.crc32(channel.encode(errors="surrogatepass")) % count


@cache
def partition_tag(index: int, count: int) -> str:
    """The hash tag of partition ``index`` of ``count``: ``"<index>.<k>"`` for the first ``k``
    whose slot is in the ``index``-th of ``count`` equal bands of the slot space.

    Raises:
        ValueError: ``index`` is not in ``[0, count)``, or ``count`` > 16,384.
    """
    if not 0 <= index < count <= REDIS_CLUSTER_HASH_SLOTS:
        raise ValueError(f"partition {index} of {count} does not exist")
    low = index * REDIS_CLUSTER_HASH_SLOTS // count
    high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    k = 0
    while not low <= key_slot_of(tag := f"{index}.{k}") < high:
        k += 1
    return tag


@dataclass(frozen=True, slots=True)
class Partitions:
    """How many partitions a stream has, and the keys and entry ids of each.

    Args:
        count: partitions per stream, >= 1 (1: plain keys, as on a single Redis).

    Raises:
        ValueError: ``count`` < 1 or > 16,384.
    """

    count: int = 1
    _tags: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= REDIS_CLUSTER_HASH_SLOTS:
            raise ValueError(f"partitions must be between 1 and 16384, got {self.count}")
        count = self.count
        tags = () if count == 1 else tuple(partition_tag(i, count) for i in range(count))
        object.__setattr__(self, "_tags", tags)

    def of(self, channel: str | None) -> int:
        """The partition of ``channel`` (an entry without one: 0)."""
        return 0 if channel is None else partition_of(channel, self.count)

    def key(self, name: str, index: int) -> str:
        """Partition ``index``'s key of ``name``: ``name`` itself with one partition, else
        ``name:{<tag>}``."""
        return name if self.count == 1 else f"{name}:{{{self._tags[index]}}}"

    def keys(self, name: str) -> tuple[str, ...]:
        """The keys of ``name`` in every partition, in partition order."""
        return tuple(self.key(name, i) for i in range(self.count))

    def index_of_key(self, key: str) -> int | None:
        """The partition whose key ``key`` is (``name:{<tag>}``), or ``None`` for a plain name."""
        if self.count == 1 or not key.endswith("}"):
            return None
        start = key.rfind(":{")
        if start < 0:
            return None
        tag = key[start + 2 : -1]
        index, _, _ = tag.partition(".")
        if not index.isdigit() or int(index) >= self.count or self._tags[int(index)] != tag:
            return None
        return int(index)

    def qualify(self, entry_id: str, index: int) -> str:
        """An entry id with its partition: ``"<ms>-<seq>@<i>"`` (unchanged with one partition)."""
        return entry_id if self.count == 1 else f"{entry_id}@{index}"

    def split(self, entry_id: str) -> tuple[int, str]:
        """The partition and Redis's own id of a qualified entry id.

        Raises:
            ValueError: with several partitions, the id names none of them.
        """
        if self.count == 1:
            return 0, entry_id
        raw, at, index = entry_id.rpartition("@")
        if not at or not index.isdigit() or int(index) >= self.count:
            raise ValueError(f"entry id {entry_id!r} names no partition of {self.count}")
        return int(index), raw
