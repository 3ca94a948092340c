"""bob opens alice's shared JupyterLab in a real browser, through Traefik, oauth2-proxy and the gate.

Everything on the path is real: JupyterLab runs as a Pod on the local node (the image built here),
Traefik reads the operator's Ingress and proxies to the Pod's address from the run's
EndpointSlice, asking the gate (forwardAuth) which asks oauth2-proxy, and Debian's chromium,
driven by Playwright, starts a kernel and runs `1 + 1` over the kernel's websocket. After alice
unshares, a new page load is refused.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect, sync_playwright

from tests.support.auth import matrix
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.routing import through
from tests.support.tools import routed
from tests.support.wait import wait_for
from toolshare.local.images import catalog

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START = 300.0  # a cold JupyterLab start and first page on a loaded 2-core machine


def test_bob_runs_a_cell_in_alices_shared_jupyterlab_until_she_unshares(
        operator, gate, router, issuer, cluster, namespace, tmp_path):
    client = cluster.client()
    ts = Toolshare(client, namespace)
    run = toolrun("lab", endpoints=[{"name": "lab", "port": 8888, "protocol": "http", "path": "/lab"},
                                    {"name": "ssh", "port": 22, "protocol": "ssh"}])
    run["spec"]["image"] = catalog.JUPYTERLAB
    run["spec"]["env"] = [{"name": "JUPYTER_BASE_URL", "value": "/lab/"}]
    ts.create(run)
    ts.create(runshare("lab-bob", run="lab", users=["bob"]))
    wait_for(lambda: matrix(gate.url, issuer, namespace, "lab", "lab", ("bob",)) == (202,), what="lab shared with bob")
    host = routed(ts, "lab", timeout=START)  # *.localhost: chromium resolves it to loopback itself
    url = f"http://{host}:{router.port}/lab/lab"
    wait_for(lambda: through(router, host, "/lab/lab", issuer.token("bob"))[0] == 200, timeout=START,
             what="JupyterLab served to bob through Traefik")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {issuer.token('bob')}"})
            page = context.new_page()
            response = page.goto(url, timeout=START * 1000)
            assert response is not None and response.status == 200
            # A notebook on the Python kernel, from JupyterLab's launcher; then the status bar
            # says the kernel is connected and idle (before that, a cell run is lost, and the
            # notebook's own indicator already reads idle).
            page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=START * 1000)
            expect(page.get_by_role("button", name=re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(
                timeout=START * 1000)
            cell = page.locator(".jp-Notebook .jp-CodeCell").first
            cell.locator(".cm-content").click()
            page.keyboard.insert_text("1 + 1")
            expect(cell.locator(".cm-content")).to_have_text("1 + 1")
            page.get_by_role("button", name="Run this cell and advance (Shift+Enter)").click()
            expect(cell.locator(".jp-OutputArea-output")).to_have_text("2", timeout=60_000)
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))
            context.close()

            ts.delete("runshares", "lab-bob")
            wait_for(lambda: matrix(gate.url, issuer, namespace, "lab", "lab", ("bob",)) == (403,),
                     what="bob refused by the gate after the unshare")
            context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {issuer.token('bob')}"})
            refused = context.new_page().goto(url)
            assert refused is not None and refused.status == 403
            context.close()
        finally:
            browser.close()
