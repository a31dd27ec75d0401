"""Pluggable components for the sidecar's tests, written as a user would
write them: a process serving Dapr's pluggable component protocols
(dapr.proto.components.v1: StateStore with TransactionalStateStore, PubSub,
InputBinding, OutputBinding, SecretStore) and Layotto's pluggable Hello
(spec.proto.pluggable.v1.hello.Hello) on one unix socket, with gRPC
reflection so that the sidecar discovers them.

The messages are built at run time from the descriptor set the sidecar
was compiled with (--descriptors), so no code generation is needed.

    python components.py --descriptors FILE --socket /tmp/dapr-components-sockets/my-comp.sock

Every component keeps its data in this process, shared by every instance
(x-component-instance) that names the same keys: a state store, a broker
with consumer groups (consumerID from each instance's Init), an echo output
binding, an input binding that emits what the output binding's "emit"
operation is given, secrets from the Init metadata, and a greeting.

The process exits when its parent does, so a test never leaves one behind.
"""

import argparse
import collections
import os
import random
import sys
import threading
import time
import uuid
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection

PKG = "dapr.proto.components.v1."
HELLO_PKG = "spec.proto.pluggable.v1.hello."


def load_messages(path):
    with open(path, "rb") as f:
        fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    return message_factory.GetMessages(list(fds.file), pool=descriptor_pool.DescriptorPool())


def instance(context):
    for key, value in context.invocation_metadata():
        if key == "x-component-instance":
            return value
    return ""


class State:
    """Keys with values, integer etags and expiry; every write atomic."""

    def __init__(self, m):
        self.m = m
        self.lock = threading.Lock()
        self.data = {}  # key -> (value bytes, etag int, expires monotonic or None)

    def _live(self, key):
        entry = self.data.get(key)
        if entry is None:
            return None
        if entry[2] is not None and entry[2] <= time.monotonic():
            del self.data[key]
            return None
        return entry

    @staticmethod
    def _etag_of(request):
        if request.HasField("etag") and request.etag.value != "":
            try:
                return int(request.etag.value)
            except ValueError:
                return "invalid"
        return None

    def _check(self, request, first_write, context):
        key = request.key
        expected = self._etag_of(request)
        current = self._live(key)
        if expected == "invalid":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid etag '{request.etag.value}' for key '{key}'")
        if expected is not None:
            if current is None or current[1] != expected:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"possible etag mismatch for key '{key}'")
        elif first_write and current is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"key '{key}' already exists (first-write)")

    def _apply_set(self, request):
        ttl = request.metadata.get("ttlInSeconds")
        expires = None
        if ttl:
            seconds = int(ttl)
            if seconds > 0:
                expires = time.monotonic() + seconds
        self.data[request.key] = (bytes(request.value), random.randrange(1, 1 << 53), expires)

    def _first_write(self, request):
        return request.HasField("options") and request.options.concurrency == 1

    def Init(self, request, context):
        return self.m[PKG + "InitResponse"]()

    def Features(self, request, context):
        return self.m[PKG + "FeaturesResponse"](features=["ETAG", "TRANSACTIONAL", "TTL"])

    def Ping(self, request, context):
        return self.m[PKG + "PingResponse"]()

    def Get(self, request, context):
        with self.lock:
            entry = self._live(request.key)
        if entry is None:
            return self.m[PKG + "GetResponse"]()
        return self.m[PKG + "GetResponse"](data=entry[0], etag=self.m[PKG + "Etag"](value=str(entry[1])))

    def Set(self, request, context):
        with self.lock:
            self._check(request, self._first_write(request), context)
            self._apply_set(request)
        return self.m[PKG + "SetResponse"]()

    def Delete(self, request, context):
        with self.lock:
            self._check(request, False, context)
            self.data.pop(request.key, None)
        return self.m[PKG + "DeleteResponse"]()

    def BulkGet(self, request, context):
        items = []
        with self.lock:
            for item in request.items:
                entry = self._live(item.key)
                if entry is None:
                    items.append(self.m[PKG + "BulkStateItem"](key=item.key))
                else:
                    items.append(
                        self.m[PKG + "BulkStateItem"](
                            key=item.key, data=entry[0], etag=self.m[PKG + "Etag"](value=str(entry[1]))
                        )
                    )
        return self.m[PKG + "BulkGetResponse"](items=items)

    def BulkSet(self, request, context):
        with self.lock:
            for item in request.items:
                self._check(item, self._first_write(item), context)
                self._apply_set(item)
        return self.m[PKG + "BulkSetResponse"]()

    def BulkDelete(self, request, context):
        with self.lock:
            for item in request.items:
                self._check(item, False, context)
                self.data.pop(item.key, None)
        return self.m[PKG + "BulkDeleteResponse"]()

    def Transact(self, request, context):
        with self.lock:
            saved = dict(self.data)
            try:
                for op in request.operations:
                    which = op.WhichOneof("request")
                    if which == "set":
                        self._check(op.set, self._first_write(op.set), context)
                        self._apply_set(op.set)
                    elif which == "delete":
                        self._check(op.delete, False, context)
                        self.data.pop(op.delete.key, None)
            except BaseException:
                # context.abort raises: nothing of the transaction stays.
                self.data = saved
                raise
        return self.m[PKG + "TransactionalStateResponse"]()


# Messages a subscriber holds unsettled, at most.
PREFETCH = 8


class Group:
    """One consumer group's messages on one topic."""

    def __init__(self):
        self.pending = collections.deque()
        self.cond = threading.Condition()


class PubSub:
    """A broker: each consumer group gets every message published after it
    first subscribed; members of a group share them; a message is
    redelivered until acked."""

    def __init__(self, m):
        self.m = m
        self.lock = threading.Lock()
        self.groups = {}  # topic -> {group: Group}
        self.consumer = {}  # instance -> consumerID

    def Init(self, request, context):
        props = request.metadata.properties
        with self.lock:
            self.consumer[instance(context)] = props.get("consumerID", "")
        return self.m[PKG + "PubSubInitResponse"]()

    def Features(self, request, context):
        return self.m[PKG + "FeaturesResponse"]()

    def Ping(self, request, context):
        return self.m[PKG + "PingResponse"]()

    def Publish(self, request, context):
        message = (bytes(request.data), dict(request.metadata), request.content_type)
        with self.lock:
            groups = list(self.groups.get(request.topic, {}).values())
        for group in groups:
            with group.cond:
                group.pending.append((str(uuid.uuid4()), message))
                group.cond.notify()
        return self.m[PKG + "PublishResponse"]()

    def BulkPublish(self, request, context):
        for entry in request.entries:
            self.Publish(
                self.m[PKG + "PublishRequest"](
                    data=entry.event, topic=request.topic, metadata=entry.metadata, content_type=entry.content_type
                ),
                context,
            )
        return self.m[PKG + "BulkPublishResponse"]()

    def Pause(self, request, context):
        return self.m[PKG + "PauseResponse"]()

    def Resume(self, request, context):
        return self.m[PKG + "ResumeResponse"]()

    def PullMessages(self, requests, context):
        first = next(requests, None)
        if first is None or not first.HasField("topic"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message names the topic")
        topic = first.topic.name
        with self.lock:
            # The group the sidecar names with the topic, else the one the
            # instance was initialised with.
            name = first.topic.metadata.get("consumerID") or self.consumer.get(instance(context), "")
            group = self.groups.setdefault(topic, {}).setdefault(name, Group())
        in_flight = {}
        done = threading.Event()

        def settle():
            try:
                for request in requests:
                    with group.cond:
                        message = in_flight.pop(request.ack_message_id, None)
                        if message is not None and request.HasField("ack_error"):
                            group.pending.appendleft((request.ack_message_id, message))
                        # A settled message makes room under the prefetch.
                        group.cond.notify_all()
            except grpc.RpcError:
                pass
            finally:
                done.set()
                with group.cond:
                    group.cond.notify_all()

        threading.Thread(target=settle, daemon=True).start()
        try:
            while context.is_active() and not done.is_set():
                with group.cond:
                    # At most PREFETCH unsettled per member, as a broker's
                    # prefetch: the others of the group get their share.
                    if not group.pending or len(in_flight) >= PREFETCH:
                        group.cond.wait(0.2)
                        continue
                    message_id, message = group.pending.popleft()
                    in_flight[message_id] = message
                data, metadata, content_type = message
                yield self.m[PKG + "PullMessagesResponse"](
                    data=data, topic_name=topic, metadata=metadata, content_type=content_type, id=message_id
                )
        finally:
            # What this member took and did not settle goes to the others.
            with group.cond:
                for message_id, message in in_flight.items():
                    group.pending.appendleft((message_id, message))
                in_flight.clear()
                group.cond.notify_all()


class Bindings:
    """An output binding that echoes and lists its operations, and an input
    binding that emits what the output binding's "emit" is given."""

    def __init__(self, m):
        self.m = m
        self.events = collections.deque()
        self.cond = threading.Condition()
        self.answers = []

    def OutputInit(self, request, context):
        return self.m[PKG + "OutputBindingInitResponse"]()

    def InputInit(self, request, context):
        return self.m[PKG + "InputBindingInitResponse"]()

    def Ping(self, request, context):
        return self.m[PKG + "PingResponse"]()

    def ListOperations(self, request, context):
        return self.m[PKG + "ListOperationsResponse"](operations=["create", "emit", "answers"])

    def Invoke(self, request, context):
        if request.operation == "emit":
            with self.cond:
                self.events.append((str(uuid.uuid4()), bytes(request.data), dict(request.metadata)))
                self.cond.notify_all()
            return self.m[PKG + "InvokeResponse"]()
        if request.operation == "answers":
            with self.cond:
                body = "\n".join(self.answers).encode()
            return self.m[PKG + "InvokeResponse"](data=body, content_type="text/plain")
        metadata = dict(request.metadata)
        metadata["operation"] = request.operation
        return self.m[PKG + "InvokeResponse"](data=bytes(request.data), metadata=metadata, content_type="application/octet-stream")

    def Read(self, requests, context):
        def answers():
            try:
                for request in requests:
                    state = "error" if request.HasField("response_error") else "ok"
                    with self.cond:
                        self.answers.append(f"{request.message_id}:{state}")
            except grpc.RpcError:
                pass

        threading.Thread(target=answers, daemon=True).start()
        while context.is_active():
            with self.cond:
                if not self.events:
                    self.cond.wait(0.2)
                    continue
                message_id, data, metadata = self.events.popleft()
            yield self.m[PKG + "ReadResponse"](data=data, metadata=metadata, message_id=message_id)


class Secrets:
    """Secrets from the Init metadata: `secret.<name>` = value."""

    def __init__(self, m):
        self.m = m
        self.secrets = {}

    def Init(self, request, context):
        found = {k[len("secret."):]: v for k, v in request.metadata.properties.items() if k.startswith("secret.")}
        self.secrets[instance(context)] = found
        return self.m[PKG + "SecretStoreInitResponse"]()

    def Features(self, request, context):
        return self.m[PKG + "FeaturesResponse"]()

    def Ping(self, request, context):
        return self.m[PKG + "PingResponse"]()

    def Get(self, request, context):
        secrets = self.secrets.get(instance(context), {})
        if request.key not in secrets:
            context.abort(grpc.StatusCode.NOT_FOUND, f"secret '{request.key}' not found")
        return self.m[PKG + "GetSecretResponse"](data={request.key: secrets[request.key]})

    def BulkGet(self, request, context):
        secrets = self.secrets.get(instance(context), {})
        data = {k: self.m[PKG + "SecretResponse"](secrets={k: v}) for k, v in secrets.items()}
        return self.m[PKG + "BulkGetSecretResponse"](data=data)


class Hello:
    """Layotto's pluggable hello: greets with the configured hello_string."""

    def __init__(self, m):
        self.m = m
        self.greeting = {}

    def Init(self, request, context):
        self.greeting[instance(context)] = request.hello_string or f"hello from {request.type}"
        return self.m["google.protobuf.Empty"]()

    def SayHello(self, request, context):
        greeting = self.greeting.get(instance(context), "hello")
        return self.m[HELLO_PKG + "HelloResponse"](hello_string=f"{greeting}, {request.name}" if request.name else greeting)


def handlers(m, service, methods):
    table = {}
    for name, (kind, fn, req, resp) in methods.items():
        build = {
            "unary": grpc.unary_unary_rpc_method_handler,
            "bidi": grpc.stream_stream_rpc_method_handler,
        }[kind]
        table[name] = build(fn, request_deserializer=m[req].FromString, response_serializer=m[resp].SerializeToString)
    return grpc.method_handlers_generic_handler(service, table)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--descriptors", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument(
        "--serve", default="state,pubsub,bindings,secrets,hello", help="comma-separated: state,pubsub,bindings,secrets,hello"
    )
    args = parser.parse_args()
    m = load_messages(args.descriptors)
    serve = set(args.serve.split(","))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=256))
    names = [reflection.SERVICE_NAME]
    P = PKG
    if "state" in serve:
        s = State(m)
        server.add_generic_rpc_handlers((
            handlers(m, P + "StateStore", {
                "Init": ("unary", s.Init, P + "InitRequest", P + "InitResponse"),
                "Features": ("unary", s.Features, P + "FeaturesRequest", P + "FeaturesResponse"),
                "Delete": ("unary", s.Delete, P + "DeleteRequest", P + "DeleteResponse"),
                "Get": ("unary", s.Get, P + "GetRequest", P + "GetResponse"),
                "Set": ("unary", s.Set, P + "SetRequest", P + "SetResponse"),
                "Ping": ("unary", s.Ping, P + "PingRequest", P + "PingResponse"),
                "BulkDelete": ("unary", s.BulkDelete, P + "BulkDeleteRequest", P + "BulkDeleteResponse"),
                "BulkGet": ("unary", s.BulkGet, P + "BulkGetRequest", P + "BulkGetResponse"),
                "BulkSet": ("unary", s.BulkSet, P + "BulkSetRequest", P + "BulkSetResponse"),
            }),
            handlers(m, P + "TransactionalStateStore", {
                "Transact": ("unary", s.Transact, P + "TransactionalStateRequest", P + "TransactionalStateResponse"),
            }),
        ))
        names += [P + "StateStore", P + "TransactionalStateStore"]
    if "pubsub" in serve:
        p = PubSub(m)
        server.add_generic_rpc_handlers((
            handlers(m, P + "PubSub", {
                "Init": ("unary", p.Init, P + "PubSubInitRequest", P + "PubSubInitResponse"),
                "Features": ("unary", p.Features, P + "FeaturesRequest", P + "FeaturesResponse"),
                "Publish": ("unary", p.Publish, P + "PublishRequest", P + "PublishResponse"),
                "BulkPublish": ("unary", p.BulkPublish, P + "BulkPublishRequest", P + "BulkPublishResponse"),
                "PullMessages": ("bidi", p.PullMessages, P + "PullMessagesRequest", P + "PullMessagesResponse"),
                "Pause": ("unary", p.Pause, P + "PauseRequest", P + "PauseResponse"),
                "Resume": ("unary", p.Resume, P + "ResumeRequest", P + "ResumeResponse"),
                "Ping": ("unary", p.Ping, P + "PingRequest", P + "PingResponse"),
            }),
        ))
        names.append(P + "PubSub")
    if "bindings" in serve:
        b = Bindings(m)
        server.add_generic_rpc_handlers((
            handlers(m, P + "OutputBinding", {
                "Init": ("unary", b.OutputInit, P + "OutputBindingInitRequest", P + "OutputBindingInitResponse"),
                "Invoke": ("unary", b.Invoke, P + "InvokeRequest", P + "InvokeResponse"),
                "ListOperations": ("unary", b.ListOperations, P + "ListOperationsRequest", P + "ListOperationsResponse"),
                "Ping": ("unary", b.Ping, P + "PingRequest", P + "PingResponse"),
            }),
            handlers(m, P + "InputBinding", {
                "Init": ("unary", b.InputInit, P + "InputBindingInitRequest", P + "InputBindingInitResponse"),
                "Read": ("bidi", b.Read, P + "ReadRequest", P + "ReadResponse"),
                "Ping": ("unary", b.Ping, P + "PingRequest", P + "PingResponse"),
            }),
        ))
        names += [P + "OutputBinding", P + "InputBinding"]
    if "secrets" in serve:
        s = Secrets(m)
        server.add_generic_rpc_handlers((
            handlers(m, P + "SecretStore", {
                "Init": ("unary", s.Init, P + "SecretStoreInitRequest", P + "SecretStoreInitResponse"),
                "Features": ("unary", s.Features, P + "FeaturesRequest", P + "FeaturesResponse"),
                "Get": ("unary", s.Get, P + "GetSecretRequest", P + "GetSecretResponse"),
                "BulkGet": ("unary", s.BulkGet, P + "BulkGetSecretRequest", P + "BulkGetSecretResponse"),
                "Ping": ("unary", s.Ping, P + "PingRequest", P + "PingResponse"),
            }),
        ))
        names.append(P + "SecretStore")
    if "hello" in serve:
        h = Hello(m)
        server.add_generic_rpc_handlers((
            handlers(m, HELLO_PKG + "Hello", {
                "Init": ("unary", h.Init, HELLO_PKG + "HelloConfig", "google.protobuf.Empty"),
                "SayHello": ("unary", h.SayHello, HELLO_PKG + "HelloRequest", HELLO_PKG + "HelloResponse"),
            }),
        ))
        names.append(HELLO_PKG + "Hello")
    reflection.enable_server_reflection(names, server)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server.add_insecure_port("unix:" + args.socket)
    server.start()
    print("serving", args.socket, flush=True)
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    server.stop(0)
    sys.exit(0)


if __name__ == "__main__":
    main()
