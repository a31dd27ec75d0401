//! Saves, reads, conditionally updates and deletes a key through the State
//! API of a running sidecar.
//!
//! ```text
//! cargo run --release -- start                    # store "state_demo" (SQLite)
//! cargo run --example state -- state_demo
//! ```
//!
//! `LAYOTTO_ADDR` overrides the address (default `http://127.0.0.1:34904`).

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LAYOTTO_ADDR").unwrap_or_else(|_| "http://127.0.0.1:34904".into());
    let store = std::env::args().nth(1).unwrap_or_else(|| "state_demo".into());
    let mut client = RuntimeClient::connect(addr).await?;

    let item = |value: &str, etag: Option<&str>| pb::StateItem {
        key: "greeting".into(),
        value: value.as_bytes().to_vec(),
        etag: etag.map(|e| pb::Etag { value: e.into() }),
        ..Default::default()
    };
    let get = pb::GetStateRequest {
        store_name: store.clone(),
        key: "greeting".into(),
        ..Default::default()
    };

    client
        .save_state(pb::SaveStateRequest {
            store_name: store.clone(),
            states: vec![item("hello", None)],
        })
        .await?;
    let read = client.get_state(get.clone()).await?.into_inner();
    println!(
        "saved {:?} with etag {}",
        String::from_utf8_lossy(&read.data),
        read.etag
    );

    // Only if nobody changed it since we read it:
    client
        .save_state(pb::SaveStateRequest {
            store_name: store.clone(),
            states: vec![item("hello again", Some(&read.etag))],
        })
        .await?;
    // A second write with the old etag is refused with ABORTED.
    let stale = client
        .save_state(pb::SaveStateRequest {
            store_name: store.clone(),
            states: vec![item("lost", Some(&read.etag))],
        })
        .await;
    println!("write with a stale etag: {:?}", stale.map_err(|s| s.code()));

    let read = client.get_state(get.clone()).await?.into_inner();
    println!("now {:?}", String::from_utf8_lossy(&read.data));
    client
        .delete_state(pb::DeleteStateRequest {
            store_name: store,
            key: "greeting".into(),
            ..Default::default()
        })
        .await?;
    println!(
        "deleted; read gives {:?}",
        client.get_state(get).await?.into_inner().data
    );
    Ok(())
}
