//! A broker with its own hooks: password authentication, a topic ACL and event logging.
//!
//! Run it with the address to listen on (default `127.0.0.1:1884`; port 0 picks a free one):
//!
//! ```text
//! cargo run -p midge-broker --example custom_broker -- 127.0.0.1:1884
//! ```
//!
//! then, from another terminal, for example
//! `mosquitto_sub -p 1884 -i alice-sub -u alice -P secret -t 'sensors/#'` and
//! `mosquitto_pub -p 1884 -i bob-pub -u bob -P hunter2 -t sensors/1 -m 21.5`. It prints one line per
//! connection, disconnection and message published by a client (the broker's own `$SYS`
//! messages are left out):
//!
//! ```text
//! listening on 127.0.0.1:1884
//! connected: alice-sub (session present: false)
//! connected: bob-pub (session present: false)
//! #1 sensors/1 from bob-pub -> 1 subscriber(s)
//! disconnected: bob-pub (DisconnectedByClient(SUCCESS(0x00)))
//! ```
//!
//! Ctrl-C prints the broker's counters (`stats: BrokerStats { .. }`) and stops it.

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

    fn on_message_published(&self, client: Option<&ClientInfo>, message: &Message, matched: usize) {
        // `$SYS` updates come from the broker itself, every few seconds: not shown.
        if message.topic.as_str().starts_with("$SYS/") {
            return;
        }
        let n = self.published.fetch_add(1, Ordering::Relaxed) + 1;
        // No client: a will published after its client left.
        let from = client.map_or("the broker (a will)", |c| c.client_id.as_str());
        println!(
            "#{n} {} from {from} -> {matched} subscriber(s)",
            message.topic
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1884".to_owned());
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        eprintln!("custom_broker: {addr:?} is not an address such as 127.0.0.1:1884");
        std::process::exit(2);
    };
    let config = BrokerConfig::default();
    let broker = Broker::builder()
        .config(config)
        .hooks(MyHooks::default())
        .bind(addr)
        .start()
        .await?;
    println!("listening on {}", broker.local_addr());
    tokio::signal::ctrl_c().await?;
    println!("stats: {:?}", broker.stats());
    broker.shutdown().await;
    Ok(())
}
