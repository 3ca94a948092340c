"""Test tiers: tests/unit need nothing; tests/integration run on a real API server.

The integration tier is never skipped for want of a cluster: a missing control-plane binary is built,
and if it cannot be, the session fails with the builder's message.
"""

from __future__ import annotations

import hashlib
import kubernetes
import pytest

from tests.support import cluster as support

pytest_plugins = ["tests.support.auth", "tests.support.routing"]  # issuer, oauth2_proxy, gate; router


def pytest_addoption(parser):
    parser.addoption("--toolshare-kubeconfig", default=None,
                     help="run the integration tests against this cluster (same as TOOLSHARE_KUBECONFIG)")


def pytest_configure(config):
    path = config.getoption("--toolshare-kubeconfig")
    if path:
        import os

        os.environ["TOOLSHARE_KUBECONFIG"] = path


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
    from tests.support.install import install_crds

    install_crds(cluster)
    return True


@pytest.fixture(scope="session")
def operator(cluster, crds, gate_port, tmp_path_factory):
    """The operator, one process for the session, watching the whole cluster, as in production:
    under its service account bound to exactly manifests/rbac (not as admin), serving its
    admission webhooks over TLS on 127.0.0.1. Its Ingresses name the session's gate as auth-url
    (no cluster DNS here for the router to find a gate Service by name)."""
    import os

    from tests.support.install import start_operator

    # The session operator's settings are this process's environment: it inherits them, and
    # tests/support/expected.py renders what it should have written with them.
    os.environ["TOOLSHARE_GATE_URL"] = f"http://127.0.0.1:{gate_port}"
    proc = start_operator(cluster, tmp_path_factory.mktemp("operator"))
    yield proc
    proc.stop()
    print(f"operator log: {proc.log_path}")
