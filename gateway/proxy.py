"""HTTP proxying of one request to one sandbox agent, streamed both ways.

Contracts:
- Keep-alive connections, pooled per agent, through two clients: bodiless
  ``GET`` and ``DELETE`` of the API's routes (most small requests, and downloads),
  and bodies of a declared length up to :data:`LEAN_BODY_BYTES` (read whole first,
  e.g. a task's creation), through the lean one (:mod:`gateway.agent_http`: a written head and httptools,
  well under half of aiohttp's CPU per request), everything else (bodies,
  previews) through aiohttp's (its C parser costs about a third of httpcore's
  CPU per small request and a quarter per GiB streamed; measured side by side:
  scripts/bench_gateway.py and the report of issue 15). A large answer of a
  known length from the lean client goes from the agent's socket to the
  client's with ``splice`` when the server offers it (:mod:`gateway.splice`:
  no copy in the gateway; about a third of the CPU per GiB). Redirects are never
  followed, bodies never decompressed, no header is added but ``Host`` and the
  agent token; both read answers alike (:mod:`gateway.proxy_answer`).
- A larger (or chunked) request body is streamed upstream as it arrives (``request.stream()``),
  the response body streamed back as it arrives: a 1 GiB upload or download
  never sits in gateway memory. Small answers with a known length are read
  whole (one write instead of a stream: faster for the common case).
- Only routes the gateway declares reach the agent: the caller gives the
  upstream path, built from the route's decoded parameters, re-quoted
  (:class:`gateway.upstream.UpstreamPath`), never from the raw path
  (``/conversation/{id}%2Ffile/status`` is the file ``status``, not the
  agent's ``/status``).
- Hop-by-hop headers are dropped both ways (a ``Connection`` header may not
  drop ``Content-Length``: the body's framing is end-to-end); the caller's
  ``Authorization``, cookies and ``?token=`` (by its decoded name) never reach
  the agent; the agent token is added upstream and never appears in an answer.
  No cookie jar: the shared client refuses every cookie, so nothing of one
  user's exchange reaches another's.
- A path and query longer than ``proxy_max_url_bytes`` is a JSON 414, headers
  beyond ``proxy_max_header_bytes`` a JSON 431, before anything is sent: the
  agent's own HTTP parser has smaller limits than the gateway's.
- Downloads (``file-content``) are attachments, ``nosniff``, with
  ``Content-Security-Policy: sandbox``: nothing from a sandbox renders or runs
  on the gateway's origin, whatever the file's type.
- The upstream response is always closed: at the end, on error, when the
  client disconnects mid-stream, and when the client stops reading for
  ``proxy_stall_timeout`` (the upstream is never pinned by an idle client).
- A preview (:mod:`gateway.preview`) may relax the cookie rules and add answer
  headers, through a :class:`Passage`; the API's routes never do.
- Upstream failures answer JSON: 502 (cannot connect, broken answer),
  504 (no answer within ``proxy_timeout``). Downloads (``file-content``) have
  no read timeout once they started: a large file may take its time. Neither
  have streams of records (:data:`STREAMED_MEDIA_TYPES`, e.g. a task's result
  with ``?wait=true``) once their head arrived: a command may be silent for long.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import aiohttp
import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive
from yarl import URL

from gateway.agent_http import LEAN_METHODS, AgentHttp, raw_request_head
from gateway.agent_transport import AgentConnector, AgentTransport, host_header
from gateway.errors import UpstreamTimeout, UpstreamUnreachable, error_response
from gateway.framing import SMALL_BODY_BYTES, framing_of
from gateway.proxy_answer import UPSTREAM_ERRORS, AiohttpAnswer, UpstreamAnswer, UpstreamResponse
from gateway.runtimes.base import SandboxHandle
from gateway.settings import Settings
from gateway.upstream import upstream_query
from sandbox_agent.protocol import TASK_STREAM_MEDIA_TYPE, TOKEN_HEADER

log = logging.getLogger("convoy.gateway")

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers"}
    | {"transfer-encoding", "upgrade"}
)
_NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "cookie", TOKEN_HEADER.lower()}
_NOT_RETURNED = HOP_BY_HOP | {"set-cookie", "server", "date", TOKEN_HEADER.lower()}
#: End-to-end framing: a ``Connection`` header naming it is not obeyed (h11 would refuse
#: to send a body whose length it was not told).
_FRAMING = frozenset({"content-length"})
#: What a download answers with instead of anything the sandbox says about them.
_DOWNLOAD_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"sandbox"),
)
_NOT_RETURNED_FROM_DOWNLOADS = _NOT_RETURNED | {
    "content-disposition",
    *(name.decode() for name, _ in _DOWNLOAD_HEADERS),
}
_READ_WHOLE_BELOW = 256 * 1024
_TOKEN = TOKEN_HEADER.encode()
#: Request bodies up to this size (declared) go through the lean client, read whole first.
LEAN_BODY_BYTES = SMALL_BODY_BYTES
#: Answers streamed as records arrive: no read timeout on their body (see the module docstring).
STREAMED_MEDIA_TYPES = frozenset({TASK_STREAM_MEDIA_TYPE.encode()})


@dataclass(frozen=True)
class Passage:
    """What of a preview's exchange crosses beyond the API's rules (none of it by default).

    ``cookie``: the ``Cookie`` header sent upstream (the API's rule: none);
    ``query``: the upstream query instead of :func:`upstream_query`'s;
    ``returned_cookie``: which upstream ``Set-Cookie`` values come back (the API's: none);
    ``headers``: added to the answer; an upstream header of the same name (but
    ``Set-Cookie``) is dropped for it.
    """

    cookie: bytes | None = None
    query: str | None = None
    returned_cookie: Callable[[bytes], bool] | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def answer_headers(
        self, upstream: list[tuple[bytes, bytes]], kept: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """``kept`` (the upstream headers that pass the API's rules) as this passage wants them."""
        replaced = {name for name, _ in self.headers if name != b"set-cookie"}
        back = [(n, v) for n, v in kept if n not in replaced]
        if self.returned_cookie is not None:
            wanted = self.returned_cookie
            back += [(b"set-cookie", v) for n, v in upstream if n.lower() == b"set-cookie" and wanted(v)]
        return back + list(self.headers)


def _dropped(headers: list[tuple[bytes, bytes]], always: frozenset[str]) -> frozenset[str]:
    """``always`` plus the headers that a ``Connection`` header names as hop-by-hop."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    return always | (named - _FRAMING) if named else always


def _download_headers(path: str, status: int) -> list[tuple[bytes, bytes]]:
    """No sniffing, no script, no same-origin access; the file's bytes (2xx) as an attachment
    named after the file (its last segment, already percent-encoded as RFC 8187 wants)."""
    if not 200 <= status < 300:
        return list(_DOWNLOAD_HEADERS)  # an error's JSON is shown, not saved under the file's name
    name = path.rsplit("/", 1)[-1]
    disposition = f"attachment; filename*=UTF-8''{name}" if name else "attachment"
    return [(b"content-disposition", disposition.encode()), *_DOWNLOAD_HEADERS]


def _streamed(headers: list[tuple[bytes, bytes]]) -> bool:
    kind = next((v for n, v in headers if n == b"content-type"), b"")
    return kind.split(b";", 1)[0].strip().lower() in STREAMED_MEDIA_TYPES


async def _whole_body(receive: Receive) -> bytes:
    """The request's body, read whole from ``receive`` (what ``Request.body()`` reads, without its
    stream's layers); raises :class:`ClientDisconnect` when the client goes away meanwhile."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header_bytes(headers: list[tuple[bytes, bytes]]) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers)  # "name: value\r\n"


class Proxy:
    """Forwards requests to agents over one connection pool (keep-alive, no
    cookies, no proxy from the environment). ``client`` is an httpx client for
    the gateway's own small calls to agents (``/status``, ``/task``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        timeout = settings.proxy_timeout
        connect = settings.proxy_connect_timeout
        # sock_read bounds each wait for bytes (as httpcore's read timeout did), not the whole answer.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=timeout)
        self._download_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=None)
        self._session = aiohttp.ClientSession(
            connector=AgentConnector(limit=0, keepalive_timeout=30.0, enable_cleanup_closed=False),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,  # a proxy from the environment must never see loopback traffic or tokens
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        self._lean = AgentHttp(connect)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect),
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            trust_env=False,
            transport=AgentTransport(),
        )

    async def forward(
        self,
        request: Request,
        handle: SandboxHandle,
        *,
        path: str,
        download: bool = False,
        activity: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
        passage: Passage | None = None,
    ) -> Response:
        """Send ``request`` to ``path`` (percent-encoded: see :class:`gateway.upstream.UpstreamPath`)
        of the agent of ``handle`` and answer with its answer. ``download``: a file's
        content (no read timeout; sent as an attachment). ``passage``: a preview's rules."""
        raw_headers: list[tuple[bytes, bytes]] = request.scope["headers"]
        dropped = _dropped(raw_headers, _NOT_FORWARDED)
        headers = [(n, v) for n, v in raw_headers if n.decode("latin-1").lower() not in dropped]
        if passage is not None and passage.cookie:
            headers.append((b"cookie", passage.cookie))
        if _header_bytes(headers) > self._settings.proxy_max_header_bytes:
            return error_response(
                431, f"the request's headers exceed {self._settings.proxy_max_header_bytes} bytes"
            )
        query = upstream_query(request) if passage is None or passage.query is None else passage.query
        target = f"{path}{'?' + query if query else ''}"
        if len(target) > self._settings.proxy_max_url_bytes:
            limit = self._settings.proxy_max_url_bytes
            return error_response(414, f"the path and query exceed {limit} bytes")
        # As bytes: the lean client writes them as they came (aiohttp's path decodes them).
        sent = [*headers, (b"Host", host_header(handle.base_url).encode("latin-1"))]
        sent.append((_TOKEN, handle.token.encode("latin-1")))
        try:
            with activity():
                upstream = await self._send(request, handle.base_url, target, sent, download, passage)
        except TimeoutError:
            raise UpstreamTimeout(
                f"the sandbox did not answer within {self._settings.proxy_timeout:g}s"
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            raise UpstreamUnreachable(
                f"the sandbox could not be reached: {error.__class__.__name__}"
            ) from None
        except ClientDisconnect:
            return error_response(400, "the client went away during the request")
        return await self._answer(upstream, path, download, activity, passage)

    async def _send(
        self,
        request: Request,
        base_url: str,
        target: str,
        sent: list[tuple[bytes, bytes]],
        download: bool,
        passage: Passage | None,
    ) -> UpstreamAnswer:
        """The agent's answer, its head arrived: bodiless API requests (downloads too) through the
        lean client (:mod:`gateway.agent_http`), the rest (bodies, previews) through aiohttp."""
        framing = framing_of(request.scope)
        length = framing.length is not None
        chunked = not length and framing.chunked
        if not (length or chunked) and passage is None and request.method in LEAN_METHODS:
            head = raw_request_head(request.method, target, sent)
            # A download has no read timeout: a large file may take its time (module docstring).
            timeout = None if download else self._settings.proxy_timeout
            return await self._lean.request(base_url, head, timeout)
        if passage is None and framing.small:
            # Read whole first (a slow client never holds an agent's connection), sent in one write;
            # not sent twice (a POST is not idempotent). ClientDisconnect: the caller's 400.
            body = await _whole_body(request.receive)
            head = raw_request_head(request.method, target, sent)
            return await self._lean.request(base_url, head + body, self._settings.proxy_timeout, retry=False)
        # Sent as built (encoded=True): yarl would otherwise decode %2E and friends in the path.
        upstream = await self._session.request(
            request.method,
            URL(f"{base_url}{target}", encoded=True),
            headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in sent],
            data=request.stream() if length or chunked else None,
            chunked=True if chunked else None,
            allow_redirects=False,
            timeout=self._download_timeout if download else self._timeout,
        )
        return AiohttpAnswer(upstream)

    async def _answer(
        self,
        upstream: UpstreamAnswer,
        path: str,
        download: bool,
        activity: Callable[[], AbstractContextManager[None]],
        passage: Passage | None,
    ) -> Response:
        """The client's answer to ``upstream``: read whole when small, else streamed."""
        upstream_headers = list(upstream.raw_headers)
        dropped = _dropped(upstream_headers, _NOT_RETURNED_FROM_DOWNLOADS if download else _NOT_RETURNED)
        back = [(n.lower(), v) for n, v in upstream_headers if n.decode("latin-1").lower() not in dropped]
        if download:
            back += _download_headers(path, upstream.status)
        elif _streamed(back):
            # A stream of records: no read timeout once its head arrived (see the module docstring).
            upstream.no_read_timeout()
        if passage is not None:
            back = passage.answer_headers(upstream_headers, back)
        size = next((v for n, v in back if n == b"content-length"), None)
        if not download and size is not None and size.isdigit() and int(size) < _READ_WHOLE_BELOW:
            try:
                body = await upstream.read()
            except UPSTREAM_ERRORS as error:
                raise UpstreamUnreachable(
                    f"the sandbox's answer broke off: {error.__class__.__name__}"
                ) from None
            finally:
                upstream.close()
            response = Response(body, status_code=upstream.status)
            response.raw_headers = back
            return response
        return UpstreamResponse(upstream, back, activity(), self._settings.proxy_stall_timeout)

    async def close(self) -> None:
        self._lean.close()
        await self._session.close()
        await self.client.aclose()
