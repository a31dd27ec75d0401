//! Reads a TCP copy dump back into the gRPC calls it holds
//! (`layotto tcpcopy-decode FILE`).
//!
//! The samples of each connection are put back in order (by `offset`),
//! then read as HTTP/2: the client preface, then frames. HEADERS and
//! CONTINUATION give a call's header block (HPACK, decoded with the
//! connection's header table), DATA its length-prefixed gRPC messages,
//! each decoded to JSON through the runtime's own descriptors (Layotto's
//! and Dapr's APIs, gRPC health), or shown in hex when the method is
//! unknown or a message does not decode.
//!
//! A dump holds windows, not whole connections. A connection first seen
//! after its start (no preface), or with bytes missing between two samples
//! (read outside the window, or dropped), is read on the assumption that a
//! frame starts where its sample starts, with a fresh header table: header
//! blocks that refer to entries from before are reported as not decodable,
//! as is whatever follows a frame header that makes no sense.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;

use base64::Engine;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde::Serialize;

use super::DumpLine;

/// The client's connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Above any frame size a server of ours accepts (its SETTINGS allow
/// 16 KiB unless raised); a longer frame header means the frames' boundary
/// is lost.
const MAX_FRAME: usize = 1 << 20;
/// The header table a client may use (HTTP/2's default is 4 KiB).
const MAX_HEADER_TABLE: usize = 64 * 1024;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const CONTINUATION: u8 = 9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// What a dump holds.
#[derive(Debug, Default, Serialize)]
pub struct Decoded {
    /// The calls, in the order their first bytes were read.
    pub calls: Vec<Call>,
    /// What could not be read, and why.
    pub notes: Vec<String>,
}

/// One gRPC call as its client sent it.
#[derive(Debug, Serialize)]
pub struct Call {
    /// When its first sampled bytes were read.
    pub time: String,
    pub port: u16,
    pub conn: u64,
    pub stream: u32,
    /// `:path`, `/package.Service/Method`; `None` when its headers were
    /// not sampled or not decodable.
    pub method: Option<String>,
    /// The request messages.
    pub messages: Vec<Message>,
    /// What could not be read of this call.
    pub notes: Vec<String>,
}

/// One request message.
#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Message {
    /// Decoded with the method's input type (protobuf's JSON mapping).
    Json(serde_json::Value),
    /// Shown as it was sent.
    Raw { hex: String, why: String },
}

/// A dump line and its bytes.
type Sampled = (DumpLine, Vec<u8>);

/// Decodes a dump's text: one JSON sample a line.
pub fn decode_dump(text: &str) -> Decoded {
    let pool = descriptors();
    let mut notes = Vec::new();
    let mut conns: BTreeMap<(u16, u64), Vec<Sampled>> = BTreeMap::new();
    let mut first_seen: Vec<(u16, u64)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = n.saturating_add(1);
        let sample: DumpLine = match serde_json::from_str(line) {
            Ok(sample) => sample,
            Err(e) => {
                notes.push(format!("line {number}: not a sample ({e})"));
                continue;
            }
        };
        let bytes = match base64::engine::general_purpose::STANDARD.decode(&sample.bytes) {
            Ok(bytes) => bytes,
            Err(e) => {
                notes.push(format!("line {number}: bytes are not base64 ({e})"));
                continue;
            }
        };
        let key = (sample.port, sample.conn);
        let entry = conns.entry(key).or_default();
        if entry.is_empty() {
            first_seen.push(key);
        }
        entry.push((sample, bytes));
    }
    let mut calls = Vec::new();
    for key in first_seen {
        let Some(mut samples) = conns.remove(&key) else {
            continue;
        };
        samples.sort_by_key(|(s, _)| s.offset);
        let mut conn = ConnReader::new(key.0, key.1, &pool);
        for (sample, bytes) in &samples {
            conn.feed(sample, bytes);
        }
        let (conn_calls, conn_notes) = conn.finish();
        calls.extend(conn_calls);
        notes.extend(conn_notes);
    }
    // Calls of different connections interleave in time; RFC 3339 with a
    // fixed precision in UTC sorts as text.
    calls.sort_by(|a, b| a.time.cmp(&b.time));
    Decoded { calls, notes }
}

/// The runtime's descriptors: Layotto's API, Dapr's, gRPC health, and
/// every registered API plugin's (configured or not: the dump does not
/// say which were).
fn descriptors() -> DescriptorPool {
    let mut pool = DescriptorPool::new();
    let plugins = crate::api::plugins::PLUGINS.iter().map(|p| p.file_descriptor_set());
    for set in [
        crate::proto::FILE_DESCRIPTOR_SET,
        crate::proto::DAPR_FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    .chain(plugins)
    {
        if let Err(e) = pool.decode_file_descriptor_set(set) {
            tracing::warn!(error = %e, "A descriptor set does not load; its messages show in hex");
        }
    }
    pool
}

fn method_of(pool: &DescriptorPool, path: &str) -> Option<MethodDescriptor> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    pool.get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == method)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A call being read: its index in the connection's calls, and the bytes
/// of a message not complete yet.
struct Open {
    call: usize,
    body: Vec<u8>,
}

/// A header block waiting for its CONTINUATION frames.
struct PendingBlock {
    stream: u32,
    block: Vec<u8>,
    /// When its HEADERS frame began.
    time: String,
}

/// One connection's samples, read as HTTP/2.
struct ConnReader<'p> {
    port: u16,
    conn: u64,
    pool: &'p DescriptorPool,
    hpack: loona_hpack::Decoder<'static>,
    /// The header table may lack entries from before the samples.
    table_partial: bool,
    /// Where the next sample should start.
    next_offset: Option<u64>,
    /// Bytes not yet read as a frame.
    buf: Vec<u8>,
    /// Where `buf` starts in the connection.
    buf_pos: u64,
    /// Where each sample still in `buf` starts, and when it was read.
    times: VecDeque<(u64, String)>,
    /// The preface is still to be read.
    want_preface: bool,
    /// The frames' boundary is lost until the next gap.
    lost: bool,
    pending: Option<PendingBlock>,
    open: HashMap<u32, Open>,
    calls: Vec<Call>,
    notes: Vec<String>,
    /// When the frame being read began.
    time: String,
}

impl<'p> ConnReader<'p> {
    fn new(port: u16, conn: u64, pool: &'p DescriptorPool) -> Self {
        ConnReader {
            port,
            conn,
            pool,
            hpack: fresh_hpack(),
            table_partial: false,
            next_offset: None,
            buf: Vec::new(),
            buf_pos: 0,
            times: VecDeque::new(),
            want_preface: false,
            lost: false,
            pending: None,
            open: HashMap::new(),
            calls: Vec::new(),
            notes: Vec::new(),
            time: String::new(),
        }
    }

    fn note(&mut self, text: String) {
        self.notes
            .push(format!("port {} conn {}: {text}", self.port, self.conn));
    }

    fn feed(&mut self, sample: &DumpLine, bytes: &[u8]) {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let mut bytes = bytes;
        match self.next_offset {
            None if sample.offset == 0 => self.want_preface = true,
            None => {
                self.note(format!(
                    "first sampled at byte {} (the window began after the connection did): no preface; \
                     frames are taken to start there, and header blocks that refer to earlier ones cannot be decoded",
                    sample.offset
                ));
                self.resync();
            }
            Some(next) if sample.offset > next => {
                let missing = sample.offset.saturating_sub(next);
                self.note(format!(
                    "{missing} bytes missing at byte {next} (read outside the window, or dropped); \
                     frames are taken to start again at byte {}",
                    sample.offset
                ));
                self.resync();
            }
            Some(next) if sample.offset < next => {
                // Overlap: only the bytes not seen yet.
                let seen = usize::try_from(next.saturating_sub(sample.offset)).unwrap_or(usize::MAX);
                bytes = bytes.get(seen..).unwrap_or_default();
            }
            Some(_) => {}
        }
        let end = sample.offset.saturating_add(len);
        let start = end.saturating_sub(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        self.next_offset = Some(self.next_offset.map_or(end, |next| next.max(end)));
        if self.lost || bytes.is_empty() {
            return;
        }
        if self.buf.is_empty() {
            self.buf_pos = start;
            self.times.clear();
        }
        self.times.push_back((start, sample.time.clone()));
        self.buf.extend_from_slice(bytes);
        self.read_frames();
    }

    /// After a gap: nothing pending survives, and the header table starts
    /// afresh.
    fn resync(&mut self) {
        self.buf.clear();
        self.times.clear();
        self.want_preface = false;
        self.lost = false;
        if let Some(pending) = self.pending.take() {
            let call = self.call_for(pending.stream);
            self.note_call(call, "its header block was cut off by missing bytes".into());
        }
        let open: Vec<(u32, Open)> = self.open.drain().collect();
        for (_, open) in open {
            if !open.body.is_empty() {
                let n = open.body.len();
                self.note_call(
                    open.call,
                    format!("{n} bytes of a message before missing bytes were left out"),
                );
            }
            // The stream may go on after the gap, but where its message
            // boundaries are is lost; its later DATA opens a new entry.
        }
        self.hpack = fresh_hpack();
        self.table_partial = true;
    }

    fn read_frames(&mut self) {
        if self.want_preface {
            if self.buf.len() < PREFACE.len() {
                if !PREFACE.starts_with(&self.buf) {
                    self.note("does not start with HTTP/2's client preface; not read".into());
                    self.lost = true;
                }
                return;
            }
            if self.buf.get(..PREFACE.len()) != Some(PREFACE) {
                self.note("does not start with HTTP/2's client preface; not read".into());
                self.lost = true;
                return;
            }
            self.buf.drain(..PREFACE.len());
            self.buf_pos = self.buf_pos.saturating_add(PREFACE.len() as u64);
            self.want_preface = false;
        }
        loop {
            let Some(header) = self.buf.get(..9) else { return };
            let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let kind = header[3];
            let flags = header[4];
            let stream = u32::from_be_bytes([header[5] & 0x7f, header[6], header[7], header[8]]);
            if len > MAX_FRAME || ((kind == DATA || kind == HEADERS || kind == CONTINUATION) && stream == 0) {
                self.note("a frame header makes no sense here (frames' boundary lost); the rest until the next gap is not read".into());
                self.lost = true;
                self.buf.clear();
                return;
            }
            let Some(end) = 9usize.checked_add(len) else { return };
            if self.buf.len() < end {
                return;
            }
            let payload: Vec<u8> = self.buf.get(9..end).unwrap_or_default().to_vec();
            self.time = self.time_at(self.buf_pos);
            self.buf.drain(..end);
            self.buf_pos = self.buf_pos.saturating_add(u64::try_from(end).unwrap_or(u64::MAX));
            self.frame(kind, flags, stream, &payload);
            if self.lost {
                return;
            }
        }
    }

    /// When the sample holding byte `pos` was read.
    fn time_at(&mut self, pos: u64) -> String {
        while self.times.get(1).is_some_and(|(start, _)| *start <= pos) {
            self.times.pop_front();
        }
        self.times.front().map(|(_, time)| time.clone()).unwrap_or_default()
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        if let Some(pending) = &mut self.pending {
            if kind != CONTINUATION || pending.stream != stream {
                let stream = pending.stream;
                self.pending = None;
                let call = self.call_for(stream);
                self.note_call(call, "its header block was not followed by its CONTINUATION".into());
            } else {
                pending.block.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0
                    && let Some(done) = self.pending.take()
                {
                    self.time = done.time;
                    self.headers(done.stream, &done.block);
                }
                return;
            }
        }
        match kind {
            HEADERS => {
                let Some(fragment) = unpad(flags, payload, true) else {
                    let call = self.call_for(stream);
                    self.note_call(call, "a HEADERS frame with bad padding".into());
                    return;
                };
                if flags & FLAG_END_HEADERS != 0 {
                    self.headers(stream, fragment);
                } else {
                    self.pending = Some(PendingBlock {
                        stream,
                        block: fragment.to_vec(),
                        time: self.time.clone(),
                    });
                }
            }
            DATA => {
                let Some(data) = unpad(flags, payload, false) else {
                    let call = self.call_for(stream);
                    self.note_call(call, "a DATA frame with bad padding".into());
                    return;
                };
                self.data(stream, data);
            }
            CONTINUATION => {
                let call = self.call_for(stream);
                self.note_call(call, "a CONTINUATION without its HEADERS (not sampled)".into());
            }
            // SETTINGS, PING, WINDOW_UPDATE, RST_STREAM, PRIORITY, GOAWAY:
            // nothing of a call.
            _ => {}
        }
    }

    fn headers(&mut self, stream: u32, block: &[u8]) {
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.hpack.decode(block)));
        match decoded {
            Ok(Ok(fields)) => {
                let path = fields
                    .iter()
                    .find(|(name, _)| name.as_slice() == b":path")
                    .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
                match self.open.get(&stream) {
                    // Trailers, or headers again: the call is known.
                    Some(_) => {}
                    None => {
                        let call = self.new_call(stream, path.clone());
                        if path.is_none() {
                            self.note_call(call, "its headers have no :path".into());
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                let why = if self.table_partial {
                    format!(
                        "its headers are not decodable ({e}): they refer to header table entries from before the samples"
                    )
                } else {
                    format!("its headers are not decodable ({e})")
                };
                let call = self.new_call(stream, None);
                self.note_call(call, why);
                self.hpack = fresh_hpack();
                self.table_partial = true;
            }
            Err(_) => {
                let call = self.new_call(stream, None);
                self.note_call(call, "its headers are not decodable (the HPACK decoder failed)".into());
                self.hpack = fresh_hpack();
                self.table_partial = true;
            }
        }
    }

    fn new_call(&mut self, stream: u32, method: Option<String>) -> usize {
        self.calls.push(Call {
            time: self.time.clone(),
            port: self.port,
            conn: self.conn,
            stream,
            method,
            messages: Vec::new(),
            notes: Vec::new(),
        });
        let call = self.calls.len().saturating_sub(1);
        self.open.insert(stream, Open { call, body: Vec::new() });
        call
    }

    /// The call of `stream`, opened without headers when they were not
    /// sampled.
    fn call_for(&mut self, stream: u32) -> usize {
        if let Some(open) = self.open.get(&stream) {
            return open.call;
        }
        let call = self.new_call(stream, None);
        self.note_call(
            call,
            "its headers were not sampled (or not decodable): the method is unknown".into(),
        );
        call
    }

    fn note_call(&mut self, call: usize, text: String) {
        if let Some(call) = self.calls.get_mut(call) {
            call.notes.push(text);
        }
    }

    fn data(&mut self, stream: u32, data: &[u8]) {
        let call = self.call_for(stream);
        let Some(open) = self.open.get_mut(&stream) else { return };
        open.body.extend_from_slice(data);
        let mut messages = Vec::new();
        while let Some(prefix) = open.body.get(..5) {
            let compressed = prefix[0] != 0;
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
            let Some(end) = usize::try_from(len).ok().and_then(|l| l.checked_add(5)) else {
                break;
            };
            if open.body.len() < end {
                break;
            }
            let message: Vec<u8> = open.body.get(5..end).unwrap_or_default().to_vec();
            open.body.drain(..end);
            messages.push((compressed, message));
        }
        let method = self
            .calls
            .get(call)
            .and_then(|c| c.method.as_deref())
            .and_then(|path| method_of(self.pool, path));
        for (compressed, bytes) in messages {
            let message = decode_message(method.as_ref(), compressed, &bytes);
            if let Some(call) = self.calls.get_mut(call) {
                call.messages.push(message);
            }
        }
    }

    fn finish(mut self) -> (Vec<Call>, Vec<String>) {
        if let Some(pending) = self.pending.take() {
            let call = self.call_for(pending.stream);
            self.note_call(call, "its header block ends with the samples".into());
        }
        let open: Vec<Open> = self.open.drain().map(|(_, o)| o).collect();
        for open in open {
            if !open.body.is_empty() {
                let n = open.body.len();
                self.note_call(
                    open.call,
                    format!("{n} bytes of a message end with the samples (its rest was not sampled)"),
                );
            }
        }
        (self.calls, self.notes)
    }
}

fn fresh_hpack() -> loona_hpack::Decoder<'static> {
    let mut hpack = loona_hpack::Decoder::new();
    hpack.set_max_allowed_table_size(MAX_HEADER_TABLE);
    hpack
}

/// A frame's payload without its padding (and, for HEADERS, its priority
/// fields); `None` when the padding does not fit.
fn unpad(flags: u8, payload: &[u8], headers: bool) -> Option<&[u8]> {
    let mut body = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        pad = usize::from(*body.first()?);
        body = body.get(1..)?;
    }
    if headers && flags & FLAG_PRIORITY != 0 {
        body = body.get(5..)?;
    }
    body.get(..body.len().checked_sub(pad)?)
}

fn decode_message(method: Option<&MethodDescriptor>, compressed: bool, bytes: &[u8]) -> Message {
    let raw = |why: String| Message::Raw { hex: hex(bytes), why };
    if compressed {
        return raw("compressed (grpc-encoding); shown as sent".into());
    }
    let Some(method) = method else {
        return raw("the method is unknown to this runtime".into());
    };
    match DynamicMessage::decode(method.input(), bytes) {
        Ok(message) => match serde_json::to_value(&message) {
            Ok(json) => Message::Json(json),
            Err(e) => raw(format!("not shown as JSON: {e}")),
        },
        Err(e) => raw(format!("not a {}: {e}", method.input().full_name())),
    }
}

/// The calls as text: a line per call (time, port, connection, stream,
/// method), its messages indented below as JSON (or hex), then notes.
pub fn render(decoded: &Decoded) -> String {
    let mut out = String::new();
    for call in &decoded.calls {
        let _ = writeln!(
            out,
            "{} port {} conn {} stream {} {}",
            call.time,
            call.port,
            call.conn,
            call.stream,
            call.method.as_deref().unwrap_or("(method unknown)")
        );
        for message in &call.messages {
            match message {
                Message::Json(json) => {
                    let _ = writeln!(out, "  {json}");
                }
                Message::Raw { hex, why } => {
                    let _ = writeln!(out, "  hex {hex} ({why})");
                }
            }
        }
        for note in &call.notes {
            let _ = writeln!(out, "  ! {note}");
        }
    }
    for note in &decoded.notes {
        let _ = writeln!(out, "! {note}");
    }
    out
}

#[cfg(test)]
mod tests;
