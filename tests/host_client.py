"""The clients' host of tests/test_hosts_failover.py: subscribers and a producer in one process.

Run on the clients' host (a network namespace, tests/hosts.py) as
``python -m tests.host_client CONFIG OUT``; ``CONFIG`` is a JSON file
(:class:`Config`). It runs the reliability tests' traffic
(tests/reliability/traffic.py) against the servers' URLs, each of which is
another host:

* ``subscribers`` :class:`~tests.reliability.traffic.Subscriber` per server,
  starting on it and knowing every other (the next after a refused connection):
  after a lost connection each reconnects and resubscribes with ``since``, its
  last offset and epoch, and takes what the reply recovers;
* a :class:`~tests.reliability.traffic.Producer` calling
  ``realtime.publish_many`` on the servers in turn (a refused one is skipped), at
  ``rate`` events a second, with the API key (the servers are not on its loopback).

Lines on stdout tell the test where it is: ``subscribed`` once every subscriber
is subscribed (the producer starts then), ``done`` at the end. A line ``stop``
on stdin (or its end: the test is gone) stops the producer; the subscribers are
given up to ``settle`` seconds to catch up with the newest acknowledged offset of
every channel, then everything is written to ``OUT`` as JSON lines (``kind``:
``event``, ``errors``, ``subscriber``, ``received``, ``reload``, ``subscribe``,
``run``) for the test to check.

Times are ``time.monotonic()`` seconds: trio runs on that clock here
(:class:`MonotonicClock`), so they compare with the test's own (one kernel, one
``CLOCK_MONOTONIC`` in every network namespace).

Not a test module.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from auth.tokens import issue_token
from protocols.websocket.wire import SubscribeResult
from tests.processes import SECRET
from tests.reliability.scenario import _settle
from tests.reliability.traffic import Producer, Subscriber

__all__ = ["Config", "KeyedProducer", "MonotonicClock", "RecordingSubscriber", "main"]


@dataclass(frozen=True, slots=True)
class Config:
    """What the client runs.

    Attributes:
        urls: the servers' base URLs (``http://ADDRESS:PORT``), one per host.
        api_key: the servers' ``--api-key``, sent by the producer.
        channels: the channels; every subscriber follows all of them.
        rate: events a second.
        subscribers: subscribers starting on each server.
        subscribe_within: seconds every subscriber may take to subscribe at the start.
        settle: longest wait, after the producer stopped, for the subscribers to catch up.
    """

    urls: list[str]
    api_key: str
    channels: list[str]
    rate: int
    subscribers: int
    subscribe_within: float = 30.0
    settle: float = 20.0


class MonotonicClock(trio.abc.Clock):
    """trio's clock on ``time.monotonic()`` (its default adds a random offset), so that
    ``trio.current_time()`` here is the test process's ``time.monotonic()``."""

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return time.monotonic()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return deadline - time.monotonic()


class KeyedProducer(Producer):
    """A :class:`~tests.reliability.traffic.Producer` that sends ``Authorization: Bearer
    KEY`` (``/rpc`` takes calls without one from loopback clients only)."""

    def __init__(self, urls: list[str], channels: list[str], rate: int, api_key: str) -> None:
        super().__init__(urls, channels, rate)
        self._authorization = f"Bearer {api_key}"

    async def _call(self, client: httpx.AsyncClient, tick: int) -> None:
        client.headers["Authorization"] = self._authorization  # the producer's one client
        await super()._call(client, tick)


class RecordingSubscriber(Subscriber):
    """A :class:`~tests.reliability.traffic.Subscriber` that also writes down every
    ``subscribe`` reply: on which server, when, whether it resumed (``since``), whether it
    recovered and how many publications the reply carried."""

    def __init__(self, name: str, urls: list[str], token: str, channels: list[str]) -> None:
        super().__init__(name, urls, token, channels)
        self.subscribes: list[dict[str, Any]] = []

    def _subscribed(self, channel: str, result: SubscribeResult[Any], now: float) -> None:
        resumed = channel in self.positions
        super()._subscribed(channel, result, now)
        publications = result.publications if isinstance(result.publications, list) else []
        self.subscribes.append(
            {
                "url": self.url,
                "channel": channel,
                "at": now,
                "resumed": resumed,
                "recovered": result.recovered is True,
                "count": len(publications),
            }
        )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(config: Config, out: Path) -> None:
    """The run (module docstring)."""
    subscribers = []
    for home, _ in enumerate(config.urls):
        order = [*config.urls[home:], *config.urls[:home]]  # its own server first, then the next
        for i in range(config.subscribers):
            token = issue_token(SECRET.encode(), f"hosts-{home}-{i}")
            subscribers.append(RecordingSubscriber(f"s{home}.{i}", order, token, config.channels))
    producer = KeyedProducer(config.urls, config.channels, config.rate, config.api_key)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for subscriber in subscribers:
            nursery.start_soon(subscriber.run)
        with trio.move_on_after(config.subscribe_within):
            for subscriber in subscribers:
                await subscriber.subscribed.wait()
        late = {s.name: s.closes[-3:] for s in subscribers if not s.subscribed.is_set()}
        if late:
            raise SystemExit(f"not subscribed within {config.subscribe_within} s: {late}")
        async with trio.open_nursery() as traffic:
            traffic.start_soon(producer.run, stop)
            started = trio.current_time()
            _say("subscribed")
            await trio.to_thread.run_sync(sys.stdin.readline)  # "stop", or "" at its end
            stop.set()
        stopped = trio.current_time()
        settled = await _settle(producer, subscribers, config.settle)
        nursery.cancel_scope.cancel()
    _write(out, producer, subscribers, {"started": started, "stopped": stopped, "settle": settled})
    _say("done")


def _write(
    out: Path,
    producer: Producer,
    subscribers: list[RecordingSubscriber],
    run: dict[str, float],
) -> None:
    with out.open("w") as lines:

        def line(kind: str, **record: Any) -> None:
            lines.write(json.dumps({"kind": kind, **record}) + "\n")

        line("run", **run)
        for event in producer.ledger.events.values():
            line("event", **asdict(event))
        line("errors", errors=producer.ledger.errors, messages=producer.ledger.error_messages)
        for s in subscribers:
            line(
                "subscriber", name=s.name, urls=s.urls, url=s.url, duplicates=s.duplicates,
                late=s.late, reconnects=s.reconnects, closes=s.closes,
            )  # fmt: skip
            for received in s.received:
                line("received", subscriber=s.name, **asdict(received))
            for reload in s.reloads:
                line("reload", subscriber=s.name, **asdict(reload))
            for subscribe in s.subscribes:
                line("subscribe", subscriber=s.name, **subscribe)


def main(argv: list[str]) -> None:
    """``python -m tests.host_client CONFIG OUT``."""
    config_path, out = argv
    config = Config(**json.loads(Path(config_path).read_text()))
    trio.run(run, config, Path(out), clock=MonotonicClock())


if __name__ == "__main__":
    main(sys.argv[1:])
