"""``starling status``: print a running server's supervision tree and figures."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click
import structlog
import trio
from rich.console import Console
from rich.table import Table

from cli.common import local_secret, make_console, run_client_command, run_command
from cli.options import data_dir_option, debug_option

log = structlog.get_logger("starling")


@click.command("status")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="Server URL.")
@click.option("--token", help="An operator token (`starling token ops --operator`).")
@data_dir_option
@debug_option
def status_command(url: str, token: str | None, data_dir: Path | None, debug: bool) -> None:
    """Show a running server's supervision tree and key rates.

    Reads one snapshot of the operator channel system:dashboard over the
    WebSocket (the figures the dashboard draws). Without --token, an
    operator token is minted with the local secret (same machine).

    \b
    Examples:
      starling status
      starling status --url http://10.0.0.5:8080 --token "$(cat ops.token)"
    """
    from auth.tokens import issue_token

    if token is None:
        secret = run_command(False, lambda: local_secret(data_dir))
        token = issue_token(secret, "status", ttl_seconds=300, operator=True)
    credentials = token
    snapshot = run_client_command(
        debug, lambda: trio.run(functools.partial(read_snapshot, url, credentials))
    )
    print_status(make_console(), snapshot)


async def read_snapshot(url: str, token: str) -> dict[str, Any]:
    """The next snapshot published on ``system:dashboard``."""
    from client import tail

    got: list[dict[str, Any]] = []
    with trio.fail_after(15):
        await tail(
            url,
            token,
            ["system:dashboard"],
            got.append,
            limit=1,
            reconnect=False,
            on_status=lambda status: None,
        )
    return dict(got[0]["data"])


def print_status(console: Console, snapshot: dict[str, Any]) -> None:
    """The tree (states coloured) and a table of rates, from one dashboard snapshot."""
    from rich.tree import Tree

    colours = {"running": "green", "failed": "red", "restarting": "yellow", "starting": "yellow"}

    def label(node: dict[str, Any]) -> str:
        state = node["state"]
        text = f"[{colours.get(state, 'white')}]{state}[/] [bold]{node['id']}[/]"
        text += f" restarts {node.get('restarts_total', node.get('supervisor_restarts_total', 0))}"
        if node.get("mailbox_size"):
            text += (
                f" inbox {node['mailbox_used']}/{node['mailbox_size']} peak {node['mailbox_peak']}"
            )
        if node.get("last_error"):
            text += f" [red]{node['last_error']['type']}: {node['last_error']['message']}[/]"
        return text

    def add(branch: Tree, node: dict[str, Any]) -> None:
        for child in node.get("children", []):
            add(branch.add(label(child)), child)
        if node.get("more"):
            branch.add(f"… and {node['more']} more")

    root = snapshot["tree"]
    tree = Tree(
        f"{label(root)} — [bold]{snapshot['status']}[/], up {snapshot['uptime_seconds']:.0f} s"
    )
    add(tree, root)
    console.print(tree)
    table = Table(title="now")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in snapshot.get("rates", {}).items():
        table.add_row(f"{name.replace('_', ' ')} /s", f"{value:,.1f}")
    latency = snapshot.get("latency_ms", {})
    if latency:
        table.add_row(
            "latency p50 / p99 / p99.9 ms", " / ".join(f"{v:g}" for v in latency.values())
        )
    if "ws" in snapshot:
        table.add_row("WebSocket connections", f"{snapshot['ws']['open']:,}")
    if "feeds" in snapshot:
        table.add_row("live feed actors", f"{snapshot['feeds']['live']:,}")
    for row in snapshot.get("rpc", [])[:5]:
        mean = "—" if row["mean_ms"] is None else f"{row['mean_ms']:.2f} ms"
        table.add_row(f"rpc {row['method']}", f"{row['calls_per_second']:,.1f}/s, {mean}")
    console.print(table)


# -- the demo -----------------------------------------------------------------
