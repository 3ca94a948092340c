"""Access decisions: a share's verdict, who may reach which endpoint, who may share. Pure.

The one place these are decided. The renderer writes their answers into the children (for routers
and humans), the admission webhooks refuse what they would refuse, and the gate computes the same
answers from the same inputs: owner OR a user of an active share OR a member of a shared group.

Who may share: the mutating webhook records the requester on every RunShare it admits (annotations
below, always overwritten, so a user cannot forge them); the reconciler re-checks the recorded sharer
against the runs the share matches now, so a share that slipped past admission (created before the
webhook was installed, or a selector that later reaches someone else's run) is Invalid and grants
nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from toolshare import images
from toolshare.model import (as_list, as_utc, expires_at, get, http_endpoints, name_of, share_applies_to,
                             share_problem, validate_run)
from toolshare.policy import Policy
from toolshare.principals import is_valid_principal

# Share reasons (CamelCase, as in conditions).
ACTIVE, RUN_NOT_FOUND, EXPIRED, INVALID = "Active", "RunNotFound", "Expired", "Invalid"


ANN_SHARED_BY = "toolshare.dev/shared-by"
# The sharer's groups that confer sharing rights (administrators, trusted appliers); no others.
ANN_SHARED_BY_GROUPS = "toolshare.dev/shared-by-groups"


def sharer_annotations(username: str, groups: Iterable[str], policy: Policy) -> dict[str, str]:
    return {ANN_SHARED_BY: username, ANN_SHARED_BY_GROUPS: ",".join(policy.conferring_groups(groups))}


def may_share(username: str, groups: Iterable[str], namespace: str,
              run_owners: Iterable[tuple[str, str | None]], policy: Policy) -> str | None:
    """None if `username` may share every run in `run_owners` ((name, owner) pairs), else why not."""
    groups = list(groups)
    if policy.is_admin(groups) or policy.trusted_applier(username, groups, namespace):
        return None
    for run, owner in sorted(run_owners, key=lambda p: p[0]):
        if owner != username:
            return (f"user {username!r} may not share ToolRun {run!r}: it is owned by {owner!r}; only "
                    "its owner, an administrator or a trusted applier may share it")
    return None


def sharer_problem(share: Mapping, run_owners: Iterable[tuple[str, str | None]], policy: Policy) -> str | None:
    """The reconciler's check of a share's recorded sharer against the runs it matches."""
    meta = share.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    user = annotations.get(ANN_SHARED_BY)
    if not is_valid_principal(user):
        return (f"no valid {ANN_SHARED_BY} annotation: the share was not admitted by Toolshare's "
                "admission webhook, so it is not honoured")
    groups = [g for g in (annotations.get(ANN_SHARED_BY_GROUPS) or "").split(",") if is_valid_principal(g)]
    problem = may_share(user, groups, meta.get("namespace") or "", run_owners, policy)
    return None if problem is None else f"shared by {user!r}, who is not allowed: {problem}"


class Access(NamedTuple):
    """Who, besides the owner, may use one endpoint (sorted)."""

    users: tuple[str, ...]
    groups: tuple[str, ...]


class ShareState(NamedTuple):
    reason: str  # Active | RunNotFound | Expired | Invalid
    message: str
    runs: tuple[str, ...]  # sorted names of the runs the share grants access to


def share_state(share: Mapping, runs_by_name: Mapping[str, Mapping], now: dt.datetime,
                policy: Policy | None = None) -> ShareState:
    """The share's verdict against the runs of its namespace: (reason, message, runs).

    With a policy (the operator always passes one), the share's recorded sharer must still be
    allowed to share every run it matches (defence in depth behind the admission webhook).
    """
    now = as_utc(now)
    if problem := share_problem(share):
        return ShareState(INVALID, problem, ())
    expires = expires_at(share)
    if expires is not None and expires <= now:
        return ShareState(EXPIRED, f"expired at {expires.isoformat()}", ())
    matched = sorted((r for r in runs_by_name.values() if share_applies_to(share, r)), key=name_of)
    if policy is not None and (problem := sharer_problem(
            share, [(name_of(r), get(r, "spec", "owner")) for r in matched], policy)):
        return ShareState(INVALID, problem, ())
    if not matched:
        ref = get(share, "spec", "runRef", "name")
        message = f"ToolRun {ref!r} not found" if ref else "no ToolRun matches spec.runSelector"
        return ShareState(RUN_NOT_FOUND, message, ())
    for endpoint in get(share, "spec", "endpoints") or []:
        shareable = [r for r in matched if endpoint in {e.name for e in http_endpoints(r)}]
        for run in matched:
            declared = {ep.get("name") for ep in as_list(get(run, "spec", "endpoints"))
                        if isinstance(ep, Mapping) and isinstance(ep.get("name"), str)}
            if endpoint in declared and run not in shareable:
                return ShareState(INVALID, f"endpoint {endpoint!r} of ToolRun {name_of(run)!r} is "
                                  "not a shareable HTTP endpoint (SSH is never shared)", ())
        if not shareable:
            return ShareState(INVALID, f"no matched ToolRun has an endpoint {endpoint!r}", ())
    names = tuple(name_of(r) for r in matched)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return ShareState(ACTIVE, f"shared on {shown}", names)


def access_for(run: Mapping, shares: Iterable[Mapping], now: dt.datetime,
               runs_by_name: Mapping[str, Mapping] | None = None,
               policy: Policy | None = None) -> dict[str, Access]:
    """{endpoint: Access} over the run's HTTP endpoints: the union of its active shares.

    The owner is not listed (see is_allowed). Pass runs_by_name (the namespace's runs) so a
    share's verdict here matches its status; by default only this run is considered.
    """
    runs = {**(runs_by_name or {}), name_of(run): run}
    endpoints = http_endpoints(run)
    users: dict[str, set[str]] = {ep.name: set() for ep in endpoints}
    groups: dict[str, set[str]] = {ep.name: set() for ep in endpoints}
    for share in shares:
        if not share_applies_to(share, run):
            continue
        state = share_state(share, runs, now, policy)
        if state.reason != ACTIVE or name_of(run) not in state.runs:
            continue
        spec = share["spec"]
        wanted = spec.get("endpoints") or [ep.name for ep in endpoints]
        for name in wanted:
            if name in users:
                users[name].update(p for p in spec.get("users") or [] if is_valid_principal(p))
                groups[name].update(p for p in spec.get("groups") or [] if is_valid_principal(p))
    return {ep.name: Access(tuple(sorted(users[ep.name])), tuple(sorted(groups[ep.name])))
            for ep in endpoints}


def is_allowed(owner: str, access: Access, user: str, user_groups: Iterable[str]) -> bool:
    """Access = owner OR a listed user OR a member of a listed group."""
    return user == owner or user in access.users or not set(user_groups).isdisjoint(access.groups)


def may_use_image(run: Mapping, user: str, user_groups: Iterable[str], image_shares: Iterable[Mapping],
                  policy: Policy | None = None) -> bool:
    """READ and EXECUTE on the tool: a sharee reaches a run only if they may launch its image
    themselves (its owner, or an ImageShare of the image's owner names them or one of their groups;
    an unclaimed image, unless policy says otherwise). The run's owner launched it."""
    image = get(run, "spec", "image")
    if user == get(run, "spec", "owner") or not isinstance(image, str) or not image:
        return True
    return images.use_problem(user, user_groups, image, image_shares, policy or Policy()) is None


def may_reach(run: Mapping, endpoint: str, shares: Iterable[Mapping], user: str, user_groups: Iterable[str],
              now: dt.datetime, runs_by_name: Mapping[str, Mapping] | None = None,
              policy: Policy | None = None, image_shares: Iterable[Mapping] | None = None) -> bool:
    """The gate's decision for one request: may `user` reach this endpoint of this run now?

    The same answer the renderer writes into the endpoint's Ingress, computed from the run and its
    shares themselves (with the caller's clock: an expired share grants nothing from the instant it
    expires). Never for an invalid run, nor for an endpoint that is not a shareable HTTP one. With
    `image_shares` (the ImageShares of the run's image), the image rule too, with the caller's own
    groups (may_use_image): what admission cannot know without a directory.
    """
    if validate_run(run):
        return False
    user_groups = tuple(user_groups)
    if image_shares is not None and not may_use_image(run, user, user_groups, image_shares, policy):
        return False
    acl = access_for(run, shares, now, runs_by_name, policy).get(endpoint)
    return acl is not None and is_allowed(get(run, "spec", "owner"), acl, user, user_groups)


def next_expiry(shares: Iterable[Mapping], now: dt.datetime) -> dt.datetime | None:
    """When the earliest still-valid, not-yet-expired share expires (time to reconcile again)."""
    now = as_utc(now)
    times = [t for s in shares if share_problem(s) is None
             and (t := expires_at(s)) is not None and t > now]
    return min(times, default=None)
