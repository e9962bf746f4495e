"""What the agent has served lately: the truth every gateway's idle reaper asks for.

A gateway only sees the requests that pass through it; with several gateways in
front of one installation, the agent is the one place that sees them all. The
:class:`ActivityMeter` middleware counts every HTTP request and WebSocket while it
is open, and remembers when the last one began or ended. Not counted: the
gateway's own calls marked with :data:`~sandbox_agent.protocol.PASSIVE_HEADER`
(the firehose's stream, the reaper's questions) and the probes in
:data:`_PROBES`, so that asking whether a sandbox is idle never makes it busy.

Pure ASGI, one header scan per request: it costs what the body limit does.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox_agent.protocol import PASSIVE_HEADER, Activity

_PASSIVE = PASSIVE_HEADER.lower().encode()
#: Paths of the gateway's and the engine's own questions: never activity.
_PROBES = frozenset(
    {
        "/ready",
        "/health",
        "/activity",
        "/status",
        "/last-seq",
        "/forked",
        "/claim",
        "/freeze",
        "/thaw",
        "/workspace-archive",
    }
)


class Meter:
    """What :class:`ActivityMeter` counted; :meth:`report` answers ``GET /activity``."""

    def __init__(self) -> None:
        self.last = time.monotonic()  # the agent's start counts as activity
        self.open = 0

    def report(self) -> Activity:
        idle = 0.0 if self.open else max(0.0, time.monotonic() - self.last)
        return Activity(idle_seconds=idle, connections=self.open)


class ActivityMeter:
    """ASGI middleware counting into ``meter``."""

    def __init__(self, app: ASGIApp, meter: Meter) -> None:
        self.app = app
        self.meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._counts(scope):
            await self.app(scope, receive, send)
            return
        meter = self.meter
        meter.open += 1
        meter.last = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            meter.open -= 1
            meter.last = time.monotonic()

    @staticmethod
    def _counts(scope: Scope) -> bool:
        if scope.get("path") in _PROBES:
            return False
        return not any(name == _PASSIVE for name, _ in scope.get("headers", ()))
