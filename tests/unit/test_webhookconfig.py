"""webhookconfig.py: the configurations the operator applies and the chart renders."""

from toolshare.admission import webhookconfig
from toolshare.policy import Policy


def test_mutating_hooks_carry_conditions_and_validating_hooks_are_always_called():
    policy = Policy.from_env({"TOOLSHARE_ADMIN_GROUPS": "platform",
                              "TOOLSHARE_TRUSTED_APPLIERS": "group:flux=team-a;user:bot"})
    mutating, validating = webhookconfig.configurations("toolshare.dev", {"url": "https://127.0.0.1:9443"}, policy)
    assert mutating["kind"] == "MutatingWebhookConfiguration"
    assert {w["name"] for w in mutating["webhooks"]} == {
        "toolrun-owner.toolshare.dev", "imageshare-owner.toolshare.dev", "runshare-sharer.toolshare.dev"}
    assert all(w["matchConditions"] for w in mutating["webhooks"])
    assert all("matchConditions" not in w and w["failurePolicy"] == "Fail" for w in validating["webhooks"])
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
