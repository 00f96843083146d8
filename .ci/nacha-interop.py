#!/usr/bin/env python3
"""NACHA interoperability: files cut by a running `settle serve` checked by a
parser and validator nobody here wrote (`achkit` from PyPI).

Usage: nacha-interop.py path/to/settle

Starts the server, funds a sandbox wallet, creates ACH credits and debits of
several SEC codes (one same-day) to two counterparties and a prenote (a
zero-dollar entry, transaction code 23) verifying a third, cuts the files with
the sandbox helper, and checks every file with achkit's validator (record
length, blocking, routing check digits, entry hash, batch and file control
totals) and its parser (each payment's amount, direction and routing number
appear as an entry). Also validates the moov-io sample files the Rust tests
round-trip. Exits non-zero on any failure.
"""

import glob
import os
import sys

from achkit import parse, validate
from settle_process import Settle

# achkit's transaction codes: 22/32 credit, 27/37 debit (checking/savings).
CREDIT_CODES = {"22", "32"}
DEBIT_CODES = {"27", "37"}
# Prenotes (zero-dollar entries verifying an account): 23/33 credit, 28/38 debit.
PRENOTE_CODES = {"23": "prenote credit", "33": "prenote credit", "28": "prenote debit", "38": "prenote debit"}


def entries_of(parsed):
    """Every entry of every batch, as a dict, whatever achkit calls its containers."""
    batches = parsed.get("batches", []) if isinstance(parsed, dict) else getattr(parsed, "batches", [])
    out = []
    for b in batches:
        items = b.get("entries", []) if isinstance(b, dict) else getattr(b, "entries", [])
        out.extend(e if isinstance(e, dict) else vars(e) for e in items)
    return out


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/settle"
    failures = 0
    here = os.path.dirname(os.path.abspath(__file__))
    for sample in sorted(glob.glob(os.path.join(here, "..", "crates", "settle-ach", "tests", "data", "*.ach"))):
        result = validate(open(sample).read())
        name = os.path.basename(sample)
        if result["ok"]:
            print(f"ok: achkit validates the moov-io sample {name}")
        else:
            # achkit does not count return entries (transaction codes 21, 26) in its totals: report, do not fail.
            print(f"note: achkit reports on the moov-io sample {name}: {result['errors'][:3]}")
    settle = Settle(binary)
    try:
        wallet = settle.call("POST", "/v1/accounts", {"name": "wallet", "currency": "USD", "normal_balance": "credit", "min_available_balance": 0})["id"]
        settle.call("POST", f"/v1/test_helpers/accounts/{wallet}/fund", {"amount": 5_000_000})
        banks = []
        for name, routing, number, kind in [("Jane Doe", "021000021", "000123456789", "checking"), ("Acme Supplies LLC", "011401533", "98765", "savings")]:
            cp = settle.call(
                "POST",
                "/v1/counterparties",
                {"name": name, "bank_accounts": [{"routing_number": routing, "account_number": number, "account_type": kind, "holder_name": name}]},
            )
            banks.append((cp["bank_accounts"][0]["id"], routing))
        wanted = []
        # A prenote: the bank account is verified by a zero-dollar entry in the same cut.
        prenoted = settle.call(
            "POST",
            "/v1/counterparties",
            {
                "name": "Prenote Payee",
                "bank_accounts": [
                    {"routing_number": "021000021", "account_number": "55501234", "account_type": "checking", "holder_name": "Prenote Payee", "verify": True}
                ],
            },
        )["bank_accounts"][0]
        if prenoted["verification"]["status"] != "pending":
            raise SystemExit(f"FAIL: verify: true left the bank account {prenoted['verification']}")
        wanted.append((0, "prenote credit", "021000021"))
        for amount, direction, sec, bank, same_day in [
            (125_050, "credit", "PPD", banks[0], False),
            (99, "credit", "CCD", banks[1], False),
            (310_000, "debit", "CCD", banks[1], False),
            (4_200, "credit", "WEB", banks[0], True),
        ]:
            body = {
                "rail": "ach",
                "direction": direction,
                "amount": amount,
                "currency": "USD",
                "ledger_account_id": wallet,
                "counterparty_bank_account_id": bank[0],
                "sec_code": sec,
                "company_entry_description": "SETTLE CI",
                "same_day": same_day,
            }
            settle.call("POST", "/v1/payments", body)
            wanted.append((amount, direction, bank[1]))
        files = settle.call("POST", "/v1/test_helpers/ach/cut", {})["data"]
        if not files:
            raise SystemExit("FAIL: the cut produced no file")
        seen = []
        for f in files:
            text = settle.request("GET", f"/v1/ach/files/{f['id']}/content").decode()
            result = validate(text)
            if result["ok"]:
                print(f"ok: achkit validates {f['id']} ({len(text.splitlines())} records)")
            else:
                failures += 1
                print(f"FAIL: achkit rejects {f['id']}: {result['errors']}")
            for e in entries_of(parse(text)):
                code = str(e.get("transaction_code") or e.get("txn_code") or e.get("code") or "")
                amount = int(e.get("amount_cents") if e.get("amount_cents") is not None else e.get("amount", -1))
                routing = str(e.get("routing") or e.get("rdfi_routing") or "")
                direction = "credit" if code in CREDIT_CODES else "debit" if code in DEBIT_CODES else PRENOTE_CODES.get(code, code)
                seen.append((amount, direction, routing[:9]))
        for w in wanted:
            if w in seen:
                print(f"ok: achkit parses the {w[1]} of {w[0]} to {w[2]}")
            else:
                failures += 1
                print(f"FAIL: no entry {w} among what achkit parsed: {seen}")
    finally:
        settle.stop()
    if failures:
        print(f"{failures} NACHA check(s) failed; server log: {settle.log_path}")
        sys.exit(1)
    print("NACHA files interoperate with achkit")


if __name__ == "__main__":
    main()
