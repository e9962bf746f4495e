"""The ``convoy`` commands that drive a gateway, each group in its own module."""

from __future__ import annotations

import typer

from gateway.cli import conversations, doctor, files, lifecycle, mcp, ports, shell, tasks, templates


def register(app: typer.Typer) -> None:
    """Add the client commands to ``app``."""
    conversations.register(app)
    tasks.register(app)
    shell.register(app)
    files.register(app)
    ports.register(app)
    lifecycle.register(app)
    doctor.register(app)
    mcp.register(app)  # issue 14
    templates.register(app)
