"""Agent fixtures: settings in a temp dir, and an agent served on real uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Served, make_settings, served

from sandbox_agent.settings import AgentSettings


@pytest.fixture
def settings(tmp_path: Path) -> AgentSettings:
    return make_settings(tmp_path)


@pytest.fixture
async def agent(serve: Callable[..., Any], settings: AgentSettings) -> AsyncIterator[Served]:
    async with served(serve, settings) as running:
        yield running
