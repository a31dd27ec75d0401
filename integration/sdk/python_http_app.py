"""An HTTP app built on Dapr's Python SDK (dapr-ext-fastapi): its
subscriptions come from GET /dapr/subscribe; RETRY, DROP and a dead-letter
topic; routing rules come from the sidecar's declarative subscription.
Appends each event to RECEIVED_FILE as a JSON line."""

import json
import os

import uvicorn
from dapr.ext.fastapi import DaprApp
from fastapi import Body, FastAPI

TOPIC = os.environ["TOPIC"]
DEAD = TOPIC + "-dead"
out = open(os.environ["RECEIVED_FILE"], "a", buffering=1)
tries = {}
app = FastAPI()
dapr_app = DaprApp(app)


def record(route, event):
    out.write(json.dumps({"route": route, "data": event.get("data"), "id": event.get("id")}) + "\n")
    return event.get("data") or {}


@dapr_app.subscribe(pubsub="ps", topic=TOPIC, route="/orders", dead_letter_topic=DEAD)
def orders(event=Body()):
    data = record("orders", event)
    tries[event["id"]] = tries.get(event["id"], 0) + 1
    if data.get("kind") == "retry" and tries[event["id"]] == 1:
        return {"status": "RETRY"}
    if data.get("kind") == "drop":
        return {"status": "DROP"}
    return {"status": "SUCCESS"}


@dapr_app.subscribe(pubsub="ps", topic=DEAD, route="/dead")
def dead(event=Body()):
    record("dead", event)
    return {"status": "SUCCESS"}


# The declarative subscription's routes (rules on event.data.kind).
@app.post("/big")
def big(event=Body()):
    record("big", event)
    return {"status": "SUCCESS"}


@app.post("/rest")
def rest(event=Body()):
    record("rest", event)
    return {"status": "SUCCESS"}


@app.get("/healthz")
def healthz():
    return {}


uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
