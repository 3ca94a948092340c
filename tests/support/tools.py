"""Real tools for the tests that look at what reaches a tool: a Pod on the node, behind the router.

`echo_run` is a ToolRun whose tool (Python's standard library, in the Python image built here)
answers who the router says is calling, and with `?echo=headers` every header it received (JSON).
`routed` waits until the tool is ready and its Ingress exists, and gives the host to ask the
router (tests/support/routing.py) for.
"""

from __future__ import annotations

from tests.support.objects import Toolshare, toolrun
from tests.support.wait import wait_for
from toolshare.local.images import catalog

START = 180.0  # a tool's first start on a loaded 2-core machine

ECHO = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1]

class Tool(BaseHTTPRequestHandler):
    def answer(self):
        path, _, query = self.path.partition("?")
        if "echo=headers" in query.split("&"):
            body, kind = json.dumps([[k, v] for k, v in self.headers.items()]).encode(), "application/json"
        else:
            user = self.headers.get("X-Auth-Request-User") or "nobody"
            body, kind = f"hello from {NAME} to {user} at {path}\n".encode(), "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", 8888), Tool).serve_forever()
"""


def echo_run(name: str, tool_name: str | None = None, **kwargs) -> dict:
    run = toolrun(name, **kwargs)
    run["spec"].update(image=catalog.PYTHON, command=["python3", "-c", ECHO, tool_name or name])
    return run


def tool_ready(ts: Toolshare, name: str) -> dict | None:
    run = ts.get("toolruns", name) or {}
    cond = next((c for c in (run.get("status") or {}).get("conditions") or [] if c["type"] == "ToolReady"), {})
    return run if cond.get("status") == "True" else None


def routed(ts: Toolshare, run: str, endpoint: str = "lab", timeout: float = START) -> str:
    """The host of `run`'s `endpoint`, once its tool serves and its Ingress exists (the router picks
    the Ingress up by itself; until then it answers 404)."""
    wait_for(lambda: tool_ready(ts, run), timeout=timeout, what=f"{run}'s tool ready on the node")
    ingress = wait_for(lambda: ts.ingresses(run).get(endpoint), what=f"the {endpoint} Ingress of {run}")
    return ingress["spec"]["rules"][0]["host"]
