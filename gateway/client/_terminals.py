"""Terminals (PTYs) of one conversation, and writing to a task's stdin.

An :class:`AsyncTerminal` is a terminal in the sandbox plus, once :meth:`~AsyncTerminal.connect`
is called, one viewer connection to it. The terminal lives on without viewers; the connection
is just a window. It keeps :attr:`~AsyncTerminal.offset`, the offset of the next output byte it
has not received, so a dropped connection resumes with ``connect()`` and misses nothing, repeats
nothing. Closing the connection leaves the terminal running; :meth:`~AsyncTerminal.delete` ends it.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any
from uuid import UUID

from gateway.client._exceptions import UnexpectedResponse, error_for_close
from gateway.client._transport import Connection, WebSocket, parse_json, parse_model
from sandbox_agent.protocol import StdinWritten, Terminal, TerminalExit, TerminalSkipped


class AsyncTerminal:
    """A terminal of a conversation (see the module docstring). ``info`` is what the sandbox
    last said about it."""

    def __init__(self, conn: Connection, conversation_id: UUID, info: Terminal) -> None:
        self._conn = conn
        self.conversation_id = conversation_id
        self.info = info
        #: The offset of the next byte of output this viewer has not received.
        self.offset = 0
        #: Set once the terminal has exited (its exit frame was received).
        self.exit: TerminalExit | None = None
        #: Each time output was no longer kept: ``(requested, resumed at)`` offsets.
        self.skipped: list[tuple[int, int]] = []
        self._ws: WebSocket | None = None

    @property
    def id(self) -> UUID:
        return self.info.id

    @property
    def exit_code(self) -> int | None:
        return self.exit.exit_code if self.exit is not None else None

    @property
    def _path(self) -> str:
        return f"/conversation/{self.conversation_id}/terminal/{self.id}"

    def __repr__(self) -> str:
        return f"<terminal {self.id} {self.info.status.value}>"

    async def __aenter__(self) -> AsyncTerminal:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- the connection -----------------------------------------------------------

    async def connect(self, offset: int | None = None) -> AsyncTerminal:
        """Open a viewer connection: output from ``offset`` (default: :attr:`offset`, so a
        reconnect resumes where the last connection stopped), then live."""
        await self.close()
        if offset is not None:
            self.offset = offset
        self._ws = await self._conn.connect_ws(self._path, {"offset": self.offset})
        return self

    async def send(self, data: bytes | str) -> None:
        """Type ``data`` into the terminal (``str`` as UTF-8)."""
        await self._socket().send_bytes(data.encode() if isinstance(data, str) else data)

    async def resize(self, cols: int, rows: int) -> None:
        """Resize the PTY (its programs get SIGWINCH)."""
        await self._socket().send_json({"type": "resize", "cols": cols, "rows": rows})

    async def recv(self) -> bytes:
        """The next output bytes, waiting for them; ``b""`` once the terminal has exited and
        everything was received (:attr:`exit` says how), or once the connection dropped
        (:meth:`connect` again resumes at :attr:`offset`). A refusal raises its error
        (:class:`NotFound` for an unknown terminal, :class:`ConversationEnded`, ...).
        Control frames are handled here."""
        ws = self._socket()
        async for frame in ws:
            if isinstance(frame, bytes):
                self.offset += len(frame)
                return frame
            control = _control(frame)
            if control.get("type") == "skipped":
                skipped = TerminalSkipped.model_validate(control)
                self.skipped.append((skipped.requested, skipped.offset))
                self.offset = skipped.offset
            elif control.get("type") == "exit":
                self.exit = TerminalExit.model_validate(control)
        if self.exit is None:
            refused = error_for_close(ws.close_code, ws.close_reason, f"WS {self._path}")
            if refused is not None:
                raise refused
        return b""

    async def close(self) -> None:
        """Close the viewer connection (the terminal keeps running)."""
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close()

    def _socket(self) -> WebSocket:
        if self._ws is None:
            raise RuntimeError("the terminal is not connected: call connect() first")
        return self._ws

    # --- the terminal -------------------------------------------------------------

    async def refresh(self) -> Terminal:
        """The terminal as the sandbox sees it now (status, exit code, size, oldest kept offset)."""
        self.info = await self._conn.get_model(self._path, Terminal)
        return self.info

    async def delete(self) -> Terminal:
        """End the terminal (every process of its session) and forget it; answers how it ended."""
        await self.close()
        response = await self._conn.request("DELETE", self._path)
        self.info = parse_model(Terminal, parse_json(response))
        return self.info


def _control(frame: str) -> dict[str, Any]:
    try:
        control = json.loads(frame)
    except ValueError:
        raise UnexpectedResponse("the terminal sent a text frame that is not JSON") from None
    if not isinstance(control, dict):
        raise UnexpectedResponse("the terminal sent a text frame that is not a JSON object")
    return control


async def create_terminal(
    conn: Connection, conversation_id: UUID, cols: int, rows: int, command: str | list[str] | None
) -> AsyncTerminal:
    body = {"cols": cols, "rows": rows, "command": command}
    response = await conn.request("POST", f"/conversation/{conversation_id}/terminal", json_body=body)
    return AsyncTerminal(conn, conversation_id, parse_model(Terminal, parse_json(response)))


async def write_stdin(
    conn: Connection, conversation_id: UUID, task_id: UUID | str, data: bytes | str, eof: bool
) -> StdinWritten:
    """``POST .../task/{task_id}/stdin`` (``str`` as UTF-8)."""
    response = await conn.request(
        "POST",
        f"/conversation/{conversation_id}/task/{task_id}/stdin",
        params={"eof": eof},
        content=data.encode() if isinstance(data, str) else data,
        headers={"Content-Type": "application/octet-stream"},
    )
    return parse_model(StdinWritten, parse_json(response))
