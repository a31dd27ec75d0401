//! CloudEvents: reading whatever a broker delivers (`unwrap`), and
//! wrapping what an app publishes (`wrap`) and reading it back.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use layotto::api::blocks::MAX_TTL_SECONDS;
use layotto::api::cloudevents::{self, Outgoing};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// A message as a broker delivers it, with its headers.
    delivered: &'a [u8],
    headers: HashMap<String, String>,
    /// A payload as an app publishes it.
    data: &'a [u8],
    content_type: ContentType<'a>,
    topic: &'a str,
    pubsub: &'a str,
    source: &'a str,
    /// The block service refuses TTLs outside 1..=`MAX_TTL_SECONDS`
    /// before it wraps; only those reach `wrap`.
    ttl: Option<u32>,
}

#[derive(Arbitrary, Debug)]
enum ContentType<'a> {
    OctetStream,
    TextPlain,
    Json,
    CloudEvent,
    Blank,
    Other(&'a str),
}

impl<'a> ContentType<'a> {
    fn as_str(&self) -> &'a str {
        match self {
            ContentType::OctetStream => "application/octet-stream",
            ContentType::TextPlain => "text/plain",
            ContentType::Json => "application/json",
            ContentType::CloudEvent => cloudevents::CLOUDEVENT_CONTENT_TYPE,
            ContentType::Blank => "",
            ContentType::Other(other) => other,
        }
    }
}

fuzz_target!(|input: Input| {
    let _ = cloudevents::unwrap(input.delivered, input.topic, input.pubsub, input.headers);

    let content_type = input.content_type.as_str();
    let ttl = input
        .ttl
        .map(|secs| Duration::from_secs(u64::from(secs).clamp(1, MAX_TTL_SECONDS as u64)));
    let out = Outgoing {
        data: input.data,
        content_type,
        topic: input.topic,
        pubsub_name: input.pubsub,
        source: input.source,
        event_type: cloudevents::EVENT_TYPE,
        ttl,
    };
    let (wrapped, wrapped_type) = cloudevents::wrap(&out);
    assert_eq!(wrapped_type, cloudevents::CLOUDEVENT_CONTENT_TYPE);
    let event = cloudevents::unwrap(&wrapped, input.topic, input.pubsub, HashMap::new());
    // A payload that is not itself a CloudEvent comes back byte for byte
    // when it travels as base64 or as text, on the topic it was sent to.
    let already_an_event =
        input.data.first() == Some(&b'{') || content_type.starts_with(cloudevents::CLOUDEVENT_CONTENT_TYPE);
    let verbatim = match input.content_type {
        ContentType::OctetStream => true,
        ContentType::TextPlain => std::str::from_utf8(input.data).is_ok(),
        _ => false,
    };
    if verbatim && !already_an_event {
        assert_eq!(event.data, input.data, "payload changed on the way");
        assert_eq!(event.topic, input.topic);
        assert_eq!(event.pubsub_name, input.pubsub);
        assert!(!event.expired, "a fresh event with a TTL of {ttl:?} read as expired");
    }
});
