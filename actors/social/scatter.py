"""Scatter/gather over the reader pool: large neighbour reads split into key ranges.

GoSocial answered large Neo4j reads (the followers of a user with very many
of them; telling all of them about a new post) by splitting one big query
into small ones run concurrently and merging their results ("How Medium Goes
Social", https://medium.engineering/how-medium-goes-social-b7dbefa6d413).
Here the split is by id: a neighbour list ordered by id is cut into
contiguous key ranges ``[b_i, b_{i+1})``, each read by its own query on
whichever reader is least busy, and the ranges are concatenated in order.

The boundaries ``b_i`` are the ids at positions ``i * chunk`` (a ``SKIP``
query each, run concurrently). Because the ranges partition the id space,
every neighbour falls in exactly one of them whatever happens between the
queries: nothing is read twice, and a neighbour present from start to end
is read exactly once (one that arrives or leaves meanwhile is read at most
once). A boundary that is past the end merges the ranges after it into one
range without an upper bound.

Every query is a :class:`~actors.social.messages.Fetch` (or, for a small
page, a :class:`~actors.social.messages.Neighbours`) sent to one reader of the
pool from the caller's task: each part crosses one mailbox.

Rounds (each a set of concurrent queries):

- a page of ``limit`` <= ``chunk`` ids: one request, answered whole by a
  reader (existence folded in);
- a larger page: boundaries at ``chunk, 2·chunk, …`` and at ``limit``, then
  the ranges;
- a fan-out to every follower: a count, then the boundaries, then the
  ranges, each range delivered as soon as it is read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence

import trio

from actors.social import queries
from actors.social.errors import NotFound
from actors.social.messages import Direction, Neighbours, UsersPage
from actors.social.pool import ReaderPool

Deliver = Callable[[int, int, tuple[str, ...]], Awaitable[None]]
"""``deliver(chunk, chunks, ids)``: called once per range of a fan-out."""


async def read_page(
    pool: ReaderPool, user: str, direction: Direction, *, limit: int, after: str, chunk: int
) -> UsersPage:
    """The first ``limit`` neighbours of ``user`` with ids after ``after``, ascending.

    Args:
        pool: the readers.
        user: whose followings, followers or blocked users.
        direction: ``"following"``, ``"followers"`` or ``"blocking"``.
        limit: most ids to return (>= 1).
        after: exclusive lower bound; ``""`` for the first page.
        chunk: most ids one range query reads; pages above it are split.

    Returns:
        The page; ``last`` is its last id when more may follow, else ``None``.

    Raises:
        NotFound: ``user`` is not in the graph.
    """
    if limit <= chunk:
        page: UsersPage = await pool.call(Neighbours(user, direction, limit, after))
        return page
    positions = [*range(chunk, limit, chunk), limit]
    bounds = await _pivots(pool, user, direction, after, positions, parallelism=len(positions))
    end = bounds.pop() if len(bounds) == len(positions) else None
    ranges = _ranges(bounds, end)
    parts = await _gather(pool, user, direction, after, ranges, parallelism=len(ranges))
    ids = tuple(user_id for part in parts for user_id in part)
    if not ids and not (await pool.fetch(queries.USER_EXISTS, {"id": user})).rows:
        raise NotFound("user", user)
    if len(ids) > limit:  # the graph changed between the rounds: keep a prefix
        return UsersPage(ids[:limit], ids[limit - 1])
    return UsersPage(ids, ids[-1] if end is not None and ids else None)


async def fan_out(
    pool: ReaderPool, user: str, *, chunk: int, parallelism: int, deliver: Deliver
) -> int:
    """Read every follower of ``user`` in ranges of about ``chunk`` ids; deliver each range.

    Args:
        pool: the readers.
        user: the author.
        chunk: ids per range (the last one may hold more if followers arrive).
        parallelism: most queries of this fan-out in flight at once.
        deliver: called once per range, as soon as it is read (ranges may be
            delivered in any order); an author without followers gets one
            call with no ids.

    Returns:
        How many follower ids were delivered in all.

    Raises:
        NotFound: ``user`` is not in the graph.
    """
    counted = await pool.fetch(queries.NEIGHBOUR_COUNT["followers"], {"user": user})
    if not counted.rows:
        raise NotFound("user", user)
    chunks = max(1, math.ceil(int(counted.rows[0][0]) / chunk))
    positions = [i * chunk for i in range(1, chunks)]
    bounds = await _pivots(pool, user, "followers", "", positions, parallelism=parallelism)
    ranges = _ranges(bounds, None)
    delivered = 0
    limiter = trio.CapacityLimiter(parallelism)

    async def read_and_deliver(index: int, low: str, high: str) -> None:
        nonlocal delivered
        async with limiter:
            ids = await _range(pool, user, "followers", "", low, high)
        delivered += len(ids)
        await deliver(index, len(ranges), ids)

    await run_all(
        functools.partial(read_and_deliver, index, low, high)
        for index, (low, high) in enumerate(ranges)
    )
    return delivered


async def run_all(tasks: Iterable[Callable[[], Awaitable[None]]]) -> None:
    """Run ``tasks`` concurrently; the first failure cancels the rest and is raised as is.

    Raising the error itself, not trio's ``ExceptionGroup``, lets a
    :class:`~actors.runtime.Rejection` from a reader reach the caller as a
    reply (the others, if any, were caused by the same failure or by the
    cancellation).

    Raises:
        Exception: the first task failure.
    """
    try:
        async with trio.open_nursery() as nursery:
            for task in tasks:
                nursery.start_soon(task)
    except BaseExceptionGroup as group:
        raise _first_error(group) from None


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if not isinstance(error, trio.Cancelled):
            return error
    return group


async def _pivots(
    pool: ReaderPool,
    user: str,
    direction: Direction,
    after: str,
    positions: Sequence[int],
    *,
    parallelism: int,
) -> list[str]:
    """The ids at ``positions`` (0-based, after ``after``) up to the first one past the end.

    Returned sorted and distinct, so they cut the id space into ordered ranges
    even if the graph changed between the queries.
    """
    found: list[str | None] = [None] * len(positions)
    limiter = trio.CapacityLimiter(max(1, parallelism))

    async def pivot(index: int, skip: int) -> None:
        async with limiter:
            table = await pool.fetch(
                queries.PIVOT[direction], {"user": user, "after": after, "skip": skip}
            )
        found[index] = table.rows[0][0] if table.rows else None

    await run_all(functools.partial(pivot, index, skip) for index, skip in enumerate(positions))
    present: list[str] = []
    for value in found:
        if value is None:
            break
        present.append(value)
    return sorted(set(present))


def _ranges(bounds: Sequence[str], end: str | None) -> list[tuple[str, str]]:
    """``[(low, high), …]``: ``[""=start, b_1), [b_1, b_2), …, [b_k, end or "" = open)``."""
    lows = ["", *bounds]
    highs = [*bounds, end if end is not None else ""]
    return list(zip(lows, highs, strict=True))


async def _gather(
    pool: ReaderPool,
    user: str,
    direction: Direction,
    after: str,
    ranges: Sequence[tuple[str, str]],
    *,
    parallelism: int,
) -> list[tuple[str, ...]]:
    """Read every range concurrently; the parts, in range order."""
    parts: list[tuple[str, ...]] = [()] * len(ranges)
    limiter = trio.CapacityLimiter(max(1, parallelism))

    async def read(index: int, low: str, high: str) -> None:
        async with limiter:
            parts[index] = await _range(pool, user, direction, after, low, high)

    await run_all(
        functools.partial(read, index, low, high) for index, (low, high) in enumerate(ranges)
    )
    return parts


async def _range(
    pool: ReaderPool, user: str, direction: Direction, after: str, low: str, high: str
) -> tuple[str, ...]:
    table = await pool.fetch(
        queries.RANGE[direction],
        {"user": user, "after": after, "low": low, "high": high},
    )
    return tuple(row[0] for row in table.rows)
