"""The owner's side of the page in a real browser (Debian's chromium, Playwright), through the real
oauth2-proxy, the gate under its own service account (manifests/gate's ClusterRole), Traefik and a
tool Pod on the node.

alice shares her run with bob from the page, by keyboard alone; bob sees it and opens it; alice
removes bob and bob's next load is refused. Every write is an ordinary RunShare or ImageShare made
by alice herself (user impersonation: admission stamps her as the sharer). carol, a co-tenant
with `edit`, forges the form post to share alice's run with herself and is refused with the
admission message. Screenshots go to the test's directory, and to docs/ when
TOOLSHARE_SAVE_SCREENSHOT=1 (how the README's pictures are made).
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path

import kubernetes
from playwright.sync_api import expect, sync_playwright

from tests.support import rbac
from tests.support.auth import matrix
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.routing import through
from tests.support.tools import START, routed, web_run
from tests.support.wait import wait_for
from toolshare import access
from toolshare.gate.page import CSP
from toolshare.policy import Policy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
VIEWPORT = {"width": 1100, "height": 900}


def _save(shot: Path) -> None:
    assert shot.stat().st_size > 10_000
    if os.environ.get("TOOLSHARE_SAVE_SCREENSHOT") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS / shot.name)


def _context(browser, issuer, person: str):
    return browser.new_context(viewport=VIEWPORT, extra_http_headers={"Authorization": f"Bearer {issuer.token(person)}"})


def test_alice_shares_from_the_page_and_bob_gets_in_until_she_removes_him(
        operator, gate, router, issuer, cluster, namespace, tmp_path):
    rbac.bind_edit(cluster, namespace, users=["alice", "carol"])  # carol: a co-tenant who may write RunShares
    client = cluster.client()
    ts = Toolshare(client, namespace)
    ts.create(web_run("rnaseq", {"lab": 8888, "api": 9000}))  # alice's
    ts.create(toolrun("scratch", endpoints=[{"name": "web", "port": 3000, "protocol": "http"}]))
    # A share Flux applied: shown, and not editable from the page.
    flux = runshare("scratch-lab", run="scratch", groups=["lab"])
    flux["metadata"]["labels"] = {"kustomize.toolkit.fluxcd.io/name": "tenants"}
    ts.create(flux)
    host = routed(ts, "rnaseq", timeout=START)
    wait_for(lambda: matrix(gate.url, issuer, namespace, "rnaseq", "lab", ("alice", "bob")) == (202, 403),
             what="the gate knows alice's run")
    wait_for(lambda: through(router, host, "/lab/tree", issuer.token("alice"))[0] == 200, timeout=START,
             what="alice's tool served through Traefik")

    def bob_status() -> int:
        return through(router, host, "/lab/tree", issuer.token("bob"))[0]

    assert bob_status() == 403
    run_id = f"#run-{namespace}-rnaseq"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            alice = _context(browser, issuer, "alice")
            alice.grant_permissions(["clipboard-read", "clipboard-write"], origin=gate.url)
            page = alice.new_page()
            refused_by_csp = []
            page.on("console", lambda m: refused_by_csp.append(m.text) if "Content Security Policy" in m.text else None)
            response = page.goto(f"{gate.url}/?q={namespace}")
            assert response is not None and response.status == 200
            assert response.headers["content-security-policy"] == CSP
            run = page.locator(run_id)
            expect(run.locator("h3")).to_contain_text("rnaseq")
            expect(run).to_contain_text("Not shared with anyone.")
            lab_url = f"http://{host}/lab"
            expect(run.get_by_label("Link to lab", exact=True)).to_have_value(lab_url)
            run.get_by_role("button", name="Copy the link to lab").click()
            expect(page.locator("#copied")).to_have_text(f"Copied {lab_url}")
            assert page.evaluate("navigator.clipboard.readText()") == lab_url
            scratch = page.locator(f"#run-{namespace}-scratch")
            expect(scratch).to_contain_text("managed by Flux; not editable here")
            assert scratch.get_by_role("button", name="Stop sharing scratch with group lab").count() == 0

            # The share dialog, by keyboard: focus its disclosure, open it, tab into Users, type,
            # tick nothing (every HTTP endpoint), submit with Enter.
            summary = run.locator("summary")
            summary.focus()
            page.keyboard.press("Enter")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == f"share-{namespace}-rnaseq-users"
            page.keyboard.type("bob")
            run.get_by_label("Expires (optional)", exact=True).fill("8h")
            run.screenshot(path=str(tmp_path / "share-dialog.png"))
            run.get_by_label("Users", exact=True).focus()
            with page.expect_navigation():
                page.keyboard.press("Enter")
            expect(page.get_by_role("status").filter(has_text="Shared:")).to_be_visible()
            expect(run.get_by_role("button", name="Stop sharing rnaseq with bob")).to_be_visible()
            page.screenshot(path=str(tmp_path / "share-owner.png"), full_page=True)
            assert refused_by_csp == []

            # Written by alice herself: admission stamped her as the sharer, under the page's manager.
            [made] = [s for s in ts.list("runshares") if s["metadata"]["name"] != "scratch-lab"]
            assert made["spec"]["users"] == ["bob"] and made["spec"]["runRef"] == {"name": "rnaseq"}
            assert made["metadata"]["annotations"][access.ANN_SHARED_BY] == "alice"
            assert "toolshare-page" in [m["manager"] for m in made["metadata"]["managedFields"]]

            # bob sees it and opens it.
            wait_for(lambda: bob_status() == 200, what="bob let in through Traefik")
            bob = _context(browser, issuer, "bob")
            bob_page = bob.new_page()
            bob_page.goto(f"{gate.url}/?q={namespace}")
            shared = bob_page.locator("section[aria-labelledby=h-shared] table").first
            row = shared.locator("tr", has_text="rnaseq")
            expect(row).to_contain_text("alice")
            href = row.get_by_role("link", name="lab").get_attribute("href")
            assert href == lab_url
            opened = bob_page.goto(href.replace(host, f"{host}:{router.port}", 1) + "/tree")
            assert opened is not None and opened.status == 200

            # alice removes bob; his next load is refused.
            with page.expect_navigation():
                run.get_by_role("button", name="Stop sharing rnaseq with bob").click()
            expect(page.get_by_role("status").filter(has_text="Removed:")).to_be_visible()
            expect(run).to_contain_text("Not shared with anyone.")
            assert [s["metadata"]["name"] for s in ts.list("runshares")] == ["scratch-lab"]
            wait_for(lambda: matrix(gate.url, issuer, namespace, "rnaseq", "lab", ("bob",)) == (403,),
                     what="the gate refuses bob after the removal")
            again = bob_page.goto(href.replace(host, f"{host}:{router.port}", 1) + "/tree")
            assert again is not None and again.status == 403

            # carol forges the form post, with a token from her own page: admission says no.
            carol = _context(browser, issuer, "carol")
            carol_page = carol.new_page()
            carol_page.goto(f"{gate.url}/?q={namespace}")
            token = carol_page.locator("input[name=csrf]").first.get_attribute("value")
            assert token
            forged = carol_page.request.post(f"{gate.url}/runs/{namespace}/rnaseq/shares",
                                             form={"csrf": token, "users": "carol"})
            expected = access.may_share("carol", [], namespace, [("rnaseq", "alice")], Policy.from_env())
            assert forged.status == 403 and html.escape(expected, quote=True) in forged.text(), forged.text()[:2000]
            # Without her token, with alice's, or from another origin: refused before any write.
            alice_token = page.locator("input[name=csrf]").first.get_attribute("value")
            for form, headers, why in (({"users": "carol"}, {}, "token is missing"),
                                       ({"csrf": alice_token, "users": "carol"}, {}, "token is missing"),
                                       ({"csrf": token, "users": "carol"}, {"Origin": "http://evil.example"},
                                        "another origin")):
                answer = carol_page.request.post(f"{gate.url}/runs/{namespace}/rnaseq/shares", form=form,
                                                 headers=headers)
                assert answer.status == 403 and why in answer.text()
            # A hostile name through alice's own form: refused naming the field, nothing written.
            hostile = page.request.post(f"{gate.url}/runs/{namespace}/rnaseq/shares",
                                        form={"csrf": alice_token, "users": "mallory\r\nX-Remote-User: admin"})
            assert hostile.status == 422 and "Users &#x27;mallory" in hostile.text()
            assert [s["metadata"]["name"] for s in ts.list("runshares")] == ["scratch-lab"]
        finally:
            browser.close()
    for name in ("share-dialog.png", "share-owner.png"):
        _save(tmp_path / name)


def test_alice_shares_an_image_and_bob_sees_it(operator, gate, issuer, cluster, namespace, tmp_path):
    rbac.bind_edit(cluster, namespace, users=["alice"])
    image = f"registry.example.org/alice/lab-{namespace[-6:]}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = _context(browser, issuer, "alice").new_page()
            page.goto(f"{gate.url}/?q={namespace}")
            images = page.locator("section[aria-labelledby=h-images]")
            images.locator("summary").click()
            images.get_by_label("Image", exact=True).fill(image)
            images.get_by_label("Namespace", exact=True).fill(namespace)
            images.get_by_label("Users", exact=True).fill("bob")
            with page.expect_navigation():
                images.get_by_role("button", name="Share image").click()
            expect(page.get_by_role("status").filter(has_text="Image shared:")).to_be_visible()
            row = images.locator("tr", has_text=image)
            expect(row).to_contain_text("yours")
            expect(row.get_by_role("button", name=f"Stop sharing {image} with bob")).to_be_visible()
            api = kubernetes.client.CustomObjectsApi(cluster.client())
            [made] = api.list_namespaced_custom_object("toolshare.dev", "v1alpha1", namespace, "imageshares")["items"]
            assert made["spec"] == {"image": image, "owner": "alice", "users": ["bob"]}

            bob = _context(browser, issuer, "bob").new_page()
            bob.goto(f"{gate.url}/")
            expect(bob.locator("section[aria-labelledby=h-shared]").locator("tr", has_text=image)).to_contain_text("alice")

            # An image someone else's rule claims: the admission refusal is on the page, with its message.
            page.goto(f"{gate.url}/?q={namespace}")
            images.locator("summary").click()
            images.get_by_label("Image", exact=True).fill("registry.example.org/carol/tool")
            images.get_by_label("Namespace", exact=True).fill(namespace)
            images.get_by_label("Users", exact=True).fill("bob")
            with page.expect_navigation():
                images.get_by_role("button", name="Share image").click()
            alert = page.get_by_role("alert")
            expect(alert).to_contain_text("Could not share image registry.example.org/carol/tool with bob")
            expect(alert).to_contain_text("registry.example.org/carol/")
            # Nothing typed is lost: the dialog is open again with the values.
            expect(images.get_by_label("Image", exact=True)).to_have_value("registry.example.org/carol/tool")
        finally:
            browser.close()
