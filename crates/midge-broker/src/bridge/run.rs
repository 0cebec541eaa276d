//! A bridge's tasks: its two clients, and the loops that forward between them.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
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

/// QoS 0 messages a bridge's local end buffers for a remote slower than this broker.
const QOS0_BUFFER: usize = 10_000;

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
                max_packet_size: core.config.limits.max_packet_size,
                topic_limits: core.config.topic_limits(),
            };
            tokio::spawn(bridge.run(stopping.clone()))
        })
        .collect()
}

/// The filters a bridge subscribes to here: its `out` topics', each once.
fn out_filters(config: &BridgeConfig) -> Vec<String> {
    let mut filters: Vec<String> = config
        .topics
        .iter()
        .filter(|topic| topic.direction.out())
        .map(BridgeTopic::local_filter)
        .collect();
    filters.sort();
    filters.dedup();
    filters
}

/// Waits until every bridge has its `out` subscriptions here, for at most `limit`.
pub(crate) async fn wait_subscribed(core: &Arc<Core>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let admin = crate::Admin::new(core.clone());
    for config in &core.config.bridges {
        let wanted = out_filters(config);
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
    /// This broker's `limits.max_packet_size`.
    max_packet_size: u32,
    /// This broker's limits on topic names.
    topic_limits: midge_topic::Limits,
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
        let will_configured = self.remote_will;
        loop {
            let connections = self.status.connections.load(Relaxed);
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
            // A life that connected was healthy: the next waits as little as the first.
            if self.status.connections.load(Relaxed) > connections {
                delay = initial;
            }
            let unknown_version = CloseReason::Refused(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
            if self.bridge_flag && reason == Some(unknown_version) {
                // As mosquitto does: a remote that does not know the bridge flag is connected
                // to again without it.
                tracing::warn!(bridge = %name, "the remote refused the bridge flag (try_private); connecting without it");
                self.bridge_flag = false;
                continue;
            }
            if will_configured && reason == Some(CloseReason::Refused(ReasonCode::NOT_AUTHORIZED)) {
                if self.remote_will {
                    tracing::warn!(bridge = %name, topic = %self.config.notification_topic(), "the remote refused the connection as not authorized; trying at once without the notification will (a broker may refuse publishing into $SYS)");
                    self.remote_will = false;
                    continue;
                }
                // Refused without the will too: the credentials, not the will. The will goes
                // back for the next attempts.
                self.remote_will = true;
            }
            // A client closed for good (a refusal it does not retry, such as bad
            // credentials): start over after a delay that doubles up to the maximum.
            tracing::warn!(bridge = %name, "{error}; starting again in {delay:?}");
            self.status.set_error(error);
            tokio::select! {
                _ = stopping.wait_for(|stopped| *stopped) => break,
                () = tokio::time::sleep(delay) => {}
            }
            // Saturating: the configured maximum may be as large as a u64 of milliseconds.
            delay = delay
                .saturating_mul(2)
                .min(Duration::from_millis(self.config.reconnect_delay_max_ms));
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
        tasks.push(tokio::spawn(count_drops(
            local.clone(),
            remote.clone(),
            self.status.clone(),
        )));
        let (draining, _) = watch::channel(false);
        let in_flight = Arc::new(AtomicUsize::new(0));
        for (index, topic) in self.config.topics.iter().enumerate() {
            let ways = [
                (topic.direction.out(), Way::Out, &local, &remote),
                (topic.direction.inward(), Way::In, &remote, &local),
            ];
            for (on, way, source, target) in ways {
                if on {
                    let settings = Forwarding {
                        index: u32::try_from(index).unwrap_or(u32::MAX - 1),
                        draining: draining.subscribe(),
                        in_flight: in_flight.clone(),
                        protocol: self.config.protocol_version,
                        topic_limits: self.topic_limits,
                        name: self.config.name.clone(),
                    };
                    tasks.push(tokio::spawn(forward_topic(
                        way,
                        topic.clone(),
                        source.clone(),
                        target.clone(),
                        self.status.clone(),
                        settings,
                    )));
                }
            }
        }
        Ok(Life {
            local,
            remote,
            tasks,
            draining,
            in_flight,
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
        // Whatever this broker takes, the bridge takes from it.
        limits.max_packet_size = self.max_packet_size;
        // QoS 0 messages beyond it, while the remote is slower than this broker, are dropped
        // (the newest) and counted as the bridge's `dropped`.
        limits.max_buffered_qos0 = QOS0_BUFFER;
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
        // A 5.0 remote is told this broker's limit and does not send more (it drops what is
        // larger, as 5.0 says); a 3.1.1 remote cannot be told, and a larger packet refused
        // would close the connection and come again on the next, for ever: any size is taken
        // from it, and what this broker refuses is counted.
        let mut limits = Limits::default();
        limits.receive_maximum = u16::try_from(WINDOW).unwrap_or(u16::MAX);
        limits.max_packet_size = match version {
            ProtocolVersion::V5 => self.max_packet_size,
            _ => 0,
        };
        let mut builder = ClientBuilder::with_connector(Connector::failover(connectors))
            .limits(limits)
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
            return client.close_reason().or(last);
        }
        match events.recv().await {
            Ok(ConnectionEvent::Closed) | Err(broadcast::error::RecvError::Closed) => {
                return client.close_reason().or(last);
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

/// Adds what the clients drop (QoS 0 messages beyond their buffers) to the bridge's count,
/// twice a second, until the life ends.
async fn count_drops(local: Client, remote: Client, status: Arc<BridgeStatus>) {
    let mut counted = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = local.dropped_messages() + remote.dropped_messages();
        status
            .dropped
            .fetch_add(now.saturating_sub(counted), Relaxed);
        counted = now;
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
    let wanted = out_filters(&config);
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
    settings: Forwarding,
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
    // side [MQTT-3.3.1-12]; retained messages only for a subscription that is new, since a
    // persistent session that has it already had them [MQTT-3.3.1-10]. A 3.1.1 remote has
    // none of these options: the bridge flag asks it for the first two.
    let source_v5 = matches!(way, Way::Out) || settings.protocol == BridgeProtocol::V5;
    let mut options = SubscribeOptions::with_qos(qos);
    if source_v5 {
        options = options
            .no_local(true)
            .retain_as_published(true)
            .retain_handling(midge_codec::RetainHandling::SendIfNew);
        // Each pattern its own identifier: a message matching two patterns comes once for
        // each, to its own stream.
        if let Some(id) = midge_codec::SubscriptionId::new(settings.index + 1) {
            options = options.subscription_identifier(id);
        }
    }
    let map = TopicMap {
        from_prefix,
        to_prefix,
    };
    let target_v5 = match way {
        Way::Out => settings.protocol == BridgeProtocol::V5,
        Way::In => true,
    };
    let (forwarded, refused) = match way {
        Way::Out => (&status.forwarded_out, &status.refused_out),
        Way::In => (&status.forwarded_in, &status.refused_in),
    };
    let check = Check {
        target_v5,
        // What this broker would refuse is refused here, counted, and acknowledged to the
        // remote: published, it would close the bridge's connection and come again for ever.
        topic_limits: matches!(way, Way::In).then_some(settings.topic_limits),
    };
    let mut delay = Duration::from_millis(100);
    loop {
        match source
            .subscribe_with(filter.clone(), options, Default::default())
            .await
        {
            Ok((_, stream)) => {
                delay = Duration::from_millis(100);
                forward(
                    stream,
                    &target,
                    &map,
                    &check,
                    (forwarded, refused),
                    &settings,
                )
                .await;
            }
            Err(ClientError::Closed) => return,
            Err(error) => {
                let error = format!("subscribing to {filter:?} ({}): {error}", way.name());
                tracing::error!(bridge = %settings.name, "{error}; trying again in {delay:?}");
                status.set_error(error);
            }
        }
        // The stream ended (the source lost the subscription, say a remote that refused to
        // make it again) or the subscription was refused: made again, after a while.
        if source.is_closed() {
            return;
        }
        if *settings.draining.borrow() {
            return std::future::pending().await;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// What a forwarding loop needs to know of its bridge.
#[derive(Clone)]
struct Forwarding {
    /// The topic's place in the configuration.
    index: u32,
    /// Turns true when the life ends: take no more messages, finish those in flight.
    draining: watch::Receiver<bool>,
    /// Messages published to a target and not yet acknowledged by it, in every loop.
    in_flight: Arc<AtomicUsize>,
    protocol: BridgeProtocol,
    topic_limits: midge_topic::Limits,
    name: String,
}

/// What a forwarding loop checks of each message before it publishes it.
struct Check {
    /// The target speaks 5.0: properties go along.
    target_v5: bool,
    /// The target's limits on topic names, where the bridge knows them (this broker's).
    topic_limits: Option<midge_topic::Limits>,
}

/// How a topic is renamed on its way: `from_prefix` taken off, `to_prefix` put on.
struct TopicMap {
    from_prefix: String,
    to_prefix: String,
}

impl TopicMap {
    fn apply(&self, topic: &str) -> Option<String> {
        if let Some(rest) = topic.strip_prefix(self.from_prefix.as_str()) {
            return Some(format!("{}{rest}", self.to_prefix));
        }
        // `prefix/#` also matches the parent `prefix` itself [MQTT-4.7.1-2]: it goes to the
        // other prefix's parent, if there is one.
        let parent = self.from_prefix.strip_suffix('/')?;
        let to_parent = self.to_prefix.strip_suffix('/')?;
        (topic == parent && !to_parent.is_empty()).then(|| to_parent.to_owned())
    }
}

/// The forwarding loop: each message is published to `target`; a QoS 1 or 2 one is
/// acknowledged to its source only once `target` acknowledged its copy, and in order.
async fn forward(
    mut stream: Subscription,
    target: &Client,
    map: &TopicMap,
    check: &Check,
    (forwarded, refused): (&AtomicU64, &AtomicU64),
    settings: &Forwarding,
) {
    let name = settings.name.as_str();
    let in_flight = &*settings.in_flight;
    let mut draining = settings.draining.clone();
    let mut drain = *draining.borrow_and_update();
    let mut pending = FuturesOrdered::new();
    loop {
        if drain && pending.is_empty() {
            return hold(stream).await;
        }
        tokio::select! {
            biased;
            changed = draining.changed(), if !drain => {
                drain = changed.is_err() || *draining.borrow_and_update();
            }
            Some((outcome, ack, copy)) = pending.next(), if !pending.is_empty() => {
                let (outcome, ack, mut copy): (Result<ReasonCode, ClientError>, Option<midge_client::Ack>, Copy) = (outcome, ack, copy);
                in_flight.fetch_sub(1, Relaxed);
                match outcome {
                    Ok(_) => {
                        forwarded.fetch_add(1, Relaxed);
                        if let Some(ack) = ack {
                            ack.ack();
                        }
                    }
                    // A target that takes less than the message asks for (a lower Maximum
                    // QoS, no retained messages) gets it as it can take it.
                    Err(ClientError::Refused(code)) if copy.can_lower(code) => {
                        let (topic, payload, options) = copy.lowered(code);
                        match target.enqueue(topic, payload, options.clone()).await {
                            Ok(handle) => {
                                let copy = Copy { options, ..copy };
                                in_flight.fetch_add(1, Relaxed);
                                pending.push_back(settled(handle, ack, copy));
                            }
                            Err(_) => return hold(stream).await,
                        }
                    }
                    // Refused for good by the other side: dropped, counted, as mosquitto
                    // does; acknowledged, since sending it again would be refused again.
                    Err(ClientError::Refused(code)) => {
                        refused.fetch_add(1, Relaxed);
                        tracing::warn!(bridge = name, code = code.0, topic = %copy.topic, "a forwarded message was refused");
                        if let Some(ack) = ack {
                            ack.ack();
                        }
                    }
                    // The target closed for good, and the life ends: not acknowledged, the
                    // source sends it again on its next connection.
                    Err(_) => return hold(stream).await,
                }
            }
            message = stream.recv(), if !drain && pending.len() < WINDOW => {
                let Some(mut message) = message else { return };
                let ack = message.take_ack();
                let topic = map.apply(message.topic()).filter(|topic| {
                    check.topic_limits.is_none_or(|limits| {
                        midge_topic::TopicName::with_limits(topic, &limits).is_ok()
                    })
                });
                let Some(topic) = topic else {
                    // Renamed, it is no topic the target takes (deeper than this broker
                    // allows, say): never publishable there.
                    refused.fetch_add(1, Relaxed);
                    tracing::warn!(bridge = name, topic = %message.topic(), "a message cannot be forwarded: its topic, renamed, is not one the other side takes");
                    if let Some(ack) = ack {
                        ack.ack();
                    }
                    continue;
                };
                let mut options = PublishOptions::with_qos(message.qos()).retain(message.retain());
                if check.target_v5 {
                    let mut properties: PublishProperties = message.properties().clone();
                    properties.clear_subscription_identifiers();
                    properties.topic_alias = None;
                    options = options.properties(properties);
                }
                let payload = message.payload().clone();
                // QoS 0: handed over is forwarded, with nothing to wait for and no copy to
                // keep for publishing it again.
                if message.qos() == QoS::AtMostOnce {
                    match target.enqueue(topic, payload, options).await {
                        Ok(_) => {
                            forwarded.fetch_add(1, Relaxed);
                        }
                        Err(ClientError::Closed) => return hold(stream).await,
                        Err(error) => {
                            refused.fetch_add(1, Relaxed);
                            tracing::warn!(bridge = name, "a message could not be forwarded: {error}");
                        }
                    }
                    continue;
                }
                match target.enqueue(topic.clone(), payload.clone(), options.clone()).await {
                    Ok(handle) => {
                        let copy = Copy { topic, payload, options, qos: message.qos(), retain: message.retain() };
                        in_flight.fetch_add(1, Relaxed);
                        pending.push_back(settled(handle, ack, copy));
                    }
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

/// Waits for the target's acknowledgement of `copy`.
async fn settled(
    handle: midge_client::PublishHandle,
    ack: Option<midge_client::Ack>,
    copy: Copy,
) -> (
    Result<ReasonCode, ClientError>,
    Option<midge_client::Ack>,
    Copy,
) {
    (handle.await, ack, copy)
}

/// What a forwarding loop publishes, kept until the target acknowledged it, to publish it
/// again lowered to what the target takes.
struct Copy {
    topic: String,
    payload: Bytes,
    options: PublishOptions,
    qos: QoS,
    retain: bool,
}

impl Copy {
    /// Whether the refusal `code` says the target takes the message in a lesser form.
    fn can_lower(&self, code: ReasonCode) -> bool {
        (code == ReasonCode::QOS_NOT_SUPPORTED && self.qos != QoS::AtMostOnce)
            || (code == ReasonCode::RETAIN_NOT_SUPPORTED && self.retain)
    }

    /// The message as the target takes it: one QoS lower, or not retained.
    fn lowered(&mut self, code: ReasonCode) -> (String, Bytes, PublishOptions) {
        if code == ReasonCode::QOS_NOT_SUPPORTED {
            self.qos = match self.qos {
                QoS::ExactlyOnce => QoS::AtLeastOnce,
                _ => QoS::AtMostOnce,
            };
        } else {
            self.retain = false;
        }
        let options = self.options.clone().qos(self.qos).retain(self.retain);
        (self.topic.clone(), self.payload.clone(), options)
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
    /// Tells the loops the life ends.
    draining: watch::Sender<bool>,
    /// What the loops published and the targets have not acknowledged yet.
    in_flight: Arc<AtomicUsize>,
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
            draining,
            in_flight,
            status,
            core,
            config,
        } = self;
        // What is in flight is finished first, for a while: a QoS 2 message the remote has
        // received and not completed would otherwise be sent again, as new, by the next
        // life's client, and arrive twice.
        let _ = draining.send(true);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while in_flight.load(Relaxed) > 0
            && remote.is_connected()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
