"""What the Kubernetes runtime sends and reads back, without a server: the pod's hardening,
the spec kept in labels, annotations and Secrets, and the states the objects' conditions mean
(a lost node among them). That the API server accepts every object is test_kubernetes_runtime's."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from gw_helpers import make_spec

from gateway.runtimes import kubernetes_objects as objs
from gateway.runtimes import kubernetes_pods as pods
from gateway.runtimes.base import ResourceLimits, SandboxState
from gateway.runtimes.claiming import claim_of
from gateway.runtimes.kubernetes_orphans import left_over
from gateway.runtimes.kubernetes_state import observe

POLICY = objs.PodPolicy(
    install="Test_Install",
    namespace="convoy",
    image="convoy-sandbox:test",
    image_pull_policy="IfNotPresent",
    user="10001:10001",
    default_limits=ResourceLimits(512 * 1024 * 1024, 1.0, None),
    tmpfs_bytes=64 * 1024 * 1024,
    node_lost_after=30,
    gateway_labels={"app.kubernetes.io/name": "convoy-gateway"},
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (agent,) = pod_spec["containers"]
    return dict(agent)


def test_the_agent_keeps_two_capabilities_and_no_way_up() -> None:
    spec = make_spec(limits=ResourceLimits(memory_bytes=256 * 1024 * 1024, cpus=0.5))
    pod = pods.sandbox(POLICY, spec)["spec"]["podTemplate"]["spec"]
    security = _container(pod)["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SETUID", "SETGID"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert _container(pod)["resources"]["limits"] == {"memory": str(256 * 1024 * 1024), "cpu": "500m"}
    (prepare,) = pod["initContainers"]
    assert prepare["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    token = next(volume for volume in pod["volumes"] if volume["name"] == "token")
    assert token["secret"]["defaultMode"] == 0o400  # root's alone: the agent reads it, then drops
    assert "--run-as" in _container(pod)["args"] and "--spare" not in _container(pod)["args"]


def test_no_secret_value_is_in_the_sandbox_object() -> None:
    spec = make_spec(env={"API_KEY": "very-secret-value", "CONVOY_AGENT_TOKEN": "forged"})
    sandbox = json.dumps(pods.sandbox(POLICY, spec))
    assert spec.token not in sandbox and "very-secret-value" not in sandbox and "forged" not in sandbox
    env = _container(pods.sandbox(POLICY, spec)["spec"]["podTemplate"]["spec"])["env"]
    assert {
        "name": "API_KEY",
        "valueFrom": {"secretKeyRef": {"name": objs.object_name(spec.conversation_id), "key": "env.API_KEY"}},
    } in env
    assert not any(item["name"] == "CONVOY_AGENT_TOKEN" for item in env)  # reserved: never the caller's


def test_the_spec_comes_back_from_the_annotation_and_the_secret() -> None:
    spec = make_spec(
        env={"A": "1"},
        internet=True,
        idle_timeout=90.0,
        on_idle="pause",
        limits=ResourceLimits(memory_bytes=2**28, cpus=0.25, pids=64),
        title="x" * 200,
    )
    secret = objs.decoded(objs.conversation_secret(POLICY, spec))
    assert objs.spec_of(pods.sandbox(POLICY, spec), None, secret) == spec
    assert objs.spec_of(pods.sandbox(POLICY, spec), None, {}) is None  # no token known: not adoptable


def test_a_claimed_spare_is_its_conversation_from_the_claim_record() -> None:
    spare = make_spec(owner="", title="", pool="default")
    claim = pods.sandbox_claim(POLICY, spare)
    assert claim["spec"] == {
        "sandboxTemplateRef": {"name": objs.pool_name("Test_Install", "default")},
        "warmpool": "default",  # any warm pool of the template, and none when there is none
    }
    assert "env" not in claim["spec"]  # env on a claim would force a cold start
    assert objs.spec_of(claim, "claim-secret", {}) == dataclasses.replace(spare, token="claim-secret")
    conversation = make_spec(conversation_id=spare.conversation_id, env={"B": "2"}, owner="bob")
    body = objs.claim_record(POLICY, conversation, claim_of(conversation))
    assert body["metadata"]["annotations"] == {objs.CLAIM_STATE: "pending"}  # until the agent took it
    record = objs.decoded(body)
    claimed = objs.spec_of(claim, "claim-secret", record)
    assert claimed is not None and claimed.pool is None
    assert (claimed.owner, claimed.token, claimed.env) == ("bob", conversation.token, {"B": "2"})


def test_names_and_labels_are_what_the_api_accepts() -> None:
    spec = make_spec()
    for name in (
        objs.pool_name("Test_Install", "Node_18.x"),
        objs.claim_secret_name("Test_Install"),
        *objs.policy_names("Test_Install"),
    ):
        assert len(name) <= 63 and _DNS_LABEL.match(name), name
    assert objs.pool_name("a", "x") != objs.pool_name("A", "x")  # no two installations share a pool
    labels = pods.pod_labels(POLICY, spec)
    assert labels == {"convoy.role": "sandbox", "convoy.conversation-id": str(spec.conversation_id)}


def test_the_network_policies_admit_the_gateway_only_and_let_nothing_out() -> None:
    everyone, online = pods.network_policies(POLICY)
    assert everyone["spec"]["policyTypes"] == ["Ingress", "Egress"] and everyone["spec"]["egress"] == []
    (rule,) = everyone["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "convoy-gateway"}}}]
    assert online["spec"]["podSelector"]["matchLabels"]["convoy.internet"] == "true"
    public = online["spec"]["egress"][0]["to"][0]["ipBlock"]
    assert public["cidr"] == "0.0.0.0/0"
    assert "10.0.0.0/8" in public["except"] and "169.254.0.0/16" in public["except"]  # the cluster, metadata


# --- states from conditions --------------------------------------------------------------


def _sandbox(ready: str | None, ips: list[str] | None = None) -> dict[str, Any]:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready, "reason": "DependenciesReady"}]
    return {"metadata": {"name": "convoy-x"}, "status": {"conditions": conditions, "podIPs": ips or []}}


def _pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "convoy-x"}, "spec": {"nodeName": "node-7"}, "status": status}


def test_ready_with_an_address_is_running_and_nothing_less() -> None:
    assert observe("sandboxes", _sandbox(None), None, 60).state is SandboxState.STARTING
    assert observe("sandboxes", _sandbox("True"), _pod(), 60).state is SandboxState.STARTING  # no IP yet
    running = observe("sandboxes", _sandbox("True", ["127.0.3.4"]), _pod(podIP="127.0.3.4"), 60)
    assert running.state is SandboxState.RUNNING and running.base_url == "http://127.0.3.4:8080"


def test_a_lost_node_ends_the_sandbox_with_a_reason_naming_it() -> None:
    for lost in (
        _pod(reason="NodeLost", message="Node node-7 which was running pod convoy-x is unresponsive"),
        _pod(conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}]),
    ):
        seen = observe("sandboxes", _sandbox("True", ["127.0.3.4"]), lost, 60)
        assert seen.state is SandboxState.EXITED and seen.reason is not None and "node-7" in seen.reason


def test_a_pod_made_long_after_its_sandbox_is_a_replacement_not_the_sandbox() -> None:
    sandbox = _sandbox("True", ["127.0.3.4"]) | {"metadata": {"creationTimestamp": "2026-01-01T10:00:00Z"}}

    def pod_made(at: str) -> dict[str, Any]:
        pod = _pod(podIP="127.0.3.4", conditions=[{"type": "Ready", "status": "True"}])
        return pod | {"metadata": {"creationTimestamp": at}}

    first = observe("sandboxes", sandbox, pod_made("2026-01-01T10:00:02Z"), 60)
    assert first.state is SandboxState.RUNNING
    later = observe("sandboxes", sandbox, pod_made("2026-01-01T10:05:00Z"), 60)
    assert later.state is SandboxState.EXITED and later.reason and "node-7" in later.reason


def test_an_oom_kill_and_an_exit_say_so() -> None:
    def ended(**terminated: Any) -> dict[str, Any]:
        return _pod(containerStatuses=[{"name": "agent", "state": {"terminated": terminated}}])

    oom = observe("sandboxes", _sandbox("False"), ended(exitCode=137, reason="OOMKilled"), 60)
    assert oom.state is SandboxState.EXITED and oom.oom_killed and oom.exit_code == 137
    crash = observe(
        "sandboxes", _sandbox("False"), ended(exitCode=2, reason="Error", message="bad settings"), 60
    )
    assert crash.exit_code == 2 and crash.reason is not None and "bad settings" in crash.reason
    done = [{"type": "Finished", "status": "True", "reason": "PodFailed"}]
    finished = {"metadata": {}, "status": {"conditions": done}}
    assert observe("sandboxes", finished, None, 60).state is SandboxState.EXITED


def test_left_overs_are_old_objects_nobody_holds() -> None:
    spec, other = make_spec(), make_spec()
    old = {"creationTimestamp": "2020-01-01T00:00:00Z"}

    def aged(obj: dict[str, Any], **meta: Any) -> dict[str, Any]:
        return obj | {"metadata": obj["metadata"] | meta}

    secret = aged(objs.conversation_secret(POLICY, spec), **old)
    young = objs.conversation_secret(POLICY, other)  # no timestamp: made a moment ago
    sandbox = aged(pods.sandbox(POLICY, other), **old)
    assert left_over([secret, young], set(), set(), 90.0) == {spec.conversation_id}
    assert left_over([secret], {spec.conversation_id}, set(), 90.0) == set()  # its sandbox is listed
    assert left_over([secret], set(), {str(spec.conversation_id)}, 90.0) == set()  # its carrier exists
    assert left_over([sandbox], set(), {str(other.conversation_id)}, 90.0) == {other.conversation_id}
