//! Compiles the protos in `proto/` with a vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler. `PROTOC` still overrides it.

use std::path::PathBuf;

/// The sidecar's own API; its descriptors feed gRPC reflection.
const API_PROTOS: &[&str] = &[
    "proto/spec/proto/runtime/v1/runtime.proto",
    "proto/spec/proto/runtime/v1/appcallback.proto",
    "proto/spec/proto/runtime/v1/lifecycle.proto",
];

/// Dapr's AppCallback, which the sidecar calls on apps built with Dapr SDKs,
/// and Dapr's runtime API, which it serves to them.
const DAPR_PROTOS: &[&str] = &[
    "proto/dapr/proto/runtime/v1/appcallback.proto",
    "proto/dapr/proto/runtime/v1/dapr.proto",
    "proto/dapr/proto/internals/v1/service_invocation.proto",
];

/// The example API plugin's service (`src/api/plugins/counter.rs`), with
/// its own descriptor set: reflection lists it only when it is served.
const COUNTER_PLUGIN_PROTOS: &[&str] = &["proto/layotto/plugins/counter/v1/counter.proto"];

/// The subset of etcd's v3 API that the etcd component types call (a
/// client only).
const ETCD_PROTOS: &[&str] = &["proto/etcd/rpc.proto"];

/// The pluggable component protocols, Dapr's and Layotto's: the sidecar is
/// their client; their descriptors let tests serve them from other
/// languages.
const PLUGGABLE_PROTOS: &[&str] = &[
    "proto/dapr/proto/components/v1/common.proto",
    "proto/dapr/proto/components/v1/state.proto",
    "proto/dapr/proto/components/v1/pubsub.proto",
    "proto/dapr/proto/components/v1/bindings.proto",
    "proto/dapr/proto/components/v1/secretstore.proto",
    "proto/spec/proto/pluggable/v1/common/common.proto",
    "proto/spec/proto/pluggable/v1/hello/hello.proto",
];

/// Baseline services for the benchmarks; kept out of reflection.
const BENCH_PROTOS: &[&str] = &["proto/layotto/bench/v1/echo.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Reported by /actuator/info; SOURCE_DATE_EPOCH keeps builds
    // reproducible.
    let built = match std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()) {
        Some(secs) => std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        None => std::time::SystemTime::now(),
    };
    println!(
        "cargo:rustc-env=LAYOTTO_BUILD_TIME={}",
        humantime::format_rfc3339_seconds(built)
    );
    println!("cargo:rerun-if-changed=proto");

    let protoc = match std::env::var_os("PROTOC") {
        Some(protoc) => PathBuf::from(protoc),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let config = || {
        let mut config = prost_build::Config::new();
        config.protoc_executable(&protoc);
        config
    };

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Small first buffers per call: see src/api/grpc/codec.rs.
    let codec = "crate::api::grpc::codec::LeanCodec";
    tonic_prost_build::configure()
        .codec_path(codec)
        .file_descriptor_set_path(out.join("layotto_descriptor.bin"))
        .compile_with_config(config(), API_PROTOS, &["proto"])?;
    tonic_prost_build::configure()
        .codec_path(codec)
        .file_descriptor_set_path(out.join("dapr_descriptor.bin"))
        .compile_with_config(config(), DAPR_PROTOS, &["proto"])?;
    tonic_prost_build::configure()
        .codec_path(codec)
        .file_descriptor_set_path(out.join("counter_plugin_descriptor.bin"))
        .compile_with_config(config(), COUNTER_PLUGIN_PROTOS, &["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .file_descriptor_set_path(out.join("pluggable_descriptor.bin"))
        .compile_with_config(config(), PLUGGABLE_PROTOS, &["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(config(), ETCD_PROTOS, &["proto"])?;
    // A directory of its own: prost also writes (service-only) code for the
    // imported runtime.proto, which must not overwrite the real one.
    let bench_out = out.join("bench");
    std::fs::create_dir_all(&bench_out)?;
    tonic_prost_build::configure()
        .out_dir(&bench_out)
        .extern_path(".spec.proto.runtime.v1", "crate::proto::runtime::v1")
        .compile_with_config(config(), BENCH_PROTOS, &["proto"])?;
    Ok(())
}
