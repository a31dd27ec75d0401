//! The `layotto` command: parse the command line, load and validate the
//! config (exit 64 when it is bad), run until SIGTERM or SIGINT, drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use layotto::config::{self, Config, ConfigError};
use layotto::{Runtime, telemetry};
use tracing::{error, info};

/// jemalloc rather than the system's malloc: with its background thread it
/// hands memory freed after a burst back to the system within seconds
/// (`return_memory_after_bursts`), where glibc's malloc kept what 10,000
/// streams had used for as long as the process ran.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a config that cannot be used (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;
/// Exit code for a failure at run time.
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "layotto",
    version,
    about = "Application runtime sidecar speaking Layotto's gRPC API",
    // Layotto's flags without a subcommand run the sidecar, as `start`.
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar (also what Layotto's flags without a subcommand do).
    Start(Box<StartArgs>),
    /// Check a config file and exit: 0 when it is valid, 64 otherwise.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stop a running sidecar through its pid file: SIGTERM, then wait for
    /// it to exit (Layotto's `stop`).
    Stop {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        pid: PidFileArg,
    },
    /// Makes a running sidecar re-read its config now (SIGHUP through its
    /// pid file); it also does by itself when the file changes. Layotto's
    /// `reload` is a no-op.
    Reload {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        pid: PidFileArg,
    },
    /// Read a TCP copy dump (`dump_tcp_copy.log`) back into the gRPC calls
    /// it holds: time, connection, method, and each request message as
    /// JSON (hex when the method is unknown); what could not be read is
    /// said with `!`.
    #[command(name = "tcpcopy-decode")]
    TcpCopyDecode {
        /// The dump file.
        file: PathBuf,
        /// One JSON object per call, then one per note, instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct StartArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Exit if any component fails to start, instead of serving and
    /// retrying it (Layotto's behaviour); same as supervisor.fail_fast.
    #[arg(long)]
    fail_fast: bool,
    #[command(flatten)]
    pid: PidFileArg,
    #[command(flatten)]
    mosn: MosnFlags,
}

#[derive(Args)]
struct PidFileArg {
    /// Where `start` writes its process id and `stop` reads it. Default:
    /// `layotto-<gRPC port>.pid` in the temporary directory, so sidecars
    /// on one host do not share one.
    #[arg(long, env = "LAYOTTO_PID_FILE")]
    pid_file: Option<PathBuf>,
}

impl PidFileArg {
    fn path(&self, config: &Config) -> PathBuf {
        self.pid_file
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("layotto-{}.pid", config.server.grpc.port())))
    }
}

/// Layotto's Istio and MOSN flags: accepted so its launch lines work, and
/// listed at start-up as ignored (they configure MOSN's xDS identity,
/// drain and logs, which this sidecar does not have).
#[derive(Args)]
struct MosnFlags {
    #[arg(long, short = 's', hide = true)]
    service_cluster: Option<String>,
    #[arg(long, short = 'n', hide = true)]
    service_node: Option<String>,
    #[arg(long, short = 'p', hide = true)]
    service_type: Option<String>,
    #[arg(long, hide = true)]
    service_meta: Vec<String>,
    /// (sic: Layotto's spelling)
    #[arg(long, hide = true)]
    service_lables: Vec<String>,
    #[arg(long, hide = true)]
    cluster_domain: Option<String>,
    #[arg(long, hide = true)]
    pod_name: Option<String>,
    #[arg(long, hide = true)]
    pod_namespace: Option<String>,
    #[arg(long, hide = true)]
    pod_ip: Option<String>,
    #[arg(long, short = 'f', hide = true)]
    feature_gates: Option<String>,
    /// MOSN's own log's path (`-lp`).
    #[arg(long, alias = "lp", hide = true)]
    logging_path: Option<String>,
    #[arg(long, hide = true)]
    drain_time_s: Option<u64>,
}

impl MosnFlags {
    fn ignored(&self) -> Vec<String> {
        let given = [
            ("--service-cluster", self.service_cluster.is_some()),
            ("--service-node", self.service_node.is_some()),
            ("--service-type", self.service_type.is_some()),
            ("--service-meta", !self.service_meta.is_empty()),
            ("--service-lables", !self.service_lables.is_empty()),
            ("--cluster-domain", self.cluster_domain.is_some()),
            ("--pod-name", self.pod_name.is_some()),
            ("--pod-namespace", self.pod_namespace.is_some()),
            ("--pod-ip", self.pod_ip.is_some()),
            ("--feature-gates", self.feature_gates.is_some()),
            ("--logging-path", self.logging_path.is_some()),
            ("--drain-time-s", self.drain_time_s.is_some()),
        ];
        given
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(flag, _)| format!("{flag} (a MOSN/Istio flag; ignored)"))
            .collect()
    }
}

#[derive(Args)]
struct ConfigArg {
    /// Config file (.toml, .yaml, .yml, or .json, including Layotto's
    /// config.json, or a Dapr `Configuration` YAML). Default:
    /// config/default.toml, or the embedded default when that file does
    /// not exist; with --resources-path and no config file, only the
    /// resources.
    #[arg(short, long, env = "RUNTIME_CONFIG")]
    config: Option<PathBuf>,
    /// A folder of Dapr Component and Subscription YAML files; repeatable
    /// or comma-separated (daprd's flag; --components-path is its older
    /// name).
    #[arg(long = "resources-path", alias = "components-path", value_delimiter = ',')]
    resources_path: Vec<PathBuf>,
    #[command(flatten)]
    daprd: DaprdFlags,
}

/// daprd's common flags, so a `dapr run`-style launch works with this
/// binary in place of daprd. Each sets one config field.
#[derive(Args)]
struct DaprdFlags {
    /// The app id (`app.app_id`).
    #[arg(long, env = "APP_ID")]
    app_id: Option<String>,
    /// The app's port (`app.port`); the app protocol defaults to http, as
    /// in daprd.
    #[arg(long, env = "APP_PORT")]
    app_port: Option<u16>,
    /// `http` or `grpc` (`app.protocol`).
    #[arg(long, env = "APP_PROTOCOL")]
    app_protocol: Option<String>,
    /// The app's host (`app.grpc_callback_host`).
    #[arg(long)]
    app_channel_address: Option<String>,
    /// The gRPC API port, Layotto's and Dapr's (`server.grpc`).
    #[arg(long, env = "DAPR_GRPC_PORT")]
    dapr_grpc_port: Option<u16>,
    /// Dapr's HTTP API port (`server.dapr_http`).
    #[arg(long, env = "DAPR_HTTP_PORT")]
    dapr_http_port: Option<u16>,
    /// The internal listener's port (`server.internal`): other sidecars'
    /// service invocations and proxied gRPC calls.
    #[arg(long)]
    dapr_internal_grpc_port: Option<u16>,
    /// The port serving Prometheus metrics (`server.metrics`).
    #[arg(long, env = "DAPR_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// The address the API listeners bind (daprd's
    /// --dapr-listen-addresses; the first one). Default 0.0.0.0 when a
    /// port flag is given, as daprd binds every interface.
    #[arg(long, value_delimiter = ',')]
    dapr_listen_addresses: Vec<String>,
    /// `debug`, `info`, `warn` or `error` (`log.level`); also Layotto's
    /// `-l`, `--logging-level` and `-ll`.
    #[arg(long, short = 'l', aliases = ["logging-level", "ll"])]
    log_level: Option<String>,
    /// Log as JSON (`log.format = "json"`).
    #[arg(long)]
    log_as_json: bool,
    /// Turns on app health checks (`app.health_check`).
    #[arg(long)]
    enable_app_health_check: bool,
    /// `app.health_check.path` (default /healthz).
    #[arg(long)]
    app_health_check_path: Option<String>,
    /// Seconds between probes (`app.health_check.interval`, default 5).
    #[arg(long)]
    app_health_probe_interval: Option<u64>,
    /// Milliseconds a probe may take (`app.health_check.timeout`, default
    /// 500).
    #[arg(long)]
    app_health_probe_timeout: Option<u64>,
    /// Failed probes before the app counts as unhealthy (default 3).
    #[arg(long)]
    app_health_threshold: Option<u32>,
    /// Seconds of graceful shutdown (`server.shutdown_grace_period`).
    #[arg(long)]
    dapr_graceful_shutdown_seconds: Option<u64>,
    /// The largest HTTP request body (`server.max_body_size`): `4Mi`,
    /// `512Ki`, or bytes.
    #[arg(long)]
    max_body_size: Option<String>,
    /// Calls to the app at once, over every app call (`app.max_concurrency`);
    /// -1 (daprd's default) or 0 is no limit.
    #[arg(long, allow_hyphen_values = true)]
    app_max_concurrency: Option<i64>,
    /// Accepted for daprd compatibility and ignored: standalone is the
    /// only mode.
    #[arg(long)]
    mode: Option<String>,
    /// daprd flags for its control plane and diagnostics (`dapr run`
    /// passes some of them): accepted, and listed at start-up as not
    /// used.
    #[arg(long)]
    placement_host_address: Option<String>,
    #[arg(long)]
    scheduler_host_address: Option<String>,
    #[arg(long)]
    sentry_address: Option<String>,
    #[arg(long)]
    control_plane_address: Option<String>,
    #[arg(long)]
    profile_port: Option<u16>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_profiling: Option<String>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_api_logging: Option<String>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_metrics: Option<String>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_mtls: Option<String>,
}

impl DaprdFlags {
    /// The daprd flags given that this sidecar does not use.
    fn unused(&self) -> Vec<String> {
        let given = [
            ("--mode", self.mode.is_some()),
            ("--placement-host-address", self.placement_host_address.is_some()),
            ("--scheduler-host-address", self.scheduler_host_address.is_some()),
            ("--sentry-address", self.sentry_address.is_some()),
            ("--control-plane-address", self.control_plane_address.is_some()),
            ("--profile-port", self.profile_port.is_some()),
            ("--enable-profiling", self.enable_profiling.is_some()),
            ("--enable-api-logging", self.enable_api_logging.is_some()),
            ("--enable-metrics", self.enable_metrics.is_some()),
            ("--enable-mtls", self.enable_mtls.is_some()),
        ];
        given
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(flag, _)| format!("{flag} (not used by this sidecar)"))
            .collect()
    }

    fn settings(&self) -> Vec<(String, serde_json::Value)> {
        use serde_json::{Value, json};
        let mut out: Vec<(String, Value)> = Vec::new();
        let host = self
            .dapr_listen_addresses
            .first()
            .cloned()
            .unwrap_or_else(|| "0.0.0.0".to_owned());
        // Checked by the config's validation, which names the field.
        let addr = |port: u16| {
            Value::String(if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            })
        };
        if let Some(id) = &self.app_id {
            out.push(("app.app_id".into(), json!(id)));
        }
        if let Some(port) = self.app_port {
            out.push(("app.port".into(), json!(port)));
            if self.app_protocol.is_none() {
                // daprd's default, unless the config file names one.
                out.push((config::DEFAULT_APP_PROTOCOL.into(), json!("http")));
            }
        }
        if let Some(protocol) = &self.app_protocol {
            out.push(("app.protocol".into(), json!(protocol.to_ascii_lowercase())));
        }
        if let Some(host) = &self.app_channel_address {
            out.push(("app.grpc_callback_host".into(), json!(host)));
        }
        if let Some(port) = self.dapr_grpc_port {
            out.push(("server.grpc".into(), addr(port)));
        }
        if let Some(port) = self.dapr_http_port {
            out.push(("server.dapr_http".into(), addr(port)));
        }
        if let Some(port) = self.dapr_internal_grpc_port {
            out.push(("server.internal".into(), addr(port)));
        }
        if let Some(port) = self.metrics_port {
            out.push(("server.metrics".into(), addr(port)));
        }
        if let Some(level) = &self.log_level {
            out.push(("log.level".into(), json!(level)));
        }
        if self.log_as_json {
            out.push(("log.format".into(), json!("json")));
        }
        if self.enable_app_health_check {
            out.push(("app.health_check.enabled".into(), json!(true)));
            if let Some(path) = &self.app_health_check_path {
                out.push(("app.health_check.path".into(), json!(path)));
            }
            if let Some(s) = self.app_health_probe_interval {
                out.push(("app.health_check.interval".into(), json!(format!("{s}s"))));
            }
            if let Some(ms) = self.app_health_probe_timeout {
                out.push(("app.health_check.timeout".into(), json!(format!("{ms}ms"))));
            }
            if let Some(n) = self.app_health_threshold {
                out.push(("app.health_check.threshold".into(), json!(n)));
            }
        }
        if let Some(n) = self.app_max_concurrency.filter(|n| *n > 0) {
            out.push(("app.max_concurrency".into(), json!(n)));
        }
        if let Some(size) = &self.max_body_size {
            out.push(("server.max_body_size".into(), json!(size)));
        }
        if let Some(s) = self.dapr_graceful_shutdown_seconds {
            out.push(("server.shutdown_grace_period".into(), json!(format!("{s}s"))));
        }
        if let Ok(token) = std::env::var("APP_API_TOKEN")
            && !token.is_empty()
        {
            out.push(("app.api_token".into(), json!(token)));
        }
        out
    }
}

impl ConfigArg {
    fn launch(&self) -> config::Launch {
        let explicit = self.config.is_some();
        let config = if explicit || self.resources_path.is_empty() {
            config::resolve(self.config.as_deref())
        } else {
            None
        };
        config::Launch {
            config,
            resources: self.resources_path.clone(),
            flags: self.daprd.settings(),
        }
    }

    /// Discovers pluggable components (their types are valid in the
    /// config from then on), then loads the config.
    fn load(&self) -> Result<config::Loaded, ConfigError> {
        layotto::components::pluggable::discover_default_blocking();
        let mut loaded = config::load_launch(&self.launch())?;
        loaded.ignored.extend(self.daprd.unused());
        Ok(loaded)
    }

    /// Where a running sidecar reads its config again (hot reload): the
    /// files it came from, loaded the same way. None for the embedded
    /// default.
    fn reload_source(&self, fail_fast: bool) -> Option<layotto::ReloadSource> {
        let launch = self.launch();
        let mut watch: Vec<PathBuf> = launch.config.iter().cloned().collect();
        watch.extend(launch.resources.iter().cloned());
        if watch.is_empty() {
            return None;
        }
        Some(layotto::ReloadSource {
            load: std::sync::Arc::new(move || {
                config::load_launch(&launch)
                    .map(|loaded| prepare(loaded.config, fail_fast))
                    .map_err(|e| e.to_string())
            }),
            watch,
        })
    }
}

/// daprd takes its long flags with one dash too (`-app-id`); so does
/// this binary, by rewriting them before parsing.
fn daprd_style_args() -> Vec<std::ffi::OsString> {
    std::env::args_os()
        .map(|arg| match arg.to_str() {
            Some(text)
                if text.len() > 2
                    && text.starts_with('-')
                    && !text.starts_with("--")
                    && text[1..].starts_with(|c: char| c.is_ascii_alphabetic()) =>
            {
                format!("-{text}").into()
            }
            _ => arg,
        })
        .collect()
}

/// `layotto tcpcopy-decode FILE`.
fn tcp_copy_decode(file: &std::path::Path, json: bool) -> ExitCode {
    use layotto::api::tcp_copy::decode;
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("cannot read {}: {e}", file.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let decoded = decode::decode_dump(&String::from_utf8_lossy(&bytes));
    if json {
        for call in &decoded.calls {
            println!("{}", serde_json::to_string(call).unwrap_or_default());
        }
        for note in &decoded.notes {
            println!("{}", serde_json::json!({ "note": note }));
        }
    } else {
        print!("{}", decode::render(&decoded));
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // No flags at all: the help, as Layotto prints it.
    if std::env::args_os().len() <= 1 {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse_from(daprd_style_args());
    match cli.command.unwrap_or_else(|| Command::Start(Box::new(cli.start))) {
        Command::Validate { config } => match config.load() {
            Ok(config::Loaded { config, source, .. }) => {
                let components: usize = config.components.values().map(Vec::len).sum();
                println!("{source}: valid ({components} components)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Reload { config, pid } => signal_sidecar(&config, &pid, signal_reload),
        Command::TcpCopyDecode { file, json } => tcp_copy_decode(&file, json),
        Command::Stop { config, pid } => signal_sidecar(&config, &pid, stop),
        Command::Start(start) => {
            let StartArgs {
                config: config_arg,
                fail_fast,
                pid,
                mosn,
            } = *start;
            let config::Loaded {
                mut config,
                source,
                mut ignored,
            } = match config_arg.load() {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            ignored.extend(mosn.ignored());
            let reload = config_arg.reload_source(fail_fast);
            config = prepare(config, fail_fast);
            telemetry::init(&config.log);
            info!(config = %source, version = env!("CARGO_PKG_VERSION"), "Starting Layotto");
            for line in ignored {
                info!("Ignored: {line}");
            }
            for (kind, name, socket) in layotto::components::pluggable::registry().all() {
                info!(%kind, r#type = %name, socket = %socket.path.display(), "Pluggable component type available");
            }
            let pid_file = PidFile::write(pid.path(&config));
            let outcome = run(config, reload);
            drop(pid_file);
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    // A secret reference that does not resolve is a config
                    // error found at start-up.
                    let bad_config = matches!(e.downcast_ref(), Some(layotto::RuntimeError::SecretRefs(_)));
                    ExitCode::from(if bad_config { EXIT_BAD_CONFIG } else { EXIT_FAILURE })
                }
            }
        }
    }
}

/// The pid file of a running sidecar; removed when it exits (if it still
/// holds this process's id).
struct PidFile(Option<PathBuf>);

impl PidFile {
    fn write(path: PathBuf) -> PidFile {
        let pid = std::process::id();
        match std::fs::write(&path, format!("{pid}\n")) {
            Ok(()) => PidFile(Some(path)),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "Cannot write the pid file; `layotto stop` will not find this sidecar");
                PidFile(None)
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0
            && read_pid(path).ok() == Some(std::process::id())
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn read_pid(path: &std::path::Path) -> Result<u32, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the pid file {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("the pid file {} does not hold a process id", path.display()))
}

/// Whether process `pid` has exited and waits to be reaped (state `Z` in
/// `/proc/<pid>/stat`).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// SIGTERM to the sidecar named by the pid file, then waits (up to a
/// minute: its grace period) for it to exit.
/// `stop` and `reload`: finds the sidecar's pid file from its config and
/// acts on the process it names.
fn signal_sidecar(
    config: &ConfigArg,
    pid: &PidFileArg,
    action: fn(&std::path::Path) -> Result<String, String>,
) -> ExitCode {
    let config = match config.load() {
        Ok(loaded) => loaded.config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match action(&pid.path(&config)) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The process id in the pid file at `path`, as read and as rustix's.
fn pid_of(path: &std::path::Path) -> Result<(u32, rustix::process::Pid), String> {
    let raw = read_pid(path)?;
    let pid = i32::try_from(raw)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("the pid file {} holds no valid process id", path.display()))?;
    Ok((raw, pid))
}

fn stop(path: &std::path::Path) -> Result<String, String> {
    use rustix::process::{Signal, kill_process, test_kill_process};
    let (raw, pid) = pid_of(path)?;
    if kill_process(pid, Signal::TERM).is_err() {
        let _ = std::fs::remove_file(path);
        return Err(format!(
            "no sidecar runs as process {raw} (from {}); removed the stale pid file",
            path.display()
        ));
    }
    // Exited, or a zombie its parent has not reaped yet.
    let running = || test_kill_process(pid).is_ok() && !is_zombie(raw);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while running() {
        if std::time::Instant::now() > deadline {
            return Err(format!("process {raw} is still running a minute after SIGTERM"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(format!("stopped process {raw}"))
}

/// Starts jemalloc's background thread, which purges the pages freed
/// memory leaves behind over its decay time (10 s): without it jemalloc
/// purges only when the process allocates again, so a sidecar gone quiet
/// after a burst would keep the burst's memory.
fn return_memory_after_bursts() {
    #[cfg(not(target_env = "msvc"))]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "Cannot start the allocator's background thread; memory freed after a burst is returned only as the sidecar allocates again");
    }
}

/// Raises the soft limit on open files to the hard limit: every
/// connection is a descriptor, and the usual soft limit of 1024 would make
/// the sidecar refuse connections (its health checks among them) long
/// before it runs out of anything else.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => info!(from = ?limit.current, to = ?limit.maximum, "Raised the open files limit"),
        Err(error) => tracing::warn!(%error, "Cannot raise the open files limit"),
    }
}

/// What `start` adds to a loaded config, at start-up and on each reload.
fn prepare(mut config: Config, fail_fast: bool) -> Config {
    config.supervisor.fail_fast |= fail_fast;
    // Dapr's variable, for apps launched as they launch daprd.
    if config.server.api_token.is_none() {
        config.server.api_token = std::env::var("DAPR_API_TOKEN").ok().filter(|t| !t.is_empty());
    }
    config
}

/// SIGHUP to the sidecar whose pid file is at `path`: it reloads its
/// config.
fn signal_reload(path: &std::path::Path) -> Result<String, String> {
    use rustix::process::{Signal, kill_process};
    let (raw, pid) = pid_of(path)?;
    kill_process(pid, Signal::HUP)
        .map_err(|e| format!("cannot signal process {raw} (from {}): {e}", path.display()))?;
    Ok(format!("asked process {raw} to reload its config"))
}

fn run(config: Config, reload: Option<layotto::ReloadSource>) -> anyhow::Result<()> {
    raise_open_files_limit();
    return_memory_after_bursts();
    // The sidecar runs on its own event-loop thread; this one only waits
    // for a signal or a failure.
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio.block_on(async {
        let mut runtime = Runtime::start_reloadable(config, reload).await?;
        let outcome = tokio::select! {
            signal = shutdown_signal() => {
                info!(signal = signal?, "Shutdown requested");
                Ok(())
            }
            failure = runtime.failed() => match failure {
                layotto::RuntimeError::ShutdownRequested => {
                    info!("Shutdown requested through the API");
                    Ok(())
                }
                failure => Err(failure.into()),
            },
        };
        // A second SIGTERM or SIGINT during the drain means "now".
        tokio::select! {
            () = runtime.shutdown() => {}
            signal = shutdown_signal() => {
                let signal = signal.unwrap_or("SIGTERM");
                info!(signal, "Second shutdown request; exiting without waiting for the drain");
                // As a shell reports a death by that signal: 128 + its number.
                std::process::exit(if signal == "SIGINT" { 130 } else { 143 });
            }
        }
        outcome
    })
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
