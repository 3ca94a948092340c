"""The router of the test session: Traefik reading the operator's Ingresses (toolshare.local.traefik).

Loaded as a pytest plugin from tests/conftest.py. One router for the whole session, as one Ingress
controller serves a cluster: it picks up each test's Ingresses by itself (EndpointSlices give it the
tool Pods' addresses on the node), and a request names the run's host in Host.
"""

from __future__ import annotations

import pytest

from tests.support.auth import get
from toolshare.local.traefik import Traefik


@pytest.fixture(scope="session")
def router(cluster, tmp_path_factory):
    """Traefik serving both the Ingresses and, through the Gateway API CRDs it installs, the
    HTTPRoutes attached to its Gateway toolshare-router/toolshare (test_routing_matrix)."""
    traefik = Traefik(tmp_path_factory.mktemp("traefik"), cluster.client(), gateway=True).start()
    yield traefik
    traefik.stop()


def through(router, host: str, path: str, token: str | None = None, headers: dict | None = None):
    """(status, headers, body) of a GET of `path` on `host` through the router."""
    return get(f"{router.url}{path}", token, {"Host": host, **(headers or {})})
