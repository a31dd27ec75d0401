//! Takes a lock, shows that another owner cannot, renews the lease, and
//! releases it.
//!
//! ```text
//! cargo run --release -- start                    # has "lock_demo" (SQLite)
//! cargo run --example lock -- lock_demo
//! ```
//!
//! `LAYOTTO_ADDR` overrides the address (default `http://127.0.0.1:34904`).

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LAYOTTO_ADDR").unwrap_or_else(|_| "http://127.0.0.1:34904".into());
    let store = std::env::args().nth(1).unwrap_or_else(|| "lock_demo".into());
    let mut client = RuntimeClient::connect(addr).await?;
    let try_lock = |owner: &str| pb::TryLockRequest {
        store_name: store.clone(),
        resource_id: "invoice-42".into(),
        lock_owner: owner.into(),
        expire: 10,
    };

    let alice = client.try_lock(try_lock("alice")).await?.into_inner().success;
    let bob = client.try_lock(try_lock("bob")).await?.into_inner().success;
    println!("alice took it: {alice}; bob took it too: {bob}");

    let renewed = client
        .lock_keep_alive(pb::LockKeepAliveRequest {
            store_name: store.clone(),
            resource_id: "invoice-42".into(),
            lock_owner: "alice".into(),
            expire: 30,
        })
        .await?
        .into_inner();
    println!("alice renewed her lease: {:?}", renewed.status());

    for owner in ["bob", "alice"] {
        let released = client
            .unlock(pb::UnlockRequest {
                store_name: store.clone(),
                resource_id: "invoice-42".into(),
                lock_owner: owner.into(),
            })
            .await?
            .into_inner();
        println!("{owner} unlocks: {:?}", released.status());
    }
    Ok(())
}
