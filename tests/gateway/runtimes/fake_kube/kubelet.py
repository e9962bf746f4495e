"""The simulated scheduler and kubelet: every pod becomes a local agent process.

A new pod is bound to the reachable node with the fewest pods (``spec.nodeName``,
a MODIFIED event: :mod:`fake_kube.scheduler`), gets a loopback address of its
own (``status.podIP``) and its first container started
(:mod:`fake_kube.pod_process`): phase Running, and
condition Ready once its readiness probe (``readinessProbe.httpGet``, or
``GET /ready`` on the agent's port) answers 200; probed every
``probe_interval`` seconds, so an agent that stops answering goes unready.

A container that exits is ``terminated`` (exit code; reason Completed, Error or
OOMKilled; with ``FallbackToLogsOnError`` its last log lines as the message);
``restartPolicy`` Never ends the pod (Succeeded or Failed), Always/OnFailure
restart it (``restartCount``). Deleting a running pod is graceful: the API
marks it (deletionTimestamp), the kubelet sends SIGTERM, SIGKILL after the
grace period (at most ``grace_cap`` seconds here), and then removes it. On a
node that is lost (:mod:`fake_kube.nodes`) nothing of this happens until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_kube import pod_process, pod_status, probes, scheduler
from fake_kube.pod_process import ConfigError, NotAnAgent, PodFiles, Running
from fake_kube.pod_status import PODS, Gone, container_status, set_condition
from fake_kube.resources import BY_KIND, Resource
from fake_kube.store import Event, Obj, Store, now

NODES = ("node-1", "node-2", "node-3")


@dataclass
class PodRun:
    """What the kubelet keeps of one pod (one uid)."""

    namespace: str
    name: str
    uid: str
    folder: Path
    node: str = ""
    ip: str = ""
    running: Running | None = None
    task: asyncio.Task[None] | None = None
    stopper: asyncio.Task[None] | None = None
    starting: asyncio.Task[Running] | None = None
    ready: bool = False
    terminating: bool = False
    oom: bool = False  # the next exit is reported as OOMKilled
    restarts: int = 0
    started_at: str = ""
    last_state: dict[str, Obj] = field(default_factory=dict)


class Kubelet:
    def __init__(self, store: Store, folder: Path, nodes: tuple[str, ...] = NODES) -> None:
        self.store, self.folder = store, folder
        self.nodes: dict[str, bool] = dict.fromkeys(nodes, True)  # name -> reachable
        self.runs: dict[str, PodRun] = {}
        self.errors: list[BaseException] = []  # what went wrong in the fake itself (a test fails on it)
        self.started: list[Running] = []  # every container ever started, reaped by stop_all()
        self.stopping = False  # no new container starts once set
        self.probe_interval = 0.1
        self.grace_cap = 10.0
        self._addresses = probes.Addresses()
        store.listeners.append(self._on_event)
        store.graceful = self._graceful

    # --- events -------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if event.resource != PODS:
            return
        metadata = event.object["metadata"]
        run = self.runs.get(metadata["uid"])
        if event.type == "ADDED":
            folder = self.folder / f"{event.namespace}-{metadata['name']}-{metadata['uid'][:8]}"
            run = self.runs[metadata["uid"]] = PodRun(
                event.namespace, metadata["name"], metadata["uid"], folder
            )
            run.task = asyncio.get_running_loop().create_task(self._guarded(self._lifecycle(run)))
        elif run is not None and event.type == "MODIFIED" and metadata.get("deletionTimestamp"):
            run.terminating = True
            if self.nodes.get(run.node, False):
                self.stop(run, metadata["deletionGracePeriodSeconds"])
        elif run is not None and event.type == "DELETED":
            self.stop(run, 0)

    def stop(self, run: PodRun, grace: float) -> None:
        """Terminate ``run`` (see :meth:`terminate`) unless that is under way."""
        if run.stopper is None:
            run.stopper = asyncio.get_running_loop().create_task(self._guarded(self.terminate(run, grace)))

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except (Gone, asyncio.CancelledError):
            pass
        except Exception as error:  # a bug of the fake: kept for the fixture to fail the test with
            self.errors.append(error)

    def _graceful(self, resource: Resource, obj: Obj, grace: int | None) -> int | None:
        run = self.runs.get(obj["metadata"]["uid"])
        if (
            resource != PODS
            or run is None
            or not run.node
            or obj.get("status", {}).get("phase") in ("Succeeded", "Failed")
        ):
            return None  # nothing runs: the pod goes at once
        return grace if grace is not None else int(obj["spec"].get("terminationGracePeriodSeconds", 30))

    # --- the pod's life -----------------------------------------------------------
    async def _lifecycle(self, run: PodRun) -> None:
        await scheduler.schedule(self.store, self.nodes, self.runs, run)
        while await self._start(run):
            code = await self._serve(run)
            if run.terminating or not await self._exited(run, code):
                return
            await asyncio.sleep(0.5)  # the back-off before a restart
            run.restarts += 1

    def _lookup(self, namespace: str) -> pod_process.Lookup:
        return lambda kind, name: self.store.find(BY_KIND[kind], namespace, name)

    async def _start(self, run: PodRun) -> bool:
        """Start the container (retrying while its config is missing); False: it cannot run."""
        while True:
            pod = self.store.find(PODS, run.namespace, run.name)
            if pod is None or pod["metadata"]["uid"] != run.uid or run.terminating or self.stopping:
                return False
            files = PodFiles(pod, run.folder, self._lookup(run.namespace))
            try:
                run.ip = run.ip or self._addresses.take(files.arguments("0.0.0.0")[1])
                # Shielded: a process once started is always known to terminate().
                run.starting = asyncio.ensure_future(pod_process.start(files, run.ip))
                run.starting.add_done_callback(self._track)
                run.running = await asyncio.shield(run.starting)
                break
            except ConfigError as error:
                self._waiting(run, "CreateContainerConfigError", str(error))
            except NotAnAgent as error:
                self._finish(
                    run, pod, {"exitCode": 127, "reason": "ContainerCannotRun", "message": str(error)}
                )
                return False
            await asyncio.sleep(0.3)
        run.started_at, run.ready = now(), False

        def started(pod: Obj, status: Obj) -> None:
            status.update(phase="Running", podIP=run.ip, podIPs=[{"ip": run.ip}])
            self._running(run, pod, status)

        pod_status.write(self.store, run.namespace, run.name, run.uid, started)
        return True

    def _running(self, run: PodRun, pod: Obj, status: Obj) -> None:
        state = {"running": {"startedAt": run.started_at}}
        status["containerStatuses"] = [container_status(pod, state, run.ready, run.restarts, run.last_state)]

    def _track(self, starting: asyncio.Task[Running]) -> None:
        if not starting.cancelled() and starting.exception() is None:
            self.started.append(starting.result())

    def _waiting(self, run: PodRun, reason: str, message: str) -> None:
        pod_status.write(
            self.store,
            run.namespace,
            run.name,
            run.uid,
            lambda pod, status: status.update(
                containerStatuses=[container_status(pod, {"waiting": {"reason": reason, "message": message}})]
            ),
        )

    async def _serve(self, run: PodRun) -> int:
        """Probe readiness until the container exits; its exit code."""
        assert run.running is not None
        exited = asyncio.ensure_future(run.running.process.wait())
        try:
            while not exited.done():
                await asyncio.wait({exited}, timeout=self.probe_interval)
                pod = self.store.find(PODS, run.namespace, run.name)
                if exited.done() or pod is None or not self.nodes.get(run.node, False) or run.terminating:
                    continue  # a lost node's kubelet reports nothing
                ready = await probes.ready(run.running, pod)
                # The node may have been lost while the probe ran: then its answer is stale.
                reachable = self.nodes.get(run.node, False) and not run.terminating
                if ready != run.ready and reachable and not exited.done():
                    run.ready = ready
                    self._report_ready(run)
            return pod_process.exit_code(exited.result())
        finally:
            exited.cancel()

    def _report_ready(self, run: PodRun) -> None:
        def change(pod: Obj, status: Obj) -> None:
            pod_status.containers_ready(status, run.ready)
            self._running(run, pod, status)

        pod_status.write(self.store, run.namespace, run.name, run.uid, change)

    async def _exited(self, run: PodRun, code: int) -> bool:
        """Report the container's exit; True when it is to be restarted."""
        assert run.running is not None
        pod = self.store.find(PODS, run.namespace, run.name)
        if pod is None:
            return False
        reason = "OOMKilled" if run.oom else ("Completed" if code == 0 else "Error")
        terminated: Obj = {
            "exitCode": code,
            "reason": reason,
            "startedAt": run.started_at,
            "finishedAt": now(),
        }
        container = pod["spec"]["containers"][0]
        if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            terminated["message"] = (await asyncio.to_thread(run.running.tail, 80))[-2048:]
        run.oom, run.ready = False, False
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            run.last_state = {"terminated": terminated}
            self._waiting(run, "CrashLoopBackOff", "back-off restarting the failed container")
            return True
        self._finish(run, pod, terminated)
        return False

    def _finish(self, run: PodRun, pod: Obj, terminated: Obj) -> None:
        phase, reason = (
            ("Succeeded", "PodCompleted") if terminated["exitCode"] == 0 else ("Failed", "PodFailed")
        )

        def change(pod: Obj, status: Obj) -> None:
            status["phase"] = phase
            for kind in ("ContainersReady", "Ready"):
                set_condition(status, kind, "False", reason)
            status["containerStatuses"] = [
                container_status(pod, {"terminated": terminated}, restarts=run.restarts, last=run.last_state)
            ]

        pod_status.write(self.store, run.namespace, run.name, run.uid, change)

    # --- the end ------------------------------------------------------------------
    async def terminate(self, run: PodRun, grace: float) -> None:
        """Stop the pod's container (SIGTERM, SIGKILL after ``grace``), remove the pod if still
        marked, and its files."""
        run.terminating = True
        if run.task is not None and run.task is not asyncio.current_task():
            run.task.cancel()
        if run.starting is not None:
            with contextlib.suppress(Exception):
                run.running = await run.starting
        if run.running is not None and run.running.process.returncode is None:
            await pod_process.stop(run.running, min(grace, self.grace_cap))
        pod = self.store.find(PODS, run.namespace, run.name)
        if pod is not None and pod["metadata"]["uid"] == run.uid:
            self.store.delete(PODS, run.namespace, run.name, grace=0)
        self.runs.pop(run.uid, None)
        await asyncio.to_thread(shutil.rmtree, run.folder, True)

    def signal(self, run: PodRun, number: int) -> None:
        if run.running is not None:
            run.running.signal(number)

    async def stop_all(self) -> None:
        """Stop every container this kubelet started, and wait until each is reaped (the fake
        is shutting down)."""
        self.stopping = True
        runs = list(self.runs.values())
        for run in runs:
            self.stop(run, 2)
        await asyncio.gather(*(run.stopper for run in runs if run.stopper), return_exceptions=True)
        for running in self.started:
            if running.process.returncode is None:
                running.signal(signal.SIGCONT)
                running.signal(signal.SIGKILL)
            await running.process.wait()
