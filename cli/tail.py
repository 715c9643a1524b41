"""``starling tail``: print the publications of realtime channels as they arrive."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import structlog
import trio

from cli.common import LineError, local_secret, run_client_command, run_command
from cli.options import data_dir_option, debug_option

log = structlog.get_logger("starling")


@click.command("tail")
@click.argument("channels", nargs=-1, required=True, metavar="CHANNEL...")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="Server URL.")
@click.option("--token", help="A token (`starling token USER`) [default: one minted locally].")
@click.option(
    "--user",
    help="Whom the minted token names [default: the id of a user:<id> channel, else 'tail'].",
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N publications.")
@data_dir_option
@debug_option
def tail_command(
    channels: tuple[str, ...],
    url: str,
    token: str | None,
    user: str | None,
    limit: int | None,
    data_dir: Path | None,
    debug: bool,
) -> None:
    """Print the publications of realtime channels as JSON lines, live.

    One line per publication on stdout, {"channel", "offset", "data"}; notes
    (subscribed, reconnecting, recovered) on stderr. Without --token, a token
    is minted with the local secret (STARLING_SECRET or <data-dir>/secret), so
    it works against a server on the same machine. When the server closes the
    connection (idle, restart, slow consumer) it reconnects and recovers what
    it missed. Ctrl-C stops it.

    \b
    Examples:
      starling tail post:1krq69r
      starling tail user:alice post:1krq69r --limit 10
      starling tail post:42 --url http://10.0.0.5:8080 --token "$(cat token)"
    """
    from actors.realtime import parse_channel
    from auth.tokens import USER_ID, issue_token
    from client import websocket_url

    try:
        websocket_url(url)
        parsed = [parse_channel(channel) for channel in channels]
    except ValueError as error:
        raise LineError(str(error)) from None
    credentials: str | Callable[[], str]
    if token is not None:
        credentials = token
    else:
        users = sorted({channel.id for channel in parsed if channel.kind == "user"})
        if user is None and len(users) > 1:
            raise LineError(f"a token names one user: not both user:{users[0]} and user:{users[1]}")
        name = user or (users[0] if users else "tail")
        if not USER_ID.fullmatch(name):
            raise LineError(f"--user {name!r}: a user id is 1-64 of letters, digits and '_.:@-'")
        if others := [other for other in users if other != name]:
            raise LineError(f"user:{others[0]} may be tailed by {others[0]} only, not {name}")
        secret = run_command(debug, lambda: local_secret(data_dir))
        # A fresh token per connection: a tail outlives any one token's hour.
        operator = any(channel.startswith("system:") for channel in channels)
        credentials = functools.partial(
            issue_token, secret, name, ttl_seconds=3600, operator=operator
        )
    run_client_command(
        debug,
        lambda: trio.run(
            functools.partial(tail_channels, url, credentials, list(channels), limit=limit)
        ),
    )


async def tail_channels(
    url: str, token: str | Callable[[], str], channels: list[str], *, limit: int | None
) -> None:
    """Follow ``channels``: JSON lines on stdout, notes on stderr (``starling tail``)."""

    from client import Gap, Reconnecting, Subscribed, TailStatus, tail, websocket_url

    def on_pub(publication: dict[str, Any]) -> None:
        try:
            click.echo(json.dumps(publication, ensure_ascii=False, separators=(",", ":")))
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and let the exit not flush.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)

    def on_status(status: TailStatus) -> None:
        match status:
            case Subscribed(channel, (offset, _), None, _, _):
                note = f"subscribed to {channel} at offset {offset}"
            case Subscribed(channel, (offset, _), True, missed, _):
                note = f"resubscribed to {channel}: {missed} missed publication(s) recovered"
            case Subscribed(channel, (offset, _), False, _, _):
                note = (
                    f"resubscribed to {channel}: what was published while disconnected could "
                    f"not be recovered (the server's history moved on); resuming at {offset}"
                )
            case Gap(channel, first, last):
                note = (
                    f"{channel}: publications {first}..{last} were lost before they reached the "
                    f"server (it said so); resuming after {last}"
                )
            case Reconnecting(None, reason, delay, attempt):
                note = f"cannot connect ({reason}); retrying in {delay:.1f} s (attempt {attempt})"
            case Reconnecting(code, reason, delay, _):
                note = f"connection closed ({code} {reason}); reconnecting in {delay:.1f} s"
        click.echo(f"tail: {note}", err=True)

    click.echo(f"tail: connecting to {websocket_url(url)}", err=True)
    await tail(url, token, channels, on_pub, limit=limit, on_status=on_status)
