//! Logging: tracing to stderr, as text or JSON, with a filter that the
//! actuator's `/actuator/logger` (Layotto's) changes per component at run
//! time.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogConfig, LogFormat, log_filter};

/// The installed filter: its base text and the per-component levels added
/// since, and the handle that swaps it.
struct Filter {
    base: String,
    components: Mutex<BTreeMap<String, String>>,
    handle: reload::Handle<EnvFilter, Registry>,
}

static FILTER: OnceLock<Filter> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// configured level. Calling it twice keeps the first subscriber.
pub fn init(log: &LogConfig) {
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let base = from_env
        .filter(|text| log_filter(text).is_ok())
        .or_else(|| log_filter(&log.level).is_ok().then(|| log.level.clone()))
        .unwrap_or_else(|| "info".to_owned());
    let filter = log_filter(&base).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let installed = match log.format {
        LogFormat::Text => Registry::default()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi),
            )
            .try_init(),
        LogFormat::Json => Registry::default()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(Filter {
            base,
            components: Mutex::new(BTreeMap::new()),
            handle,
        });
    }
}

/// Why a component's log level could not be set.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("component must be <kind>/<name or type>, as 'lock/redis'; got '{0}'")]
    Component(String),
    #[error("level must be one of trace, debug, info, warn, error, fatal; got '{0}'")]
    Level(String),
    #[error("logging is not set up in this process")]
    NotInstalled,
    #[error("the log filter does not parse: {0}")]
    Filter(String),
}

/// Sets the level of the logs of the component Layotto names
/// `<kind>/<name>` (a component type or instance: `lock/redis`), from now
/// on: the events of that type's module, and those inside the spans of
/// components of that name or type opened from now on, pass at this level
/// or above, whatever the base level.
pub fn set_component_level(component: &str, level: &str) -> Result<(), LoggerError> {
    let (kind, name) = component
        .split_once('/')
        .filter(|(k, n)| is_word(k) && is_word(n))
        .ok_or_else(|| LoggerError::Component(component.chars().take(100).collect()))?;
    let level = match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" => "error",
        _ => return Err(LoggerError::Level(level.chars().take(20).collect())),
    };
    let filter = FILTER.get().ok_or(LoggerError::NotInstalled)?;
    let mut components = filter.components.lock().unwrap_or_else(|p| p.into_inner());
    components.insert(format!("{kind}/{name}"), level.to_owned());
    let mut text = filter.base.clone();
    for (component, level) in components.iter() {
        if let Some((kind, name)) = component.split_once('/') {
            // A registered type: its module's own events (a function's
            // guest logs among them).
            if let Some(module) = crate::components::Kind::from_section(kind).and_then(|k| k.type_module(name)) {
                text.push_str(&format!(",{module}={level}"));
            }
            // The component's span carries kind, name and type: the level
            // applies to an instance of that name or every one of that
            // type, in spans opened from now on.
            // (One field per directive: the filter's syntax splits on
            // commas.)
            text.push_str(&format!(
                ",[component{{name={name}}}]={level},[component{{type={name}}}]={level}"
            ));
        }
    }
    let new = log_filter(&text).map_err(LoggerError::Filter)?;
    filter
        .handle
        .reload(new)
        .map_err(|e| LoggerError::Filter(e.to_string()))
}

/// Names in a filter directive: letters, digits, `_`, `-`, `.`.
fn is_word(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_directives_a_component_level_adds_parse() {
        let module = crate::components::Kind::from_section("lock")
            .and_then(|k| k.type_module("redis"))
            .expect("lock/redis is registered");
        assert_eq!(module, "layotto::components::lock::redis");
        let text = format!("info,{module}=debug,[component{{name=redis}}]=debug,[component{{type=redis}}]=debug");
        crate::config::log_filter(&text).expect("parses");
    }
}
