"""Who is calling: principals from API keys, and what they may touch.

Keys come from the settings: ``CONVOY_API_KEYS`` (``principal:key`` pairs, one
user each) and ``CONVOY_ADMIN_KEYS`` (admins; their principal is ``admin``).
A request presents its key in one of four ways, tried in this order:

1. ``Authorization: Bearer <key>`` - API clients, the CLI.
2. on WebSockets, the subprotocol ``convoy.key.<base64url(key)>`` - browsers,
   without the key in any URL (:mod:`gateway.wsauth`; the web console does this).
3. ``?token=<key>`` in the query - browsers on WebSockets, which cannot set
   headers: ``new WebSocket("wss://host/conversation/?token=KEY")``.
4. the cookie ``convoy_key`` (``settings.cookie_name``) - browsers in general:
   set it once (``document.cookie = "convoy_key=KEY; path=/; SameSite=Strict"``)
   and both ``fetch()`` and ``new WebSocket()`` to the gateway carry it, so the
   seed's browser snippet works unchanged.

Because a cookie is sent by the browser whatever page asks, a request that is
authenticated by cookie, or not at all (local mode), is refused (403, or
WebSocket close 4403) when it carries an ``Origin`` other than the gateway's own:
no other web site can drive a user's conversations. In local mode the ``Host``
must also be a loopback name (:func:`is_loopback_host`), which defeats DNS
rebinding: a page whose name an attacker re-points at 127.0.0.1 still sends its
own name as the ``Host``.

Rules: no key configured at all is *local mode* - everyone is the local admin
``local`` (and the server only binds to loopback). Otherwise a request without a
valid key is 401, admin routes answer 403 to users, and a conversation of
another user is 404, exactly like an unknown id (see :func:`can_access`).
Keys are compared in constant time.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection

from gateway.settings import Settings
from gateway.wsauth import key_from_subprotocols

ADMIN = "admin"
LOCAL = "local"
#: A ``Host`` header: a bracketed IPv6 literal or a name / IPv4 literal, then an optional port.
_HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::[0-9]{1,5})?")
_LOCALHOST_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*localhost")


# Verdicts of :func:`is_loopback_host` by header value, for local mode's every request (parsing
# the address cost about a fortieth of a proxied request's CPU). Bounded: a client that sends
# many names only evicts verdicts, each recomputed exactly as before.
@functools.lru_cache(maxsize=256)
def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine's loopback, and nothing else can.

    Accepted, with or without a port: ``localhost`` and any ``*.localhost`` name
    (RFC 6761: reserved, resolved to loopback by browsers and resolvers without
    asking DNS, so no attacker can point one elsewhere or serve a page from one),
    literal IPv4 loopback addresses (127.0.0.0/8, dotted quad) and ``[::1]``.
    Everything else is refused, notably names that merely start like an address
    (``127.0.0.1.nip.io``, ``127.attacker.example``): DNS can re-point those.
    """
    match = _HOST_HEADER.fullmatch(host)
    if match is None:
        return False
    if match["ipv6"] is not None:
        try:
            return ipaddress.IPv6Address(match["ipv6"]).is_loopback
        except ValueError:
            return False
    name = match["name"].lower()
    if _LOCALHOST_NAME.fullmatch(name):
        return True
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Principal:
    name: str
    is_admin: bool = False


class AuthError(Exception):
    """``status`` is 401 (no or wrong key) or 403 (not allowed from there / not admin)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def can_access(principal: Principal, owner: str) -> bool:
    """Admins reach every conversation; users only their own."""
    return principal.is_admin or principal.name == owner


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.local_mode = settings.local_mode
        self._cookie = settings.cookie_name
        self._users = settings.user_keys()
        self._admins = settings.admin_key_set()
        for reserved in (ADMIN, LOCAL):
            if reserved in self._users.values():
                raise ValueError(f"CONVOY_API_KEYS: the principal name {reserved!r} is reserved")

    @property
    def mode(self) -> str:
        if self.local_mode:
            return "local single-user mode (no keys: everyone is the local admin)"
        return f"API keys ({len(self._users)} user keys, {len(self._admins)} admin keys)"

    def _lookup(self, key: str) -> Principal | None:
        found: Principal | None = None
        # Compare against every key, whatever matched, so timing tells nothing.
        for admin_key in self._admins:
            if hmac.compare_digest(admin_key.encode(), key.encode()):
                found = Principal(ADMIN, is_admin=True)
        for user_key, name in self._users.items():
            if hmac.compare_digest(user_key.encode(), key.encode()):
                found = found or Principal(name)
        return found

    @staticmethod
    def _same_origin(conn: HTTPConnection) -> bool:
        origin = conn.headers.get("origin")
        if origin is None:
            return True  # not a browser, or a same-origin GET
        return urlsplit(origin).netloc.lower() == conn.headers.get("host", "").lower()

    def authenticate(self, conn: HTTPConnection) -> Principal:
        """The caller of ``conn``; raises :class:`AuthError`."""
        if self.local_mode:
            host = conn.headers.get("host", "")
            if not is_loopback_host(host):
                raise AuthError(403, f"local mode answers only on loopback names, not {host[:100]!r}")
            if not self._same_origin(conn):
                raise AuthError(403, "cross-origin requests are refused")
            return Principal(LOCAL, is_admin=True)
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        from_cookie = False
        in_subprotocol = (
            key_from_subprotocols(conn.headers.get("sec-websocket-protocol"))
            if conn.scope["type"] == "websocket"
            else None
        )
        if scheme.lower() == "bearer" and value.strip():
            key = value.strip()
        elif in_subprotocol is not None:
            key = in_subprotocol
        elif conn.query_params.get("token"):
            key = conn.query_params["token"]
        elif conn.cookies.get(self._cookie):
            key, from_cookie = conn.cookies[self._cookie], True
        else:
            raise AuthError(401, "an API key is required: Authorization: Bearer <key>")
        principal = self._lookup(key)
        if principal is None:
            raise AuthError(401, "the API key is not valid")
        if from_cookie and not self._same_origin(conn):
            raise AuthError(403, "cross-origin requests with a cookie are refused")
        return principal


def http_error(error: AuthError) -> HTTPException:
    """The HTTP error that answers ``error`` on a route (what :func:`current_principal` raises)."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return HTTPException(error.status, error.detail, headers=headers)


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401/403."""
    authenticator: Authenticator = request.app.state.gateway.auth
    try:
        return authenticator.authenticate(request)
    except AuthError as error:
        raise http_error(error) from None


def admin_principal(principal: Principal = Depends(current_principal)) -> Principal:
    """FastAPI dependency: an admin caller; users get 403."""
    if not principal.is_admin:
        raise HTTPException(403, "this route is for admins")
    return principal
