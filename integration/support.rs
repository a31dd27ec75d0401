//! Helpers shared by the integration tests: a sidecar in this process on
//! free ports, clients for it, and polling with a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use layotto::config::{self, Format};
use layotto::proto::runtime::v1::SayHelloRequest;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::{Config, Runtime};
use tokio::time::Instant;
use tonic::transport::Channel;

/// Parses a TOML config as the sidecar would (no environment overrides),
/// with every listener on a free loopback port.
pub fn config(toml: &str) -> Config {
    let mut config =
        config::load_str(toml, Format::Toml, "test.toml", Some(BTreeMap::new())).expect("test config is valid");
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.grpc = any_port;
    config.server.actuator = any_port;
    config.server.dapr_http = Some(any_port);
    config
}

/// Starts a sidecar in this process.
pub async fn start(toml: &str) -> Runtime {
    Runtime::start(config(toml)).await.expect("runtime starts")
}

/// A sidecar on `toml` with every component UP, and a client of it.
pub async fn start_ready(toml: &str) -> (Runtime, RuntimeClient<Channel>) {
    let rt = start(toml).await;
    wait_ready(&rt).await;
    let client = client(&rt).await;
    (rt, client)
}

/// Waits until every component is UP; fails the test after 20 s, naming
/// the ones that are not.
pub async fn wait_ready(rt: &Runtime) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rt.status().ready() {
        if Instant::now() > deadline {
            let down: Vec<String> = rt
                .status()
                .components()
                .into_iter()
                .filter(|(_, s)| s.health != layotto::supervisor::Health::Up)
                .map(|(id, s)| format!("{}: {}", id.key(), s.reason))
                .collect();
            panic!("components not UP after 20 s: {down:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A token unique to this test run, for names shared with other tests.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn client(rt: &Runtime) -> RuntimeClient<Channel> {
    client_at(rt.grpc_addr()).await
}

pub async fn client_at(addr: SocketAddr) -> RuntimeClient<Channel> {
    RuntimeClient::connect(format!("http://{addr}"))
        .await
        .expect("connects to the sidecar")
}

pub async fn channel(rt: &Runtime) -> Channel {
    Channel::from_shared(format!("http://{}", rt.grpc_addr()))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects to the sidecar")
}

pub async fn say_hello(
    client: &mut RuntimeClient<Channel>,
    service: &str,
    name: &str,
) -> Result<String, tonic::Status> {
    client
        .say_hello(SayHelloRequest {
            service_name: service.into(),
            name: name.into(),
            data: None,
        })
        .await
        .map(|r| r.into_inner().hello)
}

/// GETs a URL; answers (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("HTTP body"))
}

pub async fn readiness(rt: &Runtime) -> (u16, serde_json::Value) {
    let (code, body) = http_get(&format!("http://{}/actuator/health/readiness", rt.actuator_addr())).await;
    (code, serde_json::from_str(&body).expect("readiness answers JSON"))
}

pub async fn metrics(rt: &Runtime) -> String {
    http_get(&format!("http://{}/metrics", rt.actuator_addr())).await.1
}

/// The value of the series `name{labels}` in a Prometheus text page, e.g.
/// `metric(text, "layotto_component_up", &[("name", "a")])`; labels not
/// given may have any value, and their order does not matter.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (series_labels, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once('}')?,
            None => ("", rest),
        };
        let matches = labels
            .iter()
            .all(|(k, v)| series_labels.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if matches { value.trim().parse().ok() } else { None }
    })
}

/// The labels of a component's series.
pub fn component_labels<'a>(name: &'a str, type_name: &'a str) -> [(&'static str, &'a str); 3] {
    [("kind", "hellos"), ("name", name), ("type", type_name)]
}

/// The labels of a Runtime rpc's request counter.
pub fn rpc_labels<'a>(method: &'a str, code: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("service", "spec.proto.runtime.v1.Runtime"),
        ("method", method),
        ("code", code),
    ]
}

/// Polls `check` until it answers `Some`, or fails the test at `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a backing service answers on `addr`. Outside CI a missing
/// service skips the test (with a printed reason); under `CI=true` it fails
/// it, so CI cannot pass by skipping.
pub fn backend_available(name: &str, addr: &str) -> bool {
    let reachable = addr
        .parse::<SocketAddr>()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok())
        .is_some();
    if reachable {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{name} is not reachable on {addr}, and CI=true requires it");
    }
    eprintln!("skipping: {name} is not reachable on {addr} (start it with ../shared/services.sh)");
    false
}

/// A service of the machine's that a backend under test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Redis,
    Postgres,
    Mariadb,
    Rabbitmq,
    Nats,
    Mosquitto,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Redis => "Redis",
            Service::Postgres => "PostgreSQL",
            Service::Mariadb => "MariaDB",
            Service::Rabbitmq => "RabbitMQ",
            Service::Nats => "NATS",
            Service::Mosquitto => "Mosquitto",
        }
    }

    pub fn addr(self) -> &'static str {
        match self {
            Service::Redis => "127.0.0.1:6379",
            Service::Postgres => "127.0.0.1:5432",
            Service::Mariadb => "127.0.0.1:3306",
            Service::Rabbitmq => "127.0.0.1:5672",
            Service::Nats => "127.0.0.1:4222",
            Service::Mosquitto => "127.0.0.1:1883",
        }
    }
}

/// A backend type under test in a conformance suite: the service it needs,
/// if any, and whether that service is up (see [`backend_available`]).
pub trait BackendType: Copy {
    fn service(self) -> Option<Service>;

    fn available(self) -> bool {
        self.service().is_none_or(|s| backend_available(s.name(), s.addr()))
    }
}

/// One test per case of a conformance suite, for one backend: each starts
/// the suite's `Fixture` on `$backend` (`None`: skipped), runs
/// `super::<case>(&fixture)` and shuts the sidecar down.
#[macro_export]
macro_rules! conformance_cases {
    ($backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(f) = Fixture::start($backend).await else { return };
                super::$case(&f).await;
                f.rt.shutdown().await;
            }
        )*
    };
}

/// Skips (outside CI) or fails (under CI) the test when `$name` at `$addr`
/// is down.
#[macro_export]
macro_rules! require_backend {
    ($name:expr, $addr:expr) => {
        if !$crate::support::backend_available($name, $addr) {
            return;
        }
    };
}

/// A Redis server of the test's own on a free port, for fault tests: it can
/// be killed and started again without touching the shared one.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    /// Extra `redis-server` arguments (persistence, a password).
    args: Vec<String>,
}

impl PrivateRedis {
    /// Starts one, or answers `None` (skip, outside CI) when `redis-server`
    /// is not installed.
    pub fn start() -> Option<PrivateRedis> {
        Self::start_with(&[])
    }

    /// One that keeps its data in `dir` across restarts (append-only file).
    pub fn start_persistent(dir: &std::path::Path) -> Option<PrivateRedis> {
        Self::start_with(&["--appendonly", "yes", "--dir", &dir.display().to_string()])
    }

    /// One started with extra `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> Option<PrivateRedis> {
        let port = free_port();
        let mut redis = PrivateRedis {
            port,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        if !redis.spawn() {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("redis-server is not installed, and CI=true requires it");
            }
            eprintln!("skipping: redis-server is not installed");
            return None;
        }
        Some(redis)
    }

    fn spawn(&mut self) -> bool {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(std::time::Instant::now() < deadline, "private redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server restarts");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `layotto` binary on fixed ports, so a restart is the same sidecar.
pub struct Sidecar {
    config: std::path::PathBuf,
    /// Extra environment for the process.
    envs: Vec<(String, String)>,
    grpc: u16,
    actuator: u16,
    child: Option<tokio::process::Child>,
}

impl Sidecar {
    pub async fn start(config: std::path::PathBuf, grpc: u16, actuator: u16) -> Sidecar {
        let mut sidecar = Sidecar {
            config,
            envs: Vec::new(),
            grpc,
            actuator,
            child: None,
        };
        sidecar.spawn().await;
        sidecar
    }

    pub async fn spawn(&mut self) {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_layotto"))
            .arg("start")
            .arg("-c")
            .arg(&self.config)
            .env("LAYOTTO__SERVER__GRPC", format!("127.0.0.1:{}", self.grpc))
            .env("LAYOTTO__SERVER__ACTUATOR", format!("127.0.0.1:{}", self.actuator))
            .env("LAYOTTO__SERVER__DAPR_HTTP", "disabled")
            .env("RUST_LOG", "warn")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("layotto starts");
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/actuator/health/readiness", self.actuator);
        eventually("the sidecar to be ready", Duration::from_secs(60), || async {
            matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200).then_some(())
        })
        .await;
    }

    /// SIGKILL: no drain, no acks, nothing.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("kill -9");
            let _ = child.wait().await;
        }
    }
}

impl Sidecar {
    /// Its gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.grpc))
    }

    /// A sidecar of the binary for the config at `path`, with extra
    /// environment variables.
    pub async fn start_env(path: std::path::PathBuf, envs: &[(&str, &str)]) -> Sidecar {
        let mut sidecar = Sidecar {
            config: path,
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            grpc: free_port(),
            actuator: free_port(),
            child: None,
        };
        sidecar.spawn().await;
        sidecar
    }

    /// A sidecar of the binary for `config_text`, on free ports, kept in
    /// `dir`.
    pub async fn start_with(dir: &std::path::Path, name: &str, config_text: &str) -> Sidecar {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config_text).expect("write config");
        Sidecar::start(path, free_port(), free_port()).await
    }
}
