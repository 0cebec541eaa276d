//! Helpers for the client tests: an in-process midge broker, a TCP proxy on loopback that
//! cuts connections, a real mosquitto started on a free port (skipped loudly when it is
//! not installed, a failure under `MIDGE_REQUIRE_PEERS=1`), and (in [`script`]) a scripted
//! broker on an in-memory network for tests on tokio's paused clock.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unreachable_pub)]

pub mod script;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use midge_broker::{Broker, BrokerConfig, BrokerHandle};
use midge_client::{Client, ClientBuilder, ReconnectPolicy};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use midge_testkit::peers::require;

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn broker_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.sys.interval_secs = 0;
    config.limits.close_timeout_ms = 500;
    config
}

pub async fn start_broker() -> BrokerHandle {
    start_broker_on("127.0.0.1:0".parse().expect("address")).await
}

pub async fn start_broker_on(addr: SocketAddr) -> BrokerHandle {
    Broker::builder()
        .config(broker_config())
        .bind(addr)
        .start()
        .await
        .expect("broker starts")
}

/// Fast reconnection for tests.
pub fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy::exponential(Duration::from_millis(5), Duration::from_millis(100))
}

pub fn builder(addr: SocketAddr, id: &str) -> ClientBuilder {
    Client::builder(addr.ip().to_string(), addr.port())
        .client_id(id)
        .reconnect(Some(fast_reconnect()))
}

/// Bounded wait for a future; panics with `what` on timeout.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A TCP proxy on 127.0.0.1:0 in front of `upstream`. It can cut every connection now, cut
/// connections at random moments, refuse to forward while paused, or lose what the broker
/// sends.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    cut: watch::Sender<u64>,
    chaos: Arc<AtomicBool>,
    /// Bytes from upstream are read and thrown away, not forwarded.
    lose_replies: Arc<AtomicBool>,
    pub connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let upstream = Arc::new(Mutex::new(upstream));
        let (cut, cut_rx) = watch::channel(0u64);
        let chaos = Arc::new(AtomicBool::new(false));
        let lose_replies = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let upstream = upstream.clone();
            let chaos = chaos.clone();
            let lose = lose_replies.clone();
            let connections = connections.clone();
            async move {
                let mut rng = seed | 1;
                while let Ok((inbound, _)) = listener.accept().await {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    // A connection lives 5..80 ms when chaos is on.
                    let life = Duration::from_millis(5 + rng % 75);
                    let target = *upstream.lock().expect("upstream");
                    connections.fetch_add(1, Relaxed);
                    let flags = (chaos.clone(), lose.clone());
                    tokio::spawn(pipe(inbound, target, cut_rx.clone(), flags, life));
                }
            }
        });
        Self {
            addr,
            upstream,
            cut,
            chaos,
            lose_replies,
            connections,
            task,
        }
    }

    /// From now on, what the broker sends is thrown away (the client never sees its
    /// acknowledgements), or forwarded again. Bytes lost break the stream: cut the
    /// connections before forwarding again.
    pub fn lose_replies(&self, lose: bool) {
        self.lose_replies.store(lose, Relaxed);
    }

    /// Cuts every open connection now.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// New connections go to `upstream`.
    pub fn retarget(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("upstream") = upstream;
    }

    /// Cut connections at random moments (each new connection lives 5..80 ms), or not.
    pub fn chaos(&self, on: bool) {
        self.chaos.store(on, Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

async fn pipe(
    inbound: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<u64>,
    (chaos, lose_replies): (Arc<AtomicBool>, Arc<AtomicBool>),
    life: Duration,
) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut ri, mut wi) = inbound.into_split();
    let (mut ro, mut wo) = outbound.into_split();
    let forward = async {
        tokio::select! {
            _ = tokio::io::copy(&mut ri, &mut wo) => {}
            _ = replies(&mut ro, &mut wi, &lose_replies) => {}
        }
    };
    let chaos_cut = async {
        if chaos.load(Relaxed) {
            tokio::time::sleep(life).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    cut.borrow_and_update();
    tokio::select! {
        () = forward => {}
        _ = cut.changed() => {}
        () = chaos_cut => {}
    }
    // Dropping both halves closes both sockets abruptly, mid-packet if it falls so.
}

/// Copies what the broker sends to the client, or throws it away while `lose` is set.
async fn replies(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    lose: &AtomicBool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !lose.load(Relaxed) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------------------------- mosquitto

fn mosquitto_path() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .or_else(|| {
        Command::new("mosquitto")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .map(|_| PathBuf::from("mosquitto"))
    })
}

/// A mosquitto broker on 127.0.0.1, with persistence in a directory of its own so that it
/// can be stopped and started again with its sessions. Killed when dropped.
pub struct Mosquitto {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    program: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts mosquitto, or returns `None` after a loud skip if it is not installed.
    pub async fn start(name: &str) -> Option<Self> {
        Self::start_with_window(name, 20).await
    }

    /// [`Mosquitto::start`] with `max_inflight_messages` set to `window`.
    ///
    /// mosquitto 2.0.11 does not keep its outgoing window to `max_inflight_messages` above 1:
    /// when a PUBACK acknowledges the oldest message in flight, `db__message_delete_outgoing`
    /// counts only the messages in flight ahead of it (none) and moves up to a whole window
    /// of queued messages into flight, so with acknowledgements in order the window grows by
    /// `window - 1` with each one, until every queued message is in flight. A resumed session
    /// has every message in flight sent again at once, so a backlog of thousands is sent
    /// again on every connection: a test whose connections are cut within milliseconds needs
    /// `window` 1, the one window mosquitto keeps, or under load mosquitto spends each
    /// connection sending that backlog again and reads none of the PUBACKs before the cut.
    pub async fn start_with_window(name: &str, window: u16) -> Option<Self> {
        Self::start_with(name, |port, dir| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nautosave_interval 0\nmax_queued_messages 0\n\
                 max_inflight_messages {window}\nset_tcp_nodelay true\nlog_dest stderr\n\
                 log_type error\n",
                dir.display()
            )
        })
        .await
    }

    /// Starts mosquitto with the configuration `config` makes from a free port and a
    /// directory of its own (which the mosquitto user can write to, for a Unix socket);
    /// ready once that port accepts TCP connections.
    pub async fn start_with(
        name: &str,
        config: impl FnOnce(u16, &std::path::Path) -> String,
    ) -> Option<Self> {
        let program = mosquitto_path();
        if !require("mosquitto (Debian package mosquitto)", program.is_some()) {
            return None;
        }
        let program = program?;
        let dir = std::env::temp_dir().join(format!(
            "midge-client-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("mosquitto dir");
        // Started as root, mosquitto drops to its own user, which must still be able to write
        // its persistence file here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .expect("mosquitto dir permissions");
        }
        // A free port: bind port 0, read it, release it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let config = config(port, &dir);
        std::fs::write(dir.join("mosquitto.conf"), config).expect("mosquitto config");
        let mut mosquitto = Self {
            addr,
            dir,
            program,
            child: None,
        };
        mosquitto.run().await;
        Some(mosquitto)
    }

    async fn run(&mut self) {
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        // Ready when it accepts connections.
        for _ in 0..500 {
            if TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("mosquitto did not listen on {}", self.addr);
    }

    /// Stops mosquitto with SIGTERM, so that it writes its persistence file, and waits for it.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            for _ in 0..500 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the sessions it saved.
    pub async fn restart(&mut self) {
        self.run().await;
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------------ numbered streams

/// Streams `n` numbered messages at `qos` from one client to another through `addr`, both
/// with persistent sessions, while `disrupt` (given the count of distinct messages received
/// so far) breaks things. Then checks that none was lost and, with `exactly_once`, that none
/// came twice.
pub async fn numbered_messages<D, F>(
    addr: SocketAddr,
    version: midge_client::ProtocolVersion,
    qos: midge_client::QoS,
    exactly_once: bool,
    n: usize,
    tag: &str,
    disrupt: D,
) where
    D: FnOnce(Arc<std::sync::atomic::AtomicUsize>) -> F,
    F: std::future::Future<Output = ()>,
{
    numbered_messages_via(addr, addr, version, qos, exactly_once, n, tag, disrupt).await;
}

/// [`numbered_messages`] with the subscriber connecting to `sub_addr` and the publisher to
/// `pub_addr`, so that a test can cut one of them off alone.
#[allow(clippy::too_many_arguments)]
pub async fn numbered_messages_via<D, F>(
    sub_addr: SocketAddr,
    pub_addr: SocketAddr,
    version: midge_client::ProtocolVersion,
    qos: midge_client::QoS,
    exactly_once: bool,
    n: usize,
    tag: &str,
    disrupt: D,
) where
    D: FnOnce(Arc<std::sync::atomic::AtomicUsize>) -> F,
    F: std::future::Future<Output = ()>,
{
    use midge_client::{PublishOptions, ReasonCode, SubscribeOptions};
    use std::sync::atomic::AtomicUsize;

    let persistent = |addr: SocketAddr, id: String| {
        builder(addr, &id)
            .version(version)
            .clean_start(false)
            .session_expiry(600)
            .keep_alive(5)
    };
    let subscriber = within(
        "subscriber connects",
        persistent(sub_addr, format!("{tag}-sub")).connect(),
    )
    .await
    .expect("subscriber connects");
    let (_, mut stream) = within(
        "subscribe",
        subscriber.subscribe(format!("{tag}/#"), SubscribeOptions::with_qos(qos)),
    )
    .await
    .expect("subscribed");
    let publisher = within(
        "publisher connects",
        persistent(pub_addr, format!("{tag}-pub")).connect(),
    )
    .await
    .expect("publisher connects");
    // The last connection events of each client, and how often the broker had lost a session
    // (each client subscribes to its events after its first connection), for the report of a
    // stuck run.
    let history = Arc::new(Mutex::new(Vec::<String>::new()));
    let lost_sessions = Arc::new(AtomicUsize::new(0));
    for (who, client) in [("sub", &subscriber), ("pub", &publisher)] {
        let mut events = client.events();
        let history = history.clone();
        let lost_sessions = lost_sessions.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if event
                    == (midge_client::ConnectionEvent::Connected {
                        session_present: false,
                    })
                {
                    lost_sessions.fetch_add(1, Relaxed);
                }
                let mut history = history.lock().expect("history");
                if history.len() > 400 {
                    history.remove(0);
                }
                history.push(format!("{who} {event:?}"));
            }
        });
    }
    let received = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(vec![0u32; n]));
    let acked = Arc::new(AtomicUsize::new(0));
    let collector = tokio::spawn({
        let received = received.clone();
        let seen = seen.clone();
        async move {
            let mut counts = vec![0u32; n];
            let mut distinct = 0;
            loop {
                let message = stream.recv().await.expect("the subscription stays open");
                let index: usize = std::str::from_utf8(message.payload())
                    .expect("utf-8")
                    .parse()
                    .expect("a number");
                if index == n {
                    // The end marker, published after every message had arrived once.
                    return counts;
                }
                counts[index] += 1;
                seen.lock().expect("seen")[index] += 1;
                if counts[index] == 1 {
                    distinct += 1;
                    received.store(distinct, Relaxed);
                }
            }
        }
    });
    let producer = tokio::spawn({
        let publisher = publisher.clone();
        let acked = acked.clone();
        let topic = format!("{tag}/numbered");
        async move {
            let mut handles = Vec::with_capacity(n);
            for i in 0..n {
                let handle = publisher
                    .enqueue(topic.clone(), i.to_string(), PublishOptions::with_qos(qos))
                    .await
                    .expect("queued");
                handles.push(handle);
            }
            for (i, handle) in handles.into_iter().enumerate() {
                let outcome = handle.await;
                assert!(outcome.is_ok(), "message {i}: {outcome:?}");
                acked.fetch_add(1, Relaxed);
            }
        }
    });
    let report = || {
        let seen = seen.lock().expect("seen");
        let missing: Vec<_> = (0..n).filter(|&i| seen[i] == 0).take(20).collect();
        let history = history.lock().expect("history");
        let lost_sessions = lost_sessions.load(Relaxed);
        let last: Vec<_> = history
            .iter()
            .rev()
            .filter(|e| !e.contains("Reconnecting"))
            .take(12)
            .collect();
        format!(
            "{tag}: received {} of {n}, {} acknowledged to the publisher, first missing {missing:?}, sessions lost by the broker {lost_sessions}, last events {last:?}",
            received.load(Relaxed),
            acked.load(Relaxed)
        )
    };
    let progress = async {
        disrupt(received.clone()).await;
        producer.await.expect("producer");
        while received.load(Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(WAIT, progress).await.is_err() {
        panic!("stuck: {}", report());
    }
    within(
        "end marker",
        publisher.publish(
            format!("{tag}/numbered"),
            n.to_string(),
            PublishOptions::with_qos(qos),
        ),
    )
    .await
    .expect("end marker");
    let counts = within("collector", collector).await.expect("collector");
    let missing: Vec<_> = (0..n).filter(|&i| counts[i] == 0).collect();
    assert!(
        missing.is_empty(),
        "lost {} messages: {missing:?}",
        missing.len()
    );
    let twice: Vec<_> = (0..n).filter(|&i| counts[i] > 1).collect();
    if exactly_once {
        assert!(twice.is_empty(), "QoS 2 duplicated {twice:?}");
    } else if !twice.is_empty() {
        eprintln!("{tag}: {} messages delivered more than once", twice.len());
    }
    publisher.disconnect(ReasonCode::SUCCESS).await;
    subscriber.disconnect(ReasonCode::SUCCESS).await;
}

/// A free port on 127.0.0.1: bound to port 0, read, released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
