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
