"""One fault run: traffic before, the fault, traffic after, then the figures.

:func:`run_with_fault` starts the subscribers (each server gets its share, each
able to move to the others), waits until all are subscribed, starts the
producer, lets it run :attr:`Profile.before` seconds, runs the fault, lets the
producer run :attr:`Profile.after` seconds more, stops it, waits until every
subscriber has caught up with the newest acknowledged offset of each channel (at
most :attr:`Profile.settle` seconds) and returns the
:class:`~tests.reliability.figures.Figures`.

The durations and the rate come from a :class:`Profile`: :data:`SHORT` in CI,
:data:`LONG` with ``STARLING_CHAOS=long`` (``make chaos``).

Not a test module.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from auth.tokens import issue_token
from tests.processes import SECRET, Process
from tests.reliability.figures import Figures, figures
from tests.reliability.traffic import Producer, Subscriber

__all__ = [
    "LONG",
    "PROFILE_ENV",
    "SHORT",
    "Fault",
    "Profile",
    "profile",
    "run_with_fault",
    "stop_servers",
]

PROFILE_ENV = "STARLING_CHAOS"
"""``long`` selects :data:`LONG`; anything else (or unset) :data:`SHORT`."""

SUBSCRIBE_WITHIN = 30.0
"""Seconds every subscriber may take to subscribe at the start."""


@dataclass(frozen=True, slots=True)
class Profile:
    """Durations in seconds, the rate in events a second.

    Attributes:
        name: ``short`` or ``long``.
        rate: events a second the producer makes.
        channels: channels the events are spread over (every subscriber follows all).
        subscribers: subscribers per server.
        before: traffic before the fault.
        after: traffic after the fault ended.
        outage: how long a backend stays stopped (Redis restart, Neo4j cut).
        cut: how long the network to Redis is cut.
        settle: longest wait, after the producer stopped, for the subscribers to catch up.
    """

    name: str
    rate: int
    channels: int
    subscribers: int
    before: float
    after: float
    outage: float
    cut: float
    settle: float


SHORT = Profile(
    "short", rate=100, channels=4, subscribers=3, before=2, after=3, outage=3, cut=10, settle=15
)
"""CI: a few seconds of traffic around each fault."""
LONG = Profile(
    "long", rate=200, channels=8, subscribers=4, before=30, after=30, outage=15, cut=10, settle=60
)
"""``make chaos``."""


def profile() -> Profile:
    """The profile :data:`PROFILE_ENV` selects."""
    return LONG if os.environ.get(PROFILE_ENV, "").lower() == "long" else SHORT


Fault = Callable[[dict[str, Any]], Awaitable[float]]
"""Runs the fault, writes its own figures in the dict it is given, and returns when the
fault ended (``trio.current_time()``): the backend back, the process killed …"""


async def run_with_fault(
    name: str, chosen: Profile, urls: Sequence[str], fault: Fault
) -> tuple[Figures, Producer, list[Subscriber]]:
    """Traffic around ``fault`` on the servers ``urls`` (module docstring)."""
    channels = [f"post:chaos-{name}-{i}" for i in range(chosen.channels)]
    subscribers = []
    for home in range(len(urls)):
        order = [*urls[home:], *urls[:home]]  # starts on its own server, then the next
        for i in range(chosen.subscribers):
            token = issue_token(SECRET.encode(), f"chaos-{home}-{i}")
            subscribers.append(Subscriber(f"s{home}.{i}", order, token, channels))
    producer = Producer(urls, channels, chosen.rate)
    extra: dict[str, Any] = {}
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for subscriber in subscribers:
            nursery.start_soon(subscriber.run)
        with trio.move_on_after(SUBSCRIBE_WITHIN):
            for subscriber in subscribers:
                await subscriber.subscribed.wait()
        late = {s.name: s.closes[-3:] for s in subscribers if not s.subscribed.is_set()}
        if late:
            raise AssertionError(f"not subscribed within {SUBSCRIBE_WITHIN} s: {late}")
        async with trio.open_nursery() as traffic:
            traffic.start_soon(producer.run, stop)
            started = trio.current_time()
            await trio.sleep(chosen.before)
            fault_end = await fault(extra)
            await trio.sleep(chosen.after)
            stop.set()
        stopped = trio.current_time()
        extra["settle_s"] = round(await _settle(producer, subscribers, chosen.settle), 3)
        extra["servers"] = [await _pipeline_figures(url) for url in urls]
        nursery.cancel_scope.cancel()
    result = figures(
        name,
        chosen.name,
        producer.ledger,
        subscribers,
        rate=chosen.rate,
        produced_from=started,
        produced_until=stopped,
        fault_end=fault_end,
    )
    result.extra.update(extra)
    return result, producer, subscribers


PIPELINE_FIGURES = ("reclaimed", "reorder_gaps", "gaps", "missed", "relay_dropped", "duplicates")
"""What ``system.stats`` tells of a server's realtime pipeline that explains a gap."""


async def _pipeline_figures(url: str) -> dict[str, Any]:
    """:data:`PIPELINE_FIGURES` of the server at ``url`` (``{}`` if it is gone)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "system.stats"}
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            stats = (await client.post(f"{url}/rpc", json=body)).json()["result"]["realtime"]
    except (httpx.TransportError, KeyError):
        return {}
    return {name: stats.get(name) for name in PIPELINE_FIGURES}


async def _settle(producer: Producer, subscribers: Sequence[Subscriber], within: float) -> float:
    """Wait until every subscriber is at or past each channel's newest acknowledged offset;
    return the seconds waited (``within`` at most)."""
    newest: dict[str, int] = {}
    for event in producer.ledger.acknowledged():
        newest[event.channel] = max(newest.get(event.channel, 0), event.offset or 0)
    start = trio.current_time()
    with trio.move_on_after(within):
        while True:  # other processes' progress: polled, there is no event to wait on
            if all(
                subscriber.positions[channel].offset >= top
                for subscriber in subscribers
                for channel, top in newest.items()
            ):
                break
            await trio.sleep(0.1)
    return trio.current_time() - start


async def stop_servers(*processes: Process) -> None:
    """SIGINT every server and wait for them off the trio thread, so that a proxy this test
    runs keeps relaying while they stop (``server_process`` waits blocking)."""
    for process in processes:
        if process.process.poll() is None:
            process.process.send_signal(signal.SIGINT)
    for process in processes:
        await trio.to_thread.run_sync(process.process.wait)
