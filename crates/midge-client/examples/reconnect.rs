//! A persistent session that survives broker restarts: prints connection events, and keeps
//! publishing numbered QoS 1 messages, each acknowledged exactly when the broker has it.
//! Stop and start the broker while it runs.
//!
//! ```sh
//! cargo run -p midge-client --example reconnect -- 127.0.0.1 1883
//! ```

use std::time::Duration;

use midge_client::{Client, ConnectionEvent, PublishOptions, QoS, ReconnectPolicy};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.next().map_or(Ok(1883), |p| p.parse())?;
    let client = Client::builder(host, port)
        .client_id("midge-example-reconnect")
        // Keep the session for an hour, so that nothing unacknowledged is lost.
        .clean_start(false)
        .session_expiry(3600)
        .reconnect(Some(ReconnectPolicy::exponential(
            Duration::from_millis(200),
            Duration::from_secs(10),
        )))
        // Connect in the background: publishes wait in the bounded queue meanwhile.
        .build()?;
    let mut events = client.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                ConnectionEvent::Connected { session_present } => {
                    println!("connected (session present: {session_present})");
                }
                ConnectionEvent::Disconnected { reason } => println!("disconnected: {reason}"),
                ConnectionEvent::Reconnecting { attempt, delay } => {
                    println!("reconnecting, attempt {attempt} in {delay:?}");
                }
                ConnectionEvent::Closed => println!("closed"),
                _ => {}
            }
        }
    });
    for n in 0u64.. {
        let options = PublishOptions::with_qos(QoS::AtLeastOnce);
        match client
            .publish("midge/example/counter", n.to_string(), options)
            .await
        {
            Ok(reason) => println!("{n}: {reason}"),
            Err(err) => {
                eprintln!("{n}: {err}");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
