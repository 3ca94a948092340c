"""`toolshare dev` (what `make run` calls): a local control plane, the CRDs, and the operator.

The control plane keeps running after the operator stops (Ctrl-C), so kubectl keeps working;
`make down` (toolshare cluster down) stops it.

The samples are set up as they would be on a real cluster: the platform's part (the `lab`
namespace, Toolshare's aggregated user roles, alice's `edit` and the lab group's `view` there) by
the administrator, then alice's run and her share by alice herself, through the admission webhooks
that record her as the run's owner and the share's sharer.

`toolshare dev token USER` mints a token from the dev OIDC issuer that `toolshare dev` keeps in
the cluster directory (stack.py), from any terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from toolshare.local.controlplane import binaries as binmod, cluster

DEFAULT_DIR = ".toolshare/cluster"  # the Makefile's CLUSTER_DIR


def repo_root() -> Path:
    return binmod.source_dir().parent.parent


def kubectl(bins: binmod.Binaries, kubeconfig: Path, *args: str, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
    # Its own copy of the environment, not the C one another thread may be changing (see main()).
    return subprocess.run([str(bins.path("kubectl")), "--kubeconfig", str(kubeconfig), *args],
                          check=check, text=True, capture_output=True, input=input, env=dict(os.environ))


def install_crds(bins: binmod.Binaries, kubeconfig: Path) -> None:
    """Apply crds/ server-side (the one CRD source) and wait until every CRD is Established."""
    crds = repo_root() / "crds"
    kubectl(bins, kubeconfig, "apply", "--server-side", "--field-manager=toolshare-dev", "-f", str(crds))
    kubectl(bins, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            "-f", str(crds))


def set_up_platform(bins: binmod.Binaries, kubeconfig: Path) -> None:
    """As the administrator: the lab namespace, Toolshare's user roles (aggregated into the standard
    edit/view), and who may do what in lab (examples/dev/platform)."""
    root = repo_root()
    out = kubectl(bins, kubeconfig, "apply", "--server-side", "--field-manager=toolshare-dev",
                  "-f", str(root / "examples" / "dev" / "platform"),
                  "-f", str(root / "manifests" / "rbac" / "user-clusterroles.yaml"))
    print(out.stdout.strip(), flush=True)


WEBHOOK_CONFIG = "toolshare.dev"  # the name webhooks.py gives both managed configurations


def apply_examples(bins: binmod.Binaries, kubeconfig: Path, as_user: Path, timeout: float = 120.0) -> None:
    """alice's run and share (examples/dev/alice), applied with her kubeconfig `as_user`."""
    examples = repo_root() / "examples" / "dev" / "alice"
    deadline = time.monotonic() + timeout
    # kopf registers the webhook configurations shortly after startup; before that a create
    # would be admitted without the owner and sharer stamps.
    while time.monotonic() < deadline:
        configs = [kubectl(bins, kubeconfig, "get", f"{kind}webhookconfiguration", WEBHOOK_CONFIG,
                           "-o", "jsonpath={.webhooks[*].name}", check=False) for kind in ("validating", "mutating")]
        if all(c.returncode == 0 and c.stdout.strip() for c in configs):
            break
        time.sleep(0.5)
    # The policy that joins a share's principals for `kubectl get` acts a few seconds after the
    # operator creates it (the API server type-checks it against the CRD); a share applied before
    # would show no USERS until its next write.
    probe = ('{"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare", "metadata": {"name": "probe"}, '
             '"spec": {"runRef": {"name": "probe"}, "users": ["bob"]}}')
    while time.monotonic() < deadline:
        joined = kubectl(bins, kubeconfig, "create", "-n", "default", "--dry-run=server", "-f", "-",
                         "-o", "jsonpath={.metadata.annotations.toolshare\\.dev/users}", check=False, input=probe)
        if joined.returncode == 0 and joined.stdout.strip() == "bob":
            break
        time.sleep(0.5)
    while True:
        # Until the webhooks answer, and until the aggregation controller has given `edit` the
        # Toolshare rules, alice's apply is refused; both take a moment after start.
        out = kubectl(bins, as_user, "apply", "--server-side", "--field-manager=toolshare-dev",
                      "-f", str(examples), check=False)
        if out.returncode == 0:
            print("\n".join(f"{line} as alice" for line in out.stdout.strip().splitlines()), flush=True)
            return
        if time.monotonic() > deadline:
            print(f"could not apply {examples} as alice: {out.stderr.strip()}", flush=True)
            return
        time.sleep(1)


def command_dir(directory: Path) -> str:
    """` --dir DIR` for the commands printed for another terminal, unless it is the default."""
    return "" if Path(directory) == Path(DEFAULT_DIR) else f" --dir {Path(directory).resolve()}"


def tool_path(bins: binmod.Binaries) -> str:
    """PATH entries for another terminal: where `toolshare` and `kubectl-toolshare` are installed
    (this virtualenv's bin), then kubectl's directory."""
    scripts = Path(sys.argv[0]).absolute().parent
    if not (scripts / "kubectl-toolshare").exists():
        scripts = Path(sys.executable).parent
    return f"{scripts}:{bins.directory}"


def main(directory: Path) -> int:
    bins = binmod.ensure_binaries()
    state = cluster.up(directory, bins, node=True)  # alice's JupyterLab runs as a Pod on it
    kubeconfig = state.directory / "kubeconfig"
    install_crds(bins, kubeconfig)
    set_up_platform(bins, kubeconfig)
    print()
    print("Toolshare is running against a local Kubernetes control plane. In another terminal:")
    print(f"  export PATH={tool_path(bins)}:$PATH")
    print(f"  export KUBECONFIG={kubeconfig}      # admin; alice.kubeconfig, bob.kubeconfig, carol.kubeconfig act as them")
    print("  kubectl get toolshare -n lab")
    print("Stop the operator with Ctrl-C; stop the control plane with `make down`.")
    print(flush=True)
    os.environ["KUBECONFIG"] = str(kubeconfig)
    for var, value in cluster.webhook_client_env(state.directory).items():  # answer only the API server
        os.environ.setdefault(var, value)
    from toolshare.local.stack import AccessStack
    from toolshare.manager import run_operator

    # oauth2-proxy, the gate and Traefik; prints how to reach the sample.
    access = AccessStack(state.directory, kubeconfig, command_dir(directory)).start()
    os.environ.setdefault("TOOLSHARE_GATE_URL", access.gate_url)  # what the Ingresses' auth-url names
    # alice's samples go through the operator's admission webhooks (owner and sharer are stamped
    # there), so they are applied once the operator serves them. The thread starts after the last
    # change to os.environ: a setenv in one thread while another execs a child that inherits the C
    # environment can hand the child a freed array (execve's EFAULT, "Bad address": seen once).
    threading.Thread(target=apply_examples, args=(bins, kubeconfig, state.directory / "alice.kubeconfig"),
                     daemon=True, name="dev-examples").start()
    try:
        run_operator()
    except KeyboardInterrupt:
        pass
    finally:
        access.stop()
    return 0


# --- toolshare dev token --------------------------------------------------------------------------


class NoIssuer(RuntimeError):
    pass


def token(directory: Path, user: str, groups: list[str] | None, hours: int) -> tuple[str, list[str]]:
    """A token for `user` from the issuer `toolshare dev` keeps in `directory`, and lines telling
    how to use it (for stderr: the token alone goes to stdout)."""
    from toolshare.local import stack
    from toolshare.local.issuer import USERS

    path = stack.issuer_file(directory)
    if not path.exists():
        raise NoIssuer(f"no dev OIDC issuer in {path.parent}: start `make run` (toolshare dev"
                       f"{command_dir(directory)}) first")
    from toolshare.local.issuer import DevIssuer

    issuer = DevIssuer.load(path)
    chosen = tuple(groups) if groups else USERS.get(user, ())
    minted = issuer.token(user, chosen, ttl=hours * 3600)
    hints = [f"a token for {user} (groups: {', '.join(chosen) or 'none'}) from the dev OIDC issuer "
             f"at {issuer.url}, valid {hours}h; with it in $TOOLSHARE_TOKEN:"]
    hints += [f"  {line}" for line in stack.usage_lines(stack.read_urls(directory), "$TOOLSHARE_TOKEN")]
    return minted, hints
