"""Faults a test injects into the simulated cluster: lost nodes, dying and frozen agents.

A lost node (``lose``) goes the way a real cluster takes it:

1. the node stops answering: its containers are frozen (SIGSTOP: connections
   to them hang, as across a partition) and its kubelet reports nothing more;
2. the node lifecycle controller marks its pods' ``Ready`` condition False;
3. after ``evict_after`` seconds (a real cluster: the 300 s toleration of the
   ``node.kubernetes.io/unreachable`` taint; here 0 unless asked), the taint
   manager evicts each pod: condition ``DisruptionTarget`` True (reason
   ``DeletionByTaintManager``), a graceful delete that stays pending (the
   pod keeps its deletionTimestamp: no kubelet can confirm it) and
   ``status.reason`` ``NodeLost`` with the message a real controller writes.

``restore`` brings the node back: its kubelet finishes the pending deletions
and the pods not evicted become ready again. ``remove`` deletes the node: its
pods are deleted at once (pod garbage collection), their processes killed.
"""

from __future__ import annotations

import asyncio
import signal

from fake_kube import pod_status
from fake_kube.kubelet import Kubelet, PodRun
from fake_kube.pod_status import PODS, Gone, set_condition
from fake_kube.store import Obj, Store


class Faults:
    def __init__(self, store: Store, kubelet: Kubelet) -> None:
        self.store, self.kubelet = store, kubelet

    def run(self, namespace: str, pod: str) -> PodRun:
        """The kubelet's record of a pod (KeyError if it runs nothing)."""
        return next(
            run for run in self.kubelet.runs.values() if (run.namespace, run.name) == (namespace, pod)
        )

    def _on(self, node: str) -> list[PodRun]:
        return [run for run in self.kubelet.runs.values() if run.node == node]

    async def lose(self, node: str, evict_after: float | None = 0.0) -> None:
        """The node becomes unreachable (see the module); ``evict_after`` None: never evicted."""
        self.kubelet.nodes[node] = False
        for run in self._on(node):
            self.kubelet.signal(run, signal.SIGSTOP)
            run.ready = False

            def not_ready(_: Obj, status: Obj) -> None:
                # Only the status changes, as the node lifecycle controller does it.
                ready = pod_status.condition({"status": status}, "Ready") or {}
                set_condition(status, "Ready", "False", ready.get("reason"), ready.get("message"))

            try:
                pod_status.write(self.store, run.namespace, run.name, run.uid, not_ready)
            except Gone:
                continue
        if evict_after is not None:
            await asyncio.sleep(evict_after)
            if not self.kubelet.nodes.get(node, True):
                self._evict(node)

    def _evict(self, node: str) -> None:
        for run in self._on(node):
            message = f"Node {node} which was running pod {run.name} is unresponsive"

            def disrupted(_: Obj, status: Obj) -> None:
                set_condition(
                    status,
                    "DisruptionTarget",
                    "True",
                    "DeletionByTaintManager",
                    "Taint manager: deleting due to NoExecute taint",
                )

            def lost(_: Obj, status: Obj, message: str = message) -> None:
                status.update(reason="NodeLost", message=message)

            try:
                pod_status.write(self.store, run.namespace, run.name, run.uid, disrupted)
                self.store.delete(PODS, run.namespace, run.name)
                pod_status.write(self.store, run.namespace, run.name, run.uid, lost)
            except Gone:
                continue

    async def restore(self, node: str) -> None:
        """The node is back: pending deletions finish, the other pods carry on."""
        self.kubelet.nodes[node] = True
        for run in self._on(node):
            self.kubelet.signal(run, signal.SIGCONT)
            if run.terminating:
                pod = self.store.find(PODS, run.namespace, run.name)
                grace = (pod or {}).get("metadata", {}).get("deletionGracePeriodSeconds", 0)
                self.kubelet.stop(run, grace)

    async def remove(self, node: str) -> None:
        """The node is deleted from the cluster: its pods go at once."""
        self.kubelet.nodes.pop(node, None)
        for run in self._on(node):
            if self.store.find(PODS, run.namespace, run.name) is not None:
                self.store.delete(PODS, run.namespace, run.name, grace=0)

    async def kill_agent(
        self, namespace: str, pod: str, number: int = signal.SIGKILL, oom: bool = False
    ) -> None:
        """Send ``number`` to the pod's container; ``oom``: as the kernel's OOM killer (OOMKilled)."""
        run = self.run(namespace, pod)
        run.oom = oom
        self.kubelet.signal(run, number)

    async def freeze_agent(self, namespace: str, pod: str, frozen: bool = True) -> None:
        """Stop (SIGSTOP) or resume (SIGCONT) the pod's container: it stops answering, goes unready."""
        self.kubelet.signal(self.run(namespace, pod), signal.SIGSTOP if frozen else signal.SIGCONT)
