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
        let ctx = Arc::new_cyclic(|this| ApiContext {
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
            invoker: crate::api::blocks::invoke::Invoker::new("", None),
            mtls: None,
            app_channel: None,
            declared_subscriptions: Vec::new(),
            active_subscriptions: Default::default(),
            functions: crate::api::blocks::wasm::FunctionTable::new(
                None,
                [],
                registry.clone(),
                16,
                String::new(),
                String::new(),
            ),
            lifecycle: Default::default(),
            this: this.clone(),
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

fn event(kind: &str) -> crate::api::cloudevents::TopicEvent {
    let body = serde_json::json!({
        "specversion": "1.0", "id": "1", "source": "app", "type": "order.created",
        "datacontenttype": "application/json", "data": { "kind": kind, "total": 120 },
    });
    crate::api::cloudevents::unwrap(body.to_string().as_bytes(), "orders", "ps", HashMap::new())
}

fn table(rules: &[(&str, &str)], default: &str) -> super::RouteTable {
    super::RouteTable::new(&crate::config::Routes {
        rules: rules.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect(),
        default: default.to_owned(),
    })
    .expect("compiles")
}

fn path(route: Result<super::Route, String>) -> Option<String> {
    match route.expect("evaluates") {
        super::Route::To(path) => Some(path),
        super::Route::Nowhere => None,
    }
}

#[test]
fn cel_rules_pick_the_first_true_route_then_the_default() {
    let rules = table(
        &[
            (r#"event.data.kind == "big" && event.data.total > 100"#, "/big"),
            (r#"event.type.startsWith("order.")"#, "/orders"),
        ],
        "/rest",
    );
    assert_eq!(path(rules.pick(&event("big"))).as_deref(), Some("/big"));
    assert_eq!(path(rules.pick(&event("small"))).as_deref(), Some("/orders"));
    let none = table(&[(r#"event.topic == "other""#, "/x")], "");
    assert_eq!(path(none.pick(&event("big"))), None, "no match and no default: dropped");
    let no_rules = table(&[], "");
    assert_eq!(
        path(no_rules.pick(&event("big"))).as_deref(),
        Some(""),
        "one path for everything"
    );
    // A rule that does not give a boolean, or fails, is a failed delivery.
    assert!(table(&[("event.data.total", "/x")], "").pick(&event("big")).is_err());
    assert!(
        table(&[("event.data.missing.deeper == 1", "/x")], "")
            .pick(&event("big"))
            .is_err()
    );
}

#[test]
fn routing_rules_that_do_not_compile_are_refused() {
    let routes = crate::config::Routes {
        rules: vec![("event.type ==".into(), "/x".into())],
        default: String::new(),
    };
    assert!(super::RouteTable::new(&routes).is_err());
}
