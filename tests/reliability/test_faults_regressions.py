"""Regressions the fault runs found (tests/reliability/test_faults*.py), each on its own.

* A Redis restart made several realtime children crash at once; the supervisor
  restarted them one after the other, each after the previous one's whole
  restart sequence and a longer backoff, so the relay stayed down ~10 s after
  Redis was back and its process missed the other's batches (gap notices).
* Batches a transformer had delivered to its own process but not announced to
  the others when Redis went away were dropped with the shipping task; the
  other processes skipped their offsets (reorder buffer, 0.5 s) and dropped
  the entries reclaimed 30 s later.
* A publish while the restarted Redis was still loading its append-only file
  answered -32603 "Internal error" (``LOADING`` taken for a refused command).
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from actors.realtime.nozzle import Batch
from actors.realtime.transform import Rendered
from actors.realtime.transformer import Transformer
from stores.errors import BackendUnavailable, QueryError
from stores.memory import MemoryCache, MemorySequencer, MemoryStream
from stores.resp import RespError, check
from stores.stream import StreamEntry
from supervisor import Backoff, ChildSpec, Strategy, Supervisor


class Child:
    """A child that records when it started, crashes on command, and fails its next
    ``fail_starts`` starts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.starts: list[float] = []
        self.fail_starts = 0
        self._wake = trio.Event()
        self._crash = False

    def spec(self) -> ChildSpec:
        return ChildSpec(self.name, self.run)

    async def run(self, *, task_status: trio.TaskStatus[Child] = trio.TASK_STATUS_IGNORED) -> None:
        if self.fail_starts:
            self.fail_starts -= 1
            raise BackendUnavailable(f"{self.name}: backend down")
        self.starts.append(trio.current_time())
        self._wake, self._crash = trio.Event(), False
        task_status.started(self)
        await self._wake.wait()
        if self._crash:
            raise BackendUnavailable(f"{self.name}: connection closed")

    def crash(self) -> None:
        self._crash = True
        self._wake.set()

    def request_stop(self) -> None:
        self._wake.set()


async def test_children_crashed_together_are_restarted_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When a later child's restart backs off (its backend is down) and an earlier child of a rest_for_one supervisor crashed meanwhile, the earlier one is restarted with it in the same passes, not after it with a backoff of its own."""  # noqa: E501
    relay, transformer, presence = Child("relay"), Child("transformer"), Child("presence")
    supervisor = Supervisor(
        "realtime",
        [relay.spec(), transformer.spec(), presence.spec()],
        strategy=Strategy.REST_FOR_ONE,
        intensity=100,
        period=1000,
        backoff=Backoff(initial=0.2, factor=2, maximum=10),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        presence.fail_starts = 4  # its backend is down for its next four starts
        presence.crash()
        relay.crash()  # the same outage, a moment later
        await trio.sleep(60)  # the autojump clock runs every backoff
        supervisor.request_stop()
    # Each pass starts the whole group in order (relay first) until presence starts too.
    assert len(presence.starts) == 2
    assert relay.starts[1] < presence.starts[1]  # tried in the first pass, not after the last
    assert relay.starts[-1] <= presence.starts[-1]  # and started in the last, before it


class Fanout:
    """Delivers here; its first ``announce`` fails as if Redis went away."""

    def __init__(self) -> None:
        self.delivered: list[Rendered] = []
        self.announced: list[list[Rendered]] = []
        self.fail = True

    async def deliver(self, batch: list[Rendered]) -> None:
        await trio.lowlevel.checkpoint()
        self.delivered += batch

    async def announce(self, batches: list[list[Rendered]]) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail:
            self.fail = False
            raise BackendUnavailable("Redis closed the connection")
        self.announced += batches


async def test_an_unannounced_batch_is_announced_when_the_transformer_runs_again() -> None:
    """A batch the transformer delivered to its own process but could not announce to the others (Redis went away) is announced first when the transformer runs again, then acknowledged."""  # noqa: E501
    stream, fanout = MemoryStream(), Fanout()
    transformer = Transformer(stream, MemorySequencer(), MemoryCache(), fanout)
    await stream.ensure_group("starling:events", "starling")
    await stream.append("starling:events", {"channel": "post:1", "data": json.dumps({"n": 1})})
    (entry,) = await stream.read_group("starling:events", "starling", "a", count=10, block=0)

    async def until_it_crashes() -> None:
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(transformer.run)
            await ref.send(Batch((StreamEntry(entry.id, entry.fields),)))
            await trio.sleep_forever()  # until the failed announce crashes the transformer

    with pytest.raises(BaseExceptionGroup) as crashed:
        await until_it_crashes()
    assert crashed.group_contains(BackendUnavailable)
    assert [item.entry for item in fanout.delivered] == [entry.id]
    assert fanout.announced == []
    assert await stream.pending("starling:events", "starling") == 1

    async with trio.open_nursery() as nursery:
        await nursery.start(transformer.run)  # the restart, with no new batch
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [[item.entry for item in batch] for batch in fanout.announced] == [[entry.id]]
    assert await stream.pending("starling:events", "starling") == 0


def test_a_redis_loading_its_data_is_unavailable_not_a_refused_command() -> None:
    """The error reply of a Redis still loading its append-only file after a restart is BackendUnavailable (-32001 to a caller, retried by the nozzle), not a QueryError (-32603)."""  # noqa: E501
    with pytest.raises(BackendUnavailable):
        check(RespError("LOADING Redis is loading the dataset in memory"))
    with pytest.raises(QueryError):
        check(RespError("ERR unknown command 'NOPE'"))
