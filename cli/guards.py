"""``starling serve``'s guards against resource exhaustion: the timeouts of each stage of a
connection and the rate limits per role (docs/operations.md, "Timeouts, rate limits and bounds").

:func:`guard_options` adds the flags to a command and hands it one :class:`Guards`;
:meth:`Guards.apply` sets them on the :class:`settings.ServeOptions` it runs with.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click

from protocols.app import DEFAULT_BODY_TIMEOUT
from protocols.http import DEFAULT_FIRST_BYTES_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT
from protocols.ratelimit import DEFAULT_RATE_LIMITS, Rate, RateLimits, describe
from protocols.websocket.gateway import DEFAULT_HANDSHAKE_TIMEOUT
from protocols.websocket.session import DEFAULT_LIMITS
from settings import ServeOptions

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Guards:
    """The timeouts (seconds) and the rates the flags gave."""

    first_bytes_timeout: float
    keep_alive_timeout: float
    body_timeout: float
    ws_handshake_timeout: float
    ws_auth_timeout: float
    ws_idle_timeout: float
    rate_limits: RateLimits

    def apply(self, options: ServeOptions) -> ServeOptions:
        """``options`` with these guards.

        Raises:
            ValueError: a timeout is not positive.
        """
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_timeout") and not value > 0:
                raise ValueError(f"--{field.name.replace('_', '-')} must be > 0, got {value!r}")
        return dataclasses.replace(
            options,
            first_bytes_timeout=self.first_bytes_timeout,
            keep_alive_timeout=self.keep_alive_timeout,
            body_timeout=self.body_timeout,
            ws_handshake_timeout=self.ws_handshake_timeout,
            ws_limits=dataclasses.replace(
                options.ws_limits,
                auth_timeout=self.ws_auth_timeout,
                idle_timeout=self.ws_idle_timeout,
            ),
            rate_limits=self.rate_limits,
        )


def _rate(ctx: click.Context, param: click.Parameter, value: str) -> Rate | None:
    try:
        return Rate.parse(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


def _seconds(name: str, default: float, help: str) -> Callable[[F], F]:
    return click.option(name, type=float, default=default, show_default=True, help=help)


def _rate_option(name: str, default: Rate | None, help: str) -> Callable[[F], F]:
    return click.option(
        name, default=describe(default), show_default=True, callback=_rate, help=help
    )


_OPTIONS = (
    _seconds(
        "--first-bytes-timeout",
        DEFAULT_FIRST_BYTES_TIMEOUT,
        "Seconds from the accept for a request's first bytes; then closed unanswered.",
    ),
    _seconds(
        "--http-keep-alive-timeout",
        DEFAULT_KEEP_ALIVE_TIMEOUT,
        "Seconds for an HTTP request's head to be complete: the first one's from its first "
        "bytes, a later one's from the previous response (hypercorn's keep-alive timeout).",
    ),
    _seconds(
        "--rpc-body-timeout",
        DEFAULT_BODY_TIMEOUT,
        "Seconds for a /rpc body to arrive whole (then 408).",
    ),
    _seconds(
        "--ws-handshake-timeout",
        DEFAULT_HANDSHAKE_TIMEOUT,
        "Seconds for a /ws upgrade request to be complete.",
    ),
    _seconds(
        "--ws-auth-timeout",
        DEFAULT_LIMITS.auth_timeout,
        "Seconds a WebSocket may stay unauthenticated (then 4001).",
    ),
    _seconds(
        "--ws-idle-timeout",
        DEFAULT_LIMITS.idle_timeout,
        "Seconds without a frame or a pong before a WebSocket is closed 1001.",
    ),
    _rate_option(
        "--rate-user-connection",
        DEFAULT_RATE_LIMITS.user_connection,
        "Requests/s and burst of one WebSocket of a user's token (or not yet "
        "authenticated): RATE/BURST or off.",
    ),
    _rate_option(
        "--rate-user-token",
        DEFAULT_RATE_LIMITS.user_token,
        "Requests/s and burst of one user over all their connections and /rpc calls.",
    ),
    _rate_option(
        "--rate-service-connection",
        DEFAULT_RATE_LIMITS.privileged_connection,
        "Requests/s and burst of one WebSocket of a service's or an operator's token.",
    ),
    _rate_option(
        "--rate-service-token",
        DEFAULT_RATE_LIMITS.privileged_token,
        "Requests/s and burst of one service or operator over all its connections.",
    ),
    _rate_option(
        "--rate-rpc-client",
        DEFAULT_RATE_LIMITS.rpc_client,
        "Requests/s and burst of /rpc per client address, with the API key or from loopback.",
    ),
    click.option(
        "--rate-max-tracked",
        default=DEFAULT_RATE_LIMITS.max_tracked,
        show_default=True,
        help="Most per-token and per-address buckets kept (least recently used dropped).",
    ),
)

_NAMES = (
    "first_bytes_timeout",
    "http_keep_alive_timeout",
    "rpc_body_timeout",
    "ws_handshake_timeout",
    "ws_auth_timeout",
    "ws_idle_timeout",
    "rate_user_connection",
    "rate_user_token",
    "rate_service_connection",
    "rate_service_token",
    "rate_rpc_client",
    "rate_max_tracked",
)


def guard_options(command: F) -> F:
    """Add the guards' flags to ``command``, which receives them as ``guards: Guards``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in _NAMES}
        try:
            rate_limits = RateLimits(
                user_connection=given["rate_user_connection"],
                user_token=given["rate_user_token"],
                privileged_connection=given["rate_service_connection"],
                privileged_token=given["rate_service_token"],
                rpc_client=given["rate_rpc_client"],
                max_tracked=given["rate_max_tracked"],
            )
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
        kwargs["guards"] = Guards(
            first_bytes_timeout=given["first_bytes_timeout"],
            keep_alive_timeout=given["http_keep_alive_timeout"],
            body_timeout=given["rpc_body_timeout"],
            ws_handshake_timeout=given["ws_handshake_timeout"],
            ws_auth_timeout=given["ws_auth_timeout"],
            ws_idle_timeout=given["ws_idle_timeout"],
            rate_limits=rate_limits,
        )
        return command(*args, **kwargs)

    decorated: Any = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return cast(F, decorated)
