//! Publishes a few messages at each QoS and prints the broker's answer to each one.
//!
//! ```sh
//! cargo run -p midge-client --example publish -- 127.0.0.1 1883
//! ```

use midge_client::{Client, PublishOptions, QoS, ReasonCode};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.next().map_or(Ok(1883), |p| p.parse())?;
    let client = Client::builder(host, port)
        .client_id("midge-example-publish")
        .connect()
        .await?;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let options = PublishOptions::with_qos(qos).content_type("text/plain");
        // For QoS 1 and 2 this resolves when the broker has acknowledged this message.
        let reason = client
            .publish("midge/example", format!("hello at {qos:?}"), options)
            .await?;
        println!("{qos:?}: {reason}");
    }
    // Many messages in flight at once: queue them, then await their outcomes.
    let mut handles = Vec::new();
    for n in 0..100 {
        let options = PublishOptions::with_qos(QoS::AtLeastOnce);
        handles.push(
            client
                .enqueue("midge/example/batch", n.to_string(), options)
                .await?,
        );
    }
    for handle in handles {
        handle.await?;
    }
    println!("100 messages acknowledged");
    client.disconnect(ReasonCode::SUCCESS).await;
    Ok(())
}
