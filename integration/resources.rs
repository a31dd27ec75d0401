//! Bounded resources: connections that carry nothing are closed, calls
//! beyond the in-flight limit are refused, and neither floods of calls nor
//! subscription streams opened and closed leave memory behind.

use std::net::SocketAddr;
use std::time::Duration;

use layotto::proto::runtime::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support;

/// Reads until the server closes the connection (EOF or an error); `None`
/// if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let deadline = started + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn connect_many(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(TcpStream::connect(addr).await.expect("connect"));
    }
    streams
}

/// Connections that send nothing were once held forever (about 15 KB and
/// a descriptor each, until health checks timed out past the descriptor
/// limit). Now each listener closes them after `handshake_timeout`, and
/// gRPC health answers while they are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_handshake_timeout() {
    let rt = support::start(
        r#"
        [server]
        handshake_timeout = "2s"
        idle_timeout = "1h"
        "#,
    )
    .await;
    support::wait_ready(&rt).await;
    let http = rt.dapr_http_addr().expect("Dapr HTTP listens");
    let opened = Instant::now();
    let mut silent = connect_many(rt.grpc_addr(), 1500).await;
    silent.extend(connect_many(rt.actuator_addr(), 100).await);
    silent.extend(connect_many(http, 100).await);

    // While they are open, health checks and calls answer.
    let mut health = HealthClient::new(support::channel(&rt).await);
    let serving = health
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(serving.status, 1, "{serving:?}");
    let (status, _) = support::http_get(&format!("http://{}/actuator/health/liveness", rt.actuator_addr())).await;
    assert_eq!(status, 200);

    for (i, stream) in silent.iter_mut().enumerate() {
        let left = Duration::from_secs(15).saturating_sub(opened.elapsed());
        assert!(
            closed_within(stream, left).await.is_some(),
            "silent connection {i} still open {:?} after it was made",
            opened.elapsed()
        );
    }
    // Not before the timeout: the last connection was made after the
    // first, so the first one's close is the one to time.
    assert!(opened.elapsed() >= Duration::from_secs(2), "{:?}", opened.elapsed());

    // The listeners still serve new connections.
    let mut health = HealthClient::new(support::channel(&rt).await);
    health
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health answers after");
    rt.shutdown().await;
}

/// A connection that carried a request and then nothing is closed after
/// `idle_timeout`; one holding a quiet stream open is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_open_streams_keep_theirs() {
    let rt = support::start(
        r#"
        [server]
        handshake_timeout = "10s"
        idle_timeout = "1s"
        [pub_subs.ps]
        type = "in-memory"
        "#,
    )
    .await;
    support::wait_ready(&rt).await;

    // HTTP/1: one request, then keep-alive with nothing more.
    let mut http = TcpStream::connect(rt.actuator_addr()).await.expect("connect");
    http.write_all(b"GET /actuator/health/liveness HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("request");
    let closed = closed_within(&mut http, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "an idle HTTP connection stays open");

    // HTTP/2: the preface, then nothing.
    let mut h2 = TcpStream::connect(rt.grpc_addr()).await.expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let closed = closed_within(&mut h2, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "an idle HTTP/2 connection stays open");

    // A subscription stream with no events for three idle timeouts keeps
    // its connection, and gets the event published after.
    let topic = support::unique("quiet");
    let mut client = support::client(&rt).await;
    let (requests, requests_rx) = tokio::sync::mpsc::channel(4);
    requests.send(initial_request("ps", &topic)).await.expect("send");
    let mut events = client
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await
        .expect("subscribe")
        .into_inner();
    events.message().await.expect("stream").expect("initial response");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut publisher = support::client(&rt).await;
    let event = publish_and_receive(&mut publisher, &topic, &mut events).await;
    assert!(
        matches!(
            event.subscribe_topic_events_response_type,
            Some(pb::subscribe_topic_events_response::SubscribeTopicEventsResponseType::EventMessage(_))
        ),
        "{event:?}"
    );
    drop(requests);
    rt.shutdown().await;
}

/// Publishes `{}` to `topic` on the pub/sub `ps` and returns the next
/// message of `events`, a subscription stream, within 10 s.
async fn publish_and_receive(
    client: &mut pb::runtime_client::RuntimeClient<tonic::transport::Channel>,
    topic: &str,
    events: &mut tonic::Streaming<pb::SubscribeTopicEventsResponse>,
) -> pb::SubscribeTopicEventsResponse {
    client
        .publish_event(pb::PublishEventRequest {
            pubsub_name: "ps".into(),
            topic: topic.to_owned(),
            data: b"{}".to_vec(),
            data_content_type: "application/json".into(),
            metadata: Default::default(),
        })
        .await
        .expect("published");
    tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("an event")
}

pub fn initial_request(pubsub: &str, topic: &str) -> pb::SubscribeTopicEventsRequest {
    pb::SubscribeTopicEventsRequest {
        subscribe_topic_events_request_type: Some(
            pb::subscribe_topic_events_request::SubscribeTopicEventsRequestType::InitialRequest(
                pb::SubscribeTopicEventsRequestInitial {
                    pubsub_name: pubsub.into(),
                    topic: topic.into(),
                    ..Default::default()
                },
            ),
        ),
    }
}

/// The `layotto` binary (or `LAYOTTO_BIN`, to measure a release build) on
/// free ports, for memory figures of its own process.
struct Measured {
    child: tokio::process::Child,
    grpc: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Measured {
    async fn start(config: &str, envs: &[(&str, &str)]) -> Measured {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("measured.toml");
        std::fs::write(&path, config).expect("write config");
        let (grpc, actuator) = (support::free_port(), support::free_port());
        let bin = std::env::var("LAYOTTO_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_layotto").to_owned());
        let child = tokio::process::Command::new(bin)
            .args(["start", "-c"])
            .arg(&path)
            .env("LAYOTTO__SERVER__GRPC", format!("127.0.0.1:{grpc}"))
            .env("LAYOTTO__SERVER__ACTUATOR", format!("127.0.0.1:{actuator}"))
            .env("LAYOTTO__SERVER__DAPR_HTTP", "disabled")
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("layotto starts");
        let url = format!("http://127.0.0.1:{actuator}/actuator/health/readiness");
        support::eventually("the sidecar to be ready", Duration::from_secs(60), || async {
            matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200).then_some(())
        })
        .await;
        Measured {
            child,
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
            _dir: dir,
        }
    }

    /// A `/proc/<pid>/status` figure in KiB: `VmRSS` now, `VmHWM` the peak.
    fn status_kib(&self, field: &str) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a figure in kB")
    }

    fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS") as f64 / 1024.0
    }

    fn peak_mib(&self) -> f64 {
        self.status_kib("VmHWM") as f64 / 1024.0
    }

    /// `n` clients, each on a connection of its own.
    async fn clients(&self, n: usize) -> Vec<pb::runtime_client::RuntimeClient<tonic::transport::Channel>> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(support::client_at(self.grpc).await);
        }
        clients
    }
}

/// The largest RSS a release build may reach under a flood of calls, when
/// `LAYOTTO_BIN` names one (see docs/reliability.md): 64 MB.
const FLOOD_RSS_MIB: f64 = 64e6 / 1048576.0;
/// The same for the debug build `cargo test` runs: its code and futures
/// are several times larger; before the fixes it reached 145 MiB.
const DEBUG_FLOOD_RSS_MIB: f64 = 140.0;

/// The issue's targets are for the binary users run: they are asserted
/// when `LAYOTTO_BIN` names a release build, looser ones otherwise.
fn release_measured() -> bool {
    std::env::var("LAYOTTO_BIN").is_ok_and(|b| b.contains("release"))
}

const STATE_STORE: &str = r#"
[state.mem]
type = "in-memory"
"#;

/// Sends `n` GetState calls at once over `clients`; answers (served,
/// refused with RESOURCE_EXHAUSTED), failing on any other error.
async fn flood(clients: &[pb::runtime_client::RuntimeClient<tonic::transport::Channel>], n: usize) -> (usize, usize) {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                client
                    .get_state(pb::GetStateRequest {
                        store_name: "mem".into(),
                        key: format!("k{}", i % 100),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for call in futures::future::join_all(calls).await {
        match call.expect("task") {
            Ok(_) => served += 1,
            Err(e) if e.code() == tonic::Code::ResourceExhausted => refused += 1,
            Err(e) => panic!("a call failed otherwise: {e:?}"),
        }
    }
    (served, refused)
}

/// Median latency of `n` calls one after another.
async fn median_latency(client: &mut pb::runtime_client::RuntimeClient<tonic::transport::Channel>) -> Duration {
    let mut took = Vec::with_capacity(200);
    for i in 0..200 {
        let started = Instant::now();
        client
            .get_state(pb::GetStateRequest {
                store_name: "mem".into(),
                key: format!("k{i}"),
                ..Default::default()
            })
            .await
            .expect("served");
        took.push(started.elapsed());
    }
    took.sort();
    took[took.len() / 2]
}

/// 40,000 calls in flight against a store that answers at once once took
/// RSS to 313 MB and latency to 3.3 s: now calls beyond
/// `max_calls_in_flight` are refused at once, memory stays bounded, and
/// latency is back to normal when the flood ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_calls_keep_memory_bounded_and_latency_recovers() {
    let sidecar = Measured::start(STATE_STORE, &[]).await;
    let clients = sidecar.clients(40).await;
    let mut probe = support::client_at(sidecar.grpc).await;
    let before = median_latency(&mut probe).await;
    let start_rss = sidecar.rss_mib();

    let (served, refused) = flood(&clients, 2_000).await;
    let after_2k = (sidecar.rss_mib(), sidecar.peak_mib());
    assert_eq!(served + refused, 2_000);
    let (served, refused) = flood(&clients, 40_000).await;
    let after_40k = (sidecar.rss_mib(), sidecar.peak_mib());
    assert_eq!(served + refused, 40_000);
    // 40 connections of `max_streams_per_connection` (200) streams: 8,000
    // at once on the server, beyond `max_calls_in_flight` (4096), when the
    // sidecar is fast enough to be flooded rather than fed; the debug build
    // on a loaded machine may keep up. The refusal itself is asserted by
    // `hostile::calls_beyond_the_process_limit_are_refused_at_once`.
    if release_measured() {
        assert!(refused > 0, "40,000 at once and none refused");
    }
    let after = median_latency(&mut probe).await;
    eprintln!(
        "flood: start {start_rss:.1} MiB; 2k: rss {:.1} peak {:.1}; 40k: rss {:.1} peak {:.1} MiB, \
         {served} served, {refused} refused; median latency before {before:?}, after {after:?}",
        after_2k.0, after_2k.1, after_40k.0, after_40k.1
    );
    let bound = if release_measured() {
        FLOOD_RSS_MIB
    } else {
        DEBUG_FLOOD_RSS_MIB
    };
    assert!(after_40k.1 < bound, "peak RSS {:.1} MiB", after_40k.1);
    // Back to normal: within a few times the quiet figure (the machine is
    // shared, so not to the microsecond).
    assert!(
        after < before * 3 + Duration::from_millis(2),
        "median latency {after:?} after the flood, {before:?} before"
    );
}

/// Opens `n` SubscribeTopicEvents streams on `topics` (one each), waits
/// for each initial response, then closes them all.
async fn open_and_close_streams(
    clients: &[pb::runtime_client::RuntimeClient<tonic::transport::Channel>],
    pubsub: &str,
    topics: &[String],
) {
    let opened: Vec<_> = topics
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            let mut client = clients[i % clients.len()].clone();
            let request = initial_request(pubsub, topic);
            tokio::spawn(async move {
                let (requests, requests_rx) = tokio::sync::mpsc::channel(1);
                requests.send(request).await.expect("send");
                let mut events = client
                    .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
                    .await
                    .expect("subscribed")
                    .into_inner();
                events.message().await.expect("stream").expect("initial response");
                (requests, events)
            })
        })
        .collect();
    let streams: Vec<_> = futures::future::join_all(opened)
        .await
        .into_iter()
        .map(|s| s.expect("task"))
        .collect();
    drop(streams);
}

/// Waits until the sidecar let go of every stream of a round: the first
/// and last topics can be subscribed again.
async fn released(
    clients: &[pb::runtime_client::RuntimeClient<tonic::transport::Channel>],
    pubsub: &str,
    topics: &[String],
) {
    for topic in [&topics[0], &topics[topics.len() - 1]] {
        support::eventually("the streams to be released", Duration::from_secs(30), || async {
            let (requests, requests_rx) = tokio::sync::mpsc::channel(1);
            requests.send(initial_request(pubsub, topic)).await.ok()?;
            let mut client = clients[0].clone();
            let mut events = client
                .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
                .await
                .ok()?
                .into_inner();
            events.message().await.ok()?.map(drop)
        })
        .await;
    }
}

/// RSS of ten rounds of streams, in MiB.
struct Rounds {
    /// Before the first round, then after each.
    after_each: Vec<f64>,
    /// After the last round, once the sidecar has had up to `SETTLE` to
    /// hand back what the rounds freed.
    settled: f64,
}

/// How long the sidecar may take to give freed memory back: jemalloc's
/// background thread purges it over its 10 s decay time.
const SETTLE: Duration = Duration::from_secs(40);

/// Ten rounds of `streams` streams opened and closed on `pubsub`, fresh
/// topics and 50 fresh connections each round (200 streams each, inside
/// `max_streams_per_connection`) (closed at its end, as
/// clients that come and go: a connection keeps its HTTP/2 stream tables
/// at their peak size while it stays open).
async fn stream_rounds(sidecar: &Measured, pubsub: &str, streams: usize) -> Rounds {
    let prefix = support::unique("rounds");
    let start = sidecar.rss_mib();
    let mut after_each = vec![start];
    for round in 0..10 {
        let clients = sidecar.clients(50).await;
        let topics: Vec<String> = (0..streams).map(|i| format!("{prefix}-{round}-{i}")).collect();
        open_and_close_streams(&clients, pubsub, &topics).await;
        released(&clients, pubsub, &topics).await;
        drop(clients);
        after_each.push(sidecar.rss_mib());
    }
    // Until it is level (no change over 2 s) within 10 MiB of the start,
    // or the time is up: the purge is gradual, and its end is the figure.
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut readings = vec![sidecar.rss_mib()];
    loop {
        let n = readings.len();
        let level = n > 4 && (readings[n - 5] - readings[n - 1]).abs() < 0.5;
        if (level && readings[n - 1] - start < 10.0) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        readings.push(sidecar.rss_mib());
    }
    let settled = readings[readings.len() - 1];
    Rounds { after_each, settled }
}

impl Rounds {
    /// What the rounds leave behind once the sidecar has settled: a leak
    /// keeps it (252 MiB after the first round and 365 MiB after the tenth,
    /// before the fixes). A release build must settle within 10 MB of where
    /// it started; the debug build, whose futures and buffers are larger,
    /// within 20. (RSS right after a round says little: jemalloc purges
    /// what was freed over the following seconds.)
    fn assert_bounded(&self) {
        let first = self.after_each[0];
        let bound = if release_measured() { 10.0 } else { 20.0 };
        assert!(
            self.settled - first < bound,
            "RSS settled at {:.1} MiB, from {first:.1}: {:.1?}",
            self.settled,
            self.after_each
        );
    }
}

impl std::fmt::Display for Rounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS before and after each round {:.1?} MiB, settled {:.1}",
            self.after_each, self.settled
        )
    }
}

/// Raised above the 10,000 streams a round holds at once: each stream is a
/// call in flight.
const STREAMS_CONFIG: &str = r#"
[server]
max_calls_in_flight = 12000
[pub_subs.ps]
type = "in-memory"
"#;

/// 10,000 streams opened and closed once raised RSS from 15 MB to 203 MB
/// for good (304 MB after 8 rounds): now ten rounds leave it within 10 MB
/// of where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_and_closed_give_their_memory_back() {
    let sidecar = Measured::start(STREAMS_CONFIG, &[]).await;
    let rounds = stream_rounds(&sidecar, "ps", 10_000).await;
    eprintln!("in-memory streams: {rounds}, peak {:.1}", sidecar.peak_mib());
    rounds.assert_bounded();
}

/// Clients connected to the Redis at `addr`.
async fn redis_clients(addr: &str) -> usize {
    let client = redis::Client::open(format!("redis://{addr}")).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis connects");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .expect("client list");
    // Less this connection.
    list.lines().count().saturating_sub(1)
}

/// Each Redis subscription stream once held a connection of its own, and
/// an idle one was "lost" every 0.7 s (its blocking read outlived the
/// client's 0.5 s reply timeout, which restarted the component). Now the
/// streams share one reader connection, an idle one stays put, and closing
/// them gives the connections back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_share_a_connection_stay_put_when_idle_and_let_go() {
    let Some(redis) = support::PrivateRedis::start() else {
        return;
    };
    let rt = support::start(&format!(
        "[pub_subs.ps]\ntype = \"redis\"\nmetadata = {{ redisHost = \"{}\" }}\n",
        redis.addr()
    ))
    .await;
    support::wait_ready(&rt).await;
    let before = redis_clients(&redis.addr()).await;
    let mut client = support::client(&rt).await;
    let prefix = support::unique("shared");
    let mut streams = Vec::new();
    for i in 0..50 {
        let (requests, requests_rx) = tokio::sync::mpsc::channel(4);
        requests
            .send(initial_request("ps", &format!("{prefix}-{i}")))
            .await
            .expect("send");
        let mut events = client
            .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
            .await
            .expect("subscribed")
            .into_inner();
        events.message().await.expect("stream").expect("initial response");
        streams.push((requests, events));
    }
    // Idle for a few blocking reads: nothing lost, nothing restarted.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let open = redis_clients(&redis.addr()).await;
    assert!(
        open <= before + 2,
        "50 streams hold {open} Redis connections ({before} before)"
    );
    let (_, body) = support::readiness(&rt).await;
    assert_eq!(body["components"]["pub_subs/ps"]["details"]["restarts"], 0, "{body}");

    // Every stream still gets what is published to it.
    for (i, (_, events)) in streams.iter_mut().enumerate().step_by(7) {
        let event = publish_and_receive(&mut client, &format!("{prefix}-{i}"), events).await;
        assert!(event.subscribe_topic_events_response_type.is_some());
    }

    drop(streams);
    support::eventually("the reader connection to close", Duration::from_secs(10), || async {
        (redis_clients(&redis.addr()).await <= before).then_some(())
    })
    .await;
    rt.shutdown().await;
}

/// Ten rounds of 1,000 streams on Redis (a private server; once each
/// stream held a connection of its own) leave RSS bounded. 10,000 at once
/// do not all subscribe within the 10 s subscribe timeout on this machine
/// (see docs/reliability.md). Each subscription is a call to the component
/// (its consumer group made, its pending entries read), so the component's
/// queue is raised with the in-flight limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_opened_and_closed_give_their_memory_back() {
    let Some(redis) = support::PrivateRedis::start() else {
        return;
    };
    let config = format!(
        "[server]\nmax_calls_in_flight = 12000\n[supervisor]\nqueue_capacity = 12000\n\
         [pub_subs.ps]\ntype = \"redis\"\nmetadata = {{ redisHost = \"{}\" }}\n",
        redis.addr()
    );
    let sidecar = Measured::start(&config, &[]).await;
    let rounds = stream_rounds(&sidecar, "ps", 1_000).await;
    eprintln!("redis streams: {rounds}, peak {:.1}", sidecar.peak_mib());
    rounds.assert_bounded();
}
