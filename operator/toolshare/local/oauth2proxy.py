"""oauth2-proxy: built from its pinned Go module (tools/oauth2-proxy), and its command line.

The build reuses the control plane's builder (same atomic, pin-keyed cache under
~/.cache/toolshare/oauth2-proxy/<key>/). `argv` is the one place that says how Toolshare runs
oauth2-proxy: OIDC against an issuer, bearer tokens accepted, and the X-Auth-Request-* headers
the gate reads identity from.
"""

from __future__ import annotations

from pathlib import Path

from toolshare.local.controlplane import binaries as binmod

NAME = "oauth2-proxy"
MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
ALTERNATIVES = ("set TOOLSHARE_OAUTH2_PROXY to an oauth2-proxy v7 binary built elsewhere, "
                "or install Go 1.26+ so it can be built from tools/oauth2-proxy")
TOOL = binmod.GoTool(
    name=NAME, module=MODULE, package=MODULE, version_args=("--version",),
    ldflags="-s -w -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION={version}",
    override_env="TOOLSHARE_OAUTH2_PROXY", alternatives=ALTERNATIVES)
module_dir, pinned_version, cache_key = TOOL.module_dir, TOOL.pinned_version, TOOL.cache_key


def ensure(log=print) -> Path:
    """Path to the oauth2-proxy binary: $TOOLSHARE_OAUTH2_PROXY, the cache, or a fresh build."""
    return TOOL.ensure(log=log)


def argv(binary: Path, *, listen: str, issuer: str, client_id: str, cookie_secret: str,
         upstream: str = "static://202", extra: list[str] | None = None) -> list[str]:
    """oauth2-proxy for Toolshare: OIDC sign-in, and signed bearer tokens from `issuer` accepted.

    /oauth2/auth answers 401 without a valid session or token, else 202 with the session's ID token
    in Authorization (--set-authorization-header), whose claims the gate reads exactly
    (gate/identity.py), and the X-Auth-Request-* headers (comma-joined, so not used for decisions).
    """
    return [
        str(binary),
        f"--http-address={listen}",
        "--provider=oidc",
        f"--oidc-issuer-url={issuer}",
        f"--client-id={client_id}",
        "--client-secret=unused-for-bearer-tokens",
        f"--cookie-secret={cookie_secret}",
        "--cookie-secure=false",
        "--email-domain=*",
        "--oidc-email-claim=email",
        "--oidc-groups-claim=groups",
        "--set-xauthrequest",
        "--set-authorization-header=true",
        "--skip-jwt-bearer-tokens",
        f"--extra-jwt-issuers={issuer}={client_id}",
        f"--redirect-url=http://{listen}/oauth2/callback",
        f"--upstream={upstream}",
        "--skip-provider-button",
        "--silence-ping-logging",
        *(extra or []),
    ]


if __name__ == "__main__":  # `python -m toolshare.local.oauth2proxy`: build or locate it, print its path
    print(ensure())
