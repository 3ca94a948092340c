"""What a person asks for when they share or unshare, as RunShares and ImageShares: pure.

One place for the rules the CLI (`toolshare share`) and the page (the gate's owner view) both
follow: the expiry grammar, a share's deterministic name, the RunShare body, what removing one
user or group from a share does, and whether a share belongs to a GitOps tool (then only that
tool changes it). Every refusal is a ShareInputError whose message names the field and the rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping

from toolshare.model import API_VERSION, is_endpoint_name, is_run_name, parse_time
from toolshare.principals import validate_principal

_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class ShareInputError(ValueError):
    """Bad input to a share; the message names the field (or option) and the rule."""


def parse_expiry(text: str, now: dt.datetime, field: str = "--expires") -> str:
    """A duration (2h, 1d12h, 30m) from now, or an RFC 3339 time; RFC 3339 UTC out."""
    m = _DURATION_RE.fullmatch(text.strip())
    if m and any(m.groups()):
        d, h, mi, s = (int(g or 0) for g in m.groups())
        when = now + dt.timedelta(days=d, hours=h, minutes=mi, seconds=s)
    else:
        try:
            when = parse_time(text.strip())
        except ValueError:
            raise ShareInputError(f"{field} {text!r}: give a duration such as 2h, 1d or 30m, "
                                  "or an RFC 3339 time such as 2026-12-01T18:00:00Z") from None
    if when <= now:
        raise ShareInputError(f"{field} {text!r} is in the past")
    return when.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def share_name(run: str, endpoints: Iterable[str]) -> str:
    """<run>-share[-<hash of endpoints>]: one share per run and endpoint set, at most 63 chars."""
    endpoints = sorted(endpoints)
    suffix = "share" if not endpoints else "share-" + hashlib.sha256(",".join(endpoints).encode()).hexdigest()[:6]
    return f"{run[:63 - len(suffix) - 1]}-{suffix}"


def check_principals(field: str, names: Iterable[str]) -> list[str]:
    names = list(names)
    for name in names:
        if problem := validate_principal(name):
            raise ShareInputError(f"{field} {name!r}: {problem}")
    return names


def check_run_share(run: str, users: list[str], groups: list[str], endpoints: list[str],
                    fields: Mapping[str, str] | None = None) -> None:
    """The input rules of a RunShare (the CRD's, spelled out first so the message names the field)."""
    f = {"run": "RUN", "users": "--user", "groups": "--group", "endpoints": "--endpoint", **(fields or {})}
    if not is_run_name(run):
        raise ShareInputError(f"{f['run']} {run!r} must be a ToolRun name (DNS-1035 label)")
    check_principals(f["users"], users)
    check_principals(f["groups"], groups)
    if not users and not groups:
        raise ShareInputError(f"give at least one {f['users']} or {f['groups']}" if fields is None else
                              f"give at least one user ({f['users']}) or group ({f['groups']})")
    for ep in endpoints:
        if not is_endpoint_name(ep):
            raise ShareInputError(f"{f['endpoints']} {ep!r} must be an endpoint name such as lab")


def desired_share(name: str, namespace: str, run: str, users: list[str], groups: list[str],
                  endpoints: list[str], expires_at: str | None) -> dict:
    spec: dict = {"runRef": {"name": run}}
    if users:
        spec["users"] = sorted(set(users))
    if groups:
        spec["groups"] = sorted(set(groups))
    if endpoints:
        spec["endpoints"] = sorted(set(endpoints))
    if expires_at:
        spec["expiresAt"] = expires_at
    return {"apiVersion": API_VERSION, "kind": "RunShare", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def without_principal(share: Mapping, kind: str, name: str) -> tuple[list[str], list[str]] | None:
    """The (users, groups) a share keeps once `name` (a user or a group, by `kind`) is taken out of
    it; None when nothing would be left, so the share itself is to go (a share needs someone)."""
    if kind not in ("user", "group"):
        raise ShareInputError(f"kind {kind!r}: must be user or group")
    spec = share.get("spec") or {}
    users, groups = list(spec.get("users") or []), list(spec.get("groups") or [])
    field = users if kind == "user" else groups
    if name not in field:
        raise ShareInputError(f"{kind} {name!r} is not in {(share.get('metadata') or {}).get('name')!r} any more")
    field.remove(name)
    return (users, groups) if users or groups else None


# Labels and annotations by which GitOps tools and Helm mark what they apply (Argo CD: annotation
# tracking, its default since v3, or label tracking; Flux: kustomize- and helm-controller).
_MANAGERS = (
    ("annotations", "argocd.argoproj.io/tracking-id", "Argo CD"),
    ("labels", "argocd.argoproj.io/instance", "Argo CD"),
    ("labels", "kustomize.toolkit.fluxcd.io/name", "Flux"),
    ("labels", "helm.toolkit.fluxcd.io/name", "Flux"),
)


def managed_by(obj: Mapping) -> str | None:
    """The GitOps tool (or Helm) that owns this object's desired state, if any: a change made
    anywhere else would be reverted by it, so the page shows such a share and does not edit it."""
    meta = obj.get("metadata") or {}
    for where, key, tool in _MANAGERS:
        if key in (meta.get(where) or {}):
            return tool
    if (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "Helm":
        return "Helm"
    return None
