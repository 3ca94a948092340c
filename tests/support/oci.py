"""Run an image from its docker-archive with Debian's runc, as a node's runtime would, without a node.

The root filesystem is unpacked by buildah (containers/storage applies the layers, whiteouts
included, as containerd does) into an overlay store of the test's own (three times faster than
vfs: each layer is unpacked once, not copied per layer); runc runs it in new namespaces (network
included: only loopback), with the capabilities containerd's CRI grants by default.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolshare.local.images import archive

# containerd's CRI default capability set (what a Pod gets without securityContext changes).
CRI_CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


def _user(spec: str) -> dict:
    """The image's User as runc wants it (our images name numeric ids, or none for root)."""
    uid, _, gid = (spec or "0").partition(":")
    return {"uid": int(uid), "gid": int(gid or uid)}


def runtime_spec(template: dict, rootfs: Path, image_config: dict, args: list[str] | None = None,
                 env: dict[str, str] | None = None, hostname: str = "tool",
                 sysctl: dict[str, str] | None = None) -> dict:
    """runc's default spec (`runc spec`) made to run the image as containerd would."""
    config = image_config.get("config", {})
    spec = json.loads(json.dumps(template))
    process = spec["process"]
    process["terminal"] = False
    process["args"] = args or [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    process["env"] = [*config.get("Env", []), *(f"{k}={v}" for k, v in (env or {}).items())]
    process["cwd"] = config.get("WorkingDir") or "/"
    process["user"] = _user(config.get("User", ""))
    process["capabilities"] = {k: CRI_CAPABILITIES for k in ("bounding", "effective", "permitted")}
    process.pop("noNewPrivileges", None)  # as a Pod without allowPrivilegeEscalation: false
    spec["root"] = {"path": str(rootfs), "readonly": False}
    spec["hostname"] = hostname
    if sysctl:
        spec.setdefault("linux", {}).setdefault("sysctl", {}).update(sysctl)
    return spec


@dataclass
class Unpacked:
    """An image's root filesystem in a buildah store of its own, mounted until exit."""
    tarball: Path
    work: Path
    rootfs: Path = field(init=False)
    config: dict = field(init=False)

    def _buildah(self, *args: str) -> str:
        cmd = ["buildah", "--root", str(self.work / "storage"), "--runroot", str(self.work / "run"),
               "--storage-driver", "overlay", *args]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.work), "TMPDIR": str(self.work)}
        return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, timeout=600).stdout.strip()

    def __enter__(self) -> "Unpacked":
        self.work.mkdir(parents=True, exist_ok=True)
        _, self.config = archive.read_manifest(self.tarball)
        self.container = self._buildah("from", "--pull-never", "--quiet", f"docker-archive:{self.tarball}")
        self.rootfs = Path(self._buildah("mount", self.container))
        return self

    def __exit__(self, *exc) -> None:
        self._buildah("rm", "--all")  # unmounts
        self._buildah("rmi", "--all", "--force")
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.work)], check=True)


@dataclass
class Container:
    """A container run detached by runc; stopped and deleted on exit."""
    unpacked: Unpacked
    bundle: Path
    name: str
    args: list[str] | None = None
    env: dict[str, str] | None = None
    sysctl: dict[str, str] | None = None

    def _runc(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["runc", "--root", str(self.bundle / "state"), *args], **kw)

    def spec(self) -> dict:
        self.bundle.mkdir(parents=True, exist_ok=True)
        template = self.bundle / "template"
        template.mkdir(exist_ok=True)
        subprocess.run(["runc", "spec", "--bundle", str(template)], check=True)
        spec = runtime_spec(json.loads((template / "config.json").read_text()), self.unpacked.rootfs,
                            self.unpacked.config, self.args, self.env, sysctl=self.sysctl)
        (self.bundle / "config.json").write_text(json.dumps(spec))
        return spec

    def run(self, timeout: float = 120) -> subprocess.CompletedProcess:
        """In the foreground: (exit code, output)."""
        self.spec()
        return self._runc("run", "--bundle", str(self.bundle), self.name, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)

    def __enter__(self) -> "Container":
        self.spec()
        self.log = self.bundle / "output.log"
        with open(self.log, "wb") as out:
            self._runc("run", "--detach", "--bundle", str(self.bundle), self.name, check=True,
                       stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def state(self) -> dict:
        proc = self._runc("state", self.name, capture_output=True, text=True)
        return json.loads(proc.stdout) if proc.returncode == 0 else {"status": "deleted"}

    @property
    def pid(self) -> int:
        return self.state()["pid"]

    def processes(self) -> list[tuple[int, int, str]]:
        """(pid, real uid, command line) of every process in the container."""
        pids = json.loads(self._runc("ps", "--format", "json", self.name, capture_output=True, text=True,
                                     check=True).stdout)
        found = []
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except FileNotFoundError:
                continue
            uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
            found.append((pid, uid, cmdline))
        return found

    def in_network(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run a host command in the container's network namespace (its loopback)."""
        return subprocess.run(["nsenter", f"--net=/proc/{self.pid}/ns/net", "--", *argv], **kw)

    def wait_stopped(self, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state()["status"] in ("stopped", "deleted"):
                return True
            time.sleep(0.1)
        return False

    def __exit__(self, *exc) -> None:
        self._runc("kill", self.name, "KILL", capture_output=True)
        self.wait_stopped()
        self._runc("delete", "--force", self.name, capture_output=True)
