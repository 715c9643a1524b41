"""The pages' routes: static files, and the token routes guarded like ``/rpc``."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from auth.tokens import verify_token
from tests.test_client import serving


async def test_pages_and_static_files_are_served(tmp_path: Path) -> None:
    """/dashboard and /demo are HTML pages whose scripts and styles load."""
    with trio.fail_after(30):
        async with serving(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as client:
            for page in ("/dashboard", "/demo"):
                response = await client.get(page)
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/html")
            for asset in ("starling.js", "dashboard.js", "demo.js", "starling.css"):
                assert (await client.get(f"/static/{asset}")).status_code == 200
            assert (await client.get("/static/nothing.js")).status_code == 404


async def test_token_routes_follow_the_api_key(tmp_path: Path) -> None:
    """With an API key, the token routes refuse callers without it (401) and give the
    dashboard an operator's token and the demo a user's token with it; a bad user id is 400."""
    with trio.fail_after(30):
        async with (
            serving(tmp_path, api_key="k3y") as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            assert (await client.get("/dashboard/token")).status_code == 401
            assert (await client.get("/demo/token?user=alice")).status_code == 401
            key = {"Authorization": "Bearer k3y"}
            token = (await client.get("/dashboard/token", headers=key)).json()["token"]
            assert verify_token(server.secret, token).operator is True
            token = (await client.get("/demo/token?user=alice", headers=key)).json()["token"]
            claims = verify_token(server.secret, token)
            assert (claims.user, claims.operator) == ("alice", False)
            bad = await client.get("/demo/token?user=no%20spaces", headers=key)
            assert bad.status_code == 400
