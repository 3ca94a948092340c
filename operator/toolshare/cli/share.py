"""`toolshare share | unshare | list` (also `kubectl toolshare ...`): RunShares by server-side apply.

Everything these commands do is an ordinary RunShare written under the field manager
`kubectl-toolshare`, so GitOps tools see it like any other object. Shares made here get a
deterministic name from (run, endpoints) so repeating a command changes nothing, and adding a
user to an existing share is an apply of the same object with one more list item.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import sys
from collections.abc import Iterable, Mapping

import kubernetes

from toolshare.client.kube import ApiError, Kube
from toolshare.model import is_endpoint_name, is_run_name, parse_time
from toolshare.principals import validate_principal

FIELD_MANAGER = "kubectl-toolshare"
# Stamped by Toolshare's admission webhook with the requester; shown, never written, here.
ANN_SHARED_BY = "toolshare.dev/shared-by"
API = "toolshare.dev/v1alpha1"
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class UsageError(ValueError):
    """Bad command-line input; the message names the option."""


def parse_expiry(text: str, now: dt.datetime) -> str:
    """--expires: a duration (2h, 1d12h, 30m) from now, or an RFC 3339 time; RFC 3339 UTC out."""
    m = _DURATION_RE.fullmatch(text.strip())
    if m and any(m.groups()):
        d, h, mi, s = (int(g or 0) for g in m.groups())
        when = now + dt.timedelta(days=d, hours=h, minutes=mi, seconds=s)
    else:
        try:
            when = parse_time(text)
        except ValueError:
            raise UsageError(f"--expires {text!r}: give a duration such as 2h, 1d or 30m, "
                             "or an RFC 3339 time such as 2026-12-01T18:00:00Z") from None
    if when <= now:
        raise UsageError(f"--expires {text!r} is in the past")
    return when.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def share_name(run: str, endpoints: Iterable[str]) -> str:
    """<run>-share[-<hash of endpoints>]: one share per run and endpoint set, at most 63 chars."""
    endpoints = sorted(endpoints)
    suffix = "share" if not endpoints else "share-" + hashlib.sha256(",".join(endpoints).encode()).hexdigest()[:6]
    return f"{run[:63 - len(suffix) - 1]}-{suffix}"


def check_principals(option: str, names: Iterable[str]) -> list[str]:
    names = list(names)
    for name in names:
        if problem := validate_principal(name):
            raise UsageError(f"{option} {name!r}: {problem}")
    return names


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
    return {"apiVersion": API, "kind": "RunShare", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


# --- talking to the API server ---------------------------------------------------------------


def connect(kubeconfig: str | None) -> tuple[Kube, str]:
    """A client for the kubeconfig (default: $KUBECONFIG, ~/.kube/config) and its namespace."""
    client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    _, current = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
    namespace = (current or {}).get("context", {}).get("namespace") or "default"
    return Kube(client, FIELD_MANAGER), namespace


def whoami(kube: Kube) -> tuple[str, list[str]]:
    review = kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                          body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    info = (review.get("status") or {}).get("userInfo") or {}
    return info.get("username", ""), list(info.get("groups") or [])


def _shares(kube: Kube, namespace: str | None) -> list[dict]:
    path = (f"/apis/toolshare.dev/v1alpha1/namespaces/{namespace}/runshares" if namespace
            else "/apis/toolshare.dev/v1alpha1/runshares")
    return kube.request("GET", path).get("items") or []


def share(kube: Kube, namespace: str, run: str, users: list[str], groups: list[str],
          endpoints: list[str], expires: str | None, name: str | None = None,
          now: dt.datetime | None = None) -> dict:
    if not is_run_name(run):
        raise UsageError(f"RUN {run!r} must be a ToolRun name (DNS-1035 label)")
    check_principals("--user", users)
    check_principals("--group", groups)
    if not users and not groups:
        raise UsageError("give at least one --user or --group")
    for ep in endpoints:
        if not is_endpoint_name(ep):
            raise UsageError(f"--endpoint {ep!r} must be an endpoint name such as lab")
    now = now or dt.datetime.now(dt.timezone.utc)
    expires_at = parse_expiry(expires, now) if expires else None
    name = name or share_name(run, endpoints)
    existing = _get_share(kube, namespace, name)
    if existing is not None:  # add to what this share already grants: apply is declarative
        spec = existing.get("spec") or {}
        users, groups = users + list(spec.get("users") or []), groups + list(spec.get("groups") or [])
        expires_at = expires_at or spec.get("expiresAt")
    return kube.apply(desired_share(name, namespace, run, users, groups, endpoints, expires_at))


def _get_share(kube: Kube, namespace: str, name: str) -> dict | None:
    try:
        return kube.request("GET", f"/apis/toolshare.dev/v1alpha1/namespaces/{namespace}/runshares/{name}")
    except ApiError as e:
        if e.status == 404:
            return None
        raise


def unshare(kube: Kube, namespace: str, run: str | None, users: list[str], groups: list[str],
            name: str | None = None) -> list[str]:
    """Remove users/groups from the run's shares (all of them if none given); say what changed."""
    check_principals("--user", users)
    check_principals("--group", groups)
    if name:
        kube.delete(API, "RunShare", namespace, name)
        return [f"runshare/{name} deleted"]
    if not run:
        raise UsageError("give RUN or --name SHARE")
    done = []
    for s in _shares(kube, namespace):
        spec = s.get("spec") or {}
        if (spec.get("runRef") or {}).get("name") != run:
            continue
        sname = s["metadata"]["name"]
        keep_users = [u for u in spec.get("users") or [] if u not in users]
        keep_groups = [g for g in spec.get("groups") or [] if g not in groups]
        if not users and not groups or not keep_users and not keep_groups:
            kube.delete(API, "RunShare", namespace, sname)
            done.append(f"runshare/{sname} deleted")
        elif (keep_users, keep_groups) != (spec.get("users") or [], spec.get("groups") or []):
            kube.apply(desired_share(sname, namespace, run, keep_users, keep_groups,
                                     spec.get("endpoints") or [], spec.get("expiresAt")))
            done.append(f"runshare/{sname} updated")
    return done


def shared_with_me(kube: Kube, namespace: str) -> list[dict]:
    """Active RunShares naming the caller or one of their groups (cluster-wide if allowed)."""
    user, groups = whoami(kube)
    try:
        items = _shares(kube, None)
    except ApiError as e:
        if e.status != 403:
            raise
        items = _shares(kube, namespace)
    return [s for s in items if _names(s, user, groups) and _active(s)]


def _names(share: Mapping, user: str, groups: list[str]) -> bool:
    spec = share.get("spec") or {}
    return user in (spec.get("users") or []) or bool(set(spec.get("groups") or []) & set(groups))


def _active(share: Mapping) -> bool:
    conditions = (share.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def table(shares: list[dict], all_namespaces: bool) -> str:
    rows = [(["NAMESPACE"] if all_namespaces else []) + ["NAME", "RUN", "USERS", "GROUPS", "ENDPOINTS", "EXPIRES", "SHARED-BY"]]
    for s in sorted(shares, key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"]["name"])):
        spec, meta = s.get("spec") or {}, s["metadata"]
        rows.append(([meta.get("namespace", "")] if all_namespaces else []) + [
            meta["name"], (spec.get("runRef") or {}).get("name") or "<selector>",
            ",".join(spec.get("users") or []) or "-", ",".join(spec.get("groups") or []) or "-",
            ",".join(spec.get("endpoints") or []) or "all", spec.get("expiresAt") or "never",
            (meta.get("annotations") or {}).get(ANN_SHARED_BY) or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run_command(args) -> int:
    try:
        kube, default_ns = connect(args.kubeconfig)
        namespace = args.namespace or default_ns
        if args.command == "share":
            obj = share(kube, namespace, args.run, args.user, args.group, args.endpoint, args.expires, args.name)
            print(f"runshare/{obj['metadata']['name']} applied in {namespace}: "
                  f"{', '.join(obj['spec'].get('users', []) + ['group:' + g for g in obj['spec'].get('groups', [])])}"
                  + (f" until {obj['spec']['expiresAt']}" if obj["spec"].get("expiresAt") else ""))
        elif args.command == "unshare":
            done = unshare(kube, namespace, args.run, args.user, args.group, args.name)
            print("\n".join(done) or f"nothing shares {args.run} with those principals in {namespace}")
        elif args.command == "list":
            if args.shared_with_me:
                items = shared_with_me(kube, namespace)
            else:
                items = _shares(kube, namespace)
            print(table(items, all_namespaces=args.shared_with_me))
        return 0
    except UsageError as e:
        print(f"toolshare {args.command}: {e}", file=sys.stderr)
        return 2
    except ApiError as e:
        print(f"toolshare {args.command}: the API server refused: {e}", file=sys.stderr)
        return 1
