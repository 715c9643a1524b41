"""The presence port on Redis: one hash per channel and origin, expiring on its own.

Keys (``<channel>`` in braces: a Redis Cluster hash tag, so a channel's keys
share a slot, and no channel name can be mistaken for another's key)::

    starling:presence:{<channel>}            SET   the origins with an entry on the channel;
                                                   expires with the longest-lived entry
    starling:presence:{<channel>}:<origin>   HASH  user → connections of that origin;
                                                   PEXPIRE ttl at every write and refresh

A process that dies stops refreshing: its hashes expire after ``ttl`` and
readers drop it from the channel's set (only if its hash is gone, checked in
the same script, so a write that races the cleanup is never lost). Writes and
refreshes are Lua scripts, one per channel, each atomic: the hash, its expiry
and the set membership change together. Reads are two pipelined round trips
(the sets, then the hashes) whatever the number of channels.

Every call is one unit of work in a worker thread (redis-py, :meth:`RedisBackend.run`):
presence is written on subscribe and unsubscribe, never per publication.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import redis
import trio
from redis.commands.core import Script

from stores.presence import PresenceEntries, check_ttl
from stores.redis import RedisBackend

PREFIX: Final = "starling:presence:"

_UPDATE: Final = """
-- KEYS: the channel's origins set, the origin's hash. ARGV: origin, ttl ms, user, count, ...
local existed = redis.call('EXISTS', KEYS[2])
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > 0 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  else
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('SADD', KEYS[1], ARGV[1])
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
else
  redis.call('SREM', KEYS[1], ARGV[1])
end
return existed
"""
"""Set some users' counts of one origin on one channel; 1 if the entry was live before."""

_REFRESH: Final = """
-- KEYS: the channel's origins set, the origin's hash. ARGV: origin, ttl ms.
if redis.call('PEXPIRE', KEYS[2], ARGV[2]) == 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
"""Restart the expiry of one origin's entry; 0 if it had none."""

_FORGET: Final = """
-- KEYS: the channel's origins set, the origin's hash. ARGV: origin.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.call('SREM', KEYS[1], ARGV[1])
end
return 0
"""
"""Drop an origin from a channel's set if (still) its hash is gone."""


def origins_key(channel: str) -> str:
    """The set of the origins with an entry on ``channel``."""
    return f"{PREFIX}{{{channel}}}"


def entry_key(channel: str, origin: str) -> str:
    """The hash of ``origin``'s users on ``channel``."""
    return f"{PREFIX}{{{channel}}}:{origin}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisPresence:
    """The presence port (:class:`stores.presence.PresenceStore`) on Redis hashes and sets.

    Args:
        backend: the server.
    """

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._scripts: tuple[Script, Script, Script] | None = None

    def _loaded(self, client: redis.Redis) -> tuple[Script, Script, Script]:
        """The three scripts (registered once; a pipeline loads them when Redis lacks them)."""
        if self._scripts is None:
            self._scripts = (
                client.register_script(_UPDATE),
                client.register_script(_REFRESH),
                client.register_script(_FORGET),
            )
        return self._scripts

    def _scripted(
        self, client: redis.Redis, queue: Callable[[Any, tuple[Script, Script, Script]], None]
    ) -> list[Any]:
        """Run the pipeline ``queue`` fills with script calls. On a Redis Cluster a pipeline
        does not load missing scripts (a new master after a failover, a flushed node): there
        they are loaded on every master and the pipeline runs once more (its scripts only set
        counts and expiries, so running one twice changes nothing)."""
        scripts = self._loaded(client)
        for attempt in range(2):
            with client.pipeline(transaction=False) as pipe:
                queue(pipe, scripts)
                try:
                    return pipe.execute()
                except redis.ResponseError as exc:
                    missing = "NOSCRIPT" in str(exc) or "No matching script" in str(exc)
                    if attempt or not missing or not self._backend.cluster:
                        raise
            for script in scripts:
                client.script_load(script.script)
        raise AssertionError("unreachable")

    async def update(
        self, origin: str, changes: Mapping[str, Mapping[str, int]], *, ttl: float
    ) -> list[str]:
        """See :meth:`stores.presence.PresenceStore.update`: one script per channel, one
        pipeline."""
        check_ttl(ttl)
        if not changes:
            await trio.lowlevel.checkpoint()
            return []
        px = math.ceil(ttl * 1000)
        channels = list(changes)

        def queue(pipe: Any, scripts: tuple[Script, Script, Script]) -> None:
            for channel in channels:
                args: list[str | int] = [origin, px]
                for user, connections in changes[channel].items():
                    args += [user, max(connections, 0)]
                scripts[0](
                    keys=[origins_key(channel), entry_key(channel, origin)], args=args, client=pipe
                )

        def write(client: redis.Redis) -> list[Any]:
            return self._scripted(client, queue)

        existed = await self._backend.run(write)
        return [channel for channel, live in zip(channels, existed, strict=True) if not live]

    async def refresh(self, origin: str, channels: Sequence[str], *, ttl: float) -> list[str]:
        """See :meth:`stores.presence.PresenceStore.refresh`: one script per channel, one
        pipeline."""
        check_ttl(ttl)
        if not channels:
            await trio.lowlevel.checkpoint()
            return []
        px = math.ceil(ttl * 1000)

        def queue(pipe: Any, scripts: tuple[Script, Script, Script]) -> None:
            for channel in channels:
                scripts[1](
                    keys=[origins_key(channel), entry_key(channel, origin)],
                    args=[origin, px],
                    client=pipe,
                )

        def touch(client: redis.Redis) -> list[Any]:
            return self._scripted(client, queue)

        live = await self._backend.run(touch)
        return [channel for channel, found in zip(channels, live, strict=True) if not found]

    async def read(self, channels: Sequence[str]) -> list[PresenceEntries]:
        """See :meth:`stores.presence.PresenceStore.read`: ``SMEMBERS`` of every channel, then
        ``HGETALL`` of every origin found; origins whose hash expired leave the set."""
        if not channels:
            await trio.lowlevel.checkpoint()
            return []

        def fetch(client: redis.Redis) -> list[PresenceEntries]:
            with client.pipeline(transaction=False) as pipe:
                for channel in channels:
                    pipe.smembers(origins_key(channel))
                members: list[set[bytes]] = pipe.execute()
            wanted = [
                (index, _text(origin))
                for index, origins in enumerate(members)
                for origin in sorted(origins)
            ]
            found: list[PresenceEntries] = [{} for _ in channels]
            if not wanted:
                return found
            with client.pipeline(transaction=False) as pipe:
                for index, origin in wanted:
                    pipe.hgetall(entry_key(channels[index], origin))
                hashes: list[dict[bytes, bytes]] = pipe.execute()
            gone = []
            for (index, origin), users in zip(wanted, hashes, strict=True):
                if users:
                    found[index][origin] = {
                        _text(user): int(count) for user, count in users.items()
                    }
                else:
                    gone.append((channels[index], origin))
            if gone:

                def queue(pipe: Any, scripts: tuple[Script, Script, Script]) -> None:
                    for channel, origin in gone:
                        scripts[2](
                            keys=[origins_key(channel), entry_key(channel, origin)],
                            args=[origin],
                            client=pipe,
                        )

                self._scripted(client, queue)
            return found

        return await self._backend.run(fetch)

    async def remove(self, origin: str, channels: Sequence[str]) -> None:
        """See :meth:`stores.presence.PresenceStore.remove`: ``DEL`` the hashes, ``SREM`` the
        origin, in one pipeline."""
        if not channels:
            await trio.lowlevel.checkpoint()
            return

        def drop(client: redis.Redis) -> None:
            with client.pipeline(transaction=False) as pipe:
                for channel in channels:
                    pipe.delete(entry_key(channel, origin))
                    pipe.srem(origins_key(channel), origin)
                pipe.execute()

        await self._backend.run(drop)
