"""Small holes closed at the earliest layer: reserved friendly names, paths no Ingress can route,
and a run's access list bounded so its Ingress always fits (tests/data/hostile_runs.yaml)."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest
import yaml

from tests.support import rbac
from tests.support.expected import converged
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.wait import wait_for
from toolshare import model

CORPUS = [pytest.param(e, id=f"{e['field']}={e['value']}")
          for e in yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_runs.yaml").read_text())]


@pytest.fixture
def admin(cluster, operator, namespace):
    return Toolshare(cluster.client(), namespace)


@pytest.mark.parametrize("entry", CORPUS)
def test_hostile_run_fields_are_refused_by_the_api_server(admin, entry):
    run = toolrun("hostile")
    if entry["field"] == "friendlyName":
        run["spec"]["friendlyName"] = entry["value"]
    else:
        run["spec"]["endpoints"][0]["path"] = entry["value"]
    with pytest.raises(kubernetes.client.ApiException) as refused:
        admin.create(run)
    assert refused.value.status == 422 and entry["message"] in refused.value.body
    assert admin.get("toolruns", "hostile") is None
    # The model refuses the same, should a run ever get past the schema.
    assert model.validate_run(run)


def test_a_share_that_would_overflow_a_runs_access_list_is_refused_with_the_count(cluster, operator, namespace):
    rbac.bind_edit(cluster, namespace, users=["alice"])
    alice = Toolshare(cluster.client("alice"), namespace)
    alice.create(toolrun("nb"))
    per_share = model.MAX_PRINCIPALS
    full = model.MAX_RUN_PRINCIPALS // per_share  # shares that fit whole
    for i in range(full):
        alice.create(runshare(f"s{i}", run="nb", users=[f"user-{i}-{j}" for j in range(per_share)]))
    rest = model.MAX_RUN_PRINCIPALS - full * per_share
    alice.create(runshare("last", run="nb", users=[f"last-{j}" for j in range(rest)]))
    # The webhook counts from the operator's cache: wait until it holds the run and every share.
    converged(cluster.client(), namespace)
    with pytest.raises(kubernetes.client.ApiException) as refused:
        alice.create(runshare("one-too-many", run="nb", users=["mallory"]))
    assert refused.value.status == 403
    assert (f"ToolRun 'nb' would be shared with {model.MAX_RUN_PRINCIPALS + 1} users and groups by its shares "
            f"together; at most {model.MAX_RUN_PRINCIPALS}") in refused.value.body
    # Naming someone already on the list adds nothing, so it is admitted; and the Ingress fits.
    alice.create(runshare("again", run="nb", users=["user-0-0"]))
    wait_for(lambda: (alice.condition("toolruns", "nb") or {}).get("reason") == "Reconciled"
             and len(alice.get("toolruns", "nb")["status"]["sharedWith"]["users"]) == model.MAX_RUN_PRINCIPALS,
             timeout=60, what=f"nb shared with {model.MAX_RUN_PRINCIPALS} users, Ingress applied")
