"""An in-process fake Kubernetes API server and cluster for the Kubernetes runtime's tests.

See :class:`fake_kube.harness.FakeKube` and the ``fake_kube`` fixture
(:mod:`fake_kube.fixture`); docs/ names what it implements and what it does not.
"""
