"""`toolshare dev` (what `make run` calls): a local control plane, the CRDs, and the operator.

The control plane keeps running after the operator stops (Ctrl-C), so kubectl keeps working;
`make down` (toolshare cluster down) stops it.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from toolshare.local.controlplane import binaries as binmod, cluster


def repo_root() -> Path:
    return binmod.source_dir().parent.parent


def kubectl(bins: binmod.Binaries, kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(bins.path("kubectl")), "--kubeconfig", str(kubeconfig), *args],
                          check=check, text=True, capture_output=True)


def install_crds(bins: binmod.Binaries, kubeconfig: Path) -> None:
    """Apply crds/ server-side (the one CRD source) and wait until every CRD is Established."""
    crds = repo_root() / "crds"
    kubectl(bins, kubeconfig, "apply", "--server-side", "--field-manager=toolshare-dev", "-f", str(crds))
    kubectl(bins, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            "-f", str(crds))


WEBHOOK_CONFIG = "toolshare.dev"  # the name webhooks.py gives both managed configurations


def apply_examples(bins: binmod.Binaries, kubeconfig: Path, timeout: float = 120.0) -> None:
    examples = repo_root() / "examples" / "dev"
    deadline = time.monotonic() + timeout
    # kopf registers the webhook configurations shortly after startup; before that a create
    # would be admitted without the owner and sharer stamps.
    while time.monotonic() < deadline:
        configs = [kubectl(bins, kubeconfig, "get", f"{kind}webhookconfiguration", WEBHOOK_CONFIG,
                           "-o", "jsonpath={.webhooks[*].name}", check=False) for kind in ("validating", "mutating")]
        if all(c.returncode == 0 and c.stdout.strip() for c in configs):
            break
        time.sleep(0.5)
    while True:
        out = kubectl(bins, kubeconfig, "apply", "--server-side", "--field-manager=toolshare-dev",
                      "-f", str(examples), check=False)
        if out.returncode == 0:
            print(out.stdout.strip(), flush=True)
            return
        if time.monotonic() > deadline:
            print(f"could not apply {examples}: {out.stderr.strip()}", flush=True)
            return
        time.sleep(1)  # the webhooks are not served yet


def main(directory: Path) -> int:
    bins = binmod.ensure_binaries()
    state = cluster.up(directory, bins)
    kubeconfig = state.directory / "kubeconfig"
    install_crds(bins, kubeconfig)
    # The samples go through the operator's admission webhooks (owner and sharer are stamped
    # there), so they are applied once the operator serves them.
    threading.Thread(target=apply_examples, args=(bins, kubeconfig), daemon=True, name="dev-examples").start()
    print()
    print("Toolshare is running against a local Kubernetes control plane. In another terminal:")
    print(f"  export KUBECONFIG={kubeconfig}")
    print(f"  export PATH={bins.directory}:$PATH      # kubectl {bins.directory / 'kubectl'}")
    print("  kubectl get toolruns,runshares -A        # or: kubectl get toolshare -A")
    print(f"  kubectl --kubeconfig {state.directory / 'bob.kubeconfig'} auth whoami")
    print("Stop the operator with Ctrl-C; stop the control plane with `make down`.")
    print()
    os.environ["KUBECONFIG"] = str(kubeconfig)
    from toolshare.local.stack import AccessStack
    from toolshare.manager import run_operator

    # oauth2-proxy, the gate, a stand-in tool and nginx; prints how to reach the sample as bob.
    access = AccessStack(state.directory, kubeconfig).start()
    try:
        run_operator()
    except KeyboardInterrupt:
        pass
    finally:
        access.stop()
    return 0
