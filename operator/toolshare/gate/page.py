"""The Toolshare page: server-rendered HTML, every value escaped; pure.

Each part works without JavaScript: the share dialog is a <details> disclosure, every Add and
Remove is an ordinary form POST carrying the anti-CSRF token (gate/csrf.py). The one script
(SCRIPT, served from the gate's own origin, as the Content-Security-Policy requires) only adds the
copy-link buttons. Every control has a label, focus is always visible, and the colours keep a
contrast of at least 4.5:1 on white.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from urllib.parse import quote, urlencode

from toolshare.model import parse_time

TITLE = "Toolshare"
CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the page's own
# form posts, which the same-origin check (csrf.cross_site) must refuse. Tools get no referrer.
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP,
           "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:64rem;color:#1d2430;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .2rem}h2{font-size:1.2rem;margin:2rem 0 .6rem}h3{font-size:1.05rem;margin:0}
.who{color:#4a5260;margin:0 0 1rem}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #d8dce3;vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:#4a5260}
a{color:#1553b8}.none{color:#4a5260;font-style:italic}.tag{background:#e8edf5;border-radius:.3rem;
padding:0 .35rem;font-size:.85rem;margin-right:.25rem;white-space:nowrap}
.run{border:1px solid #d8dce3;border-radius:.5rem;padding:.8rem 1rem;margin:.8rem 0}
.state{font-size:.85rem;margin-left:.5rem;padding:0 .4rem;border-radius:.3rem;background:#e8edf5}
.state.Running{background:#dcf2e3;color:#14532d}
dl{display:grid;grid-template-columns:8rem 1fr;gap:.4rem .8rem;margin:.6rem 0}dt{font-weight:600}dd{margin:0}
.endpoint{display:flex;gap:.5rem;align-items:center;margin:.15rem 0}
.endpoint input{width:24rem;max-width:60vw;font:inherit;font-size:.85rem}
form.inline{display:inline}button{font:inherit;font-size:.85rem;padding:.15rem .6rem;cursor:pointer}
button.remove{border:1px solid #b42318;color:#b42318;background:#fff;border-radius:.3rem;padding:0 .4rem}
:focus-visible{outline:3px solid #1553b8;outline-offset:2px}
details.share{margin-top:.4rem}details.share summary{cursor:pointer;color:#1553b8;font-weight:600}
.dialog{border:1px solid #9aa3b2;border-radius:.5rem;padding:.8rem 1rem;margin-top:.5rem;background:#f7f8fa;
max-width:36rem}
.field{margin:.5rem 0}.field label,.field legend{display:block;font-weight:600}
.field input[type=text],.field input[type=search]{width:100%;box-sizing:border-box;font:inherit;padding:.25rem}
.hint{color:#4a5260;font-size:.85rem}fieldset{border:0;padding:0;margin:.5rem 0}
.notice{background:#dcf2e3;color:#14532d;padding:.5rem .8rem;border-radius:.4rem}
.error{background:#fde7e7;color:#7a1212;padding:.5rem .8rem;border-radius:.4rem}
.pager{display:flex;gap:1rem;margin:.8rem 0}.managed{color:#4a5260;font-size:.85rem}
"""

SCRIPT = """
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) return;
  var status = document.getElementById("copied");
  var done = function () { status.textContent = "Copied " + button.dataset.copy; };
  var fallback = function () {
    var box = document.getElementById(button.getAttribute("aria-controls"));
    box.focus(); box.select();
    status.textContent = "Press Ctrl+C to copy the selected link";
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(button.dataset.copy).then(done, fallback);
  } else {
    fallback();
  }
});
"""


def when(value: object) -> str:
    """RFC 3339 as "2026-11-22 16:12 UTC" (the raw text if it is not a time)."""
    try:
        t = parse_time(value)
    except ValueError:
        return str(value)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _id(*parts: str) -> str:
    """An element id from names (DNS labels and endpoint names: already [a-z0-9-])."""
    return "-".join(_e(p) for p in parts)


def _links(run: dict) -> str:
    links = []
    for ep in run["endpoints"]:
        url = ep.get("url") or ""
        # Only http(s) URLs become links; anything else is shown as text.
        if url.startswith(("http://", "https://")):
            links.append(f'<a href="{_e(url)}">{_e(ep["name"])}</a>')
        else:
            links.append(_e(ep["name"]))
    return " · ".join(links)


def _shared_with_you(run: dict) -> str:
    rows = []
    for s in run.get("shares") or []:
        via = "you" if s["via"] == "user" else s["via"].replace("group:", "group ")
        parts = [f'<span class="tag">{_e(via)}</span> by {_e(s["sharedBy"])}',
                 f'since {_e(when(s["since"]))}',
                 f'until {_e(when(s["expiresAt"]))}' if s.get("expiresAt") else "no expiry"]
        if s.get("endpoints"):
            parts.append("only " + ", ".join(_e(e) for e in s["endpoints"]))
        rows.append(" · ".join(parts))
    return "<br>".join(rows) or '<span class="none">via a selector share</span>'


def _carried(csrf_token: str, owner: dict | None) -> str:
    """The fields every form carries: the anti-CSRF token, and where the page was (search and
    page number) so that the answer comes back to it."""
    where = {"q": owner["query"], "page": owner["page"]} if owner is not None else {}
    return f'<input type="hidden" name="csrf" value="{_e(csrf_token)}">' + _fields(where)


def _fields(fields: dict) -> str:
    return "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items())


def _hidden(carry: str, **fields: object) -> str:
    return carry + _fields(fields)


def _remove(action: str, carry: str, label: str, text: str = "×", **fields: object) -> str:
    return (f'<form class="inline" method="post" action="{_e(action)}">{_hidden(carry, **fields)}'
            f'<button class="remove" type="submit" aria-label="{_e(label)}">{_e(text)}</button></form>')


def _principals(entry: dict, action: str, carry: str, subject: str) -> str:
    items = []
    for kind, values in (("user", entry["users"]), ("group", entry["groups"])):
        for name in values:
            shown = name if kind == "user" else f"group {name}"
            control = "" if entry.get("managedBy") else " " + _remove(
                action, carry, f"Stop sharing {subject} with {shown}", kind=kind, principal=name,
                gen=entry["generation"])
            items.append(f'<span class="tag">{_e(shown)}</span>{control}')
    return " ".join(items)


def _share_rows(run: dict, carry: str) -> str:
    if not run["shares"]:
        return '<span class="none">Not shared with anyone.</span>'
    rows = []
    for s in run["shares"]:
        action = f"/runshares/{quote(s['namespace'], safe='')}/{quote(s['name'], safe='')}/remove"
        details = ["only " + ", ".join(_e(e) for e in s["endpoints"]) if s["endpoints"] else "all endpoints",
                   f"until {_e(when(s['expiresAt']))}" if s.get("expiresAt") else "no expiry"]
        if s["state"] != "Active":
            details.append(f'<span class="tag" title="{_e(s["message"])}">{_e(s["state"])}</span>')
        if s["selector"]:
            details.append("by a selector")
        if s.get("managedBy"):
            details.append(f'<span class="managed">managed by {_e(s["managedBy"])}; not editable here</span>')
        else:
            details.append(_remove(action, carry, f"Remove the share {s['name']}", "Remove share", kind="",
                                   principal="", gen=s["generation"]))
        rows.append(f'<tr><td>{_principals(s, action, carry, run["name"])}</td>'
                    f'<td><small>{_e(s["name"])}</small><br>{" · ".join(details)}</td></tr>')
    return f'<table><tr><th>With</th><th>Share</th></tr>{"".join(rows)}</table>'


def _endpoints(run: dict) -> str:
    out = []
    for ep in run["endpoints"]:
        url, box = ep.get("url") or "", _id("url", run["namespace"], run["name"], ep["name"])
        if not url.startswith(("http://", "https://")):
            out.append(f'<div class="endpoint">{_e(ep["name"])} <span class="none">no URL yet</span></div>')
            continue
        out.append(f'<div class="endpoint"><a href="{_e(url)}">{_e(ep["name"])}</a>'
                   f'<input id="{box}" type="text" readonly value="{_e(url)}" aria-label="Link to {_e(ep["name"])}">'
                   f'<button type="button" data-copy="{_e(url)}" aria-controls="{box}" '
                   f'aria-label="Copy the link to {_e(ep["name"])}">Copy link</button></div>')
    return "".join(out) or '<span class="none">no HTTP endpoints</span>'


def _field(ident: str, name: str, label: str, hint: str, value: str = "") -> str:
    return (f'<div class="field"><label for="{ident}">{_e(label)}</label>'
            f'<input type="text" id="{ident}" name="{name}" value="{_e(value)}" aria-describedby="{ident}-hint" '
            f'autocomplete="off"><span class="hint" id="{ident}-hint">{_e(hint)}</span></div>')


def _share_dialog(run: dict, carry: str, open_: bool, form: dict) -> str:
    base = _id("share", run["namespace"], run["name"])
    action = f"/runs/{quote(run['namespace'], safe='')}/{quote(run['name'], safe='')}/shares"
    ticked = set(form.get("endpoints") or [])
    boxes = "".join(
        f'<label><input type="checkbox" name="endpoints" value="{_e(ep["name"])}"'
        f'{" checked" if ep["name"] in ticked else ""}> {_e(ep["name"])}</label> ' for ep in run["endpoints"])
    return (
        f'<details class="share"{" open" if open_ else ""}><summary>Share {_e(run["name"])}…</summary>'
        f'<form class="dialog" method="post" action="{_e(action)}" aria-label="Share {_e(run["name"])}">'
        f'{_hidden(carry)}'
        + _field(f"{base}-users", "users", "Users", "User names, separated by commas, e.g. bob, carol",
                 form.get("users", ""))
        + _field(f"{base}-groups", "groups", "Groups", "Group names, separated by commas, e.g. lab", form.get("groups", ""))
        + (f'<fieldset class="field"><legend>Endpoints</legend>{boxes}'
           '<span class="hint">None ticked: every HTTP endpoint. SSH is never shared.</span></fieldset>'
           if len(run["endpoints"]) > 1 else "")
        + _field(f"{base}-expires", "expires", "Expires (optional)",
                 "A duration such as 8h or 7d, or a time such as 2026-12-31T18:00:00Z", form.get("expires", ""))
        + '<button type="submit">Share</button></form></details>')


def _owner_runs(owner: dict, carry: str, form_for: tuple[str, str] | None, form: dict) -> str:
    search = (f'<form method="get" action="/" role="search"><div class="field"><label for="q">Search your runs</label>'
              f'<input type="search" id="q" name="q" value="{_e(owner["query"])}"></div>'
              '<button type="submit">Search</button></form>')
    if not owner["owned"]:
        return '<p class="none">You own no runs.</p>'
    count = (f'<p>{owner["total"]} of your {owner["owned"]} runs match' if owner["query"].strip()
             else f'<p>{owner["owned"]} runs') + f' · page {owner["page"]} of {owner["pages"]}</p>'
    articles = []
    for run in owner["runs"]:
        key = (run["namespace"], run["name"])
        articles.append(
            f'<article class="run" id="{_id("run", *key)}" aria-labelledby="{_id("title", *key)}">'
            f'<h3 id="{_id("title", *key)}">{_e(run["name"])} <small>{_e(run["namespace"])}</small>'
            f'<span class="state {_e(run["state"])}" title="{_e(run["why"])}">{_e(run["state"])}</span></h3>'
            f'<dl><dt>Endpoints</dt><dd>{_endpoints(run)}</dd>'
            f'<dt>Share with</dt><dd>{_share_rows(run, carry)}'
            f'{_share_dialog(run, carry, form_for == key, form if form_for == key else {})}</dd></dl></article>')
    pager = []
    for label, number in (("Previous page", owner["page"] - 1), ("Next page", owner["page"] + 1)):
        if 1 <= number <= owner["pages"]:
            pager.append(f'<a href="/?{_e(urlencode({"q": owner["query"], "page": number}))}">{label}</a>')
    nav = f'<nav class="pager" aria-label="Pages of your runs">{"".join(pager)}</nav>' if pager else ""
    return search + count + "".join(articles) + nav


def _owner_images(owner: dict, carry: str, form: dict, open_: bool) -> str:
    rows = []
    for img in owner["images"]:
        action = f"/imageshares/{quote(img['namespace'], safe='')}/{quote(img['name'], safe='')}/remove"
        claim = ("yours" if img["claimed"] else
                 f'claimed by {_e(img["claimedBy"])}: this share grants nothing' if img["claimedBy"] else "unclaimed")
        manage = (f'<span class="managed">managed by {_e(img["managedBy"])}; not editable here</span>'
                  if img.get("managedBy") else
                  _remove(action, carry, f"Remove the image share {img['name']}", "Remove share", kind="",
                          principal="", gen=img["generation"]))
        rows.append(f'<tr><td>{_e(img["image"])}<br><small>{_e(img["namespace"])}/{_e(img["name"])}</small></td>'
                    f'<td>{claim}</td><td>{_principals(img, action, carry, img["image"])}</td><td>{manage}</td></tr>')
    table = (f'<table><tr><th>Image</th><th>Claim</th><th>May launch it</th><th></th></tr>{"".join(rows)}</table>'
             if rows else '<p class="none">You have not shared any images.</p>')
    options = "".join(f'<option value="{_e(ns)}">' for ns in owner["namespaces"])
    dialog = (
        f'<details class="share"{" open" if open_ else ""}><summary>Share an image…</summary>'
        f'<form class="dialog" method="post" action="/imageshares" aria-label="Share an image">{_hidden(carry)}'
        + _field("image-image", "image", "Image", "e.g. registry.example.org/you/lab (every tag) or …/lab:4.2",
                 form.get("image", ""))
        + f'<div class="field"><label for="image-namespace">Namespace</label>'
          f'<input type="text" id="image-namespace" name="namespace" list="image-namespaces" '
          f'value="{_e(form.get("namespace") or (owner["namespaces"][0] if owner["namespaces"] else ""))}" '
          f'aria-describedby="image-namespace-hint"><datalist id="image-namespaces">{options}</datalist>'
          '<span class="hint" id="image-namespace-hint">Where the ImageShare is kept</span></div>'
        + _field("image-users", "users", "Users", "Who may launch it, e.g. bob", form.get("users", ""))
        + _field("image-groups", "groups", "Groups", "e.g. lab", form.get("groups", ""))
        + '<button type="submit">Share image</button></form></details>')
    return table + dialog


def render_page(view: dict, owner: dict | None = None, csrf_token: str = "", notice: str = "", error: str = "",
                form_for: tuple[str, str] | None = None, form: dict | None = None) -> str:
    """The whole page. `form_for` (a run's key, or ("image", "")) reopens that dialog with `form`'s
    values after a refusal, so nothing typed is lost."""
    form = form or {}
    carry = _carried(csrf_token, owner)
    groups = ", ".join(_e(g) for g in view["groups"]) or "none"
    shared_rows = "".join(
        f"<tr><td><b>{_e(r['name'])}</b><br><small>{_e(r['namespace'])}</small></td>"
        f"<td>{_e(r['owner'])}</td><td>{_links(r)}</td><td>{_shared_with_you(r)}</td></tr>"
        for r in view["sharedWithMe"])
    shared = (f"<table><tr><th>Run</th><th>Owner</th><th>Endpoints</th><th>Shared</th></tr>{shared_rows}</table>"
              if shared_rows else '<p class="none">Nothing has been shared with you yet.</p>')
    image_rows = "".join(
        f'<tr><td>{_e(i["image"])}</td><td>{_e(i["owner"])}</td><td><span class="tag">'
        f'{_e("you" if i["via"] == "user" else i["via"].replace("group:", "group "))}</span></td></tr>'
        for i in view.get("imagesSharedWithMe") or [])
    shared_images = (f"<table><tr><th>Image</th><th>Owner</th><th>Shared with</th></tr>{image_rows}</table>"
                     if image_rows else '<p class="none">No images have been shared with you.</p>')
    if owner is not None:
        yours = (f'<section aria-labelledby="h-runs"><h2 id="h-runs">Your runs</h2>'
                 f'{_owner_runs(owner, carry, form_for, form)}</section>'
                 f'<section aria-labelledby="h-images"><h2 id="h-images">Your images</h2>'
                 f'{_owner_images(owner, carry, form if form_for == ("image", "") else {}, form_for == ("image", ""))}'
                 '</section>')
    else:
        owned_rows = "".join(f"<tr><td><b>{_e(r['name'])}</b><br><small>{_e(r['namespace'])}</small></td>"
                             f"<td>{_links(r)}</td></tr>" for r in view["owned"])
        yours = ('<section aria-labelledby="h-runs"><h2 id="h-runs">Your runs</h2>'
                 + (f"<table><tr><th>Run</th><th>Endpoints</th></tr>{owned_rows}</table>" if owned_rows
                    else '<p class="none">You own no runs.</p>') + "</section>")
    banner = (f'<p class="error" role="alert">{_e(error)}</p>' if error else "") + (
        f'<p class="notice" role="status">{_e(notice)}</p>' if notice else "")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f'<title>{TITLE}</title><link rel="stylesheet" href="/static/toolshare.css">'
        '<script src="/static/toolshare.js" defer></script></head><body>'
        f"<header><h1>{TITLE}</h1>"
        f"<p class=who>Signed in as <b>{_e(view['user'])}</b> ({_e(view['email'])}) · groups: {groups}</p></header>"
        f'<main>{banner}<p id="copied" class="hint" role="status" aria-live="polite"></p>'
        f'<section aria-labelledby="h-shared"><h2 id="h-shared">Shared with you</h2>{shared}'
        f'<h3>Images you may launch</h3>{shared_images}</section>{yours}</main>'
        "</body></html>"
    )
