//! Clustering for the midge MQTT broker on NATS.
//!
//! A [`Node`] connects a broker to NATS: it publishes every message routed on this node to
//! the NATS subject of its topic ([`subject`]), subscribes in NATS to the filters its local
//! sessions hold (one NATS subscription per distinct filter, however many sessions hold it),
//! hands what other nodes publish to the local broker once per message, and keeps retained
//! messages in a JetStream key-value bucket that every node mirrors into its own retained
//! index.
//!
//! ```no_run
//! # async fn run(config: midge_broker::BrokerConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = config.cluster.clone().expect("a [cluster] section");
//! let node = midge_cluster::Node::connect(&cluster).await?;
//! let broker = midge_broker::Broker::builder()
//!     .config(config)
//!     .cluster(node.cluster())
//!     .start()
//!     .await?;
//! let running = node.attach(&broker);
//! // ...
//! running.shutdown().await;
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! `docs/cluster.md` in the repository describes the design, what is not built yet, and
//! the failure cases.

pub mod subject;

mod envelope;
mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use midge_broker::config::ClusterConfig;
use midge_broker::proto::Message;
use midge_broker::{BrokerHandle, Cluster, ClusterInlet};
use midge_topic::TopicFilter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::window::Window;

/// The header naming the node (and its run) that published a message.
const ORIGIN: &str = "Midge-Origin";
/// The header holding the message's number among those its node published in this run.
const SEQUENCE: &str = "Midge-Seq";
/// Messages waiting to be published to NATS; more are dropped (and counted).
const PUBLISH_QUEUE: usize = 65_536;
/// The longest subject sent to NATS: a NATS server closes a connection whose protocol line
/// (the subject, with a few numbers) exceeds its `max_control_line`, 4096 bytes by default.
pub const MAX_SUBJECT: usize = 3840;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A `[cluster]` key cannot work.
    #[error("cluster: {0}")]
    Config(String),
    /// No NATS server answered within `connect_timeout_ms`, or one refused the connection.
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// What went wrong.
        reason: String,
    },
    /// NATS answered, but the JetStream bucket of retained messages cannot be used (is
    /// JetStream enabled on the server, `-js`?).
    #[error("cannot use the JetStream bucket {bucket:?} (is JetStream enabled, nats-server -js?): {reason}")]
    JetStream {
        /// The bucket.
        bucket: String,
        /// What went wrong.
        reason: String,
    },
}

/// What a node has done, counted since it started.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Messages published to NATS.
    pub published: AtomicU64,
    /// Messages not published because NATS was not connected.
    pub dropped_disconnected: AtomicU64,
    /// Messages not published because the queue to NATS was full.
    pub dropped_queue_full: AtomicU64,
    /// Messages NATS refused (a subject too long for the server, for one).
    pub publish_errors: AtomicU64,
    /// Messages received from other nodes and routed here.
    pub received: AtomicU64,
    /// Copies of a message received more than once (through two overlapping NATS
    /// subscriptions) and dropped.
    pub duplicates: AtomicU64,
    /// Messages from other nodes that could not be decoded.
    pub undecodable: AtomicU64,
    /// Retained messages written to (or deleted from) the bucket.
    pub retained_written: AtomicU64,
    /// Retained messages not written because NATS was not connected, or the write failed.
    pub retained_errors: AtomicU64,
    /// Changes of the bucket applied to the local retained index.
    pub retained_applied: AtomicU64,
    /// NATS subscriptions held (a filter ending in `/#` takes two).
    pub nats_subscriptions: AtomicU64,
    /// Times the connection to NATS was lost.
    pub disconnects: AtomicU64,
    /// Times the connection to NATS was made: at start, and after each loss.
    pub connects: AtomicU64,
}

impl ClusterStats {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// A change of this node's interest.
enum Interest {
    Add(String),
    Remove(String),
}

/// What the broker's core and the node's tasks share.
struct Shared {
    publishes: mpsc::Sender<Arc<Message>>,
    interest: mpsc::UnboundedSender<Interest>,
    /// Local subscriptions per distinct filter (without `$share/{name}/`).
    filters: Mutex<HashMap<String, usize>>,
    stats: Arc<ClusterStats>,
}

/// The [`Cluster`] seam of a [`Node`], for [`BrokerBuilder::cluster`](midge_broker::BrokerBuilder::cluster).
#[derive(Clone)]
pub struct NatsCluster(Arc<Shared>);

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster").finish_non_exhaustive()
    }
}

impl Cluster for NatsCluster {
    fn forward(&self, message: &Arc<Message>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.0.publishes.try_send(message.clone())
        {
            ClusterStats::add(&self.0.stats.dropped_queue_full);
        }
    }

    fn subscribed(&self, filter: &TopicFilter<'_>) {
        let mut filters = self
            .0
            .filters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = filters.entry(filter.pattern().to_owned()).or_insert(0);
        *count += 1;
        if *count == 1 {
            let _ = self
                .0
                .interest
                .send(Interest::Add(filter.pattern().to_owned()));
        }
    }

    fn unsubscribed(&self, filter: &TopicFilter<'_>) {
        let mut filters = self
            .0
            .filters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(count) = filters.get_mut(filter.pattern()) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            filters.remove(filter.pattern());
            let _ = self
                .0
                .interest
                .send(Interest::Remove(filter.pattern().to_owned()));
        }
    }
}

/// A broker's membership of a cluster: connected to NATS, with the bucket of retained
/// messages open and read. [`Node::cluster`] is the seam to build the broker with;
/// [`Node::attach`] then starts the node's work for that broker.
pub struct Node {
    prefix: String,
    origin: String,
    client: async_nats::Client,
    kv: kv::Store,
    watch: kv::Watch,
    /// The bucket as it was when the node connected.
    snapshot: Vec<kv::Entry>,
    shared: Arc<Shared>,
    publishes: mpsc::Receiver<Arc<Message>>,
    interest: mpsc::UnboundedReceiver<Interest>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Connects to NATS and opens (or creates) the bucket of retained messages, and reads
    /// it. Fails if no server answers within `connect_timeout_ms`: a node never starts
    /// without its cluster.
    pub async fn connect(config: &ClusterConfig) -> Result<Self, ClusterError> {
        config.validate().map_err(ClusterError::Config)?;
        let stats = Arc::new(ClusterStats::default());
        let servers = config.nats.join(", ");
        let connect_error = |reason: String| ClusterError::Connect {
            servers: servers.clone(),
            reason,
        };
        let addrs = config
            .nats
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| connect_error(e.to_string()))?;
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let mut options = match &config.creds_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| connect_error(format!("{}: {e}", path.display())))?,
            None => async_nats::ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &config.token {
            options = options.token(token.expose().to_owned());
        }
        if let Some(ca) = &config.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let event_stats = stats.clone();
        options = options
            .name(format!("midge {}", config.node_id))
            .no_echo()
            .connection_timeout(timeout)
            .event_callback(move |event| {
                let stats = event_stats.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            ClusterStats::add(&stats.disconnects);
                            tracing::warn!(
                                "lost the connection to NATS: messages for other nodes are \
                                 dropped until it is back"
                            );
                        }
                        async_nats::Event::Connected => {
                            ClusterStats::add(&stats.connects);
                            tracing::info!(
                                dropped = stats.dropped_disconnected.load(Relaxed),
                                "connected to NATS"
                            );
                        }
                        other => tracing::warn!("NATS: {other}"),
                    }
                }
            });
        let client = tokio::time::timeout(timeout, options.connect(addrs))
            .await
            .map_err(|_| connect_error(format!("no answer within {timeout:?}")))?
            .map_err(|e| connect_error(e.to_string()))?;
        let bucket = format!("{}_retained", config.subject_prefix);
        let js_error = |reason: String| ClusterError::JetStream {
            bucket: bucket.clone(),
            reason,
        };
        let jetstream = async_nats::jetstream::new(client.clone());
        // The bucket's stream as async-nats's `create_key_value` makes it, created here:
        // that call first asks for the account's JetStream information, in a form that
        // nats-server 2.9 does not answer with.
        if jetstream.get_key_value(&bucket).await.is_err() {
            use async_nats::jetstream::stream;
            jetstream
                .get_or_create_stream(stream::Config {
                    name: format!("KV_{bucket}"),
                    description: Some("midge: retained messages, one key per topic".into()),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    storage: stream::StorageType::File,
                    num_replicas: config.kv_replicas,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: stream::DiscardPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| js_error(format!("creating it: {e}")))?;
        }
        let kv = jetstream
            .get_key_value(&bucket)
            .await
            .map_err(|e| js_error(format!("opening it: {e}")))?;
        let mut watch = kv
            .watch_with_history(">")
            .await
            .map_err(|e| js_error(format!("watching it: {e}")))?;
        let mut snapshot = Vec::new();
        let values = kv
            .status()
            .await
            .map_err(|e| js_error(format!("reading its status: {e}")))?
            .values();
        if values > 0 {
            let read = async {
                while let Some(entry) = watch.next().await {
                    let entry = entry.map_err(|e| js_error(e.to_string()))?;
                    let current = entry.seen_current || entry.delta == 0;
                    snapshot.push(entry);
                    if current {
                        break;
                    }
                }
                Ok::<_, ClusterError>(())
            };
            tokio::time::timeout(timeout, read)
                .await
                .map_err(|_| js_error(format!("not read within {timeout:?}")))??;
        }
        let (publishes_tx, publishes) = mpsc::channel(PUBLISH_QUEUE);
        let (interest_tx, interest) = mpsc::unbounded_channel();
        let run: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        tracing::info!(servers = %servers, bucket, retained = snapshot.len(), "joined the cluster");
        Ok(Self {
            prefix: config.subject_prefix.clone(),
            origin: format!("{}/{run:x}", config.node_id),
            client,
            kv,
            watch,
            snapshot,
            shared: Arc::new(Shared {
                publishes: publishes_tx,
                interest: interest_tx,
                filters: Mutex::default(),
                stats,
            }),
            publishes,
            interest,
        })
    }

    /// The seam to build the broker with.
    pub fn cluster(&self) -> NatsCluster {
        NatsCluster(self.shared.clone())
    }

    /// The node's counters.
    pub fn stats(&self) -> Arc<ClusterStats> {
        self.shared.stats.clone()
    }

    /// Starts the node's work for `broker` (built with [`Node::cluster`]): sets the retained
    /// messages read from the bucket, then publishes what the broker forwards, subscribes to
    /// what its sessions hold, and routes what other nodes publish. Must be called within a
    /// tokio runtime.
    pub fn attach(self, broker: &BrokerHandle) -> Running {
        let stats = self.shared.stats.clone();
        let broker = broker.cluster_inlet();
        for entry in self.snapshot {
            apply_entry(&broker, &stats, entry);
        }
        let (received_tx, received) = mpsc::channel(4096);
        let (retained_tx, retained) = mpsc::unbounded_channel();
        let mut tasks = vec![
            tokio::spawn(publish_loop(
                self.client.clone(),
                self.prefix.clone(),
                self.origin.clone(),
                self.publishes,
                retained_tx,
                stats.clone(),
            )),
            tokio::spawn(retained_loop(
                self.client.clone(),
                self.kv,
                retained,
                stats.clone(),
            )),
            tokio::spawn(watch_loop(self.watch, broker.clone(), stats.clone())),
            tokio::spawn(receive_loop(
                received,
                self.origin.clone(),
                broker,
                stats.clone(),
            )),
        ];
        tasks.push(tokio::spawn(interest_loop(
            self.client.clone(),
            self.prefix,
            self.interest,
            received_tx,
            stats.clone(),
        )));
        Running {
            client: self.client,
            shared: self.shared,
            tasks,
            stats,
        }
    }
}

/// A node at work for its broker.
pub struct Running {
    client: async_nats::Client,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<ClusterStats>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

impl Running {
    /// The node's counters.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// Stops the node's work: what waits to be published is sent first (for at most a
    /// second in all), then the NATS connection closes. Stop the broker first, so that
    /// nothing more comes.
    pub async fn shutdown(self) {
        let publishes = &self.shared.publishes;
        let sent = async {
            while publishes.capacity() < publishes.max_capacity() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = self.client.flush().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), sent).await;
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.drain()).await;
    }
}

/// Publishes what the broker forwards, and hands retained ones to the bucket's writer.
async fn publish_loop(
    client: async_nats::Client,
    prefix: String,
    origin: String,
    mut publishes: mpsc::Receiver<Arc<Message>>,
    retained: mpsc::UnboundedSender<(String, Option<bytes::Bytes>)>,
    stats: Arc<ClusterStats>,
) {
    let mut sequence = 0u64;
    while let Some(message) = publishes.recv().await {
        let subject = subject::message_subject(&prefix, message.topic.as_str());
        let Some(body) = envelope::encode(&message).filter(|_| subject.len() <= MAX_SUBJECT) else {
            ClusterStats::add(&stats.publish_errors);
            tracing::debug!(
                topic = message.topic.as_str(),
                "a message is not shared: its topic is too long for a NATS subject"
            );
            continue;
        };
        if message.retain {
            let key = subject::topic_key(message.topic.as_str());
            let value = (!message.payload.is_empty()).then(|| body.clone());
            let _ = retained.send((key, value));
        }
        if client.connection_state() != State::Connected {
            ClusterStats::add(&stats.dropped_disconnected);
            continue;
        }
        sequence += 1;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ORIGIN, origin.as_str());
        headers.insert(SEQUENCE, sequence.to_string().as_str());
        match client.publish_with_headers(subject, headers, body).await {
            Ok(()) => ClusterStats::add(&stats.published),
            Err(err) => {
                ClusterStats::add(&stats.publish_errors);
                tracing::debug!(%err, "NATS refused a message");
            }
        }
    }
}

/// Writes retained messages to the bucket, one after the other: a node's writes of a topic
/// reach the bucket in the order it received them.
async fn retained_loop(
    client: async_nats::Client,
    kv: kv::Store,
    mut changes: mpsc::UnboundedReceiver<(String, Option<bytes::Bytes>)>,
    stats: Arc<ClusterStats>,
) {
    while let Some((key, value)) = changes.recv().await {
        if client.connection_state() != State::Connected {
            ClusterStats::add(&stats.retained_errors);
            tracing::warn!(
                key,
                "NATS is not connected: a retained message is not shared"
            );
            continue;
        }
        let result = match value {
            Some(value) => kv
                .put(&key, value)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            None => kv.delete(&key).await.map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => ClusterStats::add(&stats.retained_written),
            Err(err) => {
                ClusterStats::add(&stats.retained_errors);
                tracing::warn!(key, %err, "a retained message is not shared");
            }
        }
    }
}

/// Applies the bucket's changes to the local retained index, in the bucket's order.
async fn watch_loop(mut watch: kv::Watch, broker: ClusterInlet, stats: Arc<ClusterStats>) {
    while let Some(entry) = watch.next().await {
        match entry {
            Ok(entry) => apply_entry(&broker, &stats, entry),
            Err(err) => tracing::warn!(%err, "watching the retained messages"),
        }
    }
    tracing::warn!("the watch of retained messages ended");
}

fn apply_entry(broker: &ClusterInlet, stats: &ClusterStats, entry: kv::Entry) {
    let Some(topic) = subject::topic_from_key(&entry.key) else {
        ClusterStats::add(&stats.undecodable);
        return;
    };
    let message = match entry.operation {
        kv::Operation::Put => match envelope::decode_retained(entry.value) {
            Some(message) => message,
            None => {
                ClusterStats::add(&stats.undecodable);
                return;
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => envelope::deletion(topic),
    };
    broker.retain_local(message);
    ClusterStats::add(&stats.retained_applied);
}

/// Follows the node's interest: one NATS subscription per subject of each distinct filter,
/// feeding `received`; dropping a subscription's task unsubscribes it.
async fn interest_loop(
    client: async_nats::Client,
    prefix: String,
    mut changes: mpsc::UnboundedReceiver<Interest>,
    received: mpsc::Sender<async_nats::Message>,
    stats: Arc<ClusterStats>,
) {
    let mut subscriptions: HashMap<String, Vec<JoinHandle<()>>> = HashMap::new();
    while let Some(change) = changes.recv().await {
        match change {
            Interest::Add(filter) => {
                let mut tasks = Vec::new();
                for subject in subject::filter_subjects(&prefix, &filter) {
                    if subject.len() > MAX_SUBJECT {
                        tracing::warn!(
                            filter,
                            "a filter too long for a NATS subject: it gets no message from \
                             other nodes"
                        );
                        continue;
                    }
                    match client.subscribe(subject.clone()).await {
                        Ok(mut subscriber) => {
                            stats.nats_subscriptions.fetch_add(1, Relaxed);
                            let received = received.clone();
                            tasks.push(tokio::spawn(async move {
                                while let Some(message) = subscriber.next().await {
                                    if received.send(message).await.is_err() {
                                        break;
                                    }
                                }
                            }));
                        }
                        Err(err) => tracing::warn!(subject, %err, "cannot subscribe in NATS"),
                    }
                }
                // The server has the subscriptions once it answers.
                let _ = client.flush().await;
                subscriptions.insert(filter, tasks);
            }
            Interest::Remove(filter) => {
                for task in subscriptions.remove(&filter).into_iter().flatten() {
                    task.abort();
                    stats.nats_subscriptions.fetch_sub(1, Relaxed);
                }
            }
        }
    }
    for task in subscriptions.into_values().flatten() {
        task.abort();
    }
}

/// Routes what other nodes publish, once per message.
async fn receive_loop(
    mut received: mpsc::Receiver<async_nats::Message>,
    origin: String,
    broker: ClusterInlet,
    stats: Arc<ClusterStats>,
) {
    let mut windows: HashMap<String, Window> = HashMap::new();
    while let Some(message) = received.recv().await {
        let Some(headers) = &message.headers else {
            ClusterStats::add(&stats.undecodable);
            continue;
        };
        let (Some(from), Some(sequence)) = (
            headers.get(ORIGIN).map(|v| v.as_str()),
            headers
                .get(SEQUENCE)
                .and_then(|v| v.as_str().parse::<u64>().ok()),
        ) else {
            ClusterStats::add(&stats.undecodable);
            continue;
        };
        if from == origin {
            continue;
        }
        let window = match windows.get_mut(from) {
            Some(window) => window,
            None => windows.entry(from.to_owned()).or_default(),
        };
        if !window.first_time(sequence) {
            ClusterStats::add(&stats.duplicates);
            continue;
        }
        let Some(message) = envelope::decode(message.payload) else {
            ClusterStats::add(&stats.undecodable);
            continue;
        };
        ClusterStats::add(&stats.received);
        broker.publish_remote(message);
    }
}
