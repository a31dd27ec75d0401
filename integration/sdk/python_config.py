"""Dapr's Python SDK: configuration subscribe and unsubscribe, then a
graceful Shutdown of the sidecar. integration/sdk.rs changes the key when
this prints SUBSCRIBED; exits non-zero on the first failed check."""

import os
import sys
import threading

from dapr.clients import DaprClient

KEY = os.environ["CONFIG_KEY"]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr, flush=True)
        sys.exit(1)


got = threading.Event()
seen = {}


def handler(sub_id, resp):
    for key, item in resp.items.items():
        seen[key] = item.value
    if seen.get(KEY) == "on":
        got.set()


with DaprClient() as d:
    sub_id = d.subscribe_configuration("config", [KEY], handler)
    check(sub_id, "a subscription id")
    print("SUBSCRIBED", flush=True)
    check(got.wait(20), f"the change reached the handler (saw {seen})")
    check(d.unsubscribe_configuration("config", sub_id), "unsubscribe")
    d.shutdown()

print("python sdk config: all checks passed", flush=True)
