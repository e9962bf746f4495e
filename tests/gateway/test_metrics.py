"""``GET /metrics``: who may read it, that the exposition parses, and that the counters
and gauges move as conversations are created, used, followed, deleted, reaped and fail."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from gw_helpers import ADMIN_KEY, USER_KEYS, Harness, auth, create_ready, keyed, recv_until, ws_connect
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.errors import SandboxStartError
from gateway.runtimes.base import ProgressCallback, SandboxHandle, SandboxSpec
from gateway.runtimes.memory import MemoryRuntime
from tests.helpers import eventually

METRICS_KEY = "key-metrics-scraper"
ALICE = USER_KEYS["alice"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, key: str = ADMIN_KEY) -> Samples:
    """Every sample of the exposition (it must parse), by name and labels."""
    response = await client.get("/metrics", headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def label_values(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], Any]) -> set[str]:
    return {v for (_, labels) in samples for _, v in labels}


async def test_metrics_need_an_admin_or_the_metrics_key(harness: Harness) -> None:
    async with harness.client(**keyed(metrics_key=METRICS_KEY)) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=auth("not-a-key"))).status_code == 401
        refused = await client.get("/metrics", headers=auth(ALICE))
        assert refused.status_code == 403, refused.text
        assert "admin" in refused.json()["detail"]
        await scrape(client, METRICS_KEY)
        await scrape(client, ADMIN_KEY)
    async with harness.client(**keyed()) as client:  # no metrics key: it is not a way in
        assert (await client.get("/metrics", headers=auth(METRICS_KEY))).status_code == 401


async def test_counters_and_gauges_follow_a_conversation(harness: Harness) -> None:
    async with harness.client(**keyed()) as client:
        before = await scrape(client)
        assert value(before, "convoy_conversations", status="READY") == 0
        assert value(before, "convoy_sandbox_starts_total", kind="cold", result="ok") == 0

        cid = await create_ready(client, ALICE, title="measured")
        ready = await scrape(client)
        assert value(ready, "convoy_conversations", status="READY") == 1
        assert value(ready, "convoy_sandbox_starts_total", kind="cold", result="ok") == 1
        assert value(ready, "convoy_sandbox_start_seconds_count", kind="cold") == 1
        assert value(ready, "convoy_sandbox_start_seconds_sum", kind="cold") > 0
        created = {"route": "/conversation", "method": "POST", "status": "201"}
        assert value(ready, "convoy_http_requests_total", **created) == 1
        assert value(ready, "convoy_http_request_seconds_count", **created) == 1
        one = {"route": "/conversation/{conversation_id}", "method": "GET", "status": "200"}
        assert value(ready, "convoy_http_requests_total", **one) >= 1

        # A proxied request: its body bytes go up, its answer's come down.
        up, down = (value(ready, "convoy_proxied_bytes_total", direction=d) for d in ("up", "down"))
        posted = await client.post(
            f"/conversation/{cid}/task",
            json={"runnable": {"type": "Shell", "command": "echo metered"}},
            headers=auth(ALICE),
        )
        assert posted.status_code == 201, posted.text
        used = await scrape(client)
        assert value(used, "convoy_proxied_bytes_total", direction="up") > up
        assert value(used, "convoy_proxied_bytes_total", direction="down") >= down + len(posted.content)
        task = {"route": "/conversation/{conversation_id}/task", "method": "POST", "status": "201"}
        assert value(used, "convoy_http_requests_total", **task) == 1

        # Following it: one open WebSocket of kind follow, and the events it relays.
        ws = await ws_connect(str(client.base_url), f"/conversation/{cid}", ALICE)
        try:
            await recv_until(ws, lambda frame: frame.get("seq") == 1)
            following = await scrape(client)
            assert value(following, "convoy_websockets_open", kind="follow") == 1
            assert value(following, "convoy_events_relayed_total", kind="follow") >= 1
        finally:
            await ws.close()

        async def closed() -> bool:
            return value(await scrape(client), "convoy_websockets_open", kind="follow") == 0

        await eventually(closed, what="the follower's socket is no longer counted")

        assert (await client.delete(f"/conversation/{cid}", headers=auth(ALICE))).status_code == 204

        async def deleted() -> Samples | None:
            after = await scrape(client)
            return after if value(after, "convoy_conversations_deleted_total") == 1 else None

        after = await eventually(deleted, what="the deletion is counted")
        assert value(after, "convoy_conversations", status="READY") == 0
        # No conversation id (nor any raw path) in any label.
        assert not any(cid in label for label in label_values(after))
        assert "unmatched" not in {dict(labels).get("route") for (_, labels) in after if labels}


async def test_an_idle_conversation_is_counted_as_reaped(harness: Harness) -> None:
    async with harness.client(reap_interval=0.2) as client:
        await create_ready(client, idle_timeout=0.5)

        async def reaped() -> bool:
            samples = await scrape(client, "")
            return value(samples, "convoy_conversations_reaped_total", reason="idle") == 1

        await eventually(reaped, what="the idle conversation is reaped and counted")
        assert value(await scrape(client, ""), "convoy_conversations_deleted_total") == 0


class _FailingRuntime(MemoryRuntime):
    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        raise SandboxStartError("the agent did not answer /ready within 1s")


async def test_a_failed_start_is_counted_by_reason_and_runtime(harness: Harness, serve: Any) -> None:
    runtime = _FailingRuntime(harness.settings)
    app = create_app(harness.settings, runtime)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        created = await client.post("/conversation", json={})
        assert created.status_code == 201
        cid = created.json()["id"]

        async def failed() -> bool:
            return bool((await client.get(f"/conversation/{cid}")).json()["status"] == "ERROR")

        await eventually(failed)
        samples = await scrape(client, "")
        assert value(samples, "convoy_sandbox_starts_total", kind="cold", result="failed") == 1
        assert value(samples, "convoy_sandbox_start_failures_total", reason="timeout") == 1
        assert value(samples, "convoy_sandbox_start_seconds_count", kind="cold") == 0
        errors = {"runtime": "memory", "operation": "start", "error": "SandboxStartError"}
        assert value(samples, "convoy_runtime_errors_total", **errors) == 1
        assert value(samples, "convoy_conversations", status="ERROR") == 1
        assert total(samples, "convoy_conversations_reaped_total") == 0  # a failed start is no reap
        missing = await client.get("/no/such/route")
        assert missing.status_code == 404
        unmatched = await scrape(client, "")
        unknown = {"route": "unmatched", "method": "GET", "status": "404"}
        assert value(unmatched, "convoy_http_requests_total", **unknown) == 1


async def test_two_apps_in_one_process_count_apart(harness: Harness) -> None:
    async with harness.client() as first:
        await scrape(first, "")
        await scrape(first, "")
        async with harness.client() as second:
            samples = await scrape(second, "")
    metrics = {"route": "/metrics", "method": "GET", "status": "200"}
    assert value(samples, "convoy_http_requests_total", **metrics) == 0  # its own scrape ends after
    assert value(samples, "convoy_pool_size") == 0
    assert value(samples, "convoy_pool_claims_total", result="hit") == 0


async def test_a_create_that_wanted_a_spare_and_found_none_is_a_pool_miss(harness: Harness) -> None:
    # A pool of one that may hold no spare at all: every create that fits it finds none.
    async with harness.client(**keyed(pool_size=1, pool_max_spares=0)) as client:
        await create_ready(client, ALICE)
        missed = await scrape(client)
        assert value(missed, "convoy_pool_claims_total", result="miss") == 1
        assert value(missed, "convoy_pool_claims_total", result="hit") == 0
        # One no spare could take (internet) did not ask the pool: no miss.
        response = await client.post("/conversation", json={"internet": True}, headers=auth(ALICE))
        assert response.status_code == 201, response.text
        assert value(await scrape(client), "convoy_pool_claims_total", result="miss") == 1


async def test_a_create_that_took_a_spare_is_a_pool_hit_not_a_miss(harness: Harness) -> None:
    async with harness.client(**keyed(pool_size=1)) as client:

        async def spare_ready() -> bool:
            pool = (await client.get("/pool", headers=auth(ADMIN_KEY))).json()
            return bool(pool["ready"] == 1)

        await eventually(spare_ready, what="a spare is ready")
        await create_ready(client, ALICE)
        samples = await scrape(client)
        assert value(samples, "convoy_pool_claims_total", result="hit") == 1
        assert value(samples, "convoy_pool_claims_total", result="miss") == 0
