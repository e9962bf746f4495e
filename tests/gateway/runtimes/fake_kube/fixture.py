"""The ``fake_kube`` fixture (imported by tests/gateway/runtimes/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fake_kube.harness import FakeKube


@pytest.fixture
def fake_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKube]:
    """A started :class:`FakeKube`; stopped afterwards, with every agent process it started.
    A test after which the fake's own controllers or kubelet failed fails too."""
    kube = FakeKube(tmp_path_factory.mktemp("fake-kube"))
    kube.start()
    try:
        yield kube
    finally:
        kube.stop()
    assert not kube.errors, f"the fake Kubernetes cluster failed: {kube.errors!r}"
