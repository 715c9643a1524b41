"""Replay of real Reddit comment threads as live ``comment`` events, timed as they were written.

The comments are read by :mod:`datasets.reddit`; this module is the HTTP side.
It takes any events shaped like :class:`datasets.reddit.Comment`
(:class:`ReplayEvent`) and imports nothing of the data loaders: the client SDK
does not depend on them.

Timing: event *i* is due ``sum(min((t[k] - t[k-1]) / speed, max_gap))``
seconds after the start, over *k* ≤ *i*, where ``t`` are the comments'
``created_utc``. ``speed`` 60 replays one hour of the threads in one minute;
a gap that would last longer than ``max_gap`` seconds once scaled is
shortened to ``max_gap`` (the threads span a year: without the cap a demo
would sit idle for days between bursts). At ``speed`` 60 and ``max_gap`` 5
the whole file takes about 2 h 53 min.

Batching: whatever is due when the sender wakes goes out in one JSON-RPC
batch of ``realtime.publish``: events due at the same moment, and all that
fell due while the previous batch was in flight. A batch holds at most
``batch`` events and at most one per channel: a JSON-RPC server may run a
batch's calls concurrently, in any order (spec section 6), and Starling's
does, so two events of one channel go in successive batches to keep their
order. Batches are sent one at a time, each after the previous one's reply
(``realtime.publish`` answers once its event is published), so each
channel's offsets follow ``created_utc`` order; events of different channels
may leave in another order than their times when the sender is behind.

Looping: :func:`replay_loop` replays a first pass, then round after round of
events it asks for (``again(2)``, ``again(3)``, …; :func:`datasets.reddit.loop_round`
gives the busiest threads with fresh comment ids), each round a replay of
its own after a pause of ``max_gap`` seconds, so a demo never goes quiet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final, Protocol, TypeVar

import httpx
import trio

from client.http import open_client, rpc_batch
from protocols.jsonrpc import MAX_BATCH

SECONDS: Final = 1.0
DEFAULT_SPEED: Final = 60.0
"""Scaled time: 60 replays one hour of comments in one minute."""
DEFAULT_MAX_GAP: Final = 5 * SECONDS
"""Longest pause between two events once scaled, in seconds."""
DEFAULT_BATCH: Final = MAX_BATCH
MAX_ERRORS_REPORTED: Final = 20
"""Most failures a :class:`ReplaySummary` names (the first ones)."""


class ReplayEvent(Protocol):
    """What the replayer reads of an event (:class:`datasets.reddit.Comment` has it)."""

    @property
    def id(self) -> str:
        """Names the event in :attr:`ReplaySummary.errors`."""
        ...

    @property
    def channel(self) -> str:
        """Where it is published (``post:<id>``)."""
        ...

    @property
    def created_utc(self) -> float:
        """When it happened, epoch seconds; the replay keeps the gaps between these."""
        ...

    def event(self) -> dict[str, Any]:
        """The ``data`` of its ``realtime.publish``."""
        ...


E = TypeVar("E", bound=ReplayEvent)

# -- timing and batching (pure) ---------------------------------------------------


def schedule(times: Sequence[float], *, speed: float, max_gap: float) -> list[float]:
    """When each event is due, in seconds after the start (module docstring, "Timing").

    Args:
        times: the events' times in seconds (``created_utc``), ascending.
        speed: how many times faster than real time; > 0 (``math.inf``: all at once).
        max_gap: the longest scaled pause, in seconds; >= 0.

    Returns:
        ``due[i]`` for each event, ascending, ``due[0] == 0.0``.

    Raises:
        ValueError: ``speed`` <= 0, ``max_gap`` < 0, or ``times`` not ascending.
    """
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed!r}")
    if not max_gap >= 0:
        raise ValueError(f"max_gap must be >= 0 seconds, got {max_gap!r}")
    due = [0.0] if times else []
    for earlier, later in pairwise(times):
        if later < earlier:
            raise ValueError("times must be ascending (read_comments sorts them)")
        due.append(due[-1] + min((later - earlier) / speed, max_gap))
    return due


def next_batch(pending: Sequence[E], size: int) -> tuple[list[E], list[E]]:
    """Split ``pending`` into the next batch and what waits for a later one.

    The batch takes comments in order, at most ``size``, at most one per
    channel: the first pending comment of each channel. Each channel's
    comments keep their order in what is left.

    Returns:
        ``(batch, left)``.
    """
    batch: list[E] = []
    left: list[E] = []
    channels: set[str] = set()
    for comment in pending:
        if len(batch) < size and comment.channel not in channels:
            batch.append(comment)
            channels.add(comment.channel)
        else:
            left.append(comment)
    return batch, left


# -- replay -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay did.

    Attributes:
        sent: events published (the server answered with their offset).
        failed: events the server refused or could not publish in time.
        seconds: how long the replay took (trio's clock).
        channels: distinct channels published to.
        batches: JSON-RPC batches sent.
        errors: up to :data:`MAX_ERRORS_REPORTED` ``(comment id, error)`` of the failures.
    """

    sent: int
    failed: int
    seconds: float
    channels: int
    batches: int
    errors: tuple[tuple[str, str], ...] = ()


async def replay(
    comments: Sequence[ReplayEvent],
    url: str,
    *,
    speed: float = DEFAULT_SPEED,
    max_gap: float = DEFAULT_MAX_GAP,
    api_key: str | None = None,
    batch: int = DEFAULT_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ReplaySummary:
    """Publish ``comments`` with ``realtime.publish``, in their order and timing, scaled.

    Waits with ``trio.sleep_until``: under a ``MockClock`` (autojump) with an
    in-memory ``transport`` a replay of hours runs at once.

    Args:
        comments: from :func:`read_comments` (ascending ``created_utc``).
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
        speed: scaled time, see the module docstring; > 0.
        max_gap: the longest scaled pause, in seconds; >= 0.
        api_key: the server's STARLING_API_KEY, sent as a bearer key.
        batch: most events per JSON-RPC batch, 1 to 100 (the server's limit).
        on_progress: called after each batch with the events ``(sent, failed)`` so far.
        transport: an httpx transport instead of the network (tests).

    Returns:
        The counts; a refused event counts as failed and the replay goes on.

    Raises:
        client.Unreachable: the server cannot be reached.
        client.HttpError: the server refused the requests (401 key, 403 not
            loopback, 413 too large): nothing more would get through.
        client.RpcError: a batch as a whole was refused.
        ValueError: ``speed``, ``max_gap`` or ``batch`` out of range, or comments not in
            ``created_utc`` order.
    """
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch must be within 1..{MAX_BATCH}, got {batch!r}")
    due = schedule([comment.created_utc for comment in comments], speed=speed, max_gap=max_gap)
    started = trio.current_time()
    sent = failed = batches = 0
    channels: set[str] = set()
    errors: list[tuple[str, str]] = []
    pending: list[ReplayEvent] = []
    upcoming = 0  # index of the first comment not yet due
    async with open_client(url, api_key=api_key, transport=transport) as client:
        while upcoming < len(comments) or pending:
            if not pending:
                await trio.sleep_until(started + due[upcoming])
            now = trio.current_time()
            while upcoming < len(comments) and started + due[upcoming] <= now:
                pending.append(comments[upcoming])
                upcoming += 1
            chosen, pending = next_batch(pending, batch)
            calls = [
                ("realtime.publish", {"channel": comment.channel, "data": comment.event()})
                for comment in chosen
            ]
            replies = await rpc_batch(client, calls)
            batches += 1
            for comment, reply in zip(chosen, replies, strict=True):
                if reply.error is None:
                    sent += 1
                    channels.add(comment.channel)
                else:
                    failed += 1
                    if len(errors) < MAX_ERRORS_REPORTED:
                        errors.append((comment.id, str(reply.error)))
            if on_progress is not None:
                on_progress(sent, failed)
    return ReplaySummary(
        sent=sent,
        failed=failed,
        seconds=trio.current_time() - started,
        channels=len(channels),
        batches=batches,
        errors=tuple(errors),
    )


async def replay_loop(
    first: Sequence[ReplayEvent],
    again: Callable[[int], Sequence[ReplayEvent]],
    url: str,
    *,
    rounds: int | None = None,
    speed: float = DEFAULT_SPEED,
    max_gap: float = DEFAULT_MAX_GAP,
    api_key: str | None = None,
    batch: int = DEFAULT_BATCH,
    on_round: Callable[[int, ReplaySummary], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[ReplaySummary]:
    """Replay ``first`` (round 1), then ``again(2)``, ``again(3)``, … until cancelled.

    Each round is one :func:`replay` (its timing starts over at its first
    event), begun ``max_gap`` seconds after the previous round's last reply.
    The events of a later round need ids of their own (``<id>-r<round>``,
    :class:`datasets.reddit.Rerun`): subscribers and histories tell events
    apart by id.

    Args:
        first: the first pass, as :func:`replay` takes it.
        again: the events of round ``r`` (called with 2, 3, …, once each, just
            before the round); an empty round ends the loop.
        url, speed, max_gap, api_key, batch, transport: as :func:`replay`.
        rounds: the last round to play; ``None``: loop until cancelled.
        on_round: called after each round with ``(round, its summary)``.

    Returns:
        Each round's summary, once ``rounds`` are played or a round is empty.

    Raises:
        ValueError: ``rounds`` < 1, or as :func:`replay`.
        client.Unreachable, client.HttpError, client.RpcError: as :func:`replay`.
    """
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds!r}")
    summaries: list[ReplaySummary] = []
    events = first
    round = 1
    while True:
        summary = await replay(
            events, url, speed=speed, max_gap=max_gap, api_key=api_key, batch=batch,
            transport=transport,
        )  # fmt: skip
        summaries.append(summary)
        if on_round is not None:
            on_round(round, summary)
        round += 1
        if rounds is not None and round > rounds:
            return summaries
        events = again(round)
        if not events:
            return summaries
        await trio.sleep(max_gap)
