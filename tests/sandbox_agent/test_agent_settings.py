"""Agent settings from the environment, and what the ``convoy-agent`` process leaves unimported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest
from pydantic import ValidationError

from sandbox_agent.settings import AgentSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [key for key in os.environ if key.upper().startswith("CONVOY_")]:
        monkeypatch.delenv(key)


def test_settings_come_from_prefixed_variables_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    conversation_id = uuid4()
    monkeypatch.setenv("CONVOY_AGENT_TOKEN", "secret")
    monkeypatch.setenv("convoy_agent_max_event_bytes", "2048")
    monkeypatch.setenv("CONVOY_AGENT_UNPROTECTED", "1")
    monkeypatch.setenv("CONVOY_AGENT_WORKSPACE", "/srv/ws")
    monkeypatch.setenv("CONVOY_CONVERSATION_ID", str(conversation_id))
    settings = AgentSettings()
    assert settings.token == "secret" and settings.max_event_bytes == 2048 and settings.unprotected
    assert settings.workspace == Path("/srv/ws") and settings.conversation_id == conversation_id


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVOY_AGENT_TOKEN", "from-env")
    monkeypatch.setenv("CONVOY_CONVERSATION_ID", str(uuid4()))
    mine = uuid4()
    settings = AgentSettings(token="given", conversation_id=mine)
    assert settings.token == "given" and settings.conversation_id == mine


def test_the_conversation_id_is_never_read_from_a_prefixed_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVOY_AGENT_CONVERSATION_ID", str(uuid4()))
    monkeypatch.setenv("CONVOY_AGENT_NO_SUCH_KNOB", "1")  # unknown names are ignored
    assert AgentSettings().conversation_id is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("CONVOY_AGENT_MAX_EVENT_BYTES", "12"), ("CONVOY_AGENT_KILL_GRACE_SECONDS", "soon")],
)
def test_bad_values_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("CONVOY_AGENT_").lower()):
        AgentSettings()


def test_the_agent_process_imports_neither_pydantic_v1_nor_pydantic_settings(tmp_path: Path) -> None:
    """What ``convoy-agent`` loads before it serves: every module stays resident for the
    sandbox's life, so these two (2.5 MB between them, unused) must stay out."""
    script = (
        "import sys\n"
        "from sandbox_agent import __main__ as cli\n"
        "cli._without_pydantic_v1()\n"
        "from sandbox_agent.app import create_app\n"
        "from sandbox_agent.settings import AgentSettings\n"
        f"create_app(AgentSettings(workspace={str(tmp_path / 'ws')!r}, state_dir={str(tmp_path / 'st')!r}))\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'pydantic_settings'"
        " or name.startswith('pydantic.v1') and sys.modules[name] is not None))\n"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
