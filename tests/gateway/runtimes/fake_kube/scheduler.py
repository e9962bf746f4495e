"""The simulated scheduler: a new pod is bound to the reachable node with the fewest pods."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fake_kube import pod_status
from fake_kube.pod_status import PODS, Gone, set_condition
from fake_kube.store import Store

if TYPE_CHECKING:
    from fake_kube.kubelet import PodRun


async def schedule(store: Store, nodes: dict[str, bool], runs: dict[str, PodRun], run: PodRun) -> None:
    """Bind ``run``'s pod to the reachable node of ``nodes`` (name -> reachable) with the
    fewest of ``runs``, waiting (the pod Unschedulable) while none is reachable; then the pod
    is Pending. :class:`~fake_kube.pod_status.Gone` if the pod went meanwhile."""
    while not (reachable := [node for node, up in nodes.items() if up]):
        pod_status.write(
            store,
            run.namespace,
            run.name,
            run.uid,
            lambda _, status: set_condition(
                status, "PodScheduled", "False", "Unschedulable", "0 nodes are available"
            ),
        )
        await asyncio.sleep(0.2)
    load = {node: 0 for node in reachable}
    for other in runs.values():
        if other.node in load:
            load[other.node] += 1
    run.node = min(reachable, key=lambda node: (load[node], node))
    pod = store.find(PODS, run.namespace, run.name)
    if pod is None or pod["metadata"]["uid"] != run.uid:
        raise Gone(run.name)
    pod["spec"]["nodeName"] = run.node
    store.update(PODS, run.namespace, run.name, pod)
    pod_status.write(store, run.namespace, run.name, run.uid, pod_status.pending)
