"""The local cluster's node: containerd, a kubelet, kube-proxy and kube-router beside the control plane.

Everything the node writes lives under DIR/node (containerd's root and state, the kubelet's root,
Pod logs, CNI configuration and IP allocations, network namespaces), except what the kernel keeps
machine-wide: the bridge `tshr0`, iptables rules and ipsets, the cgroup tree `/toolshare-node`, and
the sysctl net.ipv4.ip_forward. `cleanup` removes each of those, so `cluster down` leaves nothing
behind even after a crash. Because those are machine-wide, one node per machine:
/run/toolshare/node.json names the cluster directory that owns it, and a second `up` is refused.

The pure parts (configurations as data) are separate from the parts that start processes, so a
unit test reads exactly what the node is started with.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from toolshare.local.controlplane import binaries as binmod

NODE_NAME = "toolshare-node"
POD_CIDR = "10.244.0.0/24"
BRIDGE = "tshr0"
CNI_NETWORK = "toolshare"
CGROUP_ROOT = "toolshare-node"  # the kubelet's --cgroup-root: every Pod's cgroup is under it
MARKER = Path("/run/toolshare/node.json")
SANDBOX_IMAGE = "toolshare.local/pause:3.10"  # imported by `toolshare images`, never pulled
COMPONENTS = ("containerd", "kubelet", "kube-proxy", "kube-router")

# Debian's packages the node runs with (make deps installs them).
DEBIAN = {
    "runc": Path("/usr/sbin/runc"),
    "CNI plugins (containernetworking-plugins)": Path("/usr/lib/cni/bridge"),
    "iptables": Path("/usr/sbin/iptables"),
    "ipset": Path("/usr/sbin/ipset"),
}
CNI_BIN_DIR = Path("/usr/lib/cni")

CONTAINERD = binmod.GoTool(
    name="containerd", module="github.com/containerd/containerd/v2",
    package="github.com/containerd/containerd/v2/cmd/containerd", version_args=("--version",),
    ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version={version}",
    override_env="TOOLSHARE_CONTAINERD_DIR",
    alternatives="install Go 1.26+ so it can be built from tools/containerd",
    also=(("containerd-shim-runc-v2", "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2", ("-v",)),
          ("ctr", "github.com/containerd/containerd/v2/cmd/ctr", ("--version",))),
    cgo=False)
KUBE_ROUTER = binmod.GoTool(
    name="kube-router", module="github.com/cloudnativelabs/kube-router/v2",
    package="github.com/cloudnativelabs/kube-router/v2/cmd/kube-router", version_args=("--version",),
    ldflags="-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={version}",
    override_env="TOOLSHARE_KUBE_ROUTER", alternatives="install Go 1.26+ so it can be built from tools/kube-router",
    cgo=False)


APISERVER_KUBELET_USER = "toolshare:apiserver-kubelet-client"


class NodeError(RuntimeError):
    pass


def node_ip() -> str:
    """The machine's address on its default route: where the kubelet registers and Pods reach the
    API server (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))  # any non-local address picks the default route's source
        return s.getsockname()[0]


def node_ready(answer: tuple[int, str]) -> bool:
    """The Node answer (status, body) says Ready=True and the not-ready taint is gone."""
    status, body = answer
    if status != 200:
        return False
    node = json.loads(body)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (node.get("status") or {}).get("conditions") or [])
    tainted = any(t.get("key") in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
                  for t in (node.get("spec") or {}).get("taints") or [])
    return ready and not tainted


def rbac_yaml() -> str:
    """What the node's components need beyond the bootstrap policy: the API server's kubelet
    client may use the kubelet API (logs, exec); kube-router reads what NetworkPolicy depends on."""
    return f"""apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "toolshare:apiserver-kubelet-client"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kubelet-api-admin"}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{APISERVER_KUBELET_USER}"}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "toolshare:kube-router"}}
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "toolshare:kube-router"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "toolshare:kube-router"}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: "toolshare:kube-router"}}]
"""


@dataclass(frozen=True)
class Paths:
    """Where the node keeps everything, under the cluster directory."""

    root: Path

    @classmethod
    def of(cls, cluster_dir: Path) -> "Paths":
        return cls(cluster_dir / "node")

    containerd_root = property(lambda self: self.root / "containerd" / "root")
    containerd_state = property(lambda self: self.root / "containerd" / "state")
    containerd_socket = property(lambda self: self.root / "containerd" / "containerd.sock")
    containerd_config = property(lambda self: self.root / "containerd" / "config.toml")
    cni_conf_dir = property(lambda self: self.root / "cni" / "net.d")
    cni_ipam_dir = property(lambda self: self.root / "cni" / "ipam")
    kubelet_root = property(lambda self: self.root / "kubelet")
    kubelet_config = property(lambda self: self.root / "kubelet.yaml")
    pod_logs = property(lambda self: self.root / "pod-logs")
    kube_proxy_config = property(lambda self: self.root / "kube-proxy.yaml")
    volumes = property(lambda self: self.root / "volumes")  # the local PersistentVolumes' directories


# --- configurations (pure) ------------------------------------------------------------------

# Storage on the one node: local PersistentVolumes on directories under DIR/node/volumes, made by
# `cluster up`, in the cluster's default StorageClass. No provisioner: a claim waits for its first
# Pod (WaitForFirstConsumer), then the scheduler and kube-controller-manager's binder bind it to a
# free volume; the kubelet bind-mounts the directory and gives it the Pod's fsGroup, so a non-root
# tool writes its home. A released volume (its claim deleted) keeps its files until the next
# `cluster up` empties it and offers it again (`released`).
STORAGE_CLASS = "toolshare-local"
VOLUMES = 8
VOLUME_CAPACITY = "10Gi"  # nominal: the volumes share the disk of the cluster directory
VOLUME_LABEL = "toolshare.dev/local-volume"


def volume_dirs(paths: Paths) -> list[Path]:
    return [paths.volumes / f"pv-{i:02d}" for i in range(VOLUMES)]


def storage_objects(paths: Paths) -> list[dict]:
    """The default StorageClass and its local PersistentVolumes, pinned to the node."""
    on_node = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}}
    storage_class = {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain"}
    volumes = [{
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"{STORAGE_CLASS}-{d.name}", "labels": {VOLUME_LABEL: "true"}},
        "spec": {"capacity": {"storage": VOLUME_CAPACITY}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                 "volumeMode": "Filesystem", "local": {"path": str(d)}, "nodeAffinity": on_node}}
        for d in volume_dirs(paths)]
    return [storage_class, *volumes]


def released(volumes: list[dict], paths: Paths) -> list[tuple[str, Path]]:
    """Our volumes whose claim is gone (phase Released), with their directories: to empty and offer again."""
    dirs = {str(d): d for d in volume_dirs(paths)}
    out = []
    for pv in volumes:
        labels = (pv.get("metadata") or {}).get("labels") or {}
        path = ((pv.get("spec") or {}).get("local") or {}).get("path")
        if labels.get(VOLUME_LABEL) == "true" and (pv.get("status") or {}).get("phase") == "Released" and path in dirs:
            out.append((pv["metadata"]["name"], dirs[path]))
    return out


def empty_directory(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()

def containerd_config(paths: Paths, runc: Path = DEBIAN["runc"]) -> str:
    """containerd 2.x (config version 3), everything under `paths`, NRI off, no registry needed."""
    return f"""version = 3
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"

[plugins."io.containerd.server.v1.grpc"]
  address = "{paths.containerd_socket}"

[plugins."io.containerd.server.v1.ttrpc"]
  address = "{paths.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.root / 'containerd' / 'opt'}"

[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{SANDBOX_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # No CAP_SYS_RESOURCE here: without this every sandbox fails writing oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{paths.cni_conf_dir}"
    max_conf_num = 1
    use_internal_loopback = true  # no loopback plugin, so nothing of it cached in /var/lib/cni

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
"""


def cni_conflist(paths: Paths) -> dict:
    """One bridge network; host-local keeps its allocations under the cluster directory."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(paths.cni_ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(paths: Paths, *, ca_file: Path, port: int, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "address": "0.0.0.0",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "Webhook"},
        # This machine: cgroup v1 with cgroupfs, swap not turned off, no CAP_SYS_RESOURCE.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "failSwapOn": False,
        "podLogsDir": str(paths.pod_logs),
        "podCIDR": POD_CIDR,
        "registerNode": True,
        "serializeImagePulls": False,
        # The images are imported, not pulled: never collect them, never evict for a full disk
        # that a development machine shares with everything else.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "maxPods": 250,
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
    }


def kube_proxy_config(kubeconfig: Path, *, healthz_port: int, metrics_port: int) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # Leave the machine's conntrack sysctls alone (0 = do not set).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def kube_router_argv(binary: Path, kubeconfig: Path, health_port: int) -> list[str]:
    """kube-router as a NetworkPolicy enforcer only: no routing, no service proxy, no CNI."""
    return [str(binary), f"--kubeconfig={kubeconfig}", f"--hostname-override={NODE_NAME}",
            "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
            "--enable-cni=false", "--enable-ibgp=false", "--enable-overlay=false",
            "--metrics-port=0", f"--health-port={health_port}", "--v=1"]


# --- one node per machine --------------------------------------------------------------------

def owner() -> dict | None:
    try:
        return json.loads(MARKER.read_text())
    except (FileNotFoundError, ValueError):
        return None


def claim(cluster_dir: Path) -> None:
    """Take the machine's node slot for `cluster_dir`, or refuse if another live cluster has it."""
    current = owner()
    if current and Path(current["directory"]) != cluster_dir:
        other = Path(current["directory"])
        state = other / "state.json"
        alive = False
        if state.exists():
            data = json.loads(state.read_text())
            pid, start = data.get("pids", {}).get("kubelet"), data.get("starts", {}).get("kubelet")
            alive = pid is not None and start_time(pid) == start
        if alive:
            raise NodeError(f"a Toolshare node already runs on this machine for the cluster in {other}; "
                            f"one node per machine (it owns the bridge {BRIDGE}, iptables and cgroup "
                            f"/{CGROUP_ROOT}): run `toolshare cluster down --dir {other}` first")
        cleanup(other, log=lambda *_: None)  # a crashed owner: take its leftovers away first
    MARKER.parent.mkdir(parents=True, exist_ok=True)
    MARKER.write_text(json.dumps({"directory": str(cluster_dir)}))


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (None if gone or a zombie): with the pid, a process's identity."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


# --- preparing and cleaning the machine --------------------------------------------------------

def check_machine() -> None:
    """Fail early, naming the missing piece."""
    if os.geteuid() != 0:
        raise NodeError("the node runs containers: `toolshare cluster up` with a node needs root "
                        "(or run without the node: --no-node)")
    missing = [what for what, path in DEBIAN.items() if not os.access(path, os.X_OK)]
    if missing:
        raise NodeError(f"missing Debian packages for the node: {', '.join(missing)}; "
                        "`make deps` installs them (apt-get install runc containernetworking-plugins "
                        "iptables ipset)")
    for plugin in ("bridge", "host-local", "portmap", "loopback"):
        if not os.access(CNI_BIN_DIR / plugin, os.X_OK):
            raise NodeError(f"the CNI plugin {CNI_BIN_DIR / plugin} is missing (containernetworking-plugins)")
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        raise NodeError("br_netfilter is not loaded: Services between Pods on one bridge need it "
                        "(modprobe br_netfilter)")


def prepare(paths: Paths) -> None:
    for d in (paths.containerd_root, paths.containerd_state, paths.cni_conf_dir, paths.cni_ipam_dir,
              paths.kubelet_root, paths.pod_logs, *volume_dirs(paths)):
        d.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(containerd_config(paths))
    (paths.cni_conf_dir / f"10-{CNI_NETWORK}.conflist").write_text(json.dumps(cni_conflist(paths), indent=2))
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    previous = forward.read_text().strip()
    saved = paths.root / "ip_forward.before"
    if not saved.exists():
        saved.write_text(previous)
    forward.write_text("1")
    Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1")
    make_cgroup_root()


def make_cgroup_root() -> None:
    """The kubelet wants its --cgroup-root in every v1 hierarchy before it starts; cpuset's must
    be given the parent's CPUs and memory nodes before anything can join it."""
    for hierarchy in sorted(Path("/sys/fs/cgroup").iterdir()):
        if hierarchy.name == "unified" or not hierarchy.is_dir() or hierarchy.is_symlink():
            continue
        mine = hierarchy / CGROUP_ROOT
        mine.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if not (mine / knob).read_text().strip():
                    (mine / knob).write_text((hierarchy / knob).read_text())


def _cgroup_dirs() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    return [d / CGROUP_ROOT for d in sorted(base.iterdir()) if (d / CGROUP_ROOT).is_dir()]


def _pids_under(directory: Path) -> set[int]:
    pids: set[int] = set()
    for procs in directory.rglob("cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            pass
    return pids


def _shims(paths: Paths) -> set[int]:
    """containerd's shims for this node: they outlive containerd, and hold the containers."""
    found = set()
    needle = str(paths.containerd_socket).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    found.add(int(proc.name))
            except OSError:
                pass
    return found


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(points, key=len, reverse=True)  # deepest first


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


# Chains the node's programs make: kube-proxy, the kubelet and kube-router (KUBE-*), the CNI
# plugins (CNI-*). One node per machine, so on this machine they are all ours.
OWN_CHAIN_PREFIXES = ("KUBE-", "CNI-")


def iptables_leftovers(dump: str) -> tuple[list[list[str]], list[str]]:
    """From one table of `iptables-save`: the rules to delete (argv after `-D`: those jumping to
    our chains or carrying our CNI network's or kube-router's comment) and our chains. Pure."""
    ours = (f'name: "{CNI_NETWORK}"', "kube-router netpol")
    chains, rules = [], []
    for line in dump.splitlines():
        if line.startswith(":") and line[1:].split()[0].startswith(OWN_CHAIN_PREFIXES):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            parts = shlex.split(line)
            if parts[1].startswith(OWN_CHAIN_PREFIXES):
                continue  # goes with its chain
            target = next((parts[i + 1] for i, p in enumerate(parts[:-1]) if p in ("-j", "-g")), "")
            if target.startswith(OWN_CHAIN_PREFIXES) or any(o in " ".join(parts) for o in ours):
                rules.append(parts[1:])
    return rules, chains


def _iptables_cleanup() -> None:
    """Every rule and chain the node's programs wrote, in IPv4 and IPv6, found by name, so it
    works after a crash too (kube-router's own --cleanup-config panics in v2.1.0)."""
    for save, tables in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        for table in ("nat", "filter", "mangle", "raw"):
            rules, chains = iptables_leftovers(_run([save, "-t", table]).stdout)
            for rule in rules:
                _run([tables, "-t", table, "-D", *rule])
            for chain in chains:
                _run([tables, "-t", table, "-F", chain])
            for chain in chains:
                _run([tables, "-t", table, "-X", chain])
    for name in _run(["ipset", "list", "-n"]).stdout.split():
        if name.startswith(("KUBE-", "kube-router")):
            _run(["ipset", "destroy", name])


# The shim and runc keep some state at fixed paths whatever containerd's own `state` is: the shims'
# sockets (s/), their FIFOs (fifo/) and runc's state for the k8s.io namespace (runc/k8s.io).
RUN_CONTAINERD = Path("/run/containerd")
RUN_CONTAINERD_OURS = ("s", "fifo", "runc/k8s.io", "runc")


def _run_containerd_cleanup() -> None:
    """Once our shims are gone: that state, unless a containerd of the machine's own runs there."""
    if (RUN_CONTAINERD / "containerd.sock").exists():
        return  # someone else's containerd: its state is not ours to take
    for sub in RUN_CONTAINERD_OURS:
        path = RUN_CONTAINERD / sub
        if path.is_dir() and not _mounts_under(path):
            shutil.rmtree(path, ignore_errors=True)
    try:
        RUN_CONTAINERD.rmdir()
    except OSError:
        pass


def cleanup(cluster_dir: Path, log=print, binaries_dir: Path | None = None) -> None:
    """Take away everything the node left on the machine; safe to repeat, and after a crash."""
    paths = Paths.of(cluster_dir)
    # Containers first: every Pod's processes are in the cgroup tree under CGROUP_ROOT.
    for _ in range(50):
        pids = set().union(*(_pids_under(d) for d in _cgroup_dirs())) | _shims(paths)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    for point in _mounts_under(paths.root):
        _run(["umount", "-l", point])
    for top in _cgroup_dirs():
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass
    _run(["ip", "link", "delete", BRIDGE])
    # kube-proxy's and kube-router's own cleanups know their chains and ipsets.
    if binaries_dir and (binaries_dir / "kube-proxy").exists():
        _run([str(binaries_dir / "kube-proxy"), "--cleanup"])
    _iptables_cleanup()
    _run_containerd_cleanup()
    results = Path("/var/lib/cni/results")  # libcni's cache; its directory is not configurable
    if results.exists():
        for leftover in [*results.glob(f"{CNI_NETWORK}-*"), *results.glob("cni-loopback-*")]:
            leftover.unlink(missing_ok=True)
        for d in (results, results.parent):
            try:
                d.rmdir()  # only if empty: someone else's CNI may use it
            except OSError:
                break
    saved = paths.root / "ip_forward.before"
    if saved.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(saved.read_text().strip())
        saved.unlink()
    current = owner()
    if current and Path(current["directory"]) == cluster_dir:
        MARKER.unlink(missing_ok=True)
    if paths.root.exists():
        shutil.rmtree(paths.root, ignore_errors=True)


def leftovers(cluster_dir: Path) -> list[str]:
    """What the node of `cluster_dir` still holds on the machine (empty after a clean `down`)."""
    paths = Paths.of(cluster_dir)
    found = []
    if _shims(paths):
        found.append(f"containerd shims {sorted(_shims(paths))}")
    found += [f"cgroup {d}" for d in _cgroup_dirs()]
    found += [f"mount {m}" for m in _mounts_under(cluster_dir)]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    for save in ("iptables-save", "ip6tables-save"):
        for table in ("nat", "filter", "mangle", "raw"):
            rules, chains = iptables_leftovers(_run([save, "-t", table]).stdout)
            found += [f"{save} -t {table}: chain {c}" for c in chains]
            found += [f"{save} -t {table}: rule {' '.join(r)}" for r in rules]
    found += [f"ipset {n}" for n in _run(["ipset", "list", "-n"]).stdout.split() if n.startswith("KUBE-")]
    current = owner()
    if current and Path(current["directory"]) == cluster_dir:
        found.append(f"machine claim {MARKER}")
    if not (RUN_CONTAINERD / "containerd.sock").exists():
        found += [f"containerd state {RUN_CONTAINERD / sub}" for sub in ("s", "fifo", "runc/k8s.io")
                  if (RUN_CONTAINERD / sub).exists()]
    results = Path("/var/lib/cni/results")
    if results.exists():
        found += [f"CNI cache {f}" for f in [*results.glob(f"{CNI_NETWORK}-*"), *results.glob("cni-loopback-*")]]
    return found
