"""The operator under test, run as in production: its own process, `toolshare operator`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from toolshare.local.controlplane.cluster import free_port
from toolshare.local.services import listening


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_path: Path, env: dict[str, str] | None = None):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "toolshare.cli.main", "operator", "--kubeconfig", str(self.kubeconfig),
             "--liveness", f"http://127.0.0.1:{self.port}/healthz", "--metrics-port", str(self.metrics_port)]
            # kopf's debug log (every event, watch restarts) when a test needs explaining
            + (["--verbose"] if os.environ.get("TOOLSHARE_TEST_OPERATOR_VERBOSE") == "1" else []),
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                    if r.status == 200 and self._serving_webhooks():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"operator did not become live and serve its webhooks in 60s:\n{self.log_tail()}")

    def _serving_webhooks(self) -> bool:
        """Live comes before the webhook server listens; after a restart the configurations already
        point at its port, so a write in between is refused (connection refused, failurePolicy Fail)."""
        listen = self.env.get("TOOLSHARE_WEBHOOK_LISTEN")
        if not listen:
            return True
        host, _, port = listen.rpartition(":")
        return listening(int(port), "127.0.0.1" if host in ("", "0.0.0.0") else host)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


WEBHOOK_CONFIG = "toolshare.dev"


def wait_for_webhooks(cluster, port: int, proc: OperatorProcess, timeout: float = 60) -> None:
    """Until both managed webhook configurations point at the operator's port (kopf writes them
    asynchronously after startup); before that, writes would not be checked yet."""
    import kubernetes

    api = kubernetes.client.AdmissionregistrationV1Api(cluster.client())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            configs = [api.read_validating_webhook_configuration(WEBHOOK_CONFIG),
                       api.read_mutating_webhook_configuration(WEBHOOK_CONFIG)]
            if all(c.webhooks and all(f":{port}/" in (w.client_config.url or "") for w in c.webhooks)
                   for c in configs):
                return
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
        time.sleep(0.2)
    raise RuntimeError(f"webhook configurations not in place after {timeout}s:\n{proc.log_tail()}")
