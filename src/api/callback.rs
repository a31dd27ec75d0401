//! The sidecar as the client of the application's callback server: either
//! Layotto's `spec.proto.runtime.v1.AppCallback` or Dapr's
//! `dapr.proto.runtime.v1.AppCallback`, chosen by `app.callback_protocol`.

use std::collections::HashMap;
use std::time::Duration;

use prost_types::value::Kind;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::blocks::pubsub::Outcome;
use super::cloudevents::TopicEvent;
use crate::config::{AppConfig, CallbackProtocol};
use crate::proto::dapr::runtime::v1 as dapr;
use crate::proto::dapr::runtime::v1::app_callback_client::AppCallbackClient as DaprClient;
use crate::proto::runtime::v1 as layotto;
use crate::proto::runtime::v1::app_callback_client::AppCallbackClient as LayottoClient;

/// A subscription the application asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppSubscription {
    pub pubsub_name: String,
    pub topic: String,
    pub metadata: Vec<(String, String)>,
    /// Dapr's route (`path`) for the subscription's events; empty for
    /// Layotto.
    pub route: String,
}

/// How long one callback may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub enum AppCallback {
    Layotto(LayottoClient<Channel>),
    Dapr(DaprClient<Channel>),
}

impl AppCallback {
    /// A client that connects on first use and reconnects after failures,
    /// or `None` when the app runs no callback server.
    pub fn for_app(app: &AppConfig) -> Option<AppCallback> {
        if app.grpc_callback_port == 0 {
            return None;
        }
        let uri = format!("http://{}:{}", app.grpc_callback_host, app.grpc_callback_port);
        let endpoint = Endpoint::from_shared(uri)
            .ok()?
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        Some(match app.callback_protocol {
            CallbackProtocol::Layotto => AppCallback::Layotto(LayottoClient::new(channel)),
            CallbackProtocol::Dapr => AppCallback::Dapr(DaprClient::new(channel)),
        })
    }

    /// The application's subscriptions; UNIMPLEMENTED means none.
    pub async fn subscriptions(&self) -> Result<Vec<AppSubscription>, tonic::Status> {
        let listed = match self.clone() {
            AppCallback::Layotto(mut client) => client.list_topic_subscriptions(()).await.map(|r| {
                r.into_inner()
                    .subscriptions
                    .into_iter()
                    .map(|s| AppSubscription {
                        pubsub_name: s.pubsub_name,
                        topic: s.topic,
                        metadata: sorted(s.metadata),
                        route: String::new(),
                    })
                    .collect()
            }),
            AppCallback::Dapr(mut client) => client.list_topic_subscriptions(()).await.map(|r| {
                r.into_inner()
                    .subscriptions
                    .into_iter()
                    .map(|s| AppSubscription {
                        pubsub_name: s.pubsub_name,
                        topic: s.topic,
                        metadata: sorted(s.metadata),
                        // CEL rules are not evaluated: events go to the
                        // default route.
                        route: s.routes.map(|r| r.default).unwrap_or_default(),
                    })
                    .collect()
            }),
        };
        match listed {
            Err(status) if status.code() == Code::Unimplemented => Ok(Vec::new()),
            other => other,
        }
    }

    /// Delivers one event. A gRPC error is a retry, except UNIMPLEMENTED,
    /// which drops (Dapr's rule).
    pub async fn deliver(&self, event: &TopicEvent, route: &str) -> Result<Outcome, tonic::Status> {
        let answer =
            match self.clone() {
                AppCallback::Layotto(mut client) => client.on_topic_event(layotto_event(event)).await.map(|r| match r
                    .into_inner()
                    .status()
                {
                    layotto::topic_event_response::TopicEventResponseStatus::Success => Outcome::Success,
                    layotto::topic_event_response::TopicEventResponseStatus::Retry => Outcome::Retry,
                    layotto::topic_event_response::TopicEventResponseStatus::Drop => Outcome::Drop,
                }),
                AppCallback::Dapr(mut client) => {
                    client.on_topic_event(dapr_event(event, route)).await.map(|r| {
                        // An unknown status is a retry, as in Dapr.
                        match dapr::topic_event_response::TopicEventResponseStatus::try_from(r.into_inner().status) {
                            Ok(dapr::topic_event_response::TopicEventResponseStatus::Success) => Outcome::Success,
                            Ok(dapr::topic_event_response::TopicEventResponseStatus::Drop) => Outcome::Drop,
                            _ => Outcome::Retry,
                        }
                    })
                }
            };
        match answer {
            Err(status) if status.code() == Code::Unimplemented => Ok(Outcome::Drop),
            other => other,
        }
    }
}

fn sorted(map: HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort();
    pairs
}

pub fn layotto_event(e: &TopicEvent) -> layotto::TopicEventRequest {
    layotto::TopicEventRequest {
        id: e.id.clone(),
        source: e.source.clone(),
        r#type: e.event_type.clone(),
        spec_version: e.spec_version.clone(),
        data_content_type: e.data_content_type.clone(),
        topic: e.topic.clone(),
        data: e.data.clone(),
        pubsub_name: e.pubsub_name.clone(),
        metadata: e.metadata.clone(),
    }
}

fn dapr_event(e: &TopicEvent, route: &str) -> dapr::TopicEventRequest {
    dapr::TopicEventRequest {
        id: e.id.clone(),
        source: e.source.clone(),
        r#type: e.event_type.clone(),
        spec_version: e.spec_version.clone(),
        data_content_type: e.data_content_type.clone(),
        data: e.data.clone(),
        topic: e.topic.clone(),
        pubsub_name: e.pubsub_name.clone(),
        path: route.to_owned(),
        extensions: Some(prost_types::Struct {
            fields: e.extensions.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    }
}

fn to_prost(v: &serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_prost).collect(),
        }),
        J::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
