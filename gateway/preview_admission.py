"""Who may reach a preview, and what of a request crosses to it (:mod:`gateway.preview`).

:func:`find_target` tells a preview's request from the API's; :func:`admit`
applies the rules of :mod:`gateway.preview` (link token in the query, API key,
link cookie) from the head alone; :func:`app_cookies` and :func:`without_link`
keep the gateway's key and the link token from the sandbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_plus
from uuid import UUID

from starlette.requests import HTTPConnection
from starlette.types import Scope

from gateway.auth import AuthError
from gateway.context import GatewayContext
from gateway.errors import InvalidInput, LinkRefused, NotFound
from gateway.preview_links import LINK_PARAMETER
from gateway.records import Record
from gateway.settings import Settings

_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
#: ``{port}-{id}.{domain}``, then an optional ``:port`` (the gateway's).
_PREVIEW_HOST = re.compile(
    rf"(?P<port>[0-9]{{1,6}})-(?P<id>{_UUID})\.(?P<domain>[A-Za-z0-9.-]+?)(?::[0-9]{{1,5}})?"
)
_PREVIEW_PATH = re.compile(r"/conversation/(?P<id>[^/]+)/port/(?P<port>[^/]+)(?P<rest>/.*)?", re.DOTALL)


@dataclass(frozen=True)
class Target:
    """One request's preview: which port of which conversation, and where on it."""

    conversation_id: UUID
    port: int
    path: str  # on the sandbox's server, decoded, without its leading "/"
    host_based: bool

    @property
    def cookie_path(self) -> str:
        return "/" if self.host_based else f"/conversation/{self.conversation_id}/port/{self.port}/"


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidInput(f"port must be an integer from 1 to 65535, not {text[:20]!r}")
    return int(text)


def header_value(scope: Scope, wanted: bytes) -> str:
    """The first value of a request header (``""`` without one)."""
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return ""


def _cookies(scope: Scope) -> list[tuple[str, str]]:
    """Every ``name=value`` pair of the request's ``Cookie`` headers, raw (not unquoted)."""
    pairs = []
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, text = part.strip().partition("=")
                if key:
                    pairs.append((key, text))
    return pairs


def find_target(scope: Scope, settings: Settings) -> Target | None:
    """The preview a request is for, ``None`` for the API; raises for a bad id or port."""
    host = _PREVIEW_HOST.fullmatch(header_value(scope, b"host"))
    domains = {"localhost", settings.preview_domain.lower()}
    if host is not None and host["domain"].lower() in domains:
        path = str(scope["path"]).removeprefix("/")
        return Target(UUID(host["id"]), _port(host["port"]), path, host_based=True)
    found = _PREVIEW_PATH.fullmatch(str(scope["path"]))
    if found is None or (scope.get("method") == "POST" and found["rest"] == "/link"):
        return None
    try:
        conversation_id = UUID(found["id"])
    except ValueError:
        raise NotFound(f"conversation {found['id'][:40]} not found") from None
    rest = found["rest"] or ""
    return Target(conversation_id, _port(found["port"]), rest.removeprefix("/"), host_based=False)


@dataclass(frozen=True)
class Admission:
    """A request let through: its conversation, the link cookie to set (a link token came in
    the query), and whether a link (not a key) admitted it."""

    record: Record
    cookie: str | None
    by_link: bool


async def admit(conn: HTTPConnection, context: GatewayContext, target: Target) -> Admission:
    """Who admitted ``conn`` to ``target``; raises :class:`AuthError` or a
    :class:`~gateway.errors.GatewayError` (the rules: :mod:`gateway.preview`)."""
    token = conn.query_params.get(LINK_PARAMETER)
    if token is not None:
        record, left = await _by_link(context, target, token)
        secure = "; Secure" if conn.url.scheme in ("https", "wss") else ""
        cookie = (
            f"{LINK_PARAMETER}={token}; Path={target.cookie_path}; Max-Age={left}; HttpOnly; "
            f"SameSite=Lax{secure}"
        )
        return Admission(record, cookie, by_link=True)
    try:
        principal = context.auth.authenticate(conn)
    except AuthError:
        tokens = [value for name, value in _cookies(conn.scope) if name == LINK_PARAMETER]
        if not tokens:
            raise
        refusal: LinkRefused | None = None
        for candidate in tokens:
            try:
                return Admission((await _by_link(context, target, candidate))[0], None, by_link=True)
            except LinkRefused as error:
                refusal = error
        assert refusal is not None
        raise refusal from None
    return Admission(await context.manager.get(target.conversation_id, principal), None, by_link=False)


async def _by_link(context: GatewayContext, target: Target, token: str) -> tuple[Record, int]:
    """The conversation and the seconds the link has left. Checks the signature (403),
    then the conversation (404), then the expiry (403)."""
    expires_at = context.links.check(token, target.conversation_id, target.port)
    found = context.manager.lookup(target.conversation_id)
    record = found or await context.manager.discover(target.conversation_id)
    if record is None:
        raise NotFound(f"conversation {target.conversation_id} not found")
    return record, context.links.check_expiry(expires_at)


def app_cookies(scope: Scope, settings: Settings, target: Target) -> bytes | None:
    """The ``Cookie`` header the sandbox's server gets: the app's own, on a preview host only."""
    if not target.host_based:
        return None
    ours = {LINK_PARAMETER, settings.cookie_name}
    kept = [f"{name}={value}" for name, value in _cookies(scope) if name not in ours]
    return "; ".join(kept).encode("latin-1") if kept else None


def without_link(query: str) -> str:
    """The query less the link token (by its decoded name, as the query is read)."""
    if LINK_PARAMETER not in query and "%" not in query:
        return query
    return "&".join(
        part for part in query.split("&") if unquote_plus(part.split("=", 1)[0]) != LINK_PARAMETER
    )
