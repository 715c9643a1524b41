"""Redis on the trio thread for the realtime hot path: RESP2 over trio sockets, parsed by hiredis.

The realtime pipeline talks to Redis several times per batch (read the
stream, number, publish, acknowledge) and listens to Pub/Sub all the time.
Through the blocking driver each of those is a hop to a worker thread and
back: two thread switches, a futex wake-up and GIL hand-offs, which cost
more than the command itself (measured: about a quarter of a core in
context switches at 200 batches/s). Here the commands go out on a trio
socket and the replies are parsed by hiredis's C parser (``hiredis.Reader``,
the parser redis-py itself uses), so a round trip is two system calls and no
thread. Everything else (the cache, the feeds, the social side) keeps
redis-py in worker threads (:mod:`stores.redis`).

- :class:`RespConnection`: one connection, ``execute`` sends a pipeline of
  commands in one write and reads their replies in order.
- :class:`RespPool`: connections reused one command (or pipeline) at a time;
  at most ``size`` open.

Timeouts and cancellation: every reply must arrive within ``socket_timeout``
seconds after the request (plus the ``BLOCK`` of an ``XREADGROUP``, which the
caller adds). A connection whose exchange was cut short (a timeout, a
cancellation, a broken socket) is closed, never reused: its replies could be
read by the next caller. Errors follow :mod:`stores.errors`: a dead or silent
server is :class:`~stores.errors.BackendUnavailable`; a command the server
refuses comes back as a :class:`RespError` reply, in its place, for the caller
to raise (:func:`check`) or inspect.

Sources: the RESP2 specification (redis.io/docs/latest/develop/reference/protocol-spec);
hiredis-py's ``Reader``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, cast

import hiredis
import trio

from stores.errors import BackendUnavailable, QueryError

RECEIVE_BYTES: Final = 64 * 1024

Command = Sequence[bytes | str | int]
"""One command and its arguments: ``("XACK", stream, group, id)``."""

RespError = hiredis.ReplyError
"""An error reply (``-ERR …``), returned in its command's place."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a Redis server is and how to log in (from a redis-py connection pool's settings).

    Attributes:
        host, port: a TCP server, or
        path: a Unix socket.
        tls: wrap the TCP connection in TLS (``rediss://``).
        db: the database to ``SELECT``.
        username, password: for ``AUTH``.
        socket_timeout: seconds any reply may take.
        connect_timeout: seconds a connection (and its login) may take.
    """

    host: str | None = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    tls: bool = False
    db: int = 0
    username: str | None = None
    password: str | None = None
    socket_timeout: float = 5.0
    connect_timeout: float = 2.0


def pack(commands: Sequence[Command]) -> bytes:
    """The RESP2 request of ``commands``: arrays of bulk strings, back to back."""
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for argument in command:
            if isinstance(argument, str):
                argument = argument.encode()
            elif isinstance(argument, int):
                argument = b"%d" % argument
            parts += (b"$%d\r\n" % len(argument), argument, b"\r\n")
    return b"".join(parts)


UNAVAILABLE_REPLIES: Final = ("LOADING ", "MASTERDOWN ")
"""Error replies of a server that cannot answer yet (it is loading its data after a restart,
or a replica lost its primary): :class:`~stores.errors.BackendUnavailable`, as redis-py's
``BusyLoadingError`` is, not a refused command."""


def check(reply: Any) -> Any:
    """``reply``, unless it is an error reply: then :class:`~stores.errors.QueryError`, or
    :class:`~stores.errors.BackendUnavailable` for :data:`UNAVAILABLE_REPLIES`."""
    if isinstance(reply, RespError):
        if str(reply).startswith(UNAVAILABLE_REPLIES):
            raise BackendUnavailable(str(reply))
        raise QueryError(str(reply))
    return reply


class RespConnection:
    """One connection to Redis, used by one task at a time.

    Open it with :meth:`open`. After a failed exchange it is :attr:`broken`
    and closed.
    """

    def __init__(self, stream: trio.abc.Stream, endpoint: Endpoint) -> None:
        self._stream = stream
        self._endpoint = endpoint
        self._reader = hiredis.Reader()
        self.broken = False

    @property
    def socket_timeout(self) -> float:
        """Seconds any reply may take."""
        return self._endpoint.socket_timeout

    @classmethod
    async def open(cls, endpoint: Endpoint) -> RespConnection:
        """Connect and log in (``AUTH``, ``SELECT``) within ``connect_timeout`` seconds.

        Raises:
            stores.errors.BackendUnavailable: the server cannot be reached or refused the login.
        """
        try:
            with trio.fail_after(endpoint.connect_timeout):
                stream: trio.abc.Stream
                if endpoint.path is not None:
                    stream = await trio.open_unix_socket(endpoint.path)
                elif endpoint.tls:
                    stream = await trio.open_ssl_over_tcp_stream(
                        endpoint.host or "localhost",
                        endpoint.port,
                        ssl_context=ssl.create_default_context(),
                    )
                else:
                    stream = await trio.open_tcp_stream(endpoint.host or "localhost", endpoint.port)
                connection = cls(stream, endpoint)
                login: list[Command] = []
                if endpoint.password is not None:
                    if endpoint.username is not None:
                        login.append(("AUTH", endpoint.username, endpoint.password))
                    else:
                        login.append(("AUTH", endpoint.password))
                if endpoint.db:
                    login.append(("SELECT", endpoint.db))
                if login:
                    for reply in await connection.execute(login):
                        if isinstance(reply, RespError):
                            await connection.aclose()
                            raise BackendUnavailable(f"Redis refused the login: {reply}")
                return connection
        except (OSError, trio.TooSlowError) as exc:
            raise BackendUnavailable(f"cannot connect to Redis: {exc or 'timed out'}") from exc

    async def execute(self, commands: Sequence[Command], *, extra_wait: float = 0.0) -> list[Any]:
        """Send ``commands`` in one write; their replies, in order (error replies in place).

        Args:
            commands: one or more commands (a pipeline).
            extra_wait: seconds the server may hold the reply on purpose (a ``BLOCK``),
                added to ``socket_timeout``.

        Raises:
            stores.errors.BackendUnavailable: the connection failed or a reply was late
                (the connection is then closed).
        """
        if self.broken:
            raise BackendUnavailable("this Redis connection failed earlier")
        replies: list[Any] = []
        ok = False
        try:
            with trio.fail_after(self._endpoint.socket_timeout + extra_wait):
                await self._stream.send_all(pack(commands))
                reader = self._reader
                while len(replies) < len(commands):
                    reply = reader.gets()
                    if reply is False:
                        data = await self._stream.receive_some(RECEIVE_BYTES)
                        if not data:
                            raise BackendUnavailable("Redis closed the connection")
                        reader.feed(cast("bytes", data))  # hiredis takes any buffer
                        continue
                    replies.append(reply)
            ok = True
        except trio.TooSlowError:
            raise BackendUnavailable(
                f"Redis did not answer within {self._endpoint.socket_timeout + extra_wait:g} s"
            ) from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise BackendUnavailable(f"Redis connection failed: {exc}") from exc
        except hiredis.ProtocolError as exc:
            raise BackendUnavailable(f"Redis sent what is not RESP: {exc}") from exc
        finally:
            if not ok:
                self.broken = True
                self._stream_close()
        return replies

    async def send(self, commands: Sequence[Command]) -> None:
        """Send ``commands`` without reading replies (Pub/Sub mode: they come as messages).

        Raises:
            stores.errors.BackendUnavailable: the connection failed.
        """
        try:
            with trio.fail_after(self._endpoint.socket_timeout):
                await self._stream.send_all(pack(commands))
        except (trio.TooSlowError, OSError, trio.BrokenResourceError) as exc:
            self.broken = True
            self._stream_close()
            raise BackendUnavailable(f"Redis connection failed: {exc or 'timed out'}") from exc

    async def receive(self) -> Any:
        """The next reply or Pub/Sub message, however long it takes (cancel to stop).

        Raises:
            stores.errors.BackendUnavailable: the connection failed.
        """
        reader = self._reader
        try:
            while (reply := reader.gets()) is False:
                data = await self._stream.receive_some(RECEIVE_BYTES)
                if not data:
                    raise BackendUnavailable("Redis closed the connection")
                reader.feed(cast("bytes", data))  # hiredis takes any buffer
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.broken = True
            self._stream_close()
            raise BackendUnavailable(f"Redis connection failed: {exc}") from exc
        except hiredis.ProtocolError as exc:
            self.broken = True
            self._stream_close()
            raise BackendUnavailable(f"Redis sent what is not RESP: {exc}") from exc
        return reply

    def _stream_close(self) -> None:
        # A sync close: the socket is dropped, nothing more is sent.
        stream = self._stream
        if isinstance(stream, trio.SocketStream):
            stream.socket.close()
        elif isinstance(stream, trio.SSLStream):
            transport = stream.transport_stream
            if isinstance(transport, trio.SocketStream):
                transport.socket.close()

    async def aclose(self) -> None:
        """Close the connection."""
        self.broken = True
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)


class RespPool:
    """At most ``size`` connections to one server, each lent to one caller at a time.

    Args:
        endpoint: the server.
        size: most connections open at once (callers beyond wait).
    """

    def __init__(self, endpoint: Endpoint, *, size: int) -> None:
        self.endpoint = endpoint
        self._idle: list[RespConnection] = []
        self._slots = trio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[RespConnection]:
        """Lend a connection (an idle one, or a new one); it returns unless it broke.

        Raises:
            stores.errors.BackendUnavailable: no connection could be opened.
        """
        async with self._slots:
            connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = await RespConnection.open(self.endpoint)
            try:
                yield connection
            finally:
                if not connection.broken:
                    self._idle.append(connection)

    async def execute(self, commands: Sequence[Command], *, extra_wait: float = 0.0) -> list[Any]:
        """:meth:`RespConnection.execute` on a lent connection."""
        async with self.connection() as connection:
            return await connection.execute(commands, extra_wait=extra_wait)

    async def aclose(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.aclose()
