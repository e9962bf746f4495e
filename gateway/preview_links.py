"""Signed preview links: a capability to one port of one conversation until a moment.

A link token is ``{expires_at}.{signature}``: ``expires_at`` in Unix seconds, the
signature an HMAC-SHA256 (key: ``preview_secret``) over the conversation id, the
port and ``expires_at``. So a token opens exactly that port of exactly that
conversation, until then; it needs no storage, any gateway with the same secret
accepts it, and deleting the conversation revokes it (its id is then unknown:
404, whatever the signature). Without a configured secret one is drawn at start:
links then die with the gateway (the log says so once).

Where a link points (:meth:`PreviewLinks.url`):

- host-based (``preview_domain`` set): ``{scheme}://{port}-{id}.{domain}/``; for the
  domain ``localhost`` the scheme and port are the API request's, so
  ``http://8080-{id}.localhost:8000/`` works on a laptop as it is;
- path-based (no domain): ``{API origin}/conversation/{id}/port/{port}/``.

The token rides in the query (``?convoy_preview=...``) of the first visit; the
gateway then sets it as a cookie scoped to that preview (:mod:`gateway.preview`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from uuid import UUID

from starlette.requests import Request

from gateway.errors import LinkRefused
from gateway.settings import Settings

log = logging.getLogger("convoy.gateway")

#: The query parameter and the cookie that carry a link token.
LINK_PARAMETER = "convoy_preview"


class PreviewLinks:
    """Signs and checks link tokens; builds the links (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        if settings.preview_secret:
            self._key = settings.preview_secret.encode()
        else:
            self._key = secrets.token_bytes(32)
            log.info("no CONVOY_PREVIEW_SECRET: preview links are valid on this gateway until it stops")

    def _signature(self, conversation_id: UUID, port: int, expires_at: int) -> str:
        message = f"convoy-preview\0{conversation_id}\0{port}\0{expires_at}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def token(self, conversation_id: UUID, port: int, expires_at: int) -> str:
        return f"{expires_at}.{self._signature(conversation_id, port, expires_at)}"

    def check(self, token: str, conversation_id: UUID, port: int) -> int:
        """The token's ``expires_at`` when it opens ``port`` of ``conversation_id`` now;
        raises :class:`LinkRefused` (403) when it is not valid for them, or expired."""
        stamp, _, signature = token.partition(".")
        if not stamp.isdigit() or len(stamp) > 12:
            raise LinkRefused("the preview link is not valid")
        expected = self._signature(conversation_id, port, int(stamp))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise LinkRefused("the preview link is not valid for this conversation and port")
        return int(stamp)

    @staticmethod
    def check_expiry(expires_at: int) -> int:
        """Seconds the link has left; raises :class:`LinkRefused` once it expired."""
        left = expires_at - int(time.time())
        if left <= 0:
            raise LinkRefused("the preview link expired; ask for a new one")
        return left

    def url(self, request: Request, conversation_id: UUID, port: int, token: str) -> str:
        """The link a browser opens (see the module docstring); ``request`` is the API request
        that asked for it (its origin is the base of path-based links and localhost ones)."""
        query = f"?{LINK_PARAMETER}={token}"
        domain = self._settings.preview_domain.lower()
        if not domain:
            return f"{str(request.base_url).rstrip('/')}/conversation/{conversation_id}/port/{port}/{query}"
        if domain == "localhost":
            scheme, port_suffix = request.url.scheme, f":{request.url.port}" if request.url.port else ""
        else:
            chosen = self._settings.preview_port
            scheme, port_suffix = self._settings.preview_scheme, f":{chosen}" if chosen else ""
        return f"{scheme}://{port}-{conversation_id}.{domain}{port_suffix}/{query}"
