"""``convoy port ID PORT``: prints (or opens) a signed link that works without a key; and the
client's ``port_link``."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from client_harness import cli_env, run_cli, start_cli
from gw_helpers import USER_KEYS, Harness, create_ready, keyed

from gateway.client import AsyncConvoyClient
from tests.helpers import free_port

ALICE = USER_KEYS["alice"]


async def _admitted(link: str) -> str:
    """What a keyless GET of ``link`` answers: nobody listens on the port, so an admitted
    request gets the sandbox's 502 (a refused one 401/403/404)."""
    async with httpx.AsyncClient() as client:
        response = await client.get(link)
    return f"{response.status_code} {response.json()['detail']}"


async def test_port_prints_a_link_that_works_without_a_key(harness: Harness, tmp_path: Path) -> None:
    port = free_port()
    async with harness.client(**keyed()) as client:
        cid = await create_ready(client, ALICE)
        url = str(client.base_url)
        printed = await run_cli("port", cid, str(port), "--expires-in", "60", url=url, key=ALICE)
        assert printed.code == 0, printed.stderr
        link = printed.stdout.strip()
        assert urlsplit(link).path == f"/conversation/{cid}/port/{port}/"
        assert (await _admitted(link)).startswith(f"502 nothing listens on port {port}")
        as_json = json.loads((await run_cli("--json", "port", cid, str(port), url=url, key=ALICE)).stdout)
        assert set(as_json) == {"url", "expires_at"}
        # --open hands the link to the browser ($BROWSER here: a script that writes it down).
        opened = tmp_path / "opened.txt"
        browser = tmp_path / "browser"
        browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
        browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
        env = cli_env(url, ALICE) | {"BROWSER": f"{browser} %s"}
        process = await start_cli("port", cid, str(port), "--open", env=env)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err
        assert opened.read_text() == out.decode().strip()
        # Bad input is a usage error, before anything is sent; another user's id is an error.
        bad = await run_cli("port", cid, "70000", url=url, key=ALICE)
        assert bad.code == 2
        theirs = await run_cli("port", cid, str(port), url=url, key=USER_KEYS["bob"])
        assert theirs.code != 0 and "not found" in theirs.stderr
        async with AsyncConvoyClient(url, ALICE) as convoy:
            made = await (await convoy.open(cid)).port_link(port, expires_in=30)
        assert (await _admitted(made.url)).startswith("502 ")
