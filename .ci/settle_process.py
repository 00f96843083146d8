"""A `settle serve` process for the interoperability checks in .ci/: a free
port, the server on a temporary data dir, and JSON calls with its sandbox key."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Settle:
    """Starts `settle serve` with `extra` arguments; `stop()` ends it."""

    def __init__(self, binary, extra=()):
        self.data = tempfile.mkdtemp()
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(self.data, "server.log")
        log = open(self.log_path, "w")
        env = dict(os.environ, SETTLE_LOG="warn")
        self.process = subprocess.Popen([binary, "serve", "--data-dir", self.data, "--listen", f"127.0.0.1:{port}", *extra], stdout=log, stderr=log, env=env)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.base + "/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.05)
        self.key = open(os.path.join(self.data, "sandbox.key")).read().strip()

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        with urllib.request.urlopen(urllib.request.Request(self.base + path, data=data, method=method, headers=headers), timeout=10) as response:
            return response.read()

    def call(self, method, path, body=None):
        return json.loads(self.request(method, path, body))

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
