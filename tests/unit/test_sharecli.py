"""The sharing commands' pure parts: expiry parsing, share names, the applied object."""

from __future__ import annotations

import datetime as dt

import pytest

from toolshare.cli.share import UsageError, desired_share, parse_expiry, share_name

NOW = dt.datetime(2026, 11, 22, 12, 0, 30, 123456, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("text,expected", [
    ("2h", "2026-11-22T14:00:30Z"), ("1d12h", "2026-11-24T00:00:30Z"), ("30m", "2026-11-22T12:30:30Z"),
    ("2026-12-01T18:00:00+01:00", "2026-12-01T17:00:00Z"),
])
def test_expiry_is_a_duration_or_a_time(text, expected):
    assert parse_expiry(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "h", "2x", "yesterday", "2026-11-01T00:00:00Z", "0h"])
def test_bad_or_past_expiry_names_the_option(text):
    with pytest.raises(UsageError, match="--expires"):
        parse_expiry(text, NOW)


def test_share_names_are_stable_labels_per_endpoint_set():
    assert share_name("nb", []) == "nb-share"
    assert share_name("nb", ["api", "lab"]) == share_name("nb", ["lab", "api"]) != share_name("nb", ["api"])
    long = share_name("r" * 63, ["api"])
    assert len(long) <= 63 and long.endswith(share_name("nb", ["api"])[3:])


def test_the_applied_share_is_plain_and_sorted():
    obj = desired_share("nb-share", "lab", "nb", ["carol", "bob", "bob"], ["guests"], [], None)
    assert obj == {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare",
                   "metadata": {"name": "nb-share", "namespace": "lab"},
                   "spec": {"runRef": {"name": "nb"}, "users": ["bob", "carol"], "groups": ["guests"]}}


# --- one-line refusals, the gate's answer, where the gate is ----------------------------------

import json  # noqa: E402

from toolshare.cli.share import (GATE_ENV, Refused, find_gate, gate_table, kubeconfig_path,  # noqa: E402
                                 refusing)
from toolshare.client.kube import ApiError  # noqa: E402

FORBIDDEN = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                        "message": 'runshares.toolshare.dev "nb-share" is forbidden: User "bob" cannot get resource\n'
                                   ' "runshares" in API group "toolshare.dev" in the namespace "lab"'})


def test_a_refusal_is_what_was_refused_and_the_status_message_on_one_line():
    with pytest.raises(Refused) as caught, refusing("read RunShare lab/nb-share"):
        raise ApiError(403, FORBIDDEN)
    assert str(caught.value) == ('the API server refused to read RunShare lab/nb-share: runshares.toolshare.dev '
                                 '"nb-share" is forbidden: User "bob" cannot get resource "runshares" in API '
                                 'group "toolshare.dev" in the namespace "lab"')
    assert ApiError(502, "<html>bad\ngateway</html>").status_message == "HTTP 502: <html>bad gateway</html>"
    assert ApiError(0, "API server unreachable: refused").status_message == "API server unreachable: refused"


def test_other_errors_pass_through_refusing():
    with pytest.raises(KeyError), refusing("anything"):
        raise KeyError("x")


def test_the_gate_is_the_flag_then_the_environment_then_the_dev_file(tmp_path, monkeypatch):
    monkeypatch.delenv(GATE_ENV, raising=False)
    config = tmp_path / "bob.kubeconfig"
    assert find_gate(None, str(config)) is None
    (tmp_path / "access").mkdir()
    (tmp_path / "access" / "urls.json").write_text(json.dumps({"gate": "http://127.0.0.1:1234"}))
    assert find_gate(None, str(config)) == ("http://127.0.0.1:1234", str(tmp_path / "access" / "urls.json"))
    monkeypatch.setenv("KUBECONFIG", f"{config}:/elsewhere/config")
    assert kubeconfig_path(None) == config
    assert find_gate(None, None)[0] == "http://127.0.0.1:1234"
    monkeypatch.setenv(GATE_ENV, "https://toolshare.example.org/")
    assert find_gate(None, None) == ("https://toolshare.example.org", f"${GATE_ENV}")
    assert find_gate("http://gate:8080", None) == ("http://gate:8080", "--gate")


def test_the_gates_answer_is_one_row_per_share_that_reaches_you():
    view = {"user": "bob", "owned": [], "sharedWithMe": [
        {"namespace": "lab", "name": "nb", "owner": "alice",
         "endpoints": [{"name": "lab", "url": "http://nb.example/lab"}, {"name": "api", "url": "http://nb.example/api"}],
         "shares": [{"name": "to-bob", "sharedBy": "alice", "via": "user", "expiresAt": None},
                    {"name": "to-lab", "sharedBy": "admin", "via": "group:lab", "expiresAt": "2030-01-01T00:00:00Z"}]}]}
    lines = gate_table(view).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "RUN", "OWNER", "VIA", "SHARED-BY", "EXPIRES", "URL"]
    assert [line.split() for line in lines[1:]] == [
        ["lab", "to-bob", "nb", "alice", "user", "alice", "never", "http://nb.example/lab,http://nb.example/api"],
        ["lab", "to-lab", "nb", "alice", "group:lab", "admin", "2030-01-01T00:00:00Z",
         "http://nb.example/lab,http://nb.example/api"]]
    assert gate_table({"sharedWithMe": []}).split() == lines[0].split()
