//! Helpers for the persistence tests: the `midge broker` binary as a child process that a test
//! kills with SIGKILL and starts again on the same store, and raw MQTT clients on midge-codec
//! that record what they sent, what the broker acknowledged and what they received, and that
//! keep their side of the session (packet identifiers in flight, QoS 2 identifiers awaiting
//! PUBREL) across a reconnect as a real client must.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use midge_codec::{
    ByteStr, ConnAck, Connect, Disconnect, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, Will, MAX_PACKET_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Longest the broker may take to answer a CONNECT, SUBSCRIBE or PUBLISH.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(20);

/// Longest a broker may take to listen after it is started (it opens and checks its store
/// first, and restores every session).
pub const START_LIMIT: Duration = Duration::from_secs(30);

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "midge-crash-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TOML string literal for a path.
pub fn toml_path(path: &Path) -> String {
    let s = path.to_str().expect("a UTF-8 path");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The port of the log line `midge broker listening listener=127.0.0.1:PORT (mqtt)`.
fn listening_port(log: &[String]) -> Option<u16> {
    log.iter()
        .filter(|l| l.contains("midge broker listening"))
        .find_map(|l| {
            let rest = &l[l.find("listener=127.0.0.1:")? + "listener=127.0.0.1:".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
}

/// What starting the broker came to.
pub enum Started {
    /// It listens.
    Listening(BrokerProcess),
    /// It exited before listening.
    Exited { status: ExitStatus, stderr: String },
}

/// `midge broker` as a child process, with its log kept for failure messages. Killed with
/// SIGKILL when dropped.
pub struct BrokerProcess {
    child: Option<Child>,
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
}

impl BrokerProcess {
    /// Writes a configuration into `dir` with a listener on a loopback port of the broker's
    /// choosing followed by `body` (TOML), and starts the broker on it. The port is read from
    /// its log: one picked beforehand could be taken by another test's broker or client
    /// before this one binds it.
    pub fn start_with(dir: &Path, body: &str) -> Started {
        static STARTS: AtomicU64 = AtomicU64::new(0);
        let config = dir.join(format!(
            "midge-{}.toml",
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(
            &config,
            format!("[[listener]]\nbind = \"127.0.0.1:0\"\n{body}"),
        )
        .expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_midge"))
            .args(["broker", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns midge broker");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lock(&log).push(line);
                }
            })
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                // The log is complete once the pipe is closed.
                let _ = reader.join();
                let stderr = lock(&log).join("\n");
                return Started::Exited { status, stderr };
            }
            let listening = listening_port(&lock(&log));
            if let Some(port) = listening {
                return Started::Listening(Self {
                    child: Some(child),
                    port,
                    log,
                    config,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "midge broker did not listen within {START_LIMIT:?}; log:\n{}",
                    lock(&log).join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// As [`BrokerProcess::start_with`], panicking with its log if it does not listen.
    pub fn start(dir: &Path, body: &str) -> Self {
        match Self::start_with(dir, body) {
            Started::Listening(broker) => broker,
            Started::Exited { status, stderr } => {
                panic!("midge broker exited ({status}) instead of listening:\n{stderr}")
            }
        }
    }

    /// SIGKILL (`Child::kill` sends it on Unix): the broker gets no chance to flush or close
    /// anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM, which asks the broker to stop cleanly.
    pub fn send_term(&self) {
        let Some(child) = &self.child else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Whether the broker has exited; panics if it did not exit cleanly.
    pub fn exited_cleanly(&mut self) -> bool {
        let Some(child) = &mut self.child else {
            return true;
        };
        match child.try_wait().expect("try_wait") {
            None => false,
            Some(status) => {
                self.child = None;
                assert!(
                    status.success(),
                    "midge broker exited with {status}; log:\n{}",
                    self.log_tail(40)
                );
                true
            }
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn terminate(&mut self) {
        self.send_term();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.exited_cleanly() {
            assert!(
                Instant::now() < deadline,
                "midge broker did not stop on SIGTERM; log:\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The value of `result`, or a panic that says what failed, whether the broker is still
    /// running, and how its log ends.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        result: Result<T, E>,
        what: impl std::fmt::Display,
    ) -> T {
        match result {
            Ok(value) => value,
            Err(err) => {
                let state = match self.child.as_mut().map(Child::try_wait) {
                    Some(Ok(None)) => "still running".to_owned(),
                    Some(Ok(Some(status))) => format!("exited: {status}"),
                    Some(Err(e)) => format!("unknown: {e}"),
                    None => "stopped by the test".to_owned(),
                };
                panic!(
                    "{what}: {err}\nthe broker on port {} is {state}; its log ends:\n{}",
                    self.port,
                    self.log_tail(30)
                )
            }
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = lock(&self.log);
        log[log.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One MQTT connection, packet by packet.
pub struct Client {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Client {
    /// Connects and sends `connect`; returns the CONNACK, whatever its reason code.
    pub async fn connect(port: u16, connect: &Connect) -> io::Result<(Self, ConnAck)> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut client = Self {
            rd,
            wr,
            buf: BytesMut::with_capacity(64 * 1024),
            version: connect.protocol,
        };
        client
            .send(&Packet::Connect(Box::new(connect.clone())))
            .await?;
        match client.answer().await? {
            Packet::ConnAck(ack) => Ok((client, *ack)),
            other => Err(invalid(format!("expected CONNACK, got {other:?}"))),
        }
    }

    pub async fn send(&mut self, packet: &Packet) -> io::Result<()> {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out).map_err(invalid)?;
        self.wr.write_all(&out).await
    }

    /// Writes all of `packets` at once.
    pub async fn send_all(&mut self, packets: &[Packet]) -> io::Result<()> {
        let mut out = BytesMut::new();
        for packet in packets {
            packet.encode(self.version, &mut out).map_err(invalid)?;
        }
        self.wr.write_all(&out).await
    }

    /// The next packet; `UnexpectedEof` when the broker closes the connection.
    pub async fn recv(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(packet) =
                Packet::decode(&mut self.buf, self.version, MAX_PACKET_SIZE).map_err(invalid)?
            {
                return Ok(packet);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// The next packet, which the broker owes: an error if it does not come within
    /// [`ANSWER_LIMIT`].
    pub async fn answer(&mut self) -> io::Result<Packet> {
        self.recv_within(ANSWER_LIMIT).await?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {ANSWER_LIMIT:?}"),
            )
        })
    }

    /// The next packet within `limit`; `None` if none came.
    pub async fn recv_within(&mut self, limit: Duration) -> io::Result<Option<Packet>> {
        match tokio::time::timeout(limit, self.recv()).await {
            Ok(packet) => packet.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Subscribes to `filter` at `qos` and waits for the SUBACK, which must grant `qos`.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> io::Result<()> {
        let packet_id = PacketId::new(1).expect("non-zero");
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![(
                ByteStr::from(filter.to_owned()),
                SubscriptionOptions::qos(qos),
            )],
            properties: Default::default(),
        }))
        .await?;
        loop {
            match self.answer().await? {
                Packet::SubAck(ack) if ack.packet_id == packet_id => {
                    let granted = ack.reason_codes.first().map(|c| c.0);
                    return if granted == Some(qos as u8) {
                        Ok(())
                    } else {
                        Err(invalid(format!(
                            "SUBACK for {filter} at {qos:?}: {:?}",
                            ack.reason_codes
                        )))
                    };
                }
                Packet::PingResp => {}
                other => return Err(invalid(format!("expected SUBACK, got {other:?}"))),
            }
        }
    }

    /// A normal DISCONNECT, then the connection is closed.
    pub async fn disconnect(mut self) -> io::Result<()> {
        self.send(&Packet::Disconnect(Disconnect::default()))
            .await?;
        self.wr.shutdown().await
    }
}

/// A CONNECT for `client_id`. A 5.0 session persists with `session_expiry` > 0; a 3.1.1 one
/// with `clean` false.
pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    clean: bool,
    session_expiry: u32,
    will: Option<Will>,
) -> Connect {
    let mut connect = Connect::new(version, client_id.to_owned());
    connect.clean_start = clean;
    connect.keep_alive = 0;
    connect.will = will;
    if version.is_v5() && session_expiry > 0 {
        connect.properties.session_expiry_interval = Some(session_expiry);
    }
    connect
}

/// A will on `topic` with `payload`, at QoS 1; for 5.0 with `delay` seconds of Will Delay
/// Interval.
pub fn will(version: ProtocolVersion, topic: &str, payload: &str, delay: u32) -> Will {
    let mut properties = midge_codec::WillProperties::default();
    if version.is_v5() && delay > 0 {
        properties.will_delay_interval = Some(delay);
    }
    Will {
        topic: ByteStr::from(topic.to_owned()),
        payload: Bytes::from(payload.to_owned()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties,
    }
}

/// Whether `topic` matches `filter` (`+` and `#` wildcards; no `$` topics here).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The payload of message `seq` of publisher `publisher`.
pub fn payload(publisher: usize, seq: u32) -> Bytes {
    Bytes::from(format!("p{publisher}:{seq}"))
}

/// The publisher and sequence number a payload names.
pub fn parse_payload(payload: &[u8]) -> Option<(usize, u32)> {
    let s = std::str::from_utf8(payload).ok()?;
    let (p, seq) = s.strip_prefix('p')?.split_once(':')?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

/// What a publisher publishes.
#[derive(Clone, Debug)]
pub struct PubSpec {
    pub id: usize,
    pub client_id: String,
    pub version: ProtocolVersion,
    pub qos: QoS,
    /// Most QoS 1/2 messages unacknowledged at once.
    pub window: usize,
    /// Messages to publish at most.
    pub max_messages: u32,
    pub topic: String,
    /// Every `retain_every`-th message goes retained to `retained_topic` instead.
    pub retained_topic: String,
    pub retain_every: u32,
    /// Every `expiry_every`-th other message carries a Message Expiry Interval of
    /// `expiry_secs` (5.0 only; 0: none do).
    pub expiry_every: u32,
    pub expiry_secs: u32,
    /// How long each PUBREL waits after its PUBREC (QoS 2), holding the broker's record of
    /// the identifier longer.
    pub pubrel_delay: Duration,
}

/// One message a publisher sent, and what became of it.
#[derive(Clone, Debug)]
pub struct SentMessage {
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub expiry: Option<u32>,
    pub packet_id: PacketId,
    pub sent_at: Instant,
    /// When PUBACK (QoS 1) or PUBREC (QoS 2) with a success code came: from then on the
    /// broker has promised the message.
    pub acked_at: Option<Instant>,
    /// An error code that refused it.
    pub refused: Option<u8>,
    /// Times it was sent again on a resumed session.
    pub resent: u32,
}

/// A publisher's record, and its side of the session.
#[derive(Debug, Default)]
pub struct PubLog {
    pub sent: BTreeMap<u32, SentMessage>,
    /// Packet identifier → sequence number, awaiting PUBACK or PUBREC.
    pub unacked: BTreeMap<u16, u32>,
    /// Packet identifier → sequence number, PUBREL sent, awaiting PUBCOMP.
    pub released: BTreeMap<u16, u32>,
    next_seq: u32,
    next_id: u16,
    /// Protocol surprises: an acknowledgement for nothing, a CONNACK that lost the session.
    pub errors: Vec<String>,
}

impl PubLog {
    fn in_flight(&self) -> usize {
        self.unacked.len() + self.released.len()
    }

    fn take_id(&mut self) -> PacketId {
        loop {
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.unacked.contains_key(&self.next_id)
                && !self.released.contains_key(&self.next_id)
            {
                return PacketId::new(self.next_id).expect("non-zero");
            }
        }
    }

    /// The next message of `spec`, recorded as sent.
    fn next_publish(&mut self, spec: &PubSpec) -> Publish {
        self.next_seq += 1;
        let seq = self.next_seq;
        let packet_id = self.take_id();
        let retain = spec.retain_every > 0 && seq.is_multiple_of(spec.retain_every);
        let expiry = (!retain
            && spec.version.is_v5()
            && spec.expiry_every > 0
            && seq.is_multiple_of(spec.expiry_every))
        .then_some(spec.expiry_secs);
        let topic = if retain {
            spec.retained_topic.clone()
        } else {
            spec.topic.clone()
        };
        let mut publish = Publish {
            qos: spec.qos,
            retain,
            topic: ByteStr::from(topic.clone()),
            packet_id: Some(packet_id),
            payload: payload(spec.id, seq),
            ..Publish::default()
        };
        publish.properties.message_expiry_interval = expiry;
        self.unacked.insert(packet_id.get(), seq);
        self.sent.insert(
            seq,
            SentMessage {
                topic,
                qos: spec.qos,
                retain,
                expiry,
                packet_id,
                sent_at: Instant::now(),
                acked_at: None,
                refused: None,
                resent: 0,
            },
        );
        publish
    }

    /// The PUBLISH of `seq` again, as a resend on a resumed session: same packet identifier,
    /// DUP set [MQTT-4.4.0-1].
    fn resend(&self, spec: &PubSpec, seq: u32) -> Publish {
        let m = &self.sent[&seq];
        let mut publish = Publish {
            dup: true,
            qos: m.qos,
            retain: m.retain,
            topic: ByteStr::from(m.topic.clone()),
            packet_id: Some(m.packet_id),
            payload: payload(spec.id, seq),
            ..Publish::default()
        };
        publish.properties.message_expiry_interval = m.expiry;
        publish
    }

    /// Handles an acknowledgement; returns a PUBREL to send, if any.
    fn on_packet(&mut self, packet: Packet) -> io::Result<Option<Packet>> {
        let now = Instant::now();
        match packet {
            Packet::PubAck(ack) => {
                let id = ack.packet_id.get();
                match self.unacked.remove(&id) {
                    Some(seq) => {
                        let m = self.sent.get_mut(&seq).expect("sent");
                        if ack.reason_code.0 < 0x80 {
                            m.acked_at = Some(now);
                        } else {
                            m.refused = Some(ack.reason_code.0);
                        }
                    }
                    None => self
                        .errors
                        .push(format!("PUBACK for packet id {id}, not in flight")),
                }
                Ok(None)
            }
            Packet::PubRec(ack) => {
                let id = ack.packet_id.get();
                if let Some(seq) = self.unacked.remove(&id) {
                    let m = self.sent.get_mut(&seq).expect("sent");
                    if ack.reason_code.0 >= 0x80 {
                        // An error PUBREC ends the exchange: the identifier is free again [MQTT-4.3.3-9].
                        m.refused = Some(ack.reason_code.0);
                        return Ok(None);
                    }
                    m.acked_at = Some(now);
                    self.released.insert(id, seq);
                    Ok(Some(Packet::PubRel(PubAck::new(ack.packet_id))))
                } else if self.released.contains_key(&id) {
                    Ok(Some(Packet::PubRel(PubAck::new(ack.packet_id))))
                } else {
                    self.errors
                        .push(format!("PUBREC for packet id {id}, not in flight"));
                    Ok(None)
                }
            }
            Packet::PubComp(ack) => {
                let id = ack.packet_id.get();
                if self.released.remove(&id).is_none() {
                    self.errors
                        .push(format!("PUBCOMP for packet id {id}, not released"));
                }
                Ok(None)
            }
            Packet::PingResp => Ok(None),
            Packet::Disconnect(d) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("DISCONNECT 0x{:02x} from the broker", d.reason_code.0),
            )),
            other => Err(invalid(format!("publisher got {other:?}"))),
        }
    }
}

/// Publishes as fast as the window allows until `spec.max_messages` are sent and settled, the
/// connection is lost, or `stop` is set (then in-flight messages are left as they are).
pub async fn publish_flow(
    client: &mut Client,
    spec: &PubSpec,
    log: &Mutex<PubLog>,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut pubrels = Deferred::new(spec.pubrel_delay);
    loop {
        let due = pubrels.due(false);
        if !due.is_empty() {
            client.send_all(&due).await?;
        }
        let (batch, settled) = {
            let mut log = lock(log);
            let mut batch = Vec::new();
            while log.in_flight() < spec.window
                && log.next_seq < spec.max_messages
                && !stop.load(Ordering::Relaxed)
            {
                batch.push(Packet::Publish(log.next_publish(spec)));
            }
            let done = log.next_seq >= spec.max_messages || stop.load(Ordering::Relaxed);
            (batch, done && log.in_flight() == 0)
        };
        if !batch.is_empty() {
            client.send_all(&batch).await?;
        }
        if settled {
            return Ok(());
        }
        let Some(packet) = client.recv_within(pubrels.wait(ANSWER_LIMIT)).await? else {
            continue;
        };
        let reply = lock(log).on_packet(packet)?;
        if let Some(reply) = reply {
            pubrels.push(reply);
        }
    }
}

/// Answers held back for a while, as a slow client holds them: the broker has more in
/// flight, waiting for them, when it is killed.
struct Deferred {
    delay: Duration,
    queue: std::collections::VecDeque<(Instant, Packet)>,
}

impl Deferred {
    fn new(delay: Duration) -> Self {
        Self {
            delay,
            queue: Default::default(),
        }
    }

    fn push(&mut self, packet: Packet) {
        self.queue.push_back((Instant::now() + self.delay, packet));
    }

    /// The answers due now, or all of them.
    fn due(&mut self, all: bool) -> Vec<Packet> {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some((at, _)) = self.queue.front() {
            if !all && *at > now {
                break;
            }
            due.extend(self.queue.pop_front().map(|(_, p)| p));
        }
        due
    }

    /// How long to wait for a packet before the next answer is due, at most `cap`.
    fn wait(&self, cap: Duration) -> Duration {
        self.queue.front().map_or(cap, |(at, _)| {
            at.saturating_duration_since(Instant::now()).min(cap)
        })
    }
}

/// Resumes a publisher's session after a restart: resends every PUBREL and every
/// unacknowledged PUBLISH with its original packet identifier, in the order first sent
/// [MQTT-4.4.0-1], and waits until all are settled. Returns the CONNACK's Session Present.
pub async fn resume_publisher(
    port: u16,
    spec: &PubSpec,
    log: &Mutex<PubLog>,
    session_expiry: u32,
    limit: Duration,
) -> io::Result<bool> {
    let connect = connect_packet(spec.version, &spec.client_id, false, session_expiry, None);
    let (mut client, ack) = Client::connect(port, &connect).await?;
    if ack.reason_code != ReasonCode::SUCCESS {
        return Err(invalid(format!("CONNACK 0x{:02x}", ack.reason_code.0)));
    }
    let resends = {
        let mut log = lock(log);
        let unacked: Vec<u32> = log.unacked.values().copied().collect();
        for seq in unacked {
            if let Some(m) = log.sent.get_mut(&seq) {
                m.resent += 1;
            }
        }
        let mut order: Vec<(u32, bool)> = log
            .released
            .values()
            .map(|s| (*s, true))
            .chain(log.unacked.values().map(|s| (*s, false)))
            .collect();
        order.sort_unstable();
        order
            .into_iter()
            .map(|(seq, released)| {
                if released {
                    Packet::PubRel(PubAck::new(log.sent[&seq].packet_id))
                } else {
                    Packet::Publish(log.resend(spec, seq))
                }
            })
            .collect::<Vec<_>>()
    };
    client.send_all(&resends).await?;
    let deadline = Instant::now() + limit;
    while lock(log).in_flight() > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(packet) = client.recv_within(left).await? else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} messages still unsettled after resuming",
                    lock(log).in_flight()
                ),
            ));
        };
        let reply = lock(log).on_packet(packet)?;
        if let Some(reply) = reply {
            client.send(&reply).await?;
        }
    }
    client.disconnect().await?;
    Ok(ack.session_present)
}

/// One PUBLISH a subscriber received.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub dup: bool,
    pub retain: bool,
    pub packet_id: Option<u16>,
    pub expiry: Option<u32>,
    pub at: Instant,
    /// The subscriber's connection it came on (see [`SubLog::connection`]).
    pub connection: u32,
    /// Passed on to the application: false for a QoS 2 PUBLISH whose packet identifier
    /// still awaits its PUBREL, which is the same message again [MQTT-4.3.3-10].
    pub onward: bool,
}

/// A subscriber's record, and its side of the session.
#[derive(Debug, Default)]
pub struct SubLog {
    pub received: Vec<Received>,
    /// QoS 2 packet identifiers answered with PUBREC and not yet released, with the
    /// connection each came on and its message.
    pub awaiting_release: BTreeMap<u16, (u32, Bytes)>,
    /// Connections made so far: the current one's number.
    pub connection: u32,
    pub last_activity: Option<Instant>,
    pub errors: Vec<String>,
}

impl SubLog {
    /// Records `packet`; returns the answer to send, if any.
    fn on_packet(&mut self, packet: Packet) -> io::Result<Option<Packet>> {
        let now = Instant::now();
        self.last_activity = Some(now);
        match packet {
            Packet::Publish(p) => {
                let id = p.packet_id;
                let (onward, reply) = match (p.qos, id) {
                    (QoS::AtMostOnce, _) => (true, None),
                    (QoS::AtLeastOnce, Some(id)) => (true, Some(Packet::PubAck(PubAck::new(id)))),
                    (QoS::ExactlyOnce, Some(id)) => {
                        // Until PUBREL, a PUBLISH with this identifier is the same message
                        // again, not a new one [MQTT-4.3.3-10].
                        let new = match self.awaiting_release.get(&id.get()) {
                            None => true,
                            Some((on, first)) => {
                                if *on == self.connection {
                                    // Resent only when a session resumes [MQTT-4.4.0-1].
                                    self.errors.push(format!(
                                        "QoS 2 PUBLISH with packet id {id} sent again on the \
                                         connection that already had it"
                                    ));
                                }
                                if *first != p.payload {
                                    // The identifier is not free until its PUBCOMP.
                                    self.errors.push(format!(
                                        "packet id {id}, awaiting PUBREL for {first:?}, came \
                                         with {:?}",
                                        p.payload
                                    ));
                                }
                                if !p.dup {
                                    // A redelivery has DUP set [MQTT-3.3.1-1].
                                    self.errors.push(format!(
                                        "QoS 2 redelivery of packet id {id} without DUP"
                                    ));
                                }
                                false
                            }
                        };
                        self.awaiting_release
                            .insert(id.get(), (self.connection, p.payload.clone()));
                        (new, Some(Packet::PubRec(PubAck::new(id))))
                    }
                    _ => return Err(invalid("QoS 1/2 PUBLISH without packet id")),
                };
                self.received.push(Received {
                    topic: p.topic.as_str().to_owned(),
                    payload: p.payload,
                    qos: p.qos,
                    dup: p.dup,
                    retain: p.retain,
                    packet_id: id.map(PacketId::get),
                    expiry: p.properties.message_expiry_interval,
                    at: now,
                    connection: self.connection,
                    onward,
                });
                Ok(reply)
            }
            Packet::PubRel(rel) => {
                // A PUBREL for an identifier already released is answered all the same: the
                // broker resends PUBREL after a restart when our PUBCOMP was lost.
                self.awaiting_release.remove(&rel.packet_id.get());
                Ok(Some(Packet::PubComp(PubAck::new(rel.packet_id))))
            }
            Packet::PingResp => Ok(None),
            Packet::Disconnect(d) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("DISCONNECT 0x{:02x} from the broker", d.reason_code.0),
            )),
            other => Err(invalid(format!("subscriber got {other:?}"))),
        }
    }
}

/// Receives and answers until the connection is lost or `stop` is set.
/// Each answer (PUBACK, PUBREC, PUBCOMP) waits `reply_delay` before it is sent.
pub async fn receive_flow(
    client: &mut Client,
    log: &Mutex<SubLog>,
    stop: &AtomicBool,
    reply_delay: Duration,
) -> io::Result<()> {
    lock(log).connection += 1;
    let mut replies = Deferred::new(reply_delay);
    while !stop.load(Ordering::Relaxed) {
        let due = replies.due(false);
        if !due.is_empty() {
            client.send_all(&due).await?;
        }
        let wait = replies.wait(Duration::from_millis(50));
        let Some(packet) = client.recv_within(wait).await? else {
            continue;
        };
        let reply = lock(log).on_packet(packet)?;
        if let Some(reply) = reply {
            replies.push(reply);
        }
    }
    client.send_all(&replies.due(true)).await
}
