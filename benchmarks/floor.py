"""The floor: the least a propagation can cost. A hand-written watch -> PATCH loop, no framework.

It watches RunShares and merge-patches the matching Ingress's allowed-users annotation. It knows
nothing of selectors, groups, expiry, status or validation: only the path the benchmark measures.
"""

from __future__ import annotations

import argparse
import asyncio

from benchmarks.kclient import KClient


async def run(kubeconfig: str, namespace: str) -> None:
    async with KClient(kubeconfig) as k:
        base = f"/apis/toolshare.dev/v1alpha1/namespaces/{namespace}/runshares"
        listing = await k.request("GET", base)
        rv = listing["metadata"]["resourceVersion"]
        while True:
            async for kind, share in k.watch(base, rv):
                rv = share["metadata"].get("resourceVersion", rv)
                if kind not in ("ADDED", "MODIFIED"):
                    continue
                run_name = share["spec"]["runRef"]["name"]
                users = ",".join(sorted(share["spec"].get("users") or []))
                patch = {"metadata": {"annotations": {"toolshare.dev/allowed-users": users}}}
                await k.request("PATCH", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{run_name}.lab",
                                patch, content_type="application/merge-patch+json")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    a = p.parse_args()
    asyncio.run(run(a.kubeconfig, a.namespace))


if __name__ == "__main__":
    main()
