//! Every metric the sidecar exports, named in one place.
//!
//! Names carry the `layotto_` prefix and base units; counters end in
//! `_total`; label values are bounded (kinds, configured names and types,
//! gRPC methods and codes), never raw error text. The process collector adds
//! the standard `process_*` metrics (RSS, CPU seconds, open fds).

use std::sync::Arc;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::components::Kind;

/// The `reason` of a component's restart series before its first restart.
pub const NO_RESTART: &str = "none";

pub struct Metrics {
    registry: Registry,
    pubsub_published: IntCounterVec,
    pubsub_delivered: IntCounterVec,
    pubsub_delivery_duration: HistogramVec,
    topics: TopicLabels,
    component_up: IntGaugeVec,
    component_restarts: IntCounterVec,
    grpc_requests: IntCounterVec,
    grpc_duration: HistogramVec,
    invoke_requests: IntCounterVec,
    invoke_duration: HistogramVec,
    invoke_retries: IntCounterVec,
    resolution_cache: IntCounterVec,
    flow_control_rejected: IntCounterVec,
    wasm_calls: IntCounterVec,
    wasm_call_duration: HistogramVec,
    tcp_copy_samples: IntCounterVec,
    app_ids: TopicLabels,
}

/// Latency buckets for gRPC calls, 100µs to 10s.
const GRPC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// A fresh registry per runtime, so runtimes in one process (tests) do
    /// not share counters.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let component_up = IntGaugeVec::new(
            Opts::new("layotto_component_up", "1 when the component is UP, else 0"),
            &["kind", "name", "type"],
        )
        .expect("metric definition is valid");
        let component_restarts = IntCounterVec::new(
            Opts::new(
                "layotto_component_restarts_total",
                "Restarts of the component by its supervisor, by why it stopped",
            ),
            &["kind", "name", "type", "reason"],
        )
        .expect("metric definition is valid");
        let grpc_requests = IntCounterVec::new(
            Opts::new("layotto_grpc_requests_total", "gRPC calls handled, by outcome"),
            &["service", "method", "code"],
        )
        .expect("metric definition is valid");
        let grpc_duration = HistogramVec::new(
            HistogramOpts::new(
                "layotto_grpc_request_duration_seconds",
                "Time from a call's arrival to its end",
            )
            .buckets(GRPC_BUCKETS.to_vec()),
            &["service", "method"],
        )
        .expect("metric definition is valid");
        let pubsub_published = IntCounterVec::new(
            Opts::new(
                "layotto_pubsub_published_total",
                "Messages published, by outcome (ok, error)",
            ),
            &["name", "topic", "outcome"],
        )
        .expect("metric definition is valid");
        let pubsub_delivered = IntCounterVec::new(
            Opts::new(
                "layotto_pubsub_delivered_total",
                "Deliveries to the app, by status (success, drop, retry, error, expired)",
            ),
            &["name", "topic", "status"],
        )
        .expect("metric definition is valid");
        let pubsub_delivery_duration = HistogramVec::new(
            HistogramOpts::new(
                "layotto_pubsub_delivery_duration_seconds",
                "Time the app took to answer one delivery",
            )
            .buckets(GRPC_BUCKETS.to_vec()),
            &["name", "topic"],
        )
        .expect("metric definition is valid");
        let invoke_requests = IntCounterVec::new(
            Opts::new(
                "layotto_invoke_requests_total",
                "Service invocations sent, by target app id, method class (the HTTP verb, or grpc) \
                 and outcome (ok, app_error, failed)",
            ),
            &["app_id", "method_class", "outcome"],
        )
        .expect("metric definition is valid");
        let invoke_duration = HistogramVec::new(
            HistogramOpts::new(
                "layotto_invoke_duration_seconds",
                "Time from an invocation's start to the target's answer",
            )
            .buckets(GRPC_BUCKETS.to_vec()),
            &["app_id", "method_class"],
        )
        .expect("metric definition is valid");
        let invoke_retries = IntCounterVec::new(
            Opts::new(
                "layotto_invoke_retries_total",
                "Invocations tried again on another instance after a connection failure",
            ),
            &["app_id"],
        )
        .expect("metric definition is valid");
        let resolution_cache = IntCounterVec::new(
            Opts::new(
                "layotto_name_resolution_cache_total",
                "Name resolution lookups, answered from the cache (hit) or the resolver (miss)",
            ),
            &["result"],
        )
        .expect("metric definition is valid");
        let flow_control_rejected = IntCounterVec::new(
            Opts::new(
                "layotto_flow_control_rejected_total",
                "gRPC calls refused by a flow control rule, by method (only methods with a rule)",
            ),
            &["method"],
        )
        .expect("metric definition is valid");
        let wasm_calls = IntCounterVec::new(
            Opts::new(
                "layotto_wasm_calls_total",
                "Requests run by WASM functions, by function (component name) and outcome: ok, trap, budget, abi, stopped, busy, unavailable",
            ),
            &["function", "outcome"],
        )
        .expect("metric definition is valid");
        let wasm_call_duration = HistogramVec::new(
            HistogramOpts::new(
                "layotto_wasm_call_seconds",
                "Time to run a request in a WASM function, by function",
            )
            .buckets(GRPC_BUCKETS.to_vec()),
            &["function"],
        )
        .expect("metric definition is valid");
        let tcp_copy_samples = IntCounterVec::new(
            Opts::new(
                "layotto_tcp_copy_samples_total",
                "TCP copy samples of the gRPC listener's inbound bytes, by outcome: written to the dump, \
                 or dropped (the writer's queue was full, or the write failed)",
            ),
            &["outcome"],
        )
        .expect("metric definition is valid");
        let build_info = IntGaugeVec::new(
            Opts::new("layotto_build_info", "The running version; always 1"),
            &["version"],
        )
        .expect("metric definition is valid");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        for collector in [
            Box::new(component_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(component_restarts.clone()),
            Box::new(grpc_requests.clone()),
            Box::new(grpc_duration.clone()),
            Box::new(pubsub_published.clone()),
            Box::new(pubsub_delivered.clone()),
            Box::new(pubsub_delivery_duration.clone()),
            Box::new(invoke_requests.clone()),
            Box::new(invoke_duration.clone()),
            Box::new(invoke_retries.clone()),
            Box::new(resolution_cache.clone()),
            Box::new(flow_control_rejected.clone()),
            Box::new(wasm_calls.clone()),
            Box::new(wasm_call_duration.clone()),
            Box::new(tcp_copy_samples.clone()),
            Box::new(build_info),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Arc::new(Metrics {
            registry,
            pubsub_published,
            pubsub_delivered,
            pubsub_delivery_duration,
            topics: TopicLabels::default(),
            component_up,
            component_restarts,
            grpc_requests,
            grpc_duration,
            invoke_requests,
            invoke_duration,
            invoke_retries,
            resolution_cache,
            flow_control_rejected,
            wasm_calls,
            wasm_call_duration,
            tcp_copy_samples,
            app_ids: TopicLabels::default(),
        })
    }

    /// Exports a component's series from the start: down, no restarts
    /// (`reason="none"` until the first restart gives a real reason).
    pub fn component_registered(&self, kind: Kind, name: &str, type_name: &str) {
        self.set_component_up(kind, name, type_name, false);
        self.component_restarts
            .with_label_values(&[kind.as_str(), name, type_name, NO_RESTART])
            .inc_by(0);
    }

    /// Drops a removed component's up gauge (its restart count stays: a
    /// counter does not go back).
    pub fn component_removed(&self, kind: Kind, name: &str, type_name: &str) {
        let _ = self.component_up.remove_label_values(&[kind.as_str(), name, type_name]);
    }

    pub fn set_component_up(&self, kind: Kind, name: &str, type_name: &str, up: bool) {
        self.component_up
            .with_label_values(&[kind.as_str(), name, type_name])
            .set(i64::from(up));
    }

    /// Counts a restart; `reason` is a [`StopReason`] label, so bounded.
    ///
    /// [`StopReason`]: crate::supervisor::StopReason
    pub fn count_component_restart(&self, kind: Kind, name: &str, type_name: &str, reason: &'static str) {
        // The placeholder series stands only for "never restarted".
        let _ = self
            .component_restarts
            .remove_label_values(&[kind.as_str(), name, type_name, NO_RESTART]);
        self.component_restarts
            .with_label_values(&[kind.as_str(), name, type_name, reason])
            .inc();
    }

    pub fn observe_grpc(&self, service: &str, method: &str, code: &str, seconds: f64) {
        self.grpc_requests.with_label_values(&[service, method, code]).inc();
        self.grpc_duration
            .with_label_values(&[service, method])
            .observe(seconds);
    }

    pub fn count_publish(&self, name: &str, topic: &str, ok: bool) {
        let topic = self.topics.label(topic);
        self.pubsub_published
            .with_label_values(&[name, &topic, if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn count_delivery(&self, name: &str, topic: &str, status: &str) {
        let topic = self.topics.label(topic);
        self.pubsub_delivered.with_label_values(&[name, &topic, status]).inc();
    }

    pub fn observe_delivery(&self, name: &str, topic: &str, seconds: f64) {
        let topic = self.topics.label(topic);
        self.pubsub_delivery_duration
            .with_label_values(&[name, &topic])
            .observe(seconds);
    }

    /// Counts one invocation of `app_id` and its duration; `outcome` is
    /// `ok`, `app_error` (the app answered an error) or `failed`.
    pub fn observe_invoke(&self, app_id: &str, method_class: &str, outcome: &str, seconds: f64) {
        let app = self.app_ids.label(app_id);
        self.invoke_requests
            .with_label_values(&[&app, method_class, outcome])
            .inc();
        self.invoke_duration
            .with_label_values(&[&app, method_class])
            .observe(seconds);
    }

    /// A call refused by the flow control rule of `method` (a configured
    /// path: the label set is bounded by the rules).
    /// Counts a request run by a function (named by its component, so the
    /// labels are bounded by config and installs).
    pub fn observe_wasm_call(&self, function: &str, outcome: &'static str, seconds: f64) {
        self.wasm_calls.with_label_values(&[function, outcome]).inc();
        self.wasm_call_duration.with_label_values(&[function]).observe(seconds);
    }

    /// The counter of TCP copy samples with `outcome` (`written` or
    /// `dropped`), exported from now on at 0.
    pub fn tcp_copy_samples(&self, outcome: &'static str) -> prometheus::IntCounter {
        self.tcp_copy_samples.with_label_values(&[outcome])
    }

    pub fn flow_control_rejected(&self, method: &str) {
        self.flow_control_rejected.with_label_values(&[method]).inc();
    }

    pub fn count_invoke_retry(&self, app_id: &str) {
        let app = self.app_ids.label(app_id);
        self.invoke_retries.with_label_values(&[&app]).inc();
    }

    pub fn count_resolution(&self, hit: bool) {
        self.resolution_cache
            .with_label_values(&[if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Topics (and target app ids) are named by clients, so the label set is
/// bounded: the first [`TopicLabels::MAX`] seen keep their names, later
/// ones share `_other`.
#[derive(Default)]
struct TopicLabels(std::sync::Mutex<std::collections::HashSet<String>>);

impl TopicLabels {
    const MAX: usize = 200;
    const OTHER: &'static str = "_other";

    fn label(&self, topic: &str) -> String {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(topic) {
            return topic.to_owned();
        }
        if seen.len() < Self::MAX {
            seen.insert(topic.to_owned());
            return topic.to_owned();
        }
        Self::OTHER.to_owned()
    }
}
