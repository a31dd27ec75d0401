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
    about = "Application runtime sidecar speaking Layotto's gRPC API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Start {
        #[command(flatten)]
        config: ConfigArg,
        /// Exit if any component fails to start, instead of serving and
        /// retrying it (Layotto's behaviour); same as supervisor.fail_fast.
        #[arg(long)]
        fail_fast: bool,
    },
    /// Check a config file and exit: 0 when it is valid, 64 otherwise.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Args)]
struct ConfigArg {
    /// Config file (.toml, .yaml, .yml, or .json, including Layotto's
    /// config.json). Default: config/default.toml, or the embedded default
    /// when that file does not exist.
    #[arg(short, long, env = "RUNTIME_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> Result<(Config, String), ConfigError> {
        match config::resolve(self.config.as_deref()) {
            Some(path) => config::load(&path).map(|c| (c, path.display().to_string())),
            None => config::load_embedded_default().map(|c| (c, "<embedded default>".to_owned())),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match config.load() {
            Ok((config, source)) => {
                let components: usize = config.components.values().map(Vec::len).sum();
                println!("{source}: valid ({components} components)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Start { config, fail_fast } => {
            let (mut config, source) = match config.load() {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            config.supervisor.fail_fast |= fail_fast;
            // Dapr's variable, for apps launched as they launch daprd.
            if config.server.api_token.is_none() {
                config.server.api_token = std::env::var("DAPR_API_TOKEN").ok().filter(|t| !t.is_empty());
            }
            telemetry::init(&config.log);
            info!(config = %source, version = env!("CARGO_PKG_VERSION"), "Starting Layotto");
            match run(config) {
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

fn run(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    return_memory_after_bursts();
    // The sidecar runs on its own event-loop thread; this one only waits
    // for a signal or a failure.
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio.block_on(async {
        let mut runtime = Runtime::start(config).await?;
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
