//! The output bindings' conformance suite, through Layotto's InvokeBinding
//! (and Dapr's gRPC and HTTP APIs for their own shapes), against every
//! binding type: `http` (a small HTTP server in the test), `redis` (the
//! machine's Redis, keys of this run's own), `localstorage` (a temporary
//! directory). Also Layotto's `bindings.http` config shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use layotto::proto::dapr::runtime::v1 as dapr;
use layotto::proto::dapr::runtime::v1::dapr_client::DaprClient;
use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use serde_json::Value;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{self, Service, backend_available, unique};

/// One request the HTTP server got.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP server recording requests; `.../missing` answers 404, anything
/// else 200 with `answer` and header `x-answer: yes`.
struct HttpServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: oneshot::Sender<()>,
}

impl HttpServer {
    async fn start() -> HttpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let record = record.clone();
            async move {
                record.lock().expect("lock").push(Seen {
                    method: method.to_string(),
                    path: uri.path().to_owned(),
                    headers: headers
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                        .collect(),
                    body: body.to_vec(),
                });
                if uri.path().ends_with("/missing") {
                    return (StatusCode::NOT_FOUND, "no such thing").into_response();
                }
                ([("x-answer", "yes")], "answer").into_response()
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        HttpServer {
            port,
            seen,
            _stop: stop,
        }
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a request arrived")
    }
}

async fn invoke(
    client: &mut RuntimeClient<Channel>,
    name: &str,
    operation: &str,
    data: &[u8],
    metadata: &[(&str, &str)],
) -> Result<pb::InvokeBindingResponse, tonic::Status> {
    client
        .invoke_binding(pb::InvokeBindingRequest {
            name: name.into(),
            operation: operation.into(),
            data: data.to_vec(),
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every binding refuses what it does not do, naming what it does.
async fn refuses_unknown_operations(client: &mut RuntimeClient<Channel>, name: &str, supported: &[&str]) {
    let e = invoke(client, name, "frobnicate", b"", &[])
        .await
        .expect_err("unknown operation");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    for op in supported {
        assert!(e.message().contains(op), "{op} named in: {}", e.message());
    }
    let e = invoke(client, name, "", b"", &[]).await.expect_err("no operation");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_binding_conformance() {
    let server = HttpServer::start().await;
    let (rt, mut client) = support::start_ready(&format!(
        "[bindings.web]\ntype = \"http\"\nmetadata = {{ url = \"http://127.0.0.1:{}/base\" }}\n",
        server.port
    ))
    .await;
    // post: path, headers (capitalised keys), body; the answer's status
    // and headers in the metadata.
    let answer = invoke(
        &mut client,
        "web",
        "post",
        b"{\"a\":1}",
        &[
            ("path", "/orders/1"),
            ("X-Tenant", "acme"),
            ("lowercase", "not a header"),
        ],
    )
    .await
    .expect("post");
    assert_eq!(answer.data, b"answer");
    assert_eq!(answer.metadata.get("statusCode").map(String::as_str), Some("200"));
    assert_eq!(answer.metadata.get("status").map(String::as_str), Some("200 OK"));
    assert_eq!(answer.metadata.get("X-Answer").map(String::as_str), Some("yes"));
    let seen = server.last();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/base/orders/1"));
    assert_eq!(seen.body, b"{\"a\":1}");
    assert_eq!(seen.headers.get("x-tenant").map(String::as_str), Some("acme"));
    assert!(!seen.headers.contains_key("lowercase"));
    assert_eq!(
        seen.headers.get("content-type").map(String::as_str),
        Some("application/json; charset=utf-8")
    );
    // Every verb; create is a POST; only post, put and patch send a body.
    for (operation, method) in [
        ("get", "GET"),
        ("head", "HEAD"),
        ("put", "PUT"),
        ("patch", "PATCH"),
        ("delete", "DELETE"),
        ("options", "OPTIONS"),
        ("create", "POST"),
    ] {
        invoke(&mut client, "web", operation, b"x", &[]).await.expect(operation);
        let seen = server.last();
        assert_eq!(seen.method, method);
        let with_body = matches!(method, "POST" | "PUT" | "PATCH");
        assert_eq!(seen.body.is_empty(), !with_body, "{operation}");
    }
    // A status outside 2xx is an error saying so; unless asked otherwise.
    let e = invoke(&mut client, "web", "get", b"", &[("path", "missing")])
        .await
        .expect_err("404");
    assert_eq!(e.code(), Code::Internal);
    assert!(e.message().contains("received status code 404"), "{}", e.message());
    let answer = invoke(
        &mut client,
        "web",
        "get",
        b"",
        &[("path", "missing"), ("errorIfNot2XX", "false")],
    )
    .await
    .expect("404 as data");
    assert_eq!(answer.metadata.get("statusCode").map(String::as_str), Some("404"));
    assert_eq!(answer.data, b"no such thing");
    refuses_unknown_operations(&mut client, "web", &["get", "post", "options", "trace"]).await;
    let unknown = invoke(&mut client, "nope", "get", b"", &[])
        .await
        .expect_err("unknown binding");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(unknown.message().contains("web"), "{}", unknown.message());

    // Dapr's HTTP API: data re-encoded as JSON, metadata.* headers, 200.
    let http = reqwest::Client::new();
    let base = format!("http://{}", rt.dapr_http_addr().expect("dapr http"));
    let response = http
        .post(format!("{base}/v1.0/bindings/web"))
        .json(&serde_json::json!({ "data": "hello", "operation": "post", "metadata": { "path": "p" } }))
        .send()
        .await
        .expect("HTTP binding call");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("metadata.statusCode")
            .and_then(|v| v.to_str().ok()),
        Some("200")
    );
    assert_eq!(response.text().await.expect("body"), "answer");
    assert_eq!(server.last().body, b"\"hello\"", "daprd passes data as JSON");
    let failed = http
        .post(format!("{base}/v1.0/bindings/web"))
        .json(&serde_json::json!({ "operation": "get", "metadata": { "path": "missing" } }))
        .send()
        .await
        .expect("404 through HTTP");
    assert_eq!(failed.status(), 500);
    let body: Value = failed.json().await.expect("json");
    assert_eq!(body["errorCode"], "ERR_INVOKE_OUTPUT_BINDING");
    let malformed = http
        .post(format!("{base}/v1.0/bindings/web"))
        .body("{not json")
        .send()
        .await
        .expect("bad body");
    assert_eq!(malformed.status(), 400);

    // Dapr's gRPC API: the answer's metadata also as headers.
    let mut dapr = DaprClient::connect(format!("http://{}", rt.grpc_addr()))
        .await
        .expect("connect");
    let response = dapr
        .invoke_binding(dapr::InvokeBindingRequest {
            name: "web".into(),
            data: b"x".to_vec(),
            metadata: HashMap::new(),
            operation: "get".into(),
        })
        .await
        .expect("Dapr InvokeBinding");
    assert_eq!(
        response
            .metadata()
            .get("metadata.statuscode")
            .and_then(|v| v.to_str().ok()),
        Some("200")
    );
    assert_eq!(response.into_inner().data, b"answer");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_binding_conformance() {
    if !backend_available(Service::Redis.name(), Service::Redis.addr()) {
        return;
    }
    let (rt, mut client) = support::start_ready(&format!(
        "[bindings.cache]\ntype = \"redis\"\nmetadata = {{ redisHost = \"{}\" }}\n",
        Service::Redis.addr()
    ))
    .await;
    let key = unique("binding");
    let counter = unique("counter");
    invoke(
        &mut client,
        "cache",
        "create",
        b"v1",
        &[("key", &key), ("ttlInSeconds", "100")],
    )
    .await
    .expect("create");
    let got = invoke(&mut client, "cache", "get", b"", &[("key", &key)])
        .await
        .expect("get");
    assert_eq!(got.data, b"v1");
    let mut redis = redis::Client::open(format!("redis://{}", Service::Redis.addr()))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut redis).await.expect("TTL");
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
    // get with delete takes it away.
    let taken = invoke(&mut client, "cache", "get", b"", &[("key", &key), ("delete", "true")])
        .await
        .expect("getdel");
    assert_eq!(taken.data, b"v1");
    let empty = invoke(&mut client, "cache", "get", b"", &[("key", &key)])
        .await
        .expect("get missing");
    assert!(empty.data.is_empty());
    invoke(&mut client, "cache", "create", b"v2", &[("key", &key)])
        .await
        .expect("create");
    invoke(&mut client, "cache", "delete", b"", &[("key", &key)])
        .await
        .expect("delete");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0);
    for _ in 0..3 {
        invoke(&mut client, "cache", "increment", b"", &[("key", &counter)])
            .await
            .expect("increment");
    }
    let count: i64 = redis::cmd("GET")
        .arg(&counter)
        .query_async(&mut redis)
        .await
        .expect("GET");
    assert_eq!(count, 3);
    let _: i64 = redis::cmd("DEL")
        .arg(&counter)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    let e = invoke(&mut client, "cache", "get", b"", &[]).await.expect_err("no key");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = invoke(
        &mut client,
        "cache",
        "create",
        b"x",
        &[("key", &key), ("ttlInSeconds", "soon")],
    )
    .await
    .expect_err("bad ttl");
    assert_eq!(e.code(), Code::InvalidArgument);
    refuses_unknown_operations(&mut client, "cache", &["create", "get", "delete", "increment"]).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localstorage_binding_conformance() {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let (rt, mut client) = support::start_ready(&format!(
        "[bindings.disk]\ntype = \"localstorage\"\nmetadata = {{ rootPath = \"{}\" }}\n",
        root.path().display()
    ))
    .await;
    let created = invoke(&mut client, "disk", "create", b"raw bytes!", &[("fileName", "a/b.txt")])
        .await
        .expect("create");
    let created: Value = serde_json::from_slice(&created.data).expect("json");
    assert_eq!(created["fileName"], "a/b.txt");
    assert_eq!(std::fs::read(root.path().join("a/b.txt")).expect("file"), b"raw bytes!");
    let got = invoke(&mut client, "disk", "get", b"", &[("fileName", "a/b.txt")])
        .await
        .expect("get");
    assert_eq!(got.data, b"raw bytes!");
    // Without a name, a new one.
    let named = invoke(&mut client, "disk", "create", b"x!", &[])
        .await
        .expect("create unnamed");
    let named: Value = serde_json::from_slice(&named.data).expect("json");
    assert!(!named["fileName"].as_str().unwrap_or_default().is_empty());
    let listed = invoke(&mut client, "disk", "list", b"", &[]).await.expect("list");
    let listed: Vec<String> = serde_json::from_slice(&listed.data).expect("json list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().any(|p| p.ends_with("a/b.txt")));
    invoke(&mut client, "disk", "delete", b"", &[("fileName", "a/b.txt")])
        .await
        .expect("delete");
    let gone = invoke(&mut client, "disk", "get", b"", &[("fileName", "a/b.txt")])
        .await
        .expect_err("deleted");
    assert_ne!(gone.code(), Code::Ok);
    // The root holds: .. and absolute paths outside are refused.
    let escape = format!("../{}/x", outside.path().file_name().expect("name").to_string_lossy());
    for name in [escape.as_str(), &outside.path().join("x").display().to_string()] {
        let e = invoke(&mut client, "disk", "create", b"x", &[("fileName", name)])
            .await
            .expect_err("outside the root");
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
    }
    assert!(!outside.path().join("x").exists());
    refuses_unknown_operations(&mut client, "disk", &["create", "get", "list", "delete"]).await;
    rt.shutdown().await;
}

/// Layotto's own shape of an http binding (configs/config.json declares
/// `bindings.http`): the config starts and InvokeBinding reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layotto_bindings_http_example_starts_and_reaches_the_server() {
    let server = HttpServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let json = format!(
        r#"{{"servers": [{{"default_log_path": "stdout", "routers": [], "listeners": [{{"name": "grpc", "address": "127.0.0.1:{grpc}", "bind_port": true,
          "filter_chains": [{{"filters": [{{"type": "grpc", "config": {{"server_name": "runtime", "grpc_config": {{
            "hellos": {{"quick_start_demo": {{"type": "helloworld", "hello": "greeting"}}}},
            "bindings": {{"http": {{"type": "http", "metadata": {{"url": "http://127.0.0.1:{port}/api"}}}}}}
          }}}}}}]}}]}},
          {{"name": "actuator", "address": "127.0.0.1:{actuator}", "filter_chains": [{{"filters": []}}]}}]}}]}}"#,
        grpc = support::free_port(),
        actuator = support::free_port(),
        port = server.port
    );
    let path = dir.path().join("config.json");
    std::fs::write(&path, json).expect("write");
    let config = layotto::config::load(&path).expect("Layotto's shape is valid");
    let mut config = config;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.grpc = any;
    config.server.actuator = any;
    let rt = layotto::Runtime::start(config).await.expect("starts");
    support::wait_ready(&rt).await;
    let mut client = support::client(&rt).await;
    invoke(&mut client, "http", "get", b"", &[("path", "ping")])
        .await
        .expect("reaches the server");
    assert_eq!(server.last().path, "/api/ping");
    rt.shutdown().await;
}

/// exec, query with parameters, close, on one SQL binding; `rows` reads
/// the query's answer as (id, name) pairs in the type's JSON shape.
async fn sql_binding(
    section: &str,
    table: &str,
    placeholder: fn(usize) -> String,
    rows: fn(&Value) -> Vec<(i64, String)>,
) {
    let (rt, mut client) = support::start_ready(section).await;
    let exec = |sql: String, params: &str| {
        let mut metadata = vec![("sql", sql)];
        if !params.is_empty() {
            metadata.push(("params", params.to_owned()));
        }
        metadata
    };
    let run = |client: &mut RuntimeClient<Channel>, op: &'static str, metadata: Vec<(&'static str, String)>| {
        let mut client = client.clone();
        async move {
            let metadata: Vec<(&str, &str)> = metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
            invoke(&mut client, "db", op, b"", &metadata).await
        }
    };
    run(
        &mut client,
        "exec",
        exec(
            format!("CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(40))"),
            "",
        ),
    )
    .await
    .expect("create table");
    let inserted = run(
        &mut client,
        "exec",
        exec(
            format!(
                "INSERT INTO {table} (id, name) VALUES ({}, {}), ({}, {})",
                placeholder(1),
                placeholder(2),
                placeholder(3),
                placeholder(4)
            ),
            "[1, \"one\", 2, \"two\"]",
        ),
    )
    .await
    .expect("insert");
    assert_eq!(inserted.metadata.get("rows-affected").map(String::as_str), Some("2"));
    for key in ["operation", "sql", "start-time", "end-time", "duration"] {
        assert!(inserted.metadata.contains_key(key), "{key} in {:?}", inserted.metadata);
    }
    let queried = run(
        &mut client,
        "query",
        exec(
            format!(
                "SELECT id, name FROM {table} WHERE id >= {} ORDER BY id",
                placeholder(1)
            ),
            "[1]",
        ),
    )
    .await
    .expect("query");
    let json: Value = serde_json::from_slice(&queried.data).expect("json rows");
    assert_eq!(rows(&json), [(1, "one".to_owned()), (2, "two".to_owned())], "{json}");
    let bad = run(&mut client, "query", exec("SELEC nonsense".into(), ""))
        .await
        .expect_err("bad sql");
    assert_eq!(bad.code(), Code::Internal);
    let bad_params = run(&mut client, "query", exec("SELECT 1".into(), "{not an array"))
        .await
        .expect_err("bad params");
    assert_eq!(bad_params.code(), Code::InvalidArgument);
    let no_sql = invoke(&mut client, "db", "exec", b"", &[]).await.expect_err("no sql");
    assert_eq!(no_sql.code(), Code::InvalidArgument);
    run(&mut client, "exec", exec(format!("DROP TABLE {table}"), ""))
        .await
        .expect("drop");
    refuses_unknown_operations(&mut client, "db", &["exec", "query", "close"]).await;
    invoke(&mut client, "db", "close", b"", &[]).await.expect("close");
    let closed = run(&mut client, "query", exec("SELECT 1".into(), ""))
        .await
        .expect_err("closed");
    assert!(closed.message().contains("component is closed"), "{}", closed.message());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_binding_conformance() {
    if !backend_available(Service::Postgres.name(), Service::Postgres.addr()) {
        return;
    }
    let table = unique("binding").replace('-', "_");
    sql_binding(
        "[bindings.db]\ntype = \"postgresql\"\nmetadata = { connectionString = \"postgres://postgres@127.0.0.1:5432/test\" }\n",
        &table,
        |n| format!("${n}"),
        |json| {
            json.as_array()
                .expect("array of rows")
                .iter()
                .map(|row| (row[0].as_i64().expect("id"), row[1].as_str().expect("name").to_owned()))
                .collect()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_binding_conformance() {
    if !backend_available(Service::Mariadb.name(), Service::Mariadb.addr()) {
        return;
    }
    let table = unique("binding").replace('-', "_");
    sql_binding(
        "[bindings.db]\ntype = \"mysql\"\nmetadata = { url = \"root:@tcp(127.0.0.1:3306)/test\" }\n",
        &table,
        |_| "?".to_owned(),
        |json| {
            json.as_array()
                .expect("array of rows")
                .iter()
                .map(|row| {
                    (
                        row["id"].as_i64().expect("id"),
                        row["name"].as_str().expect("name").to_owned(),
                    )
                })
                .collect()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_binding_conformance() {
    use lapin::options::{BasicGetOptions, QueueDeleteOptions};
    if !backend_available(Service::Rabbitmq.name(), Service::Rabbitmq.addr()) {
        return;
    }
    let queue = unique("binding-queue");
    let (rt, mut client) = support::start_ready(&format!(
        "[bindings.queue]\ntype = \"rabbitmq\"\nmetadata = {{ host = \"amqp://guest:guest@127.0.0.1:5672\", queueName = \"{queue}\", maxPriority = \"5\" }}\n"
    ))
    .await;
    invoke(
        &mut client,
        "queue",
        "create",
        b"first",
        &[
            ("ttlInSeconds", "60"),
            ("priority", "3"),
            ("contentType", "application/json"),
            ("x-trace", "t1"),
        ],
    )
    .await
    .expect("create");
    let connection = lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672", Default::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let message = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic_get")
        .expect("a message in the queue");
    assert_eq!(message.delivery.data, b"first");
    let properties = &message.delivery.properties;
    assert_eq!(properties.expiration().as_ref().map(|e| e.as_str()), Some("60000"));
    assert_eq!(*properties.priority(), Some(3));
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    let headers = properties.headers().as_ref().expect("headers");
    assert!(headers.inner().contains_key("x-trace"));
    let e = invoke(&mut client, "queue", "create", b"x", &[("priority", "high")])
        .await
        .expect_err("bad priority");
    assert_eq!(e.code(), Code::InvalidArgument);
    refuses_unknown_operations(&mut client, "queue", &["create"]).await;
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_binding_conformance() {
    if !backend_available(Service::Mosquitto.name(), Service::Mosquitto.addr()) {
        return;
    }
    let topic = unique("binding/topic");
    let other = unique("binding/other");
    let (rt, mut client) = support::start_ready(&format!(
        "[bindings.mq]\ntype = \"mqtt3\"\nmetadata = {{ url = \"tcp://127.0.0.1:1883\", topic = \"{topic}\", consumerID = \"{}\" }}\n",
        unique("c")
    ))
    .await;
    let mut options = rumqttc::MqttOptions::new(unique("watcher"), "127.0.0.1", 1883);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    let (watcher, mut events) = rumqttc::AsyncClient::new(options, 16);
    watcher
        .subscribe(&topic, rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    watcher
        .subscribe(&other, rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let received = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let record = received.clone();
    let (subscribed_tx, subscribed) = oneshot::channel::<()>();
    let mut subscribed_tx = Some(subscribed_tx);
    let mut subacks = 0;
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            match event {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    subacks += 1;
                    if subacks == 2
                        && let Some(tx) = subscribed_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    record.lock().expect("lock").push((p.topic.clone(), p.payload.to_vec()));
                }
                _ => {}
            }
        }
    });
    subscribed.await.expect("subscribed");
    invoke(&mut client, "mq", "create", b"to the default topic", &[])
        .await
        .expect("create");
    invoke(&mut client, "mq", "create", b"elsewhere", &[("topic", &other)])
        .await
        .expect("create on another topic");
    support::eventually("both messages", std::time::Duration::from_secs(10), || {
        let received = received.clone();
        async move { (received.lock().expect("lock").len() >= 2).then_some(()) }
    })
    .await;
    let got = received.lock().expect("lock").clone();
    assert!(
        got.contains(&(topic.clone(), b"to the default topic".to_vec())),
        "{got:?}"
    );
    assert!(got.contains(&(other.clone(), b"elsewhere".to_vec())), "{got:?}");
    refuses_unknown_operations(&mut client, "mq", &["create"]).await;
    rt.shutdown().await;
}

/// One POST an input app got: its path, body and headers.
type Post = (String, Vec<u8>, HashMap<String, String>);

/// An HTTP app for input bindings: OPTIONS on the routes it names is 200
/// (others 404); POSTs are recorded by path, and the first `fail_first`
/// POSTs of a body equal to `fail_body` answer 500.
#[derive(Clone)]
pub(crate) struct InputApp {
    pub(crate) port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
    probes: Arc<Mutex<Vec<String>>>,
}

impl InputApp {
    pub(crate) async fn start(routes: &[&str], fail_body: &'static [u8], fail_first: usize) -> InputApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = InputApp {
            port,
            posts: Arc::default(),
            probes: Arc::default(),
        };
        let routes: Vec<String> = routes.iter().map(|r| format!("/{r}")).collect();
        let failures = Arc::new(Mutex::new(0usize));
        let state = app.clone();
        let router = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (state, routes, failures) = (state.clone(), routes.clone(), failures.clone());
            async move {
                let path = uri.path().to_owned();
                if method == Method::OPTIONS {
                    state.probes.lock().expect("lock").push(path.clone());
                    return if routes.contains(&path) {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    };
                }
                if body.as_ref() == fail_body {
                    let mut failed = failures.lock().expect("lock");
                    if *failed < fail_first {
                        *failed += 1;
                        state
                            .posts
                            .lock()
                            .expect("lock")
                            .push((path, body.to_vec(), HashMap::new()));
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                }
                let headers = headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect();
                state.posts.lock().expect("lock").push((path, body.to_vec(), headers));
                StatusCode::OK
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        app
    }

    pub(crate) fn posts_to(&self, path: &str) -> Vec<(Vec<u8>, HashMap<String, String>)> {
        self.posts
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, b, h)| (b.clone(), h.clone()))
            .collect()
    }
}

pub(crate) fn http_app_section(port: u16) -> String {
    format!(
        "[app]\napp_id = \"{}\"\nport = {port}\nprotocol = \"http\"\n",
        unique("input-app")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_input_binding_triggers_an_http_app_on_schedule() {
    let app = InputApp::start(&["tick"], b"", 0).await;
    let rt = support::start(&format!(
        "{}[bindings.tick]\ntype = \"cron\"\nmetadata = {{ schedule = \"@every 1s\" }}\n[bindings.web]\ntype = \"http\"\nmetadata = {{ url = \"http://127.0.0.1:1\" }}\n",
        http_app_section(app.port)
    ))
    .await;
    let started = std::time::Instant::now();
    support::eventually("three ticks", std::time::Duration::from_secs(10), || {
        let app = app.clone();
        async move { (app.posts_to("/tick").len() >= 3).then_some(()) }
    })
    .await;
    println!("three ticks in {:?}", started.elapsed());
    let (_, headers) = app.posts_to("/tick").remove(0);
    assert!(headers.contains_key("readtimeutc"), "{headers:?}");
    assert_eq!(headers.get("timezone").map(String::as_str), Some("UTC"));
    // Only input bindings are probed: the http output binding is not.
    assert_eq!(app.probes.lock().expect("lock").clone(), ["/tick"]);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_does_not_take_a_binding_gets_nothing() {
    let app = InputApp::start(&[], b"", 0).await;
    let rt = support::start(&format!(
        "{}[bindings.tick]\ntype = \"cron\"\nmetadata = {{ schedule = \"@every 1s\" }}\n",
        http_app_section(app.port)
    ))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app.probes.lock().expect("lock").clone(), ["/tick"], "probed once");
    assert!(app.posts_to("/tick").is_empty());
    rt.shutdown().await;
}

/// A Dapr gRPC app taking the input bindings it lists.
#[derive(Clone, Default)]
struct GrpcInputApp {
    events: Arc<Mutex<Vec<dapr::BindingEventRequest>>>,
}

#[tonic::async_trait]
impl dapr::app_callback_server::AppCallback for GrpcInputApp {
    async fn on_invoke(
        &self,
        _: tonic::Request<layotto::proto::dapr::common::v1::InvokeRequest>,
    ) -> Result<tonic::Response<layotto::proto::dapr::common::v1::InvokeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no methods"))
    }

    async fn list_topic_subscriptions(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<dapr::ListTopicSubscriptionsResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }

    async fn on_topic_event(
        &self,
        _: tonic::Request<dapr::TopicEventRequest>,
    ) -> Result<tonic::Response<dapr::TopicEventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no topics"))
    }

    async fn list_input_bindings(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<dapr::ListInputBindingsResponse>, tonic::Status> {
        Ok(tonic::Response::new(dapr::ListInputBindingsResponse {
            bindings: vec!["tick".into()],
        }))
    }

    async fn on_binding_event(
        &self,
        request: tonic::Request<dapr::BindingEventRequest>,
    ) -> Result<tonic::Response<dapr::BindingEventResponse>, tonic::Status> {
        self.events.lock().expect("lock").push(request.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_input_binding_triggers_a_grpc_app() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = GrpcInputApp::default();
    let service = app.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(dapr::app_callback_server::AppCallbackServer::new(service))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    let rt = support::start(&format!(
        "[app]\napp_id = \"{}\"\nport = {port}\nprotocol = \"grpc\"\n[bindings.tick]\ntype = \"cron\"\nmetadata = {{ schedule = \"* * * * * *\" }}\n[bindings.untaken]\ntype = \"cron\"\nmetadata = {{ schedule = \"@every 1s\" }}\n",
        unique("grpc-input")
    ))
    .await;
    support::eventually("two ticks over gRPC", std::time::Duration::from_secs(10), || {
        let app = app.clone();
        async move { (app.events.lock().expect("lock").len() >= 2).then_some(()) }
    })
    .await;
    let events = app.events.lock().expect("lock").clone();
    assert!(
        events.iter().all(|e| e.name == "tick"),
        "only the listed binding: {events:?}"
    );
    assert!(events[0].metadata.contains_key("readTimeUTC"));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_input_binding_delivers_once_and_redelivers_while_the_app_fails() {
    use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
    if !backend_available(Service::Rabbitmq.name(), Service::Rabbitmq.addr()) {
        return;
    }
    let queue = unique("input-queue");
    let app = InputApp::start(&["orders"], b"retry-me", 3).await;
    let rt = support::start(&format!(
        "{}[bindings.orders]\ntype = \"rabbitmq\"\nmetadata = {{ host = \"amqp://guest:guest@127.0.0.1:5672\", queueName = \"{queue}\", prefetchCount = \"10\" }}\n",
        http_app_section(app.port)
    ))
    .await;
    support::wait_ready(&rt).await;
    let connection = lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672", Default::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let publish = |body: Vec<u8>| {
        let channel = channel.clone();
        let queue = queue.clone();
        async move {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    lapin::BasicProperties::default(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
        }
    };
    for i in 0..50 {
        publish(format!("order-{i}").into_bytes()).await;
    }
    support::eventually("50 orders", std::time::Duration::from_secs(20), || {
        let app = app.clone();
        async move { (app.posts_to("/orders").len() >= 50).then_some(()) }
    })
    .await;
    // A little longer: nothing arrives twice.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut bodies: Vec<Vec<u8>> = app.posts_to("/orders").into_iter().map(|(b, _)| b).collect();
    assert_eq!(bodies.len(), 50, "each delivered exactly once");
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 50);
    // The app fails one message three times: it comes again until taken.
    publish(b"retry-me".to_vec()).await;
    support::eventually("the failing message taken", std::time::Duration::from_secs(30), || {
        let app = app.clone();
        async move { (app.posts_to("/orders").iter().filter(|(b, _)| b == b"retry-me").count() >= 4).then_some(()) }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.posts_to("/orders").iter().filter(|(b, _)| b == b"retry-me").count(),
        4,
        "three failures, then accepted once"
    );
    rt.shutdown().await;
    // Acknowledged: nothing is left in the queue.
    let state = channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("queue");
    assert_eq!(state.message_count(), 0);
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_and_postgresql_input_bindings_reach_the_app() {
    if !backend_available(Service::Mosquitto.name(), Service::Mosquitto.addr())
        || !backend_available(Service::Postgres.name(), Service::Postgres.addr())
    {
        return;
    }
    let topic = unique("input/topic");
    let channel_name = unique("input_channel").replace('-', "_");
    let app = InputApp::start(&["mq", "pg"], b"", 0).await;
    let rt = support::start(&format!(
        "{}[bindings.mq]\ntype = \"mqtt\"\nmetadata = {{ url = \"tcp://127.0.0.1:1883\", topic = \"{topic}\", consumerID = \"{}\" }}\n[bindings.pg]\ntype = \"postgresql\"\nmetadata = {{ connectionString = \"postgres://postgres@127.0.0.1:5432/test\", channel = \"{channel_name}\" }}\n",
        http_app_section(app.port),
        unique("mq")
    ))
    .await;
    support::wait_ready(&rt).await;
    // The consumers subscribe after the probe; publish until one arrives.
    let client = support::client(&rt).await;
    support::eventually("an MQTT event", std::time::Duration::from_secs(15), || {
        let (app, mut client) = (app.clone(), client.clone());
        async move {
            let _ = invoke(&mut client, "mq", "create", b"from mqtt", &[]).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            (!app.posts_to("/mq").is_empty()).then_some(())
        }
    })
    .await;
    let (body, headers) = app.posts_to("/mq").remove(0);
    assert_eq!(body, b"from mqtt");
    assert_eq!(headers.get("topic"), Some(&topic));
    let sql = format!("NOTIFY {channel_name}, 'from postgres'");
    support::eventually("a NOTIFY event", std::time::Duration::from_secs(15), || {
        let (app, mut client, sql) = (app.clone(), client.clone(), sql.clone());
        async move {
            let _ = invoke(&mut client, "pg", "exec", b"", &[("sql", &sql)]).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            (!app.posts_to("/pg").is_empty()).then_some(())
        }
    })
    .await;
    let (body, headers) = app.posts_to("/pg").remove(0);
    assert_eq!(body, b"from postgres");
    assert_eq!(headers.get("channel"), Some(&channel_name));
    rt.shutdown().await;
}
