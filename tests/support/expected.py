"""What a namespace should look like, from the pure renderer, compared with what the API server holds.

The expected children and statuses are computed from the ToolRuns and RunShares stored now (read
back from the API server, never from the test's own memory) with render.render_children /
run_status / share_state, stamped as the reconciler stamps them (owner reference, render hash).
The actual children are read back as raw JSON; fields the API server fills in (uid, defaults,
clusterIP, managedFields...) are ignored by projecting each actual object onto the fields the
renderer sets, so anything Toolshare sets must be equal, and nothing extra may exist.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping

import kubernetes

from tests.support import rbac
from toolshare import access, model, render
from toolshare.controller.reconcile import ROUTE_CHILD_KINDS, finish_child
from toolshare.model import host_claims
from toolshare.policy import Policy
from toolshare.settings import Settings

GROUP, VERSION = "toolshare.dev", "v1alpha1"
# (api path prefix, plural) of each child kind the operator writes.
CHILDREN = {"Pod": ("/api/v1", "pods"), "Service": ("/api/v1", "services"),
            "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
            "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
            # TOOLSHARE_ROUTING=gateway; a cluster without their CRDs has none of them.
            "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
            "Middleware": ("/apis/traefik.io/v1alpha1", "middlewares"),
            "SecurityPolicy": ("/apis/gateway.envoyproxy.io/v1alpha1", "securitypolicies")}
CRD_CHILDREN = {"HTTPRoute", "Middleware", "SecurityPolicy"}
MANAGED = f"{model.LABEL_MANAGED_BY}={model.MANAGED_BY}"
# The operator under test runs with the tests' policy (tests/support/install.py) and the
# environment's settings.
POLICY = Policy.from_env(rbac.POLICY_ENV)


def _get(client: kubernetes.client.ApiClient, path: str, query: list | None = None, missing_ok: bool = False) -> dict:
    method, url, headers, _, _ = client.param_serialize("GET", path, query_params=query or [],
                                                        auth_settings=["BearerToken"])
    resp = client.call_api(method, url, header_params=headers, _request_timeout=30)
    data = resp.read()
    if resp.status == 404 and missing_ok:  # a kind that is not served
        return {"items": []}
    if resp.status != 200:
        raise AssertionError(f"GET {path}: {resp.status} {data[:300]!r}")
    return json.loads(data)


def stored(client, namespace: str, plural: str) -> list[dict]:
    return _get(client, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}")["items"]


def actual_children(client, namespace: str) -> dict[tuple[str, str], dict]:
    out = {}
    for kind, (prefix, plural) in CHILDREN.items():
        listed = _get(client, f"{prefix}/namespaces/{namespace}/{plural}", [("labelSelector", MANAGED)],
                      missing_ok=kind in CRD_CHILDREN)
        for obj in listed["items"]:  # items of a list carry no kind or apiVersion of their own
            out[(kind, obj["metadata"]["name"])] = {"apiVersion": listed["apiVersion"], "kind": kind, **obj}
    return out


def expected_children(runs: list[Mapping], shares: list[Mapping], now: dt.datetime,
                      settings: Settings) -> dict[tuple[str, str], dict]:
    by_name = {r["metadata"]["name"]: r for r in runs}
    claims = host_claims(runs, settings)
    out = {}
    for run in runs:
        if model.validate_run(run):
            continue  # Ready=False InvalidSpec and no children
        holder = claims.get(model.host_for(run, settings))
        conflict = holder is not None and holder["metadata"]["uid"] != run["metadata"]["uid"]
        for child in render.render_children(run, shares, settings, now, by_name, POLICY):
            if conflict and child["kind"] in ROUTE_CHILD_KINDS:
                continue
            out[(child["kind"], child["metadata"]["name"])] = finish_child(child, run)
    return out


def project(actual, desired):
    """`actual` cut down to the shape of `desired`: dict keys it names, lists element by element."""
    if isinstance(desired, Mapping) and isinstance(actual, Mapping):
        return {k: project(actual[k], v) for k, v in desired.items() if k in actual}
    if isinstance(desired, list) and isinstance(actual, list) and len(desired) == len(actual):
        return [project(a, d) for a, d in zip(actual, desired)]
    return actual


def _changes(got, want, path: str = "") -> list[str]:
    """Where `got` differs from `want`, as 'path: got != want' lines."""
    if isinstance(want, Mapping) and isinstance(got, Mapping):
        return [c for k in want for c in _changes(got.get(k), want[k], f"{path}.{k}")]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [c for i, (g, w) in enumerate(zip(got, want)) for c in _changes(g, w, f"{path}[{i}]")]
    return [] if got == want else [f"{path}: {json.dumps(got)} != {json.dumps(want)}"]


def _ready(obj: Mapping) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)


def run_expectation(run: Mapping, runs: list[Mapping], shares: list[Mapping], now: dt.datetime,
                    settings: Settings) -> dict:
    """The status fields of one run the operator must have written (urls, sharedWith, Ready)."""
    problems = model.validate_run(run)
    if problems:
        return {"urls": [], "sharedWith": {"users": [], "groups": [], "summary": ""},
                "ready": ("False", "InvalidSpec", "; ".join(problems))}
    by_name = {r["metadata"]["name"]: r for r in runs}
    status = render.run_status(run, shares, settings, now, by_name, POLICY)
    holder = host_claims(runs, settings).get(model.host_for(run, settings))
    if holder is not None and holder["metadata"]["uid"] != run["metadata"]["uid"]:
        return {**status, "ready": ("False", "FriendlyNameConflict", None)}
    return {**status, "ready": ("True", "Reconciled", None)}


def differences(client, namespace: str, settings: Settings | None = None) -> list[str]:
    """Every way the namespace differs from what the renderer says now; [] when converged."""
    settings = settings or Settings.from_env()
    runs, shares = stored(client, namespace, "toolruns"), stored(client, namespace, "runshares")
    now = dt.datetime.now(dt.timezone.utc)
    want, have = expected_children(runs, shares, now, settings), actual_children(client, namespace)
    out = [f"missing {k}" for k in sorted(set(want) - set(have))]
    out += [f"unexpected {k}" for k in sorted(set(have) - set(want))]
    for key in sorted(set(want) & set(have)):
        desired = {k: v for k, v in want[key].items() if k != "status"}
        if (got := project(have[key], desired)) != desired:
            out.append(f"{key} differs: " + "; ".join(_changes(got, desired)))
    for run in runs:
        name, status = run["metadata"]["name"], run.get("status") or {}
        expect = run_expectation(run, runs, shares, now, settings)
        cond = _ready(run) or {}
        got = {"urls": status.get("urls"), "sharedWith": status.get("sharedWith"),
               "ready": (cond.get("status"), cond.get("reason"), cond.get("message") if expect["ready"][2] else None)}
        if got != expect or cond.get("observedGeneration") != run["metadata"]["generation"]:
            out.append(f"ToolRun {name} status: want {expect}, generation {run['metadata']['generation']}\n"
                       f"  got {got}, observedGeneration {cond.get('observedGeneration')}")
    by_name = {r["metadata"]["name"]: r for r in runs}
    for share in shares:
        state = access.share_state(share, by_name, now, POLICY)
        cond = _ready(share) or {}
        # No observedGeneration on a share: a spec change that keeps the verdict writes no status.
        expect = (list(state.runs), "True" if state.reason == access.ACTIVE else "False", state.reason,
                  state.message)
        got = ((share.get("status") or {}).get("runs"), cond.get("status"), cond.get("reason"), cond.get("message"))
        if got != expect:
            out.append(f"RunShare {share['metadata']['name']} status: want {expect}\n  got {got}")
    return out


def converged(client, namespace: str, timeout: float = 60.0, settings: Settings | None = None) -> float:
    """Wait until `differences` is empty; return the seconds it took. Fails listing what is off."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        diff = differences(client, namespace, settings)
        if not diff:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"{namespace} not converged after {timeout:.0f}s; {len(diff)} differences:\n"
                                 + "\n".join(diff[:20]))
        time.sleep(0.5)
