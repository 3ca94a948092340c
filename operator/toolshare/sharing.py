"""Who may share a run: one pure rule, applied at admission and again by the reconciler.

The mutating webhook records the requester on every RunShare it admits (annotations below, always
overwritten, so a user cannot forge them); the reconciler re-checks the recorded sharer against
the runs the share matches now, so a share that slipped past admission (created before the webhook
was installed, or a selector that later reaches someone else's run) is Invalid and grants nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from toolshare.policy import Policy
from toolshare.principals import is_valid_principal

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
