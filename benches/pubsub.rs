//! Pub/sub through the sidecar against the same broker driven directly, for
//! every broker that is up: publish throughput (many publishes in flight)
//! and publish-to-delivery latency (one event at a time, published and then
//! received and acked by a subscriber).
//!
//! "Direct" is the broker's Rust client (redis, lapin, async-nats,
//! rumqttc) making the same calls in-process, through the component code
//! without the sidecar around it: no gRPC, no actor, no CloudEvent, no
//! delivery loop.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use layotto::components::BuildingBlock;
use layotto::components::pubsub::{PubSub, PublishRequest, SubscribeRequest};
use layotto::components::{BuildContext, ComponentSpec, PubSubs, Tasks, find};
use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::subscribe_topic_events_request::SubscribeTopicEventsRequestType as Request;
use layotto::proto::runtime::v1::subscribe_topic_events_response::SubscribeTopicEventsResponseType as Response;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::harness::{Client, Load, Report, Sample};

/// A latency marker not seen within this long counts as an error.
const LOST: std::time::Duration = std::time::Duration::from_secs(5);

struct Broker {
    name: &'static str,
    type_name: &'static str,
    metadata: &'static [(&'static str, &'static str)],
    addr: Option<&'static str>,
}

const BROKERS: &[Broker] = &[
    Broker {
        name: "in-memory",
        type_name: "in-memory",
        metadata: &[],
        addr: None,
    },
    Broker {
        name: "redis",
        type_name: "redis",
        metadata: &[("redisHost", "127.0.0.1:6379"), ("maxLenApprox", "10000")],
        addr: Some("127.0.0.1:6379"),
    },
    Broker {
        name: "rabbitmq",
        type_name: "rabbitmq",
        metadata: &[("host", "amqp://guest:guest@127.0.0.1:5672/%2f")],
        addr: Some("127.0.0.1:5672"),
    },
    Broker {
        name: "nats",
        type_name: "nats",
        metadata: &[
            ("natsURL", "nats://127.0.0.1:4222"),
            ("memoryStorage", "true"),
            ("maxMsgs", "100000"),
        ],
        addr: Some("127.0.0.1:4222"),
    },
    Broker {
        name: "mqtt",
        type_name: "mqtt",
        metadata: &[("url", "tcp://127.0.0.1:1883")],
        addr: Some("127.0.0.1:1883"),
    },
];

pub async fn run() -> anyhow::Result<()> {
    let load = Load::from_env();
    let sequential = load.sequential();
    let client = Client::start()?;
    let mut report = Report::new(
        "pubsub",
        "PublishEvent throughput and publish-to-delivery latency per broker, through the sidecar vs the same broker \
         client driven directly in-process. Throughput rows: many publishes in flight; latency rows: one event at a \
         time, published then received and acked by a subscriber (a SubscribeTopicEvents stream for the sidecar)",
    );
    for broker in BROKERS {
        if let Some(addr) = broker.addr
            && std::net::TcpStream::connect(addr).is_err()
        {
            eprintln!("pubsub: {} skipped, nothing on {addr}", broker.name);
            continue;
        }
        measure(broker, &load, &sequential, &client, &mut report)
            .await
            .with_context(|| format!("benchmarking {}", broker.name))?;
    }
    report.finish(&load).context("writing docs/benchmarks.md")?;
    Ok(())
}

fn spec(broker: &Broker) -> ComponentSpec {
    let mut spec = ComponentSpec::new("ps", broker.type_name);
    for (k, v) in broker.metadata {
        spec = spec.with_metadata(k, v);
    }
    spec.app_id = "bench-direct".into();
    spec.instance_id = format!("bench-{}", std::process::id());
    spec
}

async fn measure(
    broker: &Broker,
    load: &Load,
    sequential: &Load,
    client: &Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let meta: Vec<String> = broker.metadata.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
    let sidecar = crate::sidecar(&format!(
        "[app]\napp_id = \"bench\"\n[pub_subs.ps]\ntype = \"{}\"\nmetadata = {{ {} }}\n",
        broker.type_name,
        meta.join(", ")
    ))
    .await?;
    let channels = client.channels(sidecar.grpc_addr(), load.connections).await?;
    let entry = find(PubSubs::TYPES, broker.type_name).context("registered type")?;
    let spec = spec(broker);
    let build = entry.build;
    let direct: Arc<dyn PubSub> = client
        .spawn(async move {
            // Nothing watches the direct broker's background work here.
            let (tasks, _ended) = Tasks::new();
            build(BuildContext {
                spec,
                tasks,
                retained: Default::default(),
            })
            .await
        })
        .await?
        .map_err(|e| anyhow::anyhow!(e))?;
    // Throughput and latency on topics of their own: a latency subscriber
    // does not wade through the throughput rounds' backlog.
    let throughput_topic = format!("bench-{}-{}-tput", broker.name, std::process::id());
    let topic = format!("bench-{}-{}-lat", broker.name, std::process::id());

    // Subscribers first, so that every published event has somewhere to go.
    let stream = SidecarSubscriber::open(client, channels[0].clone(), &topic).await?;
    let direct_sub = {
        let (direct, topic) = (direct.clone(), topic.clone());
        client
            .spawn(async move {
                direct
                    .subscribe(SubscribeRequest {
                        topic,
                        group: "bench-direct".into(),
                        max_in_flight: 1,
                        metadata: HashMap::new(),
                    })
                    .await
            })
            .await?
            .map_err(|e| anyhow::anyhow!(e))?
    };
    let direct_sub = Arc::new(tokio::sync::Mutex::new(direct_sub));

    let name = broker.name;
    for _ in 0..load.rounds {
        let t = throughput_topic.clone();
        let publish = move |c: Channel| {
            let topic = t.clone();
            async move {
                RuntimeClient::new(c)
                    .publish_event(publish_request(&topic))
                    .await
                    .map(drop)
            }
        };
        report.add(
            &format!("{name}: publish via sidecar"),
            load.run(client, &channels, publish).await,
        );
        let t = throughput_topic.clone();
        let publish = move |b: Arc<dyn PubSub>| {
            let topic = t.clone();
            async move { b.publish(direct_request(&topic)).await }
        };
        report.add(
            &format!("{name}: publish direct"),
            load.run(client, std::slice::from_ref(&direct), publish).await,
        );

        report.add(
            &format!("{name}: latency via sidecar"),
            stream.latency(client, &channels[0], &topic, sequential).await?,
        );
        let (b, sub, t, seconds) = (direct.clone(), direct_sub.clone(), topic.clone(), sequential.seconds);
        let sample = client
            .spawn(async move {
                let mut sub = sub.lock().await;
                // Drain what the throughput rounds left.
                while let Ok(Some(Ok(d))) =
                    tokio::time::timeout(std::time::Duration::from_millis(200), sub.next()).await
                {
                    let _ = d.acker.ack().await;
                }
                let deadline = Instant::now() + std::time::Duration::from_secs_f64(seconds);
                let (started, mut latencies, mut errors) = (Instant::now(), Vec::new(), 0);
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let marker = format!("lat-{}", latencies.len());
                    if b.publish(marker_request(&t, &marker)).await.is_err() {
                        errors += 1;
                        continue;
                    }
                    loop {
                        match tokio::time::timeout(LOST, sub.next()).await {
                            Ok(Some(Ok(d))) => {
                                let mine = d.message.data == marker.as_bytes();
                                let _ = d.acker.ack().await;
                                if mine {
                                    latencies.push(t0.elapsed().as_micros() as u32);
                                    break;
                                }
                            }
                            Err(_) => {
                                errors += 1;
                                break;
                            }
                            _ => return Sample::new(latencies, errors + 1, started.elapsed()),
                        }
                    }
                }
                Sample::new(latencies, errors, started.elapsed())
            })
            .await?;
        report.add(&format!("{name}: latency direct"), sample);
    }
    report.ratio(
        &format!("{name}: publish via sidecar"),
        &format!("{name}: publish direct"),
        &format!("{name}: publish throughput, sidecar / direct"),
    );
    let (via, _) = report.latency(&format!("{name}: latency via sidecar"));
    let (direct_p50, _) = report.latency(&format!("{name}: latency direct"));
    report.note(format!(
        "{name}: publish-to-delivery p50 {via:.0} µs through the sidecar, {direct_p50:.0} µs direct"
    ));
    stream.close();
    sidecar.shutdown().await;
    Ok(())
}

fn publish_request(topic: &str) -> pb::PublishEventRequest {
    pb::PublishEventRequest {
        pubsub_name: "ps".into(),
        topic: topic.into(),
        data: vec![b'x'; 64],
        data_content_type: "text/plain".into(),
        metadata: HashMap::new(),
    }
}

fn direct_request(topic: &str) -> PublishRequest {
    PublishRequest {
        topic: topic.into(),
        data: vec![b'x'; 64],
        content_type: "text/plain".into(),
        metadata: HashMap::new(),
        ttl: None,
    }
}

fn marker_request(topic: &str, marker: &str) -> PublishRequest {
    PublishRequest {
        data: marker.as_bytes().to_vec(),
        ..direct_request(topic)
    }
}

/// A SubscribeTopicEvents stream on the client thread, acking every event
/// and reporting each one's data.
struct SidecarSubscriber {
    received: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Vec<u8>>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl SidecarSubscriber {
    async fn open(client: &Client, channel: Channel, topic: &str) -> anyhow::Result<SidecarSubscriber> {
        let topic = topic.to_owned();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (seen, received) = tokio::sync::mpsc::channel(1024);
        let ready = client
            .spawn(async move {
                let mut rc = RuntimeClient::new(channel);
                let (requests, requests_rx) = tokio::sync::mpsc::channel(1024);
                requests
                    .send(pb::SubscribeTopicEventsRequest {
                        subscribe_topic_events_request_type: Some(Request::InitialRequest(
                            pb::SubscribeTopicEventsRequestInitial {
                                pubsub_name: "ps".into(),
                                topic,
                                ..Default::default()
                            },
                        )),
                    })
                    .await?;
                let mut events = rc
                    .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
                    .await?
                    .into_inner();
                events.message().await?;
                tokio::spawn(async move {
                    loop {
                        let message = tokio::select! {
                            m = events.message() => m,
                            _ = stopped.changed() => break,
                        };
                        let Ok(Some(message)) = message else { break };
                        if let Some(Response::EventMessage(event)) = message.subscribe_topic_events_response_type {
                            let ack = pb::SubscribeTopicEventsRequest {
                                subscribe_topic_events_request_type: Some(Request::EventProcessed(
                                    pb::SubscribeTopicEventsRequestProcessed {
                                        id: event.id,
                                        status: Some(pb::TopicEventResponse { status: 0 }),
                                    },
                                )),
                            };
                            let _ = requests.send(ack).await;
                            let _ = seen.try_send(event.data);
                        }
                    }
                });
                anyhow::Ok(())
            })
            .await?;
        ready?;
        Ok(SidecarSubscriber {
            received: Arc::new(tokio::sync::Mutex::new(received)),
            stop,
        })
    }

    /// Publishes one marker at a time and times its arrival on the stream.
    async fn latency(&self, client: &Client, channel: &Channel, topic: &str, load: &Load) -> anyhow::Result<Sample> {
        let (received, channel, topic, seconds) =
            (self.received.clone(), channel.clone(), topic.to_owned(), load.seconds);
        client
            .spawn(async move {
                let mut received = received.lock().await;
                let mut rc = RuntimeClient::new(channel);
                while let Ok(Some(_)) =
                    tokio::time::timeout(std::time::Duration::from_millis(300), received.recv()).await
                {}
                let deadline = Instant::now() + std::time::Duration::from_secs_f64(seconds);
                let (started, mut latencies, mut errors) = (Instant::now(), Vec::new(), 0);
                while Instant::now() < deadline {
                    let marker = format!("lat-{}", latencies.len());
                    let mut request = publish_request(&topic);
                    request.data = marker.clone().into_bytes();
                    let t0 = Instant::now();
                    if rc.publish_event(request).await.is_err() {
                        errors += 1;
                        continue;
                    }
                    loop {
                        match tokio::time::timeout(LOST, received.recv()).await {
                            Ok(Some(data)) if data == marker.as_bytes() => {
                                latencies.push(t0.elapsed().as_micros() as u32);
                                break;
                            }
                            Ok(Some(_)) => {}
                            Err(_) => {
                                errors += 1;
                                break;
                            }
                            Ok(None) => return Sample::new(latencies, errors + 1, started.elapsed()),
                        }
                    }
                }
                Sample::new(latencies, errors, started.elapsed())
            })
            .await
    }

    fn close(&self) {
        let _ = self.stop.send(true);
    }
}
