# syntax=docker/dockerfile:1
# Multi-stage: build with the pinned toolchain, run as an unprivileged user
# on a slim base. protoc comes from the protoc-bin-vendored crate, so the
# build stage needs no system packages beyond the Rust image.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin layotto \
 && install -D target/release/layotto /out/layotto

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/layotto --create-home layotto
COPY --from=build /out/layotto /usr/local/bin/layotto
# `layotto start` reads config/default.toml under its working directory;
# a launch with --resources-path and no -c reads only the resources.
COPY config/ /var/lib/layotto/config/
# Inside a container the listeners must face the network, not loopback.
# Flags (--dapr-grpc-port, ...) win over these, as on a command line.
ENV LAYOTTO__SERVER__GRPC=0.0.0.0:34904 \
    LAYOTTO__SERVER__ACTUATOR=0.0.0.0:34999 \
    LAYOTTO__SERVER__DAPR_HTTP=0.0.0.0:3500
# Pluggable components' sockets: share this folder with the component
# containers (an emptyDir in Kubernetes), as with daprd.
ENV DAPR_COMPONENTS_SOCKETS_FOLDER=/tmp/dapr-components-sockets
VOLUME ["/tmp/dapr-components-sockets"]
USER layotto
WORKDIR /var/lib/layotto
# 2045: the WASM function ingress, when a config sets server.wasm
# (compiled modules are cached under $HOME/.cache, here the user's home).
EXPOSE 34904 34999 3500 2045
ENTRYPOINT ["/usr/local/bin/layotto"]
CMD ["start"]
