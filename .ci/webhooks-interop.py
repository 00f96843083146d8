#!/usr/bin/env python3
"""Webhook interoperability: real deliveries from a running `settle serve`
verified by a receiver nobody here wrote (the `standardwebhooks` package
from PyPI, the Standard Webhooks reference library).

Usage: webhooks-interop.py path/to/settle

Starts the server (sandbox deliveries limited to loopback) and a receiver on
127.0.0.1, subscribes the receiver, makes ledger changes, and checks that
every delivery verifies with the endpoint's secret, that the same delivery
with a tampered body is rejected, that one re-signed with a stale timestamp
is rejected, and that after a secret rotation deliveries verify with the old
and the new secret. Exits non-zero on any failure.
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

received = []
lock = threading.Lock()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with lock:
            received.append((headers, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(base, key, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for(count, deadline_secs=20):
    deadline = time.time() + deadline_secs
    while time.time() < deadline:
        with lock:
            if len(received) >= count:
                return list(received)
        time.sleep(0.05)
    with lock:
        raise SystemExit(f"FAIL: expected {count} deliveries, got {len(received)}")


def main():
    settle = sys.argv[1] if len(sys.argv) > 1 else "target/release/settle"
    receiver_port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", receiver_port), Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    data = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, SETTLE_LOG="warn")
    log = open(os.path.join(data, "server.log"), "w")
    server = subprocess.Popen(
        [settle, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}", "--webhook-sandbox-destinations", "loopback"], stdout=log, stderr=log, env=env
    )
    failures = 0
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.05)
        key = open(os.path.join(data, "sandbox.key")).read().strip()
        endpoint = call(base, key, "POST", "/v1/webhook_endpoints", {"url": f"http://127.0.0.1:{receiver_port}/hook", "enabled_events": ["*"]})
        secret = endpoint["secret"]
        wh = Webhook(secret)
        funding = call(base, key, "POST", "/v1/accounts", {"name": "funding", "currency": "USD", "normal_balance": "debit"})["id"]
        wallet = call(base, key, "POST", "/v1/accounts", {"name": "wallet", "currency": "USD", "normal_balance": "credit"})["id"]
        entries = [{"account_id": funding, "direction": "debit", "amount": 1250}, {"account_id": wallet, "direction": "credit", "amount": 1250}]
        call(base, key, "POST", "/v1/transactions", {"entries": entries})
        deliveries = wait_for(3)
        for headers, body in deliveries:
            try:
                event = wh.verify(body, headers)
                print(f"ok: verified {headers['webhook-id']} ({event['type']})")
            except WebhookVerificationError as e:
                failures += 1
                print(f"FAIL: a real delivery did not verify: {e}")
        headers, body = deliveries[0]
        try:
            wh.verify(body.replace(b"1250", b"9250") if b"1250" in body else body + b" ", headers)
            failures += 1
            print("FAIL: a tampered body verified")
        except WebhookVerificationError:
            print("ok: a tampered body is rejected")
        stale = datetime.now(timezone.utc) - timedelta(minutes=10)
        stale_headers = dict(headers, **{"webhook-timestamp": str(int(stale.timestamp())), "webhook-signature": wh.sign(headers["webhook-id"], stale, body.decode())})
        try:
            wh.verify(body, stale_headers)
            failures += 1
            print("FAIL: a stale timestamp verified")
        except WebhookVerificationError as e:
            print(f"ok: a stale timestamp is rejected ({e})")
        # Rotation: during the overlap both the old and the new secret verify.
        rotated = call(base, key, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", {"expires_in_secs": 3600})
        call(base, key, "POST", "/v1/accounts", {"name": "after rotation", "currency": "USD", "normal_balance": "credit"})
        headers, body = wait_for(4)[3]
        for name, s in [("old", secret), ("new", rotated["secret"])]:
            try:
                Webhook(s).verify(body, headers)
                print(f"ok: a delivery during the rotation overlap verifies with the {name} secret")
            except WebhookVerificationError as e:
                failures += 1
                print(f"FAIL: a delivery during the overlap did not verify with the {name} secret: {e}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        httpd.shutdown()
    if failures:
        print(f"{failures} interoperability check(s) failed; server log: {os.path.join(data, 'server.log')}")
        sys.exit(1)
    print("webhooks interoperate with the standardwebhooks reference library")


if __name__ == "__main__":
    main()
