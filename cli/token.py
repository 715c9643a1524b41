"""``starling token``: mint a token with the local secret."""

from __future__ import annotations

from pathlib import Path

import click
import structlog

from cli.common import LineError, local_secret, run_command
from cli.options import data_dir_option

log = structlog.get_logger("starling")


@click.command("token")
@click.argument("user")
@click.option(
    "--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Seconds valid."
)
@data_dir_option
@click.option(
    "--operator",
    is_flag=True,
    help="An operator's token: may read system: channels and call every method on /ws.",
)
@click.option(
    "--service",
    is_flag=True,
    help="An internal service's token: may call every JSON-RPC method on /ws.",
)
def token_command(
    user: str, ttl: int, data_dir: Path | None, operator: bool, service: bool
) -> None:
    """Print a WebSocket token for USER, signed with the server's secret.

    The secret is STARLING_SECRET, else <data-dir>/secret (the server's own).
    Only the token goes to stdout.

    \b
    Examples:
      starling token alice
      starling token alice --ttl 600 --data-dir /var/lib/starling
      starling token ops --operator
      starling token feed-ranker --service --ttl 86400
    """
    from actors.ids import ID_RULE
    from auth.tokens import USER_ID, issue_token

    if not USER_ID.fullmatch(user):
        raise LineError(f"user {user!r}: a user id is {ID_RULE}")
    if operator and service:
        raise click.UsageError("--operator and --service: a token has one role")
    secret = run_command(False, lambda: local_secret(data_dir))
    click.echo(issue_token(secret, user, ttl_seconds=ttl, operator=operator, service=service))
