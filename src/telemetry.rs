//! Logging: tracing to stderr, as text or JSON.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat, log_filter};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// configured level. Calling it twice keeps the first subscriber.
pub fn init(log: &LogConfig) {
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = from_env
        .as_deref()
        .map(log_filter)
        .and_then(Result::ok)
        .or_else(|| log_filter(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
