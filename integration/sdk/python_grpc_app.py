"""An app built on Dapr's Python SDK (dapr-ext-grpc): routing rules,
RETRY, DROP and a dead-letter topic. Appends each event it receives to
RECEIVED_FILE as a JSON line; integration/sdk.rs publishes and reads it."""

import json
import os

from dapr.clients.grpc._response import TopicEventResponse
from dapr.ext.grpc import App, Rule

TOPIC = os.environ["TOPIC"]
DEAD = TOPIC + "-dead"
out = open(os.environ["RECEIVED_FILE"], "a", buffering=1)
tries = {}
app = App()


def record(route, event):
    data = json.loads(event.data)
    out.write(json.dumps({"route": route, "data": data, "id": event.id}) + "\n")
    return data


@app.subscribe(pubsub_name="ps", topic=TOPIC, rule=Rule('event.data.kind == "big"', 1), dead_letter_topic=DEAD)
def big(event):
    record("big", event)
    return TopicEventResponse("success")


@app.subscribe(pubsub_name="ps", topic=TOPIC, rule=Rule("true", 2))
def other(event):
    data = record("other", event)
    tries[event.id] = tries.get(event.id, 0) + 1
    if data["kind"] == "retry" and tries[event.id] == 1:
        return TopicEventResponse("retry")
    if data["kind"] == "drop":
        return TopicEventResponse("drop")
    return TopicEventResponse("success")


@app.subscribe(pubsub_name="ps", topic=DEAD)
def dead(event):
    record("dead", event)
    return TopicEventResponse("success")


app.run(int(os.environ["APP_PORT"]))
