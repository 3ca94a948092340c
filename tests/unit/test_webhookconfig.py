"""webhookconfig.py: the configurations the operator applies and the chart renders."""

import yaml

from toolshare.admission import webhookconfig
from toolshare.local.dev import repo_root
from toolshare.policy import Policy


def test_mutating_hooks_carry_conditions_and_validating_hooks_are_always_called():
    policy = Policy.from_env({"TOOLSHARE_ADMIN_GROUPS": "platform",
                              "TOOLSHARE_TRUSTED_APPLIERS": "group:flux=team-a;user:bot"})
    mutating, validating = webhookconfig.configurations("toolshare.dev", {"url": "https://127.0.0.1:9443"}, policy)
    assert mutating["kind"] == "MutatingWebhookConfiguration"
    assert {w["name"] for w in mutating["webhooks"]} == {
        "toolrun-owner.toolshare.dev", "imageshare-owner.toolshare.dev", "runshare-sharer.toolshare.dev"}
    assert all(w["matchConditions"] for w in mutating["webhooks"])
    assert all(w["failurePolicy"] == "Fail" for w in validating["webhooks"])
    # Validation is always called on CREATE and UPDATE but for RunShare requests whose answer is
    # known: a DELETE by its sharer or an administrator, an UPDATE by its sharer that only narrows.
    conditions = {w["name"]: [c["expression"] for c in w.get("matchConditions", [])] for w in validating["webhooks"]}
    assert conditions["toolrun-admission.toolshare.dev"] == conditions["imageshare-admission.toolshare.dev"] == []
    delete, narrowed = conditions["runshare-admission.toolshare.dev"]
    assert delete.startswith("request.operation != 'DELETE' || !(")
    assert narrowed.startswith("!(request.operation == 'UPDATE' && ")
    runshares = next(w for w in validating["webhooks"] if w["name"].startswith("runshare-admission"))
    assert runshares["rules"][0]["operations"] == ["CREATE", "UPDATE", "DELETE"]
    sharer = next(w for w in mutating["webhooks"] if w["name"].startswith("runshare-sharer"))
    assert sharer["clientConfig"] == {"url": "https://127.0.0.1:9443/runshare-sharer"}
    # The groups the sharer webhook can record, sorted as access.sharer_annotations records them.
    assert '["flux", "platform", "system:masters"].filter(' in sharer["matchConditions"][0]["expression"]


def test_service_paths_get_the_handler_id():
    config = webhookconfig.with_path({"service": {"namespace": "ts", "name": "webhook", "port": 443}}, "toolrun-owner")
    assert config["service"]["path"] == "/toolrun-owner"


def test_conferring_groups_match_what_the_policy_records():
    policy = Policy.from_env({"TOOLSHARE_ADMIN_GROUPS": "b,a", "TOOLSHARE_TRUSTED_APPLIERS": "group:c"})
    groups = webhookconfig.conferring_groups(policy)
    assert groups == ["a", "b", "c", "system:masters"]
    assert list(policy.conferring_groups(["zzz", *reversed(groups)])) == groups


def test_the_owner_policy_lets_owners_admins_and_the_control_plane_through():
    policy = Policy.from_env({"TOOLSHARE_ADMIN_GROUPS": "platform"})
    vap, binding = webhookconfig.owner_policy("toolshare.dev", policy)
    assert vap["kind"] == "ValidatingAdmissionPolicy" and binding["spec"] == {
        "policyName": "toolshare.dev", "validationActions": ["Deny"]}
    rule = vap["spec"]["matchConstraints"]["resourceRules"][0]
    assert rule["resources"] == ["toolruns", "imageshares"] and rule["operations"] == ["UPDATE", "DELETE"]
    trusted = vap["spec"]["variables"][0]["expression"]
    assert '["platform", "system:masters", "system:serviceaccounts:kube-system"]' in trusted
    assert '"system:kube-controller-manager"' in trusted and vap["spec"]["failurePolicy"] == "Fail"


def test_the_principals_policy_joins_users_and_groups_for_display_only():
    policy, binding = webhookconfig.principals_policy("toolshare.dev")
    assert policy["kind"] == "MutatingAdmissionPolicy" and binding["spec"] == {"policyName": "toolshare.dev"}
    assert policy["spec"]["failurePolicy"] == "Ignore"  # display only: never blocks a write
    expression = policy["spec"]["mutations"][0]["applyConfiguration"]["expression"]
    assert 'object.spec.users.join(", ")' in expression and 'object.spec.groups.join(", ")' in expression


def test_the_narrowing_condition_knows_every_runshare_spec_field():
    """A field the condition does not name would pass through a skipped webhook unchecked."""
    crd = yaml.safe_load((repo_root() / "crds" / "runshares.toolshare.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(spec) == set(webhookconfig.NARROWING_FIELDS)
    expression = webhookconfig.narrowed_by_sharer()
    for field, rule in webhookconfig.NARROWING_FIELDS.items():
        if rule == "same":
            assert f"object.spec.{field} == oldObject.spec.{field}" in expression
        else:
            assert f"object.spec.{field}.all(x, x in oldObject.spec.{field})" in expression
    # Only the recorded sharer, with the recorded groups unchanged; never on CREATE or DELETE.
    assert 'oldObject.metadata.annotations["toolshare.dev/shared-by"] == request.userInfo.username' in expression
    assert ('object.metadata.annotations["toolshare.dev/shared-by-groups"] == '
            'oldObject.metadata.annotations["toolshare.dev/shared-by-groups"]') in expression
    assert expression.startswith("request.operation == 'UPDATE' && ")
