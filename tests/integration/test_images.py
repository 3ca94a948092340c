"""The images built here (toolshare images build), run with Debian's runc as the node would run them.

The archives are built once per change of their inputs and taken from the cache afterwards
(a cold build of all five takes minutes; docs/images.md). Needs root, as CI has.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.oci import Container, Unpacked
from toolshare.local.images import archive, build, catalog
from toolshare.render.pod import UNPRIVILEGED_PORT_SYSCTL

pytestmark = pytest.mark.timeout(3600)  # a cold build of every image, the first time only
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    return build.ensure(log=lambda line: print(line, flush=True))


@pytest.fixture(scope="module")
def unpacked(archives, tmp_path_factory):
    """Each image's root filesystem, unpacked on first use."""
    opened = {}

    def get(ref: str) -> Unpacked:
        if ref not in opened:
            opened[ref] = Unpacked(archives[ref], tmp_path_factory.mktemp(ref.split("/")[1].split(":")[0])).__enter__()
        return opened[ref]

    yield get
    for u in opened.values():
        u.__exit__(None, None, None)


def test_archives_are_named_and_their_layers_are_whole(archives):
    assert set(archives) == set(catalog.BY_REF)
    for ref, path in archives.items():
        entry, config = archive.read_manifest(path)
        assert entry["RepoTags"] == [ref]
        assert archive.layer_digests(path) == config["rootfs"]["diff_ids"], ref
        assert config["os"] == "linux" and config["architecture"] == "amd64"
    # each image is its base plus its own layers
    for image in catalog.CATALOG:
        if image.base:
            base_layers = archive.read_manifest(archives[image.base])[1]["rootfs"]["diff_ids"]
            layers = archive.read_manifest(archives[image.ref])[1]["rootfs"]["diff_ids"]
            assert layers[:len(base_layers)] == base_layers and len(layers) > len(base_layers), image.ref


def test_the_jupyterlab_image_keeps_owners_and_bakes_no_host_keys(archives):
    entries = {}
    for _, info in archive.layer_entries(archives[catalog.JUPYTERLAB]):
        entries[info.name] = info  # the last layer's entry wins, as when they are applied
    home = entries["home/jovyan"]
    assert (home.uid, home.gid) == (1000, 1000) and home.isdir()
    assert stat.S_IMODE(entries["usr/local/bin/toolshare-tool-start"].mode) == 0o755
    assert entries["opt/jupyterlab/bin/jupyter"].uid == 0
    assert not [n for n in entries if n.startswith("etc/ssh/ssh_host_")]  # made per container at start
    assert not [n for n in entries if n.startswith(("var/lib/apt/lists/", "root/.cache/"))
                and not entries[n].isdir() and "/.wh." not in n]  # no package lists, no pip cache
    _, config = archive.read_manifest(archives[catalog.JUPYTERLAB])
    assert config["config"]["Entrypoint"] == ["/usr/bin/tini", "--", "/usr/local/bin/toolshare-tool-start"]
    assert set(config["config"]["ExposedPorts"]) == {"8888/tcp", "22/tcp"}
    assert config["config"]["User"] == "1000:1000"  # non-root, numeric: runAsNonRoot can check it


def test_pause_runs_as_65535_until_it_is_told_to_stop(unpacked, tmp_path):
    with Container(unpacked(catalog.PAUSE), tmp_path / "bundle", f"pause-{tmp_path.name}") as pause:
        [(pid, uid, cmdline)] = pause.processes()
        assert (uid, cmdline) == (65535, "/pause")
        pause._runc("kill", pause.name, "TERM", check=True)
        assert pause.wait_stopped(), pause.output()


def test_jupyterlab_serves_http_runs_a_kernel_and_answers_ssh(unpacked, tmp_path):
    """JupyterLab on 8888 under the base URL it is given, a kernel computing 1 + 1 over its
    websocket, sshd on 22 letting the owner's key in as jovyan; nothing runs as root. The
    container runs as the image's user (1000) with the sysctl a Toolshare Pod sets for port 22."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env = {"JUPYTER_BASE_URL": "/tools/alice-notebook/", "SSH_AUTHORIZED_KEYS": key.with_suffix(".pub").read_text()}
    tool = Container(unpacked(catalog.JUPYTERLAB), tmp_path / "bundle", f"jupyterlab-{tmp_path.name}", env=env,
                     sysctl={UNPRIVILEGED_PORT_SYSCTL: "22"})
    with tool:
        probe = tool.in_network([sys.executable, "-m", "tests.support.toolprobe",
                                 "http://127.0.0.1:8888/tools/alice-notebook/", str(key)],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert probe.returncode == 0, f"{probe.stderr}\n--- container:\n{tool.output()}"
        found = json.loads(probe.stdout)
        processes = tool.processes()
    assert "started" in found["status"] and found["lab"] == 200 and found["lab_is_jupyterlab"]
    assert found["kernel_start"] == 201 and found["result"] == "2"
    assert found["ssh_banner"].startswith("SSH-2.0-OpenSSH_")
    assert found["ssh_id"] == "1000"
    jupyter = [uid for _, uid, cmd in processes if "jupyter-lab" in cmd or "ipykernel" in cmd]
    assert len(jupyter) == 2 and set(jupyter) == {1000}, processes  # the server and the kernel
    assert [uid for _, uid, cmd in processes if cmd.startswith("sshd:")] == [1000], processes  # the listener
    assert {uid for _, uid, _ in processes} == {1000}, processes


def test_the_toolshare_image_runs_its_commands_as_10001(unpacked, tmp_path):
    image = unpacked(catalog.TOOLSHARE)
    assert image.config["config"]["User"] == "10001:10001"
    check = ("import os, toolshare.manager, toolshare.gate.app; from toolshare.cli.main import build_parser; "
             "build_parser().parse_args(['operator']); build_parser().parse_args(['gate']); print(os.getuid())")
    proc = Container(image, tmp_path / "bundle", f"toolshare-{tmp_path.name}", args=["python3", "-c", check]).run()
    assert (proc.returncode, proc.stdout.strip()) == (0, "10001"), proc.stderr
