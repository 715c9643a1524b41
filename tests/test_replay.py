"""Replay of the real Reddit comment threads: reading, timing, batching, looping, and delivery.

Reading is tested on the real file (``../shared/data``, the ``data_dir``
fixture); timing, batching and the rounds of a looping replay as pure
functions and, under trio's ``autojump_clock``, against an in-memory
``httpx.MockTransport`` (hours of scaled time pass at once); delivery against
the real server with a real WebSocket tail, at a speed that leaves no pauses.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from click.testing import CliRunner, Result

from cli import main
from client import HttpError, Subscribed, TailStatus, tail
from client.replay import next_batch, replay, replay_loop, schedule
from datasets.reddit import (
    Comment,
    CommentFileError,
    busiest_threads,
    loop_round,
    read_comment_file,
    read_comments,
    rerun_id,
)
from tests.in_process import Server, invoke_in_thread, serving

TIMEOUT = 10.0
"""Seconds any one test may take."""
COMMENTS = "reddit_comments_au_2025.csv"
HEADER = "id,post_id,author,body,score,created_utc,parent_id,subreddit,date"


def comment(
    id: str, post: str, at: float, *, user: str | None = "u", parent: str | None = None
) -> Comment:
    return Comment(id, post, parent or post, user, f"text of {id}", 1, at, "AusFinance")


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER.split(","))
        writer.writerows(rows)
    return path


# -- reading ------------------------------------------------------------------------


def test_read_comments_on_the_real_file(data_dir: Path) -> None:
    """The real file gives all 3,480 comments, sorted by created_utc then id, none malformed, every parent resolving."""  # noqa: E501
    comments, report = read_comment_file(data_dir / COMMENTS)
    assert (report.rows, report.kept, report.malformed) == (3480, 3480, 0)
    assert comments == read_comments(data_dir / COMMENTS)
    keys = [(c.created_utc, c.id) for c in comments]
    assert keys == sorted(keys)
    assert len({c.id for c in comments}) == 3480
    assert len({c.post for c in comments}) == 71  # of the 95 posts, 71 have comments
    # README: 1,948 authors, counting "[deleted]"; no author is empty in this file.
    assert sum(c.user is None for c in comments) == 183
    assert len({c.user for c in comments if c.user is not None}) == 1947
    by_id = {c.id: c for c in comments}
    for c in comments:
        assert c.parent == c.post or by_id[c.parent].post == c.post
    first = comments[0]
    assert (first.id, first.post, first.created_utc, first.subreddit) == (
        "mspza7o", "1kogn98", 1747443450.0, "AusEcon"
    )  # fmt: skip
    assert Counter(c.post for c in comments[:200]).most_common(1) == [("1krq69r", 139)]


def test_event_names_the_user_only_when_there_is_one() -> None:
    """A comment's event carries its fields, `at` = created_utc, and no `user` for a deleted author."""  # noqa: E501
    named = Comment("c1", "p1", "p1", "alice", "hi\nthere", -3, 1.5e9, "ASX")
    assert named.channel == "post:p1"
    assert named.event() == {
        "type": "comment", "id": "c1", "post": "p1", "parent": "p1", "user": "alice",
        "text": "hi\nthere", "score": -3, "subreddit": "ASX", "at": 1.5e9,
    }  # fmt: skip
    assert "user" not in Comment("c2", "p1", "c1", None, "x", 0, 1.5e9, "ASX").event()


def test_malformed_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    """Rows with a bad field count, id, score or time are skipped with their line; multi-line bodies and deleted authors are read."""  # noqa: E501
    path = write_csv(
        tmp_path / "comments.csv",
        [
            ["b", "p1", "[deleted]", "two\nlines", "5", "200.0", "p1", "ASX", "d"],  # line 2-3
            ["bad id", "p1", "x", "body", "1", "100", "p1", "ASX", "d"],  # line 4
            ["c", "p1", "", "body", "not a score", "100", "p1", "ASX", "d"],  # line 5
            ["d", "p1", "x", "body", "1", "yesterday", "p1", "ASX", "d"],  # line 6
            ["e", "p1", "x", "body"],  # line 7
            ["a", "p1", "", "first", "-2", "100.0", "p1", "ASX", "d"],  # line 8
            ["f", "p1", "x", "body", "1", "nan", "p1", "ASX", "d"],  # line 9
        ],
    )
    comments, report = read_comment_file(path)
    assert [(c.id, c.user, c.text, c.score) for c in comments] == [
        ("a", None, "first", -2), ("b", None, "two\nlines", 5)
    ]  # fmt: skip
    assert (report.rows, report.kept, report.malformed) == (7, 2, 5)
    assert [line for line, _ in report.examples] == [4, 5, 6, 7, 9]
    reasons = dict(report.examples)
    assert "id 'bad id'" in reasons[4]
    assert "score" in reasons[5]
    assert "created_utc" in reasons[6]
    assert "expected 9 fields, got 4" in reasons[7]


def test_a_file_without_the_columns_is_refused(tmp_path: Path) -> None:
    """A file whose header lacks a column, or an empty file, raises CommentFileError naming the problem."""  # noqa: E501
    (tmp_path / "posts.csv").write_text("id,title\n1,hello\n")
    with pytest.raises(CommentFileError, match="lacks the columns"):
        read_comments(tmp_path / "posts.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CommentFileError, match="empty"):
        read_comments(tmp_path / "empty.csv")


# -- timing and batching --------------------------------------------------------------


def test_schedule_scales_time_and_caps_long_gaps() -> None:
    """Gaps are divided by speed and those longer than max_gap once scaled are cut to it."""
    hour, day = 3600.0, 86_400.0
    times = [0.0, 60.0, 60.0, hour, hour + day]
    assert schedule(times, speed=60, max_gap=5) == [0.0, 1.0, 1.0, 6.0, 11.0]
    assert schedule(times, speed=60, max_gap=math.inf) == [0.0, 1.0, 1.0, 60.0, 1500.0]
    assert schedule(times, speed=math.inf, max_gap=5) == [0.0] * 5
    assert schedule([], speed=60, max_gap=5) == []
    with pytest.raises(ValueError, match="speed"):
        schedule(times, speed=0, max_gap=5)
    with pytest.raises(ValueError, match="max_gap"):
        schedule(times, speed=1, max_gap=-1)
    with pytest.raises(ValueError, match="ascending"):
        schedule([2.0, 1.0], speed=1, max_gap=5)


def test_next_batch_takes_one_event_per_channel_in_order() -> None:
    """A batch takes the first pending event of each channel, up to its size; the rest keep their order."""  # noqa: E501
    pairs = [("1", "a"), ("2", "a"), ("3", "b"), ("4", "c"), ("5", "b"), ("6", "d")]
    pending = [comment(id, post, 0) for id, post in pairs]
    batch, left = next_batch(pending, 3)
    assert [c.id for c in batch] == ["1", "3", "4"]
    assert [c.id for c in left] == ["2", "5", "6"]
    batch, left = next_batch(left, 100)
    assert ([c.id for c in batch], left) == (["2", "5", "6"], [])


class RecordingServer:
    """An in-memory /rpc: records when each batch came and what it held; refuses ``refuse``."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.batches: list[tuple[float, list[str]]] = []
        self.refuse = refuse
        self.offsets: Counter[str] = Counter()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        self.batches.append((trio.current_time(), [c["params"]["data"]["id"] for c in calls]))
        await trio.sleep(0.001)  # a round trip
        replies: list[dict[str, Any]] = []
        for call in calls:
            channel, data = call["params"]["channel"], call["params"]["data"]
            if data["id"] in self.refuse:
                error = {"code": -32602, "message": "Invalid params", "data": {"detail": "no"}}
                replies.append({"jsonrpc": "2.0", "id": call["id"], "error": error})
                continue
            self.offsets[channel] += 1
            result = {"channel": channel, "offset": self.offsets[channel], "epoch": "e"}
            replies.append({"jsonrpc": "2.0", "id": call["id"], "result": result})
        return httpx.Response(200, json=replies[::-1])  # any order: matched by id


async def test_replay_follows_the_scaled_timeline(autojump_clock: trio.testing.MockClock) -> None:
    """Under a mock clock, batches leave when their events are due; simultaneous events share a batch, one per channel."""  # noqa: E501
    comments = [
        comment("1", "a", 1000.0),
        comment("2", "b", 1000.0),
        comment("3", "a", 1000.0),  # same moment and channel as "1": the next batch
        comment("4", "c", 1060.0),  # 60 s later: 1 s at speed 60
        comment("5", "a", 1000.0 + 86_400),  # a day later: cut to max_gap
    ]
    server = RecordingServer()
    progress: list[tuple[int, int]] = []
    started = trio.current_time()
    summary = await replay(
        comments, "http://starling.test", speed=60, max_gap=5,
        transport=httpx.MockTransport(server.handle),
        on_progress=lambda sent, failed: progress.append((sent, failed)),
    )  # fmt: skip
    sent_at = [(round(at - started, 3), ids) for at, ids in server.batches]
    assert sent_at == [(0.0, ["1", "2"]), (0.001, ["3"]), (1.0, ["4"]), (6.0, ["5"])]
    assert (summary.sent, summary.failed, summary.channels, summary.batches) == (5, 0, 3, 4)
    assert summary.seconds == pytest.approx(6.001)
    assert progress == [(2, 0), (3, 0), (4, 0), (5, 0)]


async def test_replay_counts_refused_events_and_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An event the server refuses counts as failed, with its error, and the replay continues."""
    comments = [comment(str(n), f"p{n}", 1000.0 + n) for n in range(5)]
    server = RecordingServer(refuse=frozenset({"2"}))
    summary = await replay(
        comments, "http://starling.test", speed=1, max_gap=5,
        transport=httpx.MockTransport(server.handle),
    )  # fmt: skip
    assert (summary.sent, summary.failed, summary.channels) == (4, 1, 4)
    ((id, error),) = summary.errors
    assert id == "2"
    assert error.startswith("realtime.publish: Invalid params (-32602)")


# -- looping ---------------------------------------------------------------------------


def test_the_busiest_threads_of_the_real_file(data_dir: Path) -> None:
    """The three busiest threads are 1rt3kyh (199 comments) and, of the four with 198, the
    first two by id."""
    comments = read_comments(data_dir / COMMENTS)
    assert busiest_threads(comments) == ["1rt3kyh", "1qjiwo4", "1r37dfd"]
    assert busiest_threads(comments, 1) == ["1rt3kyh"]
    sizes = Counter(c.post for c in comments)
    assert [sizes[post] for post in busiest_threads(comments, 5)] == [199, 198, 198, 198, 198]


def test_a_round_renames_every_id_and_plays_its_threads_side_by_side() -> None:
    """Round r > 1 gives each comment of the chosen threads the id <id>-r<r>, renames a reply's
    parent alike (a top-level parent stays the post), keeps text, channel and `at`, and
    moves each thread to start with the first, keeping the gaps within it; round 1 keeps
    the ids."""
    comments = [
        comment("c1", "c", 50.0),  # not looped
        comment("a1", "a", 100.0),
        comment("b1", "b", 1000.0),
        comment("b2", "b", 1005.0, parent="b1"),
        comment("a2", "a", 110.0, parent="a1"),
    ]

    reruns = loop_round(sorted(comments, key=lambda c: c.created_utc), ["a", "b"], 2)

    assert [(r.id, r.channel, r.created_utc) for r in reruns] == [
        ("a1-r2", "post:a", 100.0), ("b1-r2", "post:b", 100.0),
        ("b2-r2", "post:b", 105.0), ("a2-r2", "post:a", 110.0),
    ]  # fmt: skip
    events = {r.id: r.event() for r in reruns}
    assert events["a1-r2"] == {**comments[1].event(), "id": "a1-r2"}
    assert events["b2-r2"] == {**comments[3].event(), "id": "b2-r2", "parent": "b1-r2"}
    assert events["b2-r2"]["at"] == 1005.0
    assert [r.id for r in loop_round(comments, ["b"], 3)] == ["b1-r3", "b2-r3"]
    first = loop_round(comments, ["a", "b"], 1)
    assert [r.id for r in first] == ["a1", "b1", "b2", "a2"]
    assert [r.event() for r in first] == [comments[i].event() for i in (1, 2, 3, 4)]


def test_fresh_ids_follow_the_one_id_rule() -> None:
    """A fresh id is refused when it would break the id rule; round 1 keeps the id."""
    assert rerun_id("oabil5q", 12) == "oabil5q-r12"
    assert rerun_id("x" * 62, 1) == "x" * 62
    with pytest.raises(ValueError, match="1-64 characters"):
        rerun_id("x" * 62, 2)
    with pytest.raises(ValueError, match="round"):
        rerun_id("oabil5q", 0)
    with pytest.raises(ValueError, match="1-64 characters"):
        loop_round([comment("x" * 62, "a", 0.0)], ["a"], 2)


async def test_a_loop_replays_the_rounds_with_fresh_ids_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the first pass each round publishes its events with fresh ids, in order, a
    max_gap pause after the previous round; rounds go on until cancelled."""
    first = [
        comment("1", "a", 1000.0),
        comment("2", "b", 1001.0),
        comment("3", "a", 1002.0, parent="1"),
    ]
    server = RecordingServer()
    rounds: list[tuple[int, int]] = []
    started = trio.current_time()
    summaries = await replay_loop(
        first, functools.partial(loop_round, first, ["a"]), "http://starling.test",
        rounds=3, speed=1, max_gap=5, transport=httpx.MockTransport(server.handle),
        on_round=lambda number, summary: rounds.append((number, summary.sent)),
    )  # fmt: skip
    sent_at = [(round(at - started, 3), ids) for at, ids in server.batches]
    assert sent_at == [
        (0.0, ["1"]), (1.0, ["2"]), (2.0, ["3"]),
        (7.001, ["1-r2"]), (9.001, ["3-r2"]),
        (14.002, ["1-r3"]), (16.002, ["3-r3"]),
    ]  # fmt: skip
    assert rounds == [(1, 3), (2, 2), (3, 2)]
    assert [s.failed for s in summaries] == [0, 0, 0]

    server = RecordingServer()
    with trio.move_on_after(1000):
        await replay_loop(
            first, functools.partial(loop_round, first, ["a"]), "http://starling.test",
            speed=1, max_gap=5, transport=httpx.MockTransport(server.handle),
        )  # fmt: skip
    ids = [id for _, batch in server.batches for id in batch]
    assert len(ids) == len(set(ids)) > 100
    assert ids[3:7] == ["1-r2", "3-r2", "1-r3", "3-r3"]


async def test_an_empty_round_ends_the_loop(autojump_clock: trio.testing.MockClock) -> None:
    """A loop whose next round has no events returns after the rounds it played."""
    server = RecordingServer()
    summaries = await replay_loop(
        [comment("1", "a", 0.0)], lambda number: [], "http://starling.test",
        speed=1, max_gap=5, transport=httpx.MockTransport(server.handle),
    )  # fmt: skip
    assert [s.sent for s in summaries] == [1]


# -- against the real server --------------------------------------------------------------


async def test_replayed_comments_reach_a_tail_once_each_in_order(
    data_dir: Path, tmp_path: Path
) -> None:
    """The first 200 real comments replayed at full speed reach a tail of their three threads exactly once each, in created_utc order per thread."""  # noqa: E501
    comments = read_comments(data_dir / COMMENTS)[:200]
    channels = sorted({c.channel for c in comments})
    assert len(channels) == 3
    received: list[dict[str, Any]] = []
    subscribed = trio.Event()
    statuses: list[TailStatus] = []

    def on_status(status: TailStatus) -> None:
        statuses.append(status)
        if sum(isinstance(s, Subscribed) for s in statuses) == len(channels):
            subscribed.set()

    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path) as server, trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    tail, server.url, server.token(), channels, received.append,
                    limit=len(comments), on_status=on_status,
                )
            )  # fmt: skip
            await subscribed.wait()
            summary = await replay(comments, server.url, speed=1e6, max_gap=0.001)
    assert (summary.sent, summary.failed, summary.channels) == (200, 0, 3)
    for channel in channels:
        mine = [p for p in received if p["channel"] == channel]
        expected = [c for c in comments if c.channel == channel]
        assert [p["data"]["id"] for p in mine] == [c.id for c in expected]
        assert [p["offset"] for p in mine] == list(range(1, len(expected) + 1))
    first = comments[0]
    (delivered,) = [p["data"] for p in received if p["data"]["id"] == first.id]
    assert delivered == {**first.event(), "author": {"id": first.user}}


async def test_a_tail_of_the_busiest_thread_keeps_printing_round_after_round(
    data_dir: Path, tmp_path: Path
) -> None:
    """Looping the busiest thread as the demo does, a tail of post:1rt3kyh receives its 199
    real comments, then each again with -r2, then -r3 ids, once each and in order, with
    consecutive offsets and every reply's parent in its own round."""
    comments = read_comments(data_dir / COMMENTS)
    threads = busiest_threads(comments, 1)
    thread = [c for c in comments if c.post == threads[0]]
    channel = thread[0].channel
    received: list[dict[str, Any]] = []
    subscribed = trio.Event()

    def on_status(status: TailStatus) -> None:
        if isinstance(status, Subscribed):
            subscribed.set()

    with trio.fail_after(3 * TIMEOUT):
        async with serving(tmp_path) as server, trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    tail, server.url, server.token(), [channel], received.append,
                    limit=3 * len(thread), on_status=on_status,
                )
            )  # fmt: skip
            await subscribed.wait()
            live = functools.partial(loop_round, comments, threads)
            summaries = await replay_loop(
                live(1), live, server.url, rounds=3, speed=1e6, max_gap=0.001
            )
    assert [s.sent for s in summaries] == [199, 199, 199]
    ids = [p["data"]["id"] for p in received]
    assert ids == [c.id for c in thread] + [f"{c.id}-r{r}" for r in (2, 3) for c in thread]
    assert [p["offset"] for p in received] == list(range(1, 3 * 199 + 1))
    for r, publications in ((2, received[199:398]), (3, received[398:])):
        for data in (p["data"] for p in publications):
            assert data["parent"] == threads[0] or data["parent"].endswith(f"-r{r}")


async def test_replay_needs_the_api_key_when_the_server_has_one(tmp_path: Path) -> None:
    """Without the server's key the replay stops at once with HttpError 401; with it, it publishes."""  # noqa: E501
    comments = [comment("1", "a", 0.0), comment("2", "a", 0.0)]
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path, api_key="s3cret") as server:
            with pytest.raises(HttpError) as raised:
                await replay(comments, server.url, speed=math.inf)
            assert raised.value.status == 401
            summary = await replay(comments, server.url, speed=math.inf, api_key="s3cret")
    assert (summary.sent, summary.failed, summary.batches) == (2, 0, 2)


async def replay_cli(runner: CliRunner, server: Server, path: Path, *args: str) -> Result:
    """``starling replay comments`` in a worker thread (it calls trio.run itself)."""
    argv = ["replay", "comments", str(path), "--url", server.url, "--speed", "1e9", *args]
    return await invoke_in_thread(runner, argv)


async def test_replay_command_skips_and_counts_a_malformed_row(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`starling replay comments` publishes the good rows, and its summary counts the malformed one and names its line."""  # noqa: E501
    path = write_csv(
        tmp_path / "comments.csv",
        [
            ["a", "p1", "alice", "first", "1", "100.0", "p1", "ASX", "d"],
            ["b", "p1", "bob", "second", "oops", "101.0", "a", "ASX", "d"],
            ["c", "p1", "[deleted]", "third", "1", "102.0", "a", "ASX", "d"],
        ],
    )
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path / "server") as server:
            result = await replay_cli(runner, server, path)
            again = await replay_cli(runner, server, path, "--limit", "1")
    assert result.exit_code == 0, result.output
    assert "2 sent, 0 failed, on 1 channels" in result.stderr
    assert "1 malformed rows skipped" in result.stderr
    assert f"{path}:3: score 'oops' is not an integer" in result.stderr
    assert result.stdout == ""
    assert again.exit_code == 0, again.output
    assert "1 sent, 0 failed" in again.stderr


def test_replay_command_refuses_a_file_that_is_not_comments(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`starling replay comments` on a CSV of other columns exits 1 with one error line naming the columns expected."""  # noqa: E501
    (tmp_path / "posts.csv").write_text("id,title\n1,hello\n")
    result = runner.invoke(main, ["replay", "comments", str(tmp_path / "posts.csv")])
    assert result.exit_code == 1, result.output
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: ")
    assert "lacks the columns" in error
    assert "expected a CSV with the columns id,post_id,author" in error
