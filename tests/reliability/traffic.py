"""Traffic for the fault tests: a producer at a steady rate and subscribers that recover.

:class:`Producer` calls ``realtime.publish_many`` on the servers in turn, ``rate``
events a second over a few channels, each event ``{"seq": n}`` with a number
unique in the run, and writes down what each call answered in its
:class:`Ledger`: an event is *acknowledged* when its call returned a result (its
offset and epoch are then known). A call that could not connect is sent to the
next server (nothing was accepted); any other failure leaves its events
unacknowledged, with the error's code.

:class:`Subscriber` follows every channel over ``/ws``, as ``starling tail`` does
(client/tail.py), but keeps what a check needs: every ``pub`` as it arrived, the
duplicates and late ones it dropped by offset, and each *reload*, the moment the
server said it could not give what was missed (``recovered: false``, a ``gap``
notice): an application reloads the channel's state then, so the offsets the
reload covers are not lost to it. After a close it reconnects to the same server,
after a refused connection to the next one, and subscribes ``since`` its last
position.

Not a test module: the reliability tests import it from here.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from protocols.websocket.wire import GapNotice, SubscribeResult

__all__ = ["Event", "Ledger", "Producer", "Received", "Reload", "Subscriber"]

CALLS_PER_SECOND = 10
"""``publish_many`` calls a second; each carries ``rate / CALLS_PER_SECOND`` events."""
MAX_CALLS_IN_FLIGHT = 32
"""Calls waiting for their answer at once (a call waits up to 5 s for its receipt)."""
CALL_TIMEOUT = 15.0
"""Seconds a call may take before the producer gives up on it (the server's own bound
is 10 s per call)."""
PING_INTERVAL = 20.0
"""Seconds between a subscriber's ``ping`` requests (the server closes after 60 s idle)."""
RETRY_DELAY = 0.2
"""Seconds a subscriber waits before it connects again."""

_decode = msgspec.json.Decoder().decode


@dataclass
class Event:
    """One produced event and what its call answered.

    Attributes:
        seq: its number in the run, the ``seq`` of its data.
        channel: its channel.
        sent_at: when its call was sent (``trio.current_time()``).
        offset, epoch: where it was published, once acknowledged.
        error: why it was not acknowledged (a JSON-RPC code, or the transport error).
    """

    seq: int
    channel: str
    sent_at: float
    offset: int | None = None
    epoch: str | None = None
    error: str | None = None

    @property
    def acknowledged(self) -> bool:
        """Its call returned success: it must be delivered."""
        return self.offset is not None


@dataclass
class Ledger:
    """Every event the producer made, by ``seq``, and the errors its calls met."""

    events: dict[int, Event] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_messages: dict[str, str] = field(default_factory=dict)

    def acknowledged(self) -> list[Event]:
        """The acknowledged events, in ``seq`` order."""
        return [event for event in self.events.values() if event.acknowledged]

    def note_error(self, code: str, message: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        self.error_messages.setdefault(code, message)


class Producer:
    """``realtime.publish_many`` at ``rate`` events a second (module docstring).

    Args:
        urls: the servers' base URLs, called in turn.
        channels: the channels, used in turn.
        rate: events a second.
    """

    def __init__(self, urls: Sequence[str], channels: Sequence[str], rate: int) -> None:
        self.urls = list(urls)
        self.channels = list(channels)
        self.per_call = max(1, rate // CALLS_PER_SECOND)
        self.ledger = Ledger()
        self._seq = itertools.count()
        self._turn = itertools.count()
        self._limiter = trio.CapacityLimiter(MAX_CALLS_IN_FLIGHT)

    async def run(self, stop: trio.Event) -> None:
        """Produce until ``stop`` is set, then wait for the calls still out."""
        period = 1 / CALLS_PER_SECOND
        async with httpx.AsyncClient(timeout=CALL_TIMEOUT) as client, trio.open_nursery() as calls:
            start = trio.current_time()
            for tick in itertools.count():
                with trio.move_on_at(start + tick * period):
                    await stop.wait()
                if stop.is_set():
                    break
                await self._limiter.acquire_on_behalf_of(tick)
                calls.start_soon(self._call, client, tick)

    async def _call(self, client: httpx.AsyncClient, tick: int) -> None:
        try:
            now = trio.current_time()
            events = []
            for _ in range(self.per_call):
                seq = next(self._seq)
                channel = self.channels[seq % len(self.channels)]
                events.append(Event(seq, channel, now))
                self.ledger.events[seq] = events[-1]
            body = {
                "jsonrpc": "2.0", "id": tick, "method": "realtime.publish_many",
                "params": {"events": [{"channel": e.channel, "data": {"seq": e.seq}}
                                      for e in events]},
            }  # fmt: skip
            await self._send(client, body, events)
        finally:
            self._limiter.release_on_behalf_of(tick)

    async def _send(
        self, client: httpx.AsyncClient, body: dict[str, Any], events: list[Event]
    ) -> None:
        error = "unreachable"
        first = next(self._turn)
        for k in range(len(self.urls)):  # a refused connection accepted nothing: the next one
            url = self.urls[(first + k) % len(self.urls)]
            try:
                reply = (await client.post(f"{url}/rpc", json=body)).json()
            except httpx.ConnectError as refused:
                error = f"connect: {refused}"
                continue
            except (httpx.TransportError, json.JSONDecodeError) as failed:
                self._fail(events, "transport", f"{type(failed).__name__}: {failed}")
                return
            if "result" in reply:
                for event, placed in zip(events, reply["result"]["published"], strict=True):
                    event.offset, event.epoch = placed["offset"], placed["epoch"]
                return
            code = str(reply["error"]["code"])
            self._fail(events, code, json.dumps(reply["error"]))
            return
        self._fail(events, "unreachable", error)

    def _fail(self, events: list[Event], code: str, message: str) -> None:
        self.ledger.note_error(code, message)
        for event in events:
            event.error = code


@dataclass(frozen=True, slots=True)
class Received:
    """A publication a subscriber took (given to the application), in arrival order.

    Attributes:
        channel, offset: where it was published.
        seq: the ``seq`` of its data.
        at: when it arrived (``trio.current_time()``).
        recovered: it came in a ``subscribe`` reply's recovery, not as a ``pub``.
    """

    channel: str
    offset: int
    seq: int
    at: float
    recovered: bool


@dataclass(frozen=True, slots=True)
class Reload:
    """The server said offsets ``first..last`` of ``channel`` cannot be given: reload them.

    Attributes:
        reason: ``"recovered: false"`` or ``"gap"``.
        at: when (``trio.current_time()``).
    """

    channel: str
    first: int
    last: int
    reason: str
    at: float


class _Refused(Exception):
    """The server refused a ``subscribe``: the subscriber closes and connects again."""


@dataclass
class _Position:
    offset: int
    epoch: str


class Subscriber:
    """Follows ``channels`` over ``/ws`` and recovers (module docstring).

    Args:
        name: for the report.
        urls: the servers' base URLs; it starts on the first.
        token: a user token the servers accept.
        channels: what it subscribes to.
    """

    def __init__(self, name: str, urls: Sequence[str], token: str, channels: Sequence[str]) -> None:
        self.name = name
        self.urls = list(urls)
        self.token = token
        self.channels = list(channels)
        self.at = 0
        self.positions: dict[str, _Position] = {}
        self.received: list[Received] = []
        self.reloads: list[Reload] = []
        self.duplicates = 0
        self.late = 0
        """Publications below its position that it had not seen (out of offset order)."""
        self.reconnects = 0
        self.closes: list[str] = []
        self.subscribed = trio.Event()
        self._ids = itertools.count(1)
        self._pending: dict[int, str] = {}
        self._seen: dict[str, set[int]] = {}

    @property
    def url(self) -> str:
        """The server it is on now."""
        return self.urls[self.at]

    async def run(self) -> None:
        """Follow until cancelled."""
        connections = 0
        while True:
            ws_url = self.url.replace("http", "ws", 1) + f"/ws?token={self.token}"
            try:
                async with open_websocket_url(
                    ws_url, connect_timeout=2.0, disconnect_timeout=1.0
                ) as ws:
                    connections += 1
                    self.reconnects = connections - 1
                    await self._serve(ws)
            except (HandshakeError, ConnectionRejected, OSError) as refused:
                self.closes.append(f"refused: {type(refused).__name__}")
                self.at = (self.at + 1) % len(self.urls)
            except ConnectionClosed as closed:
                reason = closed.reason
                self.closes.append(f"closed {reason.code if reason else 1006}")
            except _Refused as refused:
                self.closes.append(str(refused))
            await trio.sleep(RETRY_DELAY)

    async def _serve(self, ws: WebSocketConnection) -> None:
        self._pending = {}
        for channel in self.channels:
            params: dict[str, Any] = {"channel": channel}
            if (position := self.positions.get(channel)) is not None:
                params["since"] = {"offset": position.offset, "epoch": position.epoch}
            id = next(self._ids)
            self._pending[id] = channel
            request = {"jsonrpc": "2.0", "id": id, "method": "subscribe", "params": params}
            await ws.send_message(json.dumps(request))
        next_ping = trio.current_time() + PING_INTERVAL
        while True:
            with trio.move_on_at(next_ping) as idle:
                message = await ws.get_message()
            if idle.cancelled_caught:  # only client frames keep a session alive
                ping = {"jsonrpc": "2.0", "id": next(self._ids), "method": "ping"}
                await ws.send_message(json.dumps(ping))
                next_ping = trio.current_time() + PING_INTERVAL
                continue
            decoded = _decode(message)
            for item in decoded if isinstance(decoded, list) else [decoded]:
                self._take(item)

    def _take(self, item: dict[str, Any]) -> None:
        now = trio.current_time()
        method = item.get("method")
        if method == "pub":  # the hot path: plain dict reads (Pub's shape), no conversion
            params = item["params"]
            self._deliver(params["channel"], params["offset"], params["data"], now, recovered=False)
        elif method == "gap":
            gap = msgspec.convert(item["params"], GapNotice)
            position = self.positions[gap.channel]
            if gap.last > position.offset:
                self.reloads.append(Reload(gap.channel, gap.first, gap.last, "gap", now))
                self.positions[gap.channel] = _Position(gap.last, gap.epoch)
        elif item.get("id") in self._pending:
            channel = self._pending.pop(item["id"])
            if "error" in item:  # e.g. -32001 in an outage: count it, connect again
                raise _Refused(f"subscribe refused {item['error'].get('code')}")
            self._subscribed(channel, msgspec.convert(item["result"], SubscribeResult[Any]), now)
            if not self._pending:
                self.subscribed.set()

    def _subscribed(self, channel: str, result: SubscribeResult[Any], now: float) -> None:
        previous = self.positions.get(channel)
        if previous is None:
            self.positions[channel] = _Position(result.offset, result.epoch)
            self._seen[channel] = set()
            return
        if result.recovered is True and result.epoch == previous.epoch:
            publications = result.publications if isinstance(result.publications, list) else []
            for publication in publications:
                self._deliver(channel, publication.offset, publication.data, now, recovered=True)
            return
        first = previous.offset + 1 if result.epoch == previous.epoch else 1
        self.reloads.append(Reload(channel, first, result.offset, "recovered: false", now))
        self.positions[channel] = _Position(result.offset, result.epoch)

    def _deliver(
        self, channel: str, offset: int, data: dict[str, Any], now: float, *, recovered: bool
    ) -> None:
        position = self.positions[channel]
        seen = self._seen[channel]
        if offset <= position.offset:
            if offset in seen:
                self.duplicates += 1
            else:
                self.late += 1
            return
        seen.add(offset)
        position.offset = offset
        self.received.append(Received(channel, offset, int(data["seq"]), now, recovered))
