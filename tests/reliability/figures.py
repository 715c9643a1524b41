"""What a fault run measured: the checks' figures, printed as one table row and kept as JSON.

:func:`figures` compares the producer's :class:`~tests.reliability.traffic.Ledger`
with what each :class:`~tests.reliability.traffic.Subscriber` took:

* **delivered**: acknowledged events a subscriber took (each subscriber counts;
  ``expected`` is acknowledged × subscribers);
* **reloaded**: acknowledged events a subscriber did not take but was told it
  could not have (inside a ``recovered: false`` or ``gap`` range): the
  application reloads them, nothing is silently missing;
* **lost**: acknowledged events a subscriber neither took nor was told of: a
  silent hole, the failure these tests exist to find;
* **wrong**: publications whose offset names another event than the one the
  producer was told (an offset given twice);
* **duplicated**: publications a subscriber received again (same offset), and
  ``renumbered``: an event received under two offsets;
* **late**: publications that arrived below a subscriber's position unseen;
* **longest_gap_s**: the longest a subscriber waited between two publications
  while the producer ran;
* **recovery_s**: from the end of the fault until every subscriber had taken an
  event sent after it.

Not a test module.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.reliability.traffic import Event, Ledger, Subscriber

__all__ = ["Figures", "figures", "report"]

RESULTS_ENV = "STARLING_CHAOS_RESULTS"
"""A directory where :func:`report` also writes its JSON (``make chaos``: bench/results)."""


@dataclass
class Figures:
    """A fault run's figures (module docstring); ``extra`` holds the fault's own."""

    fault: str
    profile: str
    seconds: float
    rate: int
    subscribers: int
    produced: int
    acknowledged: int
    expected: int
    delivered: int
    reloaded: int
    reloads: int
    lost: int
    wrong: int
    duplicated: int
    renumbered: int
    late: int
    unacknowledged_delivered: int
    reconnects: int
    longest_gap_s: float
    recovery_s: float | None
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)
    reload_reasons: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    reload_examples: list[str] = field(default_factory=list)


def figures(
    fault: str,
    profile: str,
    ledger: Ledger,
    subscribers: Sequence[Subscriber],
    *,
    rate: int,
    produced_from: float,
    produced_until: float,
    fault_end: float,
) -> Figures:
    """Compare the ledger with each subscriber (module docstring).

    Args:
        fault: the fault's name, for the report.
        profile: ``short`` or ``long``.
        rate: events a second the producer aimed at.
        produced_from, produced_until: when the producer ran (``trio.current_time()``).
        fault_end: when the fault ended (the backend back, the process killed …).
    """
    acknowledged = ledger.acknowledged()
    by_place = {(e.channel, e.offset): e for e in acknowledged}
    delivered = reloaded = lost = wrong = renumbered = unacked = 0
    longest_gap = 0.0
    recovered_at: list[float | None] = []
    examples: list[str] = []
    for subscriber in subscribers:
        taken: dict[tuple[str, int], int] = {}
        offsets_of: dict[int, set[int]] = {}
        for pub in subscriber.received:
            event = ledger.events.get(pub.seq)
            if event is None or not event.acknowledged:
                unacked += 1
            owner = by_place.get((pub.channel, pub.offset))
            if owner is not None and owner.seq != pub.seq:
                wrong += 1  # the producer was told this offset is another event
            offsets_of.setdefault(pub.seq, set()).add(pub.offset)
            taken[(pub.channel, pub.offset)] = pub.seq
        renumbered += sum(1 for offsets in offsets_of.values() if len(offsets) > 1)
        for event in acknowledged:
            place = (event.channel, event.offset or 0)
            if taken.get(place) == event.seq:
                delivered += 1
            elif any(
                r.channel == event.channel and r.first <= (event.offset or 0) <= r.last
                for r in subscriber.reloads
            ):
                reloaded += 1
            else:
                lost += 1
                if len(examples) < 10:
                    examples.append(
                        f"{subscriber.name}: {event.channel}@{event.offset} seq {event.seq}"
                    )
        times = [pub.at for pub in subscriber.received if produced_from <= pub.at <= produced_until]
        longest_gap = max([longest_gap, *(b - a for a, b in itertools.pairwise(times))])
        after = [
            pub.at
            for pub in subscriber.received
            if (event := ledger.events.get(pub.seq)) is not None and event.sent_at >= fault_end
        ]
        recovered_at.append(min(after) if after else None)
    recovery = (
        None
        if not recovered_at or None in recovered_at
        else max(at for at in recovered_at if at is not None) - fault_end
    )
    return Figures(
        fault=fault,
        profile=profile,
        seconds=round(produced_until - produced_from, 1),
        rate=rate,
        subscribers=len(subscribers),
        produced=len(ledger.events),
        acknowledged=len(acknowledged),
        expected=len(acknowledged) * len(subscribers),
        delivered=delivered,
        reloaded=reloaded,
        reloads=sum(len(s.reloads) for s in subscribers),
        lost=lost,
        wrong=wrong,
        duplicated=sum(s.duplicates for s in subscribers),
        renumbered=renumbered,
        late=sum(s.late for s in subscribers),
        unacknowledged_delivered=unacked,
        reconnects=sum(s.reconnects for s in subscribers),
        longest_gap_s=round(longest_gap, 3),
        recovery_s=None if recovery is None else round(recovery, 3),
        errors=dict(ledger.errors),
        error_examples=dict(ledger.error_messages),
        closes=_counts(close for s in subscribers for close in s.closes),
        reload_reasons=_counts(reload.reason for s in subscribers for reload in s.reloads),
        lost_examples=examples,
        reload_examples=[
            f"{s.name}: {r.channel} {r.first}..{r.last} {r.reason} at {r.at - fault_end:+.3f} s"
            f" (sent {_sent(acknowledged, r.channel, r.first, r.last, fault_end)})"
            for s in subscribers
            for r in s.reloads
        ][:12],
    )


def _sent(events: list[Event], channel: str, first: int, last: int, origin: float) -> str:
    """When the acknowledged events of ``channel`` ``first..last`` were sent, from ``origin``."""
    times = [
        e.sent_at - origin
        for e in events
        if e.channel == channel and first <= (e.offset or 0) <= last
    ]
    return f"{min(times):+.3f}..{max(times):+.3f} s" if times else "none acknowledged"


def _counts(values: Iterable[str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for value in values:
        counted[value] = counted.get(value, 0) + 1
    return counted


COLUMNS = (
    "fault", "profile", "seconds", "produced", "acknowledged", "expected", "delivered",
    "duplicated", "reloads", "reloaded", "lost", "wrong", "late", "unacknowledged_delivered",
    "reconnects", "longest_gap_s", "recovery_s",
)  # fmt: skip


def report(result: Figures, directory: Path) -> Path:
    """Print ``result`` as a table row (with a header) and write it as JSON.

    Written to ``directory/reliability-<fault>.json``, and also under
    ``$STARLING_CHAOS_RESULTS`` when that is set (``make chaos``).

    Returns:
        The JSON file in ``directory``.
    """
    values = asdict(result)
    header = " | ".join(COLUMNS)
    row = " | ".join(str(values[column]) for column in COLUMNS)
    extra = json.dumps(
        {
            "errors": result.errors,
            "error_examples": result.error_examples,
            "closes": result.closes,
            "reloads": result.reload_reasons,
            **result.extra,
        },
        sort_keys=True,
    )
    sys.stdout.write(f"\n{header}\n{row}\n{extra}\n")
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    path = directory / f"reliability-{result.fault}.json"
    path.write_text(text)
    if shared := os.environ.get(RESULTS_ENV):
        target = Path(shared)
        target.mkdir(parents=True, exist_ok=True)
        (target / f"reliability-{result.fault}-{result.profile}.json").write_text(text)
    return path
