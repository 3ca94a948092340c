"""An API server that is away (restarting) makes a reconcile retry later; it never escapes as a
transport error, which kopf would log and drop with the event (on.event handlers are not retried).

The client below is the official one talking to a real, closed port on 127.0.0.1: the connection
is really refused, nothing is mocked.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import kubernetes
import pytest

from toolshare import access
from toolshare.client.kube import Kube
from toolshare.controller.reconcile import Reconciler, RetryLater
from toolshare.local.controlplane.cluster import free_port
from toolshare.settings import Settings

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
RUN = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
       "metadata": {"name": "nb", "namespace": "ns", "uid": "u1", "generation": 1, "resourceVersion": "1"},
       "spec": {"owner": "alice", "image": "busybox", "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"}]}}
SHARE = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare",
         "metadata": {"name": "s", "namespace": "ns", "uid": "u2", "generation": 1, "resourceVersion": "2",
                      "annotations": {"toolshare.dev/shared-by": "alice", "toolshare.dev/shared-by-groups": ""}},
         "spec": {"runRef": {"name": "nb"}, "users": ["bob"]}}


@pytest.fixture
def reconciler():
    config = kubernetes.client.Configuration()
    config.host = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    config.retries = 0
    client = kubernetes.client.ApiClient(config)
    yield Reconciler(Kube(client), Settings())
    client.close()


def test_unreachable_api_server_means_retry_later_for_a_run(reconciler):
    with pytest.raises(RetryLater, match="unreachable"):
        asyncio.run(reconciler.reconcile_run(RUN, [SHARE], {"nb": RUN}, {}, None, NOW))


def test_unreachable_api_server_keeps_the_share_verdict_for_its_runs(reconciler):
    with pytest.raises(RetryLater) as err:
        asyncio.run(reconciler.reconcile_share(SHARE, {"nb": RUN}, NOW))
    assert err.value.result == access.share_state(SHARE, {"nb": RUN}, NOW, reconciler.policy)
    assert err.value.result.runs == ("nb",)


def test_unreachable_api_server_retries_an_image_share_status(reconciler):
    """An ImageShare status write that cannot land is scheduled again (it used to be dropped)."""
    from toolshare.controller import imageshares, work
    from toolshare.state.cache import CACHE

    share = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ImageShare",
             "metadata": {"name": "img", "namespace": "ns", "uid": "u-img", "generation": 1, "resourceVersion": "3"},
             "spec": {"owner": "alice", "image": "registry.example.org/team/nb", "users": ["bob"]}}
    work.RT.reconciler, saved = reconciler, work.RT.reconciler
    CACHE.put("imageshares", share)
    key = ("imageshare", "registry.example.org/team/nb")

    async def attempt():
        await imageshares.reconcile_repository("registry.example.org/team/nb")
        timer = work.RT.timers.timers.pop(key)
        timer.cancel()
        return work.RT.timers.backoff.pop(key)

    try:
        assert asyncio.run(attempt()) == 1.0  # the first retry, a second later
    finally:
        CACHE.drop("imageshares", share)
        work.RT.reconciler = saved
