"""The "Shared with me" view: pure, from the gate's Ingress entries and the RunShares it watches.

Which runs a user sees is decided by the same entries the gate enforces (so the page never lists
a run the user would be refused); the RunShares only add who shared it, since when, until when.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from toolshare import model
from toolshare.gate.allowlist import Entry, Identity, allows

ANN_SHARED_BY = "toolshare.dev/shared-by"


def _share_reaches(share: Mapping, namespace: str, run: str, endpoints: set[str],
                   identity: Identity, now: dt.datetime) -> str | None:
    """How `share` reaches `identity` on this run ("user" or "group:<g>"), or None."""
    meta, spec, status = share.get("metadata") or {}, share.get("spec") or {}, share.get("status") or {}
    if meta.get("namespace") != namespace:
        return None
    if run not in (status.get("runs") or []) and (spec.get("runRef") or {}).get("name") != run:
        return None
    wanted = spec.get("endpoints")
    if wanted and endpoints.isdisjoint(wanted):
        return None
    expires = spec.get("expiresAt")
    if expires:
        try:
            if model.parse_time(expires) <= now:
                return None
        except ValueError:
            return None
    if identity.user in (spec.get("users") or []):
        return "user"
    groups = sorted(set(spec.get("groups") or []) & set(identity.groups))
    return f"group:{groups[0]}" if groups else None


def _run_view(entries: list[Entry]) -> dict:
    first = entries[0]
    return {"namespace": first.namespace, "name": first.run, "owner": first.owner,
            "endpoints": [{"name": e.endpoint, "url": e.url} for e in entries]}


def shared_with_me(identity: Identity, entries: Iterable[Entry], shares: Iterable[Mapping],
                   now: dt.datetime) -> dict:
    """{"user", "groups", "owned": [run], "sharedWithMe": [run + shares]} for one identity."""
    by_run: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        if allows(entry, identity):
            by_run.setdefault((entry.namespace, entry.run), []).append(entry)
    shares = list(shares)
    owned, shared = [], []
    for (namespace, run), found in sorted(by_run.items()):
        view = _run_view(found)
        if found[0].owner == identity.user:
            owned.append(view)
            continue
        names = {e.endpoint for e in found}
        view["shares"] = []
        for share in sorted(shares, key=lambda s: (s.get("metadata") or {}).get("name") or ""):
            via = _share_reaches(share, namespace, run, names, identity, now)
            if via is None:
                continue
            meta, spec = share["metadata"], share.get("spec") or {}
            view["shares"].append({
                "name": meta.get("name"),
                "sharedBy": (meta.get("annotations") or {}).get(ANN_SHARED_BY) or found[0].owner,
                "since": meta.get("creationTimestamp"),
                "expiresAt": spec.get("expiresAt"),
                "via": via,
                "endpoints": spec.get("endpoints") or [],
            })
        shared.append(view)
    return {"user": identity.user, "email": identity.email, "groups": list(identity.groups),
            "owned": owned, "sharedWithMe": shared}
