"""The owner's side of the page: their runs (searched and paged), who each is shared with, and
their images: pure, from the same objects and decisions the gate enforces.

A share is listed on every run it applies to, with its state (access.share_state: an expired or
refused share is shown as such, it grants nothing) and whether a GitOps tool owns it
(sharing.managed_by: the page then offers no change, the tool would revert it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping

from toolshare import access, images, model, render, sharing
from toolshare.gate.verdict import Identity
from toolshare.policy import Policy
from toolshare.settings import Settings

PAGE_SIZE = 20


def _condition(run: Mapping, type_: str) -> Mapping:
    for cond in model.as_list(model.get(run, "status", "conditions")):
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return {}


def run_state(run: Mapping) -> tuple[str, str]:
    """(a one-word state, why): the tool's own state (ToolReady), unless the run is not Ready for
    a reason of its own (no route, refused image): what the owner needs to know first."""
    ready, tool = _condition(run, "Ready"), _condition(run, "ToolReady")
    if ready.get("status") == "False" and ready.get("reason") not in (None, "ToolNotReady"):
        return str(ready.get("reason")), str(ready.get("message") or "")
    if tool:
        return str(tool.get("reason") or tool.get("status")), str(tool.get("message") or "")
    return "Pending", "the operator has not reported on this run yet"


def _share_entry(share: Mapping, runs_by_name: Mapping[str, Mapping], now: dt.datetime, policy: Policy | None) -> dict:
    meta, spec = share["metadata"], share.get("spec") or {}
    state = access.share_state(share, runs_by_name, now, policy)
    return {
        "namespace": meta["namespace"], "name": meta["name"], "generation": meta.get("generation"),
        "users": sorted(spec.get("users") or []), "groups": sorted(spec.get("groups") or []),
        "endpoints": sorted(spec.get("endpoints") or []), "expiresAt": spec.get("expiresAt"),
        "selector": "runSelector" in spec, "state": state.reason, "message": state.message,
        "managedBy": sharing.managed_by(share),
        "sharedBy": (meta.get("annotations") or {}).get(access.ANN_SHARED_BY),
    }


def matches(text: str, query: str) -> bool:
    """The search box: every word must appear in the run's name, namespace, image or endpoint
    names (`text`, state/views' toolrun_keys_by_owner)."""
    return all(word in text for word in query.lower().split())


def owner_view(identity: Identity, owned: Iterable[tuple[str, str, str]], run_of: Callable[[str, str], Mapping | None],
               shares_of: Callable[[Mapping], tuple[list[Mapping], Mapping[str, Mapping]]],
               owned_images: Iterable[Mapping], all_image_shares: Iterable[Mapping], settings: Settings,
               now: dt.datetime, policy: Policy | None = None, query: str = "", page: int = 1) -> dict:
    """{"runs": one page of the user's runs with their shares, "total", "page", "pages", "query",
    "images": the user's ImageShares, "namespaces": where they own runs or images}.

    `owned` are (namespace, name, search text) of the user's runs; `run_of` gives a run, and
    `shares_of(run)` (the shares that may apply to it, the runs they are judged against): only the
    shown page asks for them, so a thousand runs cost a sort and a search of small tuples.
    """
    # A run is validated when its page is shown (an invalid run is listed too, with why).
    owned = sorted(owned)
    namespaces = sorted({ns for ns, _, _ in owned})
    found = [k for k in owned if matches(k[2], query)] if query.strip() else owned
    pages = max(1, -(-len(found) // PAGE_SIZE))
    page = min(max(1, page), pages)
    runs = []
    for namespace, name, _ in found[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]:
        run = run_of(namespace, name)
        if run is None:
            continue
        shares, runs_by_name = shares_of(run)
        problems = model.validate_run(run)
        urls = {} if problems else {u["endpoint"]: u["url"] for u in render.run_urls(run, settings)}
        state, why = ("Invalid", "; ".join(problems)) if problems else run_state(run)
        entries = [_share_entry(s, runs_by_name, now, policy)
                   for s in sorted(shares, key=lambda s: s["metadata"]["name"]) if model.share_applies_to(s, run)]
        runs.append({"namespace": run["metadata"]["namespace"], "name": run["metadata"]["name"], "state": state, "why": why,
                     "endpoints": [{"name": e.name, "url": urls.get(e.name, "")} for e in model.http_endpoints(run)],
                     "shares": entries})
    all_image_shares = list(all_image_shares)
    claims = images.claims(all_image_shares)
    image_views = []
    for share in sorted(owned_images, key=lambda s: (str(model.get(s, "spec", "image")), s["metadata"]["name"])):
        meta, spec = share["metadata"], share.get("spec") or {}
        claimed, _, _ = images.status(share, all_image_shares)
        repository = images.parse_image(str(spec.get("image") or "")).repository
        holder = claims.get(repository)
        image_views.append({
            "namespace": meta["namespace"], "name": meta["name"], "generation": meta.get("generation"),
            "image": spec.get("image"), "claimed": claimed,
            "claimedBy": holder.owner if holder is not None else None,
            "users": sorted(spec.get("users") or []), "groups": sorted(spec.get("groups") or []),
            "managedBy": sharing.managed_by(share)})
        namespaces.append(meta["namespace"])
    return {"runs": runs, "total": len(found), "owned": len(owned), "page": page, "pages": pages, "query": query,
            "images": image_views, "namespaces": sorted(set(namespaces))}


def images_shared_with(identity: Identity, all_image_shares: Iterable[Mapping]) -> list[dict]:
    """The images the user may launch because their owner shared them (claimed images only: an
    ImageShare of someone who does not hold the claim grants nothing)."""
    all_image_shares = list(all_image_shares)
    claims = images.claims(all_image_shares)
    out = []
    for share in all_image_shares:
        spec = share.get("spec") or {}
        image = spec.get("image")
        if not isinstance(image, str) or spec.get("owner") == identity.user:
            continue
        claim = claims.get(images.parse_image(image).repository)
        if claim is None or claim.owner != spec.get("owner"):
            continue
        if identity.user in (spec.get("users") or []):
            via = "user"
        elif groups := sorted(set(spec.get("groups") or []) & set(identity.groups)):
            via = f"group:{groups[0]}"
        else:
            continue
        out.append({"image": image, "owner": spec.get("owner"), "via": via})
    return sorted(out, key=lambda v: (v["image"], v["owner"]))
