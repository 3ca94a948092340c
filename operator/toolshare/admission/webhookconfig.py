"""The Validating/MutatingWebhookConfigurations and the ValidatingAdmissionPolicy, as pure data:
one source for the operator and the chart's test.

The server (server.py) routes a request by the last path segment (the hook id). The
`matchConditions` are the point of owning the configurations: the API server evaluates them
in-process (CEL) and skips the webhook round trip when the mutation would change nothing. A mutating call costs the API server about as much as a whole write
(BENCHMARKS.md), and most RunShare edits come from the sharer who made the share.

Skipping is exact, never a relaxation: a mutating webhook is skipped only when the object
already holds what it would write (an owner is set; the sharer annotations already name this
requester and their conferring groups). Every check lives in the validating webhooks, which
are always called, but for two RunShare requests whose answer is known without them: a DELETE
by its sharer or an administrator, and an UPDATE by its sharer that can only take access away
(narrowed_by_sharer). Both are allowed whatever the webhook would say, so a sharer can unshare,
wholly or in part, with no round trip and while the operator is down.

Who may change or delete a ToolRun or an ImageShare needs no other object, so it is a
ValidatingAdmissionPolicy (CEL, in the API server's own process): the owner or an administrator
may change its spec or labels or delete it, with or without the operator.
"""

from __future__ import annotations

import json

from toolshare.access import ANN_SHARED_BY, ANN_SHARED_BY_GROUPS
from toolshare.policy import SYSTEM_MASTERS, Policy

GROUP, VERSION = "toolshare.dev", "v1alpha1"
SUFFIX = "toolshare.dev"  # <hook id>.<configuration name>, as kopf named them
OPERATIONS = ["CREATE", "UPDATE"]

# (hook id in webhooks.HOOKS, plural, mutating?)
HOOKS = (
    ("toolrun-owner", "toolruns", True),
    ("imageshare-owner", "imageshares", True),
    ("runshare-sharer", "runshares", True),
    ("toolrun-admission", "toolruns", False),
    ("imageshare-admission", "imageshares", False),
    ("runshare-admission", "runshares", False),
)
EXTRA_OPERATIONS = {"runshare-admission": ["DELETE"]}
PLURALS = {"MutatingAdmissionPolicy": "mutatingadmissionpolicies",
           "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings",
           "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
           "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
           "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
           "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}
# The control plane deletes what a namespace holds, and what an owner reference releases.
CONTROL_PLANE_USER = "system:kube-controller-manager"
CONTROL_PLANE_GROUP = "system:serviceaccounts:kube-system"

# CEL over the admission request. `object` is the incoming object as a map.
OWNER_MISSING = "!has(object.spec) || !has(object.spec.owner)"


def conferring_groups(policy: Policy) -> list[str]:
    """The groups policy.conferring_groups() can record, sorted as it records them."""
    wanted = {SYSTEM_MASTERS, *policy.admin_groups,
              *(a.name for a in policy.trusted_appliers if a.kind == "group")}
    return sorted(wanted)


def sharer_unrecorded(policy: Policy) -> str:
    """CEL: true unless the RunShare already carries exactly the annotations the sharer webhook
    would write for this requester (access.sharer_annotations)."""
    groups = json.dumps(conferring_groups(policy))
    by, by_groups = json.dumps(ANN_SHARED_BY), json.dumps(ANN_SHARED_BY_GROUPS)
    recorded = (f"{groups}.filter(g, has(request.userInfo.groups) && g in request.userInfo.groups)"
                '.join(",")')
    return (f"!has(object.metadata.annotations) || !({by} in object.metadata.annotations)"
            f" || !({by_groups} in object.metadata.annotations)"
            f" || object.metadata.annotations[{by}] != request.userInfo.username"
            f" || object.metadata.annotations[{by_groups}] != {recorded}")


def trusted(policy: Policy) -> str:
    """CEL: the requester is an administrator or the control plane."""
    groups = json.dumps(sorted({SYSTEM_MASTERS, CONTROL_PLANE_GROUP, *policy.admin_groups}))
    return (f"request.userInfo.username == {json.dumps(CONTROL_PLANE_USER)}"
            f" || (has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in {groups}))")


def recorded_sharer(obj: str) -> str:
    """CEL: `obj` (object or oldObject) records this requester as its sharer."""
    by = json.dumps(ANN_SHARED_BY)
    return (f"has({obj}.metadata.annotations) && {by} in {obj}.metadata.annotations"
            f" && {obj}.metadata.annotations[{by}] == request.userInfo.username")


def deleted_by_someone_else(policy: Policy) -> str:
    """CEL: not a DELETE by the share's recorded sharer or an administrator (those need no webhook)."""
    return f"request.operation != 'DELETE' || !(({recorded_sharer('oldObject')}) || {trusted(policy)})"


def _subset(field: str) -> str:
    """CEL: object.spec.<field> lists nothing oldObject.spec.<field> did not (absent = empty)."""
    return (f"(!has(object.spec.{field}) || (has(oldObject.spec.{field})"
            f" && object.spec.{field}.all(x, x in oldObject.spec.{field})))")


def _same(field: str) -> str:
    return (f"(has(object.spec.{field}) == has(oldObject.spec.{field})"
            f" && (!has(object.spec.{field}) || object.spec.{field} == oldObject.spec.{field}))")


# The RunShare spec fields the narrowing condition below knows about; a new field must be added
# there (tests/unit/test_webhookconfig.py compares this with the CRD).
NARROWING_FIELDS = {"users": "subset", "groups": "subset", "endpoints": "subset-or-all",
                    "runRef": "same", "runSelector": "same", "expiresAt": "same"}


def narrowed_by_sharer() -> str:
    """CEL: an UPDATE by the share's recorded sharer, the sharer annotations unchanged, that can
    only take access away: the same runs and expiry, users and groups a subset of before, and
    endpoints a subset of before (absent before = every endpoint). Every check the validating
    webhook makes holds for such a change when it held for the stored share, so its answer is
    known: admit. The operator and the gate re-derive access from the stored share either way."""
    by_groups = json.dumps(ANN_SHARED_BY_GROUPS)
    sharer = (f"{recorded_sharer('oldObject')} && {recorded_sharer('object')}"
              f" && {by_groups} in oldObject.metadata.annotations && {by_groups} in object.metadata.annotations"
              f" && object.metadata.annotations[{by_groups}] == oldObject.metadata.annotations[{by_groups}]")
    endpoints = ("(!has(oldObject.spec.endpoints) || (has(object.spec.endpoints)"
                 " && object.spec.endpoints.all(x, x in oldObject.spec.endpoints)))")
    rules = {"subset": _subset, "same": _same, "subset-or-all": lambda _: endpoints}
    spec = " && ".join(rules[rule](field) for field, rule in NARROWING_FIELDS.items())
    return f"request.operation == 'UPDATE' && {sharer} && {spec}"


def match_conditions(hook_id: str, policy: Policy) -> list[dict]:
    if hook_id in ("toolrun-owner", "imageshare-owner"):
        return [{"name": "owner-not-set", "expression": OWNER_MISSING}]
    if hook_id == "runshare-sharer":
        return [{"name": "sharer-not-recorded", "expression": sharer_unrecorded(policy)}]
    if hook_id == "runshare-admission":
        return [{"name": "not-deleted-by-sharer-or-admin", "expression": deleted_by_someone_else(policy)},
                {"name": "not-narrowed-by-sharer", "expression": f"!({narrowed_by_sharer()})"}]
    return []


def with_path(client_config: dict, hook_id: str) -> dict:
    """The server's client config with the handler id appended to its URL or service path."""
    config = json.loads(json.dumps(client_config))
    if "url" in config:
        config["url"] = f"{config['url'].rstrip('/')}/{hook_id}"
    if "service" in config:
        config["service"]["path"] = f"{config['service'].get('path', '').rstrip('/')}/{hook_id}"
    return config


def webhook(hook_id: str, plural: str, client_config: dict, policy: Policy, failure_policy: str = "Fail") -> dict:
    hook = {
        "name": f"{hook_id}.{SUFFIX}",
        "admissionReviewVersions": ["v1", "v1beta1"],
        "sideEffects": "None",
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "timeoutSeconds": 30,
        "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": [plural],
                   "operations": [*OPERATIONS, *EXTRA_OPERATIONS.get(hook_id, [])], "scope": "*"}],
        "clientConfig": with_path(client_config, hook_id),
    }
    if (conditions := match_conditions(hook_id, policy)):
        hook["matchConditions"] = conditions
    return hook


def configurations(name: str, client_config: dict, policy: Policy,
                   labels: dict[str, str] | None = None) -> list[dict]:
    """[MutatingWebhookConfiguration, ValidatingWebhookConfiguration] named `name`."""
    out = []
    for kind, mutating in (("MutatingWebhookConfiguration", True), ("ValidatingWebhookConfiguration", False)):
        out.append({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "webhooks": [webhook(i, plural, client_config, policy) for i, plural, m in HOOKS if m == mutating],
        })
    return out




# CEL over a ToolRun or ImageShare UPDATE or DELETE: what a non-owner may still do.
UNCHANGED = ("request.operation == 'UPDATE' && object.spec == oldObject.spec"
             " && has(object.metadata.labels) == has(oldObject.metadata.labels)"
             " && (!has(object.metadata.labels) || object.metadata.labels == oldObject.metadata.labels)")
OWNER = "has(oldObject.spec) && has(oldObject.spec.owner) ? oldObject.spec.owner : ''"


def owner_policy(name: str, policy: Policy, labels: dict[str, str] | None = None) -> list[dict]:
    """[ValidatingAdmissionPolicy, its binding] named `name`: only the owner or an administrator
    changes a ToolRun's or ImageShare's spec or labels or deletes it (annotations stay open)."""
    meta = {"name": name, **({"labels": labels} if labels else {})}
    verb = "(request.operation == 'DELETE' ? 'delete it' : 'change its spec or labels')"
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": meta,
         "spec": {
             "failurePolicy": "Fail",
             "matchConstraints": {"resourceRules": [{
                 "apiGroups": [GROUP], "apiVersions": [VERSION], "resources": ["toolruns", "imageshares"],
                 "operations": ["UPDATE", "DELETE"], "scope": "*"}]},
             "variables": [{"name": "trusted", "expression": trusted(policy)},
                           {"name": "owner", "expression": OWNER}],
             "validations": [{
                 "expression": f"variables.trusted || request.userInfo.username == variables.owner || ({UNCHANGED})",
                 "messageExpression": ("oldObject.kind + ' ' + oldObject.metadata.name + ' belongs to ' + "
                                       f"variables.owner + ': only its owner or an administrator may ' + {verb}"),
                 "reason": "Forbidden"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": meta, "spec": {"policyName": name, "validationActions": ["Deny"]}},
    ]


# CEL (ApplyConfiguration): a RunShare's users and groups, joined for `kubectl get runshares`.
PRINCIPALS = ('Object{metadata: Object.metadata{annotations: {'
              '"toolshare.dev/users": has(object.spec.users) ? object.spec.users.join(", ") : "", '
              '"toolshare.dev/groups": has(object.spec.groups) ? object.spec.groups.join(", ") : ""}}}')


def principals_policy(name: str, labels: dict[str, str] | None = None) -> list[dict]:
    """[MutatingAdmissionPolicy, its binding] named `name`: every RunShare write carries its users and
    groups joined into annotations, which the printer columns show (a column's JSONPath prints a
    list as JSON, or only its first item). In the API server's process, in the same write: no
    webhook call, no extra write. Display only: no decision reads them, so it fails open
    (failurePolicy Ignore): for a few seconds after the CRD and the policy are created together
    the API server cannot type-check the RunShare yet, and a write then simply goes unjoined."""
    meta = {"name": name, **({"labels": labels} if labels else {})}
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy", "metadata": meta,
         "spec": {
             "failurePolicy": "Ignore", "reinvocationPolicy": "Never",
             "matchConstraints": {"resourceRules": [{
                 "apiGroups": [GROUP], "apiVersions": [VERSION], "resources": ["runshares"],
                 "operations": ["CREATE", "UPDATE"], "scope": "*"}]},
             "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": PRINCIPALS}}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
         "metadata": meta, "spec": {"policyName": name}},
    ]
