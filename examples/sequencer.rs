//! Draws ids from a sequence, WEAK then STRONG.
//!
//! ```text
//! cargo run --release -- start                    # has "sequencer_demo" (SQLite)
//! cargo run --example sequencer -- sequencer_demo
//! ```
//!
//! `LAYOTTO_ADDR` overrides the address (default `http://127.0.0.1:34904`).

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::sequencer_options::AutoIncrement;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LAYOTTO_ADDR").unwrap_or_else(|_| "http://127.0.0.1:34904".into());
    let store = std::env::args().nth(1).unwrap_or_else(|| "sequencer_demo".into());
    let mut client = RuntimeClient::connect(addr).await?;
    for increment in [AutoIncrement::Weak, AutoIncrement::Strong] {
        let mut ids = Vec::new();
        for _ in 0..5 {
            let reply = client
                .get_next_id(pb::GetNextIdRequest {
                    store_name: store.clone(),
                    // The default config sets biggerThan = 1000 for this key.
                    key: "order_id".into(),
                    options: Some(pb::SequencerOptions {
                        increment: increment as i32,
                    }),
                    metadata: Default::default(),
                })
                .await?;
            ids.push(reply.into_inner().next_id);
        }
        println!("{increment:?}: {ids:?}");
    }
    Ok(())
}
