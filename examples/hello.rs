//! Calls `SayHello` on a running sidecar.
//!
//! ```text
//! cargo run --release -- start            # in one terminal
//! cargo run --example hello -- layotto    # in another
//! ```
//!
//! `LAYOTTO_ADDR` overrides the address (default `http://127.0.0.1:34904`).

use layotto::proto::runtime::v1::SayHelloRequest;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LAYOTTO_ADDR").unwrap_or_else(|_| "http://127.0.0.1:34904".into());
    let name = std::env::args().nth(1).unwrap_or_default();
    let mut client = RuntimeClient::connect(addr).await?;
    let reply = client
        .say_hello(SayHelloRequest {
            service_name: "helloworld".into(),
            name,
            data: None,
        })
        .await?;
    println!("{}", reply.into_inner().hello);
    Ok(())
}
