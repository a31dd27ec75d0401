"""Dapr's Python SDK against this sidecar: state (etags, bulk,
transactions, query), publish, secrets, locks, configuration and metadata over Dapr's gRPC API. Run by
integration/sdk.rs with DAPR_GRPC_PORT and DAPR_HTTP_PORT set; exits
non-zero on the first failed check."""

import json
import os
import sys

from dapr.clients import DaprClient
from dapr.clients.grpc._state import StateItem, StateOptions, Concurrency
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType

STORE = "s"
QUERY_STORE = "q"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


with DaprClient() as d:
    # State: save, read with etag, conditional writes.
    d.save_state(STORE, "k1", "v1")
    got = d.get_state(STORE, "k1")
    check(got.data == b"v1", f"get_state data {got.data!r}")
    check(got.etag != "", "get_state etag")
    try:
        d.save_state(STORE, "k1", "v2", etag="999")
        check(False, "a stale etag was accepted")
    except Exception as e:  # grpc.RpcError: ABORTED
        check("ABORTED" in str(e) or "aborted" in str(e).lower(), f"stale etag error {e}")
    d.save_state(STORE, "k1", "v2", etag=got.etag)
    check(d.get_state(STORE, "k1").data == b"v2", "etag-guarded write")

    # Bulk.
    d.save_bulk_state(STORE, [StateItem(key="b1", value="1"), StateItem(key="b2", value="2")])
    items = d.get_bulk_state(STORE, keys=["b1", "b2", "missing"]).items
    values = {i.key: i.data for i in items}
    check(values == {"b1": b"1", "b2": b"2", "missing": b""}, f"bulk {values}")

    # Transaction.
    d.execute_state_transaction(
        STORE,
        operations=[
            TransactionalStateOperation(key="t1", data="x"),
            TransactionalStateOperation(key="b1", data="", operation_type=TransactionOperationType.delete),
        ],
    )
    check(d.get_state(STORE, "t1").data == b"x", "transaction upsert")
    check(d.get_state(STORE, "b1").data == b"", "transaction delete")

    # Delete.
    d.delete_state(STORE, "k1")
    check(d.get_state(STORE, "k1").data == b"", "delete")

    # Query (Dapr's query language) on the store that can run it.
    people = {
        "p1": {"person": {"org": "Dev Ops", "id": 1036}, "state": "WA"},
        "p2": {"person": {"org": "Hardware", "id": 1028}, "state": "OR"},
        "p3": {"person": {"org": "Dev Ops", "id": 1071}, "state": "CA"},
    }
    d.save_bulk_state(QUERY_STORE, [StateItem(key=k, value=json.dumps(v)) for k, v in people.items()])
    resp = d.query_state(
        QUERY_STORE,
        json.dumps({
            "filter": {"EQ": {"person.org": "Dev Ops"}},
            "sort": [{"key": "person.id", "order": "DESC"}],
            "page": {"limit": 1},
        }),
    )
    check([r.key for r in resp.results] == ["p3"], f"query page 1 {[r.key for r in resp.results]}")
    check(resp.results[0].json()["state"] == "CA", "query result value")
    check(resp.token != "", "query token")
    resp = d.query_state(
        QUERY_STORE,
        json.dumps({
            "filter": {"EQ": {"person.org": "Dev Ops"}},
            "sort": [{"key": "person.id", "order": "DESC"}],
            "page": {"limit": 1, "token": resp.token},
        }),
    )
    check([r.key for r in resp.results] == ["p1"], f"query page 2 {[r.key for r in resp.results]}")
    check(resp.results[0].etag != "", "query etag")

    # Publish (no subscriber needed: the broker takes it).
    d.publish_event("ps", "orders", json.dumps({"id": 1}), data_content_type="application/json")

    # Secrets.
    secret = d.get_secret("files", "redis-password")
    check(secret.secret == {"redis-password": "change-me"}, f"secret {secret.secret}")
    bulk = d.get_bulk_secret("files")
    check("redis-password" in bulk.secrets, f"bulk secrets {bulk.secrets}")

    # Locks.
    first = d.try_lock("locks", "res", "owner-a", expiry_in_seconds=30)
    check(first.success, "first lock")
    second = d.try_lock("locks", "res", "owner-b", expiry_in_seconds=30)
    check(not second.success, "second lock")
    unlocked = d.unlock("locks", "res", "owner-a")
    check(unlocked.status.value == 0, f"unlock status {unlocked.status}")

    # Configuration.
    config = d.get_configuration("config", keys=["missing"])
    check(dict(config.items) == {}, f"configuration {config.items}")

    # Metadata.
    meta = d.get_metadata()
    check(meta.application_id == "sdk-app", f"app id {meta.application_id}")
    names = {c.name: c.type for c in meta.registered_components}
    check(names.get(STORE) == os.environ.get("STATE_TYPE", "state.in-memory"), f"components {names}")
    check(names.get("ps") == os.environ.get("PUBSUB_TYPE", "pubsub.in-memory"), f"components {names}")

print("python sdk: all checks passed")
