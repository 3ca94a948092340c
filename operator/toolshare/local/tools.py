"""Small tools the suite and the benchmarks launch as ToolRuns, on the local node.

WEB runs with the JupyterLab image's Python (Tornado: JupyterLab's own server, so a real websocket
implementation): `python3 -c WEB <name> <port> [<port>...]`.
"""

from __future__ import annotations

# "hello from <name>:<port> to <caller> at <path>" on every port given (`?echo=headers`: the headers
# received, as JSON); `<path>/ws` on each is an echo, `<path>/download` a minute-long download.
WEB = r"""
import asyncio, json, sys
import tornado.web, tornado.websocket

NAME, PORTS = sys.argv[1], [int(p) for p in sys.argv[2:]]

def caller(request):
    return request.headers.get("X-Auth-Request-User") or "nobody"

class Answer(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE")

    def initialize(self, port):
        self.port = port

    def answer(self, *_):
        if "headers" in self.get_query_arguments("echo"):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps([[k, v] for k, v in self.request.headers.get_all()]))
        else:
            self.set_header("Content-Type", "text/plain")
            self.finish(f"hello from {NAME}:{self.port} to {caller(self.request)} at {self.request.path}\n")

    get = post = put = delete = answer

class Download(tornado.web.RequestHandler):
    async def get(self):  # 1 KiB every 50 ms for a minute: a download long enough to be cut
        self.set_header("Content-Type", "application/octet-stream")
        for _ in range(1200):
            self.write(b"x" * 1024)
            await self.flush()
            await asyncio.sleep(0.05)

class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message(f"{caller(self.request)}: {message}")

async def main():
    for port in PORTS:
        tornado.web.Application([(r".*/ws", Echo), (r".*/download", Download),
                                 (r".*", Answer, {"port": port})]).listen(port)
    await asyncio.Event().wait()

asyncio.run(main())
"""

