"""`toolshare dev`'s pieces that need no cluster: the issuer kept in the cluster directory, the
`toolshare dev token` command, the samples applied as alice, the operator's log."""

from __future__ import annotations

import base64
import json
import logging
import stat
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from toolshare.cli.main import main
from toolshare.local import dev, stack
from toolshare.local.issuer import DevIssuer
from toolshare.logs import configure


def claims_and_check(token: str, issuer: DevIssuer) -> dict:
    """The token's claims, after checking its RS256 signature with the issuer's public key."""
    head, body, sig = token.split(".")
    pad = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))  # noqa: E731
    issuer.key.public_key().verify(pad(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    assert json.loads(pad(head))["kid"] == issuer.kid
    return json.loads(pad(body))


def test_the_issuer_is_kept_0600_and_mints_the_same_tokens_from_the_file(tmp_path):
    path = tmp_path / "access" / "issuer.json"
    served = DevIssuer.persistent(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        loaded = DevIssuer.load(path)
        assert (loaded.url, loaded.client_id, loaded.kid) == (served.url, served.client_id, served.kid)
        claims = claims_and_check(loaded.token("carol"), served)  # verifies with the serving key
        assert (claims["iss"], claims["aud"], claims["preferred_username"], claims["groups"]) == (
            served.url, "toolshare", "carol", ["guests"])
        port = served.port
    finally:
        served.stop()
    again = DevIssuer.persistent(path)  # the next `toolshare dev`: same key, same port if free
    try:
        assert (again.kid, again.port) == (served.kid, port)
        claims_and_check(again.token("bob"), served)
    finally:
        again.stop()


def test_a_taken_port_moves_the_issuer_and_the_file_follows(tmp_path):
    path = tmp_path / "issuer.json"
    first = DevIssuer.persistent(path)
    try:
        second = DevIssuer.persistent(path)  # the recorded port is taken by `first`
        try:
            assert second.port != first.port and second.kid == first.kid
            assert DevIssuer.load(path).url == second.url
        finally:
            second.stop()
    finally:
        first.stop()


def test_dev_token_prints_the_token_alone_on_stdout(tmp_path, capsys):
    issuer = DevIssuer(port=5556)
    issuer.save(stack.issuer_file(tmp_path))
    (tmp_path / "access" / "urls.json").write_text(json.dumps({
        "gate": "http://127.0.0.1:5557", "proxy": "http://127.0.0.1:5558", "ingress": "alice-notebook.lab",
        "host": "alice-notebook.toolshare.localhost", "path": "/lab"}))
    assert main(["dev", "token", "eve", "--group", "lab", "--dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert out == token + "\n"
    claims = claims_and_check(token, issuer)
    assert (claims["preferred_username"], claims["groups"], claims["iss"]) == ("eve", ["lab"], "http://127.0.0.1:5556")
    assert claims["exp"] - claims["iat"] == 12 * 3600
    assert "a token for eve (groups: lab)" in err
    assert 'curl -i -H "Authorization: Bearer $TOOLSHARE_TOKEN" http://127.0.0.1:5557/check/lab/alice-notebook/lab' in err
    assert ('curl -H "Host: alice-notebook.toolshare.localhost" -H "Authorization: Bearer $TOOLSHARE_TOKEN" '
            "http://127.0.0.1:5558/lab") in err
    assert main(["dev", "token", "dave", "--hours", "1", "--dir", str(tmp_path)]) == 0
    claims = claims_and_check(capsys.readouterr().out.strip(), issuer)
    assert claims["groups"] == ["visitors"] and claims["exp"] - claims["iat"] == 3600


def test_dev_token_without_a_running_dev_says_so(tmp_path, capsys):
    assert main(["dev", "token", "bob", "--dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert not out and "no dev OIDC issuer" in err and f"--dir {tmp_path.resolve()}" in err


def test_printed_commands_name_the_directory_only_when_it_is_not_the_default(tmp_path):
    assert dev.command_dir(dev.DEFAULT_DIR) == ""
    assert dev.command_dir(tmp_path) == f" --dir {tmp_path.resolve()}"


def test_the_samples_are_the_platforms_then_alices():
    root = dev.repo_root() / "examples" / "dev"
    platform = [d for f in sorted((root / "platform").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    alice = [d for f in sorted((root / "alice").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    assert [d["kind"] for d in alice] == ["ToolRun", "RunShare"]
    assert "owner" not in alice[0]["spec"]  # stamped from alice's login by the admission webhook
    bindings = {d["metadata"]["name"]: d for d in platform if d["kind"] == "RoleBinding"}
    assert {(b["roleRef"]["name"], s["kind"], s["name"]) for b in bindings.values() for s in b["subjects"]} == {
        ("edit", "User", "alice"), ("view", "Group", "lab")}


def test_webhook_access_lines_are_quiet_unless_verbose():
    try:
        configure("text")
        assert logging.getLogger("aiohttp.access").getEffectiveLevel() == logging.WARNING
        logging.getLogger("aiohttp.access").setLevel(logging.NOTSET)
        configure("text", verbose=True)
        assert logging.getLogger("aiohttp.access").getEffectiveLevel() == logging.DEBUG
    finally:
        logging.getLogger("aiohttp.access").setLevel(logging.NOTSET)
        logging.getLogger("kopf.objects").setLevel(logging.NOTSET)


def test_the_printed_path_has_kubectl_toolshare_then_kubectl():
    class Bins:
        directory = "/bins/k8s"

    scripts, kubectl = dev.tool_path(Bins()).split(":")
    assert (Path(scripts) / "kubectl-toolshare").exists() and (Path(scripts) / "toolshare").exists()
    assert kubectl == "/bins/k8s"
