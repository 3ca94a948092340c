"""The "Shared with me" page: plain server-rendered HTML, every value escaped, no JavaScript."""

from __future__ import annotations

import datetime as dt
from html import escape

from toolshare.model import parse_time

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1d2430;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.8rem 0 .6rem}
.who{color:#5b6472;margin:0 0 1rem}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.5rem .6rem;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:#5b6472}
a{color:#1a5fd0}.none{color:#5b6472;font-style:italic}.tag{background:#eef2f8;border-radius:.3rem;
padding:0 .35rem;font-size:.85rem;margin-right:.25rem;white-space:nowrap}
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


def _endpoints(run: dict) -> str:
    links = []
    for ep in run["endpoints"]:
        url = ep.get("url") or ""
        # Only http(s) URLs become links; anything else is shown as text.
        if url.startswith(("http://", "https://")):
            links.append(f'<a href="{_e(url)}">{_e(ep["name"])}</a>')
        else:
            links.append(_e(ep["name"]))
    return " · ".join(links)


def _shares(run: dict) -> str:
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


def render_page(view: dict) -> str:
    groups = ", ".join(_e(g) for g in view["groups"]) or "none"
    shared_rows = "".join(
        f"<tr><td><b>{_e(r['name'])}</b><br><small>{_e(r['namespace'])}</small></td>"
        f"<td>{_e(r['owner'])}</td><td>{_endpoints(r)}</td><td>{_shares(r)}</td></tr>"
        for r in view["sharedWithMe"])
    owned_rows = "".join(
        f"<tr><td><b>{_e(r['name'])}</b><br><small>{_e(r['namespace'])}</small></td>"
        f"<td>{_endpoints(r)}</td></tr>" for r in view["owned"])
    shared = (f"<table><tr><th>Run</th><th>Owner</th><th>Endpoints</th><th>Shared</th></tr>{shared_rows}</table>"
              if shared_rows else '<p class="none">Nothing has been shared with you yet.</p>')
    owned = (f"<table><tr><th>Run</th><th>Endpoints</th></tr>{owned_rows}</table>"
             if owned_rows else '<p class="none">You own no runs.</p>')
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>Shared with me · Toolshare</title><style>{STYLE}</style></head><body>"
        "<h1>Shared with me</h1>"
        f"<p class=who>Signed in as <b>{_e(view['user'])}</b> ({_e(view['email'])}) · groups: {groups}</p>"
        f"<h2>Shared with you</h2>{shared}<h2>Your runs</h2>{owned}"
        "</body></html>"
    )
