"""The ``convoy`` commands that drive a gateway, each group in its own module."""

from __future__ import annotations

import typer

from gateway.cli import conversations, doctor, files, tasks, templates


def register(app: typer.Typer) -> None:
    """Add the client commands to ``app``."""
    conversations.register(app)
    tasks.register(app)
    files.register(app)
    doctor.register(app)
    templates.register(app)
