//! Reads Layotto's MOSN-style `config.json` so an existing Layotto
//! deployment can swap binaries without rewriting its config.
//!
//! The runtime's settings live in the listener filter `{"type":"grpc",
//! "config":{"server_name":"runtime","grpc_config":{...}}}`; that listener's
//! address becomes `server.grpc`, and a listener named `actuator` gives
//! `server.actuator`. The component sections of `grpc_config` have the same
//! names and shapes as the native format. Sections this runtime does not
//! implement are reported, never silently dropped.

use serde_json::{Map, Value};

use super::Problem;

/// `grpc_config` keys that are Layotto features this runtime does not have.
const UNSUPPORTED: &[&str] = &["oss", "cryption", "email", "phone", "sms", "delay_queue"];

/// The native section that Layotto's `grpc_config.extends` becomes.
const PLUGINS: &str = "plugins";

/// Problems of a translated config, named as the Layotto file spells
/// them: `plugins.<name>...` is `grpc_config.extends.<name>...` there.
pub(super) fn plugin_paths(problems: Vec<Problem>) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|p| match p.path.strip_prefix(PLUGINS) {
            Some(rest) if rest.is_empty() || rest.starts_with('.') => Problem {
                path: format!("grpc_config.extends{rest}"),
                message: p.message,
            },
            _ => p,
        })
        .collect()
}

/// A Layotto config read as the native tree.
#[derive(Debug)]
pub(super) struct Translated {
    /// The native config tree.
    pub tree: Map<String, Value>,
    /// MOSN and Layotto settings that mean nothing here, by path, with
    /// why: logged once at start-up, at info.
    pub ignored: Vec<String>,
}

/// Listener keys read here; any other is MOSN's and reported as ignored.
const LISTENER_KEYS: &[&str] = &["name", "address", "network", "filter_chains", "stream_filters"];

pub(super) fn translate(root: &Map<String, Value>) -> Result<Translated, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut ignored = Vec::new();
    let mut grpc: Option<(String, &Map<String, Value>)> = None;
    let mut grpc_socket: Option<String> = None;
    let mut metrics_addr: Option<String> = None;
    let mut flow_control: Option<Value> = None;
    let mut tcp_copy: Option<Value> = None;
    let mut actuator_addr = None;
    let mut wasm_addr = None;
    let mut wasm_admin_addr = None;
    let mut functions = Map::new();

    let servers = root
        .get("servers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (key, value) in root {
        match key.as_str() {
            "servers" => {}
            "metrics" => metrics_addr = metrics_sink(value, &mut ignored),
            other => ignored.push(format!("{other} (a MOSN setting)")),
        }
    }
    for (si, server) in servers.iter().enumerate() {
        if let Some(server) = server.as_object() {
            for key in server.keys().filter(|k| *k != "listeners") {
                ignored.push(format!("servers[{si}].{key} (a MOSN server setting)"));
            }
        }
        let listeners = server
            .get("listeners")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (li, listener) in listeners.iter().enumerate() {
            let path = format!("servers[{si}].listeners[{li}]");
            let address = listener.get("address").and_then(Value::as_str);
            let is_actuator = listener.get("name").and_then(Value::as_str) == Some("actuator");
            if is_actuator {
                actuator_addr = address.map(str::to_owned);
            }
            if let Some(listener) = listener.as_object() {
                for key in listener.keys().filter(|k| !LISTENER_KEYS.contains(&k.as_str())) {
                    ignored.push(format!("{path}.{key} (a MOSN listener setting)"));
                }
            }
            let is_wasm = stream_filters(listener)
                .any(|f| matches!(f.get("type").and_then(Value::as_str), Some("Layotto" | "wasm_filter")));
            let is_runtime = filters(listener).any(|filter| {
                filter.get("type").and_then(Value::as_str) == Some("grpc")
                    && filter.pointer("/config/server_name").and_then(Value::as_str) == Some("runtime")
            });
            for (fi, stream_filter) in stream_filters(listener).enumerate() {
                let at = format!("{path}.stream_filters[{fi}]");
                match stream_filter.get("type").and_then(Value::as_str) {
                    // The FaaS ingress: each entry of its config is a function.
                    Some("Layotto") => {
                        wasm_addr = address.map(str::to_owned);
                        let entries = stream_filter.get("config").and_then(Value::as_object);
                        for (config_id, conf) in entries.into_iter().flatten() {
                            let at = format!("{at}.config.{config_id}");
                            let Some(conf) = conf.as_object() else {
                                problems.push(Problem {
                                    path: at,
                                    message: "a function's config is a table".into(),
                                });
                                continue;
                            };
                            match wasm_function_metadata(conf) {
                                Ok(metadata) => {
                                    let name = conf.get("name").and_then(Value::as_str).unwrap_or(config_id);
                                    let mut component = Map::new();
                                    component.insert("type".into(), Value::String("wasmer".into()));
                                    component.insert(
                                        "metadata".into(),
                                        Value::Object(
                                            metadata.into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
                                        ),
                                    );
                                    functions.insert(name.to_owned(), Value::Object(component));
                                }
                                Err(message) => problems.push(Problem { path: at, message }),
                            }
                        }
                    }
                    Some("wasm_filter") => wasm_admin_addr = address.map(str::to_owned),
                    // Read below, on the runtime listener.
                    Some("flowControlFilter") if is_runtime => {}
                    // The actuator itself; gRPC metrics are always kept.
                    Some("actuator_filter") if is_actuator => {}
                    Some("grpc_metric") if is_runtime => {}
                    other => ignored.push(format!(
                        "{at} (stream filter {}: not a Layotto feature here)",
                        other.unwrap_or("without a type")
                    )),
                }
            }
            for (fi, filter) in filters(listener).enumerate() {
                let kind = filter.get("type").and_then(Value::as_str);
                let known = match kind {
                    Some("grpc" | "tcpcopy") => is_runtime,
                    // MOSN's HTTP proxy in front of the actuator and the
                    // WASM listeners.
                    Some("proxy") => is_actuator || is_wasm,
                    _ => false,
                };
                if !known {
                    ignored.push(format!(
                        "{path}.filter_chains.filters[{fi}] (network filter {}: not a Layotto feature here)",
                        kind.unwrap_or("without a type")
                    ));
                }
            }
            for (fi, filter) in filters(listener).enumerate() {
                let runtime = filter.get("type").and_then(Value::as_str) == Some("grpc")
                    && filter.pointer("/config/server_name").and_then(Value::as_str) == Some("runtime");
                if !runtime {
                    continue;
                }
                match listener.get("network").and_then(Value::as_str) {
                    None | Some("" | "tcp" | "tcp4" | "tcp6") => {}
                    Some("unix") => match address {
                        Some(socket) if !socket.is_empty() => grpc_socket = Some(socket.to_owned()),
                        _ => problems.push(Problem {
                            path: format!("{path}.address"),
                            message: "a unix listener's address is the socket's path".into(),
                        }),
                    },
                    Some(other) => problems.push(Problem {
                        path: format!("{path}.network"),
                        message: format!("'{other}' is not a network; use tcp or unix"),
                    }),
                }
                for (si, stream_filter) in listener
                    .get("stream_filters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    if stream_filter.get("type").and_then(Value::as_str) == Some("flowControlFilter") {
                        let at = format!("{path}.stream_filters[{si}].config");
                        match flow_control_of(stream_filter.get("config"), &at) {
                            Ok(native) => flow_control = Some(native),
                            Err(problem) => problems.push(problem),
                        }
                    }
                }
                match tcp_copy_of(listener, &path) {
                    Ok(Some(native)) => tcp_copy = Some(native),
                    Ok(None) => {}
                    Err(problem) => problems.push(problem),
                }
                let tcp_address = if grpc_socket.is_some() { None } else { address };
                match filter.pointer("/config/grpc_config").and_then(Value::as_object) {
                    Some(cfg) => grpc = Some((tcp_address.unwrap_or_default().to_owned(), cfg)),
                    None => problems.push(Problem {
                        path: format!("{path}.filter_chains.filters[{fi}].config.grpc_config"),
                        message: "the runtime grpc filter has no grpc_config table".into(),
                    }),
                }
            }
        }
    }

    let Some((grpc_addr, grpc_config)) = grpc else {
        problems.push(Problem {
            path: "servers".into(),
            message: "no listener has a {\"type\":\"grpc\",\"config\":{\"server_name\":\"runtime\"}} filter".into(),
        });
        return Err(problems);
    };

    let mut out = Map::new();
    let mut server = Map::new();
    if !grpc_addr.is_empty() {
        server.insert("grpc".into(), Value::String(grpc_addr));
    }
    if let Some(socket) = grpc_socket {
        server.insert("grpc_socket".into(), Value::String(socket));
    }
    if let Some(addr) = actuator_addr {
        server.insert("actuator".into(), Value::String(addr));
    }
    if let Some(addr) = metrics_addr {
        server.insert("metrics".into(), Value::String(addr));
    }
    if let Some(flow_control) = flow_control {
        server.insert("flow_control".into(), flow_control);
    }
    if let Some(tcp_copy) = tcp_copy {
        server.insert("tcp_copy".into(), tcp_copy);
    }
    if let Some(addr) = wasm_addr {
        server.insert("wasm".into(), Value::String(addr));
    }
    if let Some(addr) = wasm_admin_addr {
        server.insert("wasm_admin".into(), Value::String(addr));
    }
    if !functions.is_empty() {
        out.insert("wasm".into(), Value::Object(functions));
    }
    out.insert("server".into(), Value::Object(server));

    for (key, value) in grpc_config {
        if key == "rpcs" {
            // Layotto's `mosn` rpc channel carries InvokeService to the
            // local WASM ingress (its FaaS demo); here a function id is
            // reached directly and any other id through service
            // invocation, so that channel needs no config.
            let only_mosn = value.as_object().is_some_and(|rpcs| rpcs.keys().all(|k| k == "mosn"));
            if !only_mosn {
                problems.push(Problem {
                    path: "grpc_config.rpcs".into(),
                    message: "only the `mosn` rpc channel (to the WASM ingress) is understood; use service invocation (name_resolution) for other targets".into(),
                });
            }
            continue;
        }
        if key == "custom_component" {
            // Layotto builds custom components only for the API plugins
            // compiled into its binary, and logs and skips a kind no
            // plugin registered (its own `layotto` binary registers none,
            // yet its default config.json lists one).
            for kind in value.as_object().into_iter().flatten().map(|(kind, _)| kind) {
                ignored.push(format!(
                    "grpc_config.custom_component.{kind} (no API plugin here uses custom components of kind '{kind}'; Layotto skips it too)"
                ));
            }
            continue;
        }
        if key == "extends" {
            // Settings of the API plugins compiled into the binary, by
            // plugin name: the native `plugins` section. Problems found
            // there are named by their Layotto path (`plugin_paths`).
            match value {
                Value::Object(_) => {
                    out.insert(PLUGINS.into(), value.clone());
                }
                _ => problems.push(Problem {
                    path: "grpc_config.extends".into(),
                    message: "expected a table of API plugin name -> settings".into(),
                }),
            }
            continue;
        }
        if key == PLUGINS {
            problems.push(Problem {
                path: format!("grpc_config.{PLUGINS}"),
                message: "not a Layotto section; API plugin settings go under grpc_config.extends".into(),
            });
            continue;
        }
        if UNSUPPORTED.contains(&key.as_str()) {
            problems.push(Problem {
                path: format!("grpc_config.{key}"),
                message: "this Layotto feature is not supported by layotto-rs; remove the section".into(),
            });
            continue;
        }
        out.insert(key.clone(), value.clone());
    }
    if problems.is_empty() {
        Ok(Translated { tree: out, ignored })
    } else {
        Err(problems)
    }
}

/// MOSN's `metrics.sinks`: a `prometheus` sink's `config.port` becomes the
/// metrics listener, on every interface as MOSN binds it (it serves the
/// metrics at any path, `/metrics` included). Other sinks are reported.
fn metrics_sink(metrics: &Value, ignored: &mut Vec<String>) -> Option<String> {
    let mut addr = None;
    if let Some(metrics) = metrics.as_object() {
        for key in metrics.keys().filter(|k| *k != "sinks") {
            ignored.push(format!("metrics.{key} (a MOSN metrics setting)"));
        }
    }
    let sinks = metrics
        .get("sinks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (i, sink) in sinks.iter().enumerate() {
        let port = sink
            .pointer("/config/port")
            .and_then(|p| p.as_u64().or_else(|| p.as_str().and_then(|s| s.parse().ok())))
            .and_then(|p| u16::try_from(p).ok());
        match (sink.get("type").and_then(Value::as_str), port) {
            (Some("prometheus"), Some(port)) if addr.is_none() => addr = Some(format!("0.0.0.0:{port}")),
            (kind, _) => ignored.push(format!(
                "metrics.sinks[{i}] (a {} sink: metrics are served by the first prometheus sink with a port, and on the actuator's /metrics)",
                kind.unwrap_or("typeless")
            )),
        }
    }
    addr
}

/// MOSN's `flowControlFilter` config as the native `server.flow_control`
/// table: Sentinel's rule keys become ours; `grade`, `id` and the
/// relation keys mean nothing here and are left out.
fn flow_control_of(config: Option<&Value>, at: &str) -> Result<Value, Problem> {
    let problem = |field: &str, message: String| Problem {
        path: format!("{at}.{field}"),
        message,
    };
    let Some(Value::Object(config)) = config else {
        return Err(problem("", "the flowControlFilter has no config table".into()));
    };
    if let Some(kind) = config.get("limit_key_type").and_then(Value::as_str)
        && kind != "PATH"
    {
        return Err(problem(
            "limit_key_type",
            format!("'{kind}' is not supported; rules are keyed by the gRPC method PATH"),
        ));
    }
    let mut out = Map::new();
    if let Some(on) = config.get("global_switch").and_then(Value::as_bool) {
        out.insert("enabled".into(), Value::Bool(on));
    }
    if let Some(body) = config.get("action").and_then(|a| a.get("body")).and_then(Value::as_str) {
        out.insert("message".into(), Value::String(body.to_owned()));
    }
    let mut rules = Vec::new();
    for (i, rule) in config
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let number = |key: &str| rule.get(key).and_then(Value::as_f64);
        let mut native = Map::new();
        if let Some(resource) = rule.get("resource") {
            native.insert("resource".into(), resource.clone());
        }
        if let Some(threshold) = number("threshold") {
            native.insert("threshold".into(), Value::from(threshold.round() as i64));
        }
        if let Some(ms) = number("statIntervalInMs").filter(|ms| *ms > 0.0) {
            native.insert("stat_interval".into(), Value::String(format!("{}ms", ms as u64)));
        }
        let behavior = match number("controlBehavior").map(|b| b as i64) {
            None | Some(0) => "reject",
            Some(1) => "throttle",
            Some(other) => {
                return Err(problem(
                    &format!("rules[{i}].controlBehavior"),
                    format!("{other} is not 0 (reject) or 1 (throttle)"),
                ));
            }
        };
        native.insert("control_behavior".into(), Value::String(behavior.into()));
        let strategy = match number("tokenCalculateStrategy").map(|b| b as i64) {
            None | Some(0) => "direct",
            Some(1) => "warm_up",
            Some(other) => {
                return Err(problem(
                    &format!("rules[{i}].tokenCalculateStrategy"),
                    format!("{other} is not 0 (direct) or 1 (warm-up)"),
                ));
            }
        };
        native.insert("token_calculate_strategy".into(), Value::String(strategy.into()));
        if let Some(ms) = number("maxQueueingTimeMs") {
            native.insert("max_queueing_time".into(), Value::String(format!("{}ms", ms as u64)));
        }
        if let Some(secs) = number("warmUpPeriodSec").filter(|s| *s > 0.0) {
            native.insert("warm_up_period".into(), Value::String(format!("{}s", secs as u64)));
        }
        if let Some(factor) = number("warmUpColdFactor").filter(|f| *f >= 1.0) {
            native.insert("warm_up_cold_factor".into(), Value::from(factor as i64));
        }
        rules.push(Value::Object(native));
    }
    out.insert("rules".into(), Value::Array(rules));
    Ok(Value::Object(out))
}

/// MOSN's `tcpcopy` network filter on the runtime's listener
/// (`filter_chains[].filters[]`) as the native `server.tcp_copy` table:
/// its `config.strategy` keys are ours; the dump directory is left to its
/// default (MOSN's log path). Bounds are checked by the native validation.
fn tcp_copy_of(listener: &Value, path: &str) -> Result<Option<Value>, Problem> {
    const KEYS: &[&str] = &["switch", "interval", "duration", "cpu_max_rate", "mem_max_rate"];
    for (ci, chain) in listener
        .get("filter_chains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for (fi, filter) in chain
            .get("filters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if filter.get("type").and_then(Value::as_str) != Some("tcpcopy") {
                continue;
            }
            let at = format!("{path}.filter_chains[{ci}].filters[{fi}].config.strategy");
            let mut out = Map::new();
            match filter.pointer("/config/strategy") {
                // Layotto leaves everything at its default (off).
                None | Some(Value::Null) => {}
                Some(Value::Object(strategy)) => {
                    for (key, value) in strategy {
                        if !KEYS.contains(&key.as_str()) {
                            return Err(Problem {
                                path: format!("{at}.{key}"),
                                message: format!("unknown tcpcopy strategy key; the keys are {}", KEYS.join(", ")),
                            });
                        }
                        out.insert(key.clone(), value.clone());
                    }
                }
                Some(_) => {
                    return Err(Problem {
                        path: at,
                        message: "the tcpcopy strategy is a table".into(),
                    });
                }
            }
            return Ok(Some(Value::Object(out)));
        }
    }
    Ok(None)
}

/// A Layotto WASM plugin config (a `Layotto` stream filter entry, or the
/// body of `/wasm/install`) as `wasmer` component metadata:
/// `vm_config.path` is the module, `instance_num` and `root_context_id`
/// keep their meaning, our own metadata keys (`maxMemoryMb`, `timeout`,
/// `queueTimeout`, `watch`, `cacheDir`) pass through, and every other
/// string-valued key is user data (`config.<key>`), as in Layotto.
pub fn wasm_function_metadata(conf: &Map<String, Value>) -> Result<std::collections::BTreeMap<String, String>, String> {
    const OURS: &[&str] = &["maxMemoryMb", "timeout", "queueTimeout", "watch", "cacheDir"];
    let mut out = std::collections::BTreeMap::new();
    if conf
        .get("from_wasm_plugin")
        .is_some_and(|v| !v.as_str().unwrap_or("x").is_empty())
    {
        return Err("from_wasm_plugin (a plugin managed by MOSN) is not supported; give vm_config.path".into());
    }
    let Some(path) = conf
        .get("vm_config")
        .and_then(|v| v.get("path"))
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    else {
        return Err("vm_config.path is required: the .wasm file".into());
    };
    out.insert("path".into(), path.to_owned());
    if let Some(engine) = conf
        .get("vm_config")
        .and_then(|v| v.get("engine"))
        .and_then(Value::as_str)
        && !matches!(engine, "" | "wasmer" | "wasmtime")
    {
        return Err(format!("vm_config.engine '{engine}' is not one of wasmer, wasmtime"));
    }
    let number = |key: &str| -> Result<Option<i64>, String> {
        match conf.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .map(Some)
                .ok_or_else(|| format!("{key} must be a whole number")),
        }
    };
    if let Some(n) = number("instance_num")? {
        // Layotto: 0 or less means one instance per CPU.
        out.insert("instanceNum".into(), n.max(0).to_string());
    }
    if let Some(n) = number("root_context_id")? {
        out.insert("rootContextId".into(), n.to_string());
    }
    for (key, value) in conf {
        if matches!(
            key.as_str(),
            "name" | "vm_config" | "instance_num" | "root_context_id" | "from_wasm_plugin"
        ) {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Bool(b) if OURS.contains(&key.as_str()) => b.to_string(),
            Value::Number(n) if OURS.contains(&key.as_str()) => n.to_string(),
            _ => continue,
        };
        if OURS.contains(&key.as_str()) {
            out.insert(key.clone(), text);
        } else {
            out.insert(format!("config.{key}"), text);
        }
    }
    Ok(out)
}

fn stream_filters(listener: &Value) -> impl Iterator<Item = &Value> {
    listener
        .get("stream_filters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn filters(listener: &Value) -> impl Iterator<Item = &Value> {
    listener
        .get("filter_chains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|chain| chain.get("filters").and_then(Value::as_array))
        .flatten()
}
