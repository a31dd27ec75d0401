//! Locks and sequences.
//!
//! `lock-redis`: TryLock + Unlock on Redis through the sidecar, against the
//! same commands sent straight to Redis with the `redis` crate (SET NX PX,
//! then the owner-checked delete script), many in flight and one at a time.
//!
//! `sequencer`: GetNextId WEAK against STRONG, on Redis and PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::sequencer_options::AutoIncrement;
use redis::aio::ConnectionManager;
use tonic::transport::Channel;

use crate::harness::{Client, Load, Report};

/// Unique resource names across the calls of a run.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn resource() -> String {
    format!(
        "bench-lock-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

const UNLOCK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

pub async fn lock_redis() -> anyhow::Result<()> {
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        eprintln!("lock-redis: skipped, no Redis on 127.0.0.1:6379");
        return Ok(());
    }
    let sidecar = crate::sidecar(
        "[app]\napp_id = \"bench\"\n[lock.l]\ntype = \"redis\"\nmetadata = { redisHost = \"127.0.0.1:6379\" }\n",
    )
    .await?;
    let load = Load::from_env();
    let sequential = load.sequential();
    let client = Client::start()?;
    let channels = client.channels(sidecar.grpc_addr(), load.connections).await?;
    let direct = client
        .spawn(async {
            redis::Client::open("redis://127.0.0.1:6379/0")?
                .get_connection_manager()
                .await
        })
        .await??;
    let script = Arc::new(redis::Script::new(UNLOCK));

    let sidecar_pair = |c: Channel| async move {
        let mut rc = RuntimeClient::new(c);
        let resource = resource();
        let taken = rc
            .try_lock(pb::TryLockRequest {
                store_name: "l".into(),
                resource_id: resource.clone(),
                lock_owner: "bench".into(),
                expire: 10,
            })
            .await?
            .into_inner()
            .success;
        if !taken {
            return Err(tonic::Status::aborted("not taken"));
        }
        rc.unlock(pb::UnlockRequest {
            store_name: "l".into(),
            resource_id: resource,
            lock_owner: "bench".into(),
        })
        .await
        .map(drop)
    };
    let direct_pair = move |mut c: ConnectionManager| {
        let script = script.clone();
        async move {
            let key = format!("lock|||bench||{}", resource());
            let taken: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg("bench")
                .arg("NX")
                .arg("PX")
                .arg(10_000)
                .query_async(&mut c)
                .await?;
            if taken.is_none() {
                return Err(redis::RedisError::from((redis::ErrorKind::Client, "not taken")));
            }
            script
                .key(&key)
                .arg("bench")
                .invoke_async::<i64>(&mut c)
                .await
                .map(drop)
        }
    };

    let mut report = Report::new(
        "lock-redis",
        "TryLock + Unlock pairs on Redis through the sidecar vs the same commands (SET NX PX, then an owner-checked \
         delete script) sent directly with the redis crate; pairs per second, many in flight and one at a time",
    );
    let directs = vec![direct];
    for _ in 0..load.rounds {
        report.add("pairs via sidecar", load.run(&client, &channels, sidecar_pair).await);
        report.add("pairs direct", load.run(&client, &directs, direct_pair.clone()).await);
        report.add(
            "one pair at a time via sidecar",
            sequential.run(&client, &channels[..1], sidecar_pair).await,
        );
        report.add(
            "one pair at a time direct",
            sequential.run(&client, &directs, direct_pair.clone()).await,
        );
    }
    report.ratio(
        "pairs via sidecar",
        "pairs direct",
        "lock pair throughput, sidecar / direct",
    );
    let (via, _) = report.latency("one pair at a time via sidecar");
    let (direct_p50, _) = report.latency("one pair at a time direct");
    report.note(format!(
        "one pair at a time: p50 {via:.0} µs through the sidecar, {direct_p50:.0} µs direct"
    ));
    report.finish(&load).context("writing docs/benchmarks.md")?;
    sidecar.shutdown().await;
    Ok(())
}

pub async fn sequencer() -> anyhow::Result<()> {
    let load = Load::from_env();
    let client = Client::start()?;
    let mut report = Report::new(
        "sequencer",
        "GetNextId WEAK (segments of 1000 ids) vs STRONG (every id from the store), through the sidecar",
    );
    let stores = [
        (
            "redis",
            "127.0.0.1:6379",
            "metadata = { redisHost = \"127.0.0.1:6379\", segmentSize = \"1000\" }",
        ),
        (
            "postgresql",
            "127.0.0.1:5432",
            "metadata = { connectionString = \"postgres://postgres@127.0.0.1:5432/test\", segmentSize = \"1000\" }",
        ),
    ];
    let mut sidecars = Vec::new();
    let mut measured = Vec::new();
    for (ty, addr, meta) in stores {
        if std::net::TcpStream::connect(addr).is_err() {
            eprintln!("sequencer: {ty} skipped, nothing on {addr}");
            continue;
        }
        let sidecar = crate::sidecar(&format!(
            "[app]\napp_id = \"bench\"\n[sequencer.s]\ntype = \"{ty}\"\n{meta}\n"
        ))
        .await?;
        let channels = client.channels(sidecar.grpc_addr(), load.connections).await?;
        measured.push((ty, channels));
        sidecars.push(sidecar);
    }
    let key = format!("bench-seq-{}", std::process::id());
    for _ in 0..load.rounds {
        for (ty, channels) in &measured {
            for increment in [AutoIncrement::Weak, AutoIncrement::Strong] {
                let key = key.clone();
                let call = move |c: Channel| {
                    let key = key.clone();
                    async move {
                        RuntimeClient::new(c)
                            .get_next_id(pb::GetNextIdRequest {
                                store_name: "s".into(),
                                key,
                                options: Some(pb::SequencerOptions {
                                    increment: increment as i32,
                                }),
                                metadata: Default::default(),
                            })
                            .await
                            .map(drop)
                    }
                };
                report.add(&format!("{ty} {increment:?}"), load.run(&client, channels, call).await);
            }
        }
    }
    for (ty, _) in &measured {
        report.ratio(
            &format!("{ty} Weak"),
            &format!("{ty} Strong"),
            &format!("{ty}: WEAK throughput / STRONG throughput"),
        );
    }
    report.finish(&load).context("writing docs/benchmarks.md")?;
    for sidecar in sidecars {
        sidecar.shutdown().await;
    }
    Ok(())
}
