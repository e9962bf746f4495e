"""A spare warms its first command's paths before it answers ready (sandbox_agent.warming):
what a first command would import is imported, and nothing of a conversation is touched (no
event, no file, no task): the claimed conversation's history still starts with its READY."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_helpers import make_settings, served
from test_agent_spare import SECRET, claim_body

from sandbox_agent.protocol import CLAIM_SECRET_HEADER, TOKEN_HEADER

#: Modules a first streamed Shell command imports in an agent that never ran one.
FIRST_USE = ("sandbox_agent.runnables.shell", "sandbox_agent.runnables.python", "anyio._backends._asyncio")

_PROBE = """
import asyncio, json, sys
import sandbox_agent.agent  # what an agent has imported when it starts
wanted = json.loads(sys.argv[1])
before = [name for name in wanted if name in sys.modules]
from sandbox_agent import warming
asyncio.run(warming.warm())
print(json.dumps({"before": before, "after": [name for name in wanted if name in sys.modules]}))
"""


def test_warming_imports_what_a_first_command_would(tmp_path: Path) -> None:
    # A fresh interpreter: the test process has imported everything long ago.
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(FIRST_USE)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    seen = json.loads(probe.stdout)
    assert seen == {"before": [], "after": list(FIRST_USE)}, probe.stderr
    assert list(tmp_path.iterdir()) == []  # it wrote nothing where it ran


async def test_a_warmed_spare_has_touched_no_conversation(serve: Callable[..., Any], tmp_path: Path) -> None:
    settings = make_settings(tmp_path, token=SECRET, spare=True, claim_file=tmp_path / "claim.json")
    async with served(serve, settings) as agent:
        assert (await agent.client.get("/ready")).json()["spare"] is True
        assert list((tmp_path / "workspace").iterdir()) == []
        body = claim_body()
        claimed = await agent.client.post("/claim", json=body, headers={CLAIM_SECRET_HEADER: SECRET})
        assert claimed.status_code == 201, claimed.text
        token = {TOKEN_HEADER: body["token"]}
        events = (await agent.client.get("/event", headers=token)).json()["results"]
        assert [(e["seq"], e["detail"]["type"], e["detail"]["status"]) for e in events] == [
            (1, "ConversationStatusUpdate", "READY")
        ]
        assert (await agent.client.get("/task", headers=token)).json()["results"] == []
