"""The Kubernetes runtime's pools against the fake API server: what a pool costs in pods, the
pools' objects deleted once no pool wants them, and a claim a gateway died in the middle of
(recorded, never or only half delivered) undone or finished by the next gateway's reconcile."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fake_kube.harness import FakeKube
from gw_helpers import make_spec
from kube_helpers import held, kube_runtime, kube_settings

from gateway.app import create_app
from gateway.runtimes import kubernetes_objects as objs
from gateway.runtimes.base import SandboxSpec, SandboxState
from gateway.runtimes.claiming import claim_of
from gateway.runtimes.kubernetes import KubernetesRuntime
from gateway.runtimes.kubernetes_claims import ClaimRecords
from sandbox_agent.protocol import CLAIM_SECRET_HEADER, TOKEN_HEADER
from tests.helpers import eventually


def _spare() -> SandboxSpec:
    return make_spec(owner="", title="", pool="default")


async def _pods(kube: FakeKube, install: str) -> int:
    return len(await held(kube, "pods", install))


async def test_a_pool_of_n_costs_n_pods_and_a_warm_replica_one_more(fake_kube: FakeKube, tmp_path) -> None:
    settings = kube_settings(fake_kube, tmp_path, pool_size=2)
    async with kube_runtime(settings) as runtime:
        spares = await asyncio.gather(runtime.start(_spare()), runtime.start(_spare()))
        assert {spare.state for spare in spares} == {SandboxState.RUNNING}
        await asyncio.sleep(1.0)  # a controller that made more would have by now
        assert await _pods(fake_kube, settings.install) == 2
        assert await held(fake_kube, "sandboxwarmpools", settings.install) == []
        for spare in spares:
            await runtime.remove(spare.conversation_id)
    warm = kube_settings(fake_kube, tmp_path, pool_size=2, kubernetes_warm_replicas=1)
    async with kube_runtime(warm) as runtime:
        spares = await asyncio.gather(runtime.start(_spare()), runtime.start(_spare()))

        async def three() -> bool:  # the two spares and the one warm sandbox behind them
            return await _pods(fake_kube, warm.install) == 3

        await eventually(three, what="2 spares + 1 warm pod")
        await asyncio.sleep(1.0)
        assert await _pods(fake_kube, warm.install) == 3
        for spare in spares:
            await runtime.remove(spare.conversation_id)


async def test_a_pool_gone_from_the_settings_has_its_objects_deleted(fake_kube: FakeKube, tmp_path) -> None:
    settings = kube_settings(fake_kube, tmp_path, pool_size=1, kubernetes_warm_replicas=1)
    first = await KubernetesRuntime.connect(settings)
    spare = await first.start(_spare())
    claimed = await first.claim(spare, make_spec(conversation_id=spare.conversation_id))
    leftover = await first.start(_spare())  # a spare the dead gateway never removed
    assert len(await held(fake_kube, "sandboxwarmpools", settings.install)) == 1
    await first.close()  # without its pool's shutdown: the leftover spare keeps the warm pool
    resized = settings.model_copy(update={"pool_size": 0})
    async with kube_runtime(resized) as second:
        assert await held(fake_kube, "sandboxwarmpools", settings.install) == []  # at the connect
        (template,) = await held(fake_kube, "sandboxtemplates", settings.install)  # claims name it
        await second.remove(leftover.conversation_id)  # what the gateway's pool reconcile does
        await second.cleanup_orphans()
        assert len(await held(fake_kube, "sandboxtemplates", settings.install)) == 1  # one conversation's
        found = await second.find(claimed.conversation_id)
        assert found is not None and found.state is SandboxState.RUNNING  # untouched
        await second.remove(claimed.conversation_id)
        await second.cleanup_orphans()
        assert await held(fake_kube, "sandboxtemplates", settings.install) == []

        async def no_pods() -> bool:  # the warm pool's sandbox went with it
            return await _pods(fake_kube, settings.install) == 0

        await eventually(no_pods, what="no pod left")
    assert template["metadata"]["name"] == objs.pool_name(settings.install, "default")


async def test_a_gateway_closing_deletes_the_warm_pool_no_spare_uses(fake_kube: FakeKube, tmp_path) -> None:
    settings = kube_settings(fake_kube, tmp_path, pool_size=1, kubernetes_warm_replicas=1)
    runtime = await KubernetesRuntime.connect(settings)
    peer = await KubernetesRuntime.connect(settings)
    kept = await peer.start(_spare())  # another gateway's spare
    mine = await runtime.start(_spare())
    await runtime.remove(mine.conversation_id)  # the pool's close removes this gateway's spares
    await runtime.close()
    assert len(await held(fake_kube, "sandboxwarmpools", settings.install)) == 1  # the peer's spare uses it
    await peer.remove(kept.conversation_id)
    await peer.close()
    assert await held(fake_kube, "sandboxwarmpools", settings.install) == []


async def _record_claim(runtime: KubernetesRuntime, conversation: SandboxSpec) -> None:
    """What a gateway does first in a claim (and then died): the claim record, pending."""
    body = objs.claim_record(runtime.policy, conversation, claim_of(conversation))
    await runtime._api.create("secrets", body)


@pytest.mark.parametrize("mode", ["sandboxes", "pods"])
async def test_a_claim_never_delivered_is_undone_and_the_spare_is_a_spare_again(
    fake_kube: FakeKube, tmp_path, mode: str
) -> None:
    settings = kube_settings(fake_kube, tmp_path, pool_size=1, kubernetes_mode=mode)
    first = await KubernetesRuntime.connect(settings)
    spare = await first.start(_spare())
    conversation = make_spec(conversation_id=spare.conversation_id, owner="bob")
    await _record_claim(first, conversation)
    await first.close()  # the gateway died before POST /claim
    async with kube_runtime(settings) as second, httpx.AsyncClient(timeout=30) as client:
        # Neither a spare (it may be claimed) nor a conversation (it may not be) meanwhile.
        assert await second.list() == []
        assert await second.cleanup_orphans() == 0  # too young: its gateway may still send it
        assert await second.find(spare.conversation_id) is None
        second.claims.settle_after = 0.0  # as if the claim's time were up
        await second.cleanup_orphans()
        assert await held(fake_kube, "secrets", settings.install) != []
        names = {s["metadata"]["name"] for s in await held(fake_kube, "secrets", settings.install)}
        assert objs.claim_record_name(spare.conversation_id) not in names
        (again,) = await second.list()
        assert again.spec.pool == "default" and again.state is SandboxState.RUNNING
        assert (await client.get(f"{again.base_url}/ready")).json()["spare"] is True
        claimed = await second.claim(again, make_spec(conversation_id=spare.conversation_id, owner="carol"))
        info = await client.get(f"{claimed.base_url}/agent-info", headers={TOKEN_HEADER: claimed.spec.token})
        assert info.status_code == 200
        (listed,) = await second.list()
        assert listed.spec.owner == "carol" and listed.spec.pool is None


async def test_a_claim_delivered_but_not_marked_is_finished(fake_kube: FakeKube, tmp_path) -> None:
    settings = kube_settings(fake_kube, tmp_path, pool_size=1)
    first = await KubernetesRuntime.connect(settings)
    spare = await first.start(_spare())
    conversation = make_spec(conversation_id=spare.conversation_id, owner="bob")
    await _record_claim(first, conversation)
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            f"{spare.base_url}/claim",
            content=claim_of(conversation).model_dump_json(),
            headers={CLAIM_SECRET_HEADER: spare.spec.token, "Content-Type": "application/json"},
        )
        assert answer.status_code == 201
        await first.close()  # the gateway died before marking the record delivered
        async with kube_runtime(settings) as second:
            assert await second.list() == []
            second.claims.settle_after = 0.0
            await second.cleanup_orphans()
            (found,) = await second.list()
            assert found.spec.owner == "bob" and found.spec.pool is None
            assert found.spec.token == conversation.token and found.state is SandboxState.RUNNING
            (record,) = [
                s
                for s in await held(fake_kube, "secrets", settings.install)
                if s["metadata"]["name"] == objs.claim_record_name(spare.conversation_id)
            ]
            assert record["metadata"]["annotations"][objs.CLAIM_STATE] == "delivered"
            async with kube_runtime(settings) as third:  # any later gateway lists it at once
                assert [h.conversation_id for h in await third.list()] == [spare.conversation_id]


async def test_a_restarted_gateway_gets_back_the_spare_of_a_claim_it_never_sent(
    fake_kube: FakeKube, tmp_path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = kube_settings(fake_kube, tmp_path, pool_size=1)
    dead = await KubernetesRuntime.connect(settings)
    spare = await dead.start(_spare())  # the dead gateway's pool made it
    await _record_claim(dead, make_spec(conversation_id=spare.conversation_id, owner="bob"))
    await dead.close()
    monkeypatch.setattr(ClaimRecords, "settle_after", 0.0)  # as if the gateway had been down a while
    async with (
        kube_runtime(settings) as runtime,
        serve(create_app(settings, runtime=runtime)) as base,
        httpx.AsyncClient(timeout=60) as client,
    ):

        async def adopted() -> bool:
            return (await client.get(f"{base}/pool")).json()["ready"] == 1

        await eventually(adopted, what="the spare back in the pool")
        assert await _pods(fake_kube, settings.install) == 1  # that spare: none made instead of it
        made = await client.post(f"{base}/conversation", json={"title": "warm"})
        assert made.status_code == 201 and made.json()["start"] == "warm", made.text
        assert made.json()["id"] == str(spare.conversation_id)
        assert (await client.get(f"{base}/conversation")).json()["results"][0]["title"] == "warm"
