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
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

from settle_process import Settle, free_port

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
    settle_server = Settle(settle, ["--webhook-sandbox-destinations", "loopback"])
    failures = 0
    try:
        endpoint = settle_server.call("POST", "/v1/webhook_endpoints", {"url": f"http://127.0.0.1:{receiver_port}/hook", "enabled_events": ["*"]})
        secret = endpoint["secret"]
        wh = Webhook(secret)
        funding = settle_server.call("POST", "/v1/accounts", {"name": "funding", "currency": "USD", "normal_balance": "debit"})["id"]
        wallet = settle_server.call("POST", "/v1/accounts", {"name": "wallet", "currency": "USD", "normal_balance": "credit"})["id"]
        entries = [{"account_id": funding, "direction": "debit", "amount": 1250}, {"account_id": wallet, "direction": "credit", "amount": 1250}]
        settle_server.call("POST", "/v1/transactions", {"entries": entries})
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
        rotated = settle_server.call("POST", f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", {"expires_in_secs": 3600})
        settle_server.call("POST", "/v1/accounts", {"name": "after rotation", "currency": "USD", "normal_balance": "credit"})
        headers, body = wait_for(4)[3]
        for name, s in [("old", secret), ("new", rotated["secret"])]:
            try:
                Webhook(s).verify(body, headers)
                print(f"ok: a delivery during the rotation overlap verifies with the {name} secret")
            except WebhookVerificationError as e:
                failures += 1
                print(f"FAIL: a delivery during the overlap did not verify with the {name} secret: {e}")
    finally:
        settle_server.stop()
        httpd.shutdown()
    if failures:
        print(f"{failures} interoperability check(s) failed; server log: {settle_server.log_path}")
        sys.exit(1)
    print("webhooks interoperate with the standardwebhooks reference library")


if __name__ == "__main__":
    main()
