"""Where lifecycle metrics come from, one piece at a time: the counted runtime (errors by
runtime, operation and class), the status watcher (why conversations ended), and the hooks
the warm pool calls."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from gw_helpers import base_settings
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import RuntimeUnavailable
from gateway.metrics import GatewayMetrics
from gateway.metrics_sources import CountedRuntime, start_watching
from gateway.runtimes.docker_sandboxes import DockerSandboxes
from gateway.status import StatusBus, StatusNotice
from sandbox_agent.protocol import ConversationStatus
from tests.gateway.runtimes.fake_engine import FakeEngine
from tests.helpers import eventually


def samples(metrics: GatewayMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, frozenset(labels.items())), 0.0)


async def test_runtime_failures_are_counted_by_runtime_operation_and_class(tmp_path: Path) -> None:
    engine = FakeEngine()
    settings = base_settings(tmp_path, runtime="docker", install="fake", docker_relayless=False)
    metrics = GatewayMetrics()
    runtime = CountedRuntime(DockerSandboxes(settings, engine, image_version="t", reach="published"), metrics)
    assert runtime.name == "docker" and runtime.enforces_egress
    assert await runtime.list() == []
    engine.down = True
    for call in (runtime.list(), runtime.find(uuid.uuid4()), runtime.cleanup_orphans()):
        try:
            await call
        except RuntimeUnavailable:
            pass
        else:
            raise AssertionError("an engine that is down answered")
    for operation in ("list", "find", "cleanup_orphans"):
        labels = {"runtime": "docker", "operation": operation, "error": "RuntimeUnavailable"}
        assert value(metrics, "convoy_runtime_errors_total", **labels) == 1
    assert runtime.reach == "published"  # what it does not wrap is the runtime's own


async def test_ended_conversations_are_counted_by_why() -> None:
    bus, metrics = StatusBus(), GatewayMetrics()
    watcher = start_watching(bus, metrics)
    await asyncio.sleep(0)  # subscribed
    ready = [uuid.uuid4() for _ in range(5)]
    for cid in ready:
        bus.publish(StatusNotice(cid, ConversationStatus.READY, fresh=True))
    stopping, error = ConversationStatus.STOPPING, ConversationStatus.ERROR
    bus.publish(StatusNotice(ready[0], stopping, reason="idle for 30s: no request", ended=True))
    bus.publish(StatusNotice(ready[1], stopping, reason="deleted by alice", ended=True))
    bus.publish(StatusNotice(ready[2], error, reason="ran out of memory (OOM): ...", ended=True))
    bus.publish(StatusNotice(ready[3], error, reason="the sandbox disappeared", ended=True))
    bus.publish(StatusNotice(ready[4], error, reason="exited with code 1", ended=True))
    bus.publish(StatusNotice(uuid.uuid4(), error, reason="did not start", ended=True))  # a failed start

    async def counted() -> bool:
        return value(metrics, "convoy_conversations_deleted_total") == 1

    await eventually(counted)
    for reason in ("idle", "oom", "vanished", "exited"):
        assert value(metrics, "convoy_conversations_reaped_total", reason=reason) == 1, reason
    watcher.cancel()


def test_the_pool_hooks_move_their_series() -> None:
    metrics = GatewayMetrics()
    metrics.pool_sized(3)
    metrics.pool_claimed(hit=True)
    metrics.pool_claimed(hit=False)
    metrics.start_finished("warm", seconds=0.004)
    metrics.start_finished("cold", error=asyncio.CancelledError())
    assert value(metrics, "convoy_pool_size") == 3
    assert value(metrics, "convoy_pool_claims_total", result="hit") == 1
    assert value(metrics, "convoy_pool_claims_total", result="miss") == 1
    assert value(metrics, "convoy_sandbox_starts_total", kind="warm", result="ok") == 1
    assert value(metrics, "convoy_sandbox_start_seconds_bucket", kind="warm", le="0.005") == 1
    assert value(metrics, "convoy_sandbox_starts_total", kind="cold", result="cancelled") == 1
    assert sum(v for (n, _), v in samples(metrics).items() if n == "convoy_sandbox_start_failures_total") == 0
