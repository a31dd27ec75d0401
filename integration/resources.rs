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
    publisher
        .publish_event(pb::PublishEventRequest {
            pubsub_name: "ps".into(),
            topic: topic.clone(),
            data: b"{}".to_vec(),
            data_content_type: "application/json".into(),
            metadata: Default::default(),
        })
        .await
        .expect("published");
    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("an event");
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
