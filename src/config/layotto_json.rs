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
const UNSUPPORTED: &[&str] = &[
    "custom_component",
    "extends",
    "oss",
    "cryption",
    "email",
    "phone",
    "sms",
    "delay_queue",
];

pub(super) fn translate(root: &Map<String, Value>) -> Result<Map<String, Value>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut grpc: Option<(String, &Map<String, Value>)> = None;
    let mut flow_control: Option<Value> = None;
    let mut actuator_addr = None;
    let mut wasm_addr = None;
    let mut wasm_admin_addr = None;
    let mut functions = Map::new();

    let servers = root
        .get("servers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (si, server) in servers.iter().enumerate() {
        let listeners = server
            .get("listeners")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (li, listener) in listeners.iter().enumerate() {
            let path = format!("servers[{si}].listeners[{li}]");
            let address = listener.get("address").and_then(Value::as_str);
            if listener.get("name").and_then(Value::as_str) == Some("actuator") {
                actuator_addr = address.map(str::to_owned);
            }
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
                    _ => {}
                }
            }
            for (fi, filter) in filters(listener).enumerate() {
                let runtime = filter.get("type").and_then(Value::as_str) == Some("grpc")
                    && filter.pointer("/config/server_name").and_then(Value::as_str) == Some("runtime");
                if !runtime {
                    continue;
                }
                if listener.get("network").and_then(Value::as_str) == Some("unix") {
                    problems.push(Problem {
                        path: format!("{path}.network"),
                        message: "unix socket listeners are not supported; listen on ip:port".into(),
                    });
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
                match filter.pointer("/config/grpc_config").and_then(Value::as_object) {
                    Some(cfg) => grpc = Some((address.unwrap_or_default().to_owned(), cfg)),
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
    if let Some(addr) = actuator_addr {
        server.insert("actuator".into(), Value::String(addr));
    }
    if let Some(flow_control) = flow_control {
        server.insert("flow_control".into(), flow_control);
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
        if UNSUPPORTED.contains(&key.as_str()) {
            problems.push(Problem {
                path: format!("grpc_config.{key}"),
                message: "this Layotto feature is not supported by layotto-rs; remove the section".into(),
            });
            continue;
        }
        out.insert(key.clone(), value.clone());
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
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
