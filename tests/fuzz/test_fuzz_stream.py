"""The realtime stream's entries fuzzed: whatever a producer XADDs, the pipeline goes on.

:func:`~actors.realtime.transform.parse_entry` and the transformer get random fields
(lone surrogates, deep and huge JSON, odd offsets and generations): each entry is a
:class:`~actors.realtime.transform.PoisonEvent` or an event that renders and ships,
never another exception. Then live, over the in-process backend and a real Redis
(raw bytes that are not UTF-8 included): poison entries are acknowledged and counted,
and the valid events among them are delivered in order, with no restart.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Final

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from actors.realtime.nozzle import Batch, transformer_index
from actors.realtime.pipeline import RealtimeSettings, realtime_subtree
from actors.realtime.streams import GROUP, STREAM
from actors.realtime.transform import (
    MAX_DATA_BYTES,
    Parsed,
    PoisonEvent,
    Rendered,
    decode_batch,
    encode_batch,
    parse_entry,
    render,
)
from actors.realtime.transformer import Transformer
from protocols.websocket.frames import pub_frame
from stores.backends import open_key_value
from stores.memory import MemoryCache, MemorySequencer, MemoryStream
from stores.stream import StreamEntry
from tests.fuzz.budget import fuzzing
from tests.redis_clients import client_for, flush

any_text = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates too
DEEP: Final = 5_000
datas = st.one_of(
    st.sampled_from(
        [
            "{}",
            '{"user":"alice","text":"hi"}',
            '{"user":"\\u0000"}',
            '{"user":5}',
            '{"author":{},"user":"a"}',
            "[1,2]",
            "null",
            "not json",
            "",
            "\x00",
            '{"a":1e400}',
            '{"a":' + "9" * 5_000 + "}",
            '{"a":123456789012345678901234567890}',
            '{"a":"\\ud800"}',
            '{"a":"\ud800"}',
            '{"a":"\udcff"}',
            "[" * DEEP + "]" * DEEP,
            '{"a":' + "[" * DEEP + "]" * DEEP + "}",
            '{"user":"u","a":' + "[" * 900 + "]" * 900 + "}",
            '{"a":"' + "x" * MAX_DATA_BYTES + '"}',
            '{"a":1,"a":2}',
        ]
    ),
    any_text,
    st.dictionaries(any_text, any_text | st.integers() | st.floats(), max_size=3).map(
        lambda value: json.dumps(value, ensure_ascii=False)
    ),
)
channels = st.one_of(
    st.sampled_from(
        ["post:1", "user:alice", "circle:bob", "following:alice", "system:x", "post:", "nowhere"]
    ),
    any_text.map(lambda text: "post:" + text),
    any_text,
)
offsets = st.one_of(
    st.integers(-1, 2**70).map(str),
    st.sampled_from(["", "0", "01", "²", "١٢", "1.5", " 1", "1_000", "9" * 19, "9" * 5_000]),
    any_text,
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "channel": channels,
        "data": datas,
        "offset": offsets,
        "gen": st.sampled_from(["a1b2c3d4e5f60718", "", "\ud800"]) | any_text,
    },
).flatmap(
    lambda fields: st.dictionaries(any_text, any_text, max_size=2).map(
        lambda extra: {**extra, **fields}
    )
)


def check_parsed(entry_id: str, fields: dict[str, str]) -> Parsed | None:
    """``parse_entry``, asserting a valid result renders and ships; ``None`` for poison."""
    try:
        parsed = parse_entry(entry_id, fields)
    except PoisonEvent:
        return None
    assert isinstance(parsed.data, dict)
    assert msgspec.json.decode(parsed.raw) == parsed.data
    assert parsed.offset is None or 0 < parsed.offset < 2**63
    payload = render(parsed, {})
    assert isinstance(msgspec.json.decode(payload), dict)
    rendered = Rendered(parsed.channel, parsed.offset or 1, parsed.epoch or "e", entry_id, payload)
    assert decode_batch(encode_batch([rendered], "origin")) == ("origin", [rendered])
    pub_frame(parsed.channel, rendered.offset, payload)
    return parsed


@fuzzing(500)
@given(entries)
def test_random_fields_are_an_event_that_ships_or_poison(fields: dict[str, str]) -> None:
    """Any fields of a stream entry are either poison or an event whose payload renders, encodes in a Pub/Sub batch and frames for the WebSocket; never another exception."""  # noqa: E501
    check_parsed("1-0", fields)


@fuzzing(200)
@given(st.one_of(st.none(), any_text, channels), st.integers(1, 8))
def test_any_channel_is_routed_to_a_transformer(channel: str | None, count: int) -> None:
    """The nozzle routes an entry with any ``channel`` field (lone surrogates included) to one of the transformers."""  # noqa: E501
    assert 0 <= transformer_index(channel, count) < count


class Captured:
    """A fan-out that keeps what the transformer delivers."""

    def __init__(self) -> None:
        self.items: list[Rendered] = []

    async def deliver(self, batch: list[Rendered]) -> None:
        self.items += batch
        await trio.lowlevel.checkpoint()

    async def announce(self, batches: list[list[Rendered]]) -> None:
        await trio.lowlevel.checkpoint()


@fuzzing(100)
@given(st.lists(st.lists(entries, min_size=1, max_size=6), min_size=1, max_size=4))
async def test_the_transformer_counts_every_entry_as_an_event_or_poison(
    batches: list[list[dict[str, str]]],
) -> None:
    """Batches of random entries through the transformer: each entry is counted as an event or as poison, the events are delivered with their rendered payloads, and the actor never fails."""  # noqa: E501
    captured = Captured()
    stream = MemoryStream()
    transformer = Transformer(stream, MemorySequencer(), MemoryCache(), captured)
    expected = 0
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(transformer.run)
        for number, batch in enumerate(batches):
            stream_entries = tuple(
                StreamEntry(f"{number + 1}-{index}", fields) for index, fields in enumerate(batch)
            )
            expected += sum(
                check_parsed(entry.id, dict(entry.fields)) is not None for entry in stream_entries
            )
            await ref.call(Batch(stream_entries))
        figures = transformer.statistics()
        assert (figures.state, figures.last_error) == ("running", None)
        nursery.cancel_scope.cancel()
    assert transformer.events + transformer.poison == sum(len(batch) for batch in batches)
    assert transformer.events == expected == len(captured.items)
    for item in captured.items:
        assert isinstance(msgspec.json.decode(item.data), dict)


# -- live: the realtime subtree over a real stream ---------------------------------------


@dataclass(eq=False)
class Subscriber:
    """A subscriber that keeps every offer: ``(channel, offset, data)`` read from its frame."""

    got: list[tuple[str, int, Any]] = field(default_factory=list)
    subscriptions: frozenset[str] = frozenset()

    def offer(self, channel: str, offset: int, frame: bytes, /) -> bool:
        length = frame[1]  # an unmasked server frame: 2, 4 or 10 header bytes (RFC 6455 5.2)
        payload = frame[2:] if length < 126 else frame[4:] if length == 126 else frame[10:]
        self.got.append((channel, offset, json.loads(payload)["params"]["data"]))
        return True

    def statistics(self) -> SimpleNamespace:
        return SimpleNamespace(close=None)


POISON: Final[list[dict[str, str]]] = [
    {"channel": "nowhere", "data": "{}"},
    {"channel": "system:dashboard", "data": "{}"},
    {"data": "{}"},
    {"channel": "post:1", "data": "[" * DEEP + "]" * DEEP},
    {"channel": "post:1", "data": '{"a":1e400}'},
    {"channel": "post:1", "data": '{"a":' + "9" * 5_000 + "}"},
    {"channel": "post:1", "data": '{"a":"x"}' + " " * MAX_DATA_BYTES},
    {"channel": "post:1", "data": "\x00"},
    {"channel": "post:1", "data": "{}", "offset": "²", "gen": "a1b2c3d4e5f60718"},
    {"channel": "post:1", "data": "{}", "offset": "9" * 30, "gen": "a1b2c3d4e5f60718"},
    {"channel": "post:1", "data": "{}", "offset": "9" * 5_000, "gen": "a1b2c3d4e5f60718"},
]
"""Entries any producer can append (text only): poison on every backend."""
SURROGATES: Final[list[dict[str, str]]] = [
    {"channel": "post:1", "data": '{"a":"\ud800"}'},
    {"channel": "post:\udcff", "data": "{}"},
    {"channel": "post:1", "data": "{}", "offset": "1", "gen": "\ud800"},
]
"""Entries with lone surrogates (the in-process stream takes any ``str``)."""
NOT_UTF8: Final[list[dict[Any, Any]]] = [  # redis-py types its fields loosely
    {b"channel": b"post:1", b"data": b'{"a":"\xff"}'},
    {b"channel": b"post:\xff\xfe", b"data": b"{}"},
    {b"channel": b"post:1", b"data": b"{}", b"offset": b"1", b"gen": b"\xff"},
    {b"\xff": b"\xfe"},
]
"""Entries a producer writing bytes can append to Redis (``redis-cli``, another client)."""


def _event(seq: int) -> dict[str, str]:
    return {"channel": "post:1", "data": json.dumps({"seq": seq})}


async def _until(condition: Any) -> None:
    """Wait until ``condition()`` holds, at most 20 s (polls: the stages have no event to
    wait on from outside, and Redis runs in real time)."""
    with trio.fail_after(20):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_poison_entries_are_acknowledged_counted_and_do_not_stop_delivery(
    redis_or_none: str | None, clock: trio.testing.MockClock | None
) -> None:
    """Poison entries XADDed between valid events (deep or out-of-range JSON, odd offsets, lone surrogates, and on Redis bytes that are not UTF-8) are acknowledged and counted; the valid events are delivered in order with offsets 1, 2, 3, and no stage of the pipeline restarts."""  # noqa: E501
    if redis_or_none is not None:
        flush(redis_or_none)
    kv = open_key_value(redis_or_none or "memory://")
    settings = RealtimeSettings(
        batch=4,
        block=0.05,
        reclaim_idle=0.5,
        reclaim_every=0.2,
        reorder_wait=0.2,
        consumer="fuzz",
        transformers=2,
    )
    supervisor, realtime = realtime_subtree(
        stream=kv.stream,
        pubsub=kv.pubsub,
        sequencer=kv.sequencer,
        cache=kv.cache,
        shared=kv.shared,
        settings=settings,
        render=pub_frame,
    )
    subscriber = Subscriber()
    appended = POISON + (SURROGATES if redis_or_none is None else [])
    valid = len(range(0, len(appended), 4))
    poisoned = len(appended) + (len(NOT_UTF8) if redis_or_none is not None else 0)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            realtime.publisher.subscribe(subscriber, "post:1")
            for index, bad in enumerate(appended):
                if index % 4 == 0:
                    await kv.stream.append(STREAM, _event(index // 4))
                await kv.stream.append(STREAM, bad)
            if redis_or_none is not None:
                client = client_for(redis_or_none)
                first = kv.stream.partitions(STREAM)[0]  # entries without a UTF-8 channel
                for raw in NOT_UTF8:
                    await trio.to_thread.run_sync(functools.partial(client.xadd, first, raw))
            await _until(lambda: realtime.statistics().poison == poisoned)
            await _until(lambda: len(subscriber.got) == valid)
            assert [(offset, data["seq"]) for _, offset, data in subscriber.got] == [
                (seq + 1, seq) for seq in range(valid)
            ]
            statistics = realtime.statistics()
            assert (statistics.events, statistics.read) == (valid, valid + poisoned)
            with trio.fail_after(20):
                while await kv.stream.pending(STREAM, GROUP) > 0:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            restarts = {child.id: child.restarts for child in supervisor.statistics().children}
            assert not any(restarts.values()), restarts
            supervisor.request_stop()
    finally:
        await kv.aclose()


@pytest.mark.parametrize("count", [1, 3])
def test_a_channel_that_was_not_utf8_is_routed(count: int) -> None:
    """A ``channel`` with lone surrogates (bytes that were not UTF-8) goes to a transformer: with several, the nozzle raised on it and restarted for ever."""  # noqa: E501
    assert 0 <= transformer_index("post:\udcff\ud800", count) < count
