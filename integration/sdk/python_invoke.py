"""Service invocation through the Dapr Python SDK's `invoke_method`, as an
app behind its sidecar calls two other apps behind theirs: an HTTP app
(ORDERS_APP, which answers with what it received, as JSON) and a gRPC app
(STOCK_APP, whose AppCallback.OnInvoke does the same). The SDK invokes
over HTTP (`/v1.0/invoke`) or gRPC (InvokeService) as
DAPR_API_METHOD_INVOCATION_PROTOCOL says. Prints "all checks passed"."""

import json
import os
import sys
import warnings

import grpc
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprHttpError

warnings.simplefilter('ignore', DeprecationWarning)

orders = os.environ['ORDERS_APP']
stock = os.environ['STOCK_APP']
caller = os.environ['CALLER_APP']
protocol = os.environ.get('DAPR_API_METHOD_INVOCATION_PROTOCOL', 'http').lower()


def check(ok, what, got=None):
    if not ok:
        print(f'FAILED ({protocol}): {what}; got {got!r}')
        sys.exit(1)


with DaprClient() as d:
    # The HTTP app: verb, path, query string, body, content type and
    # headers arrive as sent; the answer's content type comes back.
    r = d.invoke_method(
        orders,
        'items/7',
        data='{"qty":1}',
        content_type='application/json',
        metadata=(('x-tenant', 'acme'),),
        http_verb='PUT',
        http_querystring=(('a', '1'), ('b', '2')),
    )
    echo = json.loads(r.data)
    check(echo['name'] == 'orders', 'the orders app answers', echo)
    check(echo['verb'] == 'PUT', 'verb', echo['verb'])
    check(echo['path'] == '/items/7', 'path', echo['path'])
    check(echo['query'] == 'a=1&b=2', 'query string', echo['query'])
    check(echo['body'] == '{"qty":1}', 'body', echo['body'])
    headers = echo['headers']
    check(headers.get('content-type') == 'application/json', 'content type at the app', headers)
    check(headers.get('x-tenant') == 'acme', 'a header of the caller', headers)
    check(headers.get('dapr-caller-app-id') == caller, 'dapr-caller-app-id', headers)
    check(headers.get('dapr-callee-app-id') == orders, 'dapr-callee-app-id', headers)
    check((r.content_type or '').startswith('application/json'), 'answer content type', r.content_type)

    # The app's error comes back as the app sent it.
    try:
        d.invoke_method(orders, 'teapot', http_verb='GET')
        check(False, 'teapot raises')
    except DaprHttpError as e:
        check(e.status_code == 418, 'HTTP status of the app', e.status_code)
    except grpc.RpcError as e:
        # daprd's mapping: an HTTP status with no gRPC equivalent is UNKNOWN,
        # with the app's body as the message.
        check(e.code() == grpc.StatusCode.UNKNOWN, 'gRPC code of a 418', e.code())
        check('short and stout' in (e.details() or ''), 'the app body in the message', e.details())

    # The gRPC app, through its OnInvoke.
    r = d.invoke_method(
        stock,
        'reserve',
        data=b'5 units',
        content_type='text/plain',
        http_verb='POST',
        http_querystring=(('sku', '42'),),
    )
    echo = json.loads(r.data)
    check(echo['name'] == 'stock', 'the stock app answers', echo)
    check(echo['method'] == 'reserve', 'method', echo['method'])
    check(echo['data'] == '5 units', 'data', echo['data'])
    check(echo['content_type'] == 'text/plain', 'content type', echo['content_type'])
    check(echo['verb'] == 'POST', 'verb', echo['verb'])
    check(echo['querystring'] == 'sku=42', 'query string', echo['querystring'])
    check(echo['metadata'].get('dapr-caller-app-id') == caller, 'caller id at the gRPC app', echo['metadata'])

    # An app id nobody serves.
    try:
        d.invoke_method('nobody-' + caller, 'x', http_verb='GET')
        check(False, 'an unknown app id raises')
    except DaprHttpError as e:
        check(e.status_code in (404, 500), 'HTTP status of an unknown app id', e.status_code)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, 'gRPC code of an unknown app id', e.code())

print('all checks passed')
