//! Saves configuration, subscribes to it, changes it, and prints what the
//! subscription delivers.
//!
//! ```text
//! cargo run --release -- start                    # has "config_demo" (in-memory)
//! cargo run --example configuration -- config_demo
//! ```
//!
//! `LAYOTTO_ADDR` overrides the address (default `http://127.0.0.1:34904`).

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LAYOTTO_ADDR").unwrap_or_else(|_| "http://127.0.0.1:34904".into());
    let store = std::env::args().nth(1).unwrap_or_else(|| "config_demo".into());
    let mut client = RuntimeClient::connect(addr).await?;
    let save = move |content: &str| pb::SaveConfigurationRequest {
        store_name: store.clone(),
        items: vec![pb::ConfigurationItem {
            key: "timeout".into(),
            content: content.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    client.save_configuration(save("30s")).await?;

    // Subscribe: the current value first, then every change.
    let (requests, requests_rx) = tokio::sync::mpsc::channel(1);
    requests
        .send(pb::SubscribeConfigurationRequest {
            store_name: save("").store_name,
            keys: vec!["timeout".into()],
            ..Default::default()
        })
        .await?;
    let mut updates = client
        .subscribe_configuration(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await?
        .into_inner();

    let mut writer = client.clone();
    tokio::spawn(async move {
        let _ = writer.save_configuration(save("45s")).await;
    });
    for _ in 0..2 {
        if let Some(update) = updates.message().await? {
            for item in update.items {
                println!(
                    "{} = {} (group {}, label {})",
                    item.key, item.content, item.group, item.label
                );
            }
        }
    }
    Ok(())
}
