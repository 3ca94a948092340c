"""Probe a tool container from inside its network namespace (the image tests run this under nsenter).

`python -m tests.support.toolprobe BASE_URL [SSH_KEY]` prints one JSON object: JupyterLab's
/api/status and /lab answers, the value a new kernel gives for `1 + 1` over its websocket (as the
browser runs code), sshd's banner on port 22 and, with a key, `id -u` run over SSH as jovyan.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid

import aiohttp


async def _wait_for_status(session: aiohttp.ClientSession, base: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with session.get(f"{base}api/status") as r:
                if r.status == 200:
                    return await r.json()
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base}api/status did not answer in {timeout}s")
        await asyncio.sleep(0.5)


def _execute_request(session_id: str, msg_id: str, code: str) -> dict:
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "probe", "session": session_id,
              "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    return {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell",
            "buffers": []}


async def jupyter(base: str) -> dict:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # cookies from an IP
        found = {"status": await _wait_for_status(session, base)}
        async with session.get(f"{base}lab") as r:
            found["lab"] = r.status
            found["lab_is_jupyterlab"] = "JupyterLab" in await r.text()
        xsrf = next((c.value for c in session.cookie_jar if c.key == "_xsrf"), "")
        async with session.post(f"{base}api/kernels", json={"name": "python3"},
                                headers={"X-XSRFToken": xsrf}) as r:
            found["kernel_start"] = r.status
            kernel = await r.json()
        session_id, msg_id = uuid.uuid4().hex, uuid.uuid4().hex
        url = f"{base}api/kernels/{kernel['id']}/channels?session_id={session_id}"
        async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
            await ws.send_json(_execute_request(session_id, msg_id, "1 + 1"))
            async with asyncio.timeout(90):
                async for message in ws:
                    data = json.loads(message.data)
                    if data.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    if data["msg_type"] == "execute_result":
                        found["result"] = data["content"]["data"]["text/plain"]
                    if data["msg_type"] == "status" and data["content"]["execution_state"] == "idle":
                        break
        return found


def ssh_banner(port: int = 22, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                return s.recv(256).decode(errors="replace").strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def ssh_id(key: str) -> str:
    proc = subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "jovyan@127.0.0.1", "id", "-u"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() or proc.stderr.strip()


def main(argv: list[str]) -> None:
    base = argv[0]
    found = asyncio.run(jupyter(base))
    found["ssh_banner"] = ssh_banner()
    if len(argv) > 1:
        found["ssh_id"] = ssh_id(argv[1])
    print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1:])
