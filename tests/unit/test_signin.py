"""Where the gate sends a caller who is not signed in (gate/signin.py)."""

from __future__ import annotations

import pytest

from toolshare.gate.signin import signin_location
from toolshare.settings import default_signin_url

TRAEFIK = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "nb-lab.toolshare.localhost",
           "X-Forwarded-Uri": "/lab/tree?a=1&b=%2F"}


def test_the_default_sign_in_url_is_filled_from_the_routers_headers():
    assert signin_location(default_signin_url("toolshare.localhost"), TRAEFIK) == (
        "https://auth.toolshare.localhost/oauth2/start?rd=http://nb-lab.toolshare.localhost"
        "%2Flab%2Ftree%3Fa%3D1%26b%3D%252F")


def test_a_url_without_rd_gets_the_original_request():
    assert signin_location("https://auth.example.org/oauth2/start", TRAEFIK) == (
        "https://auth.example.org/oauth2/start?rd=http%3A%2F%2Fnb-lab.toolshare.localhost%2Flab%2Ftree%3Fa%3D1%26b%3D%252F")


def test_nginx_style_routers_and_no_sign_in_url_get_401():
    assert signin_location(default_signin_url("example.org"), {**TRAEFIK, "X-Original-URL": "http://x/"}) is None
    assert signin_location("", TRAEFIK) is None


@pytest.mark.parametrize("bad", [
    {"X-Forwarded-Host": "evil.example.org\r\nSet-Cookie: x=1"},
    {"X-Forwarded-Host": "a b"},
    {"X-Forwarded-Host": ""},
    {"X-Forwarded-Uri": "lab"},
    {"X-Forwarded-Uri": ""},
    {"X-Forwarded-Proto": "javascript"},
])
def test_headers_that_are_not_a_request_get_401(bad):
    assert signin_location(default_signin_url("example.org"), {**TRAEFIK, **bad}) is None


def test_a_header_cannot_break_out_of_rd():
    location = signin_location("https://auth.example.org/oauth2/start",
                               {**TRAEFIK, "X-Forwarded-Uri": "/x\r\nLocation: https://evil/#&rd=https://evil"})
    assert "\r" not in location and "\n" not in location and location.count("rd=") == 1
