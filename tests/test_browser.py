"""The pages in a real browser: headless Debian Chromium driven by Selenium (chromedriver).

The server runs in process on the demo world (the real data, built once per
session); the browser loads ``/dashboard`` and ``/demo`` from it like a
person would. Assertions read the DOM, never pixels; screenshots are saved
to the directory the test prints (``STARLING_SCREENSHOTS``, default a
temporary directory) for people to look at.

Selenium's calls block: each one runs in a worker thread
(``trio.to_thread.run_sync``) so the server keeps serving on the trio thread.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from trio_websocket import open_websocket_url

from server import serve
from settings import ServeOptions, Settings
from supervisor import Supervisor

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
T = TypeVar("T")


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = Path(
        os.environ.get("STARLING_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots")
    )
    directory.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {directory}")
    return directory


@pytest.fixture
def browser() -> Any:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are missing: run scripts/install-test-deps.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


async def blocking(call: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(call)


@pytest.fixture
async def server(tmp_path: Path, demo_graph: Path) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    settings = Settings(tmp_path, f"ladybug://{demo_graph}", "memory://")
    async with trio.open_nursery() as nursery:
        root: Supervisor = await nursery.start(serve, settings, ServeOptions(port=0, readers=2))
        (api,) = [child for child in root.statistics().children if child.id == "api"]
        url = api.detail.binds[0]
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield url, client
        root.request_stop()


async def rpc(client: httpx.AsyncClient, method: str, params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply = (await client.post("/rpc", json=body)).json()
    assert "error" not in reply, reply
    return reply["result"]


def wait_for(driver: Any, condition: Callable[[Any], Any], seconds: float = 15.0) -> Any:
    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(condition)


def text(driver: Any, css: str) -> str:
    """The text of the element ``css`` selects ("" if none), read in one step: the pages
    re-render every second, so an element found by one call may be gone by the next."""
    value = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css
    )
    return str(value)


def viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport exactly ``width`` × ``height`` CSS pixels (a window's size
    would include whatever the headless browser counts as its frame)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def luminance(css_colour: str) -> float:
    """WCAG 2.1 relative luminance of an ``rgb(…)``/``rgba(…)`` computed colour."""
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_colour)[:3])

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def contrast(foreground: str, background: str) -> float:
    """WCAG 2.1 contrast ratio of two computed colours (1 to 21; 4.5 is the AA minimum)."""
    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def is_round_scale(ticks: list[float]) -> bool:
    """Whether axis ticks start at 0 and go up in equal steps of 1, 2 or 5 × 10^k."""
    if len(ticks) < 2 or ticks[0] != 0:
        return False
    step = ticks[1]
    exponent = math.floor(math.log10(step))
    mantissa = round(step / 10**exponent, 6)
    equal = all(math.isclose(b - a, step, rel_tol=1e-6) for a, b in itertools.pairwise(ticks))
    return mantissa in {1.0, 2.0, 5.0} and equal


DASHBOARD_WIDTHS = (1280, 1400, 1920)
"""Widths at which every column of the dashboard's tables must fit its card."""
PAINT_MS = 600
"""How soon after subscribing the dashboard paints its first snapshot (the reporter looks for
new viewers every 0.1 s; without that, the next interval could be a second away)."""


async def test_dashboard_paints_at_once_with_the_last_minutes_and_stays_live(
    server: tuple[str, httpx.AsyncClient], browser: Any, screenshots: Path
) -> None:
    """Opened after the server has run a while, the dashboard paints a snapshot at once with the
    chart points taken before it opened; the tree renders with every subtree running, the
    numbers and charts move while events flow, axis ticks are round numbers, the tables fit
    their cards at 1,280 px and wider, and an operator restart shows on the node at once."""
    url, client = server
    # The longest method name, for the table's width (its -32004 is counted all the same).
    body = {"jsonrpc": "2.0", "id": 1, "method": "social.friends_who_recommended",
            "params": {"user": "0", "post": "no-such-post"}}  # fmt: skip
    await client.post("/rpc", json=body)

    async def produce(seconds: float) -> None:
        n = 0
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            await rpc(client, "realtime.publish", {"channel": "post:dash", "data": {"n": n}})
            n += 1
            await trio.sleep(0.05)

    await produce(6.0)  # the points of one batch (five seconds) and more, before the page opens
    opened = time.time()
    await blocking(lambda: viewport(browser, 1280, 800))
    await blocking(lambda: browser.get(f"{url}/dashboard"))
    await blocking(lambda: wait_for(browser, lambda d: int(d.execute_script(SNAPSHOTS))))
    marks = await blocking(lambda: browser.execute_script("return {...document.body.dataset};"))
    assert int(marks["firstSnapshotMs"]) - int(marks["subscribedMs"]) < PAINT_MS, marks
    before = await blocking(
        lambda: browser.execute_script(
            "return StarlingDashboard.series().filter((p) => p.at < arguments[0]).length;", opened
        )
    )
    assert before >= 5, before  # backfilled: taken before the page existed
    assert int(marks["backfilled"]) >= 5, marks  # from the series' history
    await blocking(lambda: wait_for(browser, lambda d: text(d, "#connection") == "live"))
    await blocking(lambda: wait_for(browser, lambda d: text(d, '[data-path="realtime/nozzle"]')))
    states = await blocking(
        lambda: browser.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#tree li[data-path]')]"
            ".map((li) => [li.dataset.path, li.dataset.state]));"
        )
    )
    for path in ("stores", "social", "feeds", "realtime", "api", "realtime/transformer-0"):
        assert states[path] == "running", states
    # Events flow: the "events/s in" figure and the charts must move.
    points = int(await blocking(lambda: browser.execute_script(POINTS)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce, 3.0)
        readings = set()
        with trio.fail_after(20):
            while len(readings - {"—", "0"}) < 2:
                readings.add(await blocking(lambda: text(browser, "#rate-events_in")))
                await trio.sleep(0.3)
    assert int(await blocking(lambda: browser.execute_script(POINTS))) > points
    assert await blocking(lambda: text(browser, "#latency")) != "— / — / — ms"
    ticks = await blocking(
        lambda: browser.execute_script(
            "return [...document.querySelectorAll('canvas.chart')].map((c) => c.dataset.ticks);"
        )
    )
    assert len(ticks) == 2
    for scale in ticks:
        assert is_round_scale([float(tick) for tick in scale.split()]), ticks
    for width in DASHBOARD_WIDTHS:
        await blocking(lambda width=width: viewport(browser, width, 900))
        await wait_for_next_snapshot(browser)
        overflow = await blocking(lambda: browser.execute_script(TABLE_OVERFLOW))
        assert overflow == [], (width, overflow)
    await blocking(lambda: viewport(browser, 1280, 800))
    height = await blocking(
        lambda: browser.execute_script("return document.documentElement.scrollHeight;")
    )
    await blocking(lambda: viewport(browser, 1280, height))
    await wait_for_next_snapshot(browser)
    await blocking(lambda: browser.save_screenshot(str(screenshots / "dashboard.png")))
    # An operator restart shows on its node at once (the next snapshot, within a second).
    await rpc(client, "system.restart", {"path": "realtime/transformer-0"})
    await blocking(
        lambda: wait_for(
            browser,
            lambda d: "restarts 1" in text(d, '[data-path="realtime/transformer-0"]'),
            seconds=5,
        )
    )


TABLE_OVERFLOW = """
const problems = [];
for (const table of document.querySelectorAll(".card table")) {
  const card = table.closest(".card");
  const box = card.getBoundingClientRect();
  const right = box.right - parseFloat(getComputedStyle(card).paddingRight) + 0.5;
  if (card.scrollWidth > card.clientWidth) problems.push(`${card.id}: scrolls`);
  for (const cell of table.querySelectorAll("th, td")) {
    if (cell.getBoundingClientRect().right > right) problems.push(`${card.id}: ${cell.innerText}`);
  }
  if (!table.querySelector("tbody tr")) problems.push(`${card.id}: no rows`);
}
return problems;
"""
"""What of the dashboard's tables does not fit its card: a card that scrolls sideways, a cell
past the card's padding, or a table with no rows (nothing would have been measured)."""


async def wait_for_next_snapshot(browser: Any) -> None:
    """Until the page has drawn one more snapshot than now (the tables are redrawn)."""
    count = int(await blocking(lambda: browser.execute_script(SNAPSHOTS)))
    await blocking(lambda: wait_for(browser, lambda d: int(d.execute_script(SNAPSHOTS)) > count, 5))


SNAPSHOTS = "return document.body.dataset.snapshots || '0';"
POINTS = "return document.body.dataset.points || '0';"
POST_ID = re.compile(r"\b(?:md|hn|doc):[0-9A-Za-z]+")
"""A post id of the demo world, as the feed showed them before titles."""
READABLE = 4.5
"""WCAG 2.1 AA contrast for body text."""
LINK_CONTRASTS = """
const card = (node) => node.closest(".card") || document.body;
return [...document.querySelectorAll("a")].filter((a) => a.offsetParent !== null).map((a) =>
  [a.innerText, getComputedStyle(a).color, getComputedStyle(card(a)).backgroundColor]);
"""


async def test_demo_page_shows_titles_and_reasons_and_keeps_notifications_in_sight(
    server: tuple[str, httpx.AsyncClient], browser: Any, screenshots: Path
) -> None:
    """A user's ranked feed shows each story's title, author and publication and its reasons,
    never a post id, under a note on diversification, with links readable on the dark cards;
    on an open post, a comment published through JSON-RPC appears within a second, a followed
    user's recommendation reads "a friend just recommended this", and at 1,280 × 800 the
    notifications (a follow, a followed author's new post by its title) are in sight without
    scrolling beside a long live thread."""
    url, client = server
    user = "0"
    following = (await rpc(client, "social.following", {"user": user, "limit": 10}))["users"]
    assert following
    feed = await rpc(client, "feed.get", {"user": user, "limit": 20})
    posts = [await rpc(client, "posts.get", {"post": item["post"]}) for item in feed["items"]]
    await blocking(lambda: viewport(browser, 1280, 800))
    await blocking(lambda: browser.get(f"{url}/demo?user={user}"))
    await blocking(lambda: wait_for(browser, lambda d: text(d, "#connection") == f"live as {user}"))
    items = await blocking(
        lambda: browser.execute_script(
            "return [...document.querySelectorAll('#feed .feed-item')].map((e) => ({"
            " post: e.dataset.post, title: e.querySelector('.title').innerText,"
            " byline: e.querySelector('.byline').innerText,"
            " reasons: e.querySelector('.reasons').innerText }));"
        )
    )
    assert [item["post"] for item in items] == [item["post"] for item in feed["items"]]
    for shown, fields, item in zip(items, posts, feed["items"], strict=True):
        assert words(shown["title"]) == words(fields["title"]), shown
        assert shown["byline"].startswith(f"by user {fields['author']}"), shown
        if fields["publication"]:
            assert fields["publication"] in shown["byline"], shown
        assert shown["reasons"] == " · ".join(item["reasons"])
        assert shown["reasons"]  # every item says why it is there
    feed_text = await blocking(lambda: text(browser, "#feed"))
    assert not POST_ID.findall(feed_text), POST_ID.findall(feed_text)
    assert "spread" in await blocking(lambda: text(browser, "#feed-note"))
    links = await blocking(lambda: browser.execute_script(LINK_CONTRASTS))
    assert "enter an id" in [label for label, _, _ in links]
    for label, colour, background in links:
        assert contrast(colour, background) >= READABLE, (label, colour, background)

    post, title = feed["items"][0]["post"], posts[0]["title"]
    await blocking(lambda: browser.get(f"{url}/demo?user={user}&post={post}"))
    await blocking(lambda: wait_for(browser, lambda d: text(d, "#connection") == f"live as {user}"))
    await blocking(
        lambda: wait_for(
            browser,
            lambda d: d.find_element(By.ID, "post").get_attribute("data-subscribed") is not None,
        )
    )
    assert words(await blocking(lambda: text(browser, "#post .post-title"))) == words(title)
    comment = {"user": following[0], "post": post, "text": "hello from the test"}
    await rpc(client, "comments.add", comment)
    # The bound: the comment is on the page within one second of the reply.
    await blocking(
        lambda: wait_for(browser, lambda d: "hello from the test" in text(d, "#live"), 1.0)
    )
    for friend in following:  # one who had not recommended it yet
        if (await rpc(client, "social.recommend", {"user": friend, "post": post}))["created"]:
            break
    else:
        pytest.fail(f"every followed user already recommended {post}")
    await blocking(
        lambda: wait_for(
            browser,
            lambda d: "a friend just recommended this" in text(d, "#live"),
            5,
        )
    )
    for n, remark in enumerate(REMARKS * 6):  # a thread longer than the window
        comment = {"user": following[n % len(following)], "post": post, "text": remark}
        await rpc(client, "comments.add", comment)
    follower = await new_follower(client, user)
    published = {"id": "browser-test-story", "title": "A story published while you watch"}
    await rpc(client, "posts.publish", {"author": following[0], "post": published})
    try:
        await blocking(
            lambda: wait_for(
                browser,
                lambda d: (
                    f"user {follower} followed you" in text(d, "#notifications")
                    and f"published “{published['title']}”" in text(d, "#notifications")
                    and int(d.find_element(By.ID, "live").get_attribute("data-count")) == 32
                ),
                5,
            )
        )
        sight = await blocking(lambda: browser.execute_script(IN_SIGHT))
        assert sight["scrolled"] == 0, sight
        assert sight["heading"], sight
        assert sight["newest"], sight
        assert sight["thread"] >= 32, sight  # the thread is all there, not hidden
        await blocking(lambda: browser.save_screenshot(str(screenshots / "demo.png")))
        # feed.stale (one per 5 s at most): a banner over the feed; a click reloads it.
        await blocking(
            lambda: wait_for(browser, lambda d: d.find_element(By.ID, "stale").is_displayed(), 10)
        )
        banner = await blocking(lambda: text(browser, "#stale"))
        assert re.fullmatch(r"[1-9]\d* new stor(y|ies) — refresh", banner), banner
        await blocking(lambda: browser.find_element(By.ID, "stale").click())
        await blocking(
            lambda: wait_for(
                browser,
                lambda d: (
                    not d.find_element(By.ID, "stale").is_displayed()
                    and d.find_elements(By.CSS_SELECTOR, "#feed .feed-item")
                ),
                10,
            )
        )
    finally:  # the demo graph is shared by the session's tests: leave it as it was
        await rpc(client, "posts.delete", {"post": published["id"]})
        await rpc(client, "social.unfollow", {"follower": follower, "followee": user})
        await rpc(client, "social.unrecommend", {"user": friend, "post": post})


REMARKS = (
    "Clear write-up, thanks for sharing.",
    "The second half is where it gets interesting.",
    "Has anyone tried this at a larger scale?",
    "I disagree with the conclusion, but the figures are solid.",
    "Bookmarking this for the weekend.",
)
"""Comments for the long thread (five, six times over: thirty)."""
IN_SIGHT = """
const inside = (node) => {
  const box = node.getBoundingClientRect();
  return box.top >= 0 && box.bottom <= innerHeight && box.left >= 0 && box.right <= innerWidth;
};
const heading = [...document.querySelectorAll("h2")]
  .find((h) => h.innerText === "Your notifications");
return {
  scrolled: scrollY,
  heading: inside(heading),
  newest: inside(document.querySelector("#notifications .event")),
  thread: document.querySelectorAll("#live .event").length,
};
"""
"""Whether the notifications' heading and newest entry lie inside the viewport, unscrolled,
and how many entries the live thread shows."""


def words(text: str) -> str:
    """``text`` with each run of white space (no-break spaces too) as one space."""
    return " ".join(text.split())


async def new_follower(client: httpx.AsyncClient, user: str) -> str:
    """A user who did not follow ``user`` and now does (the first of ids 1, 2, … that did not)."""
    for candidate in map(str, itertools.count(1)):
        if candidate == user:
            continue
        if (await rpc(client, "social.follow", {"follower": candidate, "followee": user}))[
            "created"
        ]:
            return candidate
    raise AssertionError("unreachable")


async def open_demo(browser: Any, url: str, user: str, post: str | None = None) -> None:
    """Load ``/demo`` as ``user`` (with ``post`` open) and wait until it listens to
    ``following:<user>`` (and, with ``post``, to ``post:<post>``)."""
    query = f"user={user}" + (f"&post={post}" if post else "")
    await blocking(lambda: browser.get(f"{url}/demo?{query}"))
    await blocking(lambda: wait_for(browser, lambda d: text(d, "#connection") == f"live as {user}"))
    subscribed = ["following"] + (["post"] if post else [])
    await blocking(
        lambda: wait_for(
            browser,
            lambda d: all(
                d.find_element(By.ID, id).get_attribute("data-subscribed") is not None
                for id in subscribed
            ),
        )
    )


def top_activity(driver: Any) -> dict[str, str] | None:
    """The newest entry of the "Following" column: its type, actor and text."""
    value = driver.execute_script(
        "const e = document.querySelector('#following .event');"
        " return e && { type: e.dataset.type, user: e.dataset.user, text: e.innerText };"
    )
    return None if value is None else dict(value)


def newest_type(driver: Any) -> str | None:
    """The type of the newest entry of the "Following" column (``None`` for none)."""
    return (top_activity(driver) or {}).get("type")


async def test_demo_following_column_streams_what_followed_users_do(
    server: tuple[str, httpx.AsyncClient], browser: Any, screenshots: Path
) -> None:
    """A post a followed user publishes after the demo page loaded shows at the top of the
    "Following" column within 5 s as "user <actor> published “<title>”", then that user's
    comment on it as "commented on" with its text; the title opens the post."""
    url, client = server
    user = "0"
    actor = (await rpc(client, "social.following", {"user": user, "limit": 1}))["users"][0]
    await blocking(lambda: viewport(browser, 1280, 800))
    await open_demo(browser, url, user)
    story = {"id": "browser-following-story", "title": "A story from someone you follow"}
    await rpc(client, "posts.publish", {"author": actor, "post": story})
    try:
        await blocking(lambda: wait_for(browser, lambda d: newest_type(d) == "published", 5))
        shown = await blocking(lambda: top_activity(browser)) or {}
        assert f"user {actor} published “{story['title']}”" in words(shown["text"]), shown
        assert shown["user"] == actor, shown
        remark = "Written by someone you follow, seen live."
        await rpc(client, "comments.add", {"user": actor, "post": story["id"], "text": remark})
        await blocking(lambda: wait_for(browser, lambda d: newest_type(d) == "comment", 5))
        shown = words((await blocking(lambda: top_activity(browser)) or {})["text"])
        assert f"user {actor} commented on “{story['title']}”" in shown, shown
        assert remark in shown, shown
        count = await blocking(
            lambda: browser.find_element(By.ID, "following").get_attribute("data-count")
        )
        assert count == "2", count  # the two activities, each once
        await blocking(lambda: browser.save_screenshot(str(screenshots / "demo-following.png")))
        link = f'#following a[data-post="{story["id"]}"]'
        await blocking(lambda: browser.find_element(By.CSS_SELECTOR, link).click())
        await blocking(
            lambda: wait_for(
                browser, lambda d: words(text(d, "#post .post-title")) == story["title"], 5
            )
        )
    finally:  # the demo graph is shared by the session's tests: leave it as it was
        await rpc(client, "posts.delete", {"post": story["id"]})


def online(driver: Any) -> dict[str, str]:
    """What "Online now" shows, user id to label ({} while it is hidden)."""
    value = driver.execute_script(
        "const box = document.getElementById('presence');"
        " return box.hidden ? {} : Object.fromEntries([...box.querySelectorAll('li')]"
        ".map((li) => [li.dataset.user, li.innerText]));"
    )
    return dict(value)


async def test_demo_online_now_lists_who_is_on_the_open_post(
    server: tuple[str, httpx.AsyncClient], browser: Any, screenshots: Path
) -> None:
    """On an open post, "Online now" lists the signed-in user as "(you)"; another user's
    connection subscribing to the post with presence is listed within 5 s, and is gone within
    5 s of closing."""
    url, client = server
    user = "0"
    other = (await rpc(client, "social.following", {"user": user, "limit": 1}))["users"][0]
    post = (await rpc(client, "feed.get", {"user": user, "limit": 1}))["items"][0]["post"]
    await blocking(lambda: viewport(browser, 1280, 800))
    await open_demo(browser, url, user, post)
    await blocking(lambda: wait_for(browser, lambda d: online(d) == {user: f"user {user} (you)"}))
    token = (await client.get(f"/demo/token?user={other}")).json()["token"]
    ws_url = f"{url.replace('http', 'ws', 1)}/ws?token={token}"
    async with open_websocket_url(ws_url) as ws:
        subscribe = {"channel": f"post:{post}", "presence": True}
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                                          "params": subscribe}))  # fmt: skip
        await blocking(lambda: wait_for(browser, lambda d: online(d).keys() == {user, other}, 5))
        assert await blocking(lambda: online(browser)[other]) == f"user {other}"
        assert await blocking(lambda: text(browser, "#online-total")) == "(2)"
        await blocking(lambda: browser.save_screenshot(str(screenshots / "demo-online.png")))
    await blocking(lambda: wait_for(browser, lambda d: online(d).keys() == {user}, 5))
    assert await blocking(lambda: text(browser, "#online-total")) == "(1)"


async def stranger(client: httpx.AsyncClient, user: str) -> str:
    """A user who neither follows ``user`` nor is followed by them (a block removes nothing)."""
    near = {user}
    for method in ("social.following", "social.followers"):
        near |= set((await rpc(client, method, {"user": user, "limit": 1000}))["users"])
    return next(candidate for candidate in map(str, itertools.count(1)) if candidate not in near)


async def test_demo_page_says_when_the_server_ends_a_subscription(
    server: tuple[str, httpx.AsyncClient], browser: Any
) -> None:
    """When the author of the open post blocks the signed-in user, the server's `unsubscribed`
    push shows a notice naming the post and the reason within 5 s, "Online now" goes away, and
    when the connection drops and comes back the page resubscribes to its other channels but
    not to that post."""
    url, client = server
    source = {"source": RECORD_SOCKETS}
    await blocking(lambda: browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", source))
    user = "0"
    author = await stranger(client, user)
    story = {"id": "browser-blocked-story", "title": "A story you will be blocked from"}
    await rpc(client, "posts.publish", {"author": author, "post": story})
    try:
        await blocking(lambda: viewport(browser, 1280, 800))
        await open_demo(browser, url, user, story["id"])
        await blocking(lambda: wait_for(browser, lambda d: user in online(d)))
        await rpc(client, "social.block", {"user": author, "blocked": user})
        notice = f'#notices .notice[data-channel="post:{story["id"]}"]'
        await blocking(lambda: wait_for(browser, lambda d: text(d, notice), 5))
        said = words(await blocking(lambda: text(browser, notice)))
        assert said == f"No more live updates from “{story['title']}”: blocked.", said
        assert await blocking(lambda: online(browser)) == {}
        reason = await blocking(
            lambda: browser.find_element(By.ID, "post").get_attribute("data-unsubscribed")
        )
        assert reason == "blocked"
        sockets = await blocking(lambda: browser.execute_script(DROP_CONNECTION))
        last = f"following:{user}"  # the last channel but the post the page subscribed to
        await blocking(
            lambda: wait_for(browser, lambda d: d.execute_script(RESUBSCRIBED, sockets, last))
        )
        # Read again (a later task): a subscription that followed the last reply is sent now.
        channels = await blocking(lambda: browser.execute_script(RESUBSCRIBED, sockets, last))
        assert channels == [f"user:{user}", last], channels
    finally:  # the demo graph is shared by the session's tests: leave it as it was
        await rpc(client, "social.unblock", {"user": author, "blocked": user})
        await rpc(client, "posts.delete", {"post": story["id"]})


RECORD_SOCKETS = """
window.recordedSockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.sent = [];
    this.received = [];
    this.addEventListener("message", (event) => this.received.push(event.data));
    window.recordedSockets.push(this);
  }
  send(data) { this.sent.push(data); return super.send(data); }
};
"""
"""Run before the page's scripts: every WebSocket the page opens, with the frames it sent and
received (the listener comes before the page's own ``onmessage``)."""
DROP_CONNECTION = "const s = window.recordedSockets; s.at(-1).close(); return s.length;"
"""Close the page's WebSocket as a network failure would (the page did not ask); how many
sockets it has opened so far."""
RESUBSCRIBED = """
const [before, last] = arguments;
const sockets = window.recordedSockets;
if (sockets.length <= before) return null;
const socket = sockets.at(-1);
const subscribes = socket.sent.map((frame) => JSON.parse(frame))
  .filter((m) => m.method === "subscribe");
const replied = new Set(socket.received.flatMap((frame) => [JSON.parse(frame)].flat())
  .map((m) => m.id));
const lastOne = subscribes.find((m) => m.params.channel === last);
return lastOne && replied.has(lastOne.id) ? subscribes.map((m) => m.params.channel) : null;
"""
"""The channels the page subscribed to on the socket opened after ``before`` sockets, once the
subscription to ``last`` was answered (``null`` until then)."""


async def test_the_listeners_restart_button_keeps_the_dashboard_live(
    server: tuple[str, httpx.AsyncClient], browser: Any
) -> None:
    """Clicking ↻ on ``api`` restarts the listener that serves the page itself: the call is
    answered (no alert), the node shows the restart, and the page's WebSocket, closed 1012,
    reconnects by itself and goes live again on the same address."""
    url, _ = server
    await blocking(lambda: browser.get(f"{url}/dashboard"))
    await blocking(lambda: wait_for(browser, lambda d: text(d, "#connection") == "live"))
    await blocking(lambda: wait_for(browser, lambda d: text(d, '[data-path="api"]')))
    await blocking(
        lambda: browser.execute_script(
            "document.querySelector('[data-path=\"api\"] > button.restart').click();"
        )
    )
    await blocking(
        lambda: wait_for(browser, lambda d: "restarts 1" in text(d, '[data-path="api"]'), 30)
    )
    await blocking(lambda: wait_for(browser, lambda d: text(d, "#connection") == "live", 30))
    await wait_for_next_snapshot(browser)  # fed again over the new WebSocket
