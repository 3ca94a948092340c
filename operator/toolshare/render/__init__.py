"""Pure rendering: a ToolRun and its RunShares in, desired children out.

No I/O, no kopf, no Kubernetes client: the controller fetches, calls these functions, and applies
the returned dicts with server-side apply (adding ownerReferences itself). Everything here is
deterministic for the same input, so an unchanged run renders byte-identical children and an idle
reconcile has nothing to write. One module per child kind, so another router backend is one more
module.

Two invariants hold whatever the input (the CRD schema enforces them too; this is the second
line of defence, proven by property tests):
- SSH is never exposed through sharing: no Service port, Ingress, HTTPRoute, annotation or
  NetworkPolicy rule from the ingress namespace reaches an ``ssh`` endpoint or port 22.
- Only operator-controlled text, validated DNS names and grammar-checked principals reach an
  annotation; a share carrying anything else is Invalid and applies nowhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from toolshare.policy import Policy
from toolshare.render.common import RenderError
from toolshare.render.httproute import render_routes
from toolshare.render.ingress import ANN_GROUPS, ANN_OWNER, ANN_USERS, render_ingresses
from toolshare.render.networkpolicy import render_network_policy
from toolshare.render.pod import render_pod
from toolshare.render.podstatus import TOOL_READY, ToolCondition, tool_condition
from toolshare.render.service import render_service
from toolshare.render.status import run_status, run_urls, share_status, shared_with
from toolshare.settings import Settings

__all__ = ["ANN_GROUPS", "ANN_OWNER", "ANN_USERS", "RenderError", "render_children", "render_ingresses", "render_network_policy", "render_pod",
           "render_routes", "render_service", "run_status", "run_urls", "share_status", "shared_with", "TOOL_READY", "ToolCondition",
           "tool_condition"]


def render_children(run: Mapping, shares: Iterable[Mapping], settings: Settings, now: dt.datetime,
                    runs_by_name: Mapping[str, Mapping] | None = None,
                    policy: Policy | None = None) -> list[dict]:
    """Every desired child of the run, in a fixed order: Pod, Service, the routes, NetworkPolicy.

    The routes are the Ingresses (TOOLSHARE_ROUTING=ingress), or the HTTPRoutes preceded by the
    auth objects they need (gateway). Malformed endpoints are left out (validate_run says why); a
    malformed identity raises.
    """
    shares = list(shares)
    service = render_service(run)
    routes = render_routes if settings.gateway_routing else render_ingresses
    return [render_pod(run, settings), *([service] if service else []),
            *routes(run, shares, settings, now, runs_by_name, policy),
            render_network_policy(run, settings)]

