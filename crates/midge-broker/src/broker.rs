//! The builder, the listener task and the handle. The `$SYS` task is in `sys.rs`.

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use midge_proto::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::auth::FileAuth;
use crate::config::BindAddr;
use crate::config::{BrokerConfig, ConfigError};
use crate::core::live::ConfigReload;
use crate::core::Core;
use crate::driver::{now, Transport};
use crate::hooks::{AllowAll, Hooks};
use crate::listener::{Bound, Gate, ListenError, Reloader};
use crate::stats::BrokerStats;
use crate::store::{Cluster, MemoryStore, Standalone, Store};
use crate::sys::{publish_sys, sys_loop, Sys};

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A listener could not start: its socket, or its certificates.
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// The broker. Start one with [`Broker::builder`].
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// A builder with the default configuration, hooks that allow everything, the in-memory
    /// store and no cluster.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            config: BrokerConfig::default(),
            hooks: Arc::new(AllowAll),
            store: Arc::new(MemoryStore::new()),
            cluster: Arc::new(Standalone),
            bind: None,
        }
    }
}

/// Configures and starts a broker.
pub struct BrokerBuilder {
    config: BrokerConfig,
    hooks: Arc<dyn Hooks>,
    store: Arc<dyn Store>,
    cluster: Arc<dyn Cluster>,
    bind: Option<SocketAddr>,
}

impl std::fmt::Debug for BrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBuilder")
            .field("config", &self.config)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl BrokerBuilder {
    /// Sets the configuration.
    pub fn config(mut self, config: BrokerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the hooks. The broker's own rules from the configuration's `[auth]` section
    /// ([`FileAuth`]) are asked first, then these: a client must pass both.
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }

    /// Sets the store for retained messages and sessions.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// Sets the cluster seam.
    pub fn cluster(mut self, cluster: impl Cluster) -> Self {
        self.cluster = Arc::new(cluster);
        self
    }

    /// The first listener listens on `addr` instead of its configured `bind` (port 0 picks a
    /// free port; see [`BrokerHandle::local_addr`]).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Binds every listener and starts serving. Must be called within a tokio runtime.
    pub async fn start(mut self) -> Result<BrokerHandle, StartError> {
        if let (Some(addr), Some(first)) = (self.bind, self.config.listeners.first_mut()) {
            first.bind = BindAddr::Tcp(addr);
        }
        // Checked before binding, though the core checks it again: a bad configuration is
        // reported as such, not as whatever binding would do with it.
        self.config.validate()?;
        let max_packet_size = self.config.limits.max_packet_size;
        let listeners = self
            .config
            .listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| Bound::bind(listener, index, max_packet_size))
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<Option<SocketAddr>> = listeners.iter().map(Bound::local_addr).collect();
        let reloaders: Arc<[Reloader]> = listeners.iter().filter_map(Bound::reloader).collect();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let names = self
            .config
            .listeners
            .iter()
            .zip(&addrs)
            .map(|(listener, bound)| {
                let mut listener = listener.clone();
                if let Some(bound) = bound {
                    listener.bind = BindAddr::Tcp(*bound);
                }
                listener.describe()
            })
            .collect();
        let shared = Core::new(self.config, self.hooks, self.store, self.cluster, now())?;
        let _ = shared.listener_names.set(names);
        let timer_task = tokio::spawn(timer_loop(shared.clone(), shutdown_rx.clone()));
        let verify_task = tokio::spawn(verify_loop(
            shared.clone(),
            shared.config.auth.verify_threads(),
        ));
        for (index, listener) in shared.config.listeners.iter().enumerate() {
            tracing::info!(
                listener = %listener.describe(),
                "accepting {}",
                shared.file_auth().describe(index)
            );
        }
        let (done_tx, done_rx) = mpsc::channel::<()>(1);
        let serving = Gate::new(None, done_tx.clone());
        // Bridges first, and their subscriptions here made before any client is let in: a
        // message published from the first moment on is forwarded.
        let bridge_tasks = crate::bridge::start(&shared, &serving, &shutdown_rx);
        crate::bridge::wait_subscribed(&shared, Duration::from_secs(5)).await;
        let listener_tasks = listeners
            .into_iter()
            .map(|listener| {
                tokio::spawn(listener.serve(shared.clone(), shutdown_rx.clone(), done_tx.clone()))
            })
            .collect();
        let sys = Sys::default();
        let sys_task = match shared.config.sys.interval_secs {
            0 => None,
            secs => Some(tokio::spawn(sys_loop(
                shared.clone(),
                sys.clone(),
                Duration::from_secs(secs),
            ))),
        };
        drop(done_tx);
        Ok(BrokerHandle {
            shared,
            addrs,
            reloaders,
            shutdown: shutdown_tx,
            done: Some(done_rx),
            serving: Some(serving),
            bridge_tasks,
            listener_tasks,
            sys,
            sys_task,
            timer_task: Some(timer_task),
            verify_task: Some(verify_task),
        })
    }
}

/// Runs the core's broker-wide work when it comes due: offline sessions' deadlines (delayed
/// wills, session expiry) and publishes from inside the broker that wait for room. It sleeps
/// until the earliest, and wakes sooner when the core has earlier work. It ends when the
/// broker stops, so that a stopped broker never expires a session in a store a new broker may
/// have taken over.
async fn timer_loop(shared: Arc<Core>, mut stopping: watch::Receiver<bool>) {
    loop {
        let sleep = async {
            match shared.poll_timeout() {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let changed = std::future::poll_fn(|cx| shared.poll_wakeup(cx));
        tokio::select! {
            // Stopped, or the broker is gone altogether.
            _ = stopping.wait_for(|stopped| *stopped) => return,
            () = changed => {}
            () = sleep => {}
        }
        // A hook that panics loses the deadline it was called for, not every later one.
        let fired = panic::catch_unwind(AssertUnwindSafe(|| shared.handle_timeout(now())));
        if fired.is_err() {
            tracing::error!("a hook panicked while a session deadline fired");
        }
    }
}

/// Runs the password checks CONNECTs wait for, on tokio's blocking threads, at most
/// `threads` at once: the threads that route messages never compute a hash, and a storm of
/// CONNECTs with passwords queues here (one check per waiting connection) instead of taking
/// every CPU.
async fn verify_loop(shared: Arc<Core>, threads: usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(threads));
    loop {
        let job = std::future::poll_fn(|cx| shared.poll_verification(cx)).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            // A check that panics refuses its CONNECT by never answering (the connection
            // times out); the permit comes back either way.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| job.run()));
            drop(permit);
        });
    }
}

/// A running broker: its address, counters, and a way to stop it. Dropping the handle
/// signals shutdown without waiting for it; call [`BrokerHandle::shutdown`] to wait.
pub struct BrokerHandle {
    shared: Arc<Core>,
    /// Each listener's TCP address, in the configuration's order.
    addrs: Vec<Option<SocketAddr>>,
    reloaders: Arc<[Reloader]>,
    shutdown: watch::Sender<bool>,
    done: Option<mpsc::Receiver<()>>,
    /// What connections given to [`BrokerHandle::serve`] are admitted through.
    serving: Option<Arc<Gate>>,
    listener_tasks: Vec<JoinHandle<()>>,
    /// The bridges' tasks: stopped before the connections are closed, so that each says
    /// goodbye to its remote and leaves its sessions as they are.
    bridge_tasks: Vec<JoinHandle<()>>,
    /// What the `$SYS` updates remember (the load averages), shared with the `$SYS` task.
    sys: Sys,
    sys_task: Option<JoinHandle<()>>,
    timer_task: Option<JoinHandle<()>>,
    verify_task: Option<JoinHandle<()>>,
}

/// Reloads the files the broker reads at start that may change while it runs: the TLS
/// listeners' certificates, and the password and ACL files. From
/// [`BrokerHandle::file_reloader`], for a task of its own (a signal handler).
#[derive(Clone)]
pub struct FileReloader {
    tls: Arc<[Reloader]>,
    auth: Arc<FileAuth>,
    core: Arc<Core>,
}

impl std::fmt::Debug for FileReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReloader")
            .field(
                "tls",
                &self.tls.iter().map(Reloader::name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl FileReloader {
    /// Applies what may change while the broker runs from `new`, the configuration read
    /// again: the limits `max_connections`, `max_sessions`, `backpressure_timeout_ms`,
    /// `max_queued_bytes_total`, `max_retained_messages`, `max_retained_bytes` and
    /// `close_timeout_ms`, from the next time each is checked. Other keys that changed are
    /// listed in [`ConfigReload::needs_restart`] and left as they were. A configuration that
    /// does not validate changes nothing.
    ///
    /// The files the configuration names are read again by [`FileReloader::reload`], not
    /// here.
    pub fn reload_config(&self, new: &BrokerConfig) -> Result<ConfigReload, ConfigError> {
        self.core.reload_config(new)
    }

    /// Reads every TLS listener's certificate, key and client CA files again, and the
    /// password and ACL files. Handshakes from then on use the new certificates (open
    /// connections keep theirs), and every check from then on the new rules: a connected
    /// client whose rights shrank stops receiving what it may no longer read from the next
    /// message on. A client whose user was removed from the password file stays connected (it
    /// was authenticated when it connected) but is anonymous to the ACL from then on; it is
    /// refused when it connects again.
    ///
    /// Files that fail to load change nothing of their own kind: a listener keeps its
    /// certificates, and the password and ACL rules stay as they were, together. Each error,
    /// naming the file (and the line, for a malformed line), is logged and returned; the
    /// other files still reload.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for reloader in self.tls.iter() {
            match reloader.reload() {
                Ok(()) => tracing::info!(listener = reloader.name(), "TLS certificates reloaded"),
                Err(err) => {
                    tracing::error!("{err}; keeping the certificates in use");
                    errors.push(err);
                }
            }
        }
        if self.auth.has_files() {
            match self.auth.reload() {
                Ok(()) => tracing::info!("password and ACL files reloaded"),
                Err(err) => {
                    tracing::error!("{err}; keeping the password and ACL rules in use");
                    errors.push(err.to_string());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("listeners", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl BrokerHandle {
    /// Serves a client connected some other way than through the listener: any byte stream,
    /// such as an accepted TLS or WebSocket stream, or one end of an in-memory pipe
    /// ([`tokio::io::duplex`]) in a test. `peer` is what hooks and logs see as its address.
    /// The connection counts against `limits.max_connections` like any other, and
    /// [`BrokerHandle::shutdown`] waits for it. It is authenticated as a client of the first
    /// listener (its password file and `allow_anonymous`), and is local only if `peer` is a
    /// loopback address.
    pub fn serve<S: Transport>(&self, stream: S, peer: SocketAddr) {
        if let Some(admission) = self.serving.as_ref().and_then(Gate::admit) {
            let origin = crate::driver::Origin::default();
            crate::driver::spawn(&self.shared, stream, peer, now(), origin, admission);
        }
    }

    /// The address the first TCP listener is bound to (with the real port when bound to port
    /// 0), or the unspecified address when every listener is a Unix socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs
            .iter()
            .flatten()
            .next()
            .copied()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The address listener `index` (in the configuration's order) is bound to, if it is a
    /// TCP listener.
    pub fn listener_addr(&self, index: usize) -> Option<SocketAddr> {
        self.addrs.get(index).copied().flatten()
    }

    /// Reads the TLS listeners' certificates and the password and ACL files again (what
    /// `midge broker` does on SIGHUP); see [`FileReloader::reload`].
    pub fn reload(&self) -> Result<(), Vec<String>> {
        self.file_reloader().reload()
    }

    /// Applies what may change while the broker runs from `new`, the configuration read
    /// again; see [`FileReloader::reload_config`].
    pub fn reload_config(&self, new: &BrokerConfig) -> Result<ConfigReload, ConfigError> {
        self.file_reloader().reload_config(new)
    }

    /// What reloads the broker's files, for a task of its own (a signal handler).
    pub fn file_reloader(&self) -> FileReloader {
        FileReloader {
            tls: self.reloaders.clone(),
            auth: self.shared.file_auth().clone(),
            core: self.shared.clone(),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BrokerStats {
        self.shared.stats()
    }

    /// The admin view: figures, clients, subscriptions and retained messages, and actions on
    /// them. It can outlive the handle, and stays usable (empty) once the broker stopped.
    pub fn admin(&self) -> Admin {
        Admin::new(self.shared.clone())
    }

    /// Publishes a message as the broker itself (no client): retained if flagged, routed to
    /// every matching session, and offered to the cluster seam. Returns the number of sessions
    /// it went to.
    pub fn publish(&self, message: Message) -> usize {
        self.shared.publish(message, now())
    }

    /// Like [`BrokerHandle::publish`], but not offered to the cluster seam: for messages that
    /// arrived from another node.
    pub fn publish_local(&self, message: Message) -> usize {
        self.shared.publish_local(message, now())
    }

    /// Deadlines of offline sessions waiting to fire: at most a delayed will and an expiry per
    /// offline session. For tests.
    #[doc(hidden)]
    pub fn pending_session_deadlines(&self) -> usize {
        self.shared.pending_deadlines()
    }

    /// Publishes the `$SYS` topics now, without waiting for the interval.
    pub fn publish_sys(&self) {
        publish_sys(&self.shared, &self.sys);
    }

    /// Stops accepting, tells every connected 5.0 client DISCONNECT 0x8B (Server shutting
    /// down), flushes and closes every connection, and waits until they are all closed.
    ///
    /// Then, if the [`Store`] has a [`Journal`](crate::Journal), it waits until the journal
    /// has made every change durable, so a broker started on the same store goes on where
    /// this one stopped, with the sessions' queues and QoS 1 and 2 state, their expiry, and
    /// the wills still waiting for their delay. Session expiry and delayed wills stop with the
    /// broker.
    ///
    /// Dropping the handle instead stops the broker without waiting.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.bridge_tasks) {
            // Bounded: a remote that does not answer does not hold the broker up.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.shared.stop();
        for task in std::mem::take(&mut self.listener_tasks) {
            let _ = task.await;
        }
        // Ended by the stop signal; waited for, so that no deadline fires while the sessions
        // are written below.
        if let Some(task) = self.timer_task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.sys_task.take() {
            task.abort();
        }
        drop(self.serving.take());
        if let Some(mut done) = self.done.take() {
            // Every connection task holds a sender; `None` means they all ended.
            let _ = done.recv().await;
        }
        if let Some(task) = self.verify_task.take() {
            task.abort();
        }
        self.shared.flush_detached();
        // What the last connections changed is on disk before the broker says it stopped.
        if let Some(journal) = self.shared.journal() {
            let ticket = journal.submitted();
            if let Err(error) =
                futures_util::future::poll_fn(|cx| journal.poll_durable(ticket, cx)).await
            {
                tracing::error!(%error, "the store did not take the last changes");
            }
        }
        tracing::info!("midge broker stopped");
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.shared.stop();
        if let Some(task) = self.sys_task.take() {
            task.abort();
        }
        if let Some(task) = self.verify_task.take() {
            task.abort();
        }
    }
}
