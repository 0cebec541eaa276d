//! A load generator for MQTT brokers: fan-in and fan-out at QoS 0 and 1, over MQTT 3.1.1 on
//! plain TCP, with raw packets from `midge-codec` (CONNECT, SUBSCRIBE, PUBLISH, PUBACK).
//!
//! - **fan-in**: `--clients` publishers each publish their share of `--messages` on
//!   `bench/<i>`; one subscriber holds `bench/+`.
//! - **fan-out**: one publisher publishes `--messages` on `bench/fanout`; `--clients`
//!   subscribers hold `bench/fanout`.
//!
//! Every payload starts with the publisher's index and the message's sequence number (two
//! big-endian `u32`s), so each subscriber can tell which messages it got. The clock starts when
//! every subscription is acknowledged and stops at the last delivery any subscriber saw; the
//! figure printed is deliveries per second at the subscribers.
//!
//! At QoS 1 each publisher keeps `--window` messages unacknowledged and subscribers acknowledge
//! every delivery. A message the broker acknowledged (PUBACK) to its publisher but did not
//! deliver to some subscriber counts as *lost*, once per subscriber that missed it.
//!
//! The run ends when every expected delivery arrived, when no delivery arrived for
//! `--idle-secs`, or after `--time-limit` seconds. The result is one line of `key=value` pairs.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use midge_codec::{
    ByteStr, Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, MAX_PACKET_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout_at;

const V: ProtocolVersion = ProtocolVersion::V3_1_1;
/// Messages encoded into one buffer before a write.
const BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N publishers, one subscriber on `bench/+`.
    FanIn,
    /// One publisher, N subscribers on the same topic.
    FanOut,
}

/// MQTT 3.1.1 load generator: fan-in and fan-out at QoS 0 and 1.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: SocketAddr,
    /// Which scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// QoS of publications and subscriptions: 0 or 1.
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Messages published in total (default: 200 000 at QoS 0, 50 000 at QoS 1).
    #[arg(long)]
    messages: Option<u32>,
    /// Publishers (fan-in) or subscribers (fan-out).
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Payload size in bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// QoS 1: unacknowledged messages each publisher keeps in flight.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Hard limit for one run, in seconds.
    #[arg(long, default_value_t = 30)]
    time_limit: u64,
    /// End the run when no delivery arrived for this many seconds.
    #[arg(long, default_value_t = 3)]
    idle_secs: u64,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A label printed at the start of the result line (e.g. the broker's name).
    #[arg(long, default_value = "broker")]
    label: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A connected client: read half with its buffer, write half.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl Conn {
    async fn connect(addr: SocketAddr, client_id: String) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut conn = Self {
            rd,
            wr,
            buf: BytesMut::with_capacity(256 * 1024),
        };
        let mut connect = Connect::new(V, client_id);
        connect.keep_alive = 0;
        conn.send(&Packet::Connect(Box::new(connect))).await?;
        match conn.read_packet().await? {
            Packet::ConnAck(ack) if ack.reason_code == ReasonCode::SUCCESS => Ok(conn),
            other_packet => Err(other(format!("CONNECT refused: {other_packet:?}"))),
        }
    }

    async fn send(&mut self, packet: &Packet) -> io::Result<()> {
        let mut out = BytesMut::new();
        packet.encode(V, &mut out).map_err(other)?;
        self.wr.write_all(&out).await
    }

    async fn read_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(p) = Packet::decode(&mut self.buf, V, MAX_PACKET_SIZE).map_err(other)? {
                return Ok(p);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn subscribe(&mut self, filter: &'static str, qos: QoS) -> io::Result<()> {
        let sub = Subscribe {
            packet_id: NonZeroU16::MIN,
            filters: vec![(ByteStr::from(filter), SubscriptionOptions::qos(qos))],
            properties: Default::default(),
        };
        self.send(&Packet::Subscribe(sub)).await?;
        match self.read_packet().await? {
            Packet::SubAck(ack) if ack.reason_codes.iter().all(|c| c.0 <= 2) => Ok(()),
            p => Err(other(format!("SUBSCRIBE refused: {p:?}"))),
        }
    }
}

/// What one subscriber saw.
struct SubResult {
    /// `received[publisher][seq]`: deliveries of that message.
    received: Vec<Vec<u8>>,
    deliveries: u64,
    duplicates: u64,
    last: Option<Instant>,
    error: Option<String>,
}

/// What one publisher got acknowledged (QoS 1; all true at QoS 0 when every write succeeded).
struct PubResult {
    acked: Vec<bool>,
    sent: u64,
    error: Option<String>,
    /// The connection, kept open until the run ends.
    _conn: (Option<OwnedReadHalf>, Option<OwnedWriteHalf>),
}

struct Run {
    qos: QoS,
    payload: usize,
    window: usize,
    deadline: Instant,
    idle: Duration,
}

async fn subscribe_loop(conn: Conn, run: Arc<Run>, per_pub: Vec<u32>, expected: u64) -> SubResult {
    let mut res = SubResult {
        received: per_pub.iter().map(|&n| vec![0u8; n as usize]).collect(),
        deliveries: 0,
        duplicates: 0,
        last: None,
        error: None,
    };
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<BytesMut>();
    let Conn {
        mut rd,
        mut wr,
        mut buf,
    } = conn;
    let writer = tokio::spawn(async move {
        while let Some(b) = ack_rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut acks = BytesMut::new();
    'outer: while res.deliveries < expected {
        loop {
            match Packet::decode(&mut buf, V, MAX_PACKET_SIZE) {
                Ok(Some(Packet::Publish(p))) => {
                    res.deliveries += 1;
                    if let Some(id) = p.packet_id {
                        acks.put_slice(&[0x40, 0x02]);
                        acks.put_u16(id.get());
                    }
                    record(&mut res, &p.payload);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    res.error = Some(format!("decode: {e}"));
                    break 'outer;
                }
            }
        }
        if !acks.is_empty() && ack_tx.send(acks.split()).is_err() {
            res.error = Some("ack writer closed".into());
            break;
        }
        if res.deliveries >= expected {
            break;
        }
        let until = (Instant::now() + run.idle).min(run.deadline);
        match timeout_at(until.into(), rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) => {
                res.error = Some("broker closed the connection".into());
                break;
            }
            Ok(Ok(_)) => res.last = Some(Instant::now()),
            Ok(Err(e)) => {
                res.error = Some(format!("read: {e}"));
                break;
            }
            Err(_) => break, // idle or deadline
        }
    }
    drop(ack_tx);
    // Keep the connection open until the writer flushed the last acknowledgements.
    if let Ok(wr) = writer.await {
        drop((rd, wr));
    }
    res
}

fn record(res: &mut SubResult, payload: &Bytes) {
    let (Some(p), Some(s)) = (payload.get(0..4), payload.get(4..8)) else {
        return;
    };
    let publisher = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
    let seq = u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    if let Some(slot) = res.received.get_mut(publisher).and_then(|v| v.get_mut(seq)) {
        if *slot > 0 {
            res.duplicates += 1;
        }
        *slot = slot.saturating_add(1);
    }
}

fn fill_payload(buf: &mut [u8], publisher: u32, seq: u32) {
    if let Some(head) = buf.get_mut(0..8) {
        head[..4].copy_from_slice(&publisher.to_be_bytes());
        head[4..].copy_from_slice(&seq.to_be_bytes());
    }
}

fn encode_publish(
    out: &mut BytesMut,
    topic: &ByteStr,
    qos: QoS,
    packet_id: Option<NonZeroU16>,
    payload: &[u8],
) -> io::Result<()> {
    let p = Publish {
        qos,
        topic: topic.clone(),
        packet_id,
        payload: Bytes::copy_from_slice(payload),
        ..Publish::default()
    };
    Packet::Publish(p).encode(V, out).map_err(other)
}

async fn publish_loop(
    conn: Conn,
    run: Arc<Run>,
    index: u32,
    topic: ByteStr,
    count: u32,
) -> PubResult {
    match run.qos {
        QoS::AtMostOnce => publish_qos0(conn, &run, index, &topic, count).await,
        _ => publish_qos1(conn, run, index, topic, count).await,
    }
}

async fn publish_qos0(conn: Conn, run: &Run, index: u32, topic: &ByteStr, count: u32) -> PubResult {
    let Conn { rd, mut wr, .. } = conn;
    let mut payload = vec![0u8; run.payload.max(8)];
    let mut out = BytesMut::with_capacity(BATCH * (payload.len() + topic.len() + 8));
    let mut res = PubResult {
        acked: Vec::new(),
        sent: 0,
        error: None,
        _conn: (None, None),
    };
    for seq in 0..count {
        fill_payload(&mut payload, index, seq);
        if let Err(e) = encode_publish(&mut out, topic, QoS::AtMostOnce, None, &payload) {
            res.error = Some(e.to_string());
            break;
        }
        if (seq as usize + 1).is_multiple_of(BATCH) || seq + 1 == count {
            match timeout_at(run.deadline.into(), wr.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    res.error = Some(format!("write: {e}"));
                    break;
                }
                Err(_) => {
                    res.error = Some("time limit".into());
                    break;
                }
            }
            out.clear();
            res.sent = u64::from(seq) + 1;
        }
    }
    // QoS 0 has no acknowledgement: count what was written.
    res.acked = (0..count).map(|s| u64::from(s) < res.sent).collect();
    res._conn = (Some(rd), Some(wr));
    res
}

async fn publish_qos1(
    conn: Conn,
    run: Arc<Run>,
    index: u32,
    topic: ByteStr,
    count: u32,
) -> PubResult {
    let Conn {
        mut rd,
        mut wr,
        mut buf,
    } = conn;
    let window = Arc::new(Semaphore::new(run.window.max(1)));
    // Packet identifier -> sequence number of the message in flight under it.
    let ids: Arc<Mutex<Vec<Option<u32>>>> = Arc::new(Mutex::new(vec![None; 65536]));
    let reader = tokio::spawn({
        let window = window.clone();
        let ids = ids.clone();
        let run = run.clone();
        async move {
            let mut acked = vec![false; count as usize];
            let mut n = 0u32;
            let mut error = None;
            'outer: while n < count {
                loop {
                    match Packet::decode(&mut buf, V, MAX_PACKET_SIZE) {
                        Ok(Some(Packet::PubAck(ack))) => {
                            let seq = lock(&ids)
                                .get_mut(usize::from(ack.packet_id.get()))
                                .and_then(Option::take);
                            if let Some(seq) = seq {
                                if ack.reason_code.0 < 0x80 {
                                    if let Some(a) = acked.get_mut(seq as usize) {
                                        *a = true;
                                    }
                                }
                                n += 1;
                                window.add_permits(1);
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(format!("decode: {e}"));
                            break 'outer;
                        }
                    }
                }
                if n >= count {
                    break;
                }
                let until = (Instant::now() + run.idle).min(run.deadline);
                match timeout_at(until.into(), rd.read_buf(&mut buf)).await {
                    Ok(Ok(0)) => {
                        error = Some("broker closed the connection".into());
                        break;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        error = Some(format!("read: {e}"));
                        break;
                    }
                    Err(_) => {
                        error = Some(format!("{n} of {count} PUBACKs before the timeout"));
                        break;
                    }
                }
            }
            // Wake a writer blocked on the window.
            window.close();
            (acked, rd, error)
        }
    });
    let mut payload = vec![0u8; run.payload.max(8)];
    let mut out = BytesMut::with_capacity(BATCH * (payload.len() + topic.len() + 10));
    let mut next_id: u16 = 0;
    let mut seq = 0u32;
    let mut error = None;
    while seq < count {
        match timeout_at(run.deadline.into(), window.acquire()).await {
            Ok(Ok(p)) => p.forget(),
            _ => break,
        }
        let mut granted = 1u32;
        while (granted as usize) < BATCH && seq + granted < count {
            match window.try_acquire() {
                Ok(p) => {
                    p.forget();
                    granted += 1;
                }
                Err(_) => break,
            }
        }
        {
            let mut ids = lock(&ids);
            for _ in 0..granted {
                // The next free identifier; the window is far smaller than 65 535.
                let id = loop {
                    next_id = next_id.checked_add(1).unwrap_or(1);
                    let Some(id) = NonZeroU16::new(next_id) else {
                        continue;
                    };
                    if ids.get(usize::from(next_id)).is_some_and(Option::is_none) {
                        break id;
                    }
                };
                if let Some(slot) = ids.get_mut(usize::from(id.get())) {
                    *slot = Some(seq);
                }
                fill_payload(&mut payload, index, seq);
                if let Err(e) =
                    encode_publish(&mut out, &topic, QoS::AtLeastOnce, Some(id), &payload)
                {
                    error = Some(e.to_string());
                }
                seq += 1;
            }
        }
        match timeout_at(run.deadline.into(), wr.write_all(&out)).await {
            Ok(Ok(())) => out.clear(),
            Ok(Err(e)) => {
                error = Some(format!("write: {e}"));
                break;
            }
            Err(_) => break,
        }
        if error.is_some() {
            break;
        }
    }
    let sent = u64::from(seq);
    let (acked, rd, read_error) = match reader.await {
        Ok((acked, rd, e)) => (acked, Some(rd), e),
        // The reader panicked: nothing is known to be acknowledged.
        Err(e) => (vec![false; count as usize], None, Some(e.to_string())),
    };
    PubResult {
        acked,
        sent,
        error: error.or(read_error),
        _conn: (rd, Some(wr)),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs one scenario and prints its result line. `Ok(false)`: acknowledged messages were lost
/// or a client failed.
async fn run(args: Args) -> io::Result<bool> {
    let qos = match args.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => return Err(other(format!("unsupported QoS {q} (0 or 1)"))),
    };
    let total = args.messages.unwrap_or(match qos {
        QoS::AtMostOnce => 200_000,
        _ => 50_000,
    });
    let n = args.clients.max(1);
    let (pubs, subs) = match args.scenario {
        Scenario::FanIn => (n, 1),
        Scenario::FanOut => (1, n),
    };
    let per_pub: Vec<u32> = (0..pubs)
        .map(|i| total / pubs + u32::from(i < total % pubs))
        .collect();
    let tag = format!("lg{}", std::process::id());
    let filter = match args.scenario {
        Scenario::FanIn => "bench/+",
        Scenario::FanOut => "bench/fanout",
    };
    let mut sub_conns = Vec::new();
    for i in 0..subs {
        let mut c = Conn::connect(args.addr, format!("{tag}-s{i}")).await?;
        c.subscribe(filter, qos).await?;
        sub_conns.push(c);
    }
    let mut pub_conns = Vec::new();
    for i in 0..pubs {
        pub_conns.push(Conn::connect(args.addr, format!("{tag}-p{i}")).await?);
    }
    let start = Instant::now();
    let run = Arc::new(Run {
        qos,
        payload: args.payload,
        window: args.window,
        deadline: start + Duration::from_secs(args.time_limit),
        idle: Duration::from_secs(args.idle_secs.max(1)),
    });
    let sub_tasks: Vec<_> = sub_conns
        .into_iter()
        .map(|c| {
            tokio::spawn(subscribe_loop(
                c,
                run.clone(),
                per_pub.clone(),
                total.into(),
            ))
        })
        .collect();
    let pub_tasks: Vec<_> = pub_conns
        .into_iter()
        .zip(0u32..)
        .map(|(c, i)| {
            let topic = match args.scenario {
                Scenario::FanIn => ByteStr::from(format!("bench/{i}")),
                Scenario::FanOut => ByteStr::from("bench/fanout"),
            };
            let count = per_pub.get(i as usize).copied().unwrap_or(0);
            tokio::spawn(publish_loop(c, run.clone(), i, topic, count))
        })
        .collect();
    let mut publishers = Vec::new();
    for t in pub_tasks {
        publishers.push(t.await.map_err(other)?);
    }
    let published_at = Instant::now();
    let mut subscribers = Vec::new();
    for t in sub_tasks {
        subscribers.push(t.await.map_err(other)?);
    }

    let sent: u64 = publishers.iter().map(|p| p.sent).sum();
    let acked: u64 = publishers
        .iter()
        .map(|p| p.acked.iter().filter(|&&a| a).count() as u64)
        .sum();
    let delivered: u64 = subscribers.iter().map(|s| s.deliveries).sum();
    let duplicates: u64 = subscribers.iter().map(|s| s.duplicates).sum();
    let expected = u64::from(total) * u64::from(subs);
    // Acknowledged messages some subscriber never got, counted once per subscriber.
    let mut lost = 0u64;
    let mut missing = 0u64;
    for s in &subscribers {
        for (p, got) in publishers.iter().zip(&s.received) {
            for (acked, &n) in p.acked.iter().zip(got) {
                if n == 0 {
                    missing += 1;
                    if *acked && qos != QoS::AtMostOnce {
                        lost += 1;
                    }
                }
            }
        }
    }
    let last = subscribers.iter().filter_map(|s| s.last).max();
    let elapsed = last.map_or(0.0, |l| l.duration_since(start).as_secs_f64());
    let rate = if elapsed > 0.0 {
        delivered as f64 / elapsed
    } else {
        0.0
    };
    let pub_elapsed = published_at.duration_since(start).as_secs_f64();
    let errors: Vec<String> = publishers
        .iter()
        .filter_map(|p| p.error.clone())
        .chain(subscribers.iter().filter_map(|s| s.error.clone()))
        .collect();
    let scenario = match args.scenario {
        Scenario::FanIn => "fan-in",
        Scenario::FanOut => "fan-out",
    };
    println!(
        "label={} scenario={scenario} qos={} publishers={pubs} subscribers={subs} \
         published={sent} acked={acked} expected={expected} delivered={delivered} \
         missing={missing} duplicates={duplicates} lost={lost} elapsed_s={elapsed:.3} \
         publish_s={pub_elapsed:.3} msgs_per_s={rate:.0} errors={}",
        args.label,
        args.qos,
        if errors.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", errors.join("; ")).replace(' ', "_")
        }
    );
    Ok(lost == 0 && errors.is_empty())
}
