"""Preview ports: the link route, and the document of the preview routes.

``POST /conversation/{id}/port/{port}/link`` signs a link (:mod:`gateway.preview_links`).
The preview routes themselves (``/conversation/{id}/port/{port}/{path}``, every
method) are served by :class:`gateway.preview.PreviewLayer` before any route
is matched; they are declared here, from the agent's declarations
(:data:`sandbox_agent.routes.proxied.PREVIEW_ROUTER`), for the OpenAPI document
only: their bodies never run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request
from fastapi.routing import APIRoute

from gateway.auth import Principal, current_principal
from gateway.context import context_of
from gateway.errors import InvalidInput
from gateway.models import ErrorBody, PortLink, PortLinkCreate
from gateway.routes.proxied import PREFIX, redeclare
from sandbox_agent.routes.proxied import PREVIEW_ROUTER

router = APIRouter(prefix=PREFIX)

_Port = Path(ge=1, le=65535, description="A TCP port a server listens on inside the sandbox (127.0.0.1)")
#: What a preview answers of its own, besides the gateway's errors on every proxied route.
_PREVIEW_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "The signed link is not valid for this port, or expired"},
    422: {"model": ErrorBody, "description": "The port is not an integer from 1 to 65535"},
}


@router.post(
    "/port/{port}/link",
    response_model=PortLink,
    responses={
        401: {"model": ErrorBody, "description": "No or wrong API key"},
        404: {"model": ErrorBody, "description": "Unknown conversation (or another user's)"},
        422: {"model": ErrorBody, "description": "A bad port, or expires_in beyond the gateway's maximum"},
    },
    summary="A signed link that opens a port without a key",
    tags=["ports"],
)
async def create_port_link(
    request: Request,
    conversation_id: UUID,
    port: int = _Port,
    body: PortLinkCreate | None = None,
    principal: Principal = Depends(current_principal),
) -> PortLink:
    """A URL that opens the server on ``port`` in the sandbox without a key, in a browser
    or for a colleague, until ``expires_at``; deleting the conversation revokes it.

    Host-based (``{port}-{id}.<CONVOY_PREVIEW_DOMAIN>``, its own origin) when the gateway
    has a preview domain, else path-based on this origin (``/conversation/{id}/port/{port}/``,
    served with ``Content-Security-Policy: sandbox``, no cookie crossing). The link's
    ``convoy_preview`` query parameter admits the first visit, which sets a cookie of that
    name scoped to the preview for its sub-resources. The previews also admit API keys
    (the owner's or an admin's); neither the key nor the link reaches the sandbox."""
    context = context_of(request)
    wanted = (body or PortLinkCreate()).expires_in
    longest = context.settings.preview_link_max_ttl
    if wanted > longest:
        raise InvalidInput(f"expires_in may be at most {longest} seconds")
    record = await context.manager.get(conversation_id, principal)
    expires_at = int(datetime.now(UTC).timestamp()) + wanted
    token = context.links.token(record.id, port, expires_at)
    return PortLink(
        url=context.links.url(request, record.id, port, token),
        expires_at=datetime.fromtimestamp(expires_at, UTC),
    )


def _declare_previews() -> None:
    for route in PREVIEW_ROUTER.routes:
        assert isinstance(route, APIRoute), f"not an HTTP route: {route!r}"
        arguments = redeclare(route)
        arguments["path"] = route.path
        arguments["responses"] = {**arguments["responses"], **_PREVIEW_ERRORS}
        router.add_api_route(**arguments)


_declare_previews()  # after the link route: POST .../port/{port}/link is that route, not a preview
