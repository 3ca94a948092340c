"""client/config.ApiConfig: the request headers, and how often the loader's refresh hook runs."""

from __future__ import annotations

from toolshare.client import config as config_module
from toolshare.client.config import ApiConfig


class Loader:
    """Stands in for kubernetes.client.Configuration's token lookup, counting refreshes."""

    def __init__(self) -> None:
        self.calls = 0
        self.token = "Bearer one"

    def get_api_key_with_prefix(self, name: str):
        self.calls += 1
        return self.token if name == "authorization" else None


def test_the_token_is_asked_at_most_once_per_ttl_and_changes_are_taken(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(config_module.time, "monotonic", lambda: clock[0])
    loader = Loader()
    api = ApiConfig("https://127.0.0.1:6443", False, loader)
    first = api.headers()
    assert first == {"Accept": "application/json", "Authorization": "Bearer one"}
    first["Content-Type"] = "changed by a caller"
    for _ in range(100):
        assert api.headers() == {"Accept": "application/json", "Authorization": "Bearer one"}
    assert loader.calls == 1
    loader.token = "Bearer two"  # rotated
    clock[0] += config_module.HEADERS_TTL
    assert api.headers()["Authorization"] == "Bearer two" and loader.calls == 2


def test_no_token_no_authorization_header():
    loader = Loader()
    loader.token = None
    assert ApiConfig("https://h", False, loader).headers() == {"Accept": "application/json"}
