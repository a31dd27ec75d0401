//! Layotto-rs: an application runtime that runs beside an app as a sidecar
//! and gives it distributed capabilities (state, pub/sub, locks, ...) over
//! Layotto's gRPC API, with the backend chosen by config.
//!
//! # Layout
//!
//! A request walks one way, and each step is a module:
//!
//! - [`api`]: where requests enter. The block services (`api::blocks`, one
//!   module per building block) hold each block's rules once, over plain
//!   Rust requests and one error type: validation, key scoping, routing,
//!   the actor message. The front ends are thin adapters over them: the
//!   gRPC server (`api::grpc`, one file per building block, and
//!   `api::grpc::status`, the one place block errors become gRPC
//!   statuses), Dapr's HTTP API (`api::dapr_http`, errors mapped in
//!   `api::dapr_http::errors`), and the API plugins (`api::plugins`: gRPC
//!   services of their own, one file each and one line in its registry,
//!   served when configured, reaching components only through the block
//!   services). Beside them: the actuator (health, info,
//!   `/metrics`), delivery of events to the app, and what every listener
//!   shares (`api::conn`: handshake and idle timeouts; `api::linger`:
//!   closes that lose no answer; the cut-off switch that answers calls
//!   still running when shutdown's grace period ends).
//! - [`actors`]: each configured component lives in an actix actor; the
//!   [`actors::Router`] finds it by building block and name, and a typed
//!   message carries the request to it.
//! - [`components`]: the building-block traits, THE registry of component
//!   types, and one file per backend. Nothing here knows about gRPC, but for
//!   the pluggable components (`components::pluggable`, and a
//!   `pluggable.rs` per block that has a protocol): processes of their own,
//!   discovered on unix sockets, reached over Dapr's and Layotto's
//!   pluggable component protocols.
//! - [`supervisor`]: owns lifecycles. A root supervisor, one supervisor per
//!   building block, one actor per component; restarts with backoff, and
//!   the status registry that health endpoints and metrics read.
//!
//! Around them: [`config`] (parse, validate, no I/O), [`runtime`] (start-up
//! and graceful shutdown), [`metrics`] (every metric name),
//! [`flow_control`] (rate limiters per method and per component),
//! [`telemetry`] (logging) and [`proto`] (generated gRPC code). `fuzzing` (hidden) lets
//! the fuzz targets in `fuzz/` call the block services' request checks.

// First: its block table defines `with_blocks!`, which the modules after
// it use to list every building block.
#[macro_use]
pub mod components;
pub mod actors;
pub mod api;
pub mod config;
pub mod flow_control;
/// The block services' request checks without a runtime, for `fuzz/`.
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod runtime;
pub mod supervisor;
pub mod telemetry;

/// Generated protobuf and gRPC code.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    /// Descriptors of the served API, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("layotto_descriptor");
    /// Descriptors of Dapr's runtime API and AppCallback.
    pub const DAPR_FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dapr_descriptor");
    /// Descriptors of the pluggable component protocols (Dapr's
    /// `dapr.proto.components.v1` and Layotto's `spec.proto.pluggable.v1`),
    /// with their imports: what a component written in another language
    /// can build its messages from.
    pub const PLUGGABLE_FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("pluggable_descriptor");

    /// The API plugins' services (`api::plugins`), each with the
    /// descriptors reflection lists when it is served.
    pub mod plugins {
        /// `layotto.plugins.counter.v1`: the example plugin.
        pub mod counter {
            pub mod v1 {
                tonic::include_proto!("layotto.plugins.counter.v1");
                /// Descriptors of `layotto.plugins.counter.v1.Counter`.
                pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("counter_plugin_descriptor");
            }
        }
    }

    /// etcd's v3 API (package `etcdserverpb`), the client side of the
    /// part the etcd component types use.
    pub mod etcd {
        tonic::include_proto!("etcdserverpb");
    }

    /// Layotto's `spec.proto.runtime.v1`.
    pub mod runtime {
        pub mod v1 {
            tonic::include_proto!("spec.proto.runtime.v1");
        }
    }

    /// Dapr's `dapr.proto.runtime.v1.AppCallback` and the common types it
    /// uses.
    pub mod dapr {
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("dapr.proto.common.v1");
            }
        }
        pub mod internals {
            pub mod v1 {
                tonic::include_proto!("dapr.proto.internals.v1");
            }
        }
        pub mod runtime {
            pub mod v1 {
                tonic::include_proto!("dapr.proto.runtime.v1");
            }
        }
        /// Dapr's pluggable component protocol (client side).
        pub mod components {
            pub mod v1 {
                tonic::include_proto!("dapr.proto.components.v1");
            }
        }
    }

    /// Layotto's pluggable component protocol (client side).
    pub mod pluggable {
        pub mod v1 {
            pub mod common {
                tonic::include_proto!("spec.proto.pluggable.v1.common");
            }
            pub mod hello {
                tonic::include_proto!("spec.proto.pluggable.v1.hello");
            }
        }
    }

    /// Baseline services used only by the benchmarks.
    #[doc(hidden)]
    pub mod bench {
        include!(concat!(env!("OUT_DIR"), "/bench/layotto.bench.v1.rs"));
    }
}

pub use config::Config;
pub use runtime::{ReloadSource, Runtime, RuntimeError};
