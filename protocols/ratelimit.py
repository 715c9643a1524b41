"""Rate limits: token buckets per connection, per token and per client address, sans I/O.

A client calling as fast as it can is answered -32011 ``rate limited`` with
``data.retry_after_ms`` once it is over its rate; it is never dropped silently,
and its connection stays open. The rule is the token bucket (the "committed
rate and burst" of RFC 2697 section 1): a bucket holds at most ``burst``
tokens and gains ``per_second`` of them each second; a request takes one
token, and is refused while the bucket holds less than one. So a client may
send ``burst`` requests at once, then ``per_second`` a second for ever.

Which buckets a request takes from (:class:`RateLimits`, decided per role)::

    /ws request            its connection's bucket, and its token's user's bucket
                           (shared by every connection of that user, and by
                           POST /rpc with a bearer token of that user)
    POST /rpc, bearer token  the token's user's bucket
    POST /rpc, API key or  the client address's bucket (``rpc_client``, off by default)
    loopback

    role             per connection          per token
    user (default)   50 calls/s, burst 100    100 calls/s, burst 200
    service/operator no limit                 no limit
    not authenticated  as a user's connection   —

Service and operator tokens are the callers Starling trusts (the benchmarks'
pipelined ``social.counts`` at ~10,000 calls/s over one connection, the realtime
producers); a cap is one flag away. One request is one unit: each member of a
batch counts, ``connect`` and ``ping`` included; a notification over the limit
is not run (JSON-RPC never answers a notification) and is counted.

Memory: a connection's bucket lives in its session (bounded by
``--ws-max-connections``); the per-token and per-address buckets live in a
:class:`BucketMap` of at most ``max_tracked`` entries each, the least recently
used evicted first (an evicted bucket starts full again at its next request:
a key gets a fresh burst only if more than ``max_tracked`` other keys were
seen since its last request).

Every method takes ``now``: seconds on any clock that does not jump (the
WebSocket session passes its ``time.time()``, the HTTP endpoint
``trio.current_time()``); a clock that goes back refills nothing.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

UNLIMITED: Final = "off"
"""How a :class:`Rate` option says "no limit" (``--ws-service-rate off``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    """A token bucket's shape.

    Attributes:
        per_second: tokens (requests) gained per second.
        burst: most tokens held: the requests a full bucket lets through at once.

    Raises:
        ValueError: ``per_second`` is not positive, or ``burst`` is below 1.
    """

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)):
            raise ValueError(f"per_second must be > 0 and finite, got {self.per_second!r}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst!r}")

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """``"RATE/BURST"`` (``"50/100"``: 50 requests a second, bursts of 100), or ``"off"``
        (``None``: no limit).

        Raises:
            ValueError: neither form, or a value out of range.
        """
        text = text.strip()
        if text.lower() == UNLIMITED:
            return None
        rate, slash, burst = text.partition("/")
        if not slash:
            raise ValueError(f"expected RATE/BURST (such as 50/100) or {UNLIMITED!r}, got {text!r}")
        try:
            return cls(per_second=float(rate), burst=int(burst))
        except ValueError as error:
            raise ValueError(f"{text!r}: {error}") from None

    def __str__(self) -> str:
        return f"{self.per_second:g}/{self.burst}"


def describe(rate: Rate | None) -> str:
    """``"50/100"``, or ``"off"`` for no limit (the form :meth:`Rate.parse` reads)."""
    return UNLIMITED if rate is None else str(rate)


class TokenBucket:
    """One token bucket (module docstring), full when made.

    Args:
        rate: its shape.
        now: the time it is made, seconds.
    """

    __slots__ = ("_burst", "_per_second", "_stamp", "_tokens", "rate")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self._per_second = rate.per_second
        self._burst = float(rate.burst)
        self._tokens = self._burst
        self._stamp = now

    def tokens(self, now: float) -> float:
        """Tokens held at ``now`` (refilled up to ``burst``)."""
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._per_second)
            self._stamp = now
        return self._tokens

    def delay(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are held: ``0.0`` when they are now.

        A ``cost`` over ``burst`` is never held: its delay is what it would take
        an empty bucket to gain it (the caller refuses it anyway).
        """
        missing = cost - self.tokens(now)
        return 0.0 if missing <= 0 else missing / self._per_second

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens if held: ``0.0``; else take none and return :meth:`delay`."""
        wait = self.delay(now, cost)
        if wait == 0.0:
            self._tokens -= cost
        return wait

    def give_back(self, cost: float = 1.0) -> None:
        """Return ``cost`` tokens taken by a request another bucket refused."""
        self._tokens = min(self._burst, self._tokens + cost)


class BucketMap:
    """Buckets by key (a token's user, a client address), at most ``max_entries`` of them.

    Least recently used first out: :meth:`bucket` moves its key to the end, a
    new key past the cap evicts the first. O(1) per request.

    Args:
        rate: every bucket's shape.
        max_entries: most buckets kept.

    Raises:
        ValueError: ``max_entries`` is below 1.
    """

    def __init__(self, rate: Rate, *, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.rate = rate
        self.max_entries = max_entries
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        #: Buckets dropped to stay within ``max_entries``, since the start.
        self.evictions = 0

    def bucket(self, key: str, now: float) -> TokenBucket:
        """``key``'s bucket (a full one if it had none, evicting the least recently used)."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is not None:
            buckets.move_to_end(key)
            return bucket
        bucket = buckets[key] = TokenBucket(self.rate, now)
        if len(buckets) > self.max_entries:
            buckets.popitem(last=False)
            self.evictions += 1
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """Who gets which bucket (module docstring: the table); ``None``: no limit.

    Attributes:
        user_connection: one connection of a user's token, or not yet authenticated.
        user_token: every connection and ``/rpc`` call of one user's token(s), together.
        privileged_connection: one connection of a service's or an operator's token.
        privileged_token: every connection and ``/rpc`` call of one service or operator.
        rpc_client: ``POST /rpc`` with the API key or from loopback, per client address
            (behind a proxy every client shares the proxy's address: set it there instead).
        max_tracked: most per-token buckets, and most per-address buckets, kept (LRU).

    Raises:
        ValueError: ``max_tracked`` is below 1.
    """

    user_connection: Rate | None = Rate(per_second=50, burst=100)
    user_token: Rate | None = Rate(per_second=100, burst=200)
    privileged_connection: Rate | None = None
    privileged_token: Rate | None = None
    rpc_client: Rate | None = None
    max_tracked: int = 100_000

    def __post_init__(self) -> None:
        if self.max_tracked < 1:
            raise ValueError(f"max_tracked must be >= 1, got {self.max_tracked!r}")


DEFAULT_RATE_LIMITS: Final = RateLimits()
NO_RATE_LIMITS: Final = RateLimits(user_connection=None, user_token=None)
"""No bucket at all (tests of other rules, a trusted deployment)."""


@dataclass(frozen=True, slots=True)
class RateLimitStatistics:
    """A snapshot of a :class:`RateLimiter`.

    Attributes:
        limited: requests refused (-32011, or not run: notifications), since the start.
        tracked_tokens: per-token buckets kept now (users' and privileged).
        tracked_clients: per-address buckets kept now.
        evictions: per-token and per-address buckets evicted to stay within ``max_tracked``.
    """

    limited: int
    tracked_tokens: int
    tracked_clients: int
    evictions: int


class RateLimiter:
    """The buckets of one server: the per-token and per-address maps, shared by ``/ws`` and
    ``POST /rpc``, and the per-connection buckets it makes for the sessions.

    Args:
        limits: the rates per role.
    """

    def __init__(self, limits: RateLimits = DEFAULT_RATE_LIMITS) -> None:
        self.limits = limits
        self._tokens: dict[bool, BucketMap | None] = {
            False: _map(limits.user_token, limits.max_tracked),
            True: _map(limits.privileged_token, limits.max_tracked),
        }
        self._clients = _map(limits.rpc_client, limits.max_tracked)
        self.limited = 0

    def connection_bucket(self, now: float, *, privileged: bool) -> TokenBucket | None:
        """A new bucket for one connection of this role, or ``None`` (no limit)."""
        rate = self.limits.privileged_connection if privileged else self.limits.user_connection
        return None if rate is None else TokenBucket(rate, now)

    def admit(
        self,
        now: float,
        connection: TokenBucket | None,
        user: str | None,
        *,
        privileged: bool = False,
    ) -> float:
        """Take one request from ``connection``'s bucket and from ``user``'s (when
        authenticated): ``0.0`` if both had a token, else the seconds until both
        will (nothing taken).

        Args:
            now: seconds.
            connection: the connection's bucket, ``None`` for none (``POST /rpc``).
            user: the token's user, ``None`` before authentication.
            privileged: the token is a service's or an operator's.
        """
        wait = 0.0 if connection is None else connection.take(now)
        if wait:
            self.limited += 1
            return wait
        tokens = self._tokens[privileged] if user is not None else None
        if tokens is None or user is None:
            return 0.0
        wait = tokens.bucket(user, now).take(now)
        if wait:
            if connection is not None:
                connection.give_back()
            self.limited += 1
        return wait

    def admit_client(self, now: float, address: str) -> float:
        """Take one ``POST /rpc`` request from ``address``'s bucket (API key and loopback
        callers): ``0.0``, or the seconds until it has a token (``rpc_client``)."""
        clients = self._clients
        if clients is None:
            return 0.0
        wait = clients.bucket(address, now).take(now)
        if wait:
            self.limited += 1
        return wait

    def statistics(self) -> RateLimitStatistics:
        """A snapshot of the figures."""
        maps = [m for m in (*self._tokens.values(), self._clients) if m is not None]
        return RateLimitStatistics(
            limited=self.limited,
            tracked_tokens=sum(len(m) for m in self._tokens.values() if m is not None),
            tracked_clients=len(self._clients) if self._clients is not None else 0,
            evictions=sum(m.evictions for m in maps),
        )


def retry_after_ms(wait: float) -> int:
    """``wait`` seconds as the whole milliseconds a client should wait (rounded up, >= 1)."""
    return max(1, math.ceil(wait * 1000))


def _map(rate: Rate | None, max_entries: int) -> BucketMap | None:
    return None if rate is None else BucketMap(rate, max_entries=max_entries)
