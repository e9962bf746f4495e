"""The fake cluster: sandboxes whose agents really run, warm pools and claims, faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fake_kube.harness import FakeKube
from fake_kube.kubelet import NODES
from fake_kube.objects import agent_pod_spec, token_secret

from tests.helpers import eventually

NS = "default"
CORE = f"/api/v1/namespaces/{NS}"
SANDBOXES = f"/apis/agents.x-k8s.io/v1alpha1/namespaces/{NS}/sandboxes"
EXTENSIONS = f"/apis/extensions.agents.x-k8s.io/v1alpha1/namespaces/{NS}"
TOKEN = "s3cret-token"


@pytest.fixture
async def api(fake_kube: FakeKube) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {fake_kube.token}"}
    async with httpx.AsyncClient(base_url=fake_kube.base_url, headers=headers, timeout=10) as client:
        assert (
            await client.post(f"{CORE}/secrets", json=token_secret("agent-token", TOKEN))
        ).status_code == 201
        yield client


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    found = [c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == kind]
    return found[0] if found else {}


async def until(
    check: Callable[[], Awaitable[dict[str, Any] | None]], *, within: float = 30, what: str = ""
) -> dict[str, Any]:
    """:func:`eventually` of a check that answers an object or None: the object."""
    found = await eventually(check, within=within, what=what)
    assert found is not None
    return found


async def ready(fake_kube: FakeKube, plural: str, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        obj = await fake_kube.get(plural, name)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    return await until(check, within=60, what=f"{plural}/{name} Ready")


async def agent_info(ip: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=2) as client:
        return await client.get(f"http://{ip}:8080/agent-info", headers={"X-Convoy-Token": TOKEN})


def sandbox(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "podTemplate": {
                "metadata": {"labels": {"convoy.conversation": name}},
                "spec": agent_pod_spec("agent-token"),
            }
        },
    }


async def test_a_sandbox_becomes_ready_and_its_agent_answers(
    api: httpx.AsyncClient, fake_kube: FakeKube
) -> None:
    assert (await api.post(SANDBOXES, json=sandbox("conv-1"))).status_code == 201
    ready_sandbox = await ready(fake_kube, "sandboxes", "conv-1")
    assert condition(ready_sandbox, "Ready")["reason"] == "DependenciesReady"

    pod = (await api.get(f"{CORE}/pods/conv-1")).json()
    assert pod["spec"]["nodeName"] in NODES
    assert pod["metadata"]["labels"]["convoy.conversation"] == "conv-1"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == ready_sandbox["metadata"]["uid"]
    assert pod["status"]["phase"] == "Running" and condition(pod, "Ready")["status"] == "True"
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and ready_sandbox["status"]["podIPs"] == [ip]

    # The agent read its token from the Secret's volume.
    info = await agent_info(ip)
    assert info.status_code == 200, info.text
    async with httpx.AsyncClient(timeout=2) as client:
        assert (await client.get(f"http://{ip}:8080/agent-info")).status_code == 401

    # Deleting the sandbox deletes its pod, which stops the agent.
    assert (await api.delete(f"{SANDBOXES}/conv-1")).status_code == 200

    async def gone() -> bool:
        return await fake_kube.get("pods", "conv-1") is None

    await eventually(gone, within=30, what="the pod deleted")
    with pytest.raises(httpx.TransportError):
        await agent_info(ip)


async def test_a_pod_waits_for_its_secret(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    pod = {"metadata": {"name": "late"}, "spec": agent_pod_spec("later-token")}
    assert (await api.post(f"{CORE}/pods", json=pod)).status_code == 201

    async def waiting() -> dict[str, Any] | None:
        found = await fake_kube.get("pods", "late")
        statuses = ((found or {}).get("status") or {}).get("containerStatuses") or [{}]
        state = statuses[0].get("state", {}).get("waiting", {})
        return state if state.get("reason") == "CreateContainerConfigError" else None

    assert "later-token" in (await until(waiting, what="a waiting container"))["message"]
    await api.post(f"{CORE}/secrets", json=token_secret("later-token", TOKEN))
    started = await ready(fake_kube, "pods", "late")
    assert (await agent_info(started["status"]["podIP"])).status_code == 200


async def test_a_killed_agent_fails_its_pod_and_finishes_its_sandbox(
    api: httpx.AsyncClient, fake_kube: FakeKube
) -> None:
    await api.post(SANDBOXES, json=sandbox("conv-2"))
    await ready(fake_kube, "sandboxes", "conv-2")
    await fake_kube.kill_agent(NS, "conv-2", oom=True)

    async def finished() -> dict[str, Any] | None:
        found = await fake_kube.get("sandboxes", "conv-2")
        return found if condition(found, "Finished").get("status") == "True" else None

    done = await until(finished, within=30, what="the sandbox Finished")
    assert condition(done, "Finished")["reason"] == "PodFailed"
    assert condition(done, "Ready")["status"] == "False"
    pod = (await api.get(f"{CORE}/pods/conv-2")).json()
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 137 and terminated["reason"] == "OOMKilled"


async def test_a_warm_pool_fills_and_a_claim_binds_one(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    template = {
        "metadata": {"name": "python"},
        "spec": {
            "podTemplate": {
                "metadata": {"labels": {"convoy.template": "python"}},
                "spec": agent_pod_spec("agent-token", spare=True),
            }
        },
    }
    assert (await api.post(f"{EXTENSIONS}/sandboxtemplates", json=template)).status_code == 201
    pool = {
        "metadata": {"name": "python-pool"},
        "spec": {"replicas": 2, "sandboxTemplateRef": {"name": "python"}},
    }
    assert (await api.post(f"{EXTENSIONS}/sandboxwarmpools", json=pool)).status_code == 201

    async def pool_ready() -> dict[str, Any] | None:
        found = await fake_kube.get("sandboxwarmpools", "python-pool")
        return found if ((found or {}).get("status") or {}).get("readyReplicas") == 2 else None

    filled = await until(pool_ready, within=60, what="two ready spares")
    selector = filled["status"]["selector"]
    spares = (await api.get(SANDBOXES, params={"labelSelector": selector})).json()["items"]
    assert len(spares) == 2 and all(s["metadata"]["name"].startswith("python-pool-") for s in spares)

    claim = {
        "metadata": {"name": "conv-3"},
        "spec": {"sandboxTemplateRef": {"name": "python"}, "warmpool": "python-pool"},
    }
    assert (await api.post(f"{EXTENSIONS}/sandboxclaims", json=claim)).status_code == 201
    bound = await ready(fake_kube, "sandboxclaims", "conv-3")
    name = bound["status"]["sandbox"]["name"]
    assert name in {s["metadata"]["name"] for s in spares}
    assert bound["metadata"]["annotations"]["agents.x-k8s.io/sandbox-name"] == name
    pod = (await api.get(f"{CORE}/pods/{name}")).json()
    assert bound["status"]["sandbox"]["podIPs"] == [pod["status"]["podIP"]]
    assert pod["metadata"]["labels"]["agents.x-k8s.io/claim-uid"] == bound["metadata"]["uid"]

    # The pool refills: two spares again, the claimed one no longer among them.
    await until(pool_ready, within=60, what="the pool refilled")
    spares = (await api.get(SANDBOXES, params={"labelSelector": selector})).json()["items"]
    assert name not in {s["metadata"]["name"] for s in spares}

    # Deleting the claim deletes its sandbox and pod.
    await api.delete(f"{EXTENSIONS}/sandboxclaims/conv-3")

    async def gone() -> bool:
        return await fake_kube.get("sandboxes", name) is None and await fake_kube.get("pods", name) is None

    await eventually(gone, within=30, what="the claimed sandbox deleted")


async def test_a_claim_naming_a_missing_template_says_so(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    claim = {"metadata": {"name": "lost"}, "spec": {"sandboxTemplateRef": {"name": "nope"}}}
    await api.post(f"{EXTENSIONS}/sandboxclaims", json=claim)

    async def refused() -> dict[str, Any] | None:
        found = condition(await fake_kube.get("sandboxclaims", "lost"), "Ready")
        return found if found.get("reason") == "TemplateNotFound" else None

    assert "nope" in (await until(refused, what="the claim refused"))["message"]


async def test_a_lost_node_evicts_its_pods_and_the_sandbox_comes_back(
    api: httpx.AsyncClient, fake_kube: FakeKube
) -> None:
    await api.post(SANDBOXES, json=sandbox("conv-4"))
    await ready(fake_kube, "sandboxes", "conv-4")
    first = (await api.get(f"{CORE}/pods/conv-4")).json()
    node = first["spec"]["nodeName"]
    await fake_kube.lose_node(node)

    pod = (await api.get(f"{CORE}/pods/conv-4")).json()
    assert condition(pod, "Ready")["status"] == "False"
    assert condition(pod, "DisruptionTarget")["reason"] == "DeletionByTaintManager"
    assert pod["status"]["reason"] == "NodeLost" and node in pod["status"]["message"]
    assert pod["metadata"]["deletionTimestamp"]
    with pytest.raises(httpx.TimeoutException):
        await agent_info(first["status"]["podIP"])  # frozen, as across a partition

    async def not_ready() -> dict[str, Any] | None:
        found = await fake_kube.get("sandboxes", "conv-4")
        return found if condition(found, "Ready").get("status") == "False" else None

    lost = await until(not_ready, what="the sandbox unready")
    assert "NodeLost" in condition(lost, "Ready")["message"]

    # The node comes back: the evicted pod goes, the controller makes a new one elsewhere.
    await fake_kube.restore_node(node)
    again = await ready(fake_kube, "sandboxes", "conv-4")
    second = (await api.get(f"{CORE}/pods/conv-4")).json()
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert again["status"]["podIPs"] == [second["status"]["podIP"]]
    assert (await agent_info(second["status"]["podIP"])).status_code == 200


async def test_a_pod_is_deleted_gracefully(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    await api.post(
        f"{CORE}/pods", json={"metadata": {"name": "graceful"}, "spec": agent_pod_spec("agent-token")}
    )
    pod = await ready(fake_kube, "pods", "graceful")
    deleted = await api.delete(f"{CORE}/pods/graceful")
    assert deleted.status_code == 200 and deleted.json()["metadata"]["deletionTimestamp"]
    events = []
    params = {"watch": "1", "resourceVersion": pod["metadata"]["resourceVersion"], "timeoutSeconds": "30"}
    async with api.stream("GET", f"{CORE}/pods", params=params) as watch:
        async for line in watch.aiter_lines():
            if line:
                event = json.loads(line)
                events.append((event["type"], bool(event["object"]["metadata"].get("deletionTimestamp"))))
                if event["type"] == "DELETED":
                    break
    assert ("MODIFIED", True) in events and events[-1] == ("DELETED", True)


async def test_a_sandbox_suspends_and_resumes_with_its_service(
    api: httpx.AsyncClient, fake_kube: FakeKube
) -> None:
    body = sandbox("conv-5")
    body["spec"]["service"] = True
    await api.post(SANDBOXES, json=body)
    running = await ready(fake_kube, "sandboxes", "conv-5")
    assert running["status"]["service"] == "conv-5"
    service = (await api.get(f"{CORE}/services/conv-5")).json()
    assert service["spec"]["clusterIP"] == "None"
    assert running["status"]["selector"] == "agents.x-k8s.io/sandbox-name-hash=" + next(
        iter(service["spec"]["selector"].values())
    )

    merge = {"Content-Type": "application/merge-patch+json"}
    await api.patch(f"{SANDBOXES}/conv-5", content='{"spec": {"replicas": 0}}', headers=merge)

    async def suspended() -> dict[str, Any] | None:
        found = await fake_kube.get("sandboxes", "conv-5")
        return found if condition(found, "Suspended").get("reason") == "PodTerminated" else None

    paused = await until(suspended, within=30, what="the sandbox suspended")
    assert condition(paused, "Ready")["reason"] == "SandboxSuspended" and not paused["status"].get("podIPs")
    assert await fake_kube.get("pods", "conv-5") is None

    await api.patch(f"{SANDBOXES}/conv-5", content='{"spec": {"replicas": 1}}', headers=merge)
    resumed = await ready(fake_kube, "sandboxes", "conv-5")
    assert (await agent_info(resumed["status"]["podIPs"][0])).status_code == 200


async def test_a_frozen_agent_goes_unready_and_back(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    await api.post(
        f"{CORE}/pods", json={"metadata": {"name": "sleepy"}, "spec": agent_pod_spec("agent-token")}
    )
    await ready(fake_kube, "pods", "sleepy")
    await fake_kube.freeze_agent(NS, "sleepy")

    async def unready() -> bool:
        return condition(await fake_kube.get("pods", "sleepy"), "Ready").get("status") == "False"

    await eventually(unready, within=30, what="the frozen pod unready")
    await fake_kube.freeze_agent(NS, "sleepy", frozen=False)
    await ready(fake_kube, "pods", "sleepy")


async def test_restart_policy_always_restarts_the_agent(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    spec = agent_pod_spec("agent-token", restart="Always")
    await api.post(f"{CORE}/pods", json={"metadata": {"name": "phoenix"}, "spec": spec})
    await ready(fake_kube, "pods", "phoenix")
    await fake_kube.kill_agent(NS, "phoenix")

    async def restarted() -> dict[str, Any] | None:
        found = await fake_kube.get("pods", "phoenix")
        status = ((found or {}).get("status") or {}).get("containerStatuses") or [{}]
        return found if status[0].get("restartCount") == 1 and status[0].get("ready") else None

    pod = await until(restarted, within=60, what="the agent restarted and ready")
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137 and last["reason"] == "Error"
    assert pod["status"]["phase"] == "Running"


async def test_a_removed_node_takes_its_pods_at_once(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    await api.post(SANDBOXES, json=sandbox("conv-6"))
    await ready(fake_kube, "sandboxes", "conv-6")
    first = (await api.get(f"{CORE}/pods/conv-6")).json()
    await fake_kube.lose_node(first["spec"]["nodeName"], evict_after=None)
    lost = (await api.get(f"{CORE}/pods/conv-6")).json()
    assert condition(lost, "Ready")["status"] == "False" and "deletionTimestamp" not in lost["metadata"]
    await fake_kube.remove_node(first["spec"]["nodeName"])
    again = await ready(fake_kube, "sandboxes", "conv-6")
    second = (await api.get(f"{CORE}/pods/conv-6")).json()
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert second["spec"]["nodeName"] != first["spec"]["nodeName"]
    assert again["status"]["podIPs"] == [second["status"]["podIP"]]
