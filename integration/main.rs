//! Integration tests: a real sidecar (in this process, or the `layotto`
//! binary) driven over its real listeners.

#![allow(clippy::unwrap_used)]

mod api;
mod app_channel;
mod apps;
mod bindings;
mod chaos;
mod configuration;
mod dapr_grpc;
mod dapr_http;
mod dapr_resources;
mod file;
mod flow_control;
mod hostile;
mod invoke;
mod layotto_configs;
mod linked_tasks;
mod lock;
mod pluggable;
mod plugins;
mod process;
mod pubsub;
mod pubsub_faults;
mod reload;
mod resources;
mod sdk;
mod secrets;
mod sequencer;
mod shutdown;
mod state;
mod state_faults;
mod supervision;
mod support;
mod tcp_copy;
mod wasm;
