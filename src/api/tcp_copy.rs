//! TCP copy (Layotto's `tcpcopy` network filter): samples of the raw bytes
//! the gRPC API listener receives, written to a dump file for replay and
//! debugging.
//!
//! Sampling is on during the first `duration` of every `interval` since the
//! listener started, and only while the host's CPU and memory use are under
//! their ceilings (read from `/proc` once a second by a thread of their
//! own, never on a read). Each accepted connection is wrapped in a
//! [`Teed`] reader: when sampling is on, the bytes a read just returned are
//! copied into a bounded queue with `try_send`, which never waits; when the
//! queue is full the sample is dropped and counted. The bytes go on to the
//! server untouched.
//!
//! A dedicated thread drains the queue and appends each sample to
//! `<dir>/dump_tcp_copy.log`, one JSON object per line:
//!
//! ```json
//! {"time":"2025-01-02T03:04:05.678901Z","conn":3,"port":34904,"offset":0,"window":"2025-01-02T03:04:05.000000Z","bytes":"UFJJIC..."}
//! ```
//!
//! `time` is when the bytes were read, `conn` the connection's number on
//! this listener (from 1), `offset` where the bytes start in what the
//! connection has sent (a gap means bytes were read outside the window or
//! dropped), `window` the start of the sampling window, `bytes` the bytes
//! in standard base64. A write that fails (a full disk) drops its samples,
//! counted, and is logged at most once a minute. Samples are counted in
//! `layotto_tcp_copy_samples_total{outcome="written"|"dropped"}`.
//!
//! [`decode`] reads a dump back into gRPC calls (`layotto tcpcopy-decode`).

pub mod decode;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::TcpCopyConfig;
use crate::metrics::Metrics;

/// Samples the writer takes from the queue before one write.
const BATCH: usize = 256;
/// How often the host's CPU and memory use are read.
const USAGE_REFRESH: Duration = Duration::from_secs(1);
/// A failing dump file is reported at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// The host's CPU and memory use, in percent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub cpu: f64,
    pub mem: f64,
}

/// Where the host's usage comes from.
type UsageReader = Box<dyn FnMut() -> Option<Usage> + Send>;

/// Test builds only: every TCP copy reads the host as idle, so that tests
/// sampling on a busy machine (other tests, builds) see their window.
#[cfg(feature = "test-components")]
pub fn pretend_host_is_idle() {
    PRETEND_IDLE.store(true, Ordering::Release);
}

#[cfg(feature = "test-components")]
static PRETEND_IDLE: AtomicBool = AtomicBool::new(false);

/// One read's bytes, sampled.
struct Sample {
    time: SystemTime,
    conn: u64,
    offset: u64,
    window: u64,
    bytes: Vec<u8>,
}

/// The TCP copy of one listener: its window, its fuse, its queue. Every
/// connection holds it; the writer thread ends once the last one is gone.
pub struct TcpCopy {
    port: u16,
    started: Instant,
    interval: Duration,
    duration: Duration,
    next_conn: AtomicU64,
    /// Host usage under both ceilings, as last read.
    fuse: Arc<AtomicBool>,
    queue: SyncSender<Sample>,
    dropped: prometheus::IntCounter,
}

impl TcpCopy {
    /// Starts the TCP copy of the listener on `port` when `config`
    /// switches it on: its writer and usage threads. `None` when it is off,
    /// or its threads cannot start (logged; the listener serves anyway).
    pub fn start(config: &TcpCopyConfig, port: u16, metrics: &Metrics) -> Option<Arc<TcpCopy>> {
        if !config.enabled {
            return None;
        }
        let mut cpu = CpuMeter::default();
        let reader: UsageReader = Box::new(move || {
            #[cfg(feature = "test-components")]
            if PRETEND_IDLE.load(Ordering::Acquire) {
                return Some(Usage { cpu: 0.0, mem: 0.0 });
            }
            let cpu = cpu.read()?;
            let mem = memory_use()?;
            Some(Usage { cpu, mem })
        });
        let copy = Self::with_usage(config, port, metrics, reader);
        if copy.is_some() {
            tracing::info!(
                port,
                file = %config.dump_file().display(),
                interval = config.interval,
                duration = config.duration,
                "TCP copy is on"
            );
        }
        copy
    }

    fn with_usage(
        config: &TcpCopyConfig,
        port: u16,
        metrics: &Metrics,
        mut usage: UsageReader,
    ) -> Option<Arc<TcpCopy>> {
        let (cpu_max, mem_max) = (config.cpu_max_rate, config.mem_max_rate);
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let interval = Duration::from_secs(config.interval);
        let (queue, samples) = std::sync::mpsc::sync_channel(config.queue.max(1));
        let written = metrics.tcp_copy_samples("written");
        let dropped = metrics.tcp_copy_samples("dropped");

        // The first reading at once (the CPU's since boot), so that the
        // first window is not lost waiting for a second one.
        let under = move |u: Option<Usage>| u.is_some_and(|u| u.cpu < cpu_max && u.mem < mem_max);
        let first = usage();
        if first.is_none() {
            tracing::warn!("TCP copy takes no sample: the host's CPU and memory use cannot be read (/proc)");
        }
        let fuse = Arc::new(AtomicBool::new(under(first)));
        let watched: Weak<AtomicBool> = Arc::downgrade(&fuse);
        let usage_thread = std::thread::Builder::new()
            .name("tcp-copy-usage".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(USAGE_REFRESH);
                    let Some(fuse) = watched.upgrade() else { return };
                    let now = usage();
                    let was = fuse.swap(under(now), Ordering::AcqRel);
                    if was != under(now) {
                        tracing::debug!(usage = ?now, cpu_max, mem_max, sampling = !was, "TCP copy fuse");
                    }
                }
            });
        if let Err(error) = usage_thread {
            tracing::error!(%error, "TCP copy is off: cannot start its usage thread");
            return None;
        }

        let writer = Writer {
            path: config.dump_file(),
            dir: config.dump_dir(),
            port,
            started: started_wall,
            interval,
            file: None,
            written,
            dropped: dropped.clone(),
            last_error_log: None,
        };
        if let Err(error) = std::thread::Builder::new()
            .name("tcp-copy-writer".into())
            .spawn(move || writer.run(samples))
        {
            tracing::error!(%error, "TCP copy is off: cannot start its writer thread");
            return None;
        }
        Some(Arc::new(TcpCopy {
            port,
            started,
            interval,
            duration: Duration::from_secs(config.duration),
            next_conn: AtomicU64::new(1),
            fuse,
            queue,
            dropped,
        }))
    }

    /// The listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The current window's number when sampling is on now.
    fn sampling(&self) -> Option<u64> {
        if !self.fuse.load(Ordering::Acquire) {
            return None;
        }
        let elapsed = self.started.elapsed().as_millis();
        let interval = self.interval.as_millis();
        let window = elapsed.checked_div(interval)?;
        let into = elapsed.checked_rem(interval)?;
        (into < self.duration.as_millis()).then(|| u64::try_from(window).unwrap_or(u64::MAX))
    }

    /// Queues a sample; never waits. A full queue drops it, counted.
    fn offer(&self, sample: Sample) {
        match self.queue.try_send(sample) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Wraps an accepted connection.
    pub fn tee<IO>(self: &Arc<Self>, io: IO) -> Teed<IO> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        Teed {
            io,
            tap: Some(Tap {
                copy: self.clone(),
                conn,
                offset: 0,
            }),
        }
    }
}

/// A connection whose inbound bytes are sampled by a [`TcpCopy`] (or not:
/// [`Teed::plain`]).
pub struct Teed<IO> {
    io: IO,
    tap: Option<Tap>,
}

struct Tap {
    copy: Arc<TcpCopy>,
    conn: u64,
    /// Bytes read so far.
    offset: u64,
}

impl<IO> Teed<IO> {
    /// A connection without TCP copy.
    pub fn plain(io: IO) -> Self {
        Teed { io, tap: None }
    }

    /// `io` under `copy`, when there is one.
    pub fn new(io: IO, copy: Option<&Arc<TcpCopy>>) -> Self {
        match copy {
            Some(copy) => copy.tee(io),
            None => Teed::plain(io),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Teed<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(tap)) = (&read, this.tap.as_mut()) {
            let bytes = buf.filled().get(before..).unwrap_or_default();
            if !bytes.is_empty() {
                let offset = tap.offset;
                let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                tap.offset = tap.offset.saturating_add(len);
                if let Some(window) = tap.copy.sampling() {
                    tap.copy.offer(Sample {
                        time: SystemTime::now(),
                        conn: tap.conn,
                        offset,
                        window,
                        bytes: bytes.to_vec(),
                    });
                }
            }
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Teed<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One line of the dump file.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct DumpLine {
    /// When the bytes were read, RFC 3339 with microseconds, UTC.
    pub time: String,
    /// The connection's number on its listener, from 1.
    pub conn: u64,
    /// The listener's port.
    pub port: u16,
    /// Where the bytes start in what the connection has sent.
    #[serde(default)]
    pub offset: u64,
    /// The start of the sampling window.
    pub window: String,
    /// The bytes, standard base64.
    pub bytes: String,
}

fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    dir: PathBuf,
    port: u16,
    started: SystemTime,
    interval: Duration,
    file: Option<File>,
    written: prometheus::IntCounter,
    dropped: prometheus::IntCounter,
    last_error_log: Option<Instant>,
}

impl Writer {
    /// Writes batches until every sender is gone.
    fn run(mut self, samples: Receiver<Sample>) {
        let mut text = Vec::new();
        while let Ok(first) = samples.recv() {
            text.clear();
            let mut count: u64 = 0;
            for sample in std::iter::once(first).chain(samples.try_iter().take(BATCH)) {
                self.line(&sample, &mut text);
                count = count.saturating_add(1);
            }
            match self.write(&text) {
                Ok(()) => self.written.inc_by(count),
                Err(error) => {
                    self.dropped.inc_by(count);
                    // Opened afresh next time (the disk may have room then,
                    // or the file been rotated).
                    self.file = None;
                    let due = self.last_error_log.is_none_or(|at| at.elapsed() >= ERROR_LOG_EVERY);
                    if due {
                        self.last_error_log = Some(Instant::now());
                        tracing::warn!(
                            file = %self.path.display(),
                            %error,
                            "TCP copy cannot write its dump; samples are dropped (logged at most once a minute)"
                        );
                    }
                }
            }
        }
    }

    fn line(&self, sample: &Sample, out: &mut Vec<u8>) {
        let window_start = u32::try_from(sample.window)
            .ok()
            .and_then(|n| self.interval.checked_mul(n))
            .and_then(|offset| self.started.checked_add(offset))
            .unwrap_or(self.started);
        let line = DumpLine {
            time: rfc3339(sample.time),
            conn: sample.conn,
            port: self.port,
            offset: sample.offset,
            window: rfc3339(window_start),
            bytes: base64::engine::general_purpose::STANDARD.encode(&sample.bytes),
        };
        // Serializing plain strings and numbers cannot fail.
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }

    fn write(&mut self, text: &[u8]) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open(&self.dir, &self.path)?),
        };
        file.write_all(text)?;
        file.flush()
    }
}

fn open(dir: &Path, path: &Path) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    OpenOptions::new().create(true).append(true).open(path)
}

/// CPU use over the time since the last reading, from `/proc/stat`'s
/// `cpu` line; the first reading is the average since boot.
#[derive(Default)]
struct CpuMeter {
    last: Option<(u64, u64)>,
    value: Option<f64>,
}

impl CpuMeter {
    fn read(&mut self) -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let (busy, total) = cpu_times(&stat)?;
        let (since_busy, since_total) = match self.last {
            Some((b, t)) => (busy.checked_sub(b)?, total.checked_sub(t)?),
            None => (busy, total),
        };
        self.last = Some((busy, total));
        if since_total > 0 {
            self.value = Some(percent(since_busy, since_total));
        }
        self.value
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    // Precision loss is irrelevant at these magnitudes.
    (part as f64) * 100.0 / (whole as f64)
}

/// (busy, total) jiffies from `/proc/stat`'s aggregate `cpu` line: busy is
/// all but idle and iowait; guest time is already in user time.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    let total = fields.iter().try_fold(0u64, |sum, f| sum.checked_add(*f))?;
    let idle = fields.get(3)?.checked_add(*fields.get(4)?)?;
    Some((total.checked_sub(idle)?, total))
}

/// Memory in use, percent: `MemTotal` less `MemAvailable`.
fn memory_use() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    memory_percent(&meminfo)
}

fn memory_percent(meminfo: &str) -> Option<f64> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line.get(name.len()..)?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some(percent(total.checked_sub(available)?, total))
}

#[cfg(test)]
mod tests;
