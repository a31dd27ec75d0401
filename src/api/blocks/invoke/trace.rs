//! W3C trace context across an invocation: the caller's `traceparent`
//! keeps its trace id and gets a new parent span id per hop (the sidecar's
//! own span), so caller, sidecars and callee share one trace. Also carried
//! in OpenCensus's binary form, `grpc-trace-bin`, as daprd does.

use base64::Engine;
use rand::Rng;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const GRPC_TRACE_BIN: &str = "grpc-trace-bin";

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Reads `00-<32 hex>-<16 hex>-<2 hex>`; anything else (an all-zero id
    /// included) is not a trace context.
    pub fn parse(text: &str) -> Option<TraceParent> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex(trace, &mut trace_id)?;
        hex(span, &mut span_id)?;
        let mut flag = [0u8; 1];
        hex(flags, &mut flag)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags: flag[0],
        })
    }

    /// A new trace, sampled.
    pub fn fresh() -> TraceParent {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        rng.fill(&mut trace_id);
        trace_id[0] |= 1;
        TraceParent {
            trace_id,
            span_id: span(),
            flags: 1,
        }
    }

    /// The same trace with a new span: the sidecar's hop.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            span_id: span(),
            ..*self
        }
    }

    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// OpenCensus binary format: version 0, trace id (field 0), span id
    /// (field 1), options (field 2).
    pub fn to_binary(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(29);
        out.push(0);
        out.push(0);
        out.extend_from_slice(&self.trace_id);
        out.push(1);
        out.extend_from_slice(&self.span_id);
        out.push(2);
        out.push(self.flags);
        out
    }

    pub fn from_binary(bytes: &[u8]) -> Option<TraceParent> {
        if bytes.len() < 29 || bytes[0] != 0 || bytes[1] != 0 || bytes[18] != 1 || bytes[27] != 2 {
            return None;
        }
        let trace_id: [u8; 16] = bytes[2..18].try_into().ok()?;
        let span_id: [u8; 8] = bytes[19..27].try_into().ok()?;
        Some(TraceParent {
            trace_id,
            span_id,
            flags: bytes[28],
        })
    }

    /// `grpc-trace-bin` as a metadata value (unpadded base64, as gRPC
    /// sends binary headers).
    pub fn to_binary_header(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.to_binary())
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            self.flags
        )
    }
}

fn span() -> [u8; 8] {
    let mut id = [0u8; 8];
    rand::rng().fill(&mut id);
    id[0] |= 1;
    id
}

fn hex(text: &str, out: &mut [u8]) -> Option<()> {
    let bytes = text.as_bytes();
    for (i, slot) in out.iter_mut().enumerate() {
        let pair = std::str::from_utf8(bytes.get(i * 2..i * 2 + 2)?).ok()?;
        if pair.chars().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        *slot = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace context of a request's metadata: its `traceparent`, else its
/// `grpc-trace-bin`.
pub fn incoming(metadata: &[(String, String)]) -> Option<TraceParent> {
    let get = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    if let Some(parent) = get(TRACEPARENT).and_then(|v| TraceParent::parse(v)) {
        return Some(parent);
    }
    let binary = get(GRPC_TRACE_BIN)?;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(binary.trim_end_matches('='))
        .ok()?;
    TraceParent::from_binary(&bytes)
}

/// Replaces the request's trace context with this hop's: a child of the
/// caller's, or a new trace. Keeps `tracestate`.
pub fn next_hop(metadata: &mut Vec<(String, String)>) -> TraceParent {
    let hop = incoming(metadata).map_or_else(TraceParent::fresh, |p| p.child());
    metadata.retain(|(k, _)| !k.eq_ignore_ascii_case(TRACEPARENT) && !k.eq_ignore_ascii_case(GRPC_TRACE_BIN));
    metadata.push((TRACEPARENT.to_owned(), hop.to_string()));
    metadata.push((GRPC_TRACE_BIN.to_owned(), hop.to_binary_header()));
    hop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(text).expect("valid");
        assert_eq!(parent.to_string(), text);
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(TraceParent::from_binary(&child.to_binary()), Some(child));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_next_hop_replaces_the_context() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut metadata = vec![
            ("traceparent".to_owned(), text.to_owned()),
            ("tracestate".into(), "a=b".into()),
        ];
        let hop = next_hop(&mut metadata);
        assert_eq!(hop.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(incoming(&metadata), Some(hop));
        assert!(metadata.iter().any(|(k, v)| k == "tracestate" && v == "a=b"));
        let mut none = Vec::new();
        let fresh = next_hop(&mut none);
        assert_eq!(incoming(&none), Some(fresh));
    }
}
