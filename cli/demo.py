"""``starling demo``: the README's ``make run``: load, serve, replay, print what to try."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import structlog
import trio
from rich.console import Console

from actors.feeds import FeedSettings, PipelineParams
from actors.feeds.pipeline import DAY_SECONDS
from auth.tokens import load_secret
from cli.common import make_console, run_command, starling_invocation
from cli.load import load_demo
from cli.options import backend_options, previous_secret_until_option
from server import limit_malloc_arenas, serve
from settings import ServeOptions, Settings
from supervisor import Supervisor

if TYPE_CHECKING:
    from client.replay import ReplaySummary

log = structlog.get_logger("starling")

COMMENTS_FILE = "reddit_comments_au_2025.csv"
"""The comment threads the demo replays, in ``--source``."""

DEMO_HORIZON_DAYS = 100 * 365
"""The demo's feed horizon: its stories date from 2015 (Hacker News) to 2026 (Reddit), and
``serve``'s default of ten years (``--feed-horizon-days 3650``) drops the oldest of them."""
RESUME_SECONDS = 1.0
"""Pause before a replay resumes after the server dropped its request (a restart)."""


@click.command("demo")
@backend_options(api_key=True)
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
@previous_secret_until_option
def demo_command(
    settings: Settings,
    debug: bool,
    source: Path,
    host: str,
    port: int,
    speed: float,
    max_gap: float,
    previous_secret_until: float | None,
) -> None:
    """Load the demo world (once), serve it, replay real comments live, print what to try.

    Builds the demo world from --source into the embedded store if it is not
    there yet (about 15 s on 2 idle cores, with progress), starts the server, replays the real
    Reddit comment threads in the background as live comment events on the
    threads' posts, and prints the dashboard URL, a token, curl calls and a
    tail command to paste. The three busiest threads play side by side and
    then again and again, with fresh comment ids each round; the other
    threads play once. Ctrl-C stops everything.

    \b
    Examples:
      starling demo
      starling demo --port 9000 --speed 3600
    """
    horizon = PipelineParams(horizon_seconds=DEMO_HORIZON_DAYS * DAY_SECONDS)
    options = ServeOptions(
        host=host,
        port=port,
        feeds=FeedSettings(params=horizon),
        previous_secret_until=previous_secret_until,
    )
    limit_malloc_arenas()
    run_command(
        debug,
        lambda: trio.run(
            functools.partial(run_demo, settings, options, source, speed=speed, max_gap=max_gap)
        ),
    )


async def run_demo(
    settings: Settings, options: ServeOptions, source: Path, *, speed: float, max_gap: float
) -> None:
    """``starling demo``: load if missing, serve, replay in the background, print next steps.

    Two replays run side by side on disjoint channels: the
    :data:`~datasets.reddit.LOOP_THREADS` busiest threads, played side by side
    from the start (so the printed tail shows comments at once) and round after
    round with fresh comment ids (:func:`datasets.reddit.loop_round`) until
    Ctrl-C; and every other thread, once, from the file's first comment.
    """
    from auth.tokens import issue_token
    from client import Unreachable
    from client.replay import replay, replay_loop
    from datasets.reddit import busiest_threads, loop_round, read_comments

    console = make_console(stderr=True)
    comments = await trio.to_thread.run_sync(read_comments, source / COMMENTS_FILE)
    threads = busiest_threads(comments)
    thread = threads[0]
    # A world built before the Reddit posts were part of it lacks the thread's post:
    # build again (idempotent: only what is missing is written).
    await load_demo(settings, source, 42, await has_post(settings, thread))
    secret = await trio.to_thread.run_sync(load_secret, settings.data_dir)
    url = f"http://{options.host}:{options.port}"
    async with trio.open_nursery() as nursery:

        async def run_server(*, task_status: trio.TaskStatus[Supervisor]) -> None:
            await serve(settings, options, task_status=task_status)
            nursery.cancel_scope.cancel()  # Ctrl-C stopped the server: stop the replays too

        await nursery.start(run_server)
        post = await demo_post(url)
        print_next_steps(console, url, issue_token(secret, "0", ttl_seconds=86_400), post, thread)

        played = 0  # the busiest threads' rounds played in full

        def looped(round: int, summary: ReplaySummary) -> None:
            nonlocal played
            played = round
            log.info("busiest threads replayed", threads=threads, round=round,
                     sent=summary.sent, failed=summary.failed)  # fmt: skip

        # The server in this process stops only when Ctrl-C stops it (the cancel in run_server
        # ends the replays then). A request it drops meanwhile (an operator restarted the api
        # child, or the whole tree) is retried after a pause: the replays resume where they
        # were, the busiest threads at their next round, the others at the first batch not
        # acknowledged (which may then reach its channel twice).
        async def replay_from(first: int) -> None:
            """The busiest threads' rounds from round ``first`` on (fresh comment ids)."""
            live = functools.partial(loop_round, comments, threads)
            await replay_loop(
                live(first), lambda round: live(first + round - 1), url, speed=speed,
                max_gap=max_gap, api_key=settings.api_key,
                on_round=lambda round, summary: looped(first + round - 1, summary),
            )  # fmt: skip

        async def replay_the_busiest() -> None:
            while True:
                try:
                    await replay_from(played + 1)
                    return  # a round came out empty
                except Unreachable as dropped:
                    log.info("busiest threads' replay interrupted; resuming", error=str(dropped))
                    await trio.sleep(RESUME_SECONDS)

        async def replay_the_rest() -> None:
            rest = [comment for comment in comments if comment.post not in threads]
            done = sent = failed = 0

            def progress(now_sent: int, now_failed: int) -> None:
                nonlocal sent, failed
                sent, failed = now_sent, now_failed

            while True:
                sent = failed = 0
                try:
                    await replay(rest[done:], url, speed=speed, max_gap=max_gap,
                                 api_key=settings.api_key, on_progress=progress)  # fmt: skip
                except Unreachable as dropped:
                    done += sent + failed
                    log.info("other threads' replay interrupted; resuming", error=str(dropped))
                    await trio.sleep(RESUME_SECONDS)
                else:
                    break
            log.info("other threads replayed once", comments=len(rest))

        nursery.start_soon(replay_the_busiest)
        nursery.start_soon(replay_the_rest)


async def has_post(settings: Settings, post: str) -> bool:
    """Whether the graph holds ``post`` (the demo world is loaded, Reddit posts included)."""
    graph = await settings.open_graph()
    try:
        session = graph.session()
        try:
            rows = await session.read("MATCH (p:Post {id: $id}) RETURN p.id AS id", {"id": post})
        finally:
            session.close()
    finally:
        await graph.aclose()
    return bool(rows)


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
