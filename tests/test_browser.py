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

import os
import shutil
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


async def test_dashboard_shows_the_live_tree_and_charts(
    server: tuple[str, httpx.AsyncClient], browser: Any, screenshots: Path
) -> None:
    """The tree renders with every subtree running, the charts fill, the numbers move while
    events flow, and an operator restart shows on the node at once."""
    url, client = server
    await blocking(lambda: browser.get(f"{url}/dashboard"))
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
    # Events flow: the "events/s in" figure and the throughput chart must move.
    async with trio.open_nursery() as nursery:

        async def produce() -> None:
            for n in range(60):
                await rpc(client, "realtime.publish", {"channel": "post:dash", "data": {"n": n}})
                await trio.sleep(0.05)

        nursery.start_soon(produce)
        readings = set()
        with trio.fail_after(20):
            while len(readings - {"—", "0"}) < 2:
                readings.add(await blocking(lambda: text(browser, "#rate-events_in")))
                await trio.sleep(0.3)
    points = int(
        await blocking(lambda: browser.execute_script("return document.body.dataset.points"))
    )
    assert points >= 2
    assert await blocking(lambda: text(browser, "#latency")) != "— / — / — ms"
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


async def test_demo_page_shows_a_ranked_feed_and_live_comments(
    server: tuple[str, httpx.AsyncClient], browser: Any, screenshots: Path
) -> None:
    """A user's ranked feed renders with reasons; on an open post, a comment published through
    JSON-RPC appears within a second, and a followed user's recommendation reads "a friend
    just recommended this"."""
    url, client = server
    user = "0"
    following = (await rpc(client, "social.following", {"user": user, "limit": 10}))["users"]
    assert following
    feed = await rpc(client, "feed.get", {"user": user, "limit": 5})
    post = feed["items"][0]["post"]
    await blocking(lambda: browser.get(f"{url}/demo?user={user}&post={post}"))
    await blocking(lambda: wait_for(browser, lambda d: text(d, "#connection") == f"live as {user}"))
    await blocking(
        lambda: wait_for(
            browser,
            lambda d: d.find_element(By.ID, "post").get_attribute("data-subscribed") is not None,
        )
    )
    shown = await blocking(
        lambda: [
            item.get_attribute("data-post")
            for item in browser.find_elements(By.CSS_SELECTOR, "#feed .feed-item")
        ]
    )
    assert shown[:5] == [item["post"] for item in feed["items"]]  # the page asks for 20
    reasons = await blocking(lambda: [text(browser, "#feed .feed-item .reasons")])
    assert reasons[0]
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
    await blocking(lambda: browser.save_screenshot(str(screenshots / "demo.png")))
