"""Test tiers: tests/unit need nothing; tests/integration run on a real API server.

The integration tier is never skipped for want of a cluster: a missing control-plane binary is built,
and if it cannot be, the session fails with the builder's message.
"""

from __future__ import annotations

import hashlib
import kubernetes
import pytest

from tests.support import cluster as support

pytest_plugins = ["tests.support.auth"]  # issuer, oauth2_proxy, gate fixtures


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster():
    tc = support.start()
    yield tc
    support.stop(tc)


@pytest.fixture
def namespace(cluster, request):
    """A fresh namespace per test, deleted afterwards (the namespace controller cleans up)."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]
    base = request.node.name.lower().replace("_", "-")
    name = f"t-{''.join(c for c in base if c.isalnum() or c == '-')[:40].strip('-')}-{digest}"
    core = kubernetes.client.CoreV1Api(cluster.client())
    core.create_namespace({"metadata": {"name": name, "labels": {"toolshare.dev/test": "true"}}})
    yield name
    try:
        core.delete_namespace(name)
    except kubernetes.client.ApiException as e:
        if e.status != 404:
            raise


@pytest.fixture(scope="session")
def crds(cluster):
    """crds/ applied server-side (the one CRD source) and Established."""
    from toolshare.controlplane.binaries import ensure_binaries
    from toolshare.devenv import install_crds

    install_crds(ensure_binaries(), cluster.kubeconfig())
    return True


@pytest.fixture(scope="session")
def operator(cluster, crds, tmp_path_factory):
    """The operator, one process for the session, watching the whole cluster."""
    from tests.support.operator import OperatorProcess

    proc = OperatorProcess(cluster.kubeconfig(), tmp_path_factory.mktemp("operator") / "operator.log")
    proc.start()
    yield proc
    proc.stop()
    print(f"operator log: {proc.log_path}")
