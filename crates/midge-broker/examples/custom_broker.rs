//! A broker with its own hooks: password authentication, a topic ACL and event logging.
//!
//! Run with `cargo run -p midge-broker --example custom_broker`, then for example
//! `mosquitto_sub -p 1884 -u alice -P secret -t 'sensors/#'`. Stop it with Ctrl-C.

use std::sync::atomic::{AtomicU64, Ordering};

use midge_broker::codec::{ReasonCode, SubscriptionOptions};
use midge_broker::proto::Message;
use midge_broker::{Broker, BrokerConfig, ClientInfo, CloseReason, ConnectRequest, Hooks};

#[derive(Default)]
struct MyHooks {
    published: AtomicU64,
}

impl Hooks for MyHooks {
    fn authenticate(&self, req: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        match (req.username, req.password) {
            (Some("alice"), Some(b"secret")) | (Some("bob"), Some(b"hunter2")) => Ok(()),
            _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }

    fn authorize_publish(&self, client: &ClientInfo, message: &Message) -> Result<(), ReasonCode> {
        // Only alice may publish outside `sensors/`.
        let alice = client.username.as_ref().is_some_and(|u| u == "alice");
        if alice || message.topic.as_str().starts_with("sensors/") {
            Ok(())
        } else {
            Err(ReasonCode::NOT_AUTHORIZED)
        }
    }

    fn authorize_subscribe(
        &self,
        _client: &ClientInfo,
        filter: &str,
        _options: &SubscriptionOptions,
    ) -> Result<(), ReasonCode> {
        if filter.starts_with("$SYS") || filter.starts_with("sensors/") || filter == "#" {
            Ok(())
        } else {
            Err(ReasonCode::NOT_AUTHORIZED)
        }
    }

    fn on_connected(&self, client: &ClientInfo, session_present: bool) {
        println!(
            "connected: {} (session present: {session_present})",
            client.client_id
        );
    }

    fn on_disconnected(&self, client: &ClientInfo, reason: CloseReason) {
        println!("disconnected: {} ({reason:?})", client.client_id);
    }

    fn on_message_published(
        &self,
        _client: Option<&ClientInfo>,
        message: &Message,
        matched: usize,
    ) {
        let n = self.published.fetch_add(1, Ordering::Relaxed) + 1;
        println!("#{n} {} -> {matched} subscriber(s)", message.topic);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = BrokerConfig::default();
    let broker = Broker::builder()
        .config(config)
        .hooks(MyHooks::default())
        .bind("127.0.0.1:1884".parse()?)
        .start()
        .await?;
    println!("listening on {}", broker.local_addr());
    tokio::signal::ctrl_c().await?;
    println!("stats: {:?}", broker.stats());
    broker.shutdown().await;
    Ok(())
}
