//! Helpers shared by the integration tests: a sidecar in this process on
//! free ports, clients for it, and polling with a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
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
    // The internal listener's default port (turned on by name resolution)
    // would clash between tests running side by side.
    if config
        .server
        .internal
        .is_some_and(|a| a.port() == layotto::config::DEFAULT_INTERNAL_PORT)
    {
        config.server.internal = Some(any_port);
    }
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

/// Sets configuration item `key` of `store` to `value` through Layotto's
/// API (the in-memory config store has no other writer).
pub async fn save_configuration(rt: &Runtime, store: &str, app_id: &str, key: &str, value: &str) {
    use layotto::proto::runtime::v1 as pb;
    client(rt)
        .await
        .save_configuration(pb::SaveConfigurationRequest {
            store_name: store.into(),
            app_id: app_id.into(),
            items: vec![pb::ConfigurationItem {
                key: key.into(),
                content: value.into(),
                ..Default::default()
            }],
            metadata: Default::default(),
        })
        .await
        .expect("save configuration");
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
    Etcd,
    Zookeeper,
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
            Service::Etcd => "etcd",
            Service::Zookeeper => "ZooKeeper",
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
            Service::Etcd => "127.0.0.1:2379",
            Service::Zookeeper => "127.0.0.1:2181",
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
        // Serving: it answers PING (while it loads its data it accepts
        // connections but answers LOADING).
        while !redis_answers_ping(addr) {
            assert!(std::time::Instant::now() < deadline, "private redis did not start");
            std::thread::sleep(Duration::from_millis(10));
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

    /// Stops it without closing its connections (SIGSTOP): a hung server.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill {signal}");
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server restarts");
    }
}

fn redis_answers_ping(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 5];
    // `+PONG`, or `-NOAUTH` from one started with a password; not `-LOADING`.
    conn.write_all(b"PING\r\n").is_ok() && conn.read_exact(&mut answer).is_ok() && &answer != b"-LOAD"
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server of the test's own (PostgreSQL, NATS) on a free port with its
/// data in a temporary directory, for fault tests: killed with SIGKILL and
/// started again on the same port and data without touching the shared one.
pub struct PrivateServer {
    pub port: u16,
    program: std::path::PathBuf,
    args: Vec<String>,
    /// The user to run as (PostgreSQL refuses to run as root).
    user: Option<(u32, u32)>,
    /// A command that succeeds once the server serves (PostgreSQL accepts
    /// connections on its port before it has finished crash recovery).
    ready: Option<Vec<String>>,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl PrivateServer {
    /// A NATS server with JetStream, or `None` (skip, outside CI) when
    /// `nats-server` is not installed.
    pub fn nats() -> Option<PrivateServer> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let store = dir.path().join("jetstream").display().to_string();
        let args = ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd", &store];
        let mut server = PrivateServer::new("nats-server".into(), &args, None, port, dir);
        server.spawn().then_some(server).or_else(|| missing("nats-server"))
    }

    /// A PostgreSQL cluster of its own (`initdb`, then `postgres`, as the
    /// `postgres` user, trust authentication), or `None` (skip, outside
    /// CI) when PostgreSQL's binaries are not installed.
    pub fn postgres() -> Option<PrivateServer> {
        let Some(bin) = postgres_bin() else {
            return missing("PostgreSQL (/usr/lib/postgresql/*/bin)");
        };
        let Some(user) = system_user("postgres") else {
            return missing("the postgres user");
        };
        let dir = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::chown(dir.path(), Some(user.0), Some(user.1)).expect("chown the data directory");
        let data = dir.path().join("data");
        let initdb = std::process::Command::new(bin.join("initdb"))
            .args([
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .uid(user.0)
            .gid(user.1)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(initdb.success(), "initdb failed: {initdb}");
        let port = free_port();
        let args = [
            "-D",
            &data.display().to_string(),
            "-p",
            &port.to_string(),
            "-k",
            &dir.path().display().to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
        ];
        let mut server = PrivateServer::new(bin.join("postgres"), &args, Some(user), port, dir);
        let port = port.to_string();
        let ready = [
            bin.join("pg_isready").display().to_string().as_str(),
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ]
        .map(str::to_owned);
        server.ready = Some(ready.to_vec());
        assert!(server.spawn(), "postgres starts");
        Some(server)
    }

    fn new(
        program: std::path::PathBuf,
        args: &[&str],
        user: Option<(u32, u32)>,
        port: u16,
        dir: tempfile::TempDir,
    ) -> PrivateServer {
        PrivateServer {
            port,
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            user,
            ready: None,
            child: None,
            dir,
        }
    }

    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        let Ok(child) = command.spawn() else { return false };
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not start; see {}",
                self.program.display(),
                self.dir.path().join("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(ready) = &self.ready {
            let serves = || {
                std::process::Command::new(&ready[0])
                    .args(&ready[1..])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            while !serves() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} did not get ready",
                    self.program.display()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        true
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills it and every process it started (PostgreSQL's backends) with
    /// SIGKILL, as a crash of the server would, and waits for them to go.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let children = children_of(child.id());
        let _ = child.kill();
        let _ = child.wait();
        for pid in &children {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while children
            .iter()
            .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the server's processes did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again on the same port and data; returns once it serves
    /// (its port accepts connections, and PostgreSQL has recovered).
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "{} restarts", self.program.display());
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Skips (outside CI) or fails (under CI) a test whose server is missing.
fn missing<T>(what: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} is not installed, and CI=true requires it");
    }
    eprintln!("skipping: {what} is not installed");
    None
}

/// The newest installed PostgreSQL's `bin` directory.
fn postgres_bin() -> Option<std::path::PathBuf> {
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A system user's uid and gid, from `/etc/passwd`.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
    })
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // The fields after the command name, which may hold spaces.
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `layotto` binary to run: `LAYOTTO_BIN` when set (a copy taken right
/// after the build, when the target directory is shared with other
/// checkouts that may rebuild it under a running test), else the one cargo
/// built for these tests.
pub fn layotto_bin() -> std::path::PathBuf {
    std::env::var_os("LAYOTTO_BIN").map_or_else(|| env!("CARGO_BIN_EXE_layotto").into(), Into::into)
}

/// The `layotto` binary on fixed ports, so a restart is the same sidecar.
pub struct Sidecar {
    config: std::path::PathBuf,
    /// Extra environment for the process.
    envs: Vec<(String, String)>,
    grpc: u16,
    actuator: u16,
    /// Where its log goes; nowhere by default.
    log: Option<std::path::PathBuf>,
    child: Option<tokio::process::Child>,
}

impl Sidecar {
    pub async fn start(config: std::path::PathBuf, grpc: u16, actuator: u16) -> Sidecar {
        let mut sidecar = Sidecar {
            config,
            envs: Vec::new(),
            grpc,
            actuator,
            log: None,
            child: None,
        };
        sidecar.spawn().await;
        sidecar
    }

    /// One on free ports for the config at `path`, logging at `info` to
    /// `log`.
    pub async fn start_logged(path: std::path::PathBuf, log: std::path::PathBuf) -> Sidecar {
        let mut sidecar = Sidecar {
            config: path,
            envs: vec![("RUST_LOG".into(), "info".into())],
            grpc: free_port(),
            actuator: free_port(),
            log: Some(log),
            child: None,
        };
        sidecar.spawn().await;
        sidecar
    }

    /// Its actuator's address.
    pub fn actuator_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.actuator))
    }

    pub async fn spawn(&mut self) {
        let child = tokio::process::Command::new(layotto_bin())
            .arg("start")
            .arg("-c")
            .arg(&self.config)
            .env("LAYOTTO__SERVER__GRPC", format!("127.0.0.1:{}", self.grpc))
            .env("LAYOTTO__SERVER__ACTUATOR", format!("127.0.0.1:{}", self.actuator))
            .env("LAYOTTO__SERVER__DAPR_HTTP", "disabled")
            .env("RUST_LOG", "warn")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(match &self.log {
                Some(path) => std::fs::File::create(path).expect("sidecar log").into(),
                None => std::process::Stdio::null(),
            })
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

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
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
            log: None,
            child: None,
        };
        sidecar.spawn().await;
        sidecar
    }

    /// A sidecar of the binary for `config_text`, on free ports, kept in
    /// `dir`.
    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub async fn start_with(dir: &std::path::Path, name: &str, config_text: &str) -> Sidecar {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config_text).expect("write config");
        Sidecar::start(path, free_port(), free_port()).await
    }
}
