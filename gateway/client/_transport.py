"""The client's one connection to a gateway: HTTP requests, paging, streams and WebSockets.

This is the boundary where foreign errors become :mod:`gateway.client._exceptions` exceptions:
httpx's and websockets' errors, socket ``OSError`` and timeouts, and pydantic's
``ValidationError`` for an answer that is not what the gateway promises. No other client
module imports websockets or catches a transport exception.

HTTP goes through an ``httpx.AsyncClient`` whose transport can be replaced (``transport=``:
``httpx.MockTransport``, ``httpx.ASGITransport``); WebSockets always dial ``base_url``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx
import websockets
from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection

from gateway.client._exceptions import (
    ConvoyError,
    GatewayUnavailable,
    InvalidURL,
    UnexpectedResponse,
    WebSocketClosed,
    error_for_status,
)
from sandbox_agent.contract import TASK_STREAM_MEDIA_TYPE

M = TypeVar("M", bound=BaseModel)

QueryValue = str | int | float | bool | None | list[str]
Query = Mapping[str, QueryValue]

#: Largest WebSocket frame accepted (an event is bounded by the agent's max_event_bytes).
WS_MAX_FRAME = 64 * 1024 * 1024


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

    async def open_records(self, method: str, path: str, *, params: Query | None, json_body: Any) -> Records:
        """Send a request whose answer may be a stream of JSON lines (2xx guaranteed, else the
        mapped error); the answer's body is read with no read timeout (a command may be silent
        for long). Close the :class:`Records` when done."""
        request = self.http.build_request(method, path, params=_clean(params), json=json_body)
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
        url = self.ws_url(path, params)
        try:
            connection = await websockets.connect(
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
        return WebSocket(connection, f"WS {path}")

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


class Records:
    """An open answer of JSON lines (or a plain JSON answer, from a gateway without streams).
    A transport failure while reading raises :class:`GatewayUnavailable`."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def streamed(self) -> bool:
        """Whether the answer is a stream of records (else one JSON document: :meth:`json`)."""
        kind: str = self._response.headers.get("content-type", "")
        return kind.split(";", 1)[0].strip() == TASK_STREAM_MEDIA_TYPE

    async def json(self) -> Any:
        try:
            await self._response.aread()
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"the answer broke off: {_why(exc)}") from None
        return parse_json(self._response)

    async def lines(self) -> AsyncGenerator[str, None]:
        """The non-empty lines of the answer, as they arrive."""
        try:
            async for line in self._response.aiter_lines():
                if line:
                    yield line
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"the stream broke off: {_why(exc)}") from None

    async def aclose(self) -> None:
        with contextlib.suppress(httpx.HTTPError, OSError):
            await self._response.aclose()


class WebSocket:
    """One open WebSocket to the gateway: text or JSON frames out, frames in (a binary one as bytes).

    A send or receive on a closed connection raises :class:`WebSocketClosed`; ``async for``
    yields frames until the connection closes, however it closes, and then ends:
    :attr:`close_code` and :attr:`close_reason` say why. Use as ``async with`` or call :meth:`close`.
    """

    def __init__(self, connection: ClientConnection, what: str) -> None:
        self._ws = connection
        self._what = what

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006 when it dropped without one); ``None`` while open."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str:
        return self._ws.close_reason or ""

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def send_text(self, text: str) -> None:
        await self._send(text)

    async def send_json(self, value: Any) -> None:
        await self._send(json.dumps(value))

    async def send_bytes(self, data: bytes) -> None:
        """A binary frame."""
        await self._send(data)

    async def recv(self) -> str | bytes:
        """The next frame: ``str`` for a text frame, ``bytes`` for a binary one."""
        try:
            return await self._ws.recv()
        except websockets.ConnectionClosed:
            raise self._closed() from None

    async def recv_json(self) -> Any:
        frame = await self.recv()
        try:
            return json.loads(frame)
        except ValueError:
            raise UnexpectedResponse(f"{self._what}: a frame that is not JSON") from None

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except websockets.ConnectionClosed:
            raise StopAsyncIteration from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (a no-op when it is closed already); never raises for a broken one."""
        with contextlib.suppress(websockets.WebSocketException, OSError):
            await self._ws.close(code, reason)

    async def _send(self, message: str | bytes) -> None:
        try:
            await self._ws.send(message)
        except websockets.ConnectionClosed:
            raise self._closed() from None

    def _closed(self) -> WebSocketClosed:
        code, reason = self.close_code, self.close_reason
        error = WebSocketClosed(
            f"{self._what} closed ({code}{': ' + reason if reason else ''})", code=code, reason=reason
        )
        error.request = self._what
        return error


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


# --- answers into models --------------------------------------------------------------


def parse_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UnexpectedResponse(
            f"the gateway answered {response.request.method} {response.request.url.path} "
            "with something that is not JSON"
        ) from None


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UnexpectedResponse(
            f"unexpected answer from the gateway (not a {model.__name__}): {exc}"
        ) from None


def parse_list(model: type[M], data: Any) -> list[M]:
    try:
        return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise UnexpectedResponse(
            f"unexpected answer from the gateway (not a list of {model.__name__}): {exc}"
        ) from None


def parse_frame(model: type[M], frame: str | bytes) -> M:
    """A WebSocket frame (JSON text) as ``model``."""
    try:
        return model.model_validate_json(frame)
    except ValidationError as exc:
        raise UnexpectedResponse(f"the gateway sent a frame that is not a {model.__name__}: {exc}") from None


async def iter_bytes(response: httpx.Response, chunk_size: int = 256 * 1024) -> AsyncGenerator[bytes, None]:
    """The body of a streamed response, mapping transport errors mid-stream."""
    try:
        async for chunk in response.aiter_bytes(chunk_size):
            yield chunk
    except httpx.HTTPError as exc:
        raise GatewayUnavailable(f"the download broke off: {_why(exc)}") from None
