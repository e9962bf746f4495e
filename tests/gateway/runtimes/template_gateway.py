"""A gateway on the Docker runtime, as the template tests drive it (builds, agents of conversations)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from dockertools import Agent

from gateway.runtimes.docker import DockerRuntime


@dataclass
class Gateway:
    client: httpx.AsyncClient
    base: str
    runtime: DockerRuntime

    async def build(self, name: str, **query: Any) -> list[dict[str, Any]]:
        """``POST /template`` (``content``: the build context); the NDJSON lines, ending "done"."""
        content = query.pop("content", None)
        response = await self.client.post(
            f"{self.base}/template", params={"name": name, **query}, content=content, timeout=600
        )
        assert response.status_code == 200, response.text
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert lines and lines[-1]["type"] == "done", lines
        return lines

    def agent(self, conversation_id: str) -> Agent:
        """The conversation's task API through the gateway."""
        return Agent(self.client, f"{self.base}/conversation/{conversation_id}")
