"""A burst of RunShare changes, written by a client that retries through outages.

A seeded random sequence of creates, spec changes and deletes over a namespace's shares, applied
from a background thread as fast as the API server takes them. When a write is refused because
the control plane or the admission webhook is away (5xx, connection errors), the writer retries the
same change until it lands, as a real client would; anything else (a 4xx) is a bug and stops the
burst with that error.
"""

from __future__ import annotations

import random
import threading
import time

import kubernetes
import urllib3

from tests.support.objects import GROUP, VERSION, runshare

USERS = ("bob", "carol", "dave", "erin", "frank", "grace", "heidi")
GROUPS = ("lab", "guests", "data-science", "ops")
TEAMS = ("a", "b")


def transient(err: Exception) -> bool:
    """An error a client should retry: the server or the webhook was away, not a bad request."""
    if isinstance(err, kubernetes.client.ApiException):
        return err.status == 0 or err.status >= 500 or err.status == 429
    return isinstance(err, (urllib3.exceptions.HTTPError, OSError))


def retrying(fn, *args, timeout: float = 120.0, **kwargs):
    """fn(*args) until it does not fail transiently; the last error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - classified just below
            if not transient(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class ShareBurst(threading.Thread):
    """`changes` RunShare writes in `namespace` over runs `runs` (labelled team=a|b)."""

    def __init__(self, client, namespace: str, runs: list[str], changes: int = 500, seed: int = 7,
                 max_shares: int = 12):
        super().__init__(daemon=True, name=f"burst-{namespace}")
        self.api = kubernetes.client.CustomObjectsApi(client)
        self.ns, self.runs, self.changes, self.max_shares = namespace, runs, changes, max_shares
        self.rng = random.Random(seed)
        self.done = 0
        self.error: BaseException | None = None
        self.live: set[str] = set()
        self.serial = 0

    # -- the changes ---------------------------------------------------------------------------

    def _principals(self) -> tuple[list[str], list[str]]:
        users = self.rng.sample(USERS, self.rng.randint(0, 3))
        groups = self.rng.sample(GROUPS, self.rng.randint(0 if users else 1, 2))
        return users, groups

    def _create(self) -> None:
        self.serial += 1
        name = f"s{self.serial}"
        users, groups = self._principals()
        if self.rng.random() < 0.3:
            body = runshare(name, selector={"matchLabels": {"team": self.rng.choice(TEAMS)}}, users=users, groups=groups)
        else:
            body = runshare(name, run=self.rng.choice(self.runs), users=users, groups=groups)
        self._write(lambda: self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, "runshares", body,
                                                                       _request_timeout=15), ok=(409,))
        self.live.add(name)

    def _change(self) -> None:
        name = self.rng.choice(sorted(self.live))
        users, groups = self._principals()
        patch = {"spec": {"users": users or None, "groups": groups or None}}
        if self.rng.random() < 0.2:
            patch["spec"]["endpoints"] = self.rng.choice([["lab"], None])
        self._write(lambda: self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, "runshares", name,
                                                                      patch, _request_timeout=15))

    def _delete(self) -> None:
        name = self.rng.choice(sorted(self.live))
        self._write(lambda: self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, "runshares", name,
                                                                       _request_timeout=15), ok=(404,))
        self.live.discard(name)

    def _write(self, fn, ok=()) -> None:
        try:
            retrying(fn)
        except kubernetes.client.ApiException as err:
            # A create or delete that landed just before the connection broke comes back as
            # 409 / 404 on the retry: it is done.
            if err.status not in ok:
                raise

    def step(self) -> None:
        roll = self.rng.random()
        if not self.live or (roll < 0.15 and len(self.live) < self.max_shares):
            self._create()
        elif roll < 0.22 and len(self.live) > 2:
            self._delete()
        else:
            self._change()

    def run(self) -> None:
        try:
            for _ in range(self.changes):
                self.step()
                self.done += 1
        except BaseException as err:  # reported by finish()
            self.error = err

    def wait_until(self, done: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.done < done and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.error:
            raise self.error
        assert self.done >= done, f"burst reached only {self.done} of {done} changes in {timeout}s"

    def finish(self, timeout: float = 300.0) -> None:
        self.join(timeout)
        if self.error:
            raise self.error
        assert not self.is_alive(), f"burst still running after {timeout}s ({self.done} changes)"
        assert self.done == self.changes
