"""Bad input is refused by the API server itself (CRD schema and CEL), with a message naming the rule."""

from __future__ import annotations

import json

import kubernetes
import pytest

from tests.support.objects import Toolshare, runshare, toolrun


@pytest.fixture
def ts(cluster, namespace, crds):
    return Toolshare(cluster.client(), namespace)


def refused(ts, obj) -> str:
    with pytest.raises(kubernetes.client.ApiException) as err:
        ts.create(obj)
    assert err.value.status == 422, err.value.body
    return json.loads(err.value.body)["message"]


def with_spec(obj, **changes):
    obj["spec"].update(changes)
    return obj


@pytest.mark.parametrize("endpoints, message", [
    ([{"name": "web", "port": 22, "protocol": "http"}], "port 22 is reserved for ssh endpoints"),
    ([{"name": "web", "port": 80, "protocol": "http"}, {"name": "web", "port": 81, "protocol": "http", "path": "/b"}],
     "endpoint names must be unique"),
    ([{"name": "web", "port": 2222, "protocol": "http"}, {"name": "ssh", "port": 2222, "protocol": "ssh"}],
     "endpoint ports must be unique"),
    ([{"name": "web", "port": 0, "protocol": "http"}], "port must be between 1 and 65535"),
    ([{"name": "web", "port": 70000, "protocol": "http"}], "port must be between 1 and 65535"),
    ([{"name": "web", "port": 80, "protocol": "ftp"}], 'supported values: "http", "https", "ssh"'),
    ([{"name": "Web_UI", "port": 80, "protocol": "http"}], "endpoint name must be a port name"),
    ([{"name": "web", "port": 80, "protocol": "http", "path": "/a b"}], "path must be / or /segment"),
])
def test_bad_endpoints_are_refused(ts, endpoints, message):
    assert message in refused(ts, with_spec(toolrun("nb"), endpoints=endpoints))


def _expect(value: str, rule: str) -> str:
    """Over-long strings fail the schema's length limits before CEL runs."""
    if len(value) > 253:
        return "Too long: may not be more than 253"
    return rule


@pytest.mark.parametrize("owner", ["bob smith", "bob;drop", "${jndi}", "-bob", "a" * 254, "bob\nX-Evil: 1"])
def test_bad_owner_is_refused(ts, owner):
    message = refused(ts, with_spec(toolrun("nb"), owner=owner))
    assert "spec.owner" in message
    assert _expect(owner, "owner must be a principal") in message


def test_bad_run_name_and_friendly_name_are_refused(ts):
    bad = toolrun("nb")
    bad["metadata"]["name"] = "1nb"
    assert "metadata.name must be a DNS-1035 label" in refused(ts, bad)
    assert "friendlyName must be a DNS-1123 label" in refused(ts, toolrun("nb", friendly="My.Notebook"))


@pytest.mark.parametrize("principal", ["bob smith", 'bob"', "bob,carol", "bob;", "$bob", "{bob}", "bob#1",
                                       "bob%20", "bob&x", "back\\slash", "tab\tbob", "ｂob", "bob\u2028",
                                       "", "x" * 254])
def test_hostile_principals_are_refused_as_user_and_group(ts, principal):
    message = refused(ts, runshare("s", run="nb", users=[principal]))
    assert "spec.users" in message and _expect(principal, "users must be principals") in message
    message = refused(ts, runshare("s", run="nb", groups=[principal]))
    assert "spec.groups" in message and _expect(principal, "groups must be principals") in message


def test_share_shape_rules(ts):
    assert "exactly one of runRef" in refused(ts, runshare("s", users=["bob"]))
    assert "exactly one of runRef" in refused(
        ts, runshare("s", run="nb", selector={"matchLabels": {"a": "b"}}, users=["bob"]))
    assert "at least one user or group" in refused(ts, runshare("s", run="nb"))
    too_many = runshare("s", run="nb", users=[f"user{i}" for i in range(200)], groups=[f"g{i}" for i in range(57)])
    assert "at most 256 users and groups together" in refused(ts, too_many)
    assert "runSelector must have matchLabels or matchExpressions" in refused(
        ts, runshare("s", selector={}, users=["bob"]))
    assert 'spec.expiresAt: Invalid value: "tomorrow"' in refused(ts, runshare("s", run="nb", users=["bob"], expires_at="tomorrow"))


def test_valid_principals_of_common_identity_providers_are_accepted(ts):
    ok = runshare("s", run="nb", users=["bob", "bob@example.org", "first.last+tag@example.org"],
                  groups=["lab", "oidc:data-science", "org/team", "CN_admins"])
    assert ts.create(ok)["metadata"]["name"] == "s"
