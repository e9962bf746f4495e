"""The simulated cluster behind the fake API: scheduler + kubelet, controllers, faults."""

from __future__ import annotations

from pathlib import Path

from fake_kube.extensions import ExtensionsController
from fake_kube.kubelet import NODES, Kubelet
from fake_kube.nodes import Faults
from fake_kube.sandboxes import SandboxController
from fake_kube.store import Store


class Cluster:
    """Everything that acts on the store by itself; ``errors``: what went wrong in it."""

    def __init__(self, store: Store, folder: Path, nodes: tuple[str, ...] = NODES) -> None:
        self.kubelet = Kubelet(store, folder, nodes)
        self.sandboxes = SandboxController(store)
        self.extensions = ExtensionsController(store)
        self.faults = Faults(store, self.kubelet)

    @property
    def errors(self) -> list[BaseException]:
        return [*self.kubelet.errors, *self.sandboxes.reconciler.errors, *self.extensions.reconciler.errors]
