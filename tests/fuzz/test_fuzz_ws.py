"""``GET /ws`` fuzzed frame by frame: the whole server in this process, a raw socket client.

The client (:class:`tests.fuzz.live.RawWebSocket`) writes frames it builds itself
(:func:`tests.fuzz.live.client_frame`): text, binary, fragmented, control frames with odd
payloads, unmasked, reserved opcodes and bits, invalid UTF-8, lengths in the wrong form,
split anywhere. It ends each case with a ping and reads until its pong or the server's
close. What the server sends must be valid JSON-RPC text messages, pongs of the pings
sent, and at most one close frame with a documented code (:mod:`protocols.websocket.codes`;
or the echo of the client's own close); afterwards no child of the tree has restarted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from auth.tokens import issue_token
from protocols.websocket import codes
from protocols.websocket.session import KiB, Limits
from tests.fuzz.budget import fuzzing, repeat
from tests.fuzz.corpus import (
    NASTIES,
    RPC_METHODS,
    SESSION_METHODS,
    check_message,
    payload_texts,
    request,
)
from tests.fuzz.live import (
    SENTINEL,
    Outcome,
    RawWebSocket,
    client_frame,
    close_payload,
    masked,
    rss_bytes,
    tree_problems,
)
from tests.in_process import Server, serving

DOCUMENTED: Final = frozenset(
    value
    for name, value in vars(codes).items()
    if name.startswith("CLOSE_") and value not in (codes.CLOSE_ABNORMAL, codes.CLOSE_INTERNAL_ERROR)
)
"""The close codes the server may send (codes.py: all but 1006 and 1011)."""
METHODS: Final = SESSION_METHODS | RPC_METHODS
PING: Final = request("ping")
LIMITS: Final = Limits(max_frame_bytes=64 * KiB, max_outbox_bytes=64 * KiB, idle_timeout=60)


Allowed = frozenset[int | None]
"""The outcomes a case may have: close codes, or ``None`` (the connection stays open)."""
_OPEN: Final[Allowed] = frozenset({None})
_BAD: Final[Allowed] = frozenset({codes.CLOSE_PROTOCOL_ERROR})
_NOT_UTF8: Final[Allowed] = frozenset({codes.CLOSE_INVALID_DATA})
_TOO_BIG: Final[Allowed] = frozenset({codes.CLOSE_TOO_BIG})


def check_outcome(outcome: Outcome, sent: bytes, allowed: Allowed) -> None:
    """Assert what the server sent is valid: JSON-RPC messages, pongs of pings ``sent``
    holds, then its pong of the sentinel or a close frame whose code ``allowed`` holds."""
    for message in outcome.messages:
        check_message(message)
    for pong in outcome.pongs:
        assert pong == SENTINEL or masked(pong) in sent, pong
    if outcome.close is None:
        assert SENTINEL in outcome.pongs, ("the connection ended without a close", outcome)
        assert None in allowed, ("no close", outcome)
    else:
        assert outcome.close[0] in allowed, outcome.close
        assert len(outcome.close[1].encode()) <= 123, outcome.close


def exchange(url: str, data: bytes, *, query: str = "", chunks: list[int] | None = None) -> Outcome:
    """Connect, write ``data`` (in pieces of the ``chunks`` sizes if given), finish."""
    ws = RawWebSocket(url, query)
    at = 0
    for size in chunks or [len(data)]:
        if not ws.send(data[at : at + size]):
            break
        at += size
    else:
        ws.send(data[at:])
    return ws.finish()


def f(payload: bytes = PING, **options: Any) -> bytes:
    """A client frame (:func:`tests.fuzz.live.client_frame`)."""
    return client_frame(payload, **options)


def _huge_header() -> bytes:
    """A masked text frame header declaring 2**40 bytes."""
    return bytes((0x81, 0x80 | 127)) + (2**40).to_bytes(8, "big") + b"\x01\x02\x03\x04"


FRAME_CASES: Final[list[tuple[str, bytes, Allowed]]] = [
    ("text", f(), _OPEN),
    ("text-empty", f(b""), _OPEN),
    ("text-nul", f(b"\x00"), _OPEN),
    ("text-deep", f(b"[" * 5_000 + b"]" * 5_000), _OPEN),
    ("text-over-limit", f(b'"' + b"x" * (64 * KiB) + b'"'), _TOO_BIG),
    ("text-ten-mb", f(b"x" * (10 << 20)), _TOO_BIG),
    # The sentinel ping after it is read as the frame's payload, masked: not UTF-8.
    ("text-declared-2**40", _huge_header() + b"x" * 100_000, _TOO_BIG | _NOT_UTF8),
    (
        "fragments-over-limit",
        f(b"x" * 1000, fin=False) + f(b"x" * 1000, opcode=0, fin=False) * 70,
        _TOO_BIG,
    ),
    (
        "fragments-empty",
        f(b"", fin=False) + f(b"", opcode=0, fin=False) * 500 + f(PING, opcode=0),
        _OPEN,
    ),
    (
        "fragments-with-ping",
        f(PING[:9], fin=False) + f(b"mid", opcode=9) + f(PING[9:], opcode=0),
        _OPEN,
    ),
    ("utf8-split-over-fragments", f(b'"\xe2', fin=False) + f(b'\x82\xac"', opcode=0), _OPEN),
    ("invalid-utf8", f(b'"\xff"'), _NOT_UTF8),
    ("invalid-utf8-over-fragments", f(b'"\xe2', fin=False) + f(b'"', opcode=0), _NOT_UTF8),
    ("surrogate-utf8", f(b'"\xed\xa0\x80"'), _NOT_UTF8),
    ("overlong-utf8", f(b'"\xc0\xaf"'), _NOT_UTF8),
    ("binary", f(b"\x00", opcode=2), frozenset({codes.CLOSE_UNSUPPORTED_DATA})),
    ("binary-empty", f(b"", opcode=2), frozenset({codes.CLOSE_UNSUPPORTED_DATA})),
    (
        "binary-fragmented",
        f(b"a", opcode=2, fin=False) + f(b"b", opcode=0),
        frozenset({codes.CLOSE_UNSUPPORTED_DATA}),
    ),
    ("unmasked", f(mask=False), _BAD),
    ("unmasked-ping", f(b"x", opcode=9, mask=False), _BAD),
    *((f"opcode-{op:x}", f(opcode=op), _BAD) for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)),
    *((f"rsv-{rsv}", f(rsv=rsv), _BAD) for rsv in range(1, 8)),
    ("continuation-first", f(opcode=0), _BAD),
    ("text-inside-fragments", f(b"[", fin=False) + f(b"]"), _BAD),
    ("binary-inside-fragments", f(b"[", fin=False) + f(b"]", opcode=2), _BAD),
    ("length-16-for-short", f(length="16"), _OPEN | _BAD),
    ("length-64-for-short", f(length="64"), _OPEN | _BAD),
    (
        "length-msb-set",
        bytes((0x81, 0xFF, 0x80)) + b"\x00" * 7 + b"\x01\x02\x03\x04",
        _BAD | _TOO_BIG,
    ),
    ("ping-125", f(b"p" * 125, opcode=9), _OPEN),
    ("ping-126", f(b"p" * 126, opcode=9), _BAD),
    ("ping-fragmented", f(b"p", opcode=9, fin=False), _BAD),
    ("ping-many", f(b"q", opcode=9) * 1000, _OPEN),
    ("pong-unsolicited", f(b"x", opcode=0xA), _OPEN),
    ("pong-126", f(b"x" * 126, opcode=0xA), _BAD),
    ("close-empty", f(b"", opcode=8), frozenset({1005})),
    ("close-one-byte", f(b"\x03", opcode=8), _BAD),
    *(
        (f"close-{code}", f(close_payload(code), opcode=8), _BAD)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    ),
    *(
        (f"close-{code}", f(close_payload(code, b"bye"), opcode=8), frozenset({code}))
        for code in (1000, 1001, 1003, 1011, 3000, 4000, 4999)
    ),
    ("close-reason-not-utf8", f(close_payload(1000, b"\xff"), opcode=8), _NOT_UTF8),
    ("close-reason-123", f(close_payload(1000, b"r" * 123), opcode=8), frozenset({1000})),
    ("close-reason-124", f(close_payload(1000, b"r" * 124), opcode=8), _BAD),
    ("close-fragmented", f(close_payload(1000), opcode=8, fin=False), _BAD),
    (
        "close-then-more",
        f(close_payload(1000), opcode=8) + f() + f(b"x", opcode=2),
        frozenset({1000}),
    ),
    ("garbage-bytes", b"\x00\xff" * 50, _BAD),
]
"""``(name, bytes, the outcomes allowed)``; ``None``: the connection stays open."""


def _nasty_frames() -> list[tuple[str, bytes, Allowed]]:
    """Each JSON-RPC nasty of the corpus as one text frame: a reply if it is UTF-8 and fits
    the frame limit, 1007 if it is not UTF-8, 1009 if it is too big."""
    cases: list[tuple[str, bytes, Allowed]] = []
    for name, payload in NASTIES:
        allowed: Allowed
        try:
            payload.decode()
        except UnicodeDecodeError:
            allowed = _NOT_UTF8
        else:
            allowed = _TOO_BIG if len(payload) > LIMITS.max_frame_bytes else _OPEN
        cases.append((f"nasty-{name}", f(payload), allowed))
    return cases


def _token(server: Server, user: str, **roles: bool) -> str:
    return "?token=" + issue_token(server.secret, user, ttl_seconds=3600, **roles)


async def _fuzzed(
    tmp_path: Path, run: Callable[[Server], None], limits: Limits = LIMITS
) -> list[str]:
    """Serve, run ``run(server)`` in a worker thread, return what ``system.health`` shows
    wrong afterwards."""
    async with serving(tmp_path, ws_limits=limits) as server:

        def fuzz() -> list[str]:
            run(server)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                return tree_problems(client)

        return await trio.to_thread.run_sync(fuzz)


async def test_hand_picked_frames_get_valid_replies_or_documented_closes(tmp_path: Path) -> None:
    """Each hand-picked frame sequence (odd control frames, reserved opcodes and bits, unmasked, invalid UTF-8, lengths out of bounds, every corpus nasty as text) gets valid JSON-RPC replies and its documented close code, and no child restarts."""  # noqa: E501

    def run(server: Server) -> None:
        query = _token(server, "alice")
        for name, data, allowed in FRAME_CASES + _nasty_frames():
            try:
                check_outcome(exchange(server.url, data, query=query), data, allowed)
            except AssertionError as failed:
                raise AssertionError(f"case {name!r}: {str(failed)[:500]}") from None

    assert await _fuzzed(tmp_path, run) == []


async def test_a_ping_after_the_servers_close_is_ignored(tmp_path: Path) -> None:
    """A ping that arrives after the server sent its close frame gets no pong (RFC 6455 section 5.5.1) and ends nothing but its own connection: no child restarts (it crashed the listener)."""  # noqa: E501

    def run(server: Server) -> None:
        ws = RawWebSocket(server.url, _token(server, "alice"))
        ws.send(f(b"\x00", opcode=2))
        ws.read_until(lambda outcome: outcome.close is not None)
        ws.send(f(b"late", opcode=9))
        outcome = ws.finish()
        assert outcome.close == (codes.CLOSE_UNSUPPORTED_DATA, "binary frames not accepted")
        assert b"late" not in outcome.pongs

    assert await _fuzzed(tmp_path, run) == []


@st.composite
def frame_sequences(draw: st.DrawFn) -> tuple[bytes, list[int], frozenset[int]]:
    """1-6 frames, mostly well-formed with JSON-RPC payloads, some broken; the sizes of the
    pieces they are written in; the codes of the close frames among them (the server echoes
    a valid one)."""
    frames = []
    closes: set[int] = set()
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 19))
        payload = draw(payload_texts(METHODS)).encode()
        if kind < 9:
            frames.append(f(payload))
        elif kind < 12:
            cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=1, max_size=3)))
            parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
            for index, part in enumerate(parts):
                last = index == len(parts) - 1
                frames.append(f(part, opcode=0 if index else 1, fin=last))
                if not last and draw(st.booleans()):
                    frames.append(f(draw(st.binary(max_size=8)), opcode=9))
        elif kind == 12:
            frames.append(f(draw(st.binary(max_size=130)), opcode=draw(st.sampled_from([9, 10]))))
        elif kind == 13:
            code = draw(st.sampled_from([None, 1000, 1001, 1002, 1005, 3000, 4999, 5000, 0]))
            reason = draw(st.binary(max_size=5) | st.text(max_size=130).map(str.encode))
            frames.append(f(close_payload(code, reason if code else b""), opcode=8))
            closes.add(1005 if code is None else code)
        elif kind == 14:
            frames.append(f(draw(st.binary(max_size=8)), opcode=2))
        elif kind == 15:
            payload, opcode = draw(st.binary(max_size=20)), draw(st.integers(0, 15))
            closes.add(int.from_bytes(payload[:2], "big") if len(payload) > 1 else 1005)
            frames.append(
                f(
                    payload,
                    opcode=opcode,
                    fin=draw(st.booleans()),
                    rsv=draw(st.sampled_from([0, 0, 1, 4, 7])),
                    mask=draw(st.integers(0, 5)) > 0,
                    length=draw(st.sampled_from(["minimal", "16", "64"])),
                )
            )
        elif kind == 16:
            frames.append(f(draw(st.binary(min_size=1, max_size=12))))  # not UTF-8, mostly
        else:  # bytes that are not a frame; never the start of a close frame
            stray = draw(st.binary(min_size=1, max_size=16))
            frames.append(stray if stray[0] & 0x0F != 8 else bytes((stray[0] ^ 1,)) + stray[1:])
    data = b"".join(frames)
    if draw(st.booleans()):
        return data, [len(data)], frozenset(closes)
    chunks = draw(st.lists(st.integers(1, max(1, len(data))), max_size=8))
    return data, chunks, frozenset(closes)


async def test_random_frame_sequences_get_valid_replies_or_documented_closes(
    tmp_path: Path,
) -> None:
    """Random sequences of frames (requests, fragments, pings, closes, binary, broken headers, stray bytes), written in random pieces, without a token, with a user's or with a service's, get valid JSON-RPC replies and a documented close code, and no child restarts."""  # noqa: E501

    def run(server: Server) -> None:
        users = iter(range(10**9))

        @fuzzing(150)
        @given(frame_sequences(), st.sampled_from(["none", "user", "service"]))
        def case(sequence: tuple[bytes, list[int], frozenset[int]], who: str) -> None:
            data, chunks, closes = sequence
            query = {
                "none": "",
                "user": _token(server, f"fuzz{next(users)}"),
                "service": _token(server, "fuzzer", service=True),
            }[who]
            outcome = exchange(server.url, data, query=query, chunks=chunks)
            check_outcome(outcome, data, _OPEN | DOCUMENTED | closes)

        case()

    assert await _fuzzed(tmp_path, run) == []


SPLIT_CASES: Final = [
    ("request", f()),
    ("batch", f(b"[" + PING + b"," + request("nope", id=2) + b"]")),
    ("fragments-and-ping", f(PING[:9], fin=False) + f(b"mid", opcode=9) + f(PING[9:], opcode=0)),
    ("utf8-over-fragments", f(b'"\xe2', fin=False) + f(b'\x82\xac"', opcode=0)),
    ("close", f(close_payload(4000, b"done"), opcode=8)),
    ("binary", f() + f(b"\x00", opcode=2)),
    ("invalid-utf8", f(b'"\xe2\x82"')),
    ("reserved-opcode", f() + f(opcode=0xB)),
    ("length-16", f(b"x" * 130)),
]


def _settled(outcome: Outcome) -> tuple[list[Any], tuple[int, str] | None]:
    """What a split must not change: the replies, in order, and the close."""
    return [json.loads(message) for message in outcome.messages], outcome.close


async def test_frames_split_at_every_byte_boundary_get_the_same_outcome(tmp_path: Path) -> None:
    """A frame sequence written in two pieces, cut at each of its byte boundaries in turn, gets the same close as when written at once, and the same replies; when the server closes, the replies queued before the close but not yet begun may be dropped (the documented close rule), so then one reply list is a prefix of the other."""  # noqa: E501

    def run(server: Server) -> None:
        query = _token(server, "splitter", service=True)  # no rate limit to vary the replies
        for name, data in SPLIT_CASES:
            whole = _settled(exchange(server.url, data, query=query))
            for at in range(1, len(data)):
                split = _settled(exchange(server.url, data, query=query, chunks=[at]))
                assert split[1] == whole[1], (name, at, split, whole)
                if whole[1] is None or whole[1][0] == 1000:
                    assert split[0] == whole[0], (name, at, split, whole)
                else:
                    shorter, longer = sorted((split[0], whole[0]), key=len)
                    assert longer[: len(shorter)] == shorter, (name, at, split, whole)

    assert await _fuzzed(tmp_path, run) == []


async def test_a_flood_of_garbage_frames_leaves_memory_bounded(tmp_path: Path) -> None:
    """Thousands of garbage frames over one connection (read as they are answered) and over connections opened and closed, each answered or closed as documented, grow this process's memory by less than 32 MiB."""  # noqa: E501
    frames = [
        payload
        for name, payload, allowed in _nasty_frames()
        if allowed == _OPEN and len(payload) < 20_000 and name != "nasty-batch-full"
    ]  # (a batch of 100 system.health calls takes 0.3 s: it is no garbage)

    def run(server: Server) -> None:
        query = _token(server, "flooder", service=True)

        def flood(count: int) -> None:
            ws = RawWebSocket(server.url, query)
            for n in range(count):
                ws.send(frames[n % len(frames)])
                if n % 10 == 9:  # read as we go: the outbox (1 MiB) never fills
                    ws.send(f(SENTINEL, opcode=9))
                    ws.read_until(lambda outcome: SENTINEL in outcome.pongs)
                    ws.outcome.pongs.clear()
                    ws.outcome.messages.clear()
            check_outcome(ws.finish(), b"", _OPEN)

        flood(1_000)  # warm up: caches, allocator arenas
        before = rss_bytes()
        flood(repeat(3_000))
        for n in range(repeat(60)):
            data = frames[n % len(frames)] + f(b"\x00", opcode=2)
            allowed = frozenset({codes.CLOSE_UNSUPPORTED_DATA})
            check_outcome(exchange(server.url, data, query=query), data, allowed)
        grown = rss_bytes() - before
        assert grown < 32 << 20, f"memory grew by {grown / (1 << 20):.1f} MiB"

    assert await _fuzzed(tmp_path, run, Limits()) == []


async def test_text_that_is_not_utf8_is_closed_1007_with_a_fixed_reason(tmp_path: Path) -> None:
    """Invalid UTF-8 in a text message, whole, over fragments or split across TCP writes, and in a close reason, is closed 1007 with a reason that names what was wrong and not the decoder's byte positions within a socket read (they vary with the segments)."""  # noqa: E501
    text = (codes.CLOSE_INVALID_DATA, "text is not valid UTF-8")
    cases = [
        (f(b'"\xff"'), None, text),
        (f(b'"\xff"'), [7], text),
        (f(b'"\xe2', fin=False) + f(b'"', opcode=0), None, text),
        (f(b'"abc\xc0\xaf"'), [8, 2], text),
        (
            f((1000).to_bytes(2, "big") + b"\xff", opcode=8),
            None,
            (codes.CLOSE_INVALID_DATA, "close reason is not valid UTF-8"),
        ),
    ]

    def run(server: Server) -> None:
        query = _token(server, "decoder", service=True)
        for data, chunks, close in cases:
            outcome = exchange(server.url, data, query=query, chunks=chunks)
            assert outcome.close == close, (data, chunks, outcome)

    assert await _fuzzed(tmp_path, run) == []


UNREAD: Final = 8 << 20
"""Bytes of answers a never-reading client is sent: past the outbox and the kernel's socket
buffers (some 4 MiB on loopback)."""


@pytest.mark.parametrize(
    ("frame", "answer"),
    [
        pytest.param(f(PING), 38, id="requests"),
        pytest.param(f(b"{not json"), 100, id="garbage"),
        pytest.param(f(b"p" * 125, opcode=9), 127, id="pings"),
    ],
)
async def test_a_client_that_does_not_read_is_closed_4008(
    tmp_path: Path, frame: bytes, answer: int
) -> None:
    """A client that sends requests, garbage or pings without reading what comes back is closed 4008 "slow consumer" once its outbox is full (64 KiB here), so that the server holds neither its replies nor its pongs without bound."""  # noqa: E501

    def run(server: Server) -> None:
        ws = RawWebSocket(server.url, _token(server, "reader", service=True), receive_buffer=4096)
        for _ in range(UNREAD // answer // 100):
            if not ws.send(frame * 100):
                break
        outcome = ws.read_until(lambda outcome: outcome.close is not None)
        ws.close()
        assert outcome.close == (codes.CLOSE_SLOW_CONSUMER, "slow consumer"), outcome.close

    assert await _fuzzed(tmp_path, run) == []
