"""Grants (toolshare/grant.py): only the gate's key makes one, and one admits exactly its target."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, strategies as st

from toolshare import grant

KEY = grant.new_key()
PUBLIC = grant.load_public(grant.public_text(KEY))
NOW = 1_800_000_000
HOSTILE = [e["value"] * e.get("repeat", 1)
           for e in yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_principals.yaml").read_text())]


def token(**kw) -> str:
    args = {"namespace": "lab", "run": "nb", "endpoint": "lab", "user": "bob", "groups": ("physics",), "now": NOW}
    args.update(kw)
    return grant.make(KEY, **args)


def test_a_grant_admits_its_run_endpoint_and_person_until_it_expires():
    g = grant.admit(PUBLIC, token(), "lab", "nb", "lab", NOW + grant.TTL - 1)
    assert (g.user, g.groups, g.identity) == ("bob", ("physics",), ("lab", "bob", ("physics",)))
    with pytest.raises(grant.GrantRefused, match="expired"):
        grant.admit(PUBLIC, token(), "lab", "nb", "lab", NOW + grant.TTL)
    with pytest.raises(grant.GrantRefused, match="not valid yet"):
        grant.admit(PUBLIC, token(now=NOW + 60), "lab", "nb", "lab", NOW)


@pytest.mark.parametrize("target", [("other", "nb", "lab"), ("lab", "other", "lab"), ("lab", "nb", "api")])
def test_a_grant_for_one_target_opens_no_other(target):
    with pytest.raises(grant.GrantRefused, match="the grant is for lab/nb/lab"):
        grant.admit(PUBLIC, token(), *target, NOW)


def test_only_the_gates_key_makes_a_grant():
    forged = grant.make(grant.new_key(), "lab", "nb", "lab", "bob", (), NOW)
    with pytest.raises(grant.GrantRefused, match="not signed by the gate"):
        grant.admit(PUBLIC, forged, "lab", "nb", "lab", NOW)


def test_a_changed_payload_is_refused():
    payload, signature = token().split(".")
    other_payload = token(user="alice").split(".")[0]
    flipped = signature[:10] + ("B" if signature[10] == "A" else "A") + signature[11:]  # a fully used character
    for bad in (f"{other_payload}.{signature}", f"{payload}.{flipped}", f"{payload}.", payload,
                "", "..", "a.b.c", "x" * (grant.MAX_LENGTH + 1)):
        with pytest.raises(grant.GrantRefused):
            grant.admit(PUBLIC, bad, "lab", "nb", "lab", NOW)


def test_a_signed_payload_of_the_wrong_shape_is_refused():
    import json

    for data in ({"v": 2, "ns": "lab", "run": "nb", "ep": "lab", "sub": "bob", "grp": [], "iat": NOW, "exp": NOW + 9},
                 {"v": 1, "ns": "lab", "run": "nb", "ep": "lab", "sub": 7, "grp": [], "iat": NOW, "exp": NOW + 9},
                 {"v": 1, "ns": "lab", "run": "nb", "ep": "lab", "sub": "bob", "grp": [], "iat": NOW, "exp": True},
                 {"v": 1, "ns": "lab"}, [1, 2]):
        payload = json.dumps(data).encode()
        signed = f"{grant._b64(payload)}.{grant._b64(KEY.sign(payload))}"
        with pytest.raises(grant.GrantRefused, match="malformed"):
            grant.admit(PUBLIC, signed, "lab", "nb", "lab", NOW)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_principals_round_trip_as_they_are_in_a_header_safe_token(value):
    if len(value) * 2 > grant.MAX_LENGTH * 3 // 4:
        with pytest.raises(ValueError, match="over"):
            token(user=value, groups=(value,))
        return
    made = token(user=value, groups=(value,))
    assert all(c.isalnum() or c in "-_." for c in made)  # a header value nothing can break out of
    assert grant.admit(PUBLIC, made, "lab", "nb", "lab", NOW)[3:5] == (value, (value,))


@given(st.text(max_size=200), st.lists(st.text(max_size=40), max_size=5))
def test_any_person_round_trips(user, groups):
    assert grant.read(PUBLIC, token(user=user, groups=groups))[3:5] == (user, tuple(groups))


def test_keys_load_from_their_text_forms():
    assert grant.public_text(grant.load_private(grant.private_pem(KEY))) == grant.public_text(KEY)
    for bad in ("not base64!", grant.public_text(KEY)[:-4]):
        with pytest.raises(ValueError, match="grant public key"):
            grant.load_public(bad)
