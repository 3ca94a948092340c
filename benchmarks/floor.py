"""The floor: the least a propagation can cost. A hand-written watch -> PATCH loop, no framework.

It watches RunShares and merge-patches the matching Ingress's allowed-users annotation. It knows
nothing of selectors, groups, expiry, status or validation: only the path the benchmark measures.

With --contract it makes exactly the writes Toolshare's contract asks of a share change, and
nothing else: the whole Ingress server-side applied under the operator's field manager (as listed
once at its start, the allowed-users annotation replaced) and the run's status.sharedWith
merge-patched. Still no decisions, no validation, no webhooks: the API server's cost of the
contract's writes, measured on the same cluster in the same run (issue 17's goal 3).
"""

from __future__ import annotations

import argparse
import asyncio

from benchmarks.kclient import KClient

KEPT = ("name", "namespace", "labels", "annotations", "ownerReferences")


async def run(kubeconfig: str, namespace: str, contract: bool = False) -> None:
    async with KClient(kubeconfig) as k:
        base = f"/apis/toolshare.dev/v1alpha1/namespaces/{namespace}/runshares"
        ingresses = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses"
        applied: dict[str, dict] = {}
        if contract:
            for item in (await k.request("GET", ingresses))["items"]:
                applied[item["metadata"]["name"]] = {
                    "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "spec": item["spec"],
                    "metadata": {key: item["metadata"][key] for key in KEPT if key in item["metadata"]}}
        # The contract floor's two writes per change take two round trips: done one change at a
        # time it could not keep up with 100/s however idle the API server. Changes to different
        # runs go concurrently (32 in flight, as the operator's workers); one run's in order.
        slots = asyncio.Semaphore(32)
        runs: dict[str, asyncio.Lock] = {}

        async def contract_writes(run_name: str, users: list[str]) -> None:
            async with slots, runs.setdefault(run_name, asyncio.Lock()):
                ingress = applied[f"{run_name}.lab"]
                ingress["metadata"]["annotations"]["toolshare.dev/allowed-users"] = ",".join(users)
                await k.request("PATCH", f"{ingresses}/{run_name}.lab", ingress,
                                content_type="application/apply-patch+yaml",
                                params={"fieldManager": "toolshare", "force": "true"})
                status = {"status": {"sharedWith": {"users": users, "groups": [], "summary": ", ".join(users)}}}
                await k.request("PATCH", f"/apis/toolshare.dev/v1alpha1/namespaces/{namespace}/toolruns/{run_name}/status",
                                status, content_type="application/merge-patch+json")

        tasks: set[asyncio.Task] = set()
        listing = await k.request("GET", base)
        rv = listing["metadata"]["resourceVersion"]
        print("watching", flush=True)  # the benchmark waits for this line
        while True:
            async for kind, share in k.watch(base, rv):
                rv = share["metadata"].get("resourceVersion", rv)
                if kind not in ("ADDED", "MODIFIED"):
                    continue
                run_name = share["spec"]["runRef"]["name"]
                users = sorted(share["spec"].get("users") or [])
                if contract:
                    task = asyncio.create_task(contract_writes(run_name, users))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    continue
                patch = {"metadata": {"annotations": {"toolshare.dev/allowed-users": ",".join(users)}}}
                await k.request("PATCH", f"{ingresses}/{run_name}.lab", patch,
                                content_type="application/merge-patch+json")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--contract", action="store_true", help="the contract's writes: Ingress apply + run status")
    a = p.parse_args()
    asyncio.run(run(a.kubeconfig, a.namespace, a.contract))


if __name__ == "__main__":
    main()
