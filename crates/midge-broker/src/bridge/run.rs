//! A bridge's tasks: its two clients, and the loops that forward between them.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use midge_client::{
    Client, ClientBuilder, ClientError, CloseReason, ConnectionEvent, Connector, Limits,
    PublishOptions, ReconnectPolicy, SubscribeOptions, Subscription,
};
use midge_codec::{ByteStr, ProtocolVersion, PublishProperties, QoS, ReasonCode, Will};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::BridgeStatus;
use crate::config::{BridgeConfig, BridgeProtocol, BridgeTopic};
use crate::core::{Core, BRIDGE_CLIENT_PREFIX};
use crate::driver::{self, Origin};
use crate::listener::Gate;

/// QoS 1 and 2 messages one forwarding loop keeps in flight at once: enough to fill a
/// round trip to a remote far away, few enough that a slow remote holds back little.
const WINDOW: usize = 256;

/// How long a stopping bridge waits for its last notification to be acknowledged.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Starts every configured bridge. Each runs until `stopping` says true (or its sender is
/// gone); the connections it makes into this broker are admitted through `gate`.
pub(crate) fn start(
    core: &Arc<Core>,
    gate: &Arc<Gate>,
    stopping: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    core.config
        .bridges
        .iter()
        .zip(&core.bridges)
        .map(|(config, status)| {
            let bridge = Bridge {
                config: config.clone(),
                status: status.clone(),
                core: Arc::downgrade(core),
                gate: Arc::downgrade(gate),
                bridge_flag: config.try_private && config.protocol_version == BridgeProtocol::V311,
                remote_will: config.notifications && !config.notifications_local_only,
            };
            tokio::spawn(bridge.run(stopping.clone()))
        })
        .collect()
}

/// Waits until every bridge has its `out` subscriptions here, for at most `limit`.
pub(crate) async fn wait_subscribed(core: &Arc<Core>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let admin = crate::Admin::new(core.clone());
    for config in &core.config.bridges {
        let mut wanted: Vec<String> = config
            .topics
            .iter()
            .filter(|topic| topic.direction.out())
            .map(BridgeTopic::local_filter)
            .collect();
        wanted.sort();
        wanted.dedup();
        let client_id = format!("{BRIDGE_CLIENT_PREFIX}{}", config.name);
        loop {
            let made = admin.client(&client_id).is_some_and(|detail| {
                wanted
                    .iter()
                    .all(|filter| detail.subscriptions.iter().any(|s| &s.filter == filter))
            });
            if made || wanted.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(bridge = %config.name, "the bridge's subscriptions are not made yet; serving clients anyway");
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

struct Bridge {
    config: BridgeConfig,
    status: Arc<BridgeStatus>,
    core: Weak<Core>,
    gate: Weak<Gate>,
    /// Whether the next connections to the remote carry the 3.1.1 bridge flag: until a remote
    /// refuses it as an unknown protocol version.
    bridge_flag: bool,
    /// Whether the CONNECT carries the will that says `0` on the remote: until a remote
    /// refuses the connection as not authorized (a broker may refuse wills into `$SYS`).
    remote_will: bool,
}

/// Which way a forwarding loop goes.
#[derive(Clone, Copy, Debug)]
enum Way {
    Out,
    In,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::In => "in",
        }
    }
}

impl Bridge {
    async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        let name = self.config.name.clone();
        let initial = Duration::from_millis(self.config.reconnect_delay_ms);
        let mut delay = initial;
        loop {
            let outcome = match self.start_life() {
                Ok(life) => {
                    let outcome = tokio::select! {
                        _ = stopping.wait_for(|stopped| *stopped) => None,
                        closed = life.closed() => Some(closed),
                    };
                    life.stop().await;
                    outcome
                }
                Err(error) => Some((error, None)),
            };
            let Some((error, reason)) = outcome else {
                break;
            };
            let unknown_version = CloseReason::Refused(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
            if self.bridge_flag && reason == Some(unknown_version) {
                // As mosquitto does: a remote that does not know the bridge flag is connected
                // to again without it.
                tracing::warn!(bridge = %name, "the remote refused the bridge flag (try_private); connecting without it");
                self.bridge_flag = false;
                continue;
            }
            if self.remote_will && reason == Some(CloseReason::Refused(ReasonCode::NOT_AUTHORIZED))
            {
                tracing::warn!(bridge = %name, topic = %self.config.notification_topic(), "the remote refused the connection as not authorized; connecting without the notification will (a broker may refuse publishing into $SYS)");
                self.remote_will = false;
                continue;
            }
            // A client closed for good (a refusal it does not retry, such as bad
            // credentials): start over after a delay that doubles up to the maximum.
            tracing::warn!(bridge = %name, "{error}; starting again in {delay:?}");
            self.status.set_error(error);
            tokio::select! {
                _ = stopping.wait_for(|stopped| *stopped) => break,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_millis(self.config.reconnect_delay_max_ms));
        }
        tracing::info!(bridge = %name, "bridge stopped");
    }

    /// Starts one life of the bridge: its two clients and the loops between them.
    fn start_life(&self) -> Result<Life, String> {
        let local = self
            .local_client()
            .map_err(|error| format!("local client: {error}"))?;
        let remote = self.remote_client()?;
        let mut tasks = vec![
            tokio::spawn(watch_remote(
                remote.clone(),
                self.status.clone(),
                self.core.clone(),
                self.config.clone(),
            )),
            tokio::spawn(forget_old_subscriptions(
                local.clone(),
                self.core.clone(),
                self.config.clone(),
            )),
        ];
        for topic in &self.config.topics {
            let ways = [
                (topic.direction.out(), Way::Out, &local, &remote),
                (topic.direction.inward(), Way::In, &remote, &local),
            ];
            for (on, way, source, target) in ways {
                if on {
                    tasks.push(tokio::spawn(forward_topic(
                        way,
                        topic.clone(),
                        source.clone(),
                        target.clone(),
                        self.status.clone(),
                        self.config.protocol_version,
                        self.config.name.clone(),
                    )));
                }
            }
        }
        Ok(Life {
            local,
            remote,
            tasks,
            status: self.status.clone(),
            core: self.core.clone(),
            config: self.config.clone(),
        })
    }

    /// The client connected into this broker, through an in-memory pipe, as a trusted
    /// client with a persistent session: what waits for the remote waits in that session.
    fn local_client(&self) -> Result<Client, midge_client::ConnectError> {
        let core = self.core.clone();
        let gate = self.gate.clone();
        let connector = Connector::from_fn(move || {
            let opened = open_local(&core, &gate);
            std::future::ready(opened)
        });
        let mut limits = Limits::default();
        limits.receive_maximum = u16::try_from(WINDOW).unwrap_or(u16::MAX);
        ClientBuilder::with_connector(connector)
            .version(ProtocolVersion::V5)
            .client_id(format!("{BRIDGE_CLIENT_PREFIX}{}", self.config.name))
            .clean_start(false)
            .session_expiry(u32::MAX)
            .keep_alive(0)
            .limits(limits)
            .manual_acks(true)
            .reconnect(Some(ReconnectPolicy::exponential(
                Duration::from_millis(10),
                Duration::from_millis(500),
            )))
            .build()
    }

    /// The client of the remote broker.
    fn remote_client(&self) -> Result<Client, String> {
        let config = &self.config;
        let mut connectors = Vec::with_capacity(config.address.len());
        for address in &config.address {
            connectors
                .push(connector(address, config).map_err(|e| format!("address {address:?}: {e}"))?);
        }
        let version = match config.protocol_version {
            BridgeProtocol::V311 => ProtocolVersion::V3_1_1,
            BridgeProtocol::V5 => ProtocolVersion::V5,
        };
        let mut builder = ClientBuilder::with_connector(Connector::failover(connectors))
            .version(version)
            .client_id(config.remote_client_id())
            .clean_start(config.clean_start)
            .keep_alive(config.keepalive)
            .manual_acks(true)
            .bridge(self.bridge_flag)
            .reconnect(Some(ReconnectPolicy::exponential(
                Duration::from_millis(config.reconnect_delay_ms),
                Duration::from_millis(config.reconnect_delay_max_ms),
            )));
        if version == ProtocolVersion::V5 {
            let expiry =
                config
                    .session_expiry_secs
                    .unwrap_or(if config.clean_start { 0 } else { u32::MAX });
            builder = builder.session_expiry(expiry);
        }
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(
                    user.clone(),
                    Bytes::copy_from_slice(password.expose().as_bytes()),
                );
            }
            (Some(user), None) => builder = builder.username(user.clone()),
            (None, _) => {}
        }
        if self.remote_will {
            builder = builder.will(Will {
                topic: ByteStr::from(config.notification_topic()),
                payload: Bytes::from_static(b"0"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Default::default(),
            });
        }
        builder.build().map_err(|e| e.to_string())
    }
}

/// Opens one connection into this broker: an in-memory pipe whose other end the broker
/// serves as its own trusted client.
fn open_local(core: &Weak<Core>, gate: &Weak<Gate>) -> io::Result<tokio::io::DuplexStream> {
    let stopped = || io::Error::new(io::ErrorKind::NotConnected, "the broker is stopping");
    let (core, gate) = (
        core.upgrade().ok_or_else(stopped)?,
        gate.upgrade().ok_or_else(stopped)?,
    );
    if core.is_stopping() {
        return Err(stopped());
    }
    let admission = gate.admit().ok_or_else(stopped)?;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let origin = Origin {
        local: true,
        internal: true,
        ..Origin::default()
    };
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    driver::spawn(&core, theirs, peer, driver::now(), origin, admission);
    Ok(ours)
}

/// The connector for one remote address: `host:port`, or a URL.
fn connector(address: &str, config: &BridgeConfig) -> Result<Connector, String> {
    let url = if address.contains("://") {
        address.to_owned()
    } else if config.tls.is_some() {
        format!("mqtts://{address}")
    } else {
        format!("mqtt://{address}")
    };
    #[cfg(feature = "tls")]
    {
        let mut tls = midge_client::tls::ClientTlsOptions::default();
        if let Some(options) = &config.tls {
            if let Some(ca) = &options.ca_file {
                tls.roots = midge_client::tls::Roots::File(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&options.cert, &options.key) {
                tls.identity = Some((cert.clone(), key.clone()));
            }
            tls.verify_hostname = !options.insecure;
        }
        Connector::url_with_tls(&url, &tls).map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "tls"))]
    {
        Connector::url(&url).map_err(|e| e.to_string())
    }
}

/// Waits until `client` closes for good; returns the last reason it was told.
async fn closed(
    events: &mut broadcast::Receiver<ConnectionEvent>,
    client: &Client,
) -> Option<CloseReason> {
    let mut last = None;
    loop {
        if client.is_closed() {
            return last;
        }
        match events.recv().await {
            Ok(ConnectionEvent::Closed) | Err(broadcast::error::RecvError::Closed) => {
                return last;
            }
            Ok(ConnectionEvent::Disconnected { reason }) => last = Some(reason),
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
        }
    }
}

fn describe(reason: Option<CloseReason>) -> String {
    reason.map_or_else(|| "closed".to_owned(), |reason| reason.to_string())
}

/// Follows the remote connection: the state, its counters and the notifications.
async fn watch_remote(
    remote: Client,
    status: Arc<BridgeStatus>,
    core: Weak<Core>,
    config: BridgeConfig,
) {
    let mut events = remote.events();
    // A connection made before the subscription to events.
    if remote.is_connected() {
        connected(&remote, &status, &core, &config);
    }
    loop {
        match events.recv().await {
            Ok(ConnectionEvent::Connected { session_present }) => {
                tracing::info!(bridge = %config.name, session_present, "bridge connected");
                connected(&remote, &status, &core, &config);
            }
            Ok(ConnectionEvent::Disconnected { reason }) => {
                let was = status.connected.swap(false, Relaxed);
                let reason = reason.to_string();
                if was {
                    tracing::warn!(bridge = %config.name, %reason, "bridge disconnected");
                    notify_local(&core, &config, false);
                } else {
                    tracing::debug!(bridge = %config.name, %reason, "bridge connection attempt failed");
                }
                status.set_error(reason);
            }
            Ok(ConnectionEvent::SubscriptionLost {
                filter,
                reason_code,
            }) => {
                let error = format!(
                    "the remote refused the subscription {filter:?} (reason code {:#04x})",
                    reason_code.0
                );
                tracing::error!(bridge = %config.name, "{error}");
                status.set_error(error);
            }
            Ok(ConnectionEvent::Closed) | Err(broadcast::error::RecvError::Closed) => return,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
        }
    }
}

fn connected(remote: &Client, status: &BridgeStatus, core: &Weak<Core>, config: &BridgeConfig) {
    if status.connected.swap(true, Relaxed) {
        return;
    }
    status.connections.fetch_add(1, Relaxed);
    notify_local(core, config, true);
    if config.notifications && !config.notifications_local_only {
        let options = PublishOptions::with_qos(QoS::AtLeastOnce).retain(true);
        // Only queued here: a remote that refuses it does not stop the bridge.
        let _ = remote.try_publish(
            config.notification_topic(),
            Bytes::from_static(b"1"),
            options,
        );
    }
}

/// Unsubscribes the bridge's session here from the filters an earlier configuration gave it
/// (the session outlives restarts), so that only what is configured now goes out.
async fn forget_old_subscriptions(local: Client, core: Weak<Core>, config: BridgeConfig) {
    if local.wait_connected().await.is_err() {
        return;
    }
    let Some(core) = core.upgrade() else {
        return;
    };
    let client_id = format!("{BRIDGE_CLIENT_PREFIX}{}", config.name);
    let Some(detail) = crate::Admin::new(core).client(&client_id) else {
        return;
    };
    let wanted: Vec<String> = config
        .topics
        .iter()
        .filter(|topic| topic.direction.out())
        .map(BridgeTopic::local_filter)
        .collect();
    for subscription in detail.subscriptions {
        if !wanted.contains(&subscription.filter) {
            tracing::info!(bridge = %config.name, filter = %subscription.filter, "no longer bridged: unsubscribing");
            let _ = local.unsubscribe(subscription.filter).await;
        }
    }
}

/// Publishes the bridge's state on this broker, retained, as the broker itself.
fn notify_local(core: &Weak<Core>, config: &BridgeConfig, up: bool) {
    if !config.notifications {
        return;
    }
    let Some(core) = core.upgrade() else {
        return;
    };
    let payload = Bytes::from_static(if up { b"1" } else { b"0" });
    let mut message =
        midge_proto::Message::new(config.notification_topic(), payload, QoS::AtLeastOnce);
    message.retain = true;
    core.publish(message, driver::now());
}

/// Subscribes `topic`'s filter at `source` and forwards what comes to `target`, until either
/// client closes for good.
async fn forward_topic(
    way: Way,
    topic: BridgeTopic,
    source: Client,
    target: Client,
    status: Arc<BridgeStatus>,
    protocol: BridgeProtocol,
    name: String,
) {
    let (filter, from_prefix, to_prefix) = match way {
        Way::Out => (
            topic.local_filter(),
            topic.local_prefix,
            topic.remote_prefix,
        ),
        Way::In => (
            topic.remote_filter(),
            topic.remote_prefix,
            topic.local_prefix,
        ),
    };
    let qos = QoS::from_u8(topic.qos).unwrap_or(QoS::AtMostOnce);
    // No Local: what the bridge itself publishes on a side never comes back to it there
    // [MQTT-3.8.3-3]; Retain As Published: a retained message stays retained on the other
    // side [MQTT-3.3.1-12].
    // Retained messages only for a subscription that is new: a persistent session that has
    // it already had them [MQTT-3.3.1-10]. A 3.1.1 remote has none of these options: the
    // bridge flag asks it for the first two.
    let source_v5 = matches!(way, Way::Out) || protocol == BridgeProtocol::V5;
    let options = match source_v5 {
        true => SubscribeOptions::with_qos(qos)
            .no_local(true)
            .retain_as_published(true)
            .retain_handling(midge_codec::RetainHandling::SendIfNew),
        false => SubscribeOptions::with_qos(qos),
    };
    let stream = match source
        .subscribe_with(filter.clone(), options, Default::default())
        .await
    {
        Ok((_, stream)) => stream,
        Err(ClientError::Closed) => return,
        Err(error) => {
            let error = format!("subscribing to {filter:?} ({}): {error}", way.name());
            tracing::error!(bridge = %name, "{error}");
            status.set_error(error);
            return;
        }
    };
    let map = TopicMap {
        from_prefix,
        to_prefix,
    };
    let target_v5 = match way {
        Way::Out => protocol == BridgeProtocol::V5,
        Way::In => true,
    };
    let (forwarded, refused) = match way {
        Way::Out => (&status.forwarded_out, &status.refused_out),
        Way::In => (&status.forwarded_in, &status.refused_in),
    };
    forward(stream, &target, &map, target_v5, forwarded, refused, &name).await;
}

/// How a topic is renamed on its way: `from_prefix` taken off, `to_prefix` put on.
struct TopicMap {
    from_prefix: String,
    to_prefix: String,
}

impl TopicMap {
    fn apply(&self, topic: &str) -> Option<String> {
        let rest = topic.strip_prefix(self.from_prefix.as_str())?;
        Some(format!("{}{rest}", self.to_prefix))
    }
}

/// The forwarding loop: each message is published to `target`; a QoS 1 or 2 one is
/// acknowledged to its source only once `target` acknowledged its copy, and in order.
async fn forward(
    mut stream: Subscription,
    target: &Client,
    map: &TopicMap,
    target_v5: bool,
    forwarded: &AtomicU64,
    refused: &AtomicU64,
    name: &str,
) {
    let mut pending = FuturesOrdered::new();
    loop {
        tokio::select! {
            biased;
            Some((outcome, ack)) = pending.next(), if !pending.is_empty() => {
                let outcome: Result<ReasonCode, ClientError> = outcome;
                let ack: Option<midge_client::Ack> = ack;
                match outcome {
                    Ok(_) => {
                        forwarded.fetch_add(1, Relaxed);
                        if let Some(ack) = ack {
                            ack.ack();
                        }
                    }
                    // Refused for good by the other side: dropped, counted, as mosquitto
                    // does; acknowledged, since sending it again would be refused again.
                    Err(ClientError::Refused(code)) => {
                        refused.fetch_add(1, Relaxed);
                        tracing::warn!(bridge = name, code = code.0, "a forwarded message was refused");
                        if let Some(ack) = ack {
                            ack.ack();
                        }
                    }
                    // The target closed for good, and the life ends: not acknowledged, the
                    // source sends it again on its next connection.
                    Err(_) => return hold(stream).await,
                }
            }
            message = stream.recv(), if pending.len() < WINDOW => {
                let Some(mut message) = message else { return };
                let ack = message.take_ack();
                let Some(topic) = map.apply(message.topic()) else {
                    // Cannot happen: the filter starts with the prefix.
                    if let Some(ack) = ack {
                        ack.ack();
                    }
                    continue;
                };
                let mut options = PublishOptions::with_qos(message.qos()).retain(message.retain());
                if target_v5 {
                    let mut properties: PublishProperties = message.properties().clone();
                    properties.clear_subscription_identifiers();
                    properties.topic_alias = None;
                    options = options.properties(properties);
                }
                match target.enqueue(topic, message.payload().clone(), options).await {
                    Ok(handle) => pending.push_back(async move { (handle.await, ack) }),
                    Err(ClientError::Closed) => return hold(stream).await,
                    Err(error) => {
                        // Invalid where it goes (a topic too long for it): never publishable.
                        refused.fetch_add(1, Relaxed);
                        tracing::warn!(bridge = name, "a message could not be forwarded: {error}");
                        if let Some(ack) = ack {
                            ack.ack();
                        }
                    }
                }
            }
        }
    }
}

/// Keeps `stream` until the life's end aborts the task: a subscription stream dropped while
/// its client is still connected would unsubscribe and let go of what it buffered, before
/// [`Life::stop`] has disconnected the client and so kept the session as it is.
async fn hold(stream: Subscription) {
    let _stream = stream;
    std::future::pending::<()>().await;
}

/// One life of a bridge: its two clients and the tasks between them.
struct Life {
    local: Client,
    remote: Client,
    tasks: Vec<JoinHandle<()>>,
    status: Arc<BridgeStatus>,
    core: Weak<Core>,
    config: BridgeConfig,
}

impl Life {
    /// Waits until either client closes for good; says which and why, and the remote's
    /// reason.
    async fn closed(&self) -> (String, Option<CloseReason>) {
        let mut local_events = self.local.events();
        let mut remote_events = self.remote.events();
        tokio::select! {
            why = closed(&mut local_events, &self.local) => {
                (format!("this broker's side closed ({})", describe(why)), None)
            }
            why = closed(&mut remote_events, &self.remote) => {
                (format!("the remote closed the bridge ({})", describe(why)), why)
            }
        }
    }

    /// Ends the life: the state `0` is published on the remote (a clean DISCONNECT does not
    /// send the will) and here; both clients disconnect, keeping their sessions; then the
    /// loops stop. What they hold unacknowledged is sent again by its source on the next
    /// connection.
    ///
    /// The clients go first: a subscription stream dropped while its client is connected
    /// unsubscribes, and the session would then miss what is published until the next life
    /// subscribes again.
    async fn stop(self) {
        let Self {
            local,
            remote,
            tasks,
            status,
            core,
            config,
        } = self;
        let was = status.connected.swap(false, Relaxed);
        if was && config.notifications && !config.notifications_local_only && remote.is_connected()
        {
            let options = PublishOptions::with_qos(QoS::AtLeastOnce).retain(true);
            let topic = config.notification_topic();
            if let Ok(handle) = remote.try_publish(topic, Bytes::from_static(b"0"), options) {
                let _ = tokio::time::timeout(STOP_GRACE, handle).await;
            }
        }
        if was {
            notify_local(&core, &config, false);
        }
        let normal = ReasonCode::SUCCESS;
        tokio::join!(remote.disconnect(normal), local.disconnect(normal));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}
