use super::*;
use prost::Message as _;

use crate::proto::runtime::v1::SayHelloRequest;

const SAY_HELLO: &str = "/spec.proto.runtime.v1.Runtime/SayHello";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn grpc_message(name: &str) -> Vec<u8> {
    let body = SayHelloRequest {
        service_name: "helloworld".into(),
        name: name.into(),
        data: None,
    }
    .encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A client's bytes: the preface, SETTINGS, then one SayHello per name on
/// streams 1, 3, 5, ... (headers through one HPACK encoder, so later
/// calls refer to the table).
fn client_bytes(names: &[&str]) -> Vec<u8> {
    let mut encoder = loona_hpack::Encoder::new();
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    for (i, name) in names.iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", SAY_HELLO.as_bytes()),
            (b":authority", b"127.0.0.1:34904"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        let block = encoder.encode(headers);
        out.extend(frame(HEADERS, FLAG_END_HEADERS, stream, &block));
        out.extend(frame(DATA, 0x1, stream, &grpc_message(name)));
    }
    out
}

fn line(conn: u64, offset: u64, time: &str, bytes: &[u8]) -> String {
    serde_json::to_string(&DumpLine {
        time: time.into(),
        conn,
        port: 34904,
        offset,
        window: "2025-01-01T00:00:00.000000Z".into(),
        bytes: base64::engine::general_purpose::STANDARD.encode(bytes),
    })
    .expect("a dump line")
        + "\n"
}

/// The dump of `bytes` cut into samples at `cuts`.
fn dump(conn: u64, bytes: &[u8], cuts: &[usize]) -> String {
    let mut out = String::new();
    let mut start = 0;
    for (i, &cut) in cuts.iter().chain(std::iter::once(&bytes.len())).enumerate() {
        out += &line(
            conn,
            start as u64,
            &format!("2025-01-01T00:00:00.{i:06}Z"),
            &bytes[start..cut],
        );
        start = cut;
    }
    out
}

fn names(decoded: &Decoded) -> Vec<String> {
    decoded
        .calls
        .iter()
        .flat_map(|c| c.messages.iter())
        .filter_map(|m| match m {
            Message::Json(json) => json.get("name").and_then(|n| n.as_str()).map(str::to_owned),
            Message::Raw { .. } => None,
        })
        .collect()
}

#[test]
fn a_whole_connection_reads_back_into_its_calls() {
    let bytes = client_bytes(&["alpha", "beta", "gamma"]);
    // Cut anywhere, frames and messages across samples.
    let decoded = decode_dump(&dump(1, &bytes, &[5, 30, 31, 77, 100]));
    assert_eq!(decoded.notes, Vec::<String>::new());
    assert_eq!(decoded.calls.len(), 3, "{decoded:?}");
    for (call, stream) in decoded.calls.iter().zip([1, 3, 5]) {
        assert_eq!(call.method.as_deref(), Some(SAY_HELLO));
        assert_eq!(call.stream, stream);
        assert!(call.notes.is_empty(), "{:?}", call.notes);
    }
    assert_eq!(names(&decoded), ["alpha", "beta", "gamma"]);
    assert_eq!(
        decoded.calls[0].messages[0],
        Message::Json(serde_json::json!({"serviceName": "helloworld", "name": "alpha"}))
    );
    let text = render(&decoded);
    assert!(
        text.contains("conn 1 stream 1 /spec.proto.runtime.v1.Runtime/SayHello"),
        "{text}"
    );
    assert!(text.contains(r#""name":"beta""#), "{text}");
}

#[test]
fn connections_are_read_apart_and_in_time_order() {
    let a = client_bytes(&["a1", "a2"]);
    let b = client_bytes(&["b1"]);
    let mut text = line(1, 0, "2025-01-01T00:00:00.000001Z", &a[..40]);
    text += &line(2, 0, "2025-01-01T00:00:00.000002Z", &b);
    text += &line(1, 40, "2025-01-01T00:00:00.000003Z", &a[40..]);
    let decoded = decode_dump(&text);
    assert_eq!(decoded.notes, Vec::<String>::new());
    assert_eq!(names(&decoded), ["a1", "b1", "a2"]);
}

#[test]
fn a_window_that_begins_mid_connection_says_what_it_cannot_read() {
    let bytes = client_bytes(&["first", "second"]);
    // Where the second call's HEADERS frame starts.
    let first_len = client_bytes(&["first"]).len();
    let decoded =
        decode_dump(&dump(7, &bytes[first_len..], &[]).replace("\"offset\":0", &format!("\"offset\":{first_len}")));
    assert_eq!(decoded.notes.len(), 1, "{:?}", decoded.notes);
    assert!(
        decoded.notes[0].contains("first sampled at byte"),
        "{:?}",
        decoded.notes
    );
    assert_eq!(decoded.calls.len(), 1);
    let call = &decoded.calls[0];
    // The second call's :path was indexed by the first call's block.
    assert_eq!(call.method, None);
    assert!(
        call.notes
            .iter()
            .any(|n| n.contains("header table entries from before")),
        "{:?}",
        call.notes
    );
    assert!(
        matches!(call.messages[..], [Message::Raw { .. }]),
        "{:?}",
        call.messages
    );
}

#[test]
fn missing_bytes_are_reported_and_reading_goes_on() {
    let bytes = client_bytes(&["one", "two", "three"]);
    let one = client_bytes(&["one"]).len();
    let two = client_bytes(&["one", "two"]).len();
    // The second call's bytes were not sampled.
    let mut text = line(1, 0, "2025-01-01T00:00:00.000001Z", &bytes[..one]);
    text += &line(1, two as u64, "2025-01-01T00:00:00.000002Z", &bytes[two..]);
    let decoded = decode_dump(&text);
    assert!(
        decoded.notes.iter().any(|n| n.contains("bytes missing")),
        "{:?}",
        decoded.notes
    );
    assert_eq!(names(&decoded), ["one"]);
    assert_eq!(decoded.calls.len(), 2);
    assert_eq!(decoded.calls[1].method, None);
}

#[test]
fn odd_input_never_panics() {
    let bytes = client_bytes(&["x"]);
    let mut garbage = String::from("not json\n{\"time\":1}\n");
    garbage += &line(
        1,
        0,
        "t",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    );
    garbage += &line(2, 0, "t", b"GET / HTTP/1.1\r\n\r\n");
    garbage += &line(3, 9, "t", &[0, 0, 3, 1, 4, 0, 0, 0, 1, 0xff, 0xff, 0xff]);
    garbage += &line(4, 0, "t", &bytes[..bytes.len() - 3]);
    let decoded = decode_dump(&garbage);
    assert!(
        decoded.notes.iter().any(|n| n.starts_with("line 1")),
        "{:?}",
        decoded.notes
    );
    assert!(
        decoded.notes.iter().any(|n| n.contains("preface")),
        "{:?}",
        decoded.notes
    );
    let _ = render(&decoded);
    // Every prefix of a real connection, too.
    for cut in 0..bytes.len() {
        let _ = decode_dump(&line(1, 0, "t", &bytes[..cut]));
        let _ = decode_dump(&line(1, 24, "t", &bytes[cut..]));
    }
}

#[test]
fn an_unknown_method_shows_its_message_in_hex() {
    let mut encoder = loona_hpack::Encoder::new();
    let mut bytes = PREFACE.to_vec();
    let block = encoder.encode(vec![(&b":path"[..], &b"/other.Service/Call"[..])]);
    bytes.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &block));
    bytes.extend(frame(DATA, 1, 1, &[0, 0, 0, 0, 2, 0x08, 0x01]));
    let decoded = decode_dump(&line(1, 0, "t", &bytes));
    assert_eq!(decoded.calls.len(), 1);
    assert_eq!(
        decoded.calls[0].messages,
        [Message::Raw {
            hex: "0801".into(),
            why: "the method is unknown to this runtime".into()
        }]
    );
}
