"""The "Shared with me" view: pure, from the same runs, shares and access decisions the gate
enforces (so the page never lists a run the user would be refused)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from toolshare import access, model, render
from toolshare.gate.verdict import Identity
from toolshare.policy import Policy
from toolshare.settings import Settings


def _run_view(run: Mapping, endpoints: Iterable[str], settings: Settings) -> dict:
    urls = {u["endpoint"]: u["url"] for u in render.run_urls(run, settings)}
    meta = run["metadata"]
    return {"namespace": meta["namespace"], "name": meta["name"], "owner": model.get(run, "spec", "owner"),
            "endpoints": [{"name": e, "url": urls.get(e, "")} for e in sorted(endpoints)]}


def _via(share: Mapping, identity: Identity) -> str | None:
    spec = share.get("spec") or {}
    if identity.user in (spec.get("users") or []):
        return "user"
    groups = sorted(set(spec.get("groups") or []) & set(identity.groups))
    return f"group:{groups[0]}" if groups else None


def shared_with_me(identity: Identity, owned: Iterable[Mapping],
                   reached: Iterable[tuple[Mapping, list[Mapping], Mapping[str, Mapping]]],
                   settings: Settings, now: dt.datetime, policy: Policy | None = None) -> dict:
    """{"user", "email", "groups", "owned": [run], "sharedWithMe": [run + shares]} for one identity.

    `owned` are the runs the user owns; `reached` the (run, its shares, runs by name) of every run a
    share naming the user or one of their groups may apply to.
    """
    owned_views, shared_views = [], []
    for run in sorted(owned, key=_key):
        if not model.validate_run(run):
            owned_views.append(_run_view(run, [e.name for e in model.http_endpoints(run)], settings))
    seen = set()
    for run, shares, runs_by_name in sorted(reached, key=lambda r: _key(r[0])):
        if _key(run) in seen or model.validate_run(run) or model.get(run, "spec", "owner") == identity.user:
            continue
        seen.add(_key(run))
        acls = access.access_for(run, shares, now, runs_by_name, policy)
        owner = model.get(run, "spec", "owner")
        endpoints = [ep for ep, acl in acls.items() if access.is_allowed(owner, acl, identity.user, identity.groups)]
        if not endpoints:
            continue
        view = _run_view(run, endpoints, settings)
        view["shares"] = []
        for share in sorted(shares, key=lambda s: s["metadata"]["name"]):
            via = _via(share, identity)
            state = access.share_state(share, runs_by_name, now, policy)
            wanted = (share.get("spec") or {}).get("endpoints") or []
            if via is None or state.reason != access.ACTIVE or run["metadata"]["name"] not in state.runs:
                continue
            if wanted and set(wanted).isdisjoint(endpoints):
                continue
            meta, spec = share["metadata"], share.get("spec") or {}
            view["shares"].append({
                "name": meta["name"],
                "sharedBy": (meta.get("annotations") or {}).get(access.ANN_SHARED_BY) or owner,
                "since": meta.get("creationTimestamp"),
                "expiresAt": spec.get("expiresAt"),
                "via": via,
                "endpoints": wanted,
            })
        shared_views.append(view)
    return {"user": identity.user, "email": identity.email, "groups": list(identity.groups),
            "owned": owned_views, "sharedWithMe": shared_views}


def _key(run: Mapping) -> tuple[str, str]:
    return run["metadata"]["namespace"], run["metadata"]["name"]
