"""The gateway's Prometheus instruments, one :class:`GatewayMetrics` per app.

Every app has its own ``CollectorRegistry`` (several gateways in one test
process never collide); ``GET /metrics`` (:mod:`gateway.routes.observe`) renders
it. Labels never carry unbounded values: no conversation id, no principal, no raw
path, no free text. Each label's values come from a fixed set named here:

- ``convoy_conversations``: status (every :class:`ConversationStatus`), counted at each scrape
- ``convoy_sandbox_starts_total``: kind (cold, warm), result (ok, failed, cancelled)
- ``convoy_sandbox_start_seconds``: kind; a cold start is the runtime's, a warm one a pool claim
- ``convoy_sandbox_start_failures_total``: reason (:data:`START_FAILURE_REASONS`)
- ``convoy_http_requests_total``, ``convoy_http_request_seconds``: route (the template, or
  ``unmatched``), method (:data:`HTTP_METHODS` or ``other``), status
- ``convoy_websockets_open``, ``convoy_events_relayed_total`` (frames sent to WebSocket
  clients): kind (:data:`WEBSOCKET_KINDS`)
- ``convoy_proxied_bytes_total``: direction (up: to sandboxes, down: to clients)
- ``convoy_conversations_reaped_total``: reason (:data:`REAP_REASONS`);
  ``convoy_conversations_deleted_total``
- ``convoy_pool_size`` (ready spares), ``convoy_pool_claims_total``: result (hit, miss)
- ``convoy_runtime_errors_total``: runtime, operation (a Runtime method), error (a
  :class:`RuntimeFailure` class, :data:`RUNTIME_ERRORS`)

Hooks for parts built elsewhere (the warm pool): :meth:`GatewayMetrics.pool_sized`,
:meth:`GatewayMetrics.pool_claimed` and :meth:`GatewayMetrics.start_finished`
(``kind="warm"``; a pool built in the app's lifespan is handed the app's
``GatewayMetrics``, also at ``app.state.metrics``); until a pool calls them its
series stay at zero. A hit is a spare claimed (:class:`~gateway.metrics_sources.CountedRuntime`),
a miss a create that a spare could take finding none (``Pool.on_miss``, wired by the app).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import EngineError, RuntimeFailure, RuntimeUnavailable, SandboxStartError
from sandbox_agent.protocol import ConversationStatus

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "start_failure_reason"]

#: The exposition's media type (text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

START_KINDS = ("cold", "warm")
START_FAILURE_REASONS = ("timeout", "exited", "runtime_unavailable", "engine", "start_error", "bug")
WEBSOCKET_KINDS = ("follow", "create", "firehose", "terminal", "other")
REAP_REASONS = ("idle", "exited", "oom", "vanished")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RUNTIME_ERRORS = frozenset(
    {"RuntimeFailure", "SandboxStartError", "RuntimeUnavailable", "EngineError", "EngineNotFound"}
)
#: From a few milliseconds (a warm claim) to a slow cold start on a busy machine.
START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


def start_failure_reason(error: BaseException) -> str:
    """The bounded class of a failed start (one of :data:`START_FAILURE_REASONS`)."""
    if isinstance(error, RuntimeUnavailable):
        return "runtime_unavailable"
    if isinstance(error, SandboxStartError):
        text = str(error)
        if "did not answer /ready within" in text:
            return "timeout"
        if "exited before" in text or "ran out of memory" in text:
            return "exited"
        return "start_error"
    if isinstance(error, EngineError):
        return "engine"
    if isinstance(error, RuntimeFailure):
        return "start_error"
    return "bug"


def reap_reason(reason: str | None, *, failed: bool) -> str | None:
    """The bounded class of a conversation the gateway ended itself, from the reason
    in its status notice; ``None`` when it was not reaped (deleted by its user)."""
    text = reason or ""
    if not failed:
        return "idle" if text.startswith("idle for") else None
    if "disappeared" in text:
        return "vanished"
    return "oom" if "OOM" in text or "out of memory" in text else "exited"


class _ConversationsByStatus(Collector):
    """``convoy_conversations{status}``, counted when scraped: always right, never drifts."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[ConversationStatus]] = tuple

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "convoy_conversations", "Conversations the gateway knows, by status", labels=["status"]
        )
        tally = Tally(status.value for status in self.source())
        for status in ConversationStatus:
            family.add_metric([status.value], tally[status.value])
        yield family


class GatewayMetrics:
    """The instruments of one app (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._conversations = _ConversationsByStatus()
        registry.register(self._conversations)
        self.starts = Counter(
            "convoy_sandbox_starts",
            "Sandbox starts by kind and result",
            ["kind", "result"],
            registry=registry,
        )
        self.start_seconds = Histogram(
            "convoy_sandbox_start_seconds",
            "Seconds from asking for a sandbox to its agent answering (successful starts)",
            ["kind"],
            buckets=START_BUCKETS,
            registry=registry,
        )
        self.start_failures = Counter(
            "convoy_sandbox_start_failures", "Failed sandbox starts by reason", ["reason"], registry=registry
        )
        labels = ["route", "method", "status"]
        self.http_requests = Counter(
            "convoy_http_requests", "HTTP requests by route template", labels, registry=registry
        )
        self.http_seconds = Histogram(
            "convoy_http_request_seconds",
            "Seconds from a request's arrival to the end of its answer",
            labels,
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.websockets_open = Gauge(
            "convoy_websockets_open", "Accepted WebSockets now open, by kind", ["kind"], registry=registry
        )
        self.events_relayed = Counter(
            "convoy_events_relayed", "Frames sent to WebSocket clients, by kind", ["kind"], registry=registry
        )
        self.proxied_bytes = Counter(
            "convoy_proxied_bytes",
            "Body bytes of proxied HTTP requests (up) and answers (down)",
            ["direction"],
            registry=registry,
        )
        self.reaped = Counter(
            "convoy_conversations_reaped",
            "Conversations ended by the gateway, by reason",
            ["reason"],
            registry=registry,
        )
        self.deleted = Counter("convoy_conversations_deleted", "Conversations deleted", registry=registry)
        self.pool_size = Gauge("convoy_pool_size", "Ready spare sandboxes in the pool", registry=registry)
        self.pool_claims = Counter(
            "convoy_pool_claims", "Creates that asked the pool, by result", ["result"], registry=registry
        )
        self.runtime_errors = Counter(
            "convoy_runtime_errors",
            "Runtime calls that failed, by runtime, operation and error class",
            ["runtime", "operation", "error"],
            registry=registry,
        )
        self._prime()

    def _prime(self) -> None:
        """Every bounded series exists from the start (at 0): a rate() has a beginning."""
        for kind in START_KINDS:
            self.start_seconds.labels(kind)
            for result in ("ok", "failed", "cancelled"):
                self.starts.labels(kind, result)
        for reason in START_FAILURE_REASONS:
            self.start_failures.labels(reason)
        for kind in WEBSOCKET_KINDS:
            self.websockets_open.labels(kind)
            self.events_relayed.labels(kind)
        for direction in ("up", "down"):
            self.proxied_bytes.labels(direction)
        for reason in REAP_REASONS:
            self.reaped.labels(reason)
        for result in ("hit", "miss"):
            self.pool_claims.labels(result)

    # --- sources and hooks --------------------------------------------------------

    def count_conversations(self, source: Callable[[], Iterable[ConversationStatus]]) -> None:
        """Where ``convoy_conversations`` is read from at each scrape (the statuses of all)."""
        self._conversations.source = source

    def start_finished(
        self, kind: str, *, seconds: float | None = None, error: BaseException | None = None
    ) -> None:
        """One start ended: ``kind`` is ``cold`` (the runtime started a sandbox) or ``warm``
        (claimed from the pool, ``seconds`` the claim). ``error`` None: it succeeded;
        ``asyncio.CancelledError``: cancelled (not a failure); else failed, by its reason."""
        kind = kind if kind in START_KINDS else "cold"
        if error is None:
            self.starts.labels(kind, "ok").inc()
            if seconds is not None:
                self.start_seconds.labels(kind).observe(seconds)
        elif not isinstance(error, Exception):  # CancelledError, GeneratorExit: nobody's fault
            self.starts.labels(kind, "cancelled").inc()
        else:
            self.starts.labels(kind, "failed").inc()
            self.start_failures.labels(start_failure_reason(error)).inc()

    def pool_sized(self, ready: int) -> None:
        """Hook for the pool: it now holds ``ready`` spare sandboxes."""
        self.pool_size.set(ready)

    def pool_claimed(self, hit: bool) -> None:
        """Hook for the pool: a create asked it, and got a spare (hit) or not (miss)."""
        self.pool_claims.labels("hit" if hit else "miss").inc()

    def runtime_failed(self, runtime: str, operation: str, error: RuntimeFailure) -> None:
        name = type(error).__name__
        error_class = name if name in RUNTIME_ERRORS else "RuntimeFailure"
        self.runtime_errors.labels(runtime, operation, error_class).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
