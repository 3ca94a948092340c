"""Local processes around the control plane: oauth2-proxy and the gate.

`make run` and the integration tests start them the same way: each its own process (own session,
log file), ready once its health URL answers, stopped by its process group.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from toolshare.local import oauth2proxy
from toolshare.local.controlplane.cluster import free_port
from toolshare.local.issuer import CLIENT_ID


class ServiceError(RuntimeError):
    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer to look at (the gate's sign-in), not to follow


# urllib without redirects: a 3xx comes back as an HTTPError carrying its code and Location.
NO_REDIRECT = urllib.request.build_opener(_NoRedirect)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port now."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class Service:
    """One child process with a log file and a health URL."""

    def __init__(self, name: str, argv: list[str], health_url: str, log_path: Path,
                 env: dict[str, str] | None = None, base_env: dict[str, str] | None = None):
        """`env` is added to `base_env` (default: this process's environment)."""
        self.name, self.argv, self.health_url, self.log_path = name, argv, health_url, log_path
        self.env = {**(os.environ if base_env is None else base_env), **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Service":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=1) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise ServiceError(f"{self.name} was not ready at {self.health_url} in {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def oauth2_proxy(issuer_url: str, log_dir: Path, port: int = 0, host: str = "127.0.0.1") -> Service:
    """`host`: the address it listens on; the node's address when gate Pods must reach it."""
    port = port or free_port()
    argv = oauth2proxy.argv(oauth2proxy.ensure(), listen=f"{host}:{port}", issuer=issuer_url,
                            client_id=CLIENT_ID, cookie_secret=secrets.token_hex(16))
    svc = Service("oauth2-proxy", argv, f"http://{host}:{port}/ping", log_dir / "oauth2-proxy.log")
    svc.url = f"http://{host}:{port}"  # type: ignore[attr-defined]
    return svc


def gate(kubeconfig: Path, auth_url: str, log_dir: Path, port: int = 0, signin_url: str = "",
         env: dict[str, str] | None = None, host: str = "127.0.0.1", grant_key: Path | None = None) -> Service:
    """The gate; `env` carries the operator's TOOLSHARE_* settings and policy, which it shares.
    `host`: where /check listens (the node's address for the runs' guards to follow it);
    `grant_key`: the Ed25519 key (PEM) it signs grants with."""
    port = port or free_port()
    ops = free_port()
    argv = [sys.executable, "-m", "toolshare.cli.main", "gate", "--kubeconfig", str(kubeconfig),
            "--listen", f"{host}:{port}", "--ops-listen", f"127.0.0.1:{ops}", "--oauth2-proxy-url", auth_url]
    if signin_url:
        argv += ["--signin-url", signin_url]
    if grant_key is not None:
        argv += ["--grant-key", str(grant_key)]
    svc = Service("gate", argv, f"http://127.0.0.1:{ops}/readyz", log_dir / f"gate-{port}.log", env=env)
    svc.url = f"http://{host}:{port}"  # type: ignore[attr-defined]
    svc.ops_url = f"http://127.0.0.1:{ops}"  # type: ignore[attr-defined]
    return svc
