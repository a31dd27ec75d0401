//! CloudEvents 1.0 (JSON format): wrapping what an app publishes, and
//! reading what a broker delivers back into the fields of a
//! `TopicEventRequest`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

/// The content type of a structured CloudEvent.
pub const CLOUDEVENT_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The event type of an event the sidecar wrapped, as Dapr names it.
pub const EVENT_TYPE: &str = "com.dapr.event.sent";
/// The extension that carries an event's expiry (RFC 3339), as Dapr names it.
pub const EXPIRATION: &str = "expiration";

/// What an app asked to publish.
pub struct Outgoing<'a> {
    pub data: &'a [u8],
    pub content_type: &'a str,
    pub topic: &'a str,
    pub pubsub_name: &'a str,
    pub source: &'a str,
    /// The `type` of an event the sidecar wraps ([`EVENT_TYPE`] for Dapr's
    /// APIs).
    pub event_type: &'a str,
    pub ttl: Option<Duration>,
}

/// The bytes to send and their content type: the payload wrapped in a
/// CloudEvent, or completed when it already is one.
pub fn wrap(out: &Outgoing) -> (Vec<u8>, String) {
    let expiration = out.ttl.map(|ttl| rfc3339(SystemTime::now() + ttl));
    if let Some(mut event) = as_cloudevent(out.data, out.content_type) {
        // Already a CloudEvent: keep it, adding where it travels.
        event.entry("topic").or_insert_with(|| json!(out.topic));
        event.entry("pubsubname").or_insert_with(|| json!(out.pubsub_name));
        if let Some(expiration) = expiration {
            event.insert(EXPIRATION.into(), json!(expiration));
        }
        return (
            Value::Object(event).to_string().into_bytes(),
            CLOUDEVENT_CONTENT_TYPE.into(),
        );
    }
    let mut event = Map::new();
    event.insert("specversion".into(), json!("1.0"));
    event.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    event.insert("source".into(), json!(out.source));
    event.insert("type".into(), json!(out.event_type));
    event.insert("topic".into(), json!(out.topic));
    event.insert("pubsubname".into(), json!(out.pubsub_name));
    event.insert("time".into(), json!(rfc3339(SystemTime::now())));
    if let Some(expiration) = expiration {
        event.insert(EXPIRATION.into(), json!(expiration));
    }
    let (content_type, data) = encode_data(out.data, out.content_type);
    event.insert("datacontenttype".into(), json!(content_type));
    match data {
        Data::Json(value) => event.insert("data".into(), value),
        Data::Base64(text) => event.insert("data_base64".into(), json!(text)),
    };
    (
        Value::Object(event).to_string().into_bytes(),
        CLOUDEVENT_CONTENT_TYPE.into(),
    )
}

enum Data {
    Json(Value),
    Base64(String),
}

fn is_json(content_type: &str) -> bool {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    ct == "application/json" || ct.ends_with("+json")
}

/// How the payload goes into `data`: JSON as JSON, text as a string,
/// anything else as `data_base64`. No content type: JSON if it parses,
/// else text if it is UTF-8.
fn encode_data(data: &[u8], content_type: &str) -> (String, Data) {
    if content_type.is_empty() {
        if let Ok(value) = serde_json::from_slice::<Value>(data) {
            return ("application/json".into(), Data::Json(value));
        }
        return match std::str::from_utf8(data) {
            Ok(text) => ("text/plain".into(), Data::Json(json!(text))),
            Err(_) => ("application/octet-stream".into(), Data::Base64(BASE64.encode(data))),
        };
    }
    if is_json(content_type)
        && let Ok(value) = serde_json::from_slice::<Value>(data)
    {
        return (content_type.into(), Data::Json(value));
    }
    if content_type.starts_with("text/")
        && let Ok(text) = std::str::from_utf8(data)
    {
        return (content_type.into(), Data::Json(json!(text)));
    }
    (content_type.into(), Data::Base64(BASE64.encode(data)))
}

/// The payload as a CloudEvent, if it is one.
fn as_cloudevent(data: &[u8], content_type: &str) -> Option<Map<String, Value>> {
    let looks_like = content_type.starts_with(CLOUDEVENT_CONTENT_TYPE) || data.first() == Some(&b'{');
    if !looks_like {
        return None;
    }
    match serde_json::from_slice::<Value>(data).ok()? {
        Value::Object(map) if map.contains_key("specversion") && map.contains_key("id") => Some(map),
        _ => None,
    }
}

/// A delivered event, ready for either AppCallback flavour.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub spec_version: String,
    pub data_content_type: String,
    pub data: Vec<u8>,
    pub topic: String,
    pub pubsub_name: String,
    /// Broker metadata (headers) that came with the message.
    pub metadata: HashMap<String, String>,
    /// The CloudEvent's other attributes.
    pub extensions: Map<String, Value>,
    /// Its `expiration` has passed: drop it rather than deliver it.
    pub expired: bool,
}

/// Reads a delivered message. A CloudEvent is unpacked; anything else (a
/// raw payload) is delivered as the data of a fresh event.
pub fn unwrap(data: &[u8], topic: &str, pubsub_name: &str, metadata: HashMap<String, String>) -> TopicEvent {
    let Some(mut event) = as_cloudevent(data, "") else {
        let content_type = metadata
            .get("Content-Type")
            .or_else(|| metadata.get("content-type"))
            .cloned()
            .unwrap_or_else(|| "application/octet-stream".into());
        return TopicEvent {
            id: uuid::Uuid::new_v4().to_string(),
            source: String::new(),
            event_type: EVENT_TYPE.into(),
            spec_version: "1.0".into(),
            data_content_type: content_type,
            data: data.to_vec(),
            topic: topic.into(),
            pubsub_name: pubsub_name.into(),
            metadata,
            extensions: Map::new(),
            expired: false,
        };
    };
    let mut take = |key: &str| match event.remove(key) {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let id = take("id");
    let source = take("source");
    let event_type = take("type");
    let spec_version = take("specversion");
    let data_content_type = take("datacontenttype");
    let event_topic = take("topic");
    let event_pubsub = take("pubsubname");
    let data = match (event.remove("data"), event.remove("data_base64")) {
        (_, Some(Value::String(b64))) => BASE64.decode(b64).unwrap_or_default(),
        (Some(Value::String(text)), _) if !is_json(&data_content_type) => text.into_bytes(),
        (Some(value), _) => value.to_string().into_bytes(),
        (None, _) => Vec::new(),
    };
    let expired = event
        .get(EXPIRATION)
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .is_some_and(|at| at <= SystemTime::now());
    TopicEvent {
        id,
        source,
        event_type,
        spec_version,
        data_content_type,
        data,
        // The topic it was delivered on, as daprd gives it: an event
        // republished to a dead-letter topic still carries its first one.
        topic: if topic.is_empty() { event_topic } else { topic.into() },
        pubsub_name: if event_pubsub.is_empty() {
            pubsub_name.into()
        } else {
            event_pubsub
        },
        metadata,
        extensions: event,
        expired,
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The event as a structured CloudEvent: the body of an HTTP delivery,
/// and `event` in routing rules.
pub fn to_json(e: &TopicEvent) -> Value {
    let mut event = e.extensions.clone();
    for (key, value) in [
        ("id", &e.id),
        ("source", &e.source),
        ("type", &e.event_type),
        ("specversion", &e.spec_version),
        ("datacontenttype", &e.data_content_type),
        ("topic", &e.topic),
        ("pubsubname", &e.pubsub_name),
    ] {
        event.insert(key.into(), json!(value));
    }
    if is_json(&e.data_content_type) {
        let data = serde_json::from_slice::<Value>(&e.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&e.data).into_owned()));
        event.insert("data".into(), data);
    } else if let Ok(text) = std::str::from_utf8(&e.data) {
        event.insert("data".into(), json!(text));
    } else {
        event.insert("data_base64".into(), json!(BASE64.encode(&e.data)));
    }
    Value::Object(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out<'a>(data: &'a [u8], content_type: &'a str) -> Outgoing<'a> {
        Outgoing {
            data,
            content_type,
            topic: "orders",
            pubsub_name: "ps",
            source: "app1",
            event_type: EVENT_TYPE,
            ttl: None,
        }
    }

    fn round_trip(data: &[u8], content_type: &str) -> TopicEvent {
        let (bytes, ct) = wrap(&out(data, content_type));
        assert_eq!(ct, CLOUDEVENT_CONTENT_TYPE);
        unwrap(&bytes, "orders", "ps", HashMap::new())
    }

    #[test]
    fn json_text_and_binary_payloads_survive_the_envelope() {
        let e = round_trip(br#"{"a":1}"#, "application/json");
        assert_eq!(e.data, br#"{"a":1}"#);
        assert_eq!(e.data_content_type, "application/json");
        assert_eq!(
            (e.source.as_str(), e.event_type.as_str(), e.spec_version.as_str()),
            ("app1", EVENT_TYPE, "1.0")
        );
        assert_eq!((e.topic.as_str(), e.pubsub_name.as_str()), ("orders", "ps"));
        assert!(!e.id.is_empty());

        let e = round_trip(b"hello", "text/plain");
        assert_eq!(e.data, b"hello");
        let binary = [0u8, 159, 146, 150, 255];
        let e = round_trip(&binary, "application/octet-stream");
        assert_eq!(e.data, binary);
        let e = round_trip(&binary, "");
        assert_eq!(e.data, binary);
        let e = round_trip(b"plain words", "");
        assert_eq!(
            (e.data.as_slice(), e.data_content_type.as_str()),
            (&b"plain words"[..], "text/plain")
        );
    }

    #[test]
    fn a_cloudevent_is_kept_as_published() {
        let ce = br#"{"specversion":"1.0","id":"x1","source":"s","type":"t","data":{"k":"v"},"custom":"c"}"#;
        let e = round_trip(ce, CLOUDEVENT_CONTENT_TYPE);
        assert_eq!(
            (e.id.as_str(), e.source.as_str(), e.event_type.as_str()),
            ("x1", "s", "t")
        );
        assert_eq!(e.data, br#"{"k":"v"}"#);
        assert_eq!(e.extensions.get("custom"), Some(&json!("c")));
    }

    #[test]
    fn raw_payloads_are_delivered_as_they_are() {
        let e = unwrap(
            b"\x01raw",
            "t",
            "p",
            HashMap::from([("Content-Type".into(), "x/y".into())]),
        );
        assert_eq!(e.data, b"\x01raw");
        assert_eq!(e.data_content_type, "x/y");
    }

    #[test]
    fn an_expired_event_is_marked() {
        let mut o = out(b"x", "text/plain");
        o.ttl = Some(Duration::from_millis(1));
        let (bytes, _) = wrap(&o);
        std::thread::sleep(Duration::from_millis(5));
        assert!(unwrap(&bytes, "orders", "ps", HashMap::new()).expired);
        o.ttl = Some(Duration::from_secs(60));
        let (bytes, _) = wrap(&o);
        assert!(!unwrap(&bytes, "orders", "ps", HashMap::new()).expired);
    }
}
