"""The `toolshare` command: the local control plane, the operator and (later) the gate and sharing."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

DEFAULT_CLUSTER_DIR = os.environ.get("TOOLSHARE_CLUSTER_DIR", ".toolshare/cluster")


def _cluster(args: argparse.Namespace) -> int:
    from toolshare.local.controlplane import binaries, cluster

    try:
        if args.action == "build":
            from toolshare.local.controlplane import node

            found = binaries.ensure_binaries()
            print(found.directory)
            for tool in (node.CONTAINERD, node.KUBE_ROUTER):  # the node's own modules
                print(tool.ensure().parent)
        elif args.action == "up":
            cluster.up(Path(args.dir), node=args.node)
        elif args.action == "down":
            cluster.down(Path(args.dir))
        elif args.action == "status":
            info = cluster.status(Path(args.dir))
            print(json.dumps(info, indent=2))
            return 0 if info.get("running") else 3
    except (binaries.BinariesUnavailable, cluster.ClusterError) as e:
        print(f"toolshare cluster {args.action}: {e}", file=sys.stderr)
        return 2
    return 0


def _images(args: argparse.Namespace) -> int:
    """Archives on stdout (reference, path); progress on stderr."""
    from toolshare.local.images import build, catalog, containerd

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        names = [catalog.lookup(args.only).name] if args.only else None
        for ref, path in build.ensure(names, log=log).items():
            print(f"{ref}\t{path}")
        if args.import_to:
            containerd.import_images(Path(args.ctr), Path(args.import_to), names or catalog.IMPORTED, log=log)
    except (build.ImagesUnavailable, catalog.UnknownImage) as e:
        print(f"toolshare images {args.action}: {e}", file=sys.stderr)
        return 2
    return 0


WEBHOOK_FLAGS = {"webhook_listen": "TOOLSHARE_WEBHOOK_LISTEN", "webhook_host": "TOOLSHARE_WEBHOOK_HOST",
                 "webhook_cert_dir": "TOOLSHARE_WEBHOOK_CERT_DIR", "webhook_config": "TOOLSHARE_WEBHOOK_CONFIG",
                 "webhook_certs": "TOOLSHARE_WEBHOOK_CERTS", "webhook_service": "TOOLSHARE_WEBHOOK_SERVICE",
                 "webhook_client_ca": "TOOLSHARE_WEBHOOK_CLIENT_CA",
                 "webhook_client_names": "TOOLSHARE_WEBHOOK_CLIENT_NAMES"}
LOG_FORMAT = os.environ.get("TOOLSHARE_LOG_FORMAT", "text")


def _operator(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(Path(args.kubeconfig).resolve())
    for flag, var in WEBHOOK_FLAGS.items():  # flags win over the environment (webhooks.py reads it)
        if getattr(args, flag) is not None:
            os.environ[var] = str(getattr(args, flag))
    key_file = os.environ.get("TOOLSHARE_GRANT_KEY_FILE", "")
    if key_file and not os.environ.get("TOOLSHARE_GRANT_PUBLIC_KEY"):
        # The chart mounts the gate's key Secret here too: the guards are given only its public half.
        from toolshare import grant

        try:
            os.environ["TOOLSHARE_GRANT_PUBLIC_KEY"] = grant.public_text(grant.load_private(Path(key_file).read_bytes()))
        except (OSError, ValueError) as e:
            print(f"toolshare operator: TOOLSHARE_GRANT_KEY_FILE={key_file}: {e}", file=sys.stderr)
            return 2
    from toolshare.manager import run_operator

    if args.metrics_port:
        from toolshare.controller.metrics import serve

        serve(args.metrics_port)
    from toolshare.settings import SettingsError
    from toolshare.state.views import KindsUnavailable

    try:
        run_operator(verbose=args.verbose, liveness_endpoint=args.liveness,
                     log_format=args.log_format)
    except (SettingsError, KindsUnavailable) as e:  # before kopf starts: nothing to clean up
        print(f"toolshare operator: {e}", file=sys.stderr)
        return 2
    return 0


def _dev(args: argparse.Namespace) -> int:
    from toolshare.local.controlplane import binaries, cluster
    from toolshare.local.dev import main as dev_main

    try:
        return dev_main(Path(args.dir))
    except (binaries.BinariesUnavailable, cluster.ClusterError) as e:
        print(f"toolshare dev: {e}", file=sys.stderr)
        return 2


def _dev_token(args: argparse.Namespace) -> int:
    """The token alone on stdout (TOKEN=$(toolshare dev token bob)); how to use it on stderr."""
    from toolshare.local import dev
    from toolshare.principals import validate_principal

    for option, name in [("USER", args.user)] + [("--group", g) for g in args.group]:
        if problem := validate_principal(name):
            print(f"toolshare dev token: {option} {name!r}: {problem}", file=sys.stderr)
            return 2
    try:
        token, hints = dev.token(Path(args.dir), args.user, args.group, args.hours)
    except dev.NoIssuer as e:
        print(f"toolshare dev token: {e}", file=sys.stderr)
        return 1
    print("\n".join(hints), file=sys.stderr, flush=True)
    print(token)
    return 0


def _gate(args: argparse.Namespace) -> int:
    from toolshare.gate.app import GateConfig, run_gate
    from toolshare.gate.identity import Claims

    def address(text: str) -> tuple[str, int]:
        host, _, port = text.rpartition(":")
        return host or "0.0.0.0", int(port)

    key = None
    if args.grant_key:
        from toolshare import grant

        try:
            key = grant.load_private(Path(args.grant_key).read_bytes())
        except (OSError, ValueError) as e:
            print(f"toolshare gate: --grant-key {args.grant_key}: {e}", file=sys.stderr)
            return 2
    run_gate(GateConfig(auth_url=args.oauth2_proxy_url, signin_url=args.signin_url, kubeconfig=args.kubeconfig,
                        claims=Claims(user=args.user_claim, groups=args.groups_claim),
                        session_cookie=args.session_cookie, grant_key=key),
             address(args.listen), address(args.ops_listen), log_format=args.log_format)
    return 0


def _guard(args: argparse.Namespace) -> int:
    from toolshare.guard.app import main as guard_main

    return guard_main()


def _sharing(args: argparse.Namespace) -> int:
    from toolshare.cli.share import run_command

    return run_command(args)


def add_sharing_commands(sub) -> None:
    """share / unshare / list: also what `kubectl toolshare` offers."""
    def common(p):
        p.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG, then ~/.kube/config)")
        p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
        p.set_defaults(func=_sharing)

    s = sub.add_parser("share", help="share a run's HTTP endpoints with users and groups (a RunShare)")
    s.add_argument("run", metavar="RUN")
    s.add_argument("--user", action="append", default=[], help="user to share with (repeatable)")
    s.add_argument("--group", action="append", default=[], help="group to share with (repeatable)")
    s.add_argument("--endpoint", action="append", default=[], help="only this endpoint (repeatable)")
    s.add_argument("--expires", help="duration (2h, 1d, 30m) or RFC 3339 time; default never")
    s.add_argument("--name", help="RunShare name (default <run>-share[-<endpoints hash>])")
    common(s)
    u = sub.add_parser("unshare", help="take users/groups off a run's shares, or delete them")
    u.add_argument("run", metavar="RUN", nargs="?")
    u.add_argument("--user", action="append", default=[], help="user to remove (repeatable)")
    u.add_argument("--group", action="append", default=[], help="group to remove (repeatable)")
    u.add_argument("--name", help="delete this RunShare")
    common(u)
    li = sub.add_parser("list", help="the namespace's RunShares, or --shared-with-me")
    li.add_argument("--shared-with-me", action="store_true",
                    help="what is shared with you in any namespace, as the gate's Shared with me page "
                         "says (with your bearer token in $TOOLSHARE_TOKEN); without a gate, the "
                         "RunShares naming you that you may read")
    li.add_argument("--gate", metavar="URL",
                    help="the gate as you reach it (default $TOOLSHARE_GATE_PUBLIC_URL; in `make run`, "
                         "found next to the kubeconfig)")
    common(li)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolshare", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cluster", help="a local Kubernetes control plane for development and tests")
    c.add_argument("action", choices=["up", "down", "status", "build"],
                   help="up: start (builds binaries if missing); down: stop; status: what runs; "
                        "build: only build or locate the binaries")
    c.add_argument("--dir", default=DEFAULT_CLUSTER_DIR,
                   help=f"cluster directory (default {DEFAULT_CLUSTER_DIR}, or $TOOLSHARE_CLUSTER_DIR)")
    c.add_argument("--no-node", dest="node", action="store_false",
                   help="the control plane alone: no containerd, kubelet, kube-proxy or NetworkPolicy "
                        "enforcer, so Pods are created but never run (needs no root)")
    c.set_defaults(func=_cluster)

    i = sub.add_parser("images", help="build the local node's images (pause, Debian, JupyterLab, Toolshare)",
                       description="Build the images the local node runs, cached by content under "
                                   "~/.cache/toolshare/images, and optionally import them into containerd "
                                   "(docs/images.md). Needs root.")
    i.add_argument("action", choices=["build"], help="build: build what the cache lacks, print each archive")
    i.add_argument("--only", metavar="NAME", help="only this image (and its bases): pause, debian, python, "
                                                  "jupyterlab or toolshare")
    i.add_argument("--import-to", metavar="CONTAINERD_SOCKET",
                   help="then import into this containerd (namespace k8s.io) what it lacks")
    i.add_argument("--ctr", default=shutil.which("ctr") or "ctr", help="the ctr binary (default: ctr on PATH)")
    i.set_defaults(func=_images)

    o = sub.add_parser("operator", help="run the operator in the foreground")
    o.add_argument("--kubeconfig", help="kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config)")
    o.add_argument("--liveness", metavar="URL",
                   help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    o.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on this port (all interfaces)")
    o.add_argument("--webhook-listen", metavar="ADDR:PORT",
                   help="where the admission webhooks listen, HTTPS (default 127.0.0.1:9443; "
                        "$TOOLSHARE_WEBHOOK_LISTEN)")
    o.add_argument("--webhook-host", metavar="HOST",
                   help="host name or IP the API server calls the webhooks at, put in the serving "
                        "certificate (default: the listen address; $TOOLSHARE_WEBHOOK_HOST)")
    o.add_argument("--webhook-cert-dir", metavar="DIR",
                   help="CA and serving certificate, created if missing (default "
                        "~/.cache/toolshare/webhook; $TOOLSHARE_WEBHOOK_CERT_DIR)")
    o.add_argument("--webhook-config", metavar="NAME",
                   help="name of the Validating/MutatingWebhookConfiguration the operator keeps up to "
                        "date (default toolshare.dev; 'none' when manifests install them; "
                        "$TOOLSHARE_WEBHOOK_CONFIG)")
    o.add_argument("--webhook-certs", choices=["generate", "provided"],
                   help="generate: make and renew a CA and serving certificate in the cert dir (default); "
                        "provided: use tls.crt/tls.key mounted there as they are ($TOOLSHARE_WEBHOOK_CERTS)")
    o.add_argument("--webhook-service", metavar="NAMESPACE/NAME[:PORT]",
                   help="in-cluster: the managed configurations call this Service instead of a URL "
                        "($TOOLSHARE_WEBHOOK_SERVICE)")
    o.add_argument("--webhook-client-ca", metavar="FILE",
                   help="answer only callers presenting a client certificate from this CA (the API "
                        "server's webhook client, set in its AdmissionConfiguration; "
                        "$TOOLSHARE_WEBHOOK_CLIENT_CA)")
    o.add_argument("--webhook-client-names", metavar="NAME[,NAME...]",
                   help="common or DNS names that client certificate must carry (default "
                        "kube-apiserver-webhook-client; $TOOLSHARE_WEBHOOK_CLIENT_NAMES)")
    o.add_argument("--log-format", choices=["text", "json"], default=LOG_FORMAT,
                   help="text (default) or one JSON object per line ($TOOLSHARE_LOG_FORMAT)")
    o.add_argument("--verbose", action="store_true")
    o.set_defaults(func=_operator)

    d = sub.add_parser("dev", help="local control plane + CRDs + samples + the operator (what `make run` does)")
    d.add_argument("--dir", default=DEFAULT_CLUSTER_DIR,
                   help=f"cluster directory (default {DEFAULT_CLUSTER_DIR}, or $TOOLSHARE_CLUSTER_DIR)")
    d.set_defaults(func=_dev)
    dsub = d.add_subparsers(dest="dev_command", metavar="{token}")
    t = dsub.add_parser("token", help="a bearer token from the dev OIDC issuer of a running `toolshare dev`",
                        description="Print a token for USER from the dev OIDC issuer that `toolshare dev` keeps "
                                    "in the cluster directory: the token alone on stdout, so "
                                    "TOOLSHARE_TOKEN=$(toolshare dev token bob) works; how to use it on stderr.")
    t.add_argument("user", metavar="USER", help="alice, bob, carol, dave, or any other name")
    t.add_argument("--group", action="append", default=[],
                   help="a group in the token (repeatable; default: the user's groups in the local "
                        "cluster, none for other names)")
    t.add_argument("--hours", type=int, default=12, help="validity in hours (default 12)")
    t.add_argument("--dir", default=argparse.SUPPRESS,
                   help="cluster directory, as given to `toolshare dev`")
    t.set_defaults(func=_dev_token)

    g = sub.add_parser("gate", help="the access gate (auth-url of every run's Ingress) and Shared with me")
    g.add_argument("--listen", default=os.environ.get("TOOLSHARE_GATE_LISTEN", "0.0.0.0:8080"),
                   help="host:port of /check and Shared with me (default 0.0.0.0:8080, or $TOOLSHARE_GATE_LISTEN)")
    g.add_argument("--ops-listen", default=os.environ.get("TOOLSHARE_GATE_OPS_LISTEN", "0.0.0.0:9090"),
                   help="host:port of /healthz, /readyz and /metrics, apart from what the router calls "
                        "(default 0.0.0.0:9090, or $TOOLSHARE_GATE_OPS_LISTEN)")
    g.add_argument("--oauth2-proxy-url", default=os.environ.get(
        "TOOLSHARE_OAUTH2_PROXY_URL", "http://oauth2-proxy.toolshare-system.svc.cluster.local:4180/oauth2/auth"),
        help="oauth2-proxy's /oauth2/auth URL ($TOOLSHARE_OAUTH2_PROXY_URL)")
    g.add_argument("--signin-url", default=os.environ.get("TOOLSHARE_SIGNIN_URL", ""),
                   help="where the Shared with me page sends callers who are not signed in")
    g.add_argument("--user-claim", default="preferred_username",
                   help="ID-token claim naming the user, read exactly, no fallback (default preferred_username; "
                        "use your API server's --oidc-username-claim)")
    g.add_argument("--groups-claim", default="groups",
                   help="ID-token claim listing the groups (default groups); names outside the grammar are dropped")
    g.add_argument("--session-cookie", default="_oauth2_proxy",
                   help="oauth2-proxy's --cookie-name: removed, with its _N parts, from what tools receive")
    g.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster, $KUBECONFIG, ~/.kube/config)")
    g.add_argument("--grant-key", default=os.environ.get("TOOLSHARE_GRANT_KEY_FILE", ""),
                   help="Ed25519 private key (PEM) that signs a grant for each allowed request, which the "
                        "runs' guards require; unset: no grants ($TOOLSHARE_GRANT_KEY_FILE)")
    g.add_argument("--log-format", choices=["text", "json"], default=LOG_FORMAT,
                   help="text (default) or one JSON object per line ($TOOLSHARE_LOG_FORMAT)")
    g.set_defaults(func=_gate)
    gd = sub.add_parser("guard", help="the guard in front of a run's HTTP endpoints, in the run's Pod "
                                      "(configured by its environment: toolshare/guard/config.py)")
    gd.set_defaults(func=_guard)
    add_sharing_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def kubectl_main(argv: list[str] | None = None) -> int:
    """`kubectl toolshare share|unshare|list ...` (installed as kubectl-toolshare)."""
    parser = argparse.ArgumentParser(prog="kubectl toolshare", description="share Toolshare runs")
    add_sharing_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
