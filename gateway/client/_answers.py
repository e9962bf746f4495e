"""What the client makes of the gateway's answers: JSON and models out of responses and
frames, a streamed body, and an answer of JSON lines (:class:`Records`).

With :mod:`gateway.client._transport` (which sends the requests and holds the WebSockets),
this is where foreign errors become :mod:`gateway.client._exceptions` exceptions: pydantic's
``ValidationError`` for an answer that is not what the gateway promises, httpx's errors and
socket ``OSError`` while an answer is read.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from gateway.client._exceptions import GatewayUnavailable, UnexpectedResponse
from sandbox_agent.contract import TASK_STREAM_MEDIA_TYPE

M = TypeVar("M", bound=BaseModel)


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
            raise GatewayUnavailable(f"the answer broke off: {why(exc)}") from None
        return parse_json(self._response)

    async def lines(self) -> AsyncGenerator[bytes, None]:
        """The non-empty lines of the answer (UTF-8 JSON, without their newline), as they
        arrive. Split here from the body's chunks: the records are parsed from bytes, so the
        text decoding and line splitting layers of httpx would only add work."""
        try:
            async for line in split_lines(self._response.aiter_bytes()):
                yield line
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"the stream broke off: {why(exc)}") from None

    async def aclose(self) -> None:
        with contextlib.suppress(httpx.HTTPError, OSError):
            await self._response.aclose()


async def split_lines(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """The non-empty lines of a body's ``chunks`` (without their newline), as they arrive;
    a last line without its newline too. The chunks' own errors pass through."""
    carry = b""
    async for chunk in chunks:
        *complete, carry = (carry + chunk).split(b"\n") if carry else chunk.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if carry.strip():
        yield carry


def why(exc: BaseException) -> str:
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
        raise GatewayUnavailable(f"the download broke off: {why(exc)}") from None
