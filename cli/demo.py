"""``starling demo``: the README's ``make run``: load, serve, replay, print what to try."""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import click
import structlog
import trio
from rich.console import Console

from auth.tokens import load_secret
from cli.common import backend_options, run_command, starling_invocation
from cli.load import load_demo
from server import serve
from settings import ServeOptions, Settings
from supervisor import Supervisor

log = structlog.get_logger("starling")


@click.command("demo")
@backend_options
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("../shared/data"),
    show_default=True,
    help="Directory holding the real data sets.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--speed",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="How much faster than real time the Reddit threads are replayed.",
)
@click.option(
    "--max-gap",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Longest pause between replayed comments, in seconds.",
)
def demo_command(
    data_dir: Path | None,
    graph_url: str | None,
    redis_url: str | None,
    debug: bool,
    source: Path,
    host: str,
    port: int,
    speed: float,
    max_gap: float,
) -> None:
    """Load the demo world (once), serve it, replay real comments live, print what to try.

    Builds the demo world from --source into the embedded store if it is not
    there yet (about 25 s, with progress), starts the server, replays the real
    Reddit comment threads in the background as live comment events, and
    prints the dashboard URL, a token, curl calls and a tail command to paste.
    Ctrl-C stops everything.

    \b
    Examples:
      starling demo
      starling demo --port 9000 --speed 3600
    """
    settings = Settings.resolve(data_dir, graph_url, redis_url)
    options = ServeOptions(host=host, port=port)
    run_command(
        debug,
        lambda: trio.run(
            functools.partial(run_demo, settings, options, source, speed=speed, max_gap=max_gap)
        ),
    )


async def run_demo(
    settings: Settings, options: ServeOptions, source: Path, *, speed: float, max_gap: float
) -> None:
    """``starling demo``: load if empty, serve, replay in the background, print next steps."""
    from auth.tokens import issue_token
    from client.replay import replay
    from datasets.reddit import read_comments

    console = Console(stderr=True)
    await load_demo(settings, source, 42, True)
    comments = await trio.to_thread.run_sync(read_comments, source / "reddit_comments_au_2025.csv")
    secret = await trio.to_thread.run_sync(load_secret, settings.data_dir)
    url = f"http://{options.host}:{options.port}"
    async with trio.open_nursery() as nursery:

        async def run_server(*, task_status: trio.TaskStatus[Supervisor]) -> None:
            await serve(settings, options, task_status=task_status)
            nursery.cancel_scope.cancel()  # Ctrl-C stopped the server: stop the replay too

        await nursery.start(run_server)
        post = await demo_post(url)
        threads = Counter(comment.post for comment in comments)
        thread = threads.most_common(1)[0][0]
        print_next_steps(console, url, issue_token(secret, "0", ttl_seconds=86_400), post, thread)

        # Start at the busiest thread's first comment, so the printed tail shows it at once.
        first = next(i for i, comment in enumerate(comments) if comment.post == thread)
        passes = [comments[first:]]

        async def replay_comments_forever() -> None:
            while True:
                batch = passes.pop() if passes else comments
                summary = await replay(batch, url, speed=speed, max_gap=max_gap,
                                       api_key=settings.api_key)  # fmt: skip
                log.info("comment replay finished; starting over", sent=summary.sent,
                         failed=summary.failed)  # fmt: skip

        nursery.start_soon(replay_comments_forever)


async def demo_post(url: str) -> str:
    """A post in user 0's first feed page that friends recommended (for the printed examples)."""
    import httpx

    body = {"jsonrpc": "2.0", "id": 1, "method": "feed.get", "params": {"user": "0", "limit": 20}}
    async with httpx.AsyncClient(timeout=30) as client:
        reply = (await client.post(f"{url}/rpc", json=body)).json()
    items = reply.get("result", {}).get("items", [])
    for item in items:
        if any("friend" in reason for reason in item["reasons"]):
            return str(item["post"])
    return str(items[0]["post"]) if items else "hn:12224879"


def print_next_steps(console: Console, url: str, token: str, post: str, thread: str) -> None:
    """What to try next, every line ready to paste into a fresh shell here."""

    def call(method: str, params: dict[str, Any]) -> str:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
            separators=(",", ":"),
        )
        return f"curl -s -d '{body}' {url}/rpc"

    lines = [
        f"[bold green]Starling demo is running[/] on {url} (Ctrl-C stops it)",
        "",
        f"  dashboard     {url}/dashboard",
        f"  demo page     {url}/demo?user=0&post={thread}",
        f"  token (user 0, 24 h)  {token}",
        "",
        "  # user 0's ranked feed, with the reasons:",
        f"  {call('feed.get', {'user': '0', 'limit': 5})}",
        "  # which of the people user 0 follows recommended this post:",
        f"  {call('social.friends_who_recommended', {'user': '0', 'post': post})}",
        "  # whom user 0 might follow (friends of friends):",
        f"  {call('social.who_to_follow', {'user': '0', 'limit': 5})}",
        "  # the busiest Reddit thread, live as it is replayed:",
        f"  {starling_invocation()} tail post:{thread} --url {url}",
    ]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


# -- realtime clients: token, tail, replay -----------------------------------------
