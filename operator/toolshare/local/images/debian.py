"""The Debian base (toolshare.local/debian:bookworm): debootstrap's minbase from this machine's mirror.

Like Docker's Debian images: the security and updates suites in its sources and upgraded from
them, no package lists or .deb caches left, no service started by a package installed on it
(policy-rc.d), and nothing of the build machine (resolv.conf, hostname) inside: the runtime
mounts /etc/resolv.conf, /etc/hostname and /etc/hosts, whose empty stand-ins are kept so that a
builder's mount points never become files in a later layer.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# Written into the image (their text is part of the cache key).
FILES = {
    "etc/apt/apt.conf.d/90toolshare-image": (
        "// No .deb cache and no translations in the image (as Docker's Debian images).\n"
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
        'Acquire::Languages "none";\n'),
    "usr/sbin/policy-rc.d": "#!/bin/sh\n# Packages installed into an image start no service.\nexit 101\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/resolv.conf": "",
    "etc/hostname": "",
}
EXECUTABLE = {"usr/sbin/policy-rc.d"}
UPGRADE = "apt-get update && apt-get -y -o Dpkg::Options::=--force-confold dist-upgrade && apt-get clean"
# Files removed after the upgrade (directories stay: packages expect var/cache/apt/archives/partial,
# var/log/apt...): package lists, caches, the build's logs and debconf's backups.
EMPTIED = ("var/lib/apt/lists", "var/cache/apt", "var/log", "tmp", "var/tmp")
BACKUPS = "var/cache/debconf/*-old"


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas, current = [], {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif not line.startswith("#") and ":" in line and not line[0].isspace():
            field, _, value = line.partition(":")
            current[field.strip().lower()] = value.strip()
    return stanzas


def mirrors(source_texts: dict[str, str], suite: str = SUITE) -> tuple[str, str]:
    """(archive mirror, security mirror) from the host's apt sources: sources.list lines and
    deb822 .sources files. Falls back to deb.debian.org for what the host does not name."""
    entries = []  # (uri, suites)
    for name, text in source_texts.items():
        if name.endswith(".sources"):
            for stanza in _deb822_stanzas(text):
                if "deb" in stanza.get("types", "").split() and stanza.get("enabled", "yes") != "no":
                    entries += [(uri, stanza.get("suites", "").split()) for uri in stanza.get("uris", "").split()]
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    entries.append((m.group(1), [m.group(2)]))
    mirror = next((u for u, suites in entries if suite in suites), DEFAULT_MIRROR)
    security = next((u for u, suites in entries if f"{suite}-security" in suites), DEFAULT_SECURITY)
    return mirror.rstrip("/"), security.rstrip("/")


def host_sources(etc_apt: Path = Path("/etc/apt")) -> dict[str, str]:
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    return {f.name: f.read_text() for f in files if f.is_file() and f.name.endswith((".list", ".sources"))}


def sources_file(mirror: str, security: str, suite: str = SUITE) -> str:
    """The image's /etc/apt/sources.list.d/debian.sources."""
    return (f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\nSigned-By: {KEYRING}\n\n"
            f"Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\nSigned-By: {KEYRING}\n")


def key_inputs(mirror: str, security: str, debootstrap_version: str) -> dict[str, bytes]:
    recipe = f"debootstrap --variant={VARIANT} {SUITE} {mirror}\n{UPGRADE}\nemptied {' '.join(EMPTIED)} {BACKUPS}\n"
    inputs = {"recipe": recipe.encode(), "debootstrap": debootstrap_version.encode(),
              "sources": sources_file(mirror, security).encode()}
    inputs.update({f"file {path}": text.encode() for path, text in FILES.items()})
    return inputs


def _private_mounts(*argv: str) -> list[str]:
    """Run in a mount namespace of its own: what debootstrap and the chroot mount (proc, sys)
    disappears with the process, even if it is killed, so no mount outlives the build."""
    return ["unshare", "--mount", "--propagation", "private", "--fork", "--pid", *argv]


def build_rootfs(rootfs: Path, mirror: str, security: str, run) -> None:
    """debootstrap, our files, the upgrade, then the build's leftovers removed. `run(argv, env)` runs a step."""
    run(["nice", "-n", "19", *_private_mounts("debootstrap", f"--variant={VARIANT}", f"--keyring={KEYRING}",
                                              SUITE, str(rootfs), mirror)], None)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources_file(mirror, security))
    for path, text in FILES.items():
        (rootfs / path).write_text(text)
        (rootfs / path).chmod(0o755 if path in EXECUTABLE else 0o644)
    (rootfs / "etc/resolv.conf").write_text(Path("/etc/resolv.conf").read_text())  # DNS for the upgrade only
    run(["nice", "-n", "19", *_private_mounts(f"--mount-proc={rootfs}/proc", "chroot", str(rootfs),
                                              "/bin/sh", "-c", UPGRADE)],
        {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    (rootfs / "etc/resolv.conf").write_text("")
    leftovers = [p for d in EMPTIED for p in (rootfs / d).rglob("*")] + list(rootfs.glob(BACKUPS))
    for path in leftovers:
        if path.is_symlink() or path.is_file():
            path.unlink()


def debootstrap_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"
