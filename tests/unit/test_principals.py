"""The principal grammar: what may become a user or group name (and so reach an annotation)."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolshare.principals import (
    PRINCIPAL_PATTERN,
    PRINCIPAL_RE,
    is_dns_label,
    is_valid_principal,
    validate_principal,
)

VALID = [
    "a", "alice", "Alice", "0", "bob@example.org", "first.last+tag@example.co.uk", "lab:bio",
    "org/team", "CN_x-y", "a" * 253, "group:sub/team.x", "9lives",
]
INVALID = [
    "", " ", "alice ", " alice", "al ice", "a\tb", "a\nb", "alice\n", "a\x00", "a\x7f", "'a'", '"a"',
    "a'b", "$x", "a$b", "a{b", "a}b", "a;b", "a#b", "a%b", "a&b", "a,b", "a\\b", "-a", ".a", "@a",
    "+a", ":a", "/a", "_a", "a" * 254, "ä", "aé", "a\u200bb", "a*b", "a(b", "a<b", "a|b", "a=b",
    "a?b", "a!b", "a`b", "a[b", "a~b",
]


@pytest.mark.parametrize("name", VALID)
def test_valid(name):
    assert is_valid_principal(name)
    assert validate_principal(name) is None


@pytest.mark.parametrize("name", INVALID)
def test_invalid_with_message_naming_the_rule(name):
    assert not is_valid_principal(name)
    error = validate_principal(name)
    assert error and "letters, digits" in error and "253" in error


def test_message_names_the_offending_character():
    assert "','" in validate_principal("a,b")
    assert "' '" in validate_principal("a b")
    assert "start with a letter or digit" in validate_principal("-a")


def test_long_or_hostile_names_are_shortened_and_escaped_in_messages():
    error = validate_principal("a;" + "b" * 500)
    assert len(error) < 300
    assert "\n" not in validate_principal("a\nb")


@pytest.mark.parametrize("value", [None, 1, ["a"], b"a"])
def test_non_strings(value):
    assert not is_valid_principal(value)
    assert validate_principal(value)


def test_regex_is_the_documented_one():
    assert PRINCIPAL_PATTERN == r"^[A-Za-z0-9][A-Za-z0-9._@+:/-]{0,252}$"
    assert PRINCIPAL_RE.pattern == PRINCIPAL_PATTERN


@given(st.text(max_size=300))
def test_validate_agrees_with_the_regex(name):
    assert (validate_principal(name) is None) == is_valid_principal(name)
    # fullmatch, and no trailing-newline loophole of `$`.
    assert is_valid_principal(name) == bool(
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@+:/-]{0,252}", name))


@given(st.text(alphabet="abcAZ09._@+:/-,; $\"'{}\n", max_size=20))
def test_no_forbidden_character_is_ever_valid(name):
    if is_valid_principal(name):
        assert not set(name) & set(",; $\"'{}\n")
        assert name[0].isalnum()


@pytest.mark.parametrize("name,ok", [
    ("a", True), ("a-b", True), ("0a", True), ("a" * 63, True), ("a" * 64, False), ("A", False),
    ("-a", False), ("a-", False), ("a.b", False), ("", False), ("a_b", False), (None, False),
])
def test_dns_label(name, ok):
    assert is_dns_label(name) is ok
