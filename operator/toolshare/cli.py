"""The `toolshare` command: the local control plane, the operator and (later) the gate and sharing."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_CLUSTER_DIR = os.environ.get("TOOLSHARE_CLUSTER_DIR", ".toolshare/cluster")


def _cluster(args: argparse.Namespace) -> int:
    from .controlplane import binaries, cluster

    try:
        if args.action == "build":
            found = binaries.ensure_binaries()
            print(found.directory)
        elif args.action == "up":
            cluster.up(Path(args.dir))
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


def _operator(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(Path(args.kubeconfig).resolve())
    from .runner import run_operator

    if args.metrics_port:
        from .metrics import serve

        serve(args.metrics_port)
    run_operator(namespaces=args.namespace, verbose=args.verbose, liveness_endpoint=args.liveness)
    return 0


def _dev(args: argparse.Namespace) -> int:
    from .controlplane import binaries, cluster
    from .devenv import main as dev_main

    try:
        return dev_main(Path(args.dir))
    except (binaries.BinariesUnavailable, cluster.ClusterError) as e:
        print(f"toolshare dev: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolshare", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cluster", help="a local Kubernetes control plane for development and tests")
    c.add_argument("action", choices=["up", "down", "status", "build"],
                   help="up: start (builds binaries if missing); down: stop; status: what runs; "
                        "build: only build or locate the binaries")
    c.add_argument("--dir", default=DEFAULT_CLUSTER_DIR,
                   help=f"cluster directory (default {DEFAULT_CLUSTER_DIR}, or $TOOLSHARE_CLUSTER_DIR)")
    c.set_defaults(func=_cluster)

    o = sub.add_parser("operator", help="run the operator in the foreground")
    o.add_argument("--kubeconfig", help="kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config)")
    o.add_argument("--namespace", "-n", action="append", default=[],
                   help="watch only this namespace (repeatable; default: the whole cluster)")
    o.add_argument("--liveness", metavar="URL",
                   help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    o.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on this port (all interfaces)")
    o.add_argument("--verbose", action="store_true")
    o.set_defaults(func=_operator)

    d = sub.add_parser("dev", help="local control plane + CRDs + samples + the operator (what `make run` does)")
    d.add_argument("--dir", default=DEFAULT_CLUSTER_DIR, help="cluster directory")
    d.set_defaults(func=_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
