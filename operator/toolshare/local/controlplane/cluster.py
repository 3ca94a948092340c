"""Start, stop and inspect a local control plane living in one directory.

Layout of DIR: pki/ (CA, serving cert, SA keys, tokens.csv), etcd/ (data), logs/, state.json (what
runs: pids, ports and each component's argv, so `restart` can start one again in place), kubeconfig (admin) and <user>.kubeconfig for the test identities.
Every process is started in its own session so `down` can signal the whole process group.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from toolshare import pki as pkimod
from toolshare.admission import server
from toolshare.local.controlplane import node as nodemod
from toolshare.local.controlplane.binaries import Binaries, ensure_binaries

# In start order; `down` stops them in reverse. The last five are the node's (node.py).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager",
              "kube-scheduler", "containerd", "kubelet", "kube-proxy", "kube-router")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SERVICE_CIDR = "10.96.0.0/16"
READY_TIMEOUT = 90.0
WEBHOOK_CLIENT_CA = "webhook-client-ca"  # pki/ stem of the CA of the API server's webhook client


class ClusterError(RuntimeError):
    pass


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port nothing listens on now, outside the kernel's ephemeral range, and never one this
    process handed out before. Callers bind theirs later: a port the kernel picked (bind to 0)
    may meanwhile be the source port of some outgoing connection (CI: the scheduler's
    "bind: address already in use" in one `up`), and a just-closed one may be given again."""
    low, high = _ephemeral_range()
    candidates = range(20000, low) if low > 21000 else range(high + 1, 65536)
    with _HANDED_OUT_LOCK:
        while True:
            port = random.choice(candidates)
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port


_start_time = nodemod.start_time  # with the pid, a process's identity


def _alive(pid: int, started: int | None) -> bool:
    """True if `pid` is still the process we started (a recycled pid does not count)."""
    return started is not None and _start_time(pid) == started


@dataclass
class State:
    directory: Path
    pids: dict[str, int]
    ports: dict[str, int]
    binaries: str
    starts: dict[str, int | None] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @classmethod
    def load(cls, directory: Path) -> "State | None":
        path = directory / "state.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(directory, data["pids"], data["ports"], data["binaries"], data.get("starts", {}),
                   data.get("argv", {}), data.get("env", {}))

    def save(self) -> None:
        tmp = self.directory / "state.json.tmp"
        tmp.write_text(json.dumps({"pids": self.pids, "starts": self.starts, "ports": self.ports,
                                   "binaries": self.binaries, "argv": self.argv, "env": self.env}))
        os.replace(tmp, self.directory / "state.json")

    def running(self) -> dict[str, bool]:
        return {name: _alive(pid, self.starts.get(name)) for name, pid in self.pids.items()}

    def launch(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        pid = _start(name, argv, self.directory / "logs", env)
        self.pids[name], self.starts[name], self.argv[name] = pid, _start_time(pid), list(argv)
        if env:
            self.env[name] = env
        self.save()


def kubeconfig(server: str, ca_file: Path, user: str, token: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "toolshare-local", "cluster": {
            "server": server,
            "certificate-authority-data": __import__("base64").b64encode(ca_file.read_bytes()).decode(),
        }}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": f"toolshare-local-{user}", "context": {"cluster": "toolshare-local", "user": user}}],
        "current-context": f"toolshare-local-{user}",
    }


def _write_kubeconfig(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _webhook_client(pki_dir: Path) -> Path:
    """The API server's AdmissionConfiguration: every admission webhook it calls (kubeConfigFile
    user "*") is shown a client certificate from a CA of its own, the one the operator is told to
    answer (webhook_client_env). A certificate proves without being replayable, so "*" gives
    nothing away to another webhook."""
    ca = pkimod.ensure_ca(pki_dir, WEBHOOK_CLIENT_CA, "toolshare-local-webhook-client-ca")
    key, cert = pkimod.ensure_client_cert(pki_dir, "apiserver-webhook-client", server.DEFAULT_CLIENT_NAME,
                                          ca=WEBHOOK_CLIENT_CA)
    users = pki_dir / "admission-webhooks.kubeconfig"
    _write_kubeconfig(users, {"apiVersion": "v1", "kind": "Config", "users": [
        {"name": "*", "user": {"client-certificate": str(cert), "client-key": str(key)}}]})
    webhook = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration", "kubeConfigFile": str(users)}
    config = pki_dir / "admission.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
        "plugins": [{"name": plugin, "configuration": webhook}
                    for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")]}, sort_keys=False))
    return config


def webhook_client_env(directory: Path) -> dict[str, str]:
    """What an operator serving this control plane's admission webhooks is started with: answer
    only the API server's client certificate (server.py). Empty when its API server was started
    without one (a directory brought up by an older Toolshare and still running)."""
    state = State.load(directory)
    argv = (state.argv.get("kube-apiserver") if state else None) or []
    ca = directory / "pki" / f"{WEBHOOK_CLIENT_CA}.crt"
    if not ca.exists() or not any(a.startswith("--admission-control-config-file=") for a in argv):
        return {}
    return {"TOOLSHARE_WEBHOOK_CLIENT_CA": str(ca), "TOOLSHARE_WEBHOOK_CLIENT_NAMES": server.DEFAULT_CLIENT_NAME}


def _get(url: str, ca: Path, token: str | None, timeout: float = 2.0) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl._create_unverified_context()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


def _start(name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None) -> int:
    log = open(logs / f"{name}.log", "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True, env={**os.environ, **(env or {})})
    log.close()
    return proc.pid


def _wait(what: str, check, timeout: float, state: State, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        dead = [n for n, ok in state.running().items() if not ok]
        if dead:
            tail = (logs / f"{dead[0]}.log").read_text(errors="replace")[-3000:]
            raise ClusterError(f"{dead[0]} exited while waiting for {what}; last log lines:\n{tail}")
        time.sleep(0.2)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs are in {logs}")


def _ready_check(state: State, name: str, p: pkimod.ClusterPKI):
    """A no-argument check that is true once component `name` answers its health URL."""
    if name == "etcd":
        return lambda: _get(f"http://127.0.0.1:{state.ports['etcd']}/health", None, None)[0] == 200
    if name == "kube-apiserver":
        return lambda: _get(f"{state.server}/readyz", p.ca_cert, p.tokens["admin"])[0] == 200
    if name == "kube-controller-manager":
        return lambda: _get(f"https://127.0.0.1:{state.ports['controller_manager']}/healthz", None, None)[0] == 200
    if name == "kube-scheduler":
        return lambda: _get(f"https://127.0.0.1:{state.ports['scheduler']}/healthz", None, None)[0] == 200
    if name == "containerd":
        paths = nodemod.Paths.of(state.directory)
        ctr = Path(state.argv["containerd"][0]).with_name("ctr")
        return lambda: paths.containerd_socket.exists() and subprocess.run(
            [str(ctr), "--address", str(paths.containerd_socket), "version"], capture_output=True).returncode == 0
    port = {"kubelet": "kubelet_healthz", "kube-proxy": "kube_proxy_healthz", "kube-router": "kube_router_health"}[name]
    return lambda: _get(f"http://127.0.0.1:{state.ports[port]}/healthz", None, None)[0] == 200


def up(directory: Path, binaries: Binaries | None = None, log=print, node: bool = False,
       images: tuple[str, ...] | None = None) -> State:
    """Bring the control plane up in `directory` and return once /readyz answers ok; with `node`,
    also the node (node.py) and only once it is Ready, untainted and its Services and NetworkPolicy
    enforcement answer. `images`: what to import into the node (default: every image it uses)."""
    if node and images is None:
        from toolshare.local.images import catalog

        # The tools' images; the Toolshare image (rebuilt on every change of operator/) is imported
        # by what runs it (the Helm install test), not on every `up`.
        images = (catalog.PAUSE, catalog.DEBIAN, catalog.PYTHON, catalog.JUPYTERLAB)
    directory = directory.resolve()
    existing = State.load(directory)
    if existing is not None:
        status = existing.running()
        if all(status.values()):
            log(f"control plane already running in {directory} at {existing.server}")
            return existing
        # A stale directory from a killed run: stop what is left and start over from clean data,
        # rather than half-use an etcd whose API server may have died mid-write.
        log(f"recovering stale cluster directory {directory} ({status}); restarting from clean data")
        down(directory, log=lambda *_: None)
    node_ip = None
    if node:
        try:
            nodemod.check_machine()
            nodemod.claim(directory)  # refuses while another cluster's node runs on this machine
        except nodemod.NodeError as e:
            raise ClusterError(str(e)) from None
        node_ip = nodemod.node_ip()
    try:
        return _bring_up(directory, binaries, log, node_ip, images)
    except BaseException:
        # Half up is worse than down: it holds ports, the node's claim and the machine's bridge and
        # rules, and the caller that sees the error has nothing to take down (a test session's
        # fixture never yields).
        down(directory, log=lambda *_: None)
        if node_ip and (nodemod.owner() or {}).get("directory") == str(directory):
            nodemod.cleanup(directory, log=lambda *_: None)
        raise


def _bring_up(directory: Path, binaries: Binaries | None, log, node_ip: str | None, images) -> State:
    binaries = binaries or ensure_binaries(log=log)
    started = time.monotonic()
    logs = directory / "logs"
    for sub in ("etcd", "logs"):
        shutil.rmtree(directory / sub, ignore_errors=True)
    logs.mkdir(parents=True)
    p = pkimod.ensure_pki(directory / "pki", extra_ips=(node_ip,) if node_ip else ())
    ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler",
                                      "kubelet", "kubelet_healthz", "kube_proxy_healthz", "kube_proxy_metrics",
                                      "kube_router_health")}
    state = State(directory, {}, ports, str(binaries.directory))
    state.save()  # before starting anything, so `down` can always find what it has to stop

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    state.launch("etcd", [
        str(binaries.path("etcd")),
        "--name=toolshare", f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=toolshare={peer_url}",
        "--unsafe-no-fsync=true",  # a disposable test cluster: durability traded for speed
        "--log-level=warn",
    ])
    _wait("etcd", _ready_check(state, "etcd", p), READY_TIMEOUT, state, logs)

    if node_ip:
        kubelet_key, kubelet_cert = pkimod.ensure_client_cert(directory / "pki", "apiserver-kubelet-client",
                                                             nodemod.APISERVER_KUBELET_USER)
        # Pods reach the API server through the `kubernetes` Service, whose endpoint is the node's
        # address; the API server reaches kubelets (logs, exec) with its client certificate.
        where = ["--bind-address=0.0.0.0", f"--advertise-address={node_ip}", "--endpoint-reconciler-type=lease",
                 "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                 f"--kubelet-client-certificate={kubelet_cert}", f"--kubelet-client-key={kubelet_key}",
                 "--kubelet-preferred-address-types=InternalIP,Hostname"]
    else:
        where = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                 "--endpoint-reconciler-type=none",  # no node, no Service network
                 "--authorization-mode=RBAC"]
    state.launch("kube-apiserver", [
        str(binaries.path("kube-apiserver")),
        f"--etcd-servers={etcd_url}",
        *where,
        f"--secure-port={ports['apiserver']}",
        f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
        f"--client-ca-file={p.ca_cert}",
        f"--token-auth-file={p.token_file}",
        f"--service-account-key-file={p.sa_pub}",
        f"--service-account-signing-key-file={p.sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        "--profiling=false",
        f"--admission-control-config-file={_webhook_client(directory / 'pki')}",
    ])
    _wait("kube-apiserver /readyz", _ready_check(state, "kube-apiserver", p), READY_TIMEOUT, state, logs)

    kcm_config = directory / "pki" / "controller-manager.kubeconfig"
    _write_kubeconfig(kcm_config, kubeconfig(state.server, p.ca_cert, pkimod.CONTROLLER_MANAGER.name,
                                             p.tokens[pkimod.CONTROLLER_MANAGER.name]))
    state.launch("kube-controller-manager", [
        str(binaries.path("kube-controller-manager")),
        f"--kubeconfig={kcm_config}",
        f"--authentication-kubeconfig={kcm_config}", f"--authorization-kubeconfig={kcm_config}",
        "--bind-address=127.0.0.1", f"--secure-port={ports['controller_manager']}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={p.sa_key}",
        f"--root-ca-file={p.ca_cert}",
        "--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,"
        "serviceaccount-token-controller,root-ca-certificate-publisher-controller,"
        "clusterrole-aggregation-controller"  # fills admin/edit/view from aggregate-to-* roles
        + (",node-lifecycle-controller,endpointslice-controller,endpointslice-mirroring-controller,"
           "deployment-controller,replicaset-controller,pod-garbage-collector-controller,taint-eviction-controller,"
           # claims: bound to the node's local volumes, and their protection finalizers (which the
           # API server's admission adds to every claim) removed once no Pod uses them
           "persistentvolume-binder-controller,persistentvolumeclaim-protection-controller,"
           "persistentvolume-protection-controller"
           if node_ip else ""),
        "--concurrent-gc-syncs=5",
    ])
    _wait("kube-controller-manager /healthz", _ready_check(state, "kube-controller-manager", p),
          READY_TIMEOUT, state, logs)

    for ident in pkimod.IDENTITIES:
        name = "kubeconfig" if ident.name == "admin" else f"{ident.name}.kubeconfig"
        _write_kubeconfig(directory / name, kubeconfig(state.server, p.ca_cert, ident.name, p.tokens[ident.name]))
    if node_ip:
        _start_node(state, binaries, p, node_ip, images, log)
    log(f"control plane {'and node ' if node_ip else ''}up at {state.server} in {time.monotonic() - started:.1f}s")
    log(f"  admin:  export KUBECONFIG={directory / 'kubeconfig'}")
    log("  users:  " + " ".join(str(directory / f"{i.name}.kubeconfig") for i in pkimod.IDENTITIES if i.name != "admin"))
    return state


def _start_node(state: State, binaries: Binaries, p: pkimod.ClusterPKI, node_ip: str, images, log) -> None:
    directory, logs = state.directory, state.directory / "logs"
    paths = nodemod.Paths.of(directory)
    configs = {}
    for ident in (pkimod.SCHEDULER, pkimod.KUBE_PROXY, pkimod.NODE, pkimod.KUBE_ROUTER):
        configs[ident.name] = directory / "pki" / f"{ident.name.replace(':', '-')}.kubeconfig"
        _write_kubeconfig(configs[ident.name], kubeconfig(state.server, p.ca_cert, ident.name, p.tokens[ident.name]))
    applied = subprocess.run([str(binaries.path("kubectl")), f"--kubeconfig={directory / 'kubeconfig'}",
                              "apply", "--server-side", "--field-manager=toolshare-node", "-f", "-"],
                             input=nodemod.rbac_yaml(), capture_output=True, text=True)
    if applied.returncode != 0:
        raise ClusterError(f"applying the node's RBAC failed: {applied.stderr}")

    state.launch("kube-scheduler", [
        str(binaries.path("kube-scheduler")), f"--kubeconfig={configs[pkimod.SCHEDULER.name]}",
        f"--authentication-kubeconfig={configs[pkimod.SCHEDULER.name]}",
        f"--authorization-kubeconfig={configs[pkimod.SCHEDULER.name]}",
        "--bind-address=127.0.0.1", f"--secure-port={state.ports['scheduler']}", "--leader-elect=false"])

    nodemod.prepare(paths)
    containerd = nodemod.CONTAINERD.ensure(log=log)
    router = nodemod.KUBE_ROUTER.ensure(log=log)
    path_env = {"PATH": f"{containerd.parent}:{SYSTEM_PATH}"}  # containerd finds its shim on PATH
    state.launch("containerd", [str(containerd), f"--config={paths.containerd_config}"], env=path_env)
    _wait("containerd", _ready_check(state, "containerd", p), READY_TIMEOUT, state, logs)
    from toolshare.local.images.containerd import import_images  # built (once) and imported here

    import_images(containerd.with_name("ctr"), paths.containerd_socket, images, log=log)

    paths.kubelet_config.write_text(yaml.safe_dump(nodemod.kubelet_config(
        paths, ca_file=p.ca_cert, port=state.ports["kubelet"], healthz_port=state.ports["kubelet_healthz"])))
    state.launch("kubelet", [
        str(binaries.path("kubelet")), f"--config={paths.kubelet_config}",
        f"--kubeconfig={configs[pkimod.NODE.name]}", f"--hostname-override={nodemod.NODE_NAME}",
        f"--node-ip={node_ip}", f"--root-dir={paths.kubelet_root}", "--v=1"], env={"PATH": SYSTEM_PATH})
    paths.kube_proxy_config.write_text(yaml.safe_dump(nodemod.kube_proxy_config(
        configs[pkimod.KUBE_PROXY.name], healthz_port=state.ports["kube_proxy_healthz"],
        metrics_port=state.ports["kube_proxy_metrics"])))
    state.launch("kube-proxy", [str(binaries.path("kube-proxy")), f"--config={paths.kube_proxy_config}"],
                 env={"PATH": SYSTEM_PATH})
    for name in ("kube-scheduler", "kubelet", "kube-proxy"):
        _wait(name, _ready_check(state, name, p), READY_TIMEOUT, state, logs)
    _wait("the node to be Ready and untainted", lambda: nodemod.node_ready(
        _get(f"{state.server}/api/v1/nodes/{nodemod.NODE_NAME}", p.ca_cert, p.tokens["admin"])),
        READY_TIMEOUT, state, logs)
    _offer_volumes(state, binaries, paths, log)
    # kube-router finds its Node at start: only once the kubelet has registered it.
    state.launch("kube-router", nodemod.kube_router_argv(router, configs[pkimod.KUBE_ROUTER.name],
                                                         state.ports["kube_router_health"]),
                 env={"PATH": SYSTEM_PATH})
    _wait("kube-router", _ready_check(state, "kube-router", p), READY_TIMEOUT, state, logs)


def _offer_volumes(state: State, binaries: Binaries, paths: nodemod.Paths, log) -> None:
    """The default StorageClass and the node's local volumes; released ones emptied and offered again."""
    kubectl = [str(binaries.path("kubectl")), f"--kubeconfig={state.directory / 'kubeconfig'}"]
    applied = subprocess.run([*kubectl, "apply", "--server-side", "--field-manager=toolshare-node", "-f", "-"],
                             input=json.dumps({"apiVersion": "v1", "kind": "List",
                                               "items": nodemod.storage_objects(paths)}),
                             capture_output=True, text=True)
    if applied.returncode != 0:
        raise ClusterError(f"applying the node's storage failed: {applied.stderr}")
    listed = subprocess.run([*kubectl, "get", "persistentvolumes", "-l", f"{nodemod.VOLUME_LABEL}=true", "-o", "json"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        raise ClusterError(f"listing the node's volumes failed: {listed.stderr}")
    for name, directory in nodemod.released(json.loads(listed.stdout)["items"], paths):
        nodemod.empty_directory(directory)
        freed = subprocess.run([*kubectl, "patch", "persistentvolume", name, "--type=json",
                                "-p", '[{"op": "remove", "path": "/spec/claimRef"}]'], capture_output=True, text=True)
        if freed.returncode != 0:
            raise ClusterError(f"offering volume {name} again failed: {freed.stderr}")
        log(f"  volume {name} was released by its claim: emptied and offered again")


def _stop(state: State, name: str, timeout: float) -> bool:
    """SIGTERM the component's process group, SIGKILL after `timeout`; False if it was not running."""
    pid, started = state.pids.get(name), state.starts.get(name)
    if pid is None or not _alive(pid, started):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while _alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid, started):
        os.killpg(pid, signal.SIGKILL)
        while _alive(pid, started):
            time.sleep(0.05)
    return True


def restart(directory: Path, components=("kube-apiserver",), log=print, timeout: float = 15.0) -> State:
    """Stop each named component and start it again with the argv it was launched with: same ports,
    same certificates, same etcd data. One at a time, in start order (etcd before the API server),
    each back and healthy before the next goes; the others keep running throughout."""
    directory = directory.resolve()
    state = State.load(directory)
    if state is None:
        raise ClusterError(f"no control plane recorded in {directory}")
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ClusterError(f"unknown components {sorted(unknown)}; choose from {', '.join(COMPONENTS)}")
    p = pkimod.ensure_pki(directory / "pki")
    for name in (c for c in COMPONENTS if c in components):
        argv = state.argv.get(name)
        if not argv:
            raise ClusterError(f"{name} has no recorded argv in {directory / 'state.json'}; run `down` and `up`")
        started = time.monotonic()
        _stop(state, name, timeout)
        state.launch(name, argv, state.env.get(name))
        _wait(f"{name} to come back", _ready_check(state, name, p), READY_TIMEOUT, state, directory / "logs")
        log(f"restarted {name} in {time.monotonic() - started:.1f}s")
    return state


def import_images(directory: Path, names: tuple[str, ...], log=print) -> list[str]:
    """Build (if missing) and import `names` into the running node of the cluster in `directory`:
    images `up` leaves out, such as the Toolshare image (rebuilt on every change of operator/)."""
    from toolshare.local.images.containerd import import_images as _import

    paths = nodemod.Paths.of(directory.resolve())
    if not paths.containerd_socket.exists():
        raise RuntimeError(f"no node is running in {directory} (no {paths.containerd_socket})")
    return _import(nodemod.CONTAINERD.ensure(log=log).with_name("ctr"), paths.containerd_socket, names, log=log)


def down(directory: Path, log=print, timeout: float = 15.0) -> list[str]:
    """Stop every process the cluster in `directory` started; return the names stopped."""
    directory = directory.resolve()
    state = State.load(directory)
    if state is None:
        log(f"no control plane recorded in {directory}")
        return []
    # Reverse start order: the node before the control plane, the API server before its etcd.
    stopped = [name for name in reversed(COMPONENTS) if _stop(state, name, timeout)]
    if nodemod.Paths.of(directory).root.exists():
        nodemod.cleanup(directory, log=log, binaries_dir=Path(state.binaries))
    (directory / "state.json").unlink(missing_ok=True)
    log(f"stopped {', '.join(stopped) or 'nothing (no process was running)'} in {directory}")
    return stopped


def status(directory: Path) -> dict:
    directory = directory.resolve()
    state = State.load(directory)
    if state is None:
        return {"directory": str(directory), "running": False, "components": {}}
    running = state.running()
    ready = False
    if running.get("kube-apiserver"):
        token = pkimod.ensure_pki(directory / "pki").tokens["admin"]
        ready = _get(f"{state.server}/readyz", directory / "pki" / "ca.crt", token)[0] == 200
    return {
        "directory": str(directory),
        "running": all(running.values()) and bool(running),
        "ready": ready,
        "server": state.server,
        "components": {n: {"pid": state.pids[n], "running": ok} for n, ok in running.items()},
        "kubeconfig": str(directory / "kubeconfig"),
    }
