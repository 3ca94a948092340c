"""An unshare ends the sessions already open: the run's guard, on the real node, through Traefik.

For this module the session's operator hands the cluster over to one that renders every run with
its guard (TOOLSHARE_GUARD_IMAGE: the Toolshare image built here, imported into the node), and a
gate of the module's own signs grants with a fresh key and listens where the guards in the Pods
reach it (the node's address). Each test opens, through Traefik and the gate, websockets for alice
(the owner) and bob (shared) and a long download for bob; then takes bob's access away one way or
another and finds his connections closed by the guard (close code 1008, the download cut) while
alice's websocket still answers; carol, never shared, gets no byte at any time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid

import aiohttp
import pytest

from tests.support import rbac
from tests.support.install import resume_session_operator, start_operator
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.routing import through
from tests.support.tools import START, routed, tool_ready, web_run, ws_exchange
from tests.support.wait import wait_for
from toolshare import grant
from toolshare.local import services as devservices
from toolshare.local.controlplane import cluster as controlplane, node as nodemod
from toolshare.local.images import catalog

PORTS = {"lab": 8888}
JUPYTER_START = 300.0  # a cold JupyterLab start on a loaded 2-core machine


@pytest.fixture(scope="module")
def guarded(cluster, operator, oauth2_proxy, router, tmp_path_factory):
    """(the module's gate) while a guarding operator runs instead of the session's."""
    work = tmp_path_factory.mktemp("guarded")
    key = grant.new_key()
    (work / "grant.pem").write_bytes(grant.private_pem(key))
    image = os.environ.get("TOOLSHARE_TEST_IMAGE")
    if not image:
        if cluster.local_dir is None:
            raise RuntimeError("TOOLSHARE_TEST_IMAGE must name a Toolshare image the cluster can pull")
        controlplane.import_images(cluster.local_dir, (catalog.TOOLSHARE,))
        image = catalog.TOOLSHARE
    address = os.environ.get("TOOLSHARE_TEST_HOST_ADDRESS") or nodemod.node_ip()
    gate = devservices.gate(cluster.kubeconfig(), f"{oauth2_proxy.url}/oauth2/auth", work, host=address,
                            grant_key=work / "grant.pem", env=rbac.POLICY_ENV).start()
    operator.stop()
    proc = None
    try:
        proc = start_operator(cluster, work, env={
            "TOOLSHARE_GATE_URL": gate.url, "TOOLSHARE_GUARD_IMAGE": image,
            "TOOLSHARE_GRANT_PUBLIC_KEY": grant.public_text(key)})
        yield gate
    finally:
        if proc is not None:
            proc.stop()
        gate.stop()
        resume_session_operator(cluster, operator)


class Session:
    """One person's open websocket and, optionally, download, through the router."""

    def __init__(self, http: aiohttp.ClientSession, url: str, host: str, token: str):
        self.http, self.url, self.headers = http, url, {"Host": host, "Authorization": f"Bearer {token}"}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.download: aiohttp.ClientResponse | None = None

    async def open(self, download: bool = False) -> "Session":
        self.ws = await self.http.ws_connect(f"{self.url}/lab/ws", headers=self.headers)
        assert await self.say("hello") == "hello"
        if download:
            self.download = await self.http.get(f"{self.url}/lab/download", headers=self.headers)
            assert self.download.status == 200 and len(await self.download.content.readexactly(1024)) == 1024
        return self

    async def say(self, text: str) -> str:
        assert self.ws is not None
        await self.ws.send_str(text)
        answer = await self.ws.receive(timeout=10)
        return answer.data.split(": ", 1)[1]

    async def closed_by_the_guard(self, timeout: float = 30, or_by_its_end: bool = False) -> None:
        """The guard closed the websocket (1008, "access revoked") and cut the download. With
        `or_by_its_end`, the Pod's end may come first (a deleted run's Pod is terminated too)."""
        assert self.ws is not None
        msg = await self.ws.receive(timeout=timeout)
        if not (or_by_its_end and msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)):
            assert (msg.type, msg.data, msg.extra) == (
                aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.POLICY_VIOLATION, "access revoked")
        if self.download is not None:
            with pytest.raises(aiohttp.ClientPayloadError):
                while await asyncio.wait_for(self.download.content.read(65536), timeout=timeout):
                    pass


async def refused(http: aiohttp.ClientSession, url: str, host: str, token: str) -> tuple[int, int]:
    """What carol gets: the websocket's and the download's status, and never a byte of the tool."""
    headers = {"Host": host, "Authorization": f"Bearer {token}"}
    try:
        await http.ws_connect(f"{url}/lab/ws", headers=headers)
        ws_status = 101
    except aiohttp.WSServerHandshakeError as e:
        ws_status = e.status
    async with http.get(f"{url}/lab/download", headers=headers) as r:
        body = await r.read()
        assert b"xxxx" not in body
        return ws_status, r.status


def revoke_case(kind: str, ts: Toolshare) -> None:
    """Take bob's access to `mx` away, the `kind` way."""
    if kind == "share deleted":
        ts.delete("runshares", "bob-in")
    elif kind == "share edited":
        ts.patch("runshares", "bob-in", {"spec": {"users": ["erin"]}})
    elif kind == "share expired":
        soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)).replace(microsecond=0)
        ts.patch("runshares", "bob-in", {"spec": {"expiresAt": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}})
    elif kind == "run deleted":
        ts.delete("toolruns", "mx")
    else:
        raise AssertionError(kind)


# (An owner never changes: spec.owner is immutable, for administrators too, by the CRD's CEL rule.)
@pytest.mark.parametrize("kind", ["share deleted", "share edited", "share expired", "run deleted"])
def test_a_revocation_closes_the_open_connections_of_exactly_who_lost_access(
        kind, guarded, router, issuer, cluster, namespace):
    rbac.bind_edit(cluster, namespace, users=["alice"])
    ts, admin = Toolshare(cluster.client("alice"), namespace), Toolshare(cluster.client(), namespace)
    ts.create(web_run("mx", PORTS))
    ts.create(runshare("bob-in", run="mx", users=["bob"]))
    host = routed(admin, "mx", timeout=START)
    # Ready means both containers: the tool listens and the guard follows the gate.
    assert [c["name"] for c in admin.core.read_namespaced_pod("mx", namespace).to_dict()["spec"]["containers"]] == [
        "tool", "toolshare-guard"]

    # The router picks the route up by itself: until then a websocket is refused.
    wait_for(lambda: ws_exchange(router.url, host, issuer.token("alice"), [])[0] == 101, timeout=60,
             what="alice's websocket routed")

    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            token = {p: issuer.token(p) for p in ("alice", "bob", "carol")}
            alice = await Session(http, router.url, host, token["alice"]).open()
            bob = await Session(http, router.url, host, token["bob"]).open(download=True)
            assert await refused(http, router.url, host, token["carol"]) == (403, 403)
            await asyncio.to_thread(revoke_case, kind, ts)
            ended = kind == "run deleted"
            await bob.closed_by_the_guard(or_by_its_end=ended)
            if ended:  # alice's too: there is no run any more
                await alice.closed_by_the_guard(or_by_its_end=ended)
                return
            assert await alice.say("still here") == "still here"
            assert await refused(http, router.url, host, token["carol"]) == (403, 403)

    asyncio.run(scenario())


def test_the_guard_admits_nothing_that_did_not_come_through_the_gate(guarded, router, issuer, cluster, namespace):
    """Straight to the Pod, past the router: what a co-tenant could try where the NetworkPolicy is
    missing (the host's own traffic is not policed here). The guard wants the gate's grant."""
    admin = Toolshare(cluster.client(), namespace)
    admin.create(web_run("mx", PORTS))
    wait_for(lambda: tool_ready(admin, "mx"), timeout=START, what="mx's tool and guard ready")
    pod = admin.core.read_namespaced_pod("mx", namespace)
    guard = next(c for c in pod.spec.containers if c.name == "toolshare-guard")
    port = next(p.container_port for p in guard.ports if p.name == "lab")
    forged = grant.make(grant.new_key(), namespace, "mx", "lab", "alice", (), dt.datetime.now().timestamp())

    async def scenario() -> list[int]:
        async with aiohttp.ClientSession() as http:
            out = []
            for headers in ({}, {"X-Auth-Request-User": "alice"}, {grant.HEADER: forged, "X-Auth-Request-User": "alice"}):
                async with http.get(f"http://{pod.status.pod_ip}:{port}/lab/tree", headers=headers) as r:
                    out.append(r.status)
                    assert "hello" not in await r.text()
            return out

    assert asyncio.run(scenario()) == [403, 403, 403]


def test_an_unshare_closes_bobs_jupyterlab_kernel_websocket_and_not_alices(guarded, router, issuer, cluster, namespace):
    """The real thing: JupyterLab's kernel channels, through Traefik and the guard."""
    admin = Toolshare(cluster.client(), namespace)
    run = toolrun("lab", endpoints=[{"name": "lab", "port": 8888, "protocol": "http", "path": "/lab"}])
    run["spec"]["image"] = catalog.JUPYTERLAB
    run["spec"]["env"] = [{"name": "JUPYTER_BASE_URL", "value": "/lab/"}]
    admin.create(run)
    admin.create(runshare("bob-in", run="lab", users=["bob"]))
    host = routed(admin, "lab", timeout=JUPYTER_START)

    async def kernel_channel(http: aiohttp.ClientSession, person: str):
        """A kernel of `person`'s and its channels websocket, as JupyterLab's page opens them."""
        headers = {"Host": host, "Authorization": f"Bearer {issuer.token(person)}"}
        async with http.get(f"{router.url}/lab/lab", headers=headers) as page:  # sets the _xsrf cookie
            assert page.status == 200
            xsrf = page.cookies["_xsrf"].value
        headers = {**headers, "X-XSRFToken": xsrf, "Cookie": f"_xsrf={xsrf}"}
        async with http.post(f"{router.url}/lab/api/kernels", headers=headers, json={"name": "python3"}) as r:
            assert r.status == 201, await r.text()
            kernel = (await r.json())["id"]
        ws = await http.ws_connect(f"{router.url}/lab/api/kernels/{kernel}/channels", headers=headers)
        await kernel_info(ws)
        return ws

    # The router and JupyterLab both come up by themselves: until then the page is not served.
    wait_for(lambda: through(router, host, "/lab/lab", issuer.token("alice"))[0] == 200, timeout=JUPYTER_START,
             what="JupyterLab served to alice through Traefik")

    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=JUPYTER_START),
                                         cookie_jar=aiohttp.DummyCookieJar()) as http:
            alice = await kernel_channel(http, "alice")
            bob = await kernel_channel(http, "bob")
            await asyncio.to_thread(admin.delete, "runshares", "bob-in")
            msg = await bob.receive(timeout=30)
            while msg.type == aiohttp.WSMsgType.TEXT:  # the kernel's own messages still on their way
                msg = await bob.receive(timeout=30)
            assert (msg.type, msg.data, msg.extra) == (
                aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.POLICY_VIOLATION, "access revoked")
            await kernel_info(alice)  # alice's kernel still answers her
            await alice.close()

    asyncio.run(scenario())


async def kernel_info(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Ask the kernel who it is (Jupyter messaging v5 over the channels websocket); wait for the reply."""
    msg_id = uuid.uuid4().hex
    await ws.send_str(json.dumps({"header": {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": "",
                                             "session": uuid.uuid4().hex, "date": "", "version": "5.3"},
                                  "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell"}))
    while True:
        msg = await ws.receive(timeout=60)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        reply = json.loads(msg.data)
        if reply.get("parent_header", {}).get("msg_id") == msg_id and reply["msg_type"] == "kernel_info_reply":
            return


def test_a_guard_that_cannot_reach_the_gate_fails_closed_and_shows_on_the_runs_status(
        guarded, router, issuer, cluster, namespace):
    admin = Toolshare(cluster.client(), namespace)
    admin.create(web_run("mx", PORTS))
    host = routed(admin, "mx", timeout=START)
    wait_for(lambda: through(router, host, "/lab/tree", issuer.token("alice"))[0] == 200, what="alice in")
    guarded.stop()  # the gate this module's guards follow

    def tool_condition():
        run = admin.get("toolruns", "mx") or {}
        return next((c for c in (run.get("status") or {}).get("conditions") or [] if c["type"] == "ToolReady"), {})

    try:
        # Not Ready: the Service sends the router nothing, and the run's status names the guard.
        cond = wait_for(lambda: (c := tool_condition()).get("status") == "False" and c, timeout=60,
                        what="ToolReady False once the guard has lost the gate")
        assert cond["reason"] == "ContainersNotReady" and "toolshare-guard" in cond["message"], cond
        assert through(router, host, "/lab/tree", issuer.token("alice"))[0] != 200
    finally:
        guarded.start()
    wait_for(lambda: tool_condition().get("status") == "True", timeout=60, what="ToolReady again with the gate back")
    wait_for(lambda: through(router, host, "/lab/tree", issuer.token("alice"))[0] == 200, what="alice in again")
