"""The Kubernetes runtime against the fake API server: real HTTP, the real REST paths, every
object it sends validated (core kinds against kubernetes-validate's strict schemas, the
agent-sandbox kinds against their CRDs: an invalid one is a 422 and fails the start), and pods
whose agents really run. Cold start, commands, the pool's claims, adoption by a restarted
gateway, a lost node, a watch that falls behind, and nothing left after a delete."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import yaml
from dockertools import Agent, create, wait_status
from fake_kube import rbac
from fake_kube.harness import FakeKube
from gw_helpers import make_spec
from kube_helpers import RBAC, RBAC_PODS_MODE, held, kube_runtime, kube_settings, role_rules

from gateway.app import create_app
from gateway.errors import RuntimeFailure, RuntimeUnavailable, SpareTaken
from gateway.runtimes.base import SandboxState
from gateway.runtimes.claiming import claim_of
from gateway.runtimes.kubernetes import KubernetesRuntime
from sandbox_agent.protocol import CLAIM_SECRET_HEADER, TOKEN_HEADER
from tests.helpers import eventually, free_port

CONVERSATION_KINDS = ("sandboxes", "sandboxclaims", "pods", "secrets")


async def _left(kube: FakeKube, install: str) -> dict[str, list[str]]:
    """The conversation objects of ``install`` still in the API (pool-level ones aside)."""
    found: dict[str, list[str]] = {}
    for kind in CONVERSATION_KINDS:
        names = [
            item["metadata"]["name"]
            for item in await held(kube, kind, install)
            if "convoy.conversation-id" in (item["metadata"].get("labels") or {})
        ]
        if names:
            found[kind] = names
    return found


async def test_a_cold_sandbox_runs_commands_and_leaves_nothing(fake_kube: FakeKube, tmp_path) -> None:
    settings = kube_settings(fake_kube, tmp_path)
    async with kube_runtime(settings) as runtime, httpx.AsyncClient(timeout=30) as client:
        spec = make_spec(env={"GREETING": "hello from a pod"})
        phases: list[str] = []

        async def progress(phase: str) -> None:
            phases.append(phase)

        handle = await runtime.start(spec, progress)
        assert handle.state is SandboxState.RUNNING and handle.spec == spec
        assert phases == ["creating secret", "creating sandbox", "waiting for agent"]
        agent = Agent(client, handle.base_url, spec.token)
        task, output = await agent.shell("echo $GREETING")
        assert task["status"] == "COMPLETED" and output.strip() == "hello from a pod"
        assert (await client.get(f"{handle.base_url}/agent-info")).status_code == 401  # no token, no entry
        (sandbox,) = await held(fake_kube, "sandboxes", settings.install)
        assert spec.token not in str(sandbox) and "hello from a pod" not in str(sandbox)
        assert await runtime.find(spec.conversation_id) == handle
        assert await runtime.remove(spec.conversation_id) is True
        assert await runtime.find(spec.conversation_id) is None
        await eventually(lambda: _nothing_left(fake_kube, settings.install), what="nothing left")
        assert await runtime.remove(spec.conversation_id) is False


async def _nothing_left(kube: FakeKube, install: str) -> bool:
    return not await _left(kube, install)


async def test_the_gateway_serves_a_conversation_on_kubernetes(fake_kube: FakeKube, tmp_path, serve) -> None:
    settings = kube_settings(fake_kube, tmp_path)
    async with kube_runtime(settings) as runtime:
        app = create_app(settings, runtime=runtime)
        async with serve(app) as base, httpx.AsyncClient(timeout=60) as client:
            conversation = await create(client, base, title="on a cluster")
            agent = Agent(client, f"{base}/conversation/{conversation}")
            task, output = await agent.shell("echo through the gateway")
            assert task["status"] == "COMPLETED" and output.strip() == "through the gateway"
            assert (await client.delete(f"{base}/conversation/{conversation}")).status_code == 204
        await eventually(lambda: _nothing_left(fake_kube, settings.install), what="nothing left")


async def test_a_spare_is_a_warm_pool_sandbox_claimed_once(fake_kube: FakeKube, tmp_path) -> None:
    settings = kube_settings(fake_kube, tmp_path, pool_size=1, kubernetes_warm_replicas=1)
    async with kube_runtime(settings) as runtime, httpx.AsyncClient(timeout=30) as client:
        spare_spec = make_spec(owner="", title="", pool="default")
        spare = await runtime.start(spare_spec)
        assert spare.state is SandboxState.RUNNING and spare.spec.pool == "default"
        (claim,) = await held(fake_kube, "sandboxclaims", settings.install)
        assert claim["status"]["sandbox"]["name"] and "env" not in claim["spec"]
        (warm_pool,) = await held(fake_kube, "sandboxwarmpools", settings.install)
        assert warm_pool["spec"]["replicas"] == 1  # behind the spare: a refill binds at once
        ready = (await client.get(f"{spare.base_url}/ready")).json()
        assert ready["spare"] is True
        conversation = make_spec(conversation_id=spare_spec.conversation_id, env={"SECRET": "after the bind"})
        claimed = await runtime.claim(spare, conversation)
        assert claimed.spec.token == conversation.token and claimed.spec.pool is None
        _task, output = await Agent(client, claimed.base_url, conversation.token).shell("echo $SECRET")
        assert output.strip() == "after the bind"  # the env came with POST /claim, not the claim object
        (claim,) = await held(fake_kube, "sandboxclaims", settings.install)
        assert "after the bind" not in str(claim)
        found = await runtime.find(conversation.conversation_id)
        assert found is not None and found.spec == claimed.spec
        with pytest.raises(SpareTaken):
            await runtime.claim(spare, conversation)  # the claim record exists: taken
        answer = await client.post(
            f"{spare.base_url}/claim",
            content=claim_of(conversation).model_dump_json(),
            headers={CLAIM_SECRET_HEADER: spare.spec.token, "Content-Type": "application/json"},
        )
        assert answer.status_code == 409
        await runtime.remove(conversation.conversation_id)
        await eventually(lambda: _nothing_left(fake_kube, settings.install), what="nothing left")


async def test_a_restarted_gateway_adopts_what_the_api_holds(fake_kube: FakeKube, tmp_path) -> None:
    settings = kube_settings(fake_kube, tmp_path, pool_size=1)
    first = await KubernetesRuntime.connect(settings)
    cold = await first.start(make_spec(env={"A": "1"}))
    spare = await first.start(make_spec(owner="", title="", pool="default"))
    claimed = await first.claim(spare, make_spec(conversation_id=spare.conversation_id, owner="bob"))
    await first.close()  # the gateway goes; its sandboxes stay
    async with kube_runtime(settings) as second, httpx.AsyncClient(timeout=30) as client:
        listed = {handle.conversation_id: handle for handle in await second.list()}
        assert listed[cold.conversation_id].spec == cold.spec
        assert listed[claimed.conversation_id].spec == claimed.spec  # the claim read back
        assert {handle.state for handle in listed.values()} == {SandboxState.RUNNING}
        url = listed[cold.conversation_id].base_url
        info = await client.get(f"{url}/agent-info", headers={TOKEN_HEADER: cold.spec.token})
        assert info.status_code == 200


async def test_a_lost_node_ends_its_conversation_with_a_reason_naming_it(
    fake_kube: FakeKube, tmp_path, serve
) -> None:
    settings = kube_settings(fake_kube, tmp_path)
    async with kube_runtime(settings) as runtime:
        app = create_app(settings, runtime=runtime)
        async with serve(app) as base, httpx.AsyncClient(timeout=60) as client:
            doomed, spared = await create(client, base), await create(client, base)
            pods = {
                pod["metadata"]["labels"]["convoy.conversation-id"]: pod
                for pod in await held(fake_kube, "pods", settings.install)
            }
            node = pods[doomed]["spec"]["nodeName"]
            assert pods[spared]["spec"]["nodeName"] != node, "the fake places pods on several nodes"
            await fake_kube.lose_node(node)
            await wait_status(client, base, doomed, "ERROR")
            reason = (await client.get(f"{base}/conversation/{doomed}")).json()["reason"]
            assert node in reason, reason
            _task, output = await Agent(client, f"{base}/conversation/{spared}").shell("echo still here")
            assert output.strip() == "still here"


async def test_a_watch_that_falls_behind_lists_again(fake_kube: FakeKube, tmp_path) -> None:
    settings = kube_settings(fake_kube, tmp_path)
    async with kube_runtime(settings) as runtime, kube_runtime(settings) as peer:
        lists = _lists(fake_kube)
        await _outdate_watches(fake_kube, settings.install)
        handle = await peer.start(make_spec())
        found = await eventually(lambda: runtime.find(handle.conversation_id), what="seen by the other")
        assert found.state is SandboxState.RUNNING
        await peer.remove(handle.conversation_id)
        await eventually(lambda: _absent(runtime, handle.conversation_id), what="gone for the other")
        assert _lists(fake_kube) >= lists + 2, "both runtimes listed again after the 410"


def _lists(kube: FakeKube) -> int:
    return sum(1 for r in kube.requests if (r.verb, r.resource) == ("list", "sandboxes"))


async def _outdate_watches(kube: FakeKube, install: str) -> None:
    """What an API server restart after a compaction does to a watcher: while every stream is
    down, something changes and the history is forgotten; each comes back too old (410)."""
    kube.api.stopping = True  # open streams end, and new ones at once
    await asyncio.sleep(0.5)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "unrelated", "labels": {"convoy.install": install}},
    }
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {kube.token}"}) as client:
        made = await client.post(f"{kube.base_url}/api/v1/namespaces/{kube.namespace}/secrets", json=secret)
        assert made.status_code == 201, made.text

    async def compact() -> None:
        kube.store.compact()

    await kube.run(compact)
    kube.api.stopping = False


async def _absent(runtime, conversation_id) -> bool:  # type: ignore[no-untyped-def]
    return await runtime.find(conversation_id) is None


async def test_every_call_is_one_the_role_grants_and_every_object_is_valid(
    fake_kube: FakeKube, tmp_path
) -> None:
    settings = kube_settings(fake_kube, tmp_path, pool_size=1)
    fake_kube.enforce(rbac.rules_of(RBAC))  # anything else: 403, as from a real authorizer
    async with kube_runtime(settings) as runtime:
        cold = await runtime.start(make_spec(env={"A": "1"}, internet=True))
        spare = await runtime.start(make_spec(owner="", title="", pool="default"))
        await runtime.claim(spare, make_spec(conversation_id=spare.conversation_id))
        await runtime.cleanup_orphans()
        for handle in (cold, spare):
            assert await runtime.remove(handle.conversation_id)
    async with kube_runtime(settings) as restarted:  # a gateway's start: it lists and adopts
        assert await restarted.list() == []
    assert not rbac.uncovered(fake_kube.requests, rbac.rules_of(RBAC))
    granted = role_rules()
    made = [(r.group, r.resource, r.verb) for r in fake_kube.requests if r.resource]
    assert made and set(made) <= granted, sorted(set(made) - granted)
    refused = [r for r in fake_kube.requests if r.code == 422]
    assert not refused, refused


async def test_plain_pods_without_the_crds(fake_kube: FakeKube, tmp_path) -> None:
    settings = kube_settings(fake_kube, tmp_path, kubernetes_mode="pods", pool_size=1)
    async with kube_runtime(settings) as runtime, httpx.AsyncClient(timeout=30) as client:
        fake_kube.enforce(rbac.rules_of(RBAC) + rbac.rules_of(RBAC_PODS_MODE))
        cold = await runtime.start(make_spec(env={"A": "cold"}))
        spare = await runtime.start(make_spec(owner="", title="", pool="default"))
        conversation = make_spec(conversation_id=spare.conversation_id, env={"A": "claimed"})
        claimed = await runtime.claim(spare, conversation)
        for handle, wanted in ((cold, "cold"), (claimed, "claimed")):
            _task, output = await Agent(client, handle.base_url, handle.spec.token).shell("echo $A")
            assert output.strip() == wanted
        async with kube_runtime(settings) as peer:
            listed = {handle.conversation_id: handle.spec for handle in await peer.list()}
            assert listed == {cold.conversation_id: cold.spec, claimed.conversation_id: claimed.spec}
        for handle in (cold, claimed):
            assert await runtime.remove(handle.conversation_id)
        requests = [r for r in fake_kube.requests if r.resource]  # the runtime's (not this test's look)
        fake_kube.enforce(None)
        await eventually(lambda: _nothing_left(fake_kube, settings.install), what="nothing left")
    kinds = {r.resource for r in requests}
    assert kinds <= {"pods", "secrets", "networkpolicies"}, kinds  # no agent-sandbox object at all
    granted = role_rules() | role_rules(RBAC_PODS_MODE)
    made = {(r.group, r.resource, r.verb) for r in requests}
    assert made <= granted, sorted(made - granted)


@pytest.mark.timeout(300)
async def test_a_pod_replaced_while_no_gateway_watched_is_no_sandbox_of_theirs(
    fake_kube: FakeKube, tmp_path
) -> None:
    settings = kube_settings(fake_kube, tmp_path, start_timeout=30.0)
    first = await KubernetesRuntime.connect(settings)
    handle = await first.start(make_spec())
    await first.close()  # no gateway runs while the node goes and comes back
    (pod,) = await held(fake_kube, "pods", settings.install)
    node = pod["spec"]["nodeName"]
    await fake_kube.lose_node(node)
    await asyncio.sleep(settings.start_timeout + 1)  # the replacement is made later than a start may take
    await fake_kube.restore_node(node)

    async def replaced() -> bool:
        pods = await held(fake_kube, "pods", settings.install)
        return any(p["metadata"]["uid"] != pod["metadata"]["uid"] and p["status"].get("podIP") for p in pods)

    await eventually(replaced, what="the Sandbox controller made a new pod")
    async with kube_runtime(settings) as second:
        found = await second.find(handle.conversation_id)
        assert found is not None and found.state is SandboxState.EXITED, found
        assert found.reason and "replaced" in found.reason


async def test_an_api_that_refuses_or_does_not_answer_fails_the_connect_clearly(
    fake_kube: FakeKube, tmp_path
) -> None:
    fake_kube.enforce([])  # a service account with no Role bound
    with pytest.raises(RuntimeFailure) as refused:
        await KubernetesRuntime.connect(kube_settings(fake_kube, tmp_path))
    assert "403" in str(refused.value), refused.value
    fake_kube.enforce(None)
    config = yaml.safe_load(fake_kube.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{free_port()}"  # nobody listens
    nowhere = tmp_path / "nowhere.kubeconfig"
    nowhere.write_text(yaml.safe_dump(config))
    with pytest.raises(RuntimeUnavailable):
        await KubernetesRuntime.connect(
            kube_settings(fake_kube, tmp_path, kubernetes_kubeconfig=str(nowhere))
        )
