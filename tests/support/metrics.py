"""The operator's writes as the API server counts them (apiserver_request_total on /metrics).

The API server counts every writer of a resource alike (a refused request too), and a cluster with a
node has others: the kubelet writes Pod statuses and posts Events (a failed probe), the scheduler
binds Pods and posts Events (CI saw the scheduler's POST and PATCH of a FailedScheduling Event for a
Pod of an earlier test, its namespace already gone, in an idle operator's 5 s). Those are left out
here, so a count says what the operator (or the test) wrote.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import kubernetes
from prometheus_client.parser import text_string_to_metric_families

from tests.support.wait import wait_for

WRITE_VERBS = {"APPLY", "PATCH", "POST", "PUT", "CREATE", "UPDATE", "DELETE"}
_LINE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
# Written by the kubelet and the scheduler only: the operator creates Pods and never writes these.
OTHERS = {("pods", "status"), ("pods", "binding")}
# The reporting components of the operator's Events: its own (controller/events.py) and kopf's
# warnings. Each is a POST of a new Event (neither patches one), so they are counted by listing.
OPERATOR_EVENT_SOURCES = {"toolshare", "kopf"}


def write_counts(client: kubernetes.client.ApiClient, resources: set[str], namespace: str,
                 dry_run: bool = True) -> Counter:
    """{(verb, resource, subresource): count} of the operator's (and the test's) writes to
    `resources`; Events as ("POST", "events", ""): those in `namespace` the operator or kopf reported.
    Without `dry_run`, requests made with dryRun (which change nothing) are left out."""
    counts: Counter = Counter()
    for m in _LINE.finditer(_get(client, "/metrics")):  # a regex: the whole text is megabytes of histograms
        labels = dict(_LABEL.findall(m.group("labels")))
        if not dry_run and labels.get("dry_run"):
            continue
        verb, resource, sub = labels.get("verb"), labels.get("resource"), labels.get("subresource", "")
        if verb in WRITE_VERBS and resource in resources - {"events"} and (resource, sub) not in OTHERS:
            counts[(verb, resource, sub)] += int(float(m.group("value")))
    if "events" in resources:
        posted = sum(1 for e in kubernetes.client.CoreV1Api(client).list_namespaced_event(namespace).items
                     if {e.reporting_component, e.source.component if e.source else None} & OPERATOR_EVENT_SOURCES)
        if posted:
            counts[("POST", "events", "")] = posted
    return counts


def settled(client: kubernetes.client.ApiClient, resources: set[str], namespace: str, quiet: float = 3.0,
            timeout: float = 60.0, dry_run: bool = True) -> Counter:
    """The write counts once none changed for `quiet` seconds."""
    seen = {"counts": write_counts(client, resources, namespace, dry_run), "since": time.monotonic()}

    def quiet_for() -> tuple[Counter] | None:
        now = write_counts(client, resources, namespace, dry_run)
        if now != seen["counts"]:
            seen.update(counts=now, since=time.monotonic())
        return (now,) if time.monotonic() - seen["since"] >= quiet else None

    return wait_for(quiet_for, timeout=timeout, interval=0.5, what=f"no write for {quiet} s")[0]


def delta(after: Counter, before: Counter) -> Counter:
    return Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)})


def reconciles(metrics_text: str, kind: str) -> float:
    """Reconciles of `kind` the operator has finished without error, by its own count."""
    return sum(s.value for f in text_string_to_metric_families(metrics_text) for s in f.samples
               if s.name == "toolshare_reconciles_total" and s.labels == {"kind": kind, "result": "ok"})


def _get(client: kubernetes.client.ApiClient, path: str) -> str:
    method, url, headers, _, _ = client.param_serialize("GET", path, auth_settings=["BearerToken"])
    return client.call_api(method, url, header_params=headers).read().decode()
