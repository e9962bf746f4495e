"""The ``convoy`` commands that drive a gateway, each group in its own module."""

from __future__ import annotations

import typer

from gateway import cli_conversations, cli_files, cli_tasks


def register(app: typer.Typer) -> None:
    """Add the client commands to ``app``."""
    cli_conversations.register(app)
    cli_tasks.register(app)
    cli_files.register(app)
