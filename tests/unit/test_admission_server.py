"""The admission transport (admission/server.py): AdmissionReview in, answer out, fail closed.

The hooks' decisions are tested on the cluster (tests/integration/test_admission.py and others);
here, what the transport adds: the answer's shape, JSON patches, refusals with their codes, a
hook that fails, malformed or misrouted reviews, and the served TLS endpoint — served on the
operator's event loop (toolshare.eventloop), whose TLS is not asyncio's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl

import aiohttp
import jsonpatch
import pytest
from prometheus_client import REGISTRY

from toolshare import eventloop
from toolshare.admission import server, webhooks
from toolshare.admission.certs import ensure_certs
from toolshare.admission.server import Refused, Review
from toolshare.local.controlplane.cluster import free_port

ALICE = {"username": "alice", "groups": ["system:authenticated"]}


def review(resource="runshares", operation="CREATE", obj=None, old=None, userinfo=ALICE, version="v1") -> dict:
    return {"apiVersion": f"admission.k8s.io/{version}", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": operation, "namespace": "team", "userInfo": userinfo,
                        "resource": {"group": "toolshare.dev", "version": "v1alpha1", "resource": resource},
                        "object": obj, "oldObject": old}}


def decide(hooks, hook_id, body) -> dict:
    return asyncio.run(server.decide(hooks, hook_id, body))


def patched(obj: dict, answer: dict) -> dict:
    ops = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert answer["response"]["patchType"] == "JSONPatch"
    return jsonpatch.apply_patch(obj, ops)


SHARE = {"metadata": {"name": "s", "namespace": "team"}, "spec": {"runRef": {"name": "r"}, "users": ["bob"]}}


def test_the_sharer_is_stamped_whether_or_not_annotations_exist():
    hooks = {"runshare-sharer": webhooks.HOOKS["runshare-sharer"]}
    for obj in (SHARE, {**SHARE, "metadata": {**SHARE["metadata"], "annotations": {"keep/me": "x"}}}):
        answer = decide(hooks, "runshare-sharer", review(obj=obj))
        assert answer["response"] == {**answer["response"], "uid": "u-1", "allowed": True}
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        annotations = patched(obj, answer)["metadata"]["annotations"]
        assert annotations["toolshare.dev/shared-by"] == "alice"
        assert annotations.get("keep/me") == obj["metadata"].get("annotations", {}).get("keep/me")


def test_the_owner_is_stamped_on_a_run_without_one():
    hooks = {"toolrun-owner": webhooks.HOOKS["toolrun-owner"]}
    run = {"metadata": {"name": "r", "namespace": "team"}, "spec": {"image": "x"}}
    answer = decide(hooks, "toolrun-owner", review("toolruns", obj=run))
    assert patched(run, answer)["spec"] == {"image": "x", "owner": "alice"}
    owned = {**run, "spec": {"image": "x", "owner": "alice"}}
    assert "patch" not in decide(hooks, "toolrun-owner", review("toolruns", obj=owned))["response"]


def test_a_malformed_requester_is_refused_by_the_mutating_hook():
    hooks = {"runshare-sharer": webhooks.HOOKS["runshare-sharer"]}
    answer = decide(hooks, "runshare-sharer", review(obj=SHARE, userinfo={"username": "bad,name"}))
    assert answer["response"]["allowed"] is False and answer["response"]["status"]["code"] == 403
    assert "patch" not in answer["response"]


def test_a_refusal_carries_its_message_and_code_and_the_request_version():
    async def refuse(r: Review):
        raise Refused("spec.users: nope", code=503)

    answer = decide({"h": ("runshares", refuse)}, "h", review(obj=SHARE, version="v1beta1"))
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1"
    assert answer["response"] == {"uid": "u-1", "allowed": False, "status": {"code": 503, "message": "spec.users: nope"}}


def test_a_hook_that_fails_refuses():
    async def broken(r: Review):
        raise KeyError("spec")

    answer = decide({"h": ("runshares", broken)}, "h", review(obj=SHARE))
    assert answer["response"]["allowed"] is False and answer["response"]["status"]["code"] == 500


def test_the_old_object_is_the_body_of_a_delete():
    seen = []

    async def hook(r: Review):
        seen.append((r.operation, r.body, r.namespace, r.resource))
        return []

    decide({"h": ("runshares", hook)}, "h", review(operation="DELETE", obj=None, old=SHARE))
    assert seen == [("DELETE", SHARE, "team", "runshares")]


@pytest.mark.parametrize("body, why", [
    ({"apiVersion": "admission.k8s.io/v1"}, "no request"),
    (review(userinfo=None, obj=SHARE), "userInfo"),
    (review(obj=None, old=None), "both missing"),
    (review("toolruns", obj=SHARE), "reviews runshares, not toolruns"),
])
def test_malformed_or_misrouted_reviews_are_not_judged(body, why):
    async def allow(r: Review):
        return []

    with pytest.raises(ValueError, match=why):
        decide({"h": ("runshares", allow)}, "h", body)


def test_every_hook_reviews_what_its_configuration_sends():
    from toolshare.admission import webhookconfig

    assert {(i, p) for i, p, _ in webhookconfig.HOOKS} == {(i, p) for i, (p, _) in webhooks.HOOKS.items()}


def test_the_server_answers_over_tls_refuses_garbage_and_unknown_hooks(tmp_path):
    ca, cert, key = ensure_certs(tmp_path, "127.0.0.1")
    seen_ca = []

    async def allow(r: Review):
        return [{"op": "add", "path": server.pointer("metadata", "annotations", "a/b~c"), "value": "1"}]

    async def on_ca(pem: bytes):
        seen_ca.append(pem)

    async def scenario():
        port = free_port()
        srv = server.Server({"h": ("runshares", allow)}, "127.0.0.1", port, cert, key, ca, on_ca=on_ca)
        await srv.start()
        try:
            context = ssl.create_default_context(cafile=str(ca))
            async with aiohttp.ClientSession() as session:
                url = f"https://127.0.0.1:{port}"
                async with session.post(f"{url}/h", json=review(obj={"metadata": {"annotations": {}}}), ssl=context) as r:
                    answer = await r.json()
                async with session.post(f"{url}/h", data=b"{not json", ssl=context) as r:
                    garbage = r.status
                async with session.post(f"{url}/nope", json=review(obj=SHARE), ssl=context) as r:
                    unknown = r.status
            kept_alive = handshakes() - before
            async with aiohttp.ClientSession() as session:  # a new connection: one more handshake
                async with session.post(f"{url}/h", json=review(obj=SHARE), ssl=context) as r:
                    assert r.status == 200
            return answer, garbage, unknown, kept_alive, handshakes() - before
        finally:
            await srv.stop()

    def handshakes() -> float:
        return REGISTRY.get_sample_value("toolshare_webhook_tls_handshakes_total") or 0.0

    before = handshakes()
    answer, garbage, unknown, kept_alive, both = eventloop.run(scenario())
    assert (kept_alive, both) == (1, 2)  # three calls on one kept-alive connection are one handshake
    assert answer["response"]["allowed"] is True
    assert patched({"metadata": {"annotations": {}}}, answer)["metadata"]["annotations"] == {"a/b~c": "1"}
    assert (garbage, unknown) == (400, 404)
    assert seen_ca == [ca.read_bytes()]


def test_a_renewed_certificate_is_served_and_a_new_ca_reconfigures(tmp_path):
    ca, cert, key = ensure_certs(tmp_path / "one", "127.0.0.1")
    other_ca, other_cert, other_key = ensure_certs(tmp_path / "two", "127.0.0.1")
    seen_ca = []

    async def allow(r: Review):
        return []

    async def on_ca(pem: bytes):
        seen_ca.append(pem)

    async def served_by(port: int, cafile) -> bool:
        context = ssl.create_default_context(cafile=str(cafile))
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"https://127.0.0.1:{port}/h", json=review(obj=SHARE), ssl=context) as r:
                    return r.status == 200
        except aiohttp.ClientConnectorCertificateError:
            return False

    async def scenario():
        port = free_port()
        srv = server.Server({"h": ("runshares", allow)}, "127.0.0.1", port, cert, key, ca, on_ca=on_ca,
                            check_seconds=0.05)
        await srv.start()
        try:
            before = await served_by(port, ca)
            for src, dst in ((other_ca, ca), (other_cert, cert), (other_key, key)):
                dst.write_bytes(src.read_bytes())
            while len(seen_ca) < 2:  # the follower noticed: the configurations get the new CA
                await asyncio.sleep(0.05)
            return before, await served_by(port, other_ca)
        finally:
            await srv.stop()

    before, after = eventloop.run(scenario())
    assert before and after
    assert seen_ca[-1] == other_ca.read_bytes()


def client_pki(directory, *names: str):
    """A client CA in `directory` and a client certificate from it per name: {name: (key, cert)}."""
    from toolshare import pki

    directory.mkdir(parents=True, exist_ok=True)
    pki.ensure_ca(directory, "clients", "clients")
    return directory / "clients.crt", {n: pki.ensure_client_cert(directory, n, n, ca="clients") for n in names}


async def call(port: int, ca, client=None) -> int | str:
    """POST a review as `client` (key, cert) or with no certificate: the status, or why it failed."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client[1]), str(client[0]))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"https://127.0.0.1:{port}/h", json=review(obj=SHARE), ssl=context) as r:
                return r.status
    except (aiohttp.ClientError, ssl.SSLError, OSError) as e:
        return type(e).__name__


def test_with_a_client_ca_only_the_named_client_is_answered(tmp_path):
    """The oracle closed: no certificate, no handshake; a certificate from the client CA for anyone
    but an allowed client (alice, say) gets 403 and the hook never runs; the allowed one is answered."""
    ca, cert, key = ensure_certs(tmp_path / "serving", "127.0.0.1")
    client_ca, clients = client_pki(tmp_path / "clients", "kube-apiserver-webhook-client", "alice")
    other_ca, strangers = client_pki(tmp_path / "other", "kube-apiserver-webhook-client")
    decided = []

    async def allow(r: Review):
        decided.append(r.userinfo["username"])
        return []

    async def scenario():
        port = free_port()
        srv = server.Server({"h": ("runshares", allow)}, "127.0.0.1", port, cert, key, ca,
                            client_ca=client_ca, client_names=frozenset({"kube-apiserver-webhook-client"}))
        await srv.start()
        try:
            return (await call(port, ca), await call(port, ca, clients["alice"]),
                    await call(port, ca, strangers["kube-apiserver-webhook-client"]),
                    await call(port, ca, clients["kube-apiserver-webhook-client"]))
        finally:
            await srv.stop()

    refused = REGISTRY.get_sample_value("toolshare_webhook_callers_refused_total")
    anonymous, alice, stranger, apiserver = eventloop.run(scenario())
    assert isinstance(anonymous, str) and isinstance(stranger, str)  # refused in the handshake
    assert (alice, apiserver) == (403, 200)
    assert decided == ["alice"]  # the review's user, asked about once: by the allowed client
    # On the metrics: authentication on, and the one certificate refused (the others never got in).
    assert REGISTRY.get_sample_value("toolshare_webhook_client_auth") == 1
    assert REGISTRY.get_sample_value("toolshare_webhook_callers_refused_total") == refused + 1


def test_a_replaced_client_ca_is_no_longer_trusted(tmp_path):
    """A context's trust store only grows: the server swaps in a new one, so the old CA's clients
    are refused once the file changes (a rotation, or a CA withdrawn)."""
    ca, cert, key = ensure_certs(tmp_path / "serving", "127.0.0.1")
    name = "kube-apiserver-webhook-client"
    old_ca, old = client_pki(tmp_path / "old", name)
    new_ca, new = client_pki(tmp_path / "new", name)
    client_ca = tmp_path / "client-ca.crt"
    client_ca.write_bytes(old_ca.read_bytes())

    async def allow(r: Review):
        return []

    async def scenario():
        port = free_port()
        srv = server.Server({"h": ("runshares", allow)}, "127.0.0.1", port, cert, key, ca, check_seconds=0.05,
                            client_ca=client_ca, client_names=frozenset({name}))
        await srv.start()
        try:
            before = (await call(port, ca, old[name]), await call(port, ca, new[name]))
            listening = srv._context
            client_ca.write_bytes(new_ca.read_bytes())
            while srv._context is listening:  # the follower noticed the file
                await asyncio.sleep(0.05)
            return before, (await call(port, ca, old[name]), await call(port, ca, new[name]))
        finally:
            await srv.stop()

    (old_before, new_before), (old_after, new_after) = eventloop.run(scenario())
    assert old_before == 200 and isinstance(new_before, str)
    assert isinstance(old_after, str) and new_after == 200


@pytest.mark.parametrize("peercert, allowed, problem", [
    ({"subject": ((("commonName", "kube-apiserver-webhook-client"),),)}, {"kube-apiserver-webhook-client"}, None),
    ({"subject": ((("organizationName", "x"),),), "subjectAltName": (("DNS", "api.example"),)}, {"api.example"}, None),
    ({"subject": ((("commonName", "alice"),),), "subjectAltName": (("URI", "kube-apiserver-webhook-client"),)},
     {"kube-apiserver-webhook-client"}, "client certificate alice is not an allowed webhook client"),
    (None, {"kube-apiserver-webhook-client"}, "a client certificate is required"),
    ({}, {"kube-apiserver-webhook-client"}, "a client certificate is required"),
    (None, set(), None),  # no client CA: not authenticated
])
def test_which_client_certificates_are_answered(peercert, allowed, problem):
    assert server.client_problem(peercert, frozenset(allowed)) == problem


def test_a_client_ca_without_names_is_refused(tmp_path):
    ca, cert, key = ensure_certs(tmp_path, "127.0.0.1")
    with pytest.raises(ValueError, match="client names"):
        server.Server({}, "127.0.0.1", 1, cert, key, ca, client_ca=ca)


def test_the_hooks_are_served_only_after_the_controller_filled_the_cache(monkeypatch):
    from toolshare import manager
    from toolshare.controller import handlers

    order = []

    async def controller_start():
        order.append("cache filled, watches started")

    async def hooks_start():
        order.append("hooks listening")
        return "server"

    monkeypatch.setattr(handlers, "start", controller_start)
    monkeypatch.setattr(webhooks, "start", hooks_start)
    servers: list = []
    asyncio.run(manager.start(servers, set()))
    assert order == ["cache filled, watches started", "hooks listening"] and servers == ["server"]


def test_a_start_up_retried_by_kopf_starts_nothing_twice(monkeypatch):
    from toolshare import manager
    from toolshare.controller import handlers

    starts = {"controller": 0, "hooks": 0}

    async def controller_start():
        starts["controller"] += 1

    async def hooks_start():
        starts["hooks"] += 1
        if starts["hooks"] == 1:
            raise OSError("address already in use")
        return "server"

    monkeypatch.setattr(handlers, "start", controller_start)
    monkeypatch.setattr(webhooks, "start", hooks_start)
    servers: list = []
    done: set = set()
    with pytest.raises(OSError):
        asyncio.run(manager.start(servers, done))
    asyncio.run(manager.start(servers, done))  # kopf's retry
    assert starts == {"controller": 1, "hooks": 2} and servers == ["server"]
