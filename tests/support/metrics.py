"""Write requests as the API server counts them (apiserver_request_total on /metrics)."""

from __future__ import annotations

import re
from collections import Counter

import kubernetes

WRITE_VERBS = {"APPLY", "PATCH", "POST", "PUT", "CREATE", "UPDATE", "DELETE"}
_LINE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def write_counts(client: kubernetes.client.ApiClient, resources: set[str], dry_run: bool = True) -> Counter:
    """{(verb, resource, subresource): count} for write verbs on `resources`; without `dry_run`,
    requests made with dryRun (which change nothing) are left out."""
    method, url, headers, _, _ = client.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    resp = client.call_api(method, url, header_params=headers)
    text = resp.read().decode()
    counts: Counter = Counter()
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group("labels")))
        if not dry_run and labels.get("dry_run"):
            continue
        if labels.get("verb") in WRITE_VERBS and labels.get("resource") in resources:
            counts[(labels["verb"], labels["resource"], labels.get("subresource", ""))] += int(float(m.group("value")))
    return counts


def delta(after: Counter, before: Counter) -> Counter:
    return Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)})
