"""Admission decisions for ToolRun, RunShare and ImageShare: pure functions, no kopf, no I/O.

The webhooks (webhooks.py) hand in the request's identity, the object, and what the operator's
indexes know (runs of the namespace, ImageShares of the cluster, the directory); these functions
return the refusal message (None = admit) or the mutation to make. Messages name the field and
the rule, and quote user-supplied text shortened and escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from toolshare import access, images, model, podtemplate
from toolshare.admission.directory import Directory, unregistered
from toolshare.policy import Policy
from toolshare.principals import validate_principal

CREATE, UPDATE, DELETE = "CREATE", "UPDATE", "DELETE"


class Requester(NamedTuple):
    username: str
    groups: tuple[str, ...]

    @classmethod
    def from_userinfo(cls, userinfo: Mapping | None) -> Requester:
        userinfo = userinfo or {}
        groups = userinfo.get("groups") or []
        return cls(str(userinfo.get("username") or ""), tuple(str(g) for g in groups))


def shown(text: object) -> str:
    text = str(text)
    return repr(text if len(text) <= 64 else text[:64] + "...")


def _spec(obj: Mapping | None) -> Mapping:
    spec = (obj or {}).get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _admins(policy: Policy) -> str:
    return ", ".join(["system:masters", *policy.admin_groups])


# --- owners (ToolRun and ImageShare) -------------------------------------------------------

def owner_to_set(operation: str, obj: Mapping, old: Mapping | None, req: Requester) -> str | None:
    """The spec.owner the mutating webhook writes, or None to leave the object alone.

    CREATE without an owner: the requester. UPDATE without one (an applier that never set it,
    or a client that dropped it): the stored owner, so the owner can neither drift nor vanish.
    """
    if _spec(obj).get("owner") is not None:
        return None
    if operation == CREATE:
        return req.username
    if operation == UPDATE and _spec(old).get("owner") is not None:
        return _spec(old)["owner"]
    return None


def requester_problem(req: Requester, kind: str) -> str | None:
    """A requester whose own name breaks the grammar cannot own or share anything."""
    if (problem := validate_principal(req.username)) is not None:
        return f"your user name cannot own or share a {kind}: {problem}"
    return None


def owner_problem(kind: str, operation: str, obj: Mapping, old: Mapping | None, req: Requester,
                  policy: Policy, directory: Directory | None) -> str | None:
    owner = _spec(obj).get("owner")
    if operation == UPDATE and old is not None:
        if owner != _spec(old).get("owner"):
            return f"spec.owner is immutable: {kind} stays owned by {shown(_spec(old).get('owner'))}"
        return None
    if (problem := validate_principal(owner)) is not None:
        return f"spec.owner: {problem}"
    if owner != req.username and not policy.is_admin(req.groups):
        return (f"spec.owner: user {shown(req.username)} may not create a {kind} owned by {shown(owner)}; "
                f"leave spec.owner empty or set it to your own user name (only members of "
                f"{_admins(policy)} may name another owner)")
    if (problem := unregistered(directory, users=[owner])) is not None:
        return f"spec.owner: {problem}"
    return None


def owner_groups(owner: str, req: Requester, directory: Directory | None) -> tuple[str, ...]:
    """The owner's groups for the image rule: the request's when the owner is the requester,
    else (an administrator naming someone) the directory's, if any."""
    if owner == req.username:
        return req.groups
    return directory.groups_of(owner) if directory is not None else ()


# --- ToolRun -----------------------------------------------------------------------------

def toolrun_problem(operation: str, run: Mapping, old: Mapping | None, req: Requester, policy: Policy,
                    image_shares: Iterable[Mapping], directory: Directory | None) -> str | None:
    if (problem := owner_problem("ToolRun", operation, run, old, req, policy, directory)) is not None:
        return problem
    if (problems := podtemplate.template_problems(run, policy.allowed_host_paths)):
        return "; ".join(problems)
    friendly = _spec(run).get("friendlyName")
    if friendly in policy.reserved_names and friendly != _spec(old).get("friendlyName"):
        return (f"spec.friendlyName: {shown(friendly)} is reserved, its host belongs to Toolshare itself "
                f"(reserved names: {', '.join(policy.reserved_names)}; TOOLSHARE_RESERVED_NAMES)")
    image, owner = _spec(run).get("image"), _spec(run).get("owner")
    if operation == UPDATE and old is not None and image == _spec(old).get("image"):
        return None  # unsharing an image stops new launches only; running tools are left alone
    if not isinstance(image, str) or not image:
        return None  # the schema says spec.image is required
    problem = images.use_problem(owner, owner_groups(owner, req, directory), image, image_shares, policy)
    return None if problem is None else f"spec.image: {problem}"


def reference_problem(ref: podtemplate.Reference, allowed: bool, req: Requester, namespace: str) -> str | None:
    """The refusal for one object the run's Pod would use, given the writer's access review."""
    if allowed:
        return None
    what = f"{ref.verb} {ref.resource}/{ref.subresource}" if ref.subresource else f"{ref.verb} {ref.resource}"
    return (f"{ref.field}: user {shown(req.username)} may not {what} {shown(ref.name)} in namespace "
            f"{shown(namespace)}, so a run they write may not use that {ref.kind} either (a tool's Pod could "
            f"read it for them)")


# --- RunShare ----------------------------------------------------------------------------

def matched_runs(share: Mapping, runs_by_name: Mapping[str, Mapping]) -> list[Mapping]:
    return sorted((r for r in runs_by_name.values() if model.share_applies_to(share, r)),
                  key=lambda r: r["metadata"]["name"])


def run_owners(runs: Iterable[Mapping]) -> list[tuple[str, str | None]]:
    return [(r["metadata"]["name"], _spec(r).get("owner")) for r in runs]


def run_principals_problem(share: Mapping, runs: Iterable[Mapping], shares_of: Callable[[str], list[Mapping]],
                           now: dt.datetime) -> str | None:
    """With this share, each run it shares stays under MAX_RUN_PRINCIPALS users and groups over all
    its active shares, so the run's access list always fits in its Ingress."""
    meta = share.get("metadata") or {}
    me = (meta.get("namespace"), meta.get("name"))
    for run in runs:
        name = run["metadata"]["name"]
        others = [s for s in shares_of(name) if (s["metadata"].get("namespace"), s["metadata"]["name"]) != me]
        acls = access.access_for(run, [*others, share], now, {name: run})
        count = (len({u for a in acls.values() for u in a.users})
                 + len({g for a in acls.values() for g in a.groups}))
        if count > model.MAX_RUN_PRINCIPALS:
            return (f"ToolRun {name!r} would be shared with {count} users and groups by its shares together; "
                    f"at most {model.MAX_RUN_PRINCIPALS} (so that its access list fits in its Ingress)")
    return None


def runshare_problem(share: Mapping, req: Requester, policy: Policy, runs_by_name: Mapping[str, Mapping],
                     image_shares: Iterable[Mapping], directory: Directory | None,
                     shares_of: Callable[[str], list[Mapping]] = lambda run: [],
                     now: dt.datetime | None = None) -> str | None:
    spec = _spec(share)
    users, groups = list(spec.get("users") or []), list(spec.get("groups") or [])
    for field, names in (("users", users), ("groups", groups)):
        for name in names:
            if (problem := validate_principal(name)) is not None:
                return f"spec.{field}: {problem}"
    namespace = (share.get("metadata") or {}).get("namespace") or ""
    runs = matched_runs(share, runs_by_name)
    if (problem := access.may_share(req.username, req.groups, namespace, run_owners(runs), policy)) is not None:
        return problem
    if (problem := unregistered(directory, users, groups)) is not None:
        return f"spec.users/groups: {problem}"
    now = now or dt.datetime.now(dt.timezone.utc)
    if (problem := run_principals_problem(share, runs, shares_of, now)) is not None:
        return problem
    image_shares = list(image_shares)
    members = directory.members if directory is not None else None
    for run in runs:
        image = _spec(run).get("image")
        if isinstance(image, str) and image:
            problem = images.share_problem(image, users, groups, image_shares, policy, members)
            if problem is not None:
                return f"cannot share ToolRun {run['metadata']['name']!r}: {problem}"
    return None


def share_change_problem(operation: str, old: Mapping, req: Requester, policy: Policy,
                         old_runs_by_name: Mapping[str, Mapping]) -> str | None:
    """Who may change or delete a stored RunShare: its sharer, whoever may share every run it
    shares now (the owner; a trusted applier in its namespaces), or an administrator. Nobody
    else, though `edit` in the namespace lets them write RunShares: a co-tenant cannot take
    another owner's share away or point it elsewhere."""
    meta = old.get("metadata") or {}
    sharer = (meta.get("annotations") or {}).get(access.ANN_SHARED_BY)
    if req.username == sharer or policy.is_admin(req.groups):
        return None
    runs = matched_runs(old, old_runs_by_name)
    if runs and access.may_share(req.username, req.groups, meta.get("namespace") or "", run_owners(runs),
                                 policy) is None:
        return None
    verb = "delete" if operation == DELETE else "change"
    return (f"RunShare {shown(meta.get('name'))} was shared by {shown(sharer)}: only its sharer, the owner of "
            f"the runs it shares or an administrator ({_admins(policy)}) may {verb} it")


# --- ImageShare --------------------------------------------------------------------------

def imageshare_problem(operation: str, share: Mapping, old: Mapping | None, req: Requester, policy: Policy,
                       image_shares: Iterable[Mapping], directory: Directory | None) -> str | None:
    if (problem := owner_problem("ImageShare", operation, share, old, req, policy, directory)) is not None:
        return problem
    spec = _spec(share)
    for field in ("users", "groups"):
        for name in spec.get(field) or []:
            if (problem := validate_principal(name)) is not None:
                return f"spec.{field}: {problem}"
    if (problem := unregistered(directory, spec.get("users") or [], spec.get("groups") or [])) is not None:
        return f"spec.users/groups: {problem}"
    image = spec.get("image")
    if not isinstance(image, str) or not image:
        return None  # the schema says spec.image is required
    meta = share.get("metadata") or {}
    repository = images.parse_image(image).repository
    me = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    others = [s for s in image_shares
              if f"{s['metadata'].get('namespace', '')}/{s['metadata'].get('name', '')}" != me]
    claim = images.claims(others).get(repository)
    if claim is not None and claim.owner != spec.get("owner"):
        return (f"spec.image: {repository!r} is already claimed by {claim.owner!r} "
                f"(ImageShare {claim.share}); only {claim.owner!r} can share it")
    if claim is None and operation == CREATE and not policy.is_admin(req.groups):
        # A new claim: the administrator's rule says who may claim what.
        owner = spec.get("owner")
        problem = images.claim_problem(repository, owner, owner_groups(owner, req, directory),
                                       meta.get("namespace") or "", policy)
        if problem is not None:
            return f"spec.image: {problem}"
    return None
