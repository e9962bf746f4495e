"""FakeKube: the fake API server and its simulated cluster, on a thread of their own.

The server runs on its own event loop in a daemon thread, so a client (async or
not, in the test's loop or in a gateway subprocess pointed at the kubeconfig)
talks to it over real HTTP exactly as it would to a cluster. Everything that
touches the store runs on that loop: :meth:`FakeKube.call` hands a coroutine
function to it from the test's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
import yaml

from fake_kube.cluster import Cluster
from fake_kube.nodes import Faults
from fake_kube.resources import RESOURCES
from fake_kube.server import ApiServer, Recorded
from fake_kube.store import Store
from fake_kube.validation import validate

_T = TypeVar("_T")


class FakeKube:
    """``base_url``, ``kubeconfig`` (a file with a context ``fake`` on ``namespace``),
    ``token``, ``requests`` (every request so far), ``store`` (read it only through
    :meth:`call`)."""

    def __init__(self, folder: Path, namespace: str = "default") -> None:
        self.folder, self.namespace = folder, namespace
        self.token = secrets.token_hex(16)
        self.base_url = ""
        self.store = Store(validate)
        self.cluster = Cluster(self.store, folder / "pods")
        self.api = ApiServer(self.store, self.token, lambda: self.base_url.removeprefix("http://"))
        self.loop = asyncio.new_event_loop()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._stop_hooks: list[Callable[[], Awaitable[None]]] = [self.cluster.kubelet.stop_all]
        self.kubeconfig = folder / "kubeconfig"

    @property
    def requests(self) -> list[Recorded]:
        return list(self.api.requests)

    @property
    def faults(self) -> Faults:
        """The fault handle; its methods are coroutine functions to give :meth:`run`."""
        return self.cluster.faults

    @property
    def errors(self) -> list[BaseException]:
        """What went wrong inside the fake (the fixture fails a test that leaves any)."""
        return self.cluster.errors

    @contextlib.asynccontextmanager
    async def watches_down(self) -> AsyncIterator[None]:
        """Within the block every watch stream ends (open ones, and new ones at once, empty), as
        across an API server restart; reads and writes still work."""
        self.api.watches_down = True
        try:
            yield
        finally:
            self.api.watches_down = False

    def enforce(self, rules: list[dict[str, Any]] | None) -> None:
        """Refuse (403) every request these Role rules do not allow; None: allow all again.
        ``fake_kube.rbac.rules_of(path)`` reads them from a manifest."""
        self.api.rules = rules

    async def lose_node(self, node: str, evict_after: float | None = 0.0) -> None:
        await self.run(self.faults.lose, node, evict_after)

    async def restore_node(self, node: str) -> None:
        await self.run(self.faults.restore, node)

    async def remove_node(self, node: str) -> None:
        await self.run(self.faults.remove, node)

    async def kill_agent(self, namespace: str, pod: str, number: int = 9, oom: bool = False) -> None:
        """Signal ``number`` to the pod's agent (``oom``: reported as OOMKilled)."""
        await self.run(self.faults.kill_agent, namespace, pod, number, oom)

    async def freeze_agent(self, namespace: str, pod: str, frozen: bool = True) -> None:
        await self.run(self.faults.freeze_agent, namespace, pod, frozen)

    async def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The stored object (``plural`` as in the REST path), read on the server's loop."""
        resource = next(r for r in RESOURCES if r.plural == plural)

        async def find() -> dict[str, Any] | None:
            return self.store.find(resource, namespace or self.namespace, name)

        return await self.run(find)

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` on the server's loop when the fake stops (before the loop closes)."""
        self._stop_hooks.append(hook)

    def start(self) -> None:
        """Serve on a free loopback port; returns once the server accepts connections."""
        config = uvicorn.Config(
            self.api.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = server = uvicorn.Server(config)
        started = threading.Event()

        async def main() -> None:
            serving = asyncio.create_task(server.serve())
            while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event for it)
                await asyncio.sleep(0.01)
            if server.started:
                port = server.servers[0].sockets[0].getsockname()[1]
                self.base_url = f"http://127.0.0.1:{port}"
            started.set()
            await serving
            # Nothing may outlive the loop: the last tasks (watch streams, probes) are cancelled.
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self._thread = threading.Thread(
            target=self.loop.run_until_complete, args=(main(),), daemon=True, name="fake-kube"
        )
        self._thread.start()
        started.wait(30)
        if not self.base_url:
            raise RuntimeError("the fake API server did not start")
        self._write_kubeconfig()

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.base_url}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": self.namespace}}
            ],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def call(self, function: Callable[..., Awaitable[_T]], *args: Any) -> Future[_T]:
        """Run ``function(*args)`` on the server's loop (a concurrent Future of its result)."""

        async def run() -> _T:
            return await function(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop)

    async def run(self, function: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """:meth:`call` awaited from another event loop."""
        return await asyncio.wrap_future(self.call(function, *args))

    def stop(self) -> None:
        """Run the stop hooks (the kubelet stops every agent), end every watch, stop serving."""
        if self._server is None or self._thread is None:
            return
        for hook in reversed(self._stop_hooks):
            self.call(hook).result(60)
        self.api.stopping = True
        self._server.should_exit = True
        self._thread.join(30)
        self.loop.close()
        self._server = None
