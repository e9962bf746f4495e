"""The client's one connection to a gateway: HTTP requests, paging, streams and WebSockets.

This is the boundary where httpx and websockets errors become :mod:`gateway.client._exceptions`
exceptions; nothing above it sees a transport exception.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import websockets
from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection

from gateway.client._exceptions import ConvoyError, GatewayUnavailable, error_for_status

M = TypeVar("M", bound=BaseModel)

QueryValue = str | int | float | bool | None | list[str]
Query = Mapping[str, QueryValue]

#: Largest WebSocket frame accepted (an event is bounded by the agent's max_event_bytes).
WS_MAX_FRAME = 64 * 1024 * 1024


def quote_path(path: str) -> str:
    """A workspace path for a URL: ``/``-separated, each segment percent-encoded."""
    return quote(path.strip("/"), safe="/")


def _clean(params: Query | None) -> dict[str, Any]:
    return {k: v for k, v in (params or {}).items() if v is not None}


class Transport:
    """httpx.AsyncClient + WebSocket connections to one gateway, with one API key."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )

    async def aclose(self) -> None:
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
                raise ConvoyError(f"unexpected answer from GET {path}: not a page")
            for item in body["results"]:
                yield parse_model(model, item)
            next_page = body.get("next_page_id")
            if not next_page:
                return
            query["page_id"] = next_page

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, *, params: Query | None = None, headers: Mapping[str, str] | None = None
    ) -> AsyncGenerator[httpx.Response]:
        """A streamed response (2xx guaranteed), closed on exit. Read it with :func:`iter_bytes`."""
        try:
            async with self.http.stream(method, path, params=_clean(params), headers=headers) as response:
                if response.is_error:
                    await response.aread()
                    raise self.error(response, f"{method} {path}")
                yield response
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None

    # --- websockets -------------------------------------------------------------------

    def ws_url(self, path: str, params: Query | None = None) -> str:
        base = self.base_url
        base = "wss://" + base[len("https://") :] if base.startswith("https://") else base
        base = "ws://" + base[len("http://") :] if base.startswith("http://") else base
        query = httpx.QueryParams(_clean(params))
        return f"{base}{path}" + (f"?{query}" if query else "")

    async def connect_ws(self, path: str, params: Query | None = None) -> ClientConnection:
        """Open a WebSocket with the same credentials. Handshake refusals raise the mapped error;
        connection failures raise :class:`GatewayUnavailable`."""
        url = self.ws_url(path, params)
        try:
            return await websockets.connect(
                url,
                additional_headers=self._headers,
                max_size=WS_MAX_FRAME,
                open_timeout=self.timeout,
                close_timeout=5,
            )
        except websockets.InvalidStatus as exc:
            response = exc.response
            detail: Any = None
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                body = json.loads(response.body or b"null")
                detail = body.get("detail") if isinstance(body, dict) else None
            raise error_for_status(response.status_code, detail, f"WS {path}") from None
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            raise GatewayUnavailable(f"cannot open a WebSocket to {self.base_url}: {_why(exc)}") from None

    # --- error mapping ----------------------------------------------------------------

    def error(self, response: httpx.Response, what: str) -> ConvoyError:
        detail: Any = None
        with contextlib.suppress(ValueError, httpx.ResponseNotRead):
            body = response.json()
            detail = body.get("detail") if isinstance(body, dict) else body
        return error_for_status(response.status_code, detail, what)

    def unreachable(self, exc: httpx.HTTPError) -> GatewayUnavailable:
        if isinstance(exc, httpx.TimeoutException):
            return GatewayUnavailable(f"the gateway at {self.base_url} did not answer in time ({_why(exc)})")
        if isinstance(exc, httpx.ConnectError):
            return GatewayUnavailable(f"cannot reach the gateway at {self.base_url}: {_why(exc)}")
        return GatewayUnavailable(f"lost the connection to the gateway at {self.base_url}: {_why(exc)}")


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _retryable(method: str, exc: httpx.HTTPError) -> bool:
    """Worth one more try: the request never left (connect failed), or an idempotent one met a
    pooled keep-alive connection that the network or the server had dropped meanwhile."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    dropped = httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError
    return method.upper() in _IDEMPOTENT and isinstance(exc, dropped)


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def parse_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ConvoyError(
            f"the gateway answered {response.request.method} {response.request.url.path} "
            "with something that is not JSON"
        ) from None


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConvoyError(f"unexpected answer from the gateway (not a {model.__name__}): {exc}") from None


async def iter_bytes(response: httpx.Response, chunk_size: int = 256 * 1024) -> AsyncGenerator[bytes, None]:
    """The body of a streamed response, mapping transport errors mid-stream."""
    try:
        async for chunk in response.aiter_bytes(chunk_size):
            yield chunk
    except httpx.HTTPError as exc:
        raise GatewayUnavailable(f"the download broke off: {_why(exc)}") from None
