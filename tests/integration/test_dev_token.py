"""`toolshare dev token USER`: a token from the dev OIDC issuer that `toolshare dev` keeps in the
cluster directory, minted from another process, accepted by a real oauth2-proxy and the gate.

The session's issuer (the one the session oauth2-proxy trusts) is saved to a cluster directory the
way `toolshare dev` saves its own (DevIssuer.persistent), so the tokens the command mints are
checked by the same oauth2-proxy and gate as every other sign-in test.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from tests.support.auth import get
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.wait import wait_for

BIN = Path(sys.executable).parent


def dev_token(directory: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "toolshare"), "dev", "token", *argv, "--dir", str(directory)],
                          capture_output=True, text=True, timeout=60)


def test_dev_tokens_for_anyone_are_accepted_by_oauth2_proxy_and_the_gate(operator, gate, issuer, cluster,
                                                                          namespace, tmp_path):
    issuer.save(tmp_path / "access" / "issuer.json")
    assert stat.S_IMODE((tmp_path / "access" / "issuer.json").stat().st_mode) == 0o600
    (tmp_path / "access" / "urls.json").write_text(json.dumps({"gate": gate.url}))
    ts = Toolshare(cluster.client(), namespace)
    ts.create(toolrun("nb"))
    ts.create(runshare("to-bob", run="nb", users=["bob"], groups=["lab"]))
    check = f"{gate.url}/check/{namespace}/nb/lab"

    def answer(*argv: str) -> int:
        out = dev_token(tmp_path, *argv)
        assert out.returncode == 0, out.stderr
        token = out.stdout.strip()
        assert out.stdout == token + "\n" and "\n" not in token  # TOKEN=$(toolshare dev token ...) works
        return get(check, token)[0]

    wait_for(lambda: answer("bob") == 202, what="bob let in with a dev token")
    assert answer("alice") == 202  # the owner
    assert answer("carol") == 403  # guests: not shared with
    assert answer("eve") == 403  # a stranger the issuer has never heard of
    assert answer("eve", "--group", "lab") == 202  # ... unless the token says she is in lab
    assert answer("carol", "--group", "guests", "--group", "lab") == 202

    out = dev_token(tmp_path, "carol")
    assert "a token for carol (groups: guests)" in out.stderr
    assert f"{gate.url}/check/" in out.stderr and "$TOOLSHARE_TOKEN" in out.stderr


def test_dev_token_refuses_bad_names_and_a_missing_issuer(tmp_path):
    out = dev_token(tmp_path, "bob")
    assert out.returncode == 1 and not out.stdout
    assert "no dev OIDC issuer" in out.stderr and "make run" in out.stderr
    out = dev_token(tmp_path, "bob smith")
    assert out.returncode == 2 and "USER 'bob smith'" in out.stderr and not out.stdout
    out = dev_token(tmp_path, "bob", "--group", "a,b")
    assert out.returncode == 2 and "--group 'a,b'" in out.stderr
