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
    "rpcs",
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
    let mut actuator_addr = None;

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
    out.insert("server".into(), Value::Object(server));

    for (key, value) in grpc_config {
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

fn filters(listener: &Value) -> impl Iterator<Item = &Value> {
    listener
        .get("filter_chains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|chain| chain.get("filters").and_then(Value::as_array))
        .flatten()
}
