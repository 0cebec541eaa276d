//! Subscribes to a filter and prints every message with its 5.0 properties.
//!
//! ```sh
//! cargo run -p midge-client --example subscribe -- 127.0.0.1 1883 'midge/#'
//! ```

use midge_client::{Client, QoS, SubscribeOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.next().map_or(Ok(1883), |p| p.parse())?;
    let filter = args.next().unwrap_or_else(|| "midge/#".into());
    let client = Client::builder(host, port)
        .client_id("midge-example-subscribe")
        .connect()
        .await?;
    let (granted, mut messages) = client
        .subscribe(filter.clone(), SubscribeOptions::with_qos(QoS::ExactlyOnce))
        .await?;
    println!("subscribed to {filter}: {granted}");
    while let Some(message) = messages.recv().await {
        println!(
            "{} [{:?}{}] {:?}",
            message.topic(),
            message.qos(),
            if message.retain() { ", retained" } else { "" },
            message.payload()
        );
        if let Some(content_type) = message.content_type() {
            println!("  content type: {}", content_type.as_str());
        }
        for (key, value) in message.user_properties() {
            println!("  {}: {}", key.as_str(), value.as_str());
        }
    }
    Ok(())
}
