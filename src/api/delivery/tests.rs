//! The delivery engine over the in-memory broker, on an actix system with
//! paused tokio time: redelivery after RETRY with the jittered backoff,
//! settling, and giving messages back at stop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{RETRY_MIN, Sink, run_subscription};
use crate::actors::pubsub::Publish;
use crate::actors::{ComponentHandle, Slot};
use crate::api::ApiContext;
use crate::api::blocks::pubsub::{Outcome, StreamSink, SubscriptionSpec};
use crate::components::pubsub::PublishRequest;
use crate::components::{ComponentSpec, Kind, PubSubs};
use crate::config::{Config, Format};
use crate::metrics::Metrics;
use crate::supervisor::{ComponentId, Health, Slots, StatusRegistry, SupervisorHandle};

#[test]
fn a_retried_event_comes_back_after_a_jittered_backoff_and_a_settled_one_does_not() {
    actix_rt::System::new().block_on(async {
        tokio::time::pause();
        let config: Config = crate::config::load_str("", Format::Toml, "test", Some(BTreeMap::new())).expect("config");
        let metrics = Metrics::new();
        let registry = StatusRegistry::new(metrics.clone());
        let status = registry.register(ComponentId {
            kind: Kind::PubSubs,
            name: "events".into(),
            type_name: "in-memory".into(),
        });
        let slot: Arc<Slot<PubSubs>> = Slot::new(ComponentSpec::new("events", "in-memory"), status, 64);
        let (escalate, _escalations) = mpsc::unbounded_channel();
        let supervisor = SupervisorHandle::start(config.supervisor.clone(), escalate);
        let slots = Slots {
            pubsubs: vec![slot.clone()],
            ..Default::default()
        };
        let router = slots.router();
        supervisor.start_components(slots).await;
        while slot.status.snapshot().health != Health::Up {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (_stopping, stopping_rx) = watch::channel(false);
        let ctx = Arc::new(ApiContext {
            router,
            app: config.app.clone(),
            status: registry.clone(),
            metrics,
            supervisor: supervisor.probe(),
            topic_streams: Default::default(),
            stopping: stopping_rx.clone(),
            cut_off: stopping_rx,
            lingering: Default::default(),
            config_subscriptions: Default::default(),
            extended_metadata: Default::default(),
            shutdown_requested: Default::default(),
            api_token: None,
            app_health: watch::channel(None).0,
            app_channel: None,
            declared_subscriptions: Vec::new(),
            active_subscriptions: Default::default(),
        });

        let (events_tx, mut events) = mpsc::channel(8);
        let sink = StreamSink::new(events_tx);
        let (stop, stop_rx) = watch::channel(false);
        let (live, is_live) = tokio::sync::oneshot::channel();
        let spec = SubscriptionSpec {
            pubsub: "events".into(),
            topic: "orders".into(),
            metadata: HashMap::new(),
            dead_letter_topic: None,
        };
        let runner = tokio::spawn(run_subscription(
            ctx.clone(),
            spec,
            Sink::Stream(sink.clone()),
            stop_rx,
            Some(live),
        ));
        is_live.await.expect("subscribed");

        let publish = |data: &str| {
            Publish(PublishRequest {
                topic: "orders".into(),
                data: data.as_bytes().to_vec(),
                content_type: "text/plain".into(),
                metadata: HashMap::new(),
                ttl: None,
            })
        };
        let broker = ComponentHandle::new(slot.clone());
        broker.call(publish("one")).await.expect("published");

        let first = events.recv().await.expect("delivered");
        assert_eq!(first.data, b"one");
        let answered = tokio::time::Instant::now();
        sink.processed(&first.id, Outcome::Retry);
        let again = events.recv().await.expect("redelivered");
        assert_eq!(again.id, first.id);
        let waited = tokio::time::Instant::now() - answered;
        assert!(
            waited >= RETRY_MIN / 2 && waited <= RETRY_MIN + Duration::from_millis(5),
            "redelivered after {waited:?}"
        );
        sink.processed(&again.id, Outcome::Success);

        broker.call(publish("two")).await.expect("published");
        let second = events.recv().await.expect("delivered");
        assert_eq!(second.data, b"two", "a settled event came back");
        // Stopping with the event unanswered gives it back and ends the run.
        let _ = stop.send(true);
        sink.processed(&second.id, Outcome::Retry);
        tokio::time::timeout(Duration::from_secs(30), runner)
            .await
            .expect("the runner stops")
            .expect("no panic");
        assert!(events.try_recv().is_err(), "nothing delivered after stop");
        supervisor.stop(Duration::from_secs(5)).await;
    });
}
