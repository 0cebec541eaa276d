//! A scripted broker on an in-memory network, for tests on tokio's paused clock: the client
//! connects through a [`Connector`] that hands it one end of a `tokio::io::duplex` pipe, and
//! the test plays the broker on the other end, packet by packet, with the raw peer of
//! `midge_testkit::raw`.
//!
//! Everything runs in the test's runtime and no byte passes through the kernel, so tokio
//! advances its paused clock only when the client and the test both wait: a timer fires
//! exactly when it is due, and a test of a 30 s keepalive takes no real time.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use midge_client::codec::{Packet, PacketId, Publish, PublishProperties, SubscriptionId};
use midge_client::{ClientBuilder, Connector, ProtocolVersion, QoS, ReconnectPolicy};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::WAIT;

/// What the network does with the client's next connection attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Connect: the test accepts the other end with [`Network::accept`].
    Accept,
    /// Fail at once with `ConnectionRefused`.
    Refuse,
    /// Never complete (a black hole), until the client gives up.
    Hang,
}

struct State {
    mode: Mode,
    /// When each attempt was made, on tokio's clock.
    attempts: Vec<Instant>,
}

/// The in-memory network of one client.
pub struct Network {
    state: Arc<Mutex<State>>,
    accepted: mpsc::UnboundedReceiver<DuplexStream>,
    version: ProtocolVersion,
}

impl Network {
    /// A network in [`Mode::Accept`], and a connector for the client.
    pub fn new(version: ProtocolVersion) -> (Self, Connector) {
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Accept,
            attempts: Vec::new(),
        }));
        let (tx, accepted) = mpsc::unbounded_channel();
        let connector = Connector::from_fn({
            let state = state.clone();
            move || {
                let mode = {
                    let mut state = state.lock().expect("network state");
                    state.attempts.push(Instant::now());
                    state.mode
                };
                let tx = tx.clone();
                async move {
                    match mode {
                        Mode::Accept => {
                            let (client, server) = tokio::io::duplex(256 * 1024);
                            tx.send(server)
                                .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
                            Ok(client)
                        }
                        Mode::Refuse => Err(io::ErrorKind::ConnectionRefused.into()),
                        Mode::Hang => std::future::pending().await,
                    }
                }
            }
        });
        let network = Self {
            state,
            accepted,
            version,
        };
        (network, connector)
    }

    /// A builder for a client on a new network: `version`, client identifier `id`, jitter-free
    /// reconnection after 100 ms doubling up to 1 s.
    pub fn client(version: ProtocolVersion, id: &str) -> (Self, ClientBuilder) {
        let (network, connector) = Self::new(version);
        let builder = ClientBuilder::with_connector(connector)
            .version(version)
            .client_id(id)
            .reconnect(Some(
                ReconnectPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
                    .jitter(false),
            ));
        (network, builder)
    }

    /// What the next attempts get.
    pub fn set(&self, mode: Mode) {
        self.state.lock().expect("network state").mode = mode;
    }

    /// When the client tried to connect, on tokio's clock.
    pub fn attempts(&self) -> Vec<Instant> {
        self.state.lock().expect("network state").attempts.clone()
    }

    /// The broker's end of the next connection; panics if none comes within [`WAIT`].
    pub async fn accept(&mut self) -> Peer {
        let stream = tokio::time::timeout(WAIT, self.accepted.recv())
            .await
            .expect("timed out: the client connects")
            .expect("the connector is alive");
        Peer::new(stream, self.version).with_wait(WAIT)
    }

    /// Whether another connection arrives within `wait`.
    pub async fn connects_within(&mut self, wait: Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, self.accepted.recv()).await,
            Ok(Some(_))
        )
    }
}

/// The broker's end of one connection.
pub type Peer = midge_testkit::raw::Peer<DuplexStream>;

/// A QoS 1 PUBLISH from the broker, with packet identifier `id`.
pub fn publish(topic: &str, id: u16, payload: &'static str) -> Packet {
    publish_with(topic, id, payload, QoS::AtLeastOnce, &[])
}

/// A PUBLISH from the broker, with packet identifier `id` and these Subscription Identifiers.
pub fn publish_with(
    topic: &str,
    id: u16,
    payload: &'static str,
    qos: QoS,
    subscription_ids: &[u32],
) -> Packet {
    let mut properties = PublishProperties::default();
    let ids: Vec<_> = subscription_ids
        .iter()
        .map(|&id| SubscriptionId::new(id).expect("a valid identifier"))
        .collect();
    properties.set_subscription_identifiers(&ids);
    Packet::Publish(Publish {
        qos,
        topic: topic.to_owned().into(),
        packet_id: PacketId::new(id),
        payload: Bytes::from_static(payload.as_bytes()),
        properties,
        ..Publish::default()
    })
}
