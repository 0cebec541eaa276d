//! MQTT 5.0 request/response: a responder answers on the request's Response Topic with its
//! Correlation Data, and a requester awaits the answer to its own request.
//!
//! ```sh
//! cargo run -p midge-client --example request_response -- 127.0.0.1 1883
//! ```

use std::time::Duration;

use midge_client::{Client, PublishOptions, QoS, ReasonCode, SubscribeOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.next().map_or(Ok(1883), |p| p.parse())?;

    let responder = Client::builder(host.clone(), port)
        .client_id("midge-example-responder")
        .connect()
        .await?;
    let (_, mut requests) = responder
        .subscribe(
            "midge/example/upper",
            SubscribeOptions::with_qos(QoS::AtLeastOnce),
        )
        .await?;
    let serving = tokio::spawn({
        let responder = responder.clone();
        async move {
            while let Some(request) = requests.recv().await {
                let answer = String::from_utf8_lossy(request.payload()).to_uppercase();
                let options = PublishOptions::with_qos(QoS::AtLeastOnce);
                if let Err(err) = responder.respond(&request, answer, options).await {
                    eprintln!("cannot answer: {err}");
                }
            }
        }
    });

    let requester = Client::builder(host, port)
        .client_id("midge-example-requester")
        .connect()
        .await?;
    for word in ["midge", "mqtt", "tokio"] {
        let response = requester
            .request(
                "midge/example/upper",
                word,
                PublishOptions::with_qos(QoS::AtLeastOnce),
                Duration::from_secs(5),
            )
            .await?;
        println!("{word} -> {}", String::from_utf8_lossy(response.payload()));
    }
    requester.disconnect(ReasonCode::SUCCESS).await;
    responder.disconnect(ReasonCode::SUCCESS).await;
    serving.await?;
    Ok(())
}
