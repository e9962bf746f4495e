"""The client's one connection to a gateway: HTTP requests, paging, streams and WebSockets.

With :mod:`gateway.client._answers` (what is made of the answers: models, streamed bodies,
:class:`Records`) and :mod:`gateway.client._websocket` (the one module that imports
websockets), this is the boundary where foreign errors become :mod:`gateway.client._exceptions`
exceptions: httpx's and websockets' errors, socket ``OSError`` and timeouts, and pydantic's
``ValidationError`` for an answer that is not what the gateway promises. No other client
module catches a transport exception. What those two modules define that the others use is
importable from here too (its former home).

HTTP goes through an ``httpx.AsyncClient`` whose transport can be replaced (``transport=``:
``httpx.MockTransport``, ``httpx.ASGITransport``); WebSockets always dial ``base_url``.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx

from gateway.client._answers import (
    M,
    Records,
    iter_bytes,
    parse_frame,
    parse_json,
    parse_list,
    parse_model,
    why,
)
from gateway.client._exceptions import (
    ConvoyError,
    GatewayUnavailable,
    InvalidURL,
    UnexpectedResponse,
    error_for_status,
)
from gateway.client._lane import Lane, LaneAnswer, frame_request
from gateway.client._websocket import WebSocket, open_websocket

__all__ = [
    "Connection",
    "Query",
    "QueryValue",
    "Records",
    "WebSocket",
    "iter_bytes",
    "parse_frame",
    "parse_json",
    "parse_list",
    "parse_model",
]

QueryValue = str | int | float | bool | None | list[str]
Query = Mapping[str, QueryValue]


def _clean(params: Query | None) -> dict[str, Any]:
    return {k: v for k, v in (params or {}).items() if v is not None}


def _gateway_url(base_url: str) -> str:
    """``base_url`` without its trailing slash, if it is an http(s) URL with a host."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise InvalidURL(f"not a gateway URL (want http://host:port or https://...): {base_url!r}")
    return base_url.rstrip("/")


#: URLs :meth:`Connection.url` keeps parsed.
_URLS_KEPT = 256


class Connection:
    """An ``httpx.AsyncClient`` and WebSocket connections to one gateway, with one API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = _gateway_url(base_url)
        self.api_key = api_key
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )
        self._urls: dict[tuple[str, tuple[tuple[str, Any], ...]], httpx.URL] = {}
        self._lane = _lane_for(self.base_url, transport, min(timeout, 10.0))

    def url(self, path: str, params: Query | None = None) -> httpx.URL:
        """The absolute URL of ``path`` with ``params``, parsed once per (path, params): httpx
        parses a relative URL three times per request (merge with the base, copy, add the
        query), a measurable share of a short command's CPU in the client."""
        clean = _clean(params)
        key = (path, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in clean.items()))
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= _URLS_KEPT:
                self._urls.clear()  # a bound, not an LRU: paths carry ids, most are used once
            url = self._urls[key] = httpx.URL(self.base_url + path, params=clean or None)
        return url

    async def aclose(self) -> None:
        if self._lane is not None:
            self._lane.close()
        await self.http.aclose()

    # --- plain requests ---------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Query | None = None,
        json_body: Any = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request; answer the response when 2xx, else raise the mapped :class:`ConvoyError`."""
        attempts = 1 if content is not None else 2  # a streamed body cannot be sent twice
        for attempt in range(1, attempts + 1):
            try:
                response = await self.http.request(
                    method, path, params=_clean(params), json=json_body, content=content, headers=headers
                )
                break
            except httpx.HTTPError as exc:
                if attempt < attempts and _retryable(method, exc):
                    continue
                raise self.unreachable(exc) from None
        if response.is_error:
            raise self.error(response, f"{method} {path}")
        return response

    async def get_json(self, path: str, params: Query | None = None) -> Any:
        return parse_json(await self.request("GET", path, params=params))

    async def get_model(self, path: str, model: type[M], params: Query | None = None) -> M:
        return parse_model(model, await self.get_json(path, params))

    async def pages(self, path: str, model: type[M], params: Query | None = None) -> AsyncGenerator[M, None]:
        """Every item of a paged list, following ``next_page_id`` to the end."""
        query = dict(_clean(params))
        while True:
            body = await self.get_json(path, query)
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise UnexpectedResponse(f"unexpected answer from GET {path}: not a page")
            for item in body["results"]:
                yield parse_model(model, item)
            next_page = body.get("next_page_id")
            if not next_page:
                return
            query["page_id"] = next_page

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Query | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        unhurried: bool = False,
    ) -> AsyncGenerator[httpx.Response]:
        """A streamed response (2xx guaranteed), closed on exit. Read it with :func:`iter_bytes`.
        ``content``: the request's body; ``unhurried``: no read timeout (an answer that may be
        silent for minutes, like a template's build)."""
        timeout = httpx.Timeout(None, connect=10.0) if unhurried else httpx.USE_CLIENT_DEFAULT
        try:
            async with self.http.stream(
                method,
                path,
                params=_clean(params),
                headers=headers,
                content=content,
                timeout=timeout,
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise self.error(response, f"{method} {path}")
                yield response
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None

    async def open_records(
        self, method: str, path: str, *, params: Query | None, json_body: Any
    ) -> Records | LaneAnswer:
        """Send a request whose answer may be a stream of JSON lines (2xx guaranteed, else the
        mapped error); the answer's body is read with no read timeout (a command may be silent
        for long). Close the answer when done. Plain http goes through the lean lane
        (:mod:`gateway.client._lane`) unless the cookie jar holds cookies to send."""
        if self._lane is not None and not self.http.cookies:
            return await self._open_lane(method, path, params, json_body)
        request = self.http.build_request(method, self.url(path, params), json=json_body)
        request.extensions["timeout"] = httpx.Timeout(self.timeout, read=None).as_dict()
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None
        if response.is_error:
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                raise self.unreachable(exc) from None
            finally:
                await response.aclose()
            raise self.error(response, f"{method} {path}")
        return Records(response)

    async def _open_lane(self, method: str, path: str, params: Query | None, json_body: Any) -> LaneAnswer:
        assert self._lane is not None
        url = self.url(path, params)
        body = json.dumps(json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        # The client's own headers (API key, user agent, any set on it), as httpx would send them.
        head = [(b"host", url.netloc), *((n, v) for n, v in self.http.headers.raw if n.lower() not in _OWN)]
        head += _LANE_HEADERS
        wire = await self._lane.send(frame_request(method, url.raw_path, head, body))
        answer = LaneAnswer(self._lane, wire, method, url)
        try:
            await answer.head(self.http.cookies)
            if answer.status >= 400:
                raise self.error(await answer.read(), f"{method} {path}")
        except BaseException:
            await answer.aclose()
            raise
        return answer

    # --- websockets -------------------------------------------------------------------

    def ws_url(self, path: str, params: Query | None = None) -> str:
        base = self.base_url
        base = "wss://" + base[len("https://") :] if base.startswith("https://") else base
        base = "ws://" + base[len("http://") :] if base.startswith("http://") else base
        query = httpx.QueryParams(_clean(params))
        return f"{base}{path}" + (f"?{query}" if query else "")

    async def connect_ws(self, path: str, params: Query | None = None) -> WebSocket:
        """Open a WebSocket with the same credentials. Handshake refusals raise the mapped error;
        connection failures raise :class:`GatewayUnavailable`."""
        return await open_websocket(
            self.ws_url(path, params), self._headers, self.timeout, path, self.base_url
        )

    # --- error mapping ----------------------------------------------------------------

    def error(self, response: httpx.Response, what: str) -> ConvoyError:
        detail: Any = None
        with contextlib.suppress(ValueError, httpx.ResponseNotRead):
            body = response.json()
            detail = body.get("detail") if isinstance(body, dict) else body
        return error_for_status(response.status_code, detail, what)

    def unreachable(self, exc: httpx.HTTPError) -> GatewayUnavailable:
        if isinstance(exc, httpx.TimeoutException):
            return GatewayUnavailable(f"the gateway at {self.base_url} did not answer in time ({why(exc)})")
        if isinstance(exc, httpx.ConnectError):
            return GatewayUnavailable(f"cannot reach the gateway at {self.base_url}: {why(exc)}")
        return GatewayUnavailable(f"lost the connection to the gateway at {self.base_url}: {why(exc)}")


#: Headers the lane sets itself (the body's, and no compression of a live stream).
_OWN = frozenset({b"host", b"accept-encoding", b"content-length", b"content-type", b"transfer-encoding"})
_LANE_HEADERS = [(b"accept-encoding", b"identity"), (b"content-type", b"application/json")]


def _lane_for(
    base_url: str, transport: httpx.AsyncBaseTransport | None, connect_timeout: float
) -> Lane | None:
    """The lean lane for plain http to the gateway itself; None (the httpx path) for https, a
    custom transport or a proxy in the environment (httpx's ``trust_env``)."""
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    if transport is not None or url.scheme != "http" or "http" in proxies or "all" in proxies:
        return None
    return Lane(base_url, url.host, url.port or 80, connect_timeout)


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _retryable(method: str, exc: httpx.HTTPError) -> bool:
    """Worth one more try: the request never left (connect failed), or an idempotent one met a
    pooled keep-alive connection that the network or the server had dropped meanwhile."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    dropped = httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError
    return method.upper() in _IDEMPOTENT and isinstance(exc, dropped)
