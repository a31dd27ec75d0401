//! Load generation and reporting shared by the benchmarks.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tonic::transport::Channel;

/// How hard and how long to push.
#[derive(Clone)]
pub struct Load {
    pub rounds: usize,
    pub seconds: f64,
    pub concurrency: usize,
    pub connections: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Load {
    pub fn from_env() -> Load {
        Load {
            rounds: env_or("BENCH_ROUNDS", 5),
            seconds: env_or("BENCH_SECONDS", 3.0),
            concurrency: env_or("BENCH_CONCURRENCY", 64),
            connections: env_or("BENCH_CONNECTIONS", 4),
        }
    }

    /// The same rounds, one call at a time on one connection.
    pub fn sequential(&self) -> Load {
        Load {
            concurrency: 1,
            connections: 1,
            ..self.clone()
        }
    }

    /// Runs `call` from `concurrency` tasks spread over `conns` (gRPC
    /// channels, or any other client) for the round's duration, on the
    /// client's thread.
    pub async fn run<C, F, Fut, E>(&self, client: &Client, conns: &[C], call: F) -> Sample
    where
        C: Clone + Send + 'static,
        F: Fn(C) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Send + 'static,
    {
        let duration = Duration::from_secs_f64(self.seconds);
        let started = Instant::now();
        let deadline = started + duration;
        let tasks: Vec<_> = (0..self.concurrency)
            .map(|i| {
                let conn = conns[i % conns.len()].clone();
                let call = call.clone();
                client.0.spawn(async move {
                    let mut latencies = Vec::new();
                    let mut errors = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match call(conn.clone()).await {
                            Ok(()) => latencies.push(t.elapsed().as_micros() as u32),
                            Err(_) => errors += 1,
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        let mut errors = 0;
        for task in tasks {
            if let Ok((l, e)) = task.await {
                latencies.extend(l);
                errors += e;
            }
        }
        Sample::new(latencies, errors, started.elapsed())
    }
}

/// The load generator: a thread of its own with a single-threaded
/// runtime, standing in for the application beside the sidecar, so that
/// client work does not run on the server's worker threads.
pub struct Client(tokio::runtime::Handle);

impl Client {
    pub fn start() -> anyhow::Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("bench-client".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        Ok(Client(handle))
    }

    /// Opens `n` HTTP/2 connections to `addr`, owned by the client thread.
    pub async fn channels(&self, addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
        self.0
            .spawn(async move {
                let mut out = Vec::new();
                for _ in 0..n.max(1) {
                    out.push(
                        Channel::from_shared(format!("http://{addr}"))?
                            .tcp_nodelay(true)
                            .connect()
                            .await?,
                    );
                }
                Ok(out)
            })
            .await?
    }

    /// Runs a future on the client thread (to create clients whose tasks
    /// must live there).
    pub async fn spawn<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> anyhow::Result<T> {
        Ok(self.0.spawn(f).await?)
    }
}

/// One round of one variant.
pub struct Sample {
    pub ok: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_us: u32,
    pub p90_us: u32,
    pub p99_us: u32,
}

impl Sample {
    pub fn new(mut latencies: Vec<u32>, errors: u64, elapsed: Duration) -> Sample {
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0)
        };
        Sample {
            ok: latencies.len() as u64,
            errors,
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50_us: pct(0.50),
            p90_us: pct(0.90),
            p99_us: pct(0.99),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians over the rounds of one variant.
struct Medians {
    per_second: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    ok: u64,
    errors: u64,
}

/// The rows of one benchmark, printed and written to docs/benchmarks.md.
pub struct Report {
    name: &'static str,
    /// The benchmark name that runs it (`cargo bench --bench runtime --
    /// NAME`); the report's own name unless set.
    run_by: &'static str,
    title: &'static str,
    variants: Vec<(String, Vec<Sample>)>,
    ratios: Vec<String>,
}

impl Report {
    pub fn new(name: &'static str, title: &'static str) -> Report {
        Report {
            name,
            run_by: name,
            title,
            variants: Vec::new(),
            ratios: Vec::new(),
        }
    }

    /// Names the benchmark that writes this report, when it writes more
    /// than one.
    pub fn run_by(mut self, benchmark: &'static str) -> Report {
        self.run_by = benchmark;
        self
    }

    pub fn add(&mut self, variant: &str, sample: Sample) {
        eprintln!(
            "{:>28}: {:>9.0} calls/s  p50 {:>6} µs  p90 {:>6} µs  p99 {:>6} µs  errors {}",
            variant, sample.per_second, sample.p50_us, sample.p90_us, sample.p99_us, sample.errors
        );
        match self.variants.iter_mut().find(|(v, _)| v == variant) {
            Some((_, samples)) => samples.push(sample),
            None => self.variants.push((variant.to_owned(), vec![sample])),
        }
    }

    fn medians(&self, variant: &str) -> Option<Medians> {
        let (_, samples) = self.variants.iter().find(|(v, _)| v == variant)?;
        Some(Medians {
            per_second: median(samples.iter().map(|s| s.per_second).collect()),
            p50: median(samples.iter().map(|s| f64::from(s.p50_us)).collect()),
            p90: median(samples.iter().map(|s| f64::from(s.p90_us)).collect()),
            p99: median(samples.iter().map(|s| f64::from(s.p99_us)).collect()),
            ok: samples.iter().map(|s| s.ok).sum(),
            errors: samples.iter().map(|s| s.errors).sum(),
        })
    }

    /// Records `a / b` of median throughput, with what it means.
    pub fn ratio(&mut self, a: &str, b: &str, meaning: &str) {
        if let (Some(a_m), Some(b_m)) = (self.medians(a), self.medians(b)) {
            let line = format!("**{:.3}**: {meaning}", a_m.per_second / b_m.per_second);
            eprintln!("{line}");
            self.ratios.push(line);
        }
    }

    /// Records a result line computed from the medians.
    pub fn note(&mut self, line: String) {
        eprintln!("{line}");
        self.ratios.push(line);
    }

    /// Median p50 and p99 latency of a variant, in microseconds.
    pub fn latency(&self, variant: &str) -> (f64, f64) {
        self.medians(variant).map(|m| (m.p50, m.p99)).unwrap_or_default()
    }

    /// Records the latency `a` adds over `b` (medians of p50, p90, p99)
    /// and the ratio of their throughput.
    pub fn added(&mut self, a: &str, b: &str, meaning: &str) {
        if let (Some(a_m), Some(b_m)) = (self.medians(a), self.medians(b)) {
            let line = format!(
                "{meaning}: added p50 **{:+.0} µs**, p90 **{:+.0} µs**, p99 **{:+.0} µs**; throughput ratio **{:.3}**",
                a_m.p50 - b_m.p50,
                a_m.p90 - b_m.p90,
                a_m.p99 - b_m.p99,
                a_m.per_second / b_m.per_second
            );
            self.note(line);
        }
    }

    /// Writes the report's section of docs/benchmarks.md (unless
    /// `BENCH_WRITE=0`).
    pub fn finish(&self, load: &Load) -> std::io::Result<()> {
        if self.variants.is_empty() {
            // A measurement with its own figures (no load rounds).
            let mut md = format!(
                "### {}\n\n{}. Measured {} by `cargo bench --bench runtime -- {}` on this {}-core machine.\n\n",
                self.name,
                self.title,
                humantime::format_rfc3339_seconds(SystemTime::now()),
                self.run_by,
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            );
            for line in &self.ratios {
                md.push_str(&format!("- {line}\n"));
            }
            if std::env::var("BENCH_WRITE").as_deref() == Ok("0") {
                return Ok(());
            }
            return write_section(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md"),
                self.name,
                &md,
            );
        }
        let mut md = format!(
            "### {}\n\n{}. Measured {} by `cargo bench --bench runtime -- {}`: {} rounds of {} s per variant, alternating, \
             {} calls in flight over {} connections, client and server in one process \
             on this {}-core machine. Medians over rounds.\n\n| variant | calls/s | p50 µs | p90 µs | p99 µs | calls | errors |\n|---|---:|---:|---:|---:|---:|---:|\n",
            self.name,
            self.title,
            humantime::format_rfc3339_seconds(SystemTime::now()),
            self.run_by,
            load.rounds,
            load.seconds,
            load.concurrency,
            load.connections,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        );
        for (variant, _) in &self.variants {
            if let Some(m) = self.medians(variant) {
                md.push_str(&format!(
                    "| {variant} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |\n",
                    m.per_second, m.p50, m.p90, m.p99, m.ok, m.errors
                ));
            }
        }
        md.push('\n');
        for line in &self.ratios {
            md.push_str(&format!("- {line}\n"));
        }
        if std::env::var("BENCH_WRITE").as_deref() == Ok("0") {
            return Ok(());
        }
        write_section(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md"),
            self.name,
            &md,
        )
    }
}

/// Replaces the section between `<!-- bench:NAME -->` markers, appending it
/// when absent.
fn write_section(path: &Path, name: &str, body: &str) -> std::io::Result<()> {
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let section = format!("{begin}\n{body}{end}");
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &existing[..b], &existing[e + end.len()..]),
        _ => format!("{}\n{section}\n", existing.trim_end()),
    };
    std::fs::write(path, updated)
}
