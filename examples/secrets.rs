//! Reads one secret and lists all of a store's secrets.
//!
//! ```text
//! LAYOTTO_SECRET_db_password=s3cret cargo run --release -- start   # has "secret_demo" (local.env)
//! cargo run --example secrets -- secret_demo db_password
//! ```
//!
//! `LAYOTTO_ADDR` overrides the address (default `http://127.0.0.1:34904`).

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LAYOTTO_ADDR").unwrap_or_else(|_| "http://127.0.0.1:34904".into());
    let mut args = std::env::args().skip(1);
    let store = args.next().unwrap_or_else(|| "secret_demo".into());
    let key = args.next().unwrap_or_else(|| "db_password".into());
    let mut client = RuntimeClient::connect(addr).await?;

    match client
        .get_secret(pb::GetSecretRequest {
            store_name: store.clone(),
            key: key.clone(),
            ..Default::default()
        })
        .await
    {
        Ok(secret) => println!("{key}: {} value(s)", secret.into_inner().data.len()),
        Err(status) => println!("{key}: {:?} {}", status.code(), status.message()),
    }
    let all = client
        .get_bulk_secret(pb::GetBulkSecretRequest {
            store_name: store,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut names: Vec<_> = all.data.keys().collect();
    names.sort();
    println!("secrets in the store: {names:?}");
    Ok(())
}
