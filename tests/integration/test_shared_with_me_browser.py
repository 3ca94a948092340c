"""Bob opens "Shared with me" in a real browser (Debian's chromium, driven by Playwright).

No browser is downloaded: Playwright launches /usr/bin/chromium (`make deps` installs it). The
screenshot goes to the test's directory, and to docs/shared-with-me.png when
TOOLSHARE_SAVE_SCREENSHOT=1 (how the README's picture is made).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.support.auth import matrix
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.wait import wait_for
from toolshare.gate.page import when

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_bob_sees_alices_run_in_shared_with_me(operator, gate, issuer, cluster, namespace, tmp_path):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(toolrun("rnaseq", endpoints=[{"name": "lab", "port": 8888, "protocol": "http", "path": "/lab"},
                                           {"name": "api", "port": 9000, "protocol": "http", "path": "/api"},
                                           {"name": "ssh", "port": 22, "protocol": "ssh"}]))
    ts.create(toolrun("dashboards", endpoints=[{"name": "web", "port": 3000, "protocol": "http"}]))
    ts.create(toolrun("scratch", owner="bob", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"}]))
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ts.create(runshare("rnaseq-bob", run="rnaseq", users=["bob"], expires_at=until))
    ts.create(runshare("dashboards-lab", run="dashboards", groups=["lab"], endpoints=["web"]))
    wait_for(lambda: matrix(gate.url, issuer, namespace, "rnaseq", "lab", ("bob",)) == (202,), what="rnaseq shared")
    wait_for(lambda: matrix(gate.url, issuer, namespace, "dashboards", "web", ("bob",)) == (202,), what="dashboards shared")
    # bob's own run is on the page too: the gate must know it before the page is asked for.
    wait_for(lambda: matrix(gate.url, issuer, namespace, "scratch", "lab", ("bob",)) == (202,), what="scratch known")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 640},
                                    extra_http_headers={"Authorization": f"Bearer {issuer.token('bob')}"})
            response = page.goto(f"{gate.url}/shared-with-me?q={namespace}")
            assert response is not None and response.status == 200
            assert page.title() == "Toolshare"
            assert "Signed in as bob" in page.inner_text(".who")
            shared = page.locator("table").first
            rnaseq = shared.locator("tr", has_text="rnaseq")
            assert "alice" in rnaseq.inner_text() and f"until {when(until)}" in rnaseq.inner_text()
            links = rnaseq.locator("a")
            assert [links.nth(i).inner_text() for i in range(links.count())] == ["api", "lab"]  # by name
            assert rnaseq.get_by_role("link", name="lab").get_attribute("href") == f"http://rnaseq-{namespace}.toolshare.localhost/lab"
            assert "group lab" in shared.locator("tr", has_text="dashboards").inner_text()
            assert "scratch" in page.locator(f"#run-{namespace}-scratch h3").inner_text()  # under Your runs
            shot = tmp_path / "shared-with-me.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("TOOLSHARE_SAVE_SCREENSHOT") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS / "shared-with-me.png")
