"""Templates through the client: list (anyone), build and remove (admins).

A build streams NDJSON (see ``gateway.routes.templates``): each progress line
goes to ``on_progress``; the last line is the template, or an error raised as
the :class:`ConvoyError` its status maps to, like any other answer.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from gateway.client._exceptions import UnexpectedResponse, error_for_status
from gateway.client._transport import Connection, iter_bytes
from gateway.models import TemplateInfo

#: The name a Dockerfile from outside the context takes inside the context's tar.
OUTSIDE_DOCKERFILE = ".convoy.Dockerfile"


def list_templates(conn: Connection) -> AsyncGenerator[TemplateInfo, None]:
    return conn.pages("/template", TemplateInfo, {"limit": 100})


async def build_template(
    conn: Connection,
    name: str,
    *,
    from_image: str | None = None,
    dockerfile: str | Path | None = None,
    context: str | Path | None = None,
    description: str = "",
    on_progress: Callable[[str], None] | None = None,
) -> TemplateInfo:
    query: dict[str, Any] = {"name": name, "description": description}
    body: bytes | None = None
    if dockerfile is not None:
        body, query["dockerfile"] = await asyncio.to_thread(context_tar, Path(dockerfile), context)
    if from_image is not None:
        query["from"] = from_image
    # A build may print nothing for minutes (a long RUN): no read timeout.
    async with conn.stream("POST", "/template", params=query, content=body, unhurried=True) as response:
        pending = b""
        async for chunk in iter_bytes(response):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in filter(None, lines):
                item = json.loads(line)
                if item.get("type") == "progress" and on_progress is not None:
                    on_progress(str(item.get("line", "")))
                elif item.get("type") == "done":
                    return TemplateInfo.model_validate(item["template"])
                elif item.get("type") == "error":
                    raise error_for_status(int(item.get("status", 500)), item.get("detail"), "POST /template")
    raise UnexpectedResponse("the template build ended without saying how (POST /template)")


def context_tar(dockerfile: Path, context: str | Path | None) -> tuple[bytes, str]:
    """The build context (``context``, else the Dockerfile's folder) as a tar, and the Dockerfile's
    path in it (one from outside the context is added as :data:`OUTSIDE_DOCKERFILE`)."""
    root = Path(context) if context is not None else dockerfile.parent
    if not dockerfile.is_file():
        raise FileNotFoundError(f"no Dockerfile {dockerfile}")
    if not root.is_dir():
        raise NotADirectoryError(f"the build context {root} is not a directory")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(root, arcname=".")
        try:
            inside = dockerfile.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            tar.add(dockerfile, arcname=OUTSIDE_DOCKERFILE)
            inside = OUTSIDE_DOCKERFILE
    return buffer.getvalue(), inside


async def remove_template(conn: Connection, name: str) -> None:
    await conn.request("DELETE", f"/template/{name}")
