"""Session fixtures for the sign-in path: a dev OIDC issuer, a real oauth2-proxy, the gate.

Loaded as a pytest plugin from tests/conftest.py. The gate runs as `toolshare gate` in its own
process against the session's API server, as it would be deployed.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.support import rbac
from toolshare.local import services as devservices
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.controlplane.cluster import free_port
from toolshare.local.issuer import DevIssuer


@pytest.fixture(scope="session")
def issuer():
    iss = DevIssuer().start()
    yield iss
    iss.stop()


@pytest.fixture(scope="session")
def oauth2_proxy(issuer, tmp_path_factory):
    svc = devservices.oauth2_proxy(issuer.url, tmp_path_factory.mktemp("oauth2-proxy")).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def gate_port():
    """The session gate's port, known before it starts: the operator renders it into auth-url."""
    return free_port()


@pytest.fixture(scope="session")
def gate(cluster, crds, oauth2_proxy, gate_port, tmp_path_factory):
    """The gate under its own service account, bound to exactly manifests/gate's ClusterRole (as
    deployed): what it reads and what it may write as the people on its page are the real rights."""
    work = tmp_path_factory.mktemp("gate")
    kubeconfig = rbac.install_gate(ensure_binaries(), cluster, work / "gate.kubeconfig")
    svc = devservices.gate(kubeconfig, f"{oauth2_proxy.url}/oauth2/auth", work, port=gate_port,
                           env=rbac.POLICY_ENV).start()
    yield svc
    svc.stop()


def get(url: str, token: str | None = None, headers: dict | None = None) -> tuple[int, dict, str]:
    """(status, headers, body) of a GET, bearer `token` if given; no redirects, no raise on errors."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, headers=h)
    try:
        with devservices.NO_REDIRECT.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


PEOPLE = ("alice", "bob", "carol", "dave", None)  # owner, shared user, group member, stranger, anonymous


def matrix(gate_url: str, issuer: DevIssuer, namespace: str, run: str, endpoint: str,
           people=PEOPLE) -> tuple[int, ...]:
    """The gate's answer for each person (None = no credentials) on one endpoint."""
    return tuple(get(f"{gate_url}/check/{namespace}/{run}/{endpoint}",
                     issuer.token(p) if p else None)[0] for p in people)
